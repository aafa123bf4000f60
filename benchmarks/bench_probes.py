"""Step 6's probes with numpy/scipy's BLAS on one thread against its default, in one run.

    python benchmarks/bench_probes.py --latent_space output/quality/latent_space_size_256.npy

With torch loaded, OpenBLAS's threads and torch's OpenMP threads contend for the cores; the probes
(metrics.probe_scores) therefore run BLAS on one thread. This fits each probe once on 80% of the
latents, with one BLAS thread and with the default, and prints the seconds and their ratio.
"""
import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--latent_space", required=True, help="a latent_space_size_{N}.npy written by encode_latent_space.py")
    p.add_argument("--probes", nargs="+", default=["linear", "mlp"], choices=["linear", "knn", "mlp"])
    args = p.parse_args(argv)
    import numpy as np
    import torch  # noqa: F401  (loaded as in every step: its OpenMP threads are part of the contention)
    from threadpoolctl import threadpool_info

    from latentlab import artifacts
    from latentlab.metrics import make_probe, one_blas_thread
    z, meta = artifacts.load_latents(args.latent_space)
    labels = np.asarray(meta["labels"])
    n = int(0.8 * len(z))
    x, y = z[:n].astype(np.float64), labels[:n]
    blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    print(f"{n} x {z.shape[1]} latents; default BLAS threads {blas}")
    print(f"{'probe':<8} {'1 BLAS thread s':>16} {'default s':>10} {'ratio':>6}")
    for name in args.probes:
        times = []
        for single in (True, False):
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if single:
                    with one_blas_thread():
                        make_probe(name).fit(x, y)
                else:
                    make_probe(name).fit(x, y)
            times.append(time.perf_counter() - start)
        print(f"{name:<8} {times[0]:>16.1f} {times[1]:>10.1f} {times[1] / times[0]:>6.1f}x")


if __name__ == "__main__":
    main()
