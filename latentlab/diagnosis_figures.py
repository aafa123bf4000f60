"""The figures of the diagnosis step (diagnose_latent_space.py): units in use, label efficiency,
robustness to noise, the worst reconstructions and the probe's most confident errors. One colour per space in all three: each model keeps its colour, PCA of its
size the same colour dashed, the pixels black."""
from __future__ import annotations

import numpy as np

from latentlab import plots

plt = plots.plt
PIXELS = "raw pixels"


def space_styles(models: list) -> dict:
    """{space: line style}: models [(model label, its PCA's label)], model i in colour Ci, its PCA in
    Ci dashed; PIXELS black, dotted."""
    styles = {PIXELS: {"color": "black", "linestyle": ":", "marker": "^"}}
    for i, (model, pca) in enumerate(models):
        styles[model] = {"color": f"C{i}", "linestyle": "-", "marker": "o"}
        styles[pca] = {"color": f"C{i}", "linestyle": "--", "marker": "s"}
    return styles


def units_figure(units: dict, threshold: float, title: str):
    """units {model label: units_in_use's dict}: each model's per-unit variance, sorted, on a log
    axis with the active threshold; beside it, for the VAEs, the KL per unit (nats)."""
    with_kl = {k: u for k, u in units.items() if "kl_nats" in u}
    fig, axes = plt.subplots(1, 1 + bool(with_kl), figsize=(6 + 5 * bool(with_kl), 4.2), squeeze=False)
    ax = axes[0, 0]
    for i, (label, u) in enumerate(units.items()):
        v = np.sort(u["variance"])[::-1]
        ax.plot(np.arange(1, len(v) + 1), np.maximum(v, 1e-12), "o-", ms=3, color=f"C{i}",
                label=f"{label}: {u['active_units']} of {u['units']} active")
    ax.axhline(threshold, color="grey", linestyle="--", label=f"active: variance > {threshold:g} (Burda et al. 2016)")
    ax.set(xlabel="unit, by variance (largest first)", ylabel="variance over the test images", yscale="log",
           title="variance of each unit's code")
    ax.legend(fontsize=8)
    if with_kl:
        ax = axes[0, 1]
        for i, (label, u) in enumerate(units.items()):
            if "kl_nats" in u:
                kl = np.sort(u["kl_nats"])[::-1]
                ax.plot(np.arange(1, len(kl) + 1), np.maximum(kl, 1e-6), "o-", ms=3, color=f"C{i}",
                        label=f"{label}: {u['collapsed_units']} collapsed, {u['kl_total_nats']:.1f} nats in all")
        ax.set(xlabel="unit, by KL (largest first)", ylabel="KL to the prior (nats), mean over the images",
               yscale="log", title="KL per unit (VAE)")
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def efficiency_figure(curves: dict, all_at: float, styles: dict, probe_names: dict, title: str):
    """curves {space: {probe: {n or "all": {"mean", "sd"}}}}: one panel per probe, accuracy against
    labels per class (log axis), "all" at all_at per class, an error bar of one sd over the draws;
    probe_names {probe: how a title names it}."""
    probes = list(next(iter(curves.values())))
    fig, axes = plt.subplots(1, len(probes), figsize=(5.5 * len(probes), 4.2), squeeze=False, sharey=True)
    for ax, probe in zip(axes[0], probes):
        for space, by_probe in curves.items():
            points = by_probe[probe]
            xs = [all_at if n == "all" else float(n) for n in points]
            ax.errorbar(xs, [p["mean"] for p in points.values()], yerr=[p["sd"] for p in points.values()],
                        capsize=3, ms=4, label=space, **styles[space])
        ax.set(xscale="log", xlabel=f"labelled images per class (rightmost: all, {all_at:.0f})",
               title=f"{probe_names[probe]}: test accuracy", ylabel="accuracy (mean ± sd over the draws)")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def robustness_figure(results: dict, levels, styles: dict, knn_key: str, title: str):
    """results {space: {"mse": [...], knn_key: [...]}} against the noise levels: MSE against the
    clean image, and the k-NN accuracy of the noisy codes."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for space, r in results.items():
        style = styles[space]
        axes[0].plot(levels, r["mse"], label=space, **style)
        axes[1].plot(levels, r[knn_key], label=space, **style)
    axes[0].set(xlabel="std of the Gaussian noise on the input (pixels in [0, 1])",
                ylabel="MSE against the clean image", yscale="log", title="reconstruction of noisy images")
    axes[1].set(xlabel="std of the Gaussian noise on the input (pixels in [0, 1])",
                ylabel="accuracy", title=f"{knn_key.split('_')[0][3:]}-NN of the noisy codes among the clean ones")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def worst_figure(cases: list, names: list, title: str):
    """cases [(row label, [(original, [reconstruction by each of names]), ...])]: per row, each case's
    original then its reconstructions, side by side (image tensors (C, H, W))."""
    import torch

    from latentlab.image_grids import image_rows
    rows = [(label, torch.stack([img for original, recs in row for img in (original, *recs)])) for label, row in cases]
    per_case = ["original", *names]
    width = max(len(row) for _, row in cases)
    return image_rows(rows, title, col_titles=per_case * width)


def errors_figure(rows: list, title: str):
    """rows [(row label, images (n, C, H, W) in [0, 1], a caption over each image)]."""
    from latentlab.image_grids import image_rows
    return image_rows([(label, imgs) for label, imgs, _ in rows], title,
                      cell_titles=[captions for *_, captions in rows])


def cka_figure(matrix, labels: list, title: str):
    """A heat map of linear CKA between every two codes (k, k) in [0, 1], each cell annotated; the
    title ends with the closest pair of different codes."""
    import numpy as np
    fig, ax = plt.subplots(figsize=(2.5 + 0.55 * len(labels), 1.5 + 0.5 * len(labels)))
    im = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.6 else "black")
    ax.set(xlabel="code (family, latent size)", ylabel="code (family, latent size)")
    fig.colorbar(im, ax=ax, label="linear CKA")
    off = np.where(np.eye(len(labels), dtype=bool), -np.inf, matrix)
    i, j = np.unravel_index(np.argmax(off), off.shape)
    fig.suptitle(f"{title}\nclosest: {labels[i]} and {labels[j]} ({matrix[i, j]:.2f})", fontsize=9)
    fig.tight_layout()
    return fig
