"""A UMAP loss on the codes, beside the reconstruction objective: the UMAP-regularised autoencoder
of Sainburg, McInnes & Gentner (Parametric UMAP, Neural Computation 2021), the paper's best 2-d
model on Fashion-MNIST (train.py --umap_weight).

The fuzzy neighbour graph of the training images comes from umap-learn (`fuzzy_simplicial_set`
on their pixels, UMAP's default of 15 neighbours, found exactly by projection.exact_neighbours so
that the same images always give the same graph). It is built once per training split and kept in
`<output_dir>/cache/umap_graph_{key}.npy`, keyed by the images' bytes and umap-learn's version.

Each training step draws `edges` edges with probability proportional to their weight (UMAP's own
edge sampling), encodes both ends in the model's forward pass beside the batch, and adds `weight`
times UMAP's fuzzy-set cross-entropy (as Parametric UMAP computes it): each edge's two codes are
pulled together, and NEGATIVES pairs per edge, its head against a code drawn at random from the
step's ends, are pushed apart, under UMAP's similarity curve 1 / (1 + a d^(2b)) for min_dist 0.1.
"""
from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from latentlab.store import files
from latentlab.train import seeds

NEIGHBOURS = 15  # umap-learn's default n_neighbors
NEGATIVES = 5  # negative pairs per edge, umap-learn's default negative_sample_rate
MIN_DIST = 0.1  # umap-learn's default; with spread 1 it gives the curve's a and b
EPS = 1e-4  # probabilities are clipped to [EPS, 1 - EPS] before the log, as in Parametric UMAP


class FuzzyGraph(NamedTuple):
    head: torch.Tensor  # (edges,) int64 positions in the images the graph was built on
    tail: torch.Tensor  # (edges,) int64
    weight: torch.Tensor  # (edges,) float64 membership strengths in (0, 1]


def graph_key(images_u8: np.ndarray, k: int) -> str:
    return files.content_key({"what": "umap fuzzy graph", "n_neighbors": k, "neighbours": "exact",
                              "metric": "euclidean", "shape": list(images_u8.shape),
                              "version": version("umap-learn")}, images_u8)


def fuzzy_graph(images_u8: torch.Tensor, cache_dir=None, quiet: bool = True) -> FuzzyGraph:
    """UMAP's fuzzy neighbour graph of uint8 images (N, C, H, W) by their pixels in [0, 1], through
    the cache in cache_dir (None: no cache)."""
    x_u8 = np.ascontiguousarray(images_u8.cpu().numpy().reshape(len(images_u8), -1))
    n = len(x_u8)
    if n < 2:
        raise ValueError("a UMAP graph needs at least 2 images")
    k = min(NEIGHBOURS, n - 1) + 1  # umap-learn counts each point as its own first neighbour
    path = None if cache_dir is None else Path(cache_dir) / f"umap_graph_{graph_key(x_u8, k)}.npy"
    coo = files.load_cached_npy(path, lambda a: a.ndim == 2 and a.shape[0] == 3 and a.dtype == np.float64
                                and a.shape[1] > 0 and a[:2].max() < n and a[:2].min() >= 0)
    if coo is None:
        from latentlab.analysis.projection import exact_neighbours, import_umap
        if not quiet:
            print(f"building the UMAP graph of {n} training images ({k - 1} neighbours each, once per "
                  f"split: cached in {cache_dir})...", flush=True)
        x = x_u8.astype(np.float32) / 255.0
        idx, dist = exact_neighbours(x, k)
        umap = import_umap()
        graph = umap.umap_.fuzzy_simplicial_set(x, k, None, "euclidean", knn_indices=idx, knn_dists=dist)[0]
        graph = graph.tocoo()
        coo = np.stack([graph.row, graph.col, graph.data]).astype(np.float64)
        if path is not None:
            files.save_npy(coo, path)
    return FuzzyGraph(torch.from_numpy(coo[0]).long(), torch.from_numpy(coo[1]).long(), torch.from_numpy(coo[2]))


def curve_parameters(min_dist: float = MIN_DIST) -> tuple[float, float]:
    """UMAP's a and b: 1 / (1 + a d^(2b)) fits the offset exponential of spread 1 and min_dist."""
    from latentlab.analysis.projection import import_umap
    a, b = import_umap().umap_.find_ab_params(1.0, min_dist)
    return float(a), float(b)


def umap_cross_entropy(z_head: torch.Tensor, z_tail: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """UMAP's fuzzy-set cross-entropy of a batch of edges (codes of their heads and tails, (E, d)):
    -log q over the edges and -log(1 - q) over NEGATIVES * E pairs of each head with a code drawn
    (torch's global RNG) from all the step's ends, averaged over all (1 + NEGATIVES) * E pairs."""
    z_head, z_tail = z_head.float(), z_tail.float()
    ends = torch.cat([z_head, z_tail])
    drawn = torch.randint(0, len(ends), (NEGATIVES * len(z_head),), device=ends.device)
    d2 = torch.cat([(z_head - z_tail).pow(2).sum(1), (z_head.repeat(NEGATIVES, 1) - ends[drawn]).pow(2).sum(1)])
    q = 1.0 / (1.0 + a * d2.clamp_min(1e-12).pow(b))
    positive = torch.arange(len(d2), device=d2.device) < len(z_head)
    return -torch.where(positive, q, 1.0 - q).clamp(EPS, 1.0 - EPS).log().mean()


class UmapLoss:
    """The UMAP term of one training split: which images each step encodes beside its batch, and
    the weighted loss of their codes."""

    def __init__(self, graph: FuzzyGraph, train_idx: torch.Tensor, weight: float, edges: int):
        self.head, self.tail = train_idx[graph.head], train_idx[graph.tail]  # indices into the split's images
        self.cumulative = graph.weight.cumsum(0)
        self.weight, self.edges = weight, edges
        self.a, self.b = curve_parameters()

    def epoch_ends(self, steps: int, seed: int, epoch: int, rank: int) -> torch.Tensor:
        """(steps, 2 * edges) image indices, heads then tails, of the edges each step of this epoch
        draws, seeded by (seed, epoch, rank) so that a resumed run draws the same ones."""
        g = torch.Generator().manual_seed(seeds.umap_edges(seed, epoch, rank))
        u = torch.rand(steps * self.edges, generator=g, dtype=torch.float64) * self.cumulative[-1]
        drawn = torch.searchsorted(self.cumulative, u, right=True).clamp_max_(len(self.cumulative) - 1)
        drawn = drawn.view(steps, self.edges)
        return torch.cat([self.head[drawn], self.tail[drawn]], dim=1)

    def __call__(self, codes: torch.Tensor) -> torch.Tensor:
        """weight x the cross-entropy of the codes of one step's ends (heads then tails)."""
        z_head, z_tail = codes.chunk(2)
        return self.weight * umap_cross_entropy(z_head, z_tail, self.a, self.b)
