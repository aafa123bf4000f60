"""Step 1's report, on rank 0 once every process has trained: each model scored on the test split
beside PCA at the same size (stored in its checkpoint), its animations and TensorBoard projector,
the training curves, training_summary.json and the result table."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from tqdm import tqdm

from latentlab import caveats, plots
from latentlab.analysis.inference import encode_images, model_mse, sample_test_items
from latentlab.analysis.scores import psnr
from latentlab.settings import Settings
from latentlab.store import files, replacing
from latentlab.train import animation, tensorboard_log
from model.autoencoder import describe, model_from_checkpoint


class Trained(NamedTuple):
    """What the training leaves for the report: per latent size, the final checkpoint and its hooks."""
    plan: replacing.TrainingPlan
    data: object  # latentlab.data.datasets' loaded dataset
    baseline: dict
    device: torch.device
    models: dict  # latent size -> (checkpoint dict, hooks)


def report(settings: Settings, t: Trained, quiet: bool) -> dict:
    """Rank 0, after the training: each model scored on the test split beside PCA, its animations and
    projector, the training curves, training_summary.json and the result table (--quiet too)."""
    out, data = t.plan.folder, t.data
    histories, rows = {}, {}
    for k, (ckpt, hooks) in t.models.items():
        histories[f"{k}-d"] = {**ckpt["history"], "best_epoch": ckpt["best_epoch"]}
        rows[k] = summarise(ckpt, data, t.device, t.baseline, files.checkpoint_path(out, k))
        what = describe(settings.model, k, data.name, umap_weight=ckpt["config"]["umap_weight"],
                        bottleneck=ckpt["config"]["bottleneck"])
        if settings.snapshot_every and ckpt.get("record") is not None:
            animation.write_animations(ckpt["record"], out, k, what, data.class_names, settings.num_epochs)
        for board in (h for h in hooks if isinstance(h, tensorboard_log.EpochLog)):
            log_to_projector(board.writer, ckpt, data, settings, t.device, quiet)
            board.writer.close()
    title = f"{settings.model} autoencoder on {data.name}: training curves"
    files.save_figure(plots.training_curves(histories, title), out / "training_curves.png")
    files.save_json({"run": t.plan.run, "dataset": data.name, "model": settings.model, "models": rows,
                     "caveats": model_caveats(rows)}, out / "training_summary.json")
    print_summary(rows, t.plan.out)
    return rows


def log_to_projector(board, ckpt: dict, data, settings: Settings, device, quiet: bool) -> None:
    """The run's settings and test metrics as hparams, and the selected model's latents of a seeded
    sample of test images (as encode_latent_space.py draws it by default) in the projector."""
    hparams = {**ckpt["train"], "model": settings.model, "latent_size": ckpt["config"]["latent_size"],
               "dataset": data.name, "noise_std": settings.noise_std, "beta": settings.beta,
               "umap_weight": ckpt["config"]["umap_weight"]}
    metrics = {k: ckpt["test_metrics"][k] for k in ("test_mse", "test_psnr", "val_mse", "mse_vs_pca")}
    tensorboard_log.log_hparams(board, hparams, metrics)
    indices, _ = sample_test_items(len(data.test_x), tensorboard_log.PROJECTOR_SAMPLES, settings.seed)
    z = encode_images(model_from_checkpoint(ckpt, device), data.test_x[indices], device)
    note = tensorboard_log.log_embedding(board, z, data.test_y[indices], indices, data.class_names,
                                         data.test_x[indices], "test latents", len(ckpt["history"]["epoch"]))
    if note and not quiet:
        tqdm.write(note)


def summarise(ckpt: dict, data, device, baseline: dict, path: Path) -> dict:
    """Score the selected (best-validation) weights on the test split; store the scores in the checkpoint."""
    model = model_from_checkpoint(ckpt, device)
    k = ckpt["config"]["latent_size"]
    test_mse = model_mse(model, data.test_x, device)
    best = ckpt["history"]["epoch"].index(ckpt["best_epoch"])
    pca = baseline["scores"][str(k)]
    row = {"best_epoch": ckpt["best_epoch"] + 1, "epochs_run": len(ckpt["history"]["epoch"]),
           "val_mse": ckpt["history"]["val_mse"][best], "test_mse": test_mse, "test_psnr": psnr(test_mse),
           "pca_test_mse": pca["test_mse"], "pca_test_psnr": pca["test_psnr"],
           "mse_vs_pca": test_mse / pca["test_mse"] if pca["test_mse"] > 0 else float("nan"),
           "train_seconds": sum(ckpt["history"]["seconds"]),
           "optimiser_steps": caveats.optimiser_steps(len(ckpt["history"]["epoch"]), ckpt["dataset"]["num_train"],
                                                      ckpt["train"]["batch_size"])}
    row["caveats"] = caveats.training_caveats(row["optimiser_steps"], row["mse_vs_pca"])  # the later steps repeat them
    ckpt["test_metrics"] = row
    files.save_torch(ckpt, path)
    return row


def model_caveats(rows: dict) -> list[str]:
    """Each model's caveats, named by its latent size."""
    return caveats.of_models({k: r.get("caveats", []) for k, r in rows.items()})


def print_summary(rows: dict, out: Path) -> None:
    head = f"{'latent':>6} {'best ep':>7} {'val MSE':>9} {'test MSE':>9} {'PSNR dB':>8} {'PCA MSE':>9} {'PCA dB':>7} {'AE/PCA':>7} {'time s':>7}"
    lines = [head, "-" * len(head)]
    for k, r in rows.items():
        lines.append(f"{k:>6} {r['best_epoch']:>7} {r['val_mse']:>9.5f} {r['test_mse']:>9.5f} {r['test_psnr']:>8.2f} "
                     f"{r['pca_test_mse']:>9.5f} {r['pca_test_psnr']:>7.2f} {r['mse_vs_pca']:>7.2f} {r['train_seconds']:>7.0f}")
    tqdm.write("\n".join(lines))
    caveats.print_caveats(model_caveats(rows), tqdm.write)
    tqdm.write(f"artifacts in {out}/: {', '.join(files.checkpoint_path(out, k).name for k in rows)}, "
               f"test_data.pth, pca_baseline.pth, training_curves.png, training_summary.json")
