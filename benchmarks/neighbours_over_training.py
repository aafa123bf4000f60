"""Held-out neighbourhoods against training time: the k-NN accuracy of each epoch's codes.

    python benchmarks/neighbours_over_training.py --output_dir output/curve_plain --train_args --latent_size 2 --seed 2 --dataset fashion-mnist --data_dir /usr/share/datasets/fashion-mnist
    python benchmarks/neighbours_over_training.py --output_dir output/curve_umap --train_args --latent_size 2 --seed 2 --umap_weight 0.1 --dataset fashion-mnist --data_dir /usr/share/datasets/fashion-mnist
    python benchmarks/neighbours_over_training.py --plot output/curve_*/neighbours_over_training.json --figure docs/fm_neighbours_over_training.png

Trains the model of train.py's --latent_size alone (as the sweep trains it; --train_args are
train.py's flags) in --output_dir. After each epoch it encodes the whole training split and the
test split with that epoch's model and scores step 6's held-out protocol: scikit-learn's
KNeighborsClassifier (k = 5, the paper's, and 10) fit on the training codes and scored on the test
codes. It prints and writes (neighbours_over_training.json in --output_dir) each epoch's training
minutes so far (the scoring is not counted), validation MSE and accuracies. --plot draws such
files: accuracy and validation MSE against minutes, with the figures of Sainburg et al. 2021's conv
AE on Fashion-MNIST.
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from latentlab.cli import Parser, UserError, run  # noqa: E402

KIND = "neighbours_over_training"


def parse_args(argv=None):
    p = Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output_dir", default=None, help="train here, and write the epochs' scores here")
    p.add_argument("--plot", nargs="+", default=None, metavar="JSON",
                   help="draw these runs' neighbours_over_training.json instead of training")
    p.add_argument("--figure", default=None, help="with --plot: write the figure here (PNG)")
    p.add_argument("--train_args", nargs=argparse.REMAINDER, default=[],
                   help="train.py's flags, after everything else (--latent_size among them)")
    args = p.parse_args(argv)
    if (args.plot is None) == (args.output_dir is None):
        p.error("give --output_dir with --train_args to train and score, or --plot with files to draw")
    if args.plot is not None and args.figure is None:
        p.error("--plot needs --figure, the PNG to write")
    return args


def score_every_epoch(args) -> dict:
    import time

    import train
    from sklearn.neighbors import KNeighborsClassifier

    from latentlab.store import files
    from latentlab.data.datasets import load_dataset
    from latentlab.settings import Settings
    from latentlab.train.run import run_training
    from latentlab.analysis.inference import encode_images
    from latentlab.analysis.probes import HELDOUT_KNN_KS
    from model.autoencoder import describe
    targs = train.parse_args([*args.train_args, "--output_dir", args.output_dir, "--quiet"])
    data = load_dataset(targs.dataset, data_dir=targs.data_dir, image_size=targs.image_size)
    y_train, y_test = data.train_y.numpy(), data.test_y.numpy()
    rows = []

    def on_epoch(k, epoch, model, ckpt):
        t = time.perf_counter()
        device = next(model.parameters()).device
        z_train, z_test = encode_images(model, data.train_x, device), encode_images(model, data.test_x, device)
        row = {"epoch": epoch + 1, "minutes": sum(ckpt["history"]["seconds"]) / 60,
               "val_mse": ckpt["history"]["val_mse"][-1],
               **{f"knn{n}": KNeighborsClassifier(n).fit(z_train, y_train).score(z_test, y_test)
                  for n in HELDOUT_KNN_KS},
               "scoring_seconds": time.perf_counter() - t}
        rows.append(row)
        print(f"epoch {row['epoch']:>3} | {row['minutes']:6.1f} min | val MSE {row['val_mse']:.5f} | "
              + " | ".join(f"{n}-NN {row[f'knn{n}']:.4f}" for n in HELDOUT_KNN_KS), flush=True)

    summary = run_training(Settings.from_args(targs), targs.output_dir, targs.device, quiet=True, companion=False,
                           on_epoch=on_epoch)[targs.latent_size]
    ckpt = files.checkpoint_path(Path(args.output_dir), targs.latent_size)
    import torch
    config = torch.load(ckpt, weights_only=True)["config"]
    result = {"kind": KIND, "format_version": files.FORMAT_VERSION, "train_args": args.train_args,
              "model": describe(config["family"], config["latent_size"], data.name, umap_weight=config["umap_weight"],
                                bottleneck=config["bottleneck"]),
              "seed": targs.seed, "latent_size": targs.latent_size, "dataset": data.name,
              "test_mse": summary["test_mse"], "epochs": rows}
    files.save_json(result, Path(args.output_dir) / f"{KIND}.json")
    return result


def figure(runs: list[dict]):
    import matplotlib.pyplot as plt

    from latentlab.plots import class_colors
    from quality import PAPER
    fig, (acc, mse) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run_, colour in zip(runs, class_colors(len(runs))):
        minutes = [r["minutes"] for r in run_["epochs"]]
        label = f"{run_['model']}, seed {run_['seed']}"
        acc.plot(minutes, [r["knn5"] for r in run_["epochs"]], marker=".", color=colour, label=label)
        mse.plot(minutes, [r["val_mse"] for r in run_["epochs"]], marker=".", color=colour, label=label)
    sizes = {r["latent_size"] for r in runs}
    k = sizes.pop() if len(sizes) == 1 else None
    if ("knn5", k) in PAPER:
        acc.axhline(PAPER["knn5", k], color="black", ls="-.", lw=1,
                    label=f"Sainburg et al. 2021 conv AE, 5-NN {PAPER['knn5', k]}")
    if ("test_mse", k) in PAPER:
        mse.axhline(PAPER["test_mse", k], color="black", ls="-.", lw=1,
                    label=f"Sainburg et al. 2021 conv AE, test MSE {PAPER['test_mse', k]}")
    acc.set(xlabel="training minutes", ylabel="held-out 5-NN accuracy (test split)",
            title="5-NN on the codes: fit on the training split, scored on the test split")
    mse.set(xlabel="training minutes", ylabel="validation MSE", title="reconstruction error")
    for ax in (acc, mse):
        ax.grid(alpha=0.3)
    handles = {}  # one legend under both panels: the runs are the same lines in each
    for ax in (acc, mse):
        handles.update(zip(*reversed(ax.get_legend_handles_labels())))
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=2, fontsize=8, frameon=False)
    names = sorted({r["dataset"] for r in runs})
    fig.suptitle(f"{', '.join(names)}: held-out neighbourhoods and error after each epoch"
                 f"{f', latent size {k}' if k is not None else ''}")
    fig.tight_layout(rect=(0, 0.02 + 0.035 * ((len(handles) + 1) // 2), 1, 1))
    return fig


def main(args) -> dict:
    from latentlab.store import files
    if args.plot is None:
        return score_every_epoch(args)
    runs = [files.load_json(p, KIND, "give files this benchmark wrote") for p in args.plot]
    if any(not r["epochs"] for r in runs):
        raise UserError("a run in --plot has no scored epochs; train it again with --output_dir")
    files.save_figure(figure(runs), args.figure)
    print(f"wrote {args.figure}")
    return {"runs": len(runs)}


if __name__ == "__main__":
    run(main, parse_args())
