"""Wall time of the whole chain after training, each step in its own process as a user runs it.

    python train.py --latent_size 256 --dataset fashion-mnist --data_dir /usr/share/datasets/fashion-mnist --output_dir output/fm
    python benchmarks/bench_chain.py --trained output/fm

Copies the trained output folder (train.py's files only) to a temporary folder, then runs, each as
a subprocess with its default flags: encode_latent_space.py --num_samples all (every test image),
viz_reconstruction.py, viz_latent_space.py (UMAP), viz_kmeans_latent_space.py,
classify_latent_space.py. Prints each step's seconds, the total, and its ratio to the goal
(--goal). Wall time by nature: run it on a quiet machine.

--numba_cache: `user` (the default) leaves numba's cache where latentlab keeps it (under the user's
cache: a later run, as users see it once UMAP ran on the machine); `cold` gives the steps an empty
one (the first run on a machine: UMAP compiles). --passes N runs the chain N times, each into a
fresh copy, passes 2..N with the numba cache the first pass left (so `--numba_cache cold --passes 4`
gives the first run on a machine and, as the median of three, a later one). Shared CPUs vary from one run
to the next: take the median, not one pass.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latentlab.cli import Parser, run  # noqa: E402
from latentlab.ranges import repeat_count, seconds  # noqa: E402

STEPS = [
    ("encode", ["encode_latent_space.py", "--num_samples", "all"]),
    ("reconstruct", ["viz_reconstruction.py"]),
    ("project (UMAP)", ["viz_latent_space.py"]),
    ("cluster (k-means)", ["viz_kmeans_latent_space.py"]),
    ("classify", ["classify_latent_space.py"]),
]
TRAINED_FILES = ("model_latent_size_*.pth", "test_data.pth", "pca_baseline.pth")


def parse_args(argv=None):
    p = Parser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--trained", required=True, help="an output folder of train.py")
    p.add_argument("--numba_cache", default="user", choices=["user", "cold"])
    p.add_argument("--passes", type=repeat_count, default=1, help="runs of the chain; passes 2.. reuse pass 1's numba cache")
    p.add_argument("--goal", type=seconds, default=90.0, help="seconds the whole chain should stay under")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if not (Path(args.trained) / "test_data.pth").is_file():
        p.error(f"{args.trained} holds no test_data.pth; train first (see the docstring)")
    return args


def copy_trained(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for pattern in TRAINED_FILES:
        for f in src.glob(pattern):
            shutil.copy2(f, dst / f.name)


def run_chain(out: Path, env: dict, device: str) -> dict:
    times = {}
    for name, cmd in STEPS:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(ROOT / cmd[0]), *cmd[1:], "--output_dir", str(out), "--quiet",
                               "--device", device], cwd=ROOT, env=env, capture_output=True, text=True)
        times[name] = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        print(f"  {name:<20} {times[name]:7.1f} s", flush=True)
    return times


def total_line(total: float, goal: float, note: str) -> str:
    return f"  {'total':<20} {total:7.1f} s = {total / goal:.2f}x the {goal:.0f} s goal ({note})"


def main(args) -> dict:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        if args.numba_cache == "cold":  # latentlab puts numba's cache under XDG_CACHE_HOME
            env["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")
            env.pop("NUMBA_CACHE_DIR", None)
        for p in range(args.passes):
            out = Path(tmp) / f"pass{p + 1}"
            copy_trained(Path(args.trained), out)
            cache = ("empty numba cache" if args.numba_cache == "cold" else "the user's numba cache") if p == 0 \
                else "the numba cache of pass 1"
            print(f"pass {p + 1}: the chain on {args.trained} (copied to {out}), {cache}", flush=True)
            times = run_chain(out, env, args.device)
            total = sum(times.values())
            summary = json.loads((out / "latent_space_size_256.json").read_text()) if (out / "latent_space_size_256.json").is_file() else {}
            print(total_line(total, args.goal, f"{len(summary.get('labels', [])) or 'all'} test images"), flush=True)
            results.append({"numba_cache": cache, "steps": times, "total_s": total, "vs_goal": total / args.goal})
    out = {"trained": args.trained, "cpus": os.cpu_count(), "goal_s": args.goal, "passes": results}
    later = results[1:]
    if len(later) >= 2:
        median = {name: statistics.median(r["steps"][name] for r in later) for name, _ in STEPS}
        total = statistics.median(r["total_s"] for r in later)
        print(f"median of passes 2-{len(results)} (numba cache of pass 1):", flush=True)
        for name, _ in STEPS:
            print(f"  {name:<20} {median[name]:7.1f} s", flush=True)
        spread = f"range {min(r['total_s'] for r in later):.1f}-{max(r['total_s'] for r in later):.1f} s"
        print(total_line(total, args.goal, spread), flush=True)
        out["median_of_later_passes"] = {"steps": median, "total_s": total, "vs_goal": total / args.goal}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    run(main, parse_args())
