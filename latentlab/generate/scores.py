"""How good generated images are, in numbers (step 7's scoring, and the sweep's): the Frechet distance (FD)
between a set of images and the test images, precision and recall (Kynkaanniemi et al. 2019, k = 3) and
novelty, all in the features of the in-domain classifier (feature_net.py).

FD: the distance between two Gaussians fitted to the two sets of features (Heusel et al. 2017's FID, with this
dataset's own classifier in place of Inception); 0 for identical statistics, lower is closer. Precision: the
share of the generated images that fall inside the real images' manifold (the union of balls around each test
image reaching its k-th nearest test neighbour), i.e. how realistic they are; recall: the share of the test
images inside the generated images' manifold, i.e. how much of the data's variety the generator covers.

Novelty (after Meehan et al. 2020's data-copying test): a set's median distance to the nearest training image over
the test images'; about 1 as new as unseen data, 0 for copies, under 1 too for images crowded where data is dense.

Beside every model and sampler sit, on the same features: the training images (the floor: what two samples of
the data itself score), PCA at the same size with a Gaussian and a mixture on its coefficients, and the models'
reconstructions (what the decoder reaches at all) of the test images (paired with the very images they are
scored against, so they can score below the floor) and of the floor's training images (unpaired, as samples
are). Interpolation: the FD of the decoded midpoints of random test pairs, beside PCA's and pixel blending's.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch

from latentlab.generate import sampling as gen
from latentlab.data.datasets import to_float
from latentlab.generate.feature_net import features
from latentlab.analysis.inference import encode_images, reconstruct_batches
from latentlab.analysis.pca import pca_encode
from model.autoencoder import FAMILIES

K = 3  # neighbours of the manifold radii (Kynkaanniemi et al. 2019)
PAIRS = 1000  # random test pairs whose midpoints score an interpolation
BATCH = 1000  # images decoded and featurised at a time: the images of a set are never all held
BLOCK = 1024  # rows of a distance block in precision/recall: BLOCK x (set size) floats at a time
COPY = 1e-3  # nearer a training image than this x the features' median norm is a copy (rounding leaves ~1e-7)


# ---------------------------------------------------------------- the scores
def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FD between the Gaussians fitted to feature sets a (n, F) and b (m, F)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu = a.mean(0) - b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # features that never fire make the product singular: its root is still exact
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(s1 @ s2)
        if not np.isfinite(root).all():  # offset the diagonals, as the FID reference code does
            off = np.eye(len(s1)) * 1e-6
            root = scipy.linalg.sqrtm((s1 + off) @ (s2 + off))
    fd = mu @ mu + np.trace(s1) + np.trace(s2) - 2 * np.trace(root.real)
    return float(max(fd, 0.0))  # rounding leaves about -1e-10 for identical statistics


def manifold_radii(x: np.ndarray, k: int = K) -> np.ndarray:
    """The distance of each row of x to its k-th nearest other row."""
    from sklearn.neighbors import NearestNeighbors
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)  # each row's first neighbour is itself
    return dist[:, k]


def covered(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> float:
    """The share of points inside at least one ball (centre, radius), BLOCK points at a time."""
    c, r = torch.from_numpy(centres).float(), torch.from_numpy(radii).float()
    inside = sum(int((torch.cdist(p, c) <= r).any(1).sum()) for p in torch.from_numpy(points).float().split(BLOCK))
    return inside / len(points)


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = K) -> tuple[float, float]:
    return covered(fake, real, manifold_radii(real, k)), covered(real, fake, manifold_radii(fake, k))


def set_scores(real: np.ndarray, fake: np.ndarray) -> dict:
    precision, recall = precision_recall(real, fake)
    return {"fd": frechet_distance(fake, real), "precision": precision, "recall": recall}


def nearest_distances(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The distance of each row of x to its nearest row of reference (scikit-learn's, in chunks of bounded memory)."""
    from sklearn.metrics import pairwise_distances_argmin_min
    return pairwise_distances_argmin_min(x, reference)[1]


# ---------------------------------------------------------------- sets of images
@dataclass
class Scorer:
    """The classifier's features of the test images, and a way to score any set of images against them;
    with the training images' features, each set's novelty too."""
    net: torch.nn.Module
    device: torch.device
    real: np.ndarray  # features (test images, F)
    train: np.ndarray | None = None  # features (training images, F)
    real_nearest: float = 0.0  # the test images' median distance to their nearest training image (0: copies)

    @classmethod
    def of_test_images(cls, net, test_x: torch.Tensor, device, train_x: torch.Tensor | None = None):
        feats = lambda x: features(net, (to_float(p) for p in x.split(BATCH)), device)
        real, train = feats(test_x), None if train_x is None else feats(train_x)
        near = 0.0 if train is None else float(np.median(nearest_distances(real, train)))
        return cls(net, device, real, train, near if near > COPY * np.median(np.linalg.norm(real, axis=1)) else 0.0)

    def feats(self, batches) -> np.ndarray:
        return features(self.net, batches, self.device)

    def full(self, batches) -> dict:
        fake = self.feats(batches)
        out = set_scores(self.real, fake)
        if self.train is not None and self.real_nearest > 0:
            out["novelty"] = float(np.median(nearest_distances(fake, self.train))) / self.real_nearest
        return out

    def fd(self, batches) -> float:
        return frechet_distance(self.feats(batches), self.real)


def decoded(decode, z: torch.Tensor):
    """Images decode(z) in batches: float (B, C, H, W)."""
    with torch.no_grad():
        for part in z.split(BATCH):
            yield decode(part)


def model_decoder(net, device):
    return lambda z: net.decode(z.to(device)).float()


def pca_decoder(mean: torch.Tensor, comps: torch.Tensor, shape):
    """PCA coefficients (B, k) -> images (B, C, H, W), unclipped (the features clamp them)."""
    return lambda c: (c.float() @ comps + mean).view(len(c), *shape)


def test_pairs(n: int, seed: int, count: int = PAIRS) -> tuple[torch.Tensor, torch.Tensor]:
    """count random pairs (a, b) of distinct test images, seeded."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(n, (count,), generator=g)
    return a, (a + torch.randint(1, n, (count,), generator=g)) % n


def space_scores(decode, z_train: np.ndarray, z_test: torch.Tensor, samplers, components: int, num_scored: int,
                 seed: int, scorer: Scorer, cache_dir, pairs, prior=None) -> dict:
    """One latent space (a model's, or PCA's coefficients): each sampler's samples scored, and the
    midpoints of the test pairs; {"samples": {sampler: scores}, "midpoints_fd", "seconds"}. prior:
    the model family's (for the sampler "prior")."""
    start = time.perf_counter()
    size = z_test.shape[1]
    out = {"samples": {}}
    for s in samplers:
        packed = None if s == "prior" else gen.fitted_sampler(z_train, s, components, seed, cache_dir)
        t = time.perf_counter()  # the scoring alone (draw, decode, features, FD, precision/recall), not the fit
        out["samples"][s] = scorer.full(decoded(decode, gen.draw(s, packed, size, num_scored, seed, prior)))
        out["samples"][s]["seconds"] = time.perf_counter() - t
    a, b = pairs
    out["midpoints_fd"] = scorer.fd(decoded(decode, (z_test[a] + z_test[b]) / 2))
    out["seconds"] = time.perf_counter() - start
    return out


def best_sampler(samples: dict) -> str:
    """The sampler of the lowest FD."""
    return min(samples, key=lambda s: samples[s]["fd"])


def floor_sample(n: int, num_scored: int, seed: int) -> torch.Tensor:
    """The indices (sorted) of the seeded sample of num_scored training images: the floor's, and the
    images whose reconstructions are scored unpaired."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:num_scored].sort().values


def floor_and_blend(scorer: Scorer, train_x: torch.Tensor, test_x: torch.Tensor, pick: torch.Tensor, pairs) -> dict:
    """The training images train_x[pick] against the test images, and the FD of pixel-space blending
    (the average of the two images of each test pair)."""
    a, b = pairs
    blends = ((to_float(test_x[a[i:i + BATCH]]) + to_float(test_x[b[i:i + BATCH]])) / 2 for i in range(0, len(a), BATCH))
    return {"floor": {**scorer.full(to_float(train_x[p]) for p in pick.split(BATCH)), "images": len(pick)},
            "pixel_blend_midpoints_fd": scorer.fd(blends)}


def reconstruction_scores(scorer: Scorer, net, images: torch.Tensor, device, pick: torch.Tensor | None = None) -> dict:
    """The scores of the reconstructions of images (of images[pick]), read BATCH at a time."""
    parts = images.split(BATCH) if pick is None else (images[p] for p in pick.split(BATCH))
    return scorer.full(rec for part in parts for _, rec in reconstruct_batches(net, part, device, BATCH))


def score_generation(models, nets: dict, test_x: torch.Tensor, train_x: torch.Tensor, pca, samplers, components: int,
                     num_scored: int, seed: int, scorer: Scorer, cache_dir, device, z_train: dict | None = None,
                     progress=None) -> dict:
    """Every score of step 7 for models (CheckpointFile, nets {latent size: network}), beside PCA
    (mean, components; None: no PCA rows) and the floor. z_train: {latent size: training latents}
    already encoded (the others are encoded here). progress: an optional callable told each stage."""
    say = progress or (lambda what: None)
    pairs = test_pairs(len(test_x), seed)
    result = {"k": K, "pairs": PAIRS, "num_scored": num_scored, "gmm_components": components, "seed": seed,
              "test_images": len(test_x), "samplers": list(samplers), "models": {}, "pca": {}}
    say("the training images and pixel blending")
    pick = floor_sample(len(train_x), num_scored, seed)
    result.update(floor_and_blend(scorer, train_x, test_x, pick, pairs))
    for m in models:
        k, net = m.latent_size, nets[m.latent_size]
        say(f"the {k}-d model")
        zt = (z_train or {}).get(k)
        zt = encode_images(net, train_x, device) if zt is None else zt
        zs = torch.from_numpy(encode_images(net, test_x, device))
        scores = space_scores(model_decoder(net, device), zt, zs, samplers, components, num_scored, seed, scorer,
                              cache_dir, pairs, FAMILIES[m.family].prior)
        result["models"][str(k)] = {"name": m.name, "label": m.label, "family": m.family, **scores,
                                    "best_sampler": best_sampler(scores["samples"]),
                                    "reconstructions": reconstruction_scores(scorer, net, test_x, device),
                                    "training_reconstructions": reconstruction_scores(scorer, net, train_x, device, pick)}
        if pca is not None:
            say(f"PCA with {k} components")
            mean, comps = pca
            c = comps[:min(k, len(comps))]
            coefs = lambda x: torch.cat([pca_encode(p, mean, c, len(c)) for p in x.split(8192)])
            scores = space_scores(pca_decoder(mean, c, test_x.shape[1:]), coefs(train_x).numpy(), coefs(test_x),
                                  ("gaussian", "gmm"), components, num_scored, seed, scorer, cache_dir, pairs)
            result["pca"][str(k)] = {"components": len(c), **scores, "best_sampler": best_sampler(scores["samples"])}
    return result


# ---------------------------------------------------------------- the table
TABLE_HEADER = ["images, against the test images", "FD", "precision", "recall", "novelty"]


def table_rows(result: dict) -> list[list[str]]:
    """Rows of text_table(TABLE_HEADER, ...): the floor, then per size the model's samplers, its
    reconstructions and midpoints, PCA's samplers and midpoints; pixel blending last (midpoints:
    FD alone, as their few images would bias recall)."""
    def row(what, s):
        novelty = f"{s['novelty']:.2f}" if "novelty" in s else ""
        return [what, f"{s['fd']:.2f}", f"{s['precision']:.3f}", f"{s['recall']:.3f}", novelty]

    def mid(what, fd):
        return [f"{what}, midpoints of {result['pairs']} test pairs", f"{fd:.2f}", "", "", ""]
    rows = [row(f"training images ({result['floor']['images']}; the floor)", result["floor"])]
    for k, m in result["models"].items():
        rows += [row(f"{m['name']} {k}-d, {s} samples", v) for s, v in m["samples"].items()]
        rows += [row(f"{m['name']} {k}-d, reconstructions of the test images", m["reconstructions"]),
                 row(f"{m['name']} {k}-d, reconstructions of the floor's training images", m["training_reconstructions"]),
                 mid(f"{m['name']} {k}-d", m["midpoints_fd"])]
        p = result["pca"].get(k)
        if p:
            rows += [row(f"PCA {k}, {s} samples", v) for s, v in p["samples"].items()]
            rows.append(mid(f"PCA {k}", p["midpoints_fd"]))
    rows.append(mid("pixel blending", result["pixel_blend_midpoints_fd"]))
    return rows
