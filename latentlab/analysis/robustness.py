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
def model_under_noise(model, x_u8: torch.Tensor, std: float, seed: int, device, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """(each image's MSE of the reconstruction of its noisy copy against it (n,), float64; the codes
    of the noisy images (n, latent size)). Their mean is the set's MSE as step 2 takes it (images of
    one size)."""
    model.eval()
    errors, codes = [], []
    for x, noisy in noisy_batches(x_u8, std, seed, batch):
        z = model.encode(noisy.to(device))
        errors.append((model.decode(z).float().cpu() - x).pow(2).flatten(1).double().mean(1).numpy())
        codes.append(z.float().cpu().numpy())
    return np.concatenate(errors), np.concatenate(codes)


def pca_under_noise(x_u8: torch.Tensor, mean: torch.Tensor, comps: torch.Tensor, std: float, seed: int,
                    batch: int) -> tuple[np.ndarray, np.ndarray]:
    """As model_under_noise, for PCA with the components comps (k, D) (not clipped, as step 2)."""
    errors, codes = [], []
    for x, noisy in noisy_batches(x_u8, std, seed, batch):
        code = (noisy.reshape(len(noisy), -1) - mean) @ comps.T
        errors.append((code @ comps + mean - x.reshape(len(x), -1)).double().pow(2).mean(1).numpy())
        codes.append(code.numpy())
    return np.concatenate(errors), np.concatenate(codes)


def robustness(coders: dict, labels: np.ndarray, levels, splits, seed: int, device="cpu",
               cache_dir=None) -> tuple[dict, dict]:
    """coders {name: function (std) -> (per-image errors, codes)}; splits: the stratified folds of
    the images. Returns ({name: {"mse": [per level], "knn5_accuracy": [per level]}}, levels in the
    order given; {name: each clean image's error}, for the worst cases)."""
    results, sets, clean_errors = {}, {}, {}
    for name, under_noise in coders.items():
        clean_errors[name], clean = under_noise(0.0)
        results[name] = {"mse": []}
        for i, std in enumerate(levels):
            errors, codes = under_noise(std) if std > 0 else (clean_errors[name], clean)
            results[name]["mse"].append(float(errors.mean()))
            n = len(clean)
            # rows 0..n-1: the clean codes to fit on; n..2n-1: the noisy codes to classify
            sets[name, i] = (np.concatenate([clean, codes]), np.concatenate([labels, labels]),
                             [(tr, te + n) for tr, te in splits])
    scored = probe_scores_of_sets(sets, ("knn",), seed, (ROBUST_KNN_K,), None, device, cache_dir)
    for name in coders:
        results[name][f"knn{ROBUST_KNN_K}_accuracy"] = [scored[name, i]["knn"]["accuracy"] for i in range(len(levels))]
    return results, clean_errors
