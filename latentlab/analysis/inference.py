"""A trained model over a set of images, one batch at a time: reconstructions, their MSE, and the
latents; and the choice of the test items a step encodes."""
from __future__ import annotations

import numpy as np
import torch

from latentlab.data.datasets import to_float
from latentlab.analysis.flags import BATCH_SIZE


@torch.no_grad()
def reconstruct_batches(model, x_u8: torch.Tensor, device, batch: int = BATCH_SIZE):
    """Yield (originals, reconstructions) float batches in [0, 1], on the CPU, in order."""
    model.eval()
    for part in x_u8.split(batch):
        x = to_float(part.to(device, non_blocking=True))
        yield x.cpu(), model.reconstruct(x).float().cpu()


def model_mse(model, x_u8: torch.Tensor, device, batch: int = BATCH_SIZE) -> float:
    """The model's reconstruction MSE over every pixel value of x_u8."""
    total, count = 0.0, 0
    for x, rec in reconstruct_batches(model, x_u8, device, batch):
        total += (rec - x).pow(2).sum().item()
        count += x.numel()
    return total / count


def sample_test_items(total: int, num_samples, seed: int, what: str = "test") -> tuple[torch.Tensor, str]:
    """The test items a step encodes: a seeded random sample of num_samples (the first num_samples
    of the seed's permutation of the test set, kept in test-set order), or every item ("all", or
    more than there are). what: the split, in the words. Returns (indices (n,) int64, how they were
    chosen, in words)."""
    n = total if num_samples == "all" else min(num_samples, total)
    if n < total:
        indices = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].sort().values
        return indices, f"a random sample of {n} of the {total} {what} images (permutation seeded with {seed}), in {what}-set order"
    return torch.arange(total), f"all {total} {what} images, in {what}-set order"


@torch.no_grad()
def encode_images(model, x_u8: torch.Tensor, device, batch: int = BATCH_SIZE, progress=None) -> np.ndarray:
    """(N, C, H, W) uint8 -> float32 latents (N, latent_size), one batch at a time (a VAE gives its
    posterior mean). progress: an optional callable n -> None, told how many images each batch held."""
    model.eval()
    out = np.empty((len(x_u8), model.config.latent_size), dtype=np.float32)
    start = 0
    for part in x_u8.split(batch):
        z = model.encode(to_float(part.to(device, non_blocking=True)))
        out[start:start + len(part)] = z.float().cpu().numpy()
        start += len(part)
        if progress:
            progress(len(part))
    return out
