"""What a bottleneck learned, in numbers: the units it uses, the intrinsic dimension of its code,
and how far two spaces (two codes, a code and PCA, a code and the pixels) agree.

Units in use: a unit is active when the variance over the images of its code, Cov_x E[z_d | x], is
above ACTIVE_THRESHOLD (Burda et al. 2016); a VAE's code is its posterior mean, and a VAE's unit is
collapsed when its KL to the prior, averaged over the images, is below COLLAPSED_KL nats. On a
sphere (the conv models' `--bottleneck sphere`) every code has length sqrt(N), so the units' variances
share a fixed budget of about N: the count reads the same, and a unit below the threshold carries
almost none of it. Intrinsic dimension: scikit-dimension's TwoNN (Facco et al. 2017) and MLE (Levina
& Bickel 2004). Agreement: linear CKA (Kornblith et al. 2019) and the share of 10 nearest neighbours
two spaces have in common.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

ACTIVE_THRESHOLD = 0.01  # Burda et al. 2016's threshold on Cov_x E[z_d | x]
COLLAPSED_KL = 0.01  # nats: a VAE unit whose posterior is its prior on (nearly) every image
ID_MAX_SAMPLES = 5000  # intrinsic dimension and neighbour overlap on a seeded sample of at most this many
OVERLAP_K = 10
VARIANCE_SHARES = (0.90, 0.95)


def units_in_use(z: np.ndarray, kl: np.ndarray | None = None) -> dict:
    """Per unit of the codes z (n, d): the variance over the images, the active units' count; with
    kl (d,) (a VAE's mean KL per unit, nats), it and the collapsed units' count."""
    variance = np.asarray(z, dtype=np.float64).var(axis=0)
    out = {"units": int(z.shape[1]), "active_units": int((variance > ACTIVE_THRESHOLD).sum()),
           "variance": variance}
    if kl is not None:
        out.update(kl_nats=np.asarray(kl, dtype=np.float64), collapsed_units=int((kl < COLLAPSED_KL).sum()),
                   kl_total_nats=float(np.sum(kl)))
    return out


@torch.no_grad()
def kl_per_unit(model, x_u8: torch.Tensor, device, batch: int) -> np.ndarray:
    """A VAE's KL(q(z_d | x) || N(0, 1)) per unit d, in nats, averaged over the images x_u8: (d,)."""
    from latentlab.data.datasets import to_float
    total = None
    for part in x_u8.split(batch):
        mu, logvar = (t.double() for t in model.posterior(to_float(part.to(device))))
        kl = (0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)).sum(0).cpu()
        total = kl if total is None else total + kl
    return (total / len(x_u8)).numpy()


def sample_rows(n: int, seed: int, most: int = ID_MAX_SAMPLES) -> np.ndarray:
    """The rows that the sampled scores use: every row, or a seeded sample of `most`, in order."""
    if n <= most:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, most, replace=False))


def intrinsic_dimension(x: np.ndarray) -> dict:
    """TwoNN and MLE estimates (scikit-dimension, their defaults) of the points x (n, d); points
    repeated (TwoNN divides by a zero distance) are dropped first."""
    import skdim
    x = np.unique(np.asarray(x, dtype=np.float64), axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skdim's RuntimeWarnings on near-duplicate points
        return {"twonn": float(skdim.id.TwoNN().fit(x).dimension_), "mle": float(skdim.id.MLE().fit(x).dimension_)}


def components_for(x: np.ndarray, shares=VARIANCE_SHARES) -> dict:
    """{share: the fewest principal components of x (n, d) that hold that share of its variance}."""
    from sklearn.decomposition import PCA
    cumulative = np.cumsum(PCA().fit(np.asarray(x, dtype=np.float64)).explained_variance_ratio_)
    return {f"{s:g}": int(min(np.searchsorted(cumulative, s) + 1, len(cumulative))) for s in shares}


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two representations of the same n items (n, d1), (n, d2), in its feature-space
    form (Kornblith et al. 2019, eq. 5): ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), the columns
    centred. 1 for spaces equal up to rotation and isotropic scale; near 0 for independent ones.
    Written out: scikit-learn has no CKA, and this is its whole definition."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x, y = x - x.mean(0), y - y.mean(0)
    cross = np.linalg.norm(y.T @ x) ** 2
    norms = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(cross / norms) if norms > 0 else float("nan")


def neighbours(x: np.ndarray, k: int = OVERLAP_K) -> np.ndarray:
    """Each point's k nearest others (Euclidean; scikit-learn): (n, k) indices."""
    from sklearn.neighbors import NearestNeighbors
    x = np.asarray(x, dtype=np.float32)
    return NearestNeighbors(n_neighbors=k).fit(x).kneighbors(return_distance=False)


def knn_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """The mean share of each point's neighbours (rows of neighbours(), (n, k)) that two spaces share."""
    k = a.shape[1]
    return float(np.mean([len(np.intersect1d(p, q, assume_unique=True)) / k for p, q in zip(a, b)]))


def agreement(spaces: dict, pairs: list, seed: int) -> dict:
    """Linear CKA (every row) and 10-NN overlap (on sample_rows) of each pair (name a, name b) of
    spaces {name: (n, d)}: {"a vs b": {"cka", "knn10_overlap"}}."""
    rows = sample_rows(len(next(iter(spaces.values()))), seed)
    found = {name: neighbours(spaces[name][rows]) for name in dict.fromkeys(n for pair in pairs for n in pair)}
    return {f"{a} vs {b}": {"cka": linear_cka(spaces[a], spaces[b]),
                            f"knn{OVERLAP_K}_overlap": knn_overlap(found[a], found[b])} for a, b in pairs}


def structure(spaces: dict, seed: int) -> dict:
    """Per space {name: (n, d)}: its intrinsic dimension (TwoNN, MLE on sample_rows) and the
    principal components that hold 90 % and 95 % of its variance."""
    rows = sample_rows(len(next(iter(spaces.values()))), seed)
    return {name: {**intrinsic_dimension(x[rows]), "components_for_variance": components_for(x)}
            for name, x in spaces.items()}


WORST_PER_CLASS = 4


def worst_per_class(errors: np.ndarray, labels: np.ndarray, count: int = WORST_PER_CLASS) -> dict:
    """{class: the rows of its `count` largest errors, largest first} for every class in labels."""
    return {int(c): [int(i) for i in sorted(np.flatnonzero(labels == c), key=lambda i: -errors[i])[:count]]
            for c in np.unique(labels)}


def confident_errors_per_class(predictions: np.ndarray, confidence: np.ndarray, labels: np.ndarray,
                               count: int = WORST_PER_CLASS) -> dict:
    """{class: the rows of that class a probe got wrong, the `count` it was surest of first} for
    every class with an error (predictions, their confidence and the labels, per row)."""
    wrong = np.asarray(predictions) != np.asarray(labels)
    return {int(c): [int(i) for i in sorted(np.flatnonzero(wrong & (labels == c)), key=lambda i: -confidence[i])[:count]]
            for c in np.unique(labels[wrong])}
