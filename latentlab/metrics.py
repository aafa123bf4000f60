"""Reconstruction metrics and the PCA baseline at the same latent size.

All errors are in [0, 1] pixel units: MSE is the mean over every pixel value of the set, and
PSNR = 10 log10(1 / MSE) of that set-wide MSE (peak value 1).
"""
from __future__ import annotations

import math

import numpy as np
import torch


def psnr(mse: float) -> float:
    return 10.0 * math.log10(1.0 / mse) if mse > 0 else float("inf")


def to_float(x_u8: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1] (the model's input normalisation)."""
    return x_u8.float().div_(255.0)


def fit_pca(train_x: torch.Tensor, k: int, exact_max_dim: int = 4096, max_samples: int = 20000, seed: int = 0):
    """PCA of uint8 images (N, C, H, W) -> (mean (D,), components (k', D)), k' = min(k, D, N).

    Exact (eigendecomposition of the covariance, float64) up to exact_max_dim pixel values;
    above that, randomized SVD (Halko et al. 2011) on at most max_samples images.
    """
    n, d = train_x.shape[0], train_x[0].numel()
    k = min(k, d, n)
    if d <= exact_max_dim:
        mean = torch.zeros(d, dtype=torch.float64)
        cov = torch.zeros(d, d, dtype=torch.float64)
        for part in train_x.split(8192):
            xf = to_float(part.reshape(len(part), -1)).double()
            mean += xf.sum(0)
            cov += xf.T @ xf
        mean /= n
        cov = cov / n - torch.outer(mean, mean)
        evals, evecs = torch.linalg.eigh(cov)  # ascending
        comps = evecs[:, -k:].flip(1).T.float()  # (k, D), largest variance first
        return mean.float(), comps.contiguous()
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=g)[:max_samples]
    xf = to_float(train_x[idx].reshape(len(idx), -1))
    mean = xf.mean(0)
    torch.manual_seed(seed)
    _, _, v = torch.svd_lowrank(xf - mean, q=min(k + 10, *xf.shape), niter=4)
    return mean, v[:, :k].T.contiguous()


def pca_encode(x_u8: torch.Tensor, mean: torch.Tensor, comps: torch.Tensor, k: int) -> torch.Tensor:
    """(N, C, H, W) uint8 -> (N, k) PCA coordinates."""
    return (to_float(x_u8.reshape(len(x_u8), -1)) - mean) @ comps[:k].T


def pca_mse(x_u8: torch.Tensor, mean: torch.Tensor, comps: torch.Tensor, k: int, batch: int = 8192) -> float:
    """MSE of reconstructing x from its first k principal components (no clipping)."""
    total, count = 0.0, 0
    c = comps[:k]
    for part in x_u8.split(batch):
        xf = to_float(part.reshape(len(part), -1))
        rec = (xf - mean) @ c.T @ c + mean
        total += (rec - xf).pow(2).sum().item()
        count += xf.numel()
    return total / count


@torch.no_grad()
def reconstruct_batches(model, x_u8: torch.Tensor, device, batch: int = 512):
    """Yield (originals, reconstructions) float batches in [0, 1], on the CPU, in order."""
    model.eval()
    for part in x_u8.split(batch):
        x = to_float(part.to(device, non_blocking=True))
        yield x.cpu(), model.reconstruct(x).float().cpu()


def model_mse(model, x_u8: torch.Tensor, device, batch: int = 512) -> float:
    total, count = 0.0, 0
    for x, rec in reconstruct_batches(model, x_u8, device, batch):
        total += (rec - x).pow(2).sum().item()
        count += x.numel()
    return total / count
