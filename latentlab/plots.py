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
