"""Quality against training time: each checkpoint's validation MSE after every epoch, against the
training minutes so far, one panel per latent size, with PCA's test MSE at that size, half of it,
and the conv AE of Sainburg et al. 2021 (Parametric UMAP, Fashion-MNIST) where it has a figure.

    python train.py --latent_size 64 --dataset fashion-mnist --data_dir /usr/share/datasets/fashion-mnist
    python benchmarks/training_budget.py output/model_latent_size_*.pth --figure docs/fm_training_budget.png

Prints, for each checkpoint, its network, epochs, training minutes, test MSE against PCA's, and
the minutes until its validation MSE first reached the paper's test MSE (time-to-quality).
"""
from __future__ import annotations

import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from latentlab.cli import Parser, UserError, run  # noqa: E402
from model.autoencoder import FAMILIES  # noqa: E402
from model.parts import conv_stages  # noqa: E402
from quality import PAPER  # noqa: E402

PAPER_MSE = {k: v for (metric, k), v in PAPER.items() if metric == "test_mse"}


def parse_args(argv=None):
    p = Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", help="model_latent_size_N.pth files (any runs, any sizes)")
    p.add_argument("--figure", default=None, help="write the figure here (PNG); none: only the table")
    return p.parse_args(argv)


def network(config: dict, train: dict) -> str:
    extras = (", on a sphere" if config["bottleneck"] == "sphere" else "") + (
        f", UMAP loss {config['umap_weight']:g}" if config["umap_weight"] else "")
    if "hidden" in FAMILIES[config["family"]].flags:
        return f"mlp {' '.join(map(str, config['hidden'])) or 'linear'}{extras}, {train['num_epochs']} epochs"
    used = config["channels"][:max(1, conv_stages(*config["image_shape"][1:], len(config["channels"])))]
    dense = config["dense"]
    return (f"{config['family']} {' '.join(map(str, used))}"
            f"{', dense ' + ' '.join(map(str, dense)) if dense else ''}{extras}, {train['num_epochs']} epochs")


def curve(ckpt: dict) -> dict:
    """The run's minutes after each epoch, its validation MSE, and its summary row."""
    h, k = ckpt["history"], ckpt["config"]["latent_size"]
    minutes = [s / 60 for s in itertools.accumulate(h["seconds"])]
    paper = PAPER_MSE.get(k)
    hit = next((i for i, v in enumerate(h["val_mse"]) if paper is not None and v <= paper), None)
    m = ckpt.get("test_metrics") or {}
    return {"latent_size": k, "network": network(ckpt["config"], ckpt["train"]), "minutes": minutes,
            "val_mse": list(h["val_mse"]), "test_mse": m.get("test_mse"), "pca_test_mse": m.get("pca_test_mse"),
            "to_paper_min": None if hit is None else minutes[hit]}


def figure(curves: list[dict]):
    import matplotlib.pyplot as plt
    from latentlab.plots import class_colors
    sizes = sorted({c["latent_size"] for c in curves})
    cols = min(3, len(sizes))
    rows = -(-len(sizes) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4.2 * rows), squeeze=False)
    for ax in axes.flat[len(sizes):]:
        ax.set_visible(False)
    networks = sorted({c["network"] for c in curves})
    colour = dict(zip(networks, class_colors(len(networks))))
    for ax, k in zip(axes.flat, sizes):
        pca = None
        for c in (c for c in curves if c["latent_size"] == k):
            ax.plot(c["minutes"], c["val_mse"], marker=".", color=colour[c["network"]], label=c["network"])
            pca = c["pca_test_mse"] or pca
        if pca:
            ax.axhline(pca, color="0.3", ls="--", lw=1, label=f"PCA ({pca:.4f})")
            ax.axhline(pca / 2, color="0.3", ls=":", lw=1, label=f"half of PCA ({pca / 2:.4f})")
        if k in PAPER_MSE:
            ax.axhline(PAPER_MSE[k], color="black", ls="-.", lw=1, label=f"Sainburg et al. 2021 conv AE ({PAPER_MSE[k]})")
        ax.set_yscale("log")
        ax.set_xlabel("training minutes (2-core CPU)")
        ax.set_ylabel("validation MSE")
        ax.set_title(f"latent size {k}")
        ax.legend(fontsize=7)
    fig.suptitle("Fashion-MNIST: validation MSE against training time, by network and budget")
    fig.tight_layout()
    return fig


def main(args) -> list[dict]:
    from latentlab.store import checkpoints, files
    curves = []
    for path in args.checkpoints:
        if not Path(path).is_file():
            raise UserError(f"{path} does not exist; give the model_latent_size_N.pth files train.py wrote")
        ckpt = checkpoints.load_checkpoint(path)
        if not ckpt.get("history", {}).get("seconds"):
            raise UserError(f"{path} holds no per-epoch history; give a checkpoint train.py wrote")
        curves.append(curve(ckpt))
    w = max(len(c["network"]) for c in curves)
    print(f"{'latent':>6}  {'network':<{w}} {'minutes':>7} {'test MSE':>9} {'x PCA':>6}  to the paper's MSE")
    for c in sorted(curves, key=lambda c: (c["latent_size"], c["minutes"][-1])):
        ratio = f"{c['test_mse'] / c['pca_test_mse']:.3f}" if c["test_mse"] and c["pca_test_mse"] else ""
        test = f"{c['test_mse']:.5f}" if c["test_mse"] else ""
        reach = ("" if c["latent_size"] not in PAPER_MSE else "never" if c["to_paper_min"] is None
                 else f"{c['to_paper_min']:.1f} min")
        print(f"{c['latent_size']:>6}  {c['network']:<{w}} {c['minutes'][-1]:>7.1f} {test:>9} {ratio:>6}  {reach}")
    if args.figure:
        files.save_figure(figure(curves), args.figure)
        print(f"figure: {args.figure}")
    return curves


if __name__ == "__main__":
    run(main, parse_args())
