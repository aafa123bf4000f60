"""Every figure: labelled axes, titles that say what and which model, PNG via save_figure."""
from __future__ import annotations

import functools

import matplotlib

matplotlib.use("Agg")  # headless: figures are files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def image_for_display(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) float in [0, 1] -> an array imshow draws: (H, W) grey or (H, W, 3) colour."""
    x = x.detach().float().clamp(0, 1).cpu()
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def show_image(ax, x: torch.Tensor) -> None:
    ax.imshow(image_for_display(x), cmap="gray" if x.shape[0] == 1 else None, vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])


def image_rows(rows: list[tuple[str, torch.Tensor]], title: str, col_titles: list[str] | None = None):
    """A grid with one labelled row per (label, images (n, C, H, W))."""
    n = max(len(imgs) for _, imgs in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(1.2 * n + 1.0, 1.3 * len(rows) + 0.6), squeeze=False)
    for r, (label, imgs) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            if c < len(imgs):
                show_image(ax, imgs[c])
            else:
                ax.axis("off")
            if c == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
            if r == 0 and col_titles and c < len(col_titles):
                ax.set_title(col_titles[c], fontsize=7)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def training_curves(histories: dict[str, dict], title: str):
    """histories: model label -> {"epoch", "train_loss", "val_loss"}; one line pair per model."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (label, h) in enumerate(histories.items()):
        color = f"C{i}"
        epochs = [e + 1 for e in h["epoch"]]
        ax.plot(epochs, h["train_loss"], "-", color=color, label=f"{label}: train")
        ax.plot(epochs, h["val_loss"], "--", color=color, label=f"{label}: validation")
        if h.get("best_epoch") is not None:
            b = h["best_epoch"]
            ax.plot([b + 1], [h["val_loss"][h["epoch"].index(b)]], "o", color=color)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (training objective per pixel value)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- latent spaces, clusters, confusion
# Kelly's 22 colours of maximum contrast (Kelly 1965), less white and black: distinct up to 20
# classes, where tab20 pairs each hue with a lighter copy of itself
KELLY = ("#f3c300", "#875692", "#f38400", "#a1caf1", "#be0032", "#c2b280", "#848482", "#008856", "#e68fac",
         "#0067a5", "#f99379", "#604e97", "#f6a600", "#b3446c", "#dcd300", "#882d17", "#8db600", "#654522",
         "#e25822", "#2b3d26")


@functools.lru_cache(maxsize=None)
def class_colors(n: int) -> tuple:
    """The one palette of every figure: n distinct colours, colour i always for class i of a
    dataset. tab10 up to 10 classes, Kelly's colours up to 20, then Kelly's followed by the
    colours farthest from all chosen so far (Glasbey et al. 2007's greedy rule, in RGB)."""
    if n <= 10:
        return tuple(plt.cm.tab10(i) for i in range(n))
    chosen = [matplotlib.colors.to_rgb(c) for c in KELLY[:n]]
    levels = np.linspace(0.1, 0.9, 9)  # no near-white or near-black: they vanish on the background or the text
    candidates = np.stack(np.meshgrid(levels, levels, levels), -1).reshape(-1, 3)
    nearest = np.min(np.linalg.norm(candidates[:, None] - np.array(chosen)[None], axis=-1), axis=1)
    while len(chosen) < n:
        pick = candidates[nearest.argmax()]
        chosen.append(tuple(pick))
        nearest = np.minimum(nearest, np.linalg.norm(candidates - pick, axis=1))
    return tuple((*c, 1.0) for c in chosen)


def _point_size(n: int) -> float:
    return float(np.clip(3000 / max(n, 1), 2, 25))


def _tick_fontsize(n: int) -> int:
    return 8 if n <= 15 else 6 if n <= 30 else 5


def latent_scatter(panels: list[dict], class_names: list, title: str):
    """Side-by-side scatters, points coloured by class, one legend of class names for all.
    panels: dicts with xy (n, 2), labels (n,), title, xlabel, ylabel."""
    colors = class_colors(len(class_names))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels) + 2.5, 6), squeeze=False)
    for ax, p in zip(axes[0], panels):
        xy, labels = np.asarray(p["xy"]), np.asarray(p["labels"])
        for c in np.unique(labels):
            m = labels == c
            ax.scatter(xy[m, 0], xy[m, 1], s=_point_size(len(xy)), color=colors[c], label=class_names[c],
                       alpha=0.8, linewidths=0)
        ax.set_title(p["title"], fontsize=10)
        ax.set_xlabel(p["xlabel"])
        ax.set_ylabel(p["ylabel"])
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=colors[c], label=name)
               for c, name in enumerate(class_names)]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), title="class",
               fontsize=_tick_fontsize(len(class_names)) + 1, ncol=1 if len(class_names) <= 25 else 2)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def _heatmap(fig, ax, m: np.ndarray, row_labels, col_labels, xlabel: str, ylabel: str, cbar: str, fmt: str):
    im = ax.imshow(m, cmap="viridis", aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(col_labels)))
    ax.set_xticklabels(col_labels, rotation=90 if max(map(len, map(str, col_labels)), default=0) > 2 else 0,
                       fontsize=_tick_fontsize(len(col_labels)))
    ax.set_yticks(range(len(row_labels)))
    ax.set_yticklabels(row_labels, fontsize=_tick_fontsize(len(row_labels)))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label=cbar)
    if m.size <= 15 * 15:  # numbers in the cells only while they stay legible
        top = m.max() if m.size else 0
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=6,
                    color="black" if v > 0.6 * top else "white")


def kmeans_figure(xy: np.ndarray, clusters: np.ndarray, labels: np.ndarray, class_names: list, title: str,
                  xlabel: str, ylabel: str, view: str):
    """Left: the 2-D view coloured by cluster, each centroid marked (the mean of its cluster's points
    in the view). Right: samples per (cluster, class), clusters ordered by their majority class."""
    k, c = int(clusters.max()) + 1, len(class_names)
    counts = np.zeros((k, c), dtype=np.int64)
    np.add.at(counts, (clusters, labels), 1)
    order = np.lexsort((-counts.max(1), counts.argmax(1)))  # by majority class, then size
    fig, (ax, hx) = plt.subplots(1, 2, figsize=(13 + 0.08 * c, 6 + 0.05 * max(k, c)),
                                 gridspec_kw={"width_ratios": [1, 1.2]})
    colors = class_colors(k)
    for j in range(k):
        m = clusters == j
        if not m.any():
            continue
        ax.scatter(xy[m, 0], xy[m, 1], s=_point_size(len(xy)), color=colors[j], alpha=0.7, linewidths=0)
        cx, cy = xy[m].mean(0)
        ax.scatter([cx], [cy], marker="X", s=90, color=colors[j], edgecolors="black", linewidths=1.0, zorder=3)
        if k <= 30:
            ax.annotate(str(j), (cx, cy), xytext=(4, 4), textcoords="offset points", fontsize=7, weight="bold")
    ax.set_title(f"{k} k-means clusters, drawn in {view}\nX: mean position of each cluster in this view", fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _heatmap(fig, hx, counts[order], [f"cluster {j}" for j in order], class_names, "class", "k-means cluster",
             "samples", "d")
    hx.set_title("samples per cluster and class", fontsize=10)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def confusion_figure(panels: list[tuple[np.ndarray, str]], class_names: list, title: str):
    """Row-normalised confusion matrices side by side: panels of (counts (C, C) true x predicted, title)."""
    c = len(class_names)
    side = 4.5 + 0.12 * c
    fig, axes = plt.subplots(1, len(panels), figsize=(side * len(panels) + 1, side), squeeze=False)
    for ax, (cm, panel_title) in zip(axes[0], panels):
        rows = cm.sum(1, keepdims=True)
        share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
        _heatmap(fig, ax, share, class_names, class_names, "predicted class", "true class",
                 "share of the true class", ".2f")
        ax.set_title(panel_title, fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- generation (viz_generation.py)
def mosaic(images: torch.Tensor, ncols: int, pad: int = 1, pad_value: float = 1.0) -> np.ndarray:
    """images (n, C, H, W) in [0, 1] -> one array imshow draws, ncols images per row, pad pixels of
    pad_value between them. torchvision's make_grid also pads the outer border: cropped, so that
    the manifold's extent maps image centres to grid points."""
    from torchvision.utils import make_grid  # here: importing torchvision costs every step that draws no grid a second
    grid = make_grid(images.detach().float().clamp(0, 1).cpu(), nrow=ncols, padding=pad, pad_value=pad_value)
    if pad:
        grid = grid[:, pad:-pad, pad:-pad]
    return image_for_display(grid)


def image_grid(images: torch.Tensor, title: str, ncols: int):
    """A grid of images (n, C, H, W) in [0, 1], drawn as one mosaic (fast for hundreds of images)."""
    tiles = mosaic(images, ncols)
    rows = -(-len(images) // ncols)
    side = min(0.9, 9.0 / max(ncols, rows))  # inches per image: the figure stays under ~9 inches
    fig, ax = plt.subplots(figsize=(max(ncols * side, 5.0), rows * side + 0.8))
    ax.imshow(tiles, cmap="gray" if images.shape[1] == 1 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=10, wrap=True)
    fig.tight_layout()
    return fig


def class_scatter(ax, z2: np.ndarray, labels: np.ndarray, class_names: list, size: float = 8) -> None:
    """Points z2 (n, 2) coloured by class, one legend entry (class name) per class present."""
    colors = class_colors(len(class_names))
    for k, name in enumerate(class_names):
        m = labels == k
        if m.any():
            ax.scatter(z2[m, 0], z2[m, 1], s=size, color=colors[k], label=str(name), alpha=0.8, linewidths=0)


def latent_manifold(images: torch.Tensor, xs: np.ndarray, ys: np.ndarray, z2: np.ndarray, labels: np.ndarray,
                    class_names: list, title: str):
    """Left: the decodings of a grid over the 2-d latent space (images (len(ys) * len(xs), C, H, W),
    row-major from the top row = largest latent 2), drawn at their latent coordinates. Right: the
    encoded test points z2 (n, 2) coloured by class, over the same extent."""
    nx, ny = len(xs), len(ys)
    dx = (xs[-1] - xs[0]) / max(nx - 1, 1)
    dy = (ys[-1] - ys[0]) / max(ny - 1, 1)
    # each decoded image is centred on its grid point
    extent = (xs[0] - dx / 2, xs[-1] + dx / 2, ys[0] - dy / 2, ys[-1] + dy / 2)
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 6.8), sharex=True, sharey=True)
    # a 1-pixel white line between the decodings keeps neighbours apart; the extent still maps
    # each image's centre to its grid point within half a pixel
    left.imshow(mosaic(images, nx, pad=1), cmap="gray" if images.shape[1] == 1 else None,
                vmin=0, vmax=1, extent=extent, aspect="auto", interpolation="nearest")
    left.set_title(f"decoded {nx} x {ny} grid of latent points", fontsize=10)
    class_scatter(right, z2, labels, class_names)
    right.set_xlim(extent[0], extent[1])
    right.set_ylim(extent[2], extent[3])
    right.set_title(f"encoded test images ({len(z2)}), coloured by class", fontsize=10)
    right.grid(alpha=0.3)
    for ax in (left, right):
        ax.set_xlabel("latent 1")
        ax.set_ylabel("latent 2")
    right.tick_params(labelleft=True)
    ncol = 1 if len(class_names) <= 15 else 2
    right.legend(title="class", loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, ncol=ncol,
                 markerscale=2, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def sweep_figure(lines: dict[str, list], metrics: dict[str, tuple[str, bool]], dashed: set, title: str):
    """One panel per metric against the latent size (log2 axis). lines: label -> [(latent size,
    {metric: mean}, {metric: sd})], one line each, the sd as error bars (0: none); labels in
    `dashed` (the baseline) are drawn dashed. metrics: metric -> (its name, whether higher is better)."""
    names = list(metrics)
    ncols = 3
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.3 * ncols, 3.3 * nrows + 0.6), squeeze=False)
    sizes = sorted({p[0] for points in lines.values() for p in points})
    for ax, name in zip(axes.flat, names):
        label, higher = metrics[name]
        for line, points in lines.items():
            points = sorted(points, key=lambda p: p[0])
            xs, ys, err = [p[0] for p in points], [p[1][name] for p in points], [p[2][name] for p in points]
            if line in dashed:
                ax.errorbar(xs, ys, yerr=err, fmt="s--", color="0.35", label=line, markersize=4, capsize=3)
            else:
                ax.errorbar(xs, ys, yerr=err, fmt="o-", color=f"C{list(lines).index(line)}", label=line,
                            markersize=5, capsize=3)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(k) for k in sizes])
        ax.minorticks_off()
        ax.set_xlabel("latent size (log2 scale)")
        ax.set_ylabel(label)
        ax.set_title(f"{label} ({'higher' if higher else 'lower'} is better)", fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig
