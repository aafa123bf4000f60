"""One palette per meaning, for every figure and the explorer: classes, k-means clusters, a
classifier's right and wrong."""
from __future__ import annotations

import functools

import matplotlib
import numpy as np

# Kelly's 22 colours of maximum contrast (Kelly 1965), less white and black: distinct up to 20
# classes, where tab20 pairs each hue with a lighter copy of itself
KELLY = ("#f3c300", "#875692", "#f38400", "#a1caf1", "#be0032", "#c2b280", "#848482", "#008856", "#e68fac",
         "#0067a5", "#f99379", "#604e97", "#f6a600", "#b3446c", "#dcd300", "#882d17", "#8db600", "#654522",
         "#e25822", "#2b3d26")


def _farthest(avoid: np.ndarray, candidates: np.ndarray, n: int) -> list[int]:
    """Indices of n candidates picked one at a time, each the farthest from `avoid` and from those
    picked before it (Glasbey et al. 2007's greedy rule); rows are points of one colour space."""
    nearest = np.min(np.linalg.norm(candidates[:, None] - avoid[None], axis=-1), axis=1)
    picked = []
    for _ in range(n):
        picked.append(int(nearest.argmax()))
        nearest = np.minimum(nearest, np.linalg.norm(candidates - candidates[picked[-1]], axis=1))
    return picked


@functools.lru_cache(maxsize=None)
def class_colors(n: int) -> tuple:
    """The class palette of every figure and the explorer: n distinct colours, colour i always for
    class i of a dataset. tab10 up to 10 classes, Kelly's colours up to 20, then Kelly's followed by
    the colours farthest from all chosen so far (greedy, in RGB)."""
    if n <= 10:
        return tuple(matplotlib.colormaps["tab10"](i) for i in range(n))
    chosen = [matplotlib.colors.to_rgb(c) for c in KELLY[:n]]
    levels = np.linspace(0.1, 0.9, 9)  # no near-white or near-black: they vanish on the background or the text
    candidates = np.stack(np.meshgrid(levels, levels, levels), -1).reshape(-1, 3)
    chosen += [tuple(candidates[i]) for i in _farthest(np.array(chosen), candidates, n - len(chosen))]
    return tuple((*c, 1.0) for c in chosen)


@functools.lru_cache(maxsize=None)
def cluster_colors(k: int) -> tuple:
    """The cluster palette (k-means clusters, in every figure and the explorer): k colours chosen
    in CIELAB to lie far from tab10's and Kelly's, the class colours of any dataset up to 20
    classes, so that no colour reads as "class j" in one figure and "cluster j" in the next."""
    from skimage.color import rgb2lab
    levels = np.linspace(0, 1, 18)
    rgb = np.stack(np.meshgrid(levels, levels, levels), -1).reshape(-1, 3)
    lab = rgb2lab(rgb[None])[0]
    # mid lightness and chroma: no near-white, near-black or neon points
    keep = (lab[:, 0] > 30) & (lab[:, 0] < 80) & (np.hypot(lab[:, 1], lab[:, 2]) < 75)
    classes = np.array([matplotlib.colors.to_rgb(c) for c in (*matplotlib.colormaps["tab10"].colors, *KELLY)])
    picked = _farthest(rgb2lab(classes[None])[0], lab[keep], k)
    return tuple((*rgb[keep][i], 1.0) for i in picked)


OUTCOME_COLORS = ("#b8b8b8", "#000000")  # a classifier right (light grey) / wrong (black): neither a class nor a cluster
