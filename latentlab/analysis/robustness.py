"""Denoising robustness: Gaussian noise of a given std on the input images (pixels in [0, 1], not
clipped, as a denoising training adds it), and how far a code still holds the clean image: the MSE of
the reconstruction against the clean image, and the 5-NN accuracy of the noisy images' codes, each
classified by its clean neighbours (stratified folds of the test images: a fold's noisy codes against
the clean codes of the other folds). PCA of the same size meets the same noise beside each model."""
from __future__ import annotations

import numpy as np
import torch

from latentlab.analysis.probes import probe_scores_of_sets
from latentlab.data.datasets import to_float

NOISE_LEVELS = (0.0, 0.1, 0.2, 0.3, 0.5)
ROBUST_KNN_K = 5


def noisy_batches(x_u8: torch.Tensor, std: float, seed: int, batch: int):
    """Yield (clean, noisy) float batches (B, C, H, W) of x_u8, in order; the noise is seeded, so
    every model and PCA meet the same noisy images."""
    g = torch.Generator().manual_seed(seed)
    for part in x_u8.split(batch):
        x = to_float(part)
        yield x, (x + std * torch.randn(x.shape, generator=g) if std > 0 else x)


@torch.no_grad()
def model_under_noise(model, x_u8: torch.Tensor, std: float, seed: int, device, batch: int) -> tuple[float, np.ndarray]:
    """(MSE of the reconstructions of the noisy images against the clean ones, as step 2 sums it;
    the codes of the noisy images (n, latent size))."""
    model.eval()
    sq, count, codes = 0.0, 0, []
    for x, noisy in noisy_batches(x_u8, std, seed, batch):
        z = model.encode(noisy.to(device))
        rec = model.decode(z).float().cpu()
        sq += (rec - x).pow(2).sum().item()
        count += x.numel()
        codes.append(z.float().cpu().numpy())
    return sq / count, np.concatenate(codes)


def pca_under_noise(x_u8: torch.Tensor, mean: torch.Tensor, comps: torch.Tensor, std: float, seed: int,
                    batch: int) -> tuple[float, np.ndarray]:
    """As model_under_noise, for PCA with the components comps (k, D) (not clipped, as step 2)."""
    sq, count, codes = 0.0, 0, []
    for x, noisy in noisy_batches(x_u8, std, seed, batch):
        flat = noisy.reshape(len(noisy), -1)
        code = (flat - mean) @ comps.T
        sq += (code @ comps + mean - x.reshape(len(x), -1)).pow(2).sum().item()
        count += x.numel()
        codes.append(code.numpy())
    return sq / count, np.concatenate(codes)


def robustness(coders: dict, labels: np.ndarray, levels, splits, seed: int, device="cpu", cache_dir=None) -> dict:
    """coders {name: function (std) -> (mse, codes)}; splits: the stratified folds of the images.
    Returns {name: {"mse": [per level], "knn5_accuracy": [per level]}}, levels in the order given."""
    results, sets = {}, {}
    for name, under_noise in coders.items():
        clean_mse, clean = under_noise(0.0)
        results[name] = {"mse": []}
        for i, std in enumerate(levels):
            mse, codes = under_noise(std) if std > 0 else (clean_mse, clean)
            results[name]["mse"].append(mse)
            n = len(clean)
            # rows 0..n-1: the clean codes to fit on; n..2n-1: the noisy codes to classify
            sets[name, i] = (np.concatenate([clean, codes]), np.concatenate([labels, labels]),
                             [(tr, te + n) for tr, te in splits])
    scored = probe_scores_of_sets(sets, ("knn",), seed, (ROBUST_KNN_K,), None, device, cache_dir)
    for name in coders:
        results[name][f"knn{ROBUST_KNN_K}_accuracy"] = [scored[name, i]["knn"]["accuracy"] for i in range(len(levels))]
    return results
