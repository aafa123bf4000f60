"""Training throughput of train.py's loop against the machine's ceiling and the per-item PIL path.

    python benchmarks/bench_train.py --dataset fashion-mnist --data_dir /usr/share/datasets/fashion-mnist
    python benchmarks/bench_train.py --dataset digits --models conv mlp --steps 20   # offline, quick

Paths, each the same model (same config, same seed, same batch size, Adam), timed over --steps
steps after --warmup steps, --repeats times, interleaved, so that a noisy machine disturbs all of
them alike; the median of the repeats is reported, and each ratio is the median of the repeats'
ratios (the two paths of a ratio ran seconds apart, so the drift of a shared machine cancels):

- `ceiling`: the bare loop (zero_grad, forward, loss, backward, Adam step) on ready-made float
  batches already on the device, in the layout and precision train.py uses (--precision, as
  train.py's flag: auto picks bf16 autocast on CUDA and on CPUs with native bf16): the machine's
  pace for this model.
- `train.py loop`: `latentlab.train.loop.train_model` itself, one warm-up epoch then one timed epoch
  over a subset of --steps batches (its own images/s, which excludes the checkpoint write; its
  validation split here is 64 images, so the figure is the training steps' pace).
- `PIL, w workers`: the path torchvision datasets give: a Dataset
  whose __getitem__ makes a PIL image of one item and applies ToTensor, batched by a DataLoader
  (shuffled; --num_workers 0 and 2), the model in its default NCHW fp32 form.
- `PIL + layout`: the same PIL path with the model in train.py's layout and precision
  (channels_last for conv models, and bf16 autocast where --precision picks it): separates what
  the data path gives from what the layout and precision give. Run with --precision fp32 to see
  the layout alone.
- `compiled` (--compile): train.py's step with torch.compile; its compile time is printed too, and
  the number of images after which it pays for itself.
- `UMAP loss, E edges` (--umap_edges E ...): the `train.py loop` path with train.py's UMAP loss
  (--umap_weight, latentlab.train.umap_loss) drawing E edges per step from the UMAP graph of the timed
  images: what the loss multiplies a step's time by, as train.py --umap_edges E would.

Prints images/s per path and the ratios; writes them as JSON with --json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

from latentlab.cli import Parser, pick_device, run  # noqa: E402
from latentlab.data.datasets import load_dataset  # noqa: E402
from latentlab.ranges import batch_images, nonneg_int, positive_int, repeat_count, width, workers  # noqa: E402
from latentlab.settings import PRECISIONS, Settings  # noqa: E402
from latentlab.train.loop import place_data  # noqa: E402
from latentlab.train.precision import use_bf16  # noqa: E402
from latentlab.train.umap_loss import fuzzy_graph  # noqa: E402
from model.autoencoder import FAMILIES  # noqa: E402
from train_paths import ceiling, compiled, pil_path, train_loop  # noqa: E402


def parse_args(argv=None):
    p = Parser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data_dir", default=None)
    p.add_argument("--models", nargs="+", default=["conv"], choices=FAMILIES)
    p.add_argument("--latent_size", type=width, default=256)
    p.add_argument("--batch_size", type=batch_images, default=128)
    p.add_argument("--steps", type=positive_int, default=60, help="timed steps per path and repeat")
    p.add_argument("--warmup", type=nonneg_int, default=10, help="untimed steps before each timing")
    p.add_argument("--repeats", type=repeat_count, default=3, help="interleaved repeats of every path")
    p.add_argument("--num_workers", type=workers, nargs="+", default=[0, 2], help="DataLoader workers of the PIL path")
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help="train.py's --precision")
    p.add_argument("--compile", action="store_true", help="also time train.py's step under torch.compile")
    p.add_argument("--umap_edges", type=batch_images, nargs="*", default=[],
                   help="also time train.py's loop with the UMAP loss at each of these --umap_edges")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


# ---------------------------------------------------------------- main
def main(args) -> dict:
    device = pick_device(args.device)
    data = load_dataset(args.dataset, data_dir=args.data_dir)
    need = (args.warmup + args.steps) * args.batch_size + 64
    if len(data.train_x) < need:
        reps = math.ceil(need / len(data.train_x))  # small datasets (digits): repeat the items
        data.train_x, data.train_y = data.train_x.repeat(reps, 1, 1, 1), data.train_y.repeat(reps)
    x_u8, y = data.train_x[:need].contiguous(), data.train_y[:need]
    x_placed = place_data(x_u8, device)
    bf16 = use_bf16(args.precision, device, data.image_shape)  # what train.py's loop runs in
    print(f"{data.name}: images {tuple(data.image_shape)}, batch {args.batch_size}, {args.steps} timed steps after "
          f"{args.warmup} warm-up, {args.repeats} interleaved repeats; device {device}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}; train.py's precision (--precision "
          f"{args.precision}): {'bf16 autocast' if bf16 else 'fp32'}",
          flush=True)
    graph = fuzzy_graph(x_u8[:args.steps * args.batch_size]) if args.umap_edges else None
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.models:
            config = Settings(latent_size=args.latent_size, model=family).model_config(args.latent_size,
                                                                                       data.image_shape)  # train.py's
            results[family] = bench_family(config, x_u8, y, x_placed, device, args, Path(tmp), bf16, graph)
            print_row(family, results[family])
    out = {"dataset": data.name, "device": str(device), "threads": torch.get_num_threads(), "precision": args.precision,
           "bf16_autocast": bf16,
           "cpus": os.cpu_count(), "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup,
           "repeats": args.repeats, "torch": torch.__version__, "models": results}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


def bench_family(config, x_u8, y, x_placed, device, args, tmp: Path, bf16: bool, graph) -> dict:
    """Every path for one model, --repeats times interleaved: the medians and the ratios."""
    paths = {"ceiling": lambda: ceiling(config, x_u8, device, args),
             "train.py loop": lambda: train_loop(config, x_placed, device, args, tmp)}
    for w in args.num_workers:
        paths[f"PIL, {w} workers"] = lambda w=w: pil_path(config, x_u8, y, device, args, w, False)
    if config.channels_last or bf16:  # else the same model either way
        best_w = args.num_workers[0]
        paths[f"PIL + layout, {best_w} workers"] = lambda: pil_path(config, x_u8, y, device, args, best_w, True)
    for e in args.umap_edges:
        paths[f"UMAP loss, {e} edges"] = lambda e=e: train_loop(config, x_placed, device, args, tmp, graph, e)
    runs = {name: [] for name in paths}
    for r in range(args.repeats):
        for name, fn in paths.items():
            runs[name].append(fn())
        print(f"  {config.family} repeat {r + 1}/{args.repeats}: "
              + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in runs.items()), flush=True)
    med = {k: statistics.median(v) for k, v in runs.items()}
    pil = {k: v for k, v in med.items() if k.startswith("PIL, ")}
    best_pil = max(pil, key=pil.get)

    def ratio(a, b):  # the median of the repeats' ratios: each repeat ran its paths back to back
        return statistics.median(x / y for x, y in zip(runs[a], runs[b]))
    row = {"images_per_s": med, "runs": runs, "loop_vs_ceiling": ratio("train.py loop", "ceiling"),
           "loop_vs_pil": ratio("train.py loop", best_pil), "best_pil_path": best_pil}
    layout = [k for k in med if k.startswith("PIL + layout")]
    if layout:
        row["layout_gain_on_pil_path"] = ratio(layout[0], f"PIL, {args.num_workers[0]} workers")
        row["data_path_gain"] = ratio("train.py loop", layout[0])
    row["umap_time_multiple"] = {e: ratio("train.py loop", f"UMAP loss, {e} edges") for e in args.umap_edges}
    if args.compile:
        compile_s, comp = compiled(config, x_u8, device, args)
        row["compiled"] = {"compile_seconds": compile_s, "images_per_s": comp, "vs_loop": comp / med["train.py loop"]}
        gain = 1 / med["train.py loop"] - 1 / comp  # seconds saved per image
        row["compiled"]["pays_off_after_images"] = compile_s / gain if gain > 0 else None
    return row


def print_row(family: str, row: dict) -> None:
    print(f"{family}: images/s (median of repeats)")
    for k, v in row["images_per_s"].items():
        print(f"  {k:<28} {v:>10,.0f}")
    print(f"  train.py loop / ceiling        {row['loop_vs_ceiling']:.2f}x   (goal >= 0.9)")
    print(f"  train.py loop / {row['best_pil_path']:<14} {row['loop_vs_pil']:.2f}x   "
          f"(goal >= 1.4 on a CPU, >= 10 on a GPU)")
    if "layout_gain_on_pil_path" in row:
        print(f"  of which: layout/precision   {row['layout_gain_on_pil_path']:.2f}x on the PIL path; "
              f"resident uint8 data path {row['data_path_gain']:.2f}x over PIL + layout")
    for e, multiple in row["umap_time_multiple"].items():
        print(f"  UMAP loss, {e} edges: {multiple:.2f}x the loop's time per step")
    if "compiled" in row:
        c = row["compiled"]
        pays = "never" if c["pays_off_after_images"] is None else f"after {c['pays_off_after_images']:,.0f} images"
        print(f"  torch.compile: {c['images_per_s']:,.0f} img/s ({c['vs_loop']:.2f}x the loop), compile "
              f"{c['compile_seconds']:.1f} s, pays off {pays}")


if __name__ == "__main__":
    run(main, parse_args())
