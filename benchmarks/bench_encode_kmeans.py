"""Encoding a whole dataset (train + test: 70k images for Fashion-MNIST) in bounded memory, and
k-means on the latents, as the steps compute them.

    python benchmarks/bench_encode_kmeans.py --model_path output/fm/model_latent_size_256.pth \
        --dataset fashion-mnist --data_dir /usr/share/datasets/fashion-mnist

Encodes every image with latentlab.analysis.inference.encode_images (batches of --batch_size) and prints the
seconds, images/s and the process's peak resident memory (RSS) before and after: the growth is
the latents themselves plus one batch, whatever the number of images. Then runs
latentlab.analysis.scores.kmeans_scores (k-means++, 10 restarts, seeded; NMI, ARI, purity, silhouette on
5000 samples) on the (N, latent size) latents with one cluster per class, and prints its seconds.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latentlab.cli import Parser, run  # noqa: E402
from latentlab.analysis.flags import add_batch_size  # noqa: E402


def parse_args(argv=None):
    p = Parser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model_path", required=True, help="a checkpoint written by train.py")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data_dir", default=None)
    add_batch_size(p)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    args = p.parse_args(argv)
    if not Path(args.model_path).is_file():
        p.error(f"{args.model_path} does not exist; train first (see the docstring)")
    return args


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(args) -> dict:
    import numpy as np
    import torch

    from latentlab.store import checkpoints
    from latentlab.cli import pick_device
    from latentlab.data.datasets import load_dataset
    from latentlab.analysis.inference import encode_images
    from latentlab.analysis.scores import kmeans_scores
    from model.autoencoder import model_from_checkpoint

    device = pick_device(args.device)
    data = load_dataset(args.dataset, data_dir=args.data_dir)
    images = torch.cat([data.train_x, data.test_x])
    labels = torch.cat([data.train_y, data.test_y]).numpy()
    model = model_from_checkpoint(checkpoints.load_checkpoint(args.model_path), device)
    before = peak_rss_mb()
    print(f"{data.name}: {len(images)} images {tuple(images.shape[1:])} ({images.numel() / 2**20:.0f} MiB as uint8), "
          f"latent size {model.config.latent_size}, device {device}, {torch.get_num_threads()} threads; "
          f"peak RSS before encoding {before:.0f} MiB", flush=True)
    t0 = time.perf_counter()
    z = encode_images(model, images, device, args.batch_size)
    enc_s = time.perf_counter() - t0
    after = peak_rss_mb()
    print(f"encode: {enc_s:.1f} s, {len(images) / enc_s:,.0f} images/s; peak RSS {after:.0f} MiB "
          f"(+{after - before:.0f} MiB; the latents take {z.nbytes / 2**20:.0f} MiB, float images of the whole set "
          f"would take {images.numel() * 4 / 2**20:.0f} MiB)", flush=True)
    t0 = time.perf_counter()
    scores, _, _ = kmeans_scores(z, labels, len(data.class_names), seed=0)
    km_s = time.perf_counter() - t0
    print(f"k-means on {z.shape[0]} x {z.shape[1]}, k={len(data.class_names)}, 10 restarts: {km_s:.1f} s "
          f"(with NMI, ARI, purity, silhouette on 5000); NMI {scores['nmi']:.3f}", flush=True)
    assert np.isfinite(z).all()
    return {"images": len(images), "encode_s": enc_s, "peak_rss_before_mb": before, "peak_rss_after_mb": after,
            "kmeans_s": km_s, "nmi": scores["nmi"]}


if __name__ == "__main__":
    run(main, parse_args())
