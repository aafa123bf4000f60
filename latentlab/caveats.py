"""Caveats: one short line each where a step's numbers may not mean what they seem (a model that
barely trained, a probe fit or a score taken on a handful of images per class). Never fatal: each
step prints them under its table as "caveat: ..." (unless --quiet) and always lists them in its
JSON as "caveats": [...].
"""
from __future__ import annotations

import math

import numpy as np

# fewer Adam steps than this leave an autoencoder close to its initialisation (flat, mean-grey output)
MIN_OPTIMISER_STEPS = 300
# fewer images of a class than this and one image moves an accuracy by 10 points or more
MIN_PER_CLASS = 10


def optimiser_steps(epochs_run: int, num_train: int, batch_size: int) -> int:
    """The optimiser steps of a training: one per batch (the last one partial) of every epoch."""
    return epochs_run * math.ceil(num_train / batch_size)


def training_caveats(steps: int | None, mse_vs_pca: float | None) -> list[str]:
    """A model trained too few steps to have learnt much, or that reconstructs no better than PCA
    (steps None: not recorded, as in a checkpoint whose training has not finished)."""
    out = []
    if steps is not None and steps < MIN_OPTIMISER_STEPS:
        out.append(f"trained {steps} optimiser step{'' if steps == 1 else 's'}, fewer than {MIN_OPTIMISER_STEPS}: it has learnt little; "
                   f"train more epochs or lower --batch_size")
    out += mse_caveats(mse_vs_pca)
    return out


def mse_caveats(mse_vs_pca: float | None) -> list[str]:
    """The autoencoder's test error not below PCA's at the same size (NaN/None: no comparison)."""
    if mse_vs_pca is not None and mse_vs_pca >= 1:
        return [f"test MSE {mse_vs_pca:.2f}x PCA's at the same size: no better than the linear baseline"]
    return []


def per_class_caveat(counts, what: str) -> list[str]:
    """`what` (e.g. "the test images scored hold", "a probe's training fold holds") with fewer than
    MIN_PER_CLASS images of some class (counts: the images of each class): one line naming the
    smallest count."""
    counts = np.asarray(counts)
    if len(counts) and counts.min() < MIN_PER_CLASS:
        return [f"{what} only {counts.min()} images of the smallest class (fewer than {MIN_PER_CLASS} per class): "
                f"the scores are noisy; use more images"]
    return []


def copied_test_images(copied: bool) -> list[str]:
    """Step 7's: half the test images or more are copies of training images (in the classifier's features)."""
    if copied:
        return ["half the test images or more have a copy among the training images: novelty is not scored, and every "
                "held-out score flatters the model; remove the duplicates from the data"]
    return []


def of_models(caveats_by_size: dict) -> list[str]:
    """Each model's caveats, named by its latent size: {latent size: [caveat, ...]} -> lines."""
    return [f"{k}-d model: {c}" for k, found in caveats_by_size.items() for c in found]


def of_latents(latents) -> list[str]:
    """The training caveats of the models that encoded latents (encode_latent_space.py copies them
    from each checkpoint), so steps 4 to 6 repeat what step 1 said of the models they read."""
    return of_models({lat.latent_size: lat.meta.get("model_caveats", []) for lat in latents})


def print_caveats(caveats: list[str], write=print) -> None:
    """Each caveat as one line under a step's table."""
    for c in caveats:
        write(f"caveat: {c}")
