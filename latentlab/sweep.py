"""The latent-size sweep (sweep_latent_size.py): one training per (family, latent size) pair, each
in its own folder, scored on the test split as the analysis steps score it, beside PCA at the same
size; a table (CSV, Markdown) and a figure of every metric against the latent size.

What each metric uses (the autoencoders and the PCA were fit on the training split only):
  test MSE, PSNR, SSIM    every test image, as viz_reconstruction.py
  linear probe, k-NN      the encoded test images (--num_samples: a seeded sample, as
                          encode_latent_space.py), stratified k-fold cross-validation, as
                          classify_latent_space.py: each image is predicted by a probe fit on the other folds
  k-means NMI             k-means with one cluster per class on the same encoded images, in the
                          latent space, as viz_kmeans_latent_space.py
PCA at size N: the components of pca_baseline.pth that the training of that size wrote.

A pair is finished when its metrics.json exists (written last, atomically); it holds the flags that
made its numbers, and a later sweep with other values for them is refused rather than mixed in.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from latentlab import files
from latentlab.cli import UserError
from latentlab.inputs import find_models, find_pca_baseline, find_test_data
from latentlab.inference import encode_images, reconstruct_batches, sample_test_items
from latentlab.pca import pca_encode, pca_reconstruct_batches
from latentlab.probes import KNN_K, probe_scores
from latentlab.scores import kmeans_nmi, reconstruction_scores
from latentlab.settings import RESULT_SETTINGS, recorded_value
from model.autoencoder import describe, model_from_checkpoint

# metric -> (what it is, for table headers and panel titles; does higher mean better)
METRICS = {"test_mse": ("test MSE", False), "test_psnr": ("test PSNR (dB)", True), "test_ssim": ("test SSIM", True),
           "linear_probe": ("linear-probe accuracy", True), "knn": (f"{KNN_K}-NN accuracy", True),
           "kmeans_nmi": ("k-means NMI", True)}
# the flags that make a pair's numbers what they are; a finished pair is reused only when they agree
SETTINGS = (*RESULT_SETTINGS, "num_samples", "folds")
PCA = "pca"
KIND = "sweep_metrics"
TABLE_COLUMNS = ("family", "latent_size", *METRICS, "epochs_run", "train_seconds")


def family_name(family: str) -> str:
    return "PCA" if family == PCA else describe(family)


def run_dir(output_dir, family: str, latent_size: int) -> Path:
    return Path(output_dir) / f"{family}_latent_size_{latent_size}"


def metrics_path(folder) -> Path:
    return Path(folder) / "metrics.json"


def settings_of(args) -> dict:
    return {k: getattr(args, k) for k in SETTINGS}


def load_finished(folder, settings: dict) -> dict | None:
    """The metrics of a finished pair, or None when it is not finished. Refused (one line) when it
    was swept with other settings or is malformed."""
    path = metrics_path(folder)
    if not path.exists():
        return None
    redo = f"delete {folder} to redo this pair"
    m = files.load_json(path, KIND, redo)
    if not isinstance(m.get("settings"), dict) or not isinstance(m.get("metrics"), dict) or not all(
            isinstance(m["metrics"].get(k), (int, float)) for k in METRICS):
        raise UserError(f"{path} is malformed: it lacks its settings or metrics; {redo}")
    for k, v in settings.items():
        was = recorded_value(m["settings"], k)
        if was != v:
            raise UserError(f"{path} was swept with --{k} {was}, not {v}; use the same flags, "
                            f"another --output_dir, or {redo}")
    return m


# ---------------------------------------------------------------- scoring one pair
def score(batches, features: np.ndarray, labels: np.ndarray, num_classes: int, folds: int, seed: int) -> dict:
    """batches: (originals, reconstructions) of every test image; features: the encoded sample, labels its classes."""
    rec = reconstruction_scores(batches)
    probes = probe_scores(features, labels, ("linear", "knn"), folds, seed)
    return {"test_mse": rec["mse"], "test_psnr": rec["psnr"], "test_ssim": rec["ssim"],
            "linear_probe": probes["linear"]["accuracy"], "knn": probes["knn"]["accuracy"],
            "kmeans_nmi": kmeans_nmi(features, labels, min(num_classes, len(features)), seed=seed)}


def evaluate_model(folder, settings: dict, device) -> dict:
    """Score the model that run_training left in folder; returns the record metrics.json holds."""
    data, _, models = find_models(None, None, folder, quiet=True)
    m = models[-1]
    model = model_from_checkpoint(m.ckpt, device)
    images, labels = data["images"], data["labels"]
    idx, selection = sample_test_items(len(images), settings["num_samples"], settings["seed"])
    z = encode_images(model, images[idx], device)
    if not np.isfinite(z).all():
        raise UserError(f"{m.path} gives non-finite latents; the model diverged: lower --lr, or delete {folder} and retrain")
    metrics = score(reconstruct_batches(model, images, device), z, labels[idx].numpy(), len(data["class_names"]),
                    settings["folds"], settings["seed"])
    trained = m.ckpt["test_metrics"]
    return record(m.family, m.latent_size, data, settings, metrics, selection, model=m.label,
                  epochs_run=trained["epochs_run"], best_epoch=trained["best_epoch"],
                  train_seconds=trained["train_seconds"])


def evaluate_pca(trained_folder, latent_size: int, settings: dict) -> dict:
    """Score PCA with latent_size components, from the baseline a training of that size wrote."""
    data, data_path = find_test_data(None, trained_folder)
    pca = find_pca_baseline(None, data, data_path, [latent_size])
    mean, comps = pca["mean"], pca["components"]
    k = min(latent_size, comps.shape[0])  # no more components than pixel values
    images, labels = data["images"], data["labels"]
    idx, selection = sample_test_items(len(images), settings["num_samples"], settings["seed"])
    metrics = score(pca_reconstruct_batches(images, mean, comps, k), pca_encode(images[idx], mean, comps, k).numpy(),
                    labels[idx].numpy(), len(data["class_names"]), settings["folds"], settings["seed"])
    return record(PCA, latent_size, data, settings, metrics, selection, model=f"PCA, {k} components",
                  components=k, pca_baseline=str(files.pca_path(trained_folder)), fit_on=pca.get("fit_on"))


def record(family, latent_size, data, settings, metrics, selection, **extra) -> dict:
    return {"kind": KIND, "format_version": files.FORMAT_VERSION, "family": family, "latent_size": latent_size,
            "dataset": data["dataset"], "settings": settings, "metrics": metrics, "test_images": len(data["images"]),
            "encoded": selection, **extra}


# ---------------------------------------------------------------- the table and the figure
def table_rows(records: list[dict]) -> list[dict]:
    return [{"family": r["family"], "latent_size": r["latent_size"], **r["metrics"],
             "epochs_run": r.get("epochs_run"), "train_seconds": r.get("train_seconds")} for r in records]


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, TABLE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: "" if r[k] is None else r[k] for k in TABLE_COLUMNS} for r in rows])
    return buf.getvalue()


def to_markdown(rows: list[dict]) -> str:
    head = ["model", "latent size", *(name for name, _ in METRICS.values()), "epochs", "training s"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [family_name(r["family"]), str(r["latent_size"]), f"{r['test_mse']:.4f}", f"{r['test_psnr']:.2f}",
                 f"{r['test_ssim']:.3f}", f"{r['linear_probe']:.3f}", f"{r['knn']:.3f}", f"{r['kmeans_nmi']:.3f}",
                 "" if r["epochs_run"] is None else str(r["epochs_run"]),
                 "" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(records: list[dict], output_dir, title: str) -> dict:
    """sweep_results.csv, sweep_results.md and sweep_metrics.png in output_dir, from the finished pairs."""
    from latentlab import plots
    out = Path(output_dir)
    rows = table_rows(records)
    paths = {"csv": files.save_text(to_csv(rows), out / "sweep_results.csv"),
             "markdown": files.save_text(to_markdown(rows), out / "sweep_results.md")}
    lines = {}
    for r in rows:
        lines.setdefault(family_name(r["family"]), []).append((r["latent_size"], {k: r[k] for k in METRICS}))
    fig = plots.sweep_figure(lines, METRICS, dashed={family_name(PCA)}, title=title)
    paths["figure"] = files.save_figure(fig, out / "sweep_metrics.png", dpi=100)
    return paths
