"""Every figure: labelled axes, titles that say what and which model, PNG via save_figure."""
from __future__ import annotations

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


# ---------------------------------------------------------------- generation (viz_generation.py)
def tile_images(images: torch.Tensor, ncols: int, pad: int = 1, pad_value: float = 1.0) -> np.ndarray:
    """images (n, C, H, W) in [0, 1] -> one mosaic array imshow draws, ncols images per row, row by
    row, with pad pixels of pad_value between them (0: a seamless mosaic)."""
    n, c, h, w = images.shape
    rows = -(-n // ncols)
    canvas = torch.full((c, rows * (h + pad) - pad, ncols * (w + pad) - pad), pad_value)
    for i, img in enumerate(images.detach().float().clamp(0, 1).cpu()):
        r, col = divmod(i, ncols)
        canvas[:, r * (h + pad):r * (h + pad) + h, col * (w + pad):col * (w + pad) + w] = img
    return image_for_display(canvas)


def image_grid(images: torch.Tensor, title: str, ncols: int):
    """A grid of images (n, C, H, W) in [0, 1], drawn as one mosaic (fast for hundreds of images)."""
    mosaic = tile_images(images, ncols)
    rows = -(-len(images) // ncols)
    side = min(0.9, 9.0 / max(ncols, rows))  # inches per image: the figure stays under ~9 inches
    fig, ax = plt.subplots(figsize=(max(ncols * side, 5.0), rows * side + 0.8))
    ax.imshow(mosaic, cmap="gray" if images.shape[1] == 1 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=10, wrap=True)
    fig.tight_layout()
    return fig


def class_colors(n: int) -> list:
    """n distinguishable colours: tab10 up to 10 classes, tab20 up to 20, then a spread of hues."""
    if n <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(n)]
    if n <= 20:
        return [plt.get_cmap("tab20")(i) for i in range(n)]
    return [plt.get_cmap("gist_rainbow")(i / max(n - 1, 1)) for i in range(n)]


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
    left.imshow(tile_images(images, nx, pad=1), cmap="gray" if images.shape[1] == 1 else None,
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
