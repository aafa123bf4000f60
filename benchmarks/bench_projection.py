"""Cold and warm times of the projections (UMAP, t-SNE, PCA) of latents, each in fresh processes.

    python benchmarks/bench_projection.py --latents output/latent_space_size_256.npy
    python benchmarks/bench_projection.py --samples 2000 --methods umap pca    # synthetic latents, quick

For each method, three figures, every one taken as latentlab.analysis.projection computes it (standardise,
first 50 principal components for UMAP and t-SNE, then the method; the result cache is off):

- `cold`: a fresh Python process with an empty numba cache directory (the very first run on a
  machine): the imports plus the first projection.
- `warm cache`: a fresh process after the first one filled the numba cache directory (every later
  run of a step): the imports plus the first projection.
- `in-process`: a second projection of other latents in the same process: the method's own pace,
  with nothing left to compile.

Ratios: cold / in-process and warm cache / in-process (the goal: a UMAP in a fresh process within
2x the in-process one). --variants adds UMAP without the persistent cache of every numba function
(numba's own cache=True functions only), and UMAP on more threads without a seed.
--latents takes a .npy of latents (e.g. the 10k Fashion-MNIST test latents); without it, seeded
synthetic clusters of --samples x --dims.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latentlab.cli import Parser, run  # noqa: E402
from latentlab.ranges import positive_int, repeat_count, width  # noqa: E402


def parse_args(argv=None):
    p = Parser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--latents", default=None, help="a .npy of latents (samples x dims); default: synthetic")
    p.add_argument("--samples", type=positive_int, default=10000, help="synthetic latents: how many")
    p.add_argument("--dims", type=width, default=256, help="synthetic latents: their size")
    p.add_argument("--methods", nargs="+", default=["umap", "tsne", "pca"], choices=["umap", "tsne", "pca"])
    p.add_argument("--repeats", type=repeat_count, default=1, help="warm-cache processes per method (median reported)")
    p.add_argument("--variants", action="store_true",
                   help="also: UMAP with numba's own caching only; UMAP unseeded on all cores")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: one timed process
    p.add_argument("--second", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.samples < 10 or args.dims < 3 or args.repeats < 1:
        p.error("--samples must be >= 10, --dims >= 3, --repeats >= 1")
    return args


def synthetic(samples: int, dims: int, seed: int = 0):
    """Seeded clusters: 10 Gaussian blobs in a random 16-d subspace of dims, plus noise (float32)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(16, dims))
    centers = rng.normal(scale=3.0, size=(10, 16))
    labels = rng.integers(0, 10, samples)
    z = (centers[labels] + rng.normal(size=(samples, 16))) @ basis + 0.3 * rng.normal(size=(samples, dims))
    return z.astype(np.float32)


def load_latents(args):
    if args.latents:
        from latentlab.store.latent_files import load_latents as load
        return load(args.latents).z
    return synthetic(args.samples, args.dims)


# ---------------------------------------------------------------- one timed process
def worker(args) -> dict:
    """Time the imports and the first projection in this (fresh) process; with --second, a second
    projection of slightly different latents (so nothing is cached) in the same process."""
    t0 = time.perf_counter()
    from latentlab.analysis import projection
    if args.worker.startswith("umap"):
        projection.import_umap()
    t_import = time.perf_counter() - t0
    z = load_latents(args)
    method = args.worker.split(":")[0]
    params = projection.projection_params(method, len(z), 2, 0)
    if args.worker == "umap:unseeded":
        params = {**params, "random_state": None, "n_jobs": -1}
    t0 = time.perf_counter()
    projection.compute_projection(z, method, params)
    out = {"import_s": t_import, "first_s": time.perf_counter() - t0}
    if args.second:
        t0 = time.perf_counter()
        projection.compute_projection(z * 1.01 + 0.01, method, params)
        out["second_s"] = time.perf_counter() - t0
    return out


def spawn(args, method: str, env: dict, second: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--samples", str(args.samples), "--dims", str(args.dims)]
    if args.latents:
        cmd += ["--latents", args.latents]
    if second:
        cmd.append("--second")
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"worker {method} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(args, method: str, extra_env: dict | None = None) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        # XDG_CACHE_HOME: where latentlab puts numba's cache (<XDG_CACHE_HOME>/latentlab/numba)
        env = {"XDG_CACHE_HOME": cache, **(extra_env or {})}
        env.pop("NUMBA_CACHE_DIR", None)
        cold = spawn(args, method, env)
        warm = [spawn(args, method, env, second=True) for _ in range(args.repeats)]
    total = lambda r: r["import_s"] + r["first_s"]  # noqa: E731
    row = {"cold_s": total(cold), "cold": cold,
           "warm_cache_s": statistics.median(total(w) for w in warm), "warm": warm,
           "in_process_s": statistics.median(w["second_s"] for w in warm)}
    row["cold_vs_in_process"] = row["cold_s"] / row["in_process_s"]
    row["warm_cache_vs_in_process"] = row["warm_cache_s"] / row["in_process_s"]
    return row


def main(args) -> dict:
    z = load_latents(args)
    import numpy as np
    import torch
    print(f"latents {z.shape[0]} x {z.shape[1]} ({args.latents or 'synthetic clusters'}); {os.cpu_count()} CPUs; "
          f"each figure: a fresh process (imports + first projection), or a second one in the same process",
          flush=True)
    del np, torch
    runs = [(m, m, None) for m in args.methods]
    if args.variants and "umap" in args.methods:
        runs += [("umap, numba's own cache only", "umap", {"LATENTLAB_NUMBA_CACHE_ALL": "0"}),
                 ("umap, unseeded, all cores", "umap:unseeded", None)]
    results = {}
    for name, method, env in runs:
        results[name] = row = measure(args, method, env)
        print(f"{name:<32} cold {row['cold_s']:7.1f} s | warm cache {row['warm_cache_s']:7.1f} s "
              f"(import {statistics.median(w['import_s'] for w in row['warm']):.1f} s) | in-process "
              f"{row['in_process_s']:7.1f} s | cold / in-process {row['cold_vs_in_process']:5.2f}x | "
              f"warm cache / in-process {row['warm_cache_vs_in_process']:5.2f}x", flush=True)
    if "umap" in results:
        print(f"goal: a UMAP in a fresh process <= 2x the in-process one: "
              f"{results['umap']['warm_cache_vs_in_process']:.2f}x with the cache filled, "
              f"{results['umap']['cold_vs_in_process']:.2f}x on the very first run")
    out = {"samples": int(z.shape[0]), "dims": int(z.shape[1]), "latents": args.latents, "cpus": os.cpu_count(),
           "methods": results}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    a = parse_args()
    if a.worker:
        print(json.dumps(worker(a)))
    else:
        run(main, a)
