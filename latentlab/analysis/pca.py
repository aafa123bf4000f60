"""The PCA baseline: principal components of the training images, and the coordinates,
reconstructions and reconstruction error of images under the first k of them."""
from __future__ import annotations

import torch

from latentlab.data.datasets import take, to_float


def fit_pca(train_x: torch.Tensor, k: int, exact_max_dim: int = 4096, max_samples: int = 20000, seed: int = 0,
            idx: torch.Tensor | None = None, max_values: int = 2**27):
    """PCA of uint8 images (N, C, H, W), or of train_x[idx] -> (mean (D,), components (k', D)),
    k' = min(k, D, N). train_x may be a memory map: images are read a bounded chunk at a time.

    Exact (eigendecomposition of the covariance, float64, accumulated over every image) up to
    exact_max_dim pixel values; above that, randomized SVD (Halko et al. 2011) on a seeded
    subsample of at most max_samples images and at most max_values pixel values in all.
    """
    idx = torch.arange(len(train_x)) if idx is None else idx
    n, d = len(idx), train_x[0].numel()
    k = min(k, d, n)
    if d <= exact_max_dim:
        mean = torch.zeros(d, dtype=torch.float64)
        cov = torch.zeros(d, d, dtype=torch.float64)
        for part in idx.split(8192):
            xf = to_float(take(train_x, part).reshape(len(part), -1)).double()
            mean += xf.sum(0)
            cov += xf.T @ xf
        mean /= n
        cov = cov / n - torch.outer(mean, mean)
        evals, evecs = torch.linalg.eigh(cov)  # ascending
        comps = evecs[:, -k:].flip(1).T.float()  # (k, D), largest variance first
        return mean.float(), comps.contiguous()
    g = torch.Generator().manual_seed(seed)
    pick = idx[torch.randperm(n, generator=g)[:min(max_samples, max(k + 10, max_values // d))]]
    xf = to_float(take(train_x, pick).reshape(len(pick), -1))
    mean = xf.mean(0)
    torch.manual_seed(seed)
    _, _, v = torch.svd_lowrank(xf.sub_(mean), q=min(k + 10, *xf.shape), niter=4)
    return mean, v[:, :k].T.contiguous()


def pca_encode(x_u8: torch.Tensor, mean: torch.Tensor, comps: torch.Tensor, k: int) -> torch.Tensor:
    """(N, C, H, W) uint8 -> (N, k) PCA coordinates."""
    return (to_float(x_u8.reshape(len(x_u8), -1)) - mean) @ comps[:k].T


def pca_reconstruct_batches(x_u8: torch.Tensor, mean: torch.Tensor, comps: torch.Tensor, k: int, batch: int = 8192):
    """Yield (originals, reconstructions from the first k principal components) float batches of
    shape (B, C, H, W), in order, of at most 2**25 pixel values each (large images: fewer than
    batch). The reconstructions are not clipped to [0, 1]."""
    c = comps[:k]
    batch = max(1, min(batch, 2**25 // max(1, x_u8[0].numel()))) if len(x_u8) else batch
    for part in x_u8.split(batch):
        xf = to_float(part.reshape(len(part), -1))  # (B, D)
        rec = (xf - mean) @ c.T @ c + mean
        yield xf.view(part.shape), rec.view(part.shape)


def pca_mse(x_u8: torch.Tensor, mean: torch.Tensor, comps: torch.Tensor, k: int, batch: int = 8192) -> float:
    """MSE of reconstructing x from its first k principal components (no clipping)."""
    total, count = 0.0, 0
    for xf, rec in pca_reconstruct_batches(x_u8, mean, comps, k, batch):
        total += (rec - xf).pow(2).sum().item()
        count += xf.numel()
    return total / count
