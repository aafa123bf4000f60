"""What the training record and its animations cost: a train.py run, with the time spent in
latentlab.train.animation.TrainingRecord.after_epoch (each epoch) and write_animations (at the end) summed.

    python benchmarks/bench_record.py --latent_size 2 --model mlp --dataset fashion-mnist \
        --data_dir /usr/share/datasets/fashion-mnist --num_epochs 4 --quiet

Takes train.py's flags. Prints one JSON line: the training seconds (the checkpoints' per-epoch
seconds), the seconds of the record and of the animations, and their shares of the training;
the shares are taken within one run, so a noisy machine affects both sides alike.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import train  # noqa: E402
from latentlab.train import animation  # noqa: E402
from latentlab.cli import run  # noqa: E402


def timed(spent: dict, name: str, fn):
    """fn, adding the seconds of each call to spent[name]."""
    def call(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - t0
    return call


def main(args) -> dict:
    spent = {"record_s": 0.0, "animations_s": 0.0}
    add, write = animation.TrainingRecord.after_epoch, animation.write_animations
    animation.TrainingRecord.after_epoch = timed(spent, "record_s", add)
    animation.write_animations = timed(spent, "animations_s", write)
    try:
        rows = train.main(args)
    finally:
        animation.TrainingRecord.after_epoch, animation.write_animations = add, write
    train_s = sum(r["train_seconds"] for r in rows.values())
    result = {"flags": sys.argv[1:], "train_s": train_s, **spent,
              "record_pct": 100 * spent["record_s"] / train_s, "animations_pct": 100 * spent["animations_s"] / train_s}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    run(main, train.parse_args())
