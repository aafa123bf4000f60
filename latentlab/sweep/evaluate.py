"""How a sweep job scores its model (and PCA at the same size), as the analysis steps score them.

What each metric uses (the autoencoders and the PCA were fit on the training split only):
  test MSE, PSNR, SSIM    every test image, as viz_reconstruction.py
  linear probe, k-NN      the encoded test images (--num_samples: a seeded sample, as
                          encode_latent_space.py), stratified k-fold cross-validation, as
                          classify_latent_space.py: each image is predicted by a probe fit on the other folds
  k-means NMI             k-means with one cluster per class on the same encoded images, in the
                          latent space, as viz_kmeans_latent_space.py
  active units, intrinsic the same encoded images, as diagnose_latent_space.py (TwoNN on at most
  dimension               5,000 of them)
  FD, precision, recall   --num_scored samples of the best sampler (lowest FD of gaussian, gmm and, for a
                          VAE, its prior; fitted on the training latents) against every test image,
                          in the features of the dataset's classifier, as viz_generation.py scores them;
                          the classifier is trained once per dataset, in <output_dir>/<dataset>/
`score` is the one place that calls the probes, so the sweep follows step 6's protocol.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from latentlab.generate import feature_net, scores as gen_scores
from latentlab.store import files
from latentlab.cli import UserError
from latentlab.store.inputs import find_models, find_pca_baseline, find_test_data, load_training_split
from latentlab.analysis.inference import encode_images, reconstruct_batches, sample_test_items
from latentlab.analysis.diagnosis import intrinsic_dimension, sample_rows, units_in_use
from latentlab.analysis.pca import pca_encode, pca_reconstruct_batches
from latentlab.analysis.probes import probe_scores
from latentlab.analysis.scores import kmeans_nmi, reconstruction_scores
from latentlab.sweep.jobs import KIND, PCA
from model.autoencoder import FAMILIES, model_from_checkpoint


def score(batches, features: np.ndarray, labels: np.ndarray, num_classes: int, folds: int, seed: int) -> dict:
    """batches: (originals, reconstructions) of every test image; features: the encoded sample, labels its classes."""
    rec = reconstruction_scores(batches)
    probes = probe_scores(features, labels, ("linear", "knn"), folds, seed)
    return {"test_mse": rec["mse"], "test_psnr": rec["psnr"], "test_ssim": rec["ssim"],
            "linear_probe": probes["linear"]["accuracy"], "knn": probes["knn"]["accuracy"],
            "kmeans_nmi": kmeans_nmi(features, labels, min(num_classes, len(features)), seed=seed),
            "active_units": units_in_use(features)["active_units"],
            "intrinsic_dim": intrinsic_dimension(features[sample_rows(len(features), seed)])["twonn"]}


def evaluate_model(folder, settings: dict, device) -> dict:
    """Score the model that run_training left in folder; returns the record metrics.json holds."""
    data, _, models = find_models(None, None, folder, quiet=True)
    m = models[-1]
    model = model_from_checkpoint(m.ckpt, device)
    images, labels = data["images"], data["labels"]
    idx, selection = sample_test_items(len(images), settings["num_samples"], settings["seed"])
    z = encode_images(model, images[idx], device)
    if not np.isfinite(z).all():
        from latentlab.train.loop import divergence_fix
        raise UserError(f"{m.path} gives non-finite latents; the model diverged: lower "
                        f"{divergence_fix(settings['lr'], model.config)}, or delete {folder} and retrain")
    metrics = score(reconstruct_batches(model, images, device), z, labels[idx].numpy(), len(data["class_names"]),
                    settings["folds"], settings["seed"])
    samplers = ("gaussian", "gmm", *(("prior",) if FAMILIES[m.family].prior else ()))
    generation = generation_scores(folder, data, m, gen_scores.model_decoder(model, device),
                                   lambda x: torch.from_numpy(encode_images(model, x, device)), samplers, settings, device)
    metrics.update(generation.pop("metrics"))
    trained = m.ckpt["test_metrics"]
    return record(m.family, m.latent_size, data, settings, metrics, selection, model=m.label, generation=generation,
                  epochs_run=trained["epochs_run"], best_epoch=trained["best_epoch"],
                  train_seconds=trained["train_seconds"], code=z)


def evaluate_pca(trained_folder, latent_size: int, settings: dict, device="cpu") -> dict:
    """Score PCA with latent_size components, from the baseline a training of that size wrote."""
    data, data_path = find_test_data(None, trained_folder)
    pca = find_pca_baseline(None, data, data_path, [latent_size])
    mean, comps = pca["mean"], pca["components"]
    k = min(latent_size, comps.shape[0])  # no more components than pixel values
    images, labels = data["images"], data["labels"]
    idx, selection = sample_test_items(len(images), settings["num_samples"], settings["seed"])
    code = pca_encode(images[idx], mean, comps, k).numpy()
    metrics = score(pca_reconstruct_batches(images, mean, comps, k), code, labels[idx].numpy(), len(data["class_names"]),
                    settings["folds"], settings["seed"])
    _, _, models = find_models(None, None, trained_folder, quiet=True)
    coefs = lambda x: torch.cat([pca_encode(p, mean, comps, k) for p in x.split(8192)])
    generation = generation_scores(trained_folder, data, models[-1], gen_scores.pca_decoder(mean, comps[:k], images.shape[1:]),
                                   coefs, ("gaussian", "gmm"), settings, device)
    metrics.update(generation.pop("metrics"))
    return record(PCA, latent_size, data, settings, metrics, selection, model=f"PCA, {k} components", generation=generation,
                  components=k, pca_baseline=str(files.pca_path(trained_folder)), fit_on=pca.get("fit_on"), code=code)


def generation_scores(trained_folder, data: dict, m, decode, encode, samplers, settings: dict, device) -> dict:
    """The samplers of one latent space (encode: uint8 images -> latents), scored as viz_generation.py
    scores them; the best one's FD, precision and recall under "metrics"."""
    train_x, train_y = load_training_split(m)
    folder = Path(trained_folder)
    net, classifier = feature_net.obtain(folder.parent.parent, data["dataset"], train_x, train_y, data["images"],
                                         data["labels"], len(data["class_names"]), device)
    scorer = gen_scores.Scorer.of_test_images(net, data["images"], device, train_x)
    pairs = gen_scores.test_pairs(len(data["images"]), settings["seed"])
    scores = gen_scores.space_scores(decode, encode(train_x).numpy(), encode(data["images"]), samplers,
                                     settings["gmm_components"], settings["num_scored"], settings["seed"], scorer,
                                     folder / "cache", pairs, FAMILIES[m.family].prior)
    best = gen_scores.best_sampler(scores["samples"])
    b = scores["samples"][best]
    return {"metrics": {"gen_fd": b["fd"], "gen_precision": b["precision"], "gen_recall": b["recall"],
                        "gen_novelty": b.get("novelty")},
            "best_sampler": best, **scores, "num_scored": settings["num_scored"],
            "classifier_accuracy": classifier["test_accuracy"], "classifier": classifier["path"]}


CODE_SAMPLE = "code_sample.npy"  # a job's codes of the encoded test images, for the sweep's CKA matrix


def save_record(record: dict, folder) -> dict:
    """The record to write as metrics.json: its codes ("code", (samples, size)) saved beside it as
    CODE_SAMPLE, named in "code_sample"."""
    files.save_npy(np.asarray(record.pop("code"), dtype=np.float32), Path(folder) / CODE_SAMPLE)
    return {**record, "code_sample": CODE_SAMPLE}


def record(family, latent_size, data, settings, metrics, selection, **extra) -> dict:
    return {"kind": KIND, "format_version": files.FORMAT_VERSION, "family": family, "latent_size": latent_size,
            "dataset": data["dataset"], "seed": settings["seed"], "settings": settings, "metrics": metrics,
            "test_images": len(data["images"]), "encoded": selection, **extra}
