"""Figures of images: rows of originals and reconstructions, grids of samples, and the decoder's
manifold beside the latents it came from. Images are (n, C, H, W) tensors in [0, 1]."""
from __future__ import annotations

import numpy as np
import torch

from latentlab.palettes import class_colors
from latentlab.plots import class_legend, outside_note, plt, scatter_within


ROW_GAP, COL_GAP = 0.16, 0.06  # inches between the rows and the columns of an image grid


def image_for_display(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) float in [0, 1] -> an array imshow draws: (H, W) grey or (H, W, 3) colour."""
    x = x.detach().float().clamp(0, 1).cpu()
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def image_rows(rows: list[tuple[str, torch.Tensor]], title: str, col_titles: list[str] | None = None,
               cell_titles: list[list[str]] | None = None):
    """A grid with one labelled row per (label, images (n, C, H, W)), col_titles over the first row,
    or cell_titles[r][c] over each image. The layout is set in inches, so a gap of ROW_GAP between
    rows and COL_GAP between columns always separates the images. Every image is drawn into one
    axes whose data units are inches (fig.axes[0].images, row by row), not an axes per image, whose
    ticks and spines matplotlib would build and draw for each (docs/performance.md)."""
    from matplotlib.patches import Rectangle
    n = max(len(imgs) for _, imgs in rows)
    h, w = next(imgs for _, imgs in rows if len(imgs)).shape[-2:]
    cell_w = min(1.1, 15.0 / n, 1.6 * w / h)  # inches per image: under ~17 inches wide, 1.6 high
    cell_h = cell_w * h / w

    def lines(texts, size):  # inches of the tallest of these texts, at size pt
        return max((str(t).count("\n") + 1 for t in texts), default=0) * size * 1.35 / 72

    def widest(texts, size):  # inches of the longest line of these texts, at size pt
        return max((len(line) for t in texts for line in str(t).split("\n")), default=0) * size * 0.6 / 72

    left = widest([label for label, _ in rows], 9) + 0.25
    caption = lines([t for row in cell_titles for t in row], 7) + 0.05 if cell_titles else 0.0
    top = lines([title], 11) + (lines(col_titles, 7) + 0.1 if col_titles else 0) + caption + 0.2
    gap = ROW_GAP + caption
    grid_w, grid_h = n * cell_w + (n - 1) * COL_GAP, len(rows) * cell_h + (len(rows) - 1) * gap
    width, height = left + grid_w + 0.15, top + grid_h + 0.15
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((left / width, 0.15 / height, grid_w / width, grid_h / height))
    for r, (label, imgs) in enumerate(rows):
        y = r * (cell_h + gap)  # the row's top, in inches from the grid's top
        ax.annotate(label, (0, y + cell_h / 2), xytext=(-4, 0), textcoords="offset points", ha="right",
                    va="center", fontsize=9)
        texts = cell_titles[r] if cell_titles else col_titles if r == 0 and col_titles else []
        for c in range(len(imgs)):
            x = c * (cell_w + COL_GAP)
            ax.imshow(image_for_display(imgs[c]), cmap="gray" if imgs.shape[1] == 1 else None, vmin=0, vmax=1,
                      extent=(x, x + cell_w, y + cell_h, y))
            ax.add_patch(Rectangle((x, y), cell_w, cell_h, fill=False, linewidth=0.8, clip_on=False))
        for c, text in enumerate(texts[:n]):
            ax.annotate(text, (c * (cell_w + COL_GAP) + cell_w / 2, y), xytext=(0, 6), textcoords="offset points",
                        ha="center", va="bottom", fontsize=7)
    ax.set(xlim=(0, grid_w), ylim=(grid_h, 0), aspect="auto")
    ax.set_axis_off()
    fig.suptitle(title, fontsize=11, y=1 - 0.08 / height, va="top")
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


def latent_manifold(images: torch.Tensor, xs: np.ndarray, ys: np.ndarray, z2: np.ndarray, labels: np.ndarray,
                    class_names: list, title: str):
    """Left: the decodings of a grid over the 2-d latent space (images (len(ys) * len(xs), C, H, W),
    row-major from the top row = largest latent 2), drawn at their latent coordinates. Right: the
    encoded test points z2 (n, 2) coloured by class, over the same extent (points beyond it on its edge)."""
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
    outside = scatter_within(right, z2, np.array(class_colors(len(class_names)))[labels],
                             ((extent[0], extent[1]), (extent[2], extent[3])))
    right.set_title(f"encoded test images ({len(z2)}), coloured by class"
                    f"{outside_note(outside, 'the decoded tiles')}", fontsize=10)
    right.grid(alpha=0.3)
    for ax in (left, right):
        ax.set_xlabel("latent 1")
        ax.set_ylabel("latent 2")
    right.tick_params(labelleft=True)
    class_legend(right, class_names, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
