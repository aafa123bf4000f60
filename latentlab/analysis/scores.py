"""Scores of reconstructions (MSE, PSNR, SSIM), of k-means clusters against the classes, and of
projections (trustworthiness, continuity, the global score).

All errors are in [0, 1] pixel units: MSE is the mean over every pixel value of the set, and
PSNR = 10 log10(1 / MSE) of that set-wide MSE (peak value 1). SSIM is the mean over images of
each image's SSIM.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch


SILHOUETTE_MAX_SAMPLES = 5000  # silhouette and trustworthiness are O(n^2): score a seeded subsample above this
SSIM_WINDOW = 7  # skimage's default
TRUST_K = 5  # neighbours of the 2-D picture's trustworthiness
STRUCTURE_KS = (5, 10, 20)  # neighbourhoods over which step 4 reports trustworthiness and continuity
GLOBAL_POINTS = 1000  # the global score compares the distances among a seeded sample of this many points


def psnr(mse: float) -> float:
    """inf for a perfect reconstruction; NaN (null in the JSON) where the MSE is not a number."""
    if not mse >= 0:
        return float("nan")
    return 10.0 * math.log10(1.0 / mse) if mse > 0 else float("inf")


def ssim(x: torch.Tensor, y: torch.Tensor, win_size: int = SSIM_WINDOW) -> np.ndarray:
    """SSIM of each image pair (Wang et al. 2004): (B, C, H, W) x2 in [0, 1] -> (B,) float64, as
    skimage.metrics.structural_similarity computes it with its defaults (7x7 uniform window,
    sample covariance, the mean over the window positions inside the image and over channels).
    Images smaller than 7 pixels use the largest odd window that fits (at least 3).

    The batch goes to scikit-image as one tall image (C, B*H, W), so it is filtered in one call;
    a window centred inside an image's own valid region sees only that image's pixels."""
    from skimage.metrics import structural_similarity
    b, c, h, w = x.shape
    win = min(win_size, h, w)
    win -= 1 - win % 2  # odd
    if win < 3:
        raise ValueError(f"SSIM needs images of at least 3x3 pixels, got {(h, w)}")

    def tall(t):
        return t.double().permute(1, 0, 2, 3).reshape(c, b * h, w).numpy()
    _, full = structural_similarity(tall(x), tall(y), win_size=win, data_range=1.0, channel_axis=0, full=True)
    pad = win // 2
    return full.reshape(c, b, h, w)[:, :, pad:h - pad, pad:w - pad].mean(axis=(0, 2, 3))


def reconstruction_scores(batches) -> dict:
    """batches: (originals, reconstructions) float pairs (B, C, H, W), e.g. from
    inference.reconstruct_batches or pca.pca_reconstruct_batches. Returns the set-wide MSE, its
    PSNR, and the mean per-image SSIM."""
    sq, count, ssim_sum, images = 0.0, 0, 0.0, 0
    for x, rec in batches:
        sq += (rec - x).pow(2).sum().item()
        count += x.numel()
        ssim_sum += float(ssim(x, rec).sum())
        images += len(x)
    mse = sq / count
    return {"mse": mse, "psnr": psnr(mse), "ssim": ssim_sum / images}


def one_blas_thread():
    """A context in which numpy/scipy's BLAS runs one thread: with torch loaded, its OpenMP threads
    and OpenBLAS's threads would contend for the same cores. k-means runs in it."""
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=1, user_api="blas")


def cluster_purity(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Share of samples whose class is the majority class of their cluster."""
    from sklearn.metrics.cluster import contingency_matrix
    return float(contingency_matrix(labels, clusters).max(axis=0).sum() / len(labels))


def kmeans_scores(features: np.ndarray, labels: np.ndarray, num_clusters: int, seed: int = 0) -> tuple[dict, np.ndarray, np.ndarray]:
    """k-means (k-means++, 10 restarts, seeded) on the features, scored against the classes.

    Returns (scores, cluster of each sample (n,), centroids (k, d)). Scores: NMI and ARI against the
    labels, cluster purity, and the silhouette of the clusters in the space they were found in
    (on a seeded subsample of SILHOUETTE_MAX_SAMPLES; None when fewer than 2 or more than n - 1
    distinct clusters came out, where it is undefined).
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if not 2 <= num_clusters <= len(features):
        raise ValueError(f"k-means needs 2 to {len(features)} clusters for {len(features)} samples, "
                         f"not {num_clusters}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "fewer distinct clusters than k" on duplicate points: counted below
        with one_blas_thread():
            km = KMeans(n_clusters=num_clusters, n_init=10, random_state=seed).fit(features)
    clusters = km.labels_
    distinct = len(np.unique(clusters))
    sil = None
    if 2 <= distinct <= len(features) - 1:
        sil = float(silhouette_score(features, clusters, sample_size=min(len(features), SILHOUETTE_MAX_SAMPLES),
                                     random_state=seed))
    scores = {"nmi": float(normalized_mutual_info_score(labels, clusters)),
              "ari": float(adjusted_rand_score(labels, clusters)),
              "purity": cluster_purity(labels, clusters), "silhouette": sil,
              "num_clusters": int(num_clusters), "distinct_clusters": distinct}
    return scores, clusters, km.cluster_centers_


def trustworthiness(high: np.ndarray, low: np.ndarray, n_neighbors: int = TRUST_K, seed: int = 0) -> float:
    """sklearn.manifold.trustworthiness of a projection (Venna & Kaski), on a seeded subsample of
    SILHOUETTE_MAX_SAMPLES points: 1 when the k nearest neighbours of every point in the projection
    are among its k nearest in the full space. k is clipped below n / 2, as scikit-learn needs."""
    from sklearn.manifold import trustworthiness as sklearn_trustworthiness
    n = len(high)
    if n > SILHOUETTE_MAX_SAMPLES:
        keep = np.random.default_rng(seed).choice(n, SILHOUETTE_MAX_SAMPLES, replace=False)
        high, low, n = high[keep], low[keep], SILHOUETTE_MAX_SAMPLES
    k = min(n_neighbors, (n - 1) // 2)
    if k < 1:
        raise ValueError(f"trustworthiness needs at least 3 samples, there are {n}")
    return float(sklearn_trustworthiness(np.asarray(high).reshape(n, -1), np.asarray(low).reshape(n, -1), n_neighbors=k))


def continuity(high: np.ndarray, low: np.ndarray, n_neighbors: int = TRUST_K, seed: int = 0) -> float:
    """Continuity of a projection (Venna & Kaski 2006): trustworthiness with the roles of the spaces
    swapped, 1 when the k nearest neighbours of every point in the full space stay among its k
    nearest in the projection (no neighbourhood torn apart); the same seeded subsample."""
    return trustworthiness(low, high, n_neighbors, seed)


def global_score(high: np.ndarray, low: np.ndarray, seed: int = 0, points: int = GLOBAL_POINTS) -> float:
    """The Pearson correlation of the pairwise distances in the full space and in the projection,
    over every pair of a seeded sample of `points` points (Sainburg et al. 2021's global structure
    score): 1 when the picture keeps far things far in proportion."""
    from scipy.spatial.distance import pdist
    from scipy.stats import pearsonr
    n = len(high)
    keep = np.sort(np.random.default_rng(seed).choice(n, points, replace=False)) if n > points else np.arange(n)
    if len(keep) < 3:
        raise ValueError(f"the global score needs at least 3 samples, there are {n}")
    return float(pearsonr(pdist(np.asarray(high, dtype=np.float64)[keep].reshape(len(keep), -1)),
                          pdist(np.asarray(low, dtype=np.float64)[keep].reshape(len(keep), -1)))[0])


def projection_structure(high: np.ndarray, low: np.ndarray, seed: int = 0) -> dict:
    """How a 2-D picture low (n, 2) keeps the structure of high (n, d): trustworthiness and
    continuity at each of STRUCTURE_KS neighbours ({"5": ..}; the TRUST_K ones also on their own, as
    "trustworthiness" and "continuity"), and the global score."""
    trust = {str(k): trustworthiness(high, low, k, seed) for k in STRUCTURE_KS}
    cont = {str(k): continuity(high, low, k, seed) for k in STRUCTURE_KS}
    return {"trustworthiness": trust[str(TRUST_K)], "continuity": cont[str(TRUST_K)], "trustworthiness_k": trust,
            "continuity_k": cont, "global_score": global_score(high, low, seed)}


def kmeans_nmi(z: np.ndarray, labels: np.ndarray, num_clusters: int, space: str = "latent", umap_dims: int = 2,
               seed: int = 0, cache_dir=None) -> float:
    """NMI against the labels of k-means on the latents (space "latent") or on their UMAP reduction
    (space "umap"), as viz_kmeans_latent_space.py --space computes it."""
    from latentlab.analysis.projection import clustering_space
    return kmeans_scores(clustering_space(z, space, umap_dims, seed, cache_dir)[0], labels, num_clusters, seed)[0]["nmi"]
