"""A training checkpoint: its keys (run_meta: the run and its dataset; make_checkpoint: the weights,
the per-epoch history, the library versions, the resume state on the CPU), and resuming from one:
the checks that it came from the same model, dataset and settings.
"""
from __future__ import annotations

from importlib.metadata import version as package_version
from pathlib import Path

import torch

from latentlab.store import checkpoints, files
from latentlab.cli import UserError
from latentlab.train.distributed import World, run_agreed, same_everywhere
from latentlab.settings import RESUME_MUST_MATCH, Settings, applies, recorded
from model.autoencoder import ModelConfig


def library_versions() -> dict:
    out = {"torch": str(torch.__version__)}
    for pkg in ("torchvision", "numpy", "scikit-learn"):
        try:
            out[pkg] = package_version(pkg)
        except Exception:
            pass
    return out


def to_cpu(value):
    return value.detach().to("cpu", copy=True) if torch.is_tensor(value) else value


def optimizer_to_cpu(state: dict) -> dict:
    return {"state": {k: {n: to_cpu(v) for n, v in s.items()} for k, s in state["state"].items()},
            "param_groups": state["param_groups"]}


def best_epoch_of(history: dict) -> int:
    return history["epoch"][min(range(len(history["val_loss"])), key=history["val_loss"].__getitem__)]


def run_meta(run: str, data, split, settings: Settings) -> dict:
    """What a checkpoint says of its run: the run id, the dataset and how it was read and split, the seed."""
    return {"run": run,
            "dataset": {"name": data.name, "class_names": data.class_names, "image_shape": list(data.image_shape),
                        "split": data.split, "num_train": len(split.train), "num_val": len(split.val),
                        # what re-reads the training split (encode_latent_space.py --split train)
                        "data_dir": str(Path(settings.data_dir).resolve()) if settings.data_dir else None,
                        "image_size": settings.image_size, "resize": settings.resize,
                        "background": settings.background, "skip_unreadable": settings.skip_unreadable,
                        "skipped": len(data.skipped)},  # how the images were read, and how many were left out
            "seed": settings.seed}


def make_checkpoint(config: ModelConfig, meta: dict, settings: Settings, history: dict, best_state: dict,
                    stopped_early: bool, model, opt, train: dict) -> dict:
    """Every key of a checkpoint after an epoch (history's last), on top of meta (the run, the dataset,
    the seed); the per-epoch hooks add what they keep for --resume, the report its "test_metrics"."""
    epoch = history["epoch"][-1]
    return {
        "kind": "checkpoint", "format_version": files.FORMAT_VERSION,
        "config": config.to_dict(), "state_dict": best_state, **meta,
        "train": {**recorded(settings), **train}, "history": history, "best_epoch": best_epoch_of(history),
        "finished": stopped_early or epoch + 1 >= settings.num_epochs, "stopped_early": stopped_early,
        "resume": {"epoch": epoch, "state_dict": {k: to_cpu(v) for k, v in model.state_dict().items()},
                   "optimizer": optimizer_to_cpu(opt.state_dict())},
        "versions": library_versions(),
    }


# ---------------------------------------------------------------- resume
def check_resume(ckpt: dict, path: Path, settings: Settings, config: ModelConfig, dataset: str) -> None:
    """Refuse (UserError) a checkpoint that another model, dataset or training setting made."""
    for key in RESUME_MUST_MATCH:
        was = ckpt["train"][key]
        if was != getattr(settings, key) and applies(key, dataset):
            raise UserError(f"--resume: {path} was trained with {key}={was}, not {getattr(settings, key)}; "
                            f"use the same flags or drop --resume")
    was = ckpt["config"]
    for key, value in config.to_dict().items():
        if was[key] != value and key in ("channels", "hidden", "dense", "bottleneck", "umap_weight"):
            which = " (--umap_max_size sets the sizes it applies to)" if key == "umap_weight" else ""
            raise UserError(f"--resume: {path} was trained with {key}={was[key]}, not {value}{which}; "
                            f"use the same flags or drop --resume")
    if was != config.to_dict() or ckpt["dataset"]["name"] != dataset:
        raise UserError(f"--resume: {path} holds another model or dataset ({was['family']}, "
                        f"{ckpt['dataset']['name']}); use the same flags or drop --resume")
    if "resume" not in ckpt:
        raise UserError(f"--resume: {path} has no resume state; drop --resume to start over")


def check_resumable(path: Path, settings: Settings, config: ModelConfig, dataset: str) -> None:
    """What --resume will continue, checked in full before a run writes anything; no file yet is fine."""
    if path.is_file():
        check_resume(checkpoints.load_checkpoint(path), path, settings, config, dataset)


def load_resume(path: Path, settings: Settings, config: ModelConfig, meta: dict, model, opt,
                world: World = World()) -> dict | None:
    """The checkpoint to resume from (None when there is none yet), loaded into model and opt;
    every process must find the same one."""
    def load():
        if not path.is_file():
            return None
        ckpt = checkpoints.load_checkpoint(path)
        check_resume(ckpt, path, settings, config, meta["dataset"]["name"])
        try:
            model.load_state_dict(ckpt["resume"]["state_dict"])
            opt.load_state_dict(ckpt["resume"]["optimizer"])
        except (ValueError, RuntimeError, KeyError, TypeError, IndexError) as e:
            raise UserError(f"--resume: the optimizer state in {path} does not fit the model "
                            f"({type(e).__name__}); drop --resume to start over")
        return ckpt
    ckpt = run_agreed(load, world)
    start = ckpt["resume"]["epoch"] + 1 if ckpt is not None else 0
    if not same_everywhere(start, world):  # one checkpoint file, on a file system every process shares
        raise UserError(f"--resume: the processes found different checkpoints at {path} (this one: "
                        f"{'none' if ckpt is None else f'epoch {start}'}); put --output_dir on a file system "
                        f"every machine shares")
    return ckpt
