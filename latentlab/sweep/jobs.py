"""The latent-size sweep (sweep_latent_size.py): one job per (dataset, family, latent size, seed),
each the training of that model alone and its scoring on the test split, as the analysis steps
score it, in its own folder <output_dir>/<dataset>/seed_<s>/<family>_latent_size_<N>/. The job of
the first family also scores PCA at the same size, from the baseline its training wrote.

How a job scores its model: evaluate.py.

A job is done when its metrics.json exists (written last, atomically); it holds the flags that
made its numbers, and a later sweep with other values for them is refused rather than mixed in.
A job that fails writes error.json (its error in one line); the next sweep runs it again. While it
runs, a job holds its folder's writer lock (latentlab.store.locking), which is how a sweep sees it running.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import traceback
from dataclasses import dataclass
from pathlib import Path

from latentlab.store import files
from latentlab.cli import UserError
from latentlab.store.locking import FolderBusy, FolderLock
from latentlab.analysis.probes import KNN_K
from latentlab.data.sources import DATASETS
from latentlab.settings import RESULT_SETTINGS, Settings, applies, umap_weight_at
from model.autoencoder import FAMILIES, describe

# metric -> (what it is, for table headers and panel titles; does higher mean better)
METRICS = {"test_mse": ("test MSE", False), "test_psnr": ("test PSNR (dB)", True), "test_ssim": ("test SSIM", True),
           "linear_probe": ("linear-probe accuracy", True), "knn": (f"{KNN_K}-NN accuracy", True),
           "kmeans_nmi": ("k-means NMI", True), "gen_fd": ("FD of samples (best sampler)", False),
           "gen_precision": ("precision of samples", True), "gen_recall": ("recall of samples", True)}
# numbers with no better direction (None): what the code is (step 8's) and how new its samples are (step 7's
# novelty); jobs finished before they were added lack them, and stay finished
CODE_METRICS = {"active_units": ("active units", None), "intrinsic_dim": ("intrinsic dimension (TwoNN)", None),
                "gen_novelty": ("novelty of samples (1: as new as test images)", None)}
# the flags that make a job's numbers what they are (dataset and seed are in its folder's name);
# a finished job is reused only when they agree
SETTINGS = (*RESULT_SETTINGS, "num_samples", "folds", "num_scored", "gmm_components")
PCA = "pca"
KIND = "sweep_metrics"


def family_name(family: str) -> str:
    return "PCA" if family == PCA else describe(family)


def dataset_dir(output_dir, dataset: str) -> Path:
    return Path(output_dir) / re.sub(r"[^A-Za-z0-9._-]+", "_", dataset).strip("_")  # folder:PATH has slashes


def run_dir(output_dir, dataset: str, seed: int, family: str, latent_size: int) -> Path:
    return dataset_dir(output_dir, dataset) / f"seed_{seed}" / f"{family}_latent_size_{latent_size}"


def metrics_path(folder) -> Path:
    return Path(folder) / "metrics.json"


def error_path(folder) -> Path:
    return Path(folder) / "error.json"


@dataclass(frozen=True, eq=False)  # a job is itself: hashed by identity
class Job:
    """One (dataset, family, latent size, seed): its training's settings (train), the settings its
    numbers depend on, and the PCA folder it also scores (first family only). Pickled to the
    process or cluster node that runs it."""
    dataset: str
    family: str
    latent_size: int
    seed: int
    folder: str
    pca_folder: str | None
    train: Settings
    settings: dict
    device: str
    quiet: bool
    threads: int | None = None  # torch threads in the job's process (None: torch's default)

    def __post_init__(self):
        if isinstance(self.train, dict):  # read back from its job.json (launch.ChildProcess)
            object.__setattr__(self, "train", Settings.from_args(argparse.Namespace(**self.train)))

    @property
    def name(self) -> str:
        return f"{self.dataset}, {family_name(self.family)}, latent size {self.latent_size}, seed {self.seed}"

    def outputs(self) -> list[Path]:
        return [metrics_path(f) for f in (self.folder, self.pca_folder) if f is not None]


def check_jobs(args, datasets, families) -> None:
    """What every job would fail on that needs no data, refused before any folder is made: an
    unknown dataset, an image folder that does not exist, a width flag a family does not take."""
    for name in datasets:
        if name.lower().startswith("folder:"):
            if not Path(name.split(":", 1)[1]).is_dir():
                raise UserError(f"--datasets {name}: no such folder; give folder:PATH with one sub-folder per class")
        elif name.lower() not in DATASETS:
            raise UserError(f"--datasets: unknown dataset {name!r}; choose from: {', '.join(DATASETS)}")
    widths = {k: tuple(v) if isinstance(v, list) else v for k in ("channels", "dense", "hidden", "bottleneck")
              for v in [getattr(args, k)]}
    for family in families:
        Settings(latent_size=2, model=family, **widths).check_network_flags()


def make_jobs(args, datasets, seeds, families, sizes, quiet: bool) -> list[Job]:
    """The sweep's jobs, dataset by dataset, seed by seed, size by size."""
    jobs = []
    # --resume: an interrupted (or killed) training continues where it stopped
    base = Settings.from_args(args, latent_size=sizes[0], model=families[0], dataset=datasets[0], resume=True,
                              overwrite=False)
    for d in datasets:
        for s in seeds:
            settings = {"dataset": d, "seed": s, **{k: getattr(args, k) for k in SETTINGS}}
            for k in sizes:
                for f in families:
                    folder = run_dir(args.output_dir, d, s, f, k)
                    pca = run_dir(args.output_dir, d, s, PCA, k) if f == families[0] else None
                    train = dataclasses.replace(base, dataset=d, seed=s, latent_size=k, model=f)
                    jobs.append(Job(d, f, k, s, str(folder), pca and str(pca), train,
                                    resolved_network(settings, f, k, args.umap_max_size), args.device, quiet))
    return jobs


def load_finished(path: Path, settings: dict) -> dict | None:
    """The metrics at path, or None when the job has not written them. Refused (one line) when
    swept with other settings or malformed."""
    if not path.exists():
        return None
    redo = f"delete {path.parent} to redo it"
    m = files.load_json(path, KIND, redo)
    # a metric that is not a finite number (the PSNR of a perfect reconstruction) is null
    if not isinstance(m.get("settings"), dict) or not isinstance(m.get("metrics"), dict) or not all(
            k in m["metrics"] and isinstance(m["metrics"][k], (int, float, type(None))) for k in METRICS):
        raise UserError(f"{path} is malformed: it lacks its settings or metrics; {redo}")
    unrecorded = [f"--{k}" for k in settings if k not in m["settings"]]
    if unrecorded:
        raise UserError(f"{path} does not record {', '.join(unrecorded)}: an earlier version wrote it; {redo}")
    for k, v in settings.items():
        was = m["settings"][k]
        if was != v and applies(k, str(m["settings"]["dataset"])):
            raise UserError(f"{path} was swept with --{k} {was}, not {v}; use the same flags, "
                            f"another --output_dir, or {redo}")
    return m


def job_state(job: Job) -> tuple[str, str | None]:
    """("done" | "running" | "failed" | "left", the error of a failed job)."""
    if all(load_finished(p, job.settings) is not None for p in job.outputs()):
        return "done", None
    folder = Path(job.folder)
    if folder.exists():
        try:
            FolderLock(folder).acquire().release()
        except FolderBusy:
            return "running", None
    if error_path(folder).exists():
        try:
            return "failed", str(files.load_json(error_path(folder), "sweep_error", "")["error"])
        except (UserError, KeyError) as e:
            return "failed", f"its error record is unreadable: {e}"
    return "left", None


def record_error(job: Job, error: str, trace: str = "") -> None:
    files.save_json({"kind": "sweep_error", "format_version": files.FORMAT_VERSION, "job": job.name,
                         "error": error, "traceback": trace},
                        error_path(job.folder))


def run_job(job: Job) -> None:
    """Train and score one job in this process (the entry point of every launcher). Its folder's
    lock keeps a second launch of the same job out; a failure is recorded in error.json and raised."""
    import torch
    if job.threads:
        torch.set_num_threads(job.threads)
    with FolderLock(job.folder):
        error_path(job.folder).unlink(missing_ok=True)
        try:
            _train_and_score(job)
        except Exception as e:
            record_error(job, str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}", traceback.format_exc())
            raise


def _train_and_score(job: Job) -> None:
    from latentlab.cli import pick_device, seed_everything
    from latentlab.sweep.evaluate import evaluate_model, evaluate_pca, save_record
    from latentlab.train.run import run_training
    device = pick_device(job.device)
    if load_finished(metrics_path(job.folder), job.settings) is None:
        run_training(job.train, job.folder, job.device, job.quiet, companion=False)
        seed_everything(job.seed)
        files.save_json(save_record(evaluate_model(job.folder, job.settings, device), job.folder), metrics_path(job.folder))
    if job.pca_folder is not None and load_finished(metrics_path(job.pca_folder), job.settings) is None:
        files.save_json(save_record(evaluate_pca(job.folder, job.latent_size, job.settings, device), job.pca_folder),
                        metrics_path(job.pca_folder))


def resolved_network(values: dict, family: str, latent_size: int, umap_max_size: int) -> dict:
    """values (settings by name) with the network (widths, bottleneck) a run of this family and latent
    size builds where the flags leave them unset, and the UMAP loss's weight on it: what a sweep records,
    so that a later default is not taken for the one its runs had."""
    widths = FAMILIES[family].defaults(latent_size)
    return {**values, **{k: v if isinstance(v, str) else list(v) for k, v in widths.items() if values.get(k) is None},
            "umap_weight": umap_weight_at(values["umap_weight"], umap_max_size, latent_size)}
