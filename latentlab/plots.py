"""The figures of points, cells and curves (image figures: image_grids.py): labelled axes, titles
that say what and which model, one palette per meaning."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: figures are files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from latentlab.palettes import class_colors, cluster_colors  # noqa: E402


def training_curves(histories: dict[str, dict], title: str):
    """histories: model label -> {"epoch", "train_loss", "val_loss", "best_epoch"}; one line pair per
    model, the selected epoch marked; the title ends with each model's lowest validation loss."""
    from matplotlib.ticker import MaxNLocator
    fig, ax = plt.subplots(figsize=(7, 4.5))
    best = []
    for i, (label, h) in enumerate(histories.items()):
        color = f"C{i}"
        epochs = [e + 1 for e in h["epoch"]]
        ax.plot(epochs, h["train_loss"], "-", color=color, label=f"{label}: train")
        ax.plot(epochs, h["val_loss"], "--", color=color, label=f"{label}: validation")
        if h.get("best_epoch") is not None:
            b, v = h["best_epoch"], h["val_loss"][h["epoch"].index(h["best_epoch"])]
            ax.plot([b + 1], [v], "o", color=color, markeredgecolor="black",
                    label=f"{label}: selected (lowest validation), epoch {b + 1}")
            best.append(f"{label} {v:.4g} (epoch {b + 1})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no 1.5 on a 3-epoch run
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (training objective per pixel value)")
    ax.set_yscale("log")
    ax.set_title(title + ("\nlowest validation loss: " + ", ".join(best) if best else ""), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _point_size(n: int) -> float:
    """Marker area (pt^2) for n points: 100 points stay distinct dots, 10,000 stay visible."""
    return float(np.clip(300 / np.sqrt(max(n, 1)), 4, 30))


def _tick_fontsize(n: int) -> int:
    return 8 if n <= 15 else 6 if n <= 30 else 5


# a Gaussian's 0.5-99.5 percentiles widened by 25% of their span reach 3.9 sd: its own tail stays in
ROBUST_PERCENTILES, ROBUST_MARGIN = (0.5, 99.5), 0.25


def robust_limits(xy: np.ndarray) -> tuple:
    """Axis limits ((x0, x1), (y0, y1)) of points xy (n, 2): the ROBUST_PERCENTILES widened by
    ROBUST_MARGIN of their span, and never past the points' own range (plus 2%): a few far
    outliers do not squeeze the others into a corner."""
    lo, hi = np.percentile(xy, ROBUST_PERCENTILES, axis=0)
    pad = ROBUST_MARGIN * np.maximum(hi - lo, 1e-6)
    span = np.maximum(xy.max(0) - xy.min(0), 1e-6)
    lo = np.maximum(lo - pad, xy.min(0) - 0.02 * span)
    hi = np.minimum(hi + pad, xy.max(0) + 0.02 * span)
    return (lo[0], hi[0]), (lo[1], hi[1])


def fixed_limits(xy: np.ndarray) -> tuple:
    """One pair of axis limits for every frame of a film xy (frames, n, 2) (the training GIF, the
    explorer's): the ROBUST_PERCENTILES of all its points, with a 5% margin."""
    lo, hi = np.percentile(xy.reshape(-1, 2), ROBUST_PERCENTILES, axis=0)
    pad = 0.05 * np.maximum(hi - lo, 1e-6)
    return (lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1])


def scatter_within(ax, xy: np.ndarray, colors: np.ndarray, limits: tuple) -> int:
    """Points xy (n, 2) in colours (n, 4) on ax, its axes set to limits ((x0, x1), (y0, y1)); the
    points beyond them drawn on the border as triangles pointing their way. Returns their count."""
    (x0, x1), (y0, y1) = limits
    size = _point_size(len(xy))
    out = (xy[:, 0] < x0) | (xy[:, 0] > x1) | (xy[:, 1] < y0) | (xy[:, 1] > y1)
    order = np.random.default_rng(0).permutation(len(xy))  # no class painted over all the others
    inside = order[~out[order]]
    ax.scatter(xy[inside, 0], xy[inside, 1], s=size, c=colors[inside], alpha=0.8, linewidths=0)
    edge = np.clip(xy, (x0, y0), (x1, y1))
    left, right = xy[:, 0] < x0, xy[:, 0] > x1
    below, above = (xy[:, 1] < y0) & ~left & ~right, (xy[:, 1] > y1) & ~left & ~right  # corners: by x
    for marker, side in (("<", left), (">", right), ("v", below), ("^", above)):
        if side.any():
            ax.scatter(edge[side, 0], edge[side, 1], s=max(3 * size, 24), c=colors[side], marker=marker,
                       clip_on=False, linewidths=0.3, edgecolors="black", zorder=3)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    return int(out.sum())


def outside_note(count: int, box: str = "the axes") -> str:
    """A title's line saying how many points lie beyond the drawn box ('' for none)."""
    return f"\n{count} point{'s' if count != 1 else ''} beyond {box}: triangles on the edge" if count else ""


ROBUST_BOX = f"the {ROBUST_PERCENTILES[0]:g}-{ROBUST_PERCENTILES[1]:g} percentiles (+{ROBUST_MARGIN:.0%})"


def class_legend(fig_or_ax, class_names: list, **kw) -> None:
    """One legend entry per class, in the class palette."""
    colors = class_colors(len(class_names))
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=colors[c], label=str(name))
               for c, name in enumerate(class_names)]
    fig_or_ax.legend(handles=handles, title="class", ncol=1 if len(class_names) <= 25 else 2, **kw)


def latent_scatter(panels: list[dict], class_names: list, title: str):
    """Side-by-side scatters, points coloured by class, one legend of class names for all; axes
    set by robust_limits. panels: dicts with xy (n, 2), labels (n,), title, xlabel, ylabel."""
    colors = np.array(class_colors(len(class_names)))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels) + 2.5, 6.4), squeeze=False)
    for ax, p in zip(axes[0], panels):
        xy, labels = np.asarray(p["xy"]), np.asarray(p["labels"])
        outside = scatter_within(ax, xy, colors[labels], robust_limits(xy))
        ax.set_title(p["title"] + outside_note(outside, ROBUST_BOX), fontsize=10)
        ax.set_xlabel(p["xlabel"])
        ax.set_ylabel(p["ylabel"])
    class_legend(fig, class_names, loc="center left", bbox_to_anchor=(1.0, 0.5),
                 fontsize=_tick_fontsize(len(class_names)) + 1)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def _heatmap(fig, ax, m: np.ndarray, row_labels, col_labels, xlabel: str, ylabel: str, cbar: str,
             vmax: float | None = None):
    """m (rows, cols) as coloured cells from 0 to vmax (default: m's largest), zeros blank (white).
    Returns the image, for annotate_cells."""
    cmap = plt.cm.viridis.with_extremes(bad="white")
    im = ax.imshow(np.ma.masked_equal(m, 0), cmap=cmap, aspect="auto", interpolation="nearest",
                   vmin=0, vmax=vmax or max(float(m.max()), 1e-9))
    ax.set_xticks(range(len(col_labels)))
    ax.set_xticklabels(col_labels, rotation=90 if max(map(len, map(str, col_labels)), default=0) > 2 else 0,
                       fontsize=_tick_fontsize(len(col_labels)))
    ax.set_yticks(range(len(row_labels)))
    ax.set_yticklabels(row_labels, fontsize=_tick_fontsize(len(row_labels)))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label=cbar)
    return im


ANNOTATION_SIZES = (10, 9, 8)  # pt, largest first: below 8 pt, no numbers at all


def annotate_cells(fig, ax, im, texts: np.ndarray) -> None:
    """Write texts (rows, cols) ('' for none) in the cells of heatmap im, at the largest of
    ANNOTATION_SIZES that fits a cell at the figure's size (none where even 8 pt does not), black
    on light cells and white on dark ones. Call once the layout is final."""
    rows, cols = texts.shape
    box = ax.get_position()
    cell_w, cell_h = box.width * fig.get_figwidth() / cols, box.height * fig.get_figheight() / rows
    longest = max((len(t) for t in texts.flat), default=0)
    size = next((s for s in ANNOTATION_SIZES  # a digit is about 0.6 em wide; a line 1.2 em high
                 if longest * 0.62 * s / 72 + 0.05 <= cell_w and 1.2 * s / 72 + 0.02 <= cell_h), None)
    if size is None:
        return
    for (i, j), t in np.ndenumerate(texts):
        if t:
            r, g, b, _ = im.cmap(im.norm(im.get_array()[i, j]))
            ax.text(j, i, t, ha="center", va="center", fontsize=size,
                    color="black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white")


def kmeans_figure(xy: np.ndarray, clusters: np.ndarray, labels: np.ndarray, class_names: list, title: str,
                  xlabel: str, ylabel: str, view: str):
    """Left: the 2-D view coloured by cluster (the cluster palette), each centroid marked (the mean
    of its cluster's points in the view), axes by robust_limits. Right: samples per (cluster,
    class), clusters ordered by their majority class."""
    k, c = int(clusters.max()) + 1, len(class_names)
    counts = np.zeros((k, c), dtype=np.int64)
    np.add.at(counts, (clusters, labels), 1)
    order = np.lexsort((-counts.max(1), counts.argmax(1)))  # by majority class, then size
    heat_w, heat_h = np.clip(2.4 + 0.45 * c, 5.5, 12), np.clip(1.6 + 0.36 * k, 5.0, 10)
    fig, (ax, hx) = plt.subplots(1, 2, figsize=(6.5 + heat_w, heat_h + 1.4),
                                 gridspec_kw={"width_ratios": [6.5, heat_w]})
    colors = np.array(cluster_colors(k))
    limits = robust_limits(xy)
    outside = scatter_within(ax, xy, colors[clusters], limits)
    for j in range(k):
        m = clusters == j
        if not m.any():
            continue
        cx, cy = np.clip(xy[m].mean(0), (limits[0][0], limits[1][0]), (limits[0][1], limits[1][1]))
        ax.scatter([cx], [cy], marker="X", s=90, color=colors[j], edgecolors="black", linewidths=1.0, zorder=4)
        if k <= 30:
            ax.annotate(str(j), (cx, cy), xytext=(4, 4), textcoords="offset points", fontsize=8, weight="bold")
    ax.set_title(f"{k} k-means clusters, drawn in {view}\ncolours: clusters, not classes; X: mean position "
                 f"of each cluster{outside_note(outside, ROBUST_BOX)}", fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    im = _heatmap(fig, hx, counts[order], [f"cluster {j}" for j in order], class_names, "class", "k-means cluster",
                  "samples")
    hx.set_title("samples per cluster and class", fontsize=10)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    annotate_cells(fig, hx, im, np.where(counts[order] > 0, counts[order].astype(str), ""))
    return fig


def confusion_figure(panels: list[tuple[np.ndarray, str]], class_names: list, title: str):
    """Row-normalised confusion matrices side by side, in % of the true class: panels of (counts
    (C, C) true x predicted, title). Empty cells blank; a share under 0.5% that is not zero: "<1"."""
    c = len(class_names)
    side = float(np.clip(2.4 + 0.36 * c, 4.8, 9.5))
    fig, axes = plt.subplots(1, len(panels), figsize=(side * len(panels) + 1, side), squeeze=False)
    drawn = []
    for ax, (cm, panel_title) in zip(axes[0], panels):
        rows = cm.sum(1, keepdims=True)
        share = 100 * np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
        im = _heatmap(fig, ax, share, class_names, class_names, "predicted class", "true class",
                      "% of the true class", vmax=100)  # one scale for every panel
        ax.set_title(panel_title, fontsize=9)
        drawn.append((ax, im, np.where(cm == 0, "", np.where(share < 0.5, "<1", np.round(share).astype(int).astype(str)))))
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    for ax, im, texts in drawn:
        annotate_cells(fig, ax, im, texts)
    return fig
