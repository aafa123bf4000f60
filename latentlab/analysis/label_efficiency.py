"""Label efficiency: a probe's test accuracy when it is fit on only n labelled images per class
(as disentanglement_lib's `num_train` lists), n in LABELS_PER_CLASS, then on all of them.

The pools: where the training split's latents exist, one (the training rows, the test rows), as
step 6's held-out protocol; else the stratified folds of the test images (DRAWS folds, each a
pool: its other folds to draw from, itself to score). Draw d of n per class takes n rows of each
class, seeded, from the training rows of pool d mod the pools; "all" fits each pool's training rows
once. Each draw is one set of the probe engine (probes.probe_scores_of_sets), so its fits are
cached by content as step 6's are.
"""
from __future__ import annotations

import numpy as np

from latentlab.analysis.probes import heldout_set, probe_scores_of_sets

LABELS_PER_CLASS = (1, 10, 100)
DRAWS = 5
EFFICIENCY_PROBES = ("linear", "knn")
EFFICIENCY_KNN_K = 5  # 5-NN, as step 6's held-out protocol (Sainburg et al. 2021); n-NN from n < 5 per class


def draw_per_class(labels: np.ndarray, rows: np.ndarray, n: int, rng) -> np.ndarray:
    """n rows of each class among rows (labels of every row), drawn without replacement, sorted."""
    picked = [rng.choice(rows[labels[rows] == c], n, replace=False) for c in np.unique(labels)]
    return np.sort(np.concatenate(picked))


def require_draw(labels: np.ndarray, num_classes: int, n: int, where: str) -> int:
    """The count of the rarest of num_classes classes among labels; a ValueError when it is under n,
    so that a draw of n labels per class cannot be made from them (where: the rows, in words)."""
    fewest = int(np.bincount(labels, minlength=num_classes).min())
    if fewest < n:
        raise ValueError(f"a draw of {n} label{'s' if n > 1 else ''} per class needs {n} image{'s' if n > 1 else ''} "
                         f"of each of the {num_classes} classes, but {where} hold {len(labels)} images and {fewest} of "
                         f"the rarest class")
    return fewest


def drawable(labels: np.ndarray, pools: list, sizes, num_classes: int) -> tuple[list, list]:
    """(the sizes n that every pool's training rows (rows of labels) can give n images of each class
    for, the notes on those left out); a ValueError when not even the smallest can be drawn."""
    fewest = min(require_draw(labels[tr], num_classes, min(sizes), "the rows to draw from") for tr, _ in pools)
    kept = [n for n in sorted(set(sizes)) if n <= fewest]
    left = [f"{n} labels per class left out: the rows to draw from hold {fewest} images of the rarest class"
            for n in sorted(set(sizes)) if n > fewest]
    return kept, left


def efficiency_sets(features: dict, labels: np.ndarray, pools: list, sizes, seed: int,
                    train_features: dict | None = None, train_labels: np.ndarray | None = None) -> dict:
    """The engine's sets {(space, n, draw): (features, labels, splits)} for every space of
    features {space: test features (m, d)}; n in sizes and "all". With train_features (the held-out
    protocol) the pools' training rows index them and train_labels; else they index the test rows.
    "all" is one set of every pool: step 6's set (the test folds, or the held-out split) to the
    byte, so the fits step 6 cached are reused."""
    fit_x = features if train_features is None else train_features
    fit_y = labels if train_labels is None else train_labels
    sets = {}
    for n in sizes:
        for d in range(DRAWS):
            tr, te = pools[d % len(pools)]
            tr = draw_per_class(fit_y, tr, n, np.random.default_rng([seed, n, d]))
            for space, x in features.items():
                sets[space, n, d] = heldout_set(fit_x[space][tr], fit_y[tr], x[te], labels[te])
    for space, x in features.items():
        sets[space, "all", 0] = ((x, labels, pools) if train_features is None else
                                 heldout_set(fit_x[space][pools[0][0]], fit_y[pools[0][0]], x[pools[0][1]],
                                             labels[pools[0][1]]))
    return sets


def label_efficiency(features: dict, labels: np.ndarray, pools: list, sizes, seed: int, device="cpu",
                     cache_dir=None, train_features=None, train_labels=None, progress=None) -> dict:
    """{space: {probe: {n: {"mean", "sd", "draws"}}}}: the test accuracy of each probe fit on n
    labels per class (mean and sd over the draws), and on all the pools' training rows ("all")."""
    sets = efficiency_sets(features, labels, pools, sizes, seed, train_features, train_labels)
    scored = {}
    for n in [*sizes, "all"]:  # k-NN with at most n neighbours: 5 among 1 image per class is a tie
        k = EFFICIENCY_KNN_K if n == "all" else min(EFFICIENCY_KNN_K, n)
        scored.update(probe_scores_of_sets({key: s for key, s in sets.items() if key[1] == n}, EFFICIENCY_PROBES,
                                           seed, (k,), progress, device, cache_dir))
    out = {}
    for (space, n, _), scores in scored.items():
        for probe, s in scores.items():
            out.setdefault(space, {}).setdefault(probe, {}).setdefault(str(n), []).append(s)
    return {space: {probe: {n: spread(a, len(pools)) for n, a in curve.items()} for probe, curve in probes.items()}
            for space, probes in out.items()}


def spread(scores: list, pools: int) -> dict:
    """Mean and sd of the accuracy over the draws; one set of several folds ("all" under cv): its
    pooled accuracy and the sd across its folds."""
    if len(scores) == 1 and "fold_accuracy_std" in scores[0]:
        return {"mean": scores[0]["accuracy"], "sd": scores[0]["fold_accuracy_std"], "draws": pools}
    a = [s["accuracy"] for s in scores]
    return {"mean": float(np.mean(a)), "sd": float(np.std(a)), "draws": len(a)}


def cv_pools(labels: np.ndarray, seed: int) -> list:
    """The pools of the test images alone: their stratified DRAWS folds (probes.cv_splits). A class
    of fewer than DRAWS images is not warned of: drawable says, in one line, what it cannot draw."""
    import warnings

    from latentlab.analysis.probes import cv_splits
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        return cv_splits(labels, DRAWS, seed)


def per_class_all(labels: np.ndarray, pools: list) -> float:
    """The mean training rows per class of the "all" fits: where the figure puts them on its axis."""
    return float(np.mean([len(tr) for tr, _ in pools]) / len(np.unique(labels)))
