"""A training checkpoint (model_latent_size_{N}.pth) checked when it is loaded: its config builds its
model, its weights fit that model and are finite, its optimizer state, history and training record
are whole, and it names its run, dataset and settings (CheckpointFile: one loaded, with its path)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from latentlab.cli import UserError
from latentlab.store.artifacts import is_int, is_names, is_plain, is_run, is_shape, require
from latentlab.store.files import load_torch
from latentlab.settings import FOLDER_READING, RECORDED
from model.autoencoder import FAMILIES, ModelConfig, build_model, describe

# the per-epoch history a checkpoint carries: one value per epoch in each list
HISTORY_KEYS = ("epoch", "train_loss", "val_loss", "val_mse", "seconds", "images_per_s")


def _parameter_shapes(config, path) -> tuple[dict, list]:
    """Build the model of a checkpoint's config on the meta device (no memory, no compute) and
    return ({state_dict name: shape}, [(parameter name, shape)] in model.parameters() order, the
    optimizer's): the config must build, and the weights must fit it."""
    fields = ModelConfig().to_dict()
    require(isinstance(config, dict) and set(config) == set(fields) and all(map(is_plain, config.values())), path,
             f"its model config must hold plain values of {', '.join(fields)}")
    require(str(config.get("family")) in FAMILIES, path, f"model family {config.get('family')!r} is not one of {', '.join(FAMILIES)}")
    require(is_int(config.get("latent_size")) and config["latent_size"] >= 1, path, "latent_size must be a positive integer")
    require(is_shape(config.get("image_shape")), path, "image_shape must be three positive integers (C, H, W)")
    for key in ("beta", "noise_std"):
        v = config[key]
        require(_is_number(v) and v >= 0, path, f"{key} must be a number >= 0")
    try:
        with torch.device("meta"):
            model = build_model(ModelConfig.from_dict(config))
    except Exception as e:  # a config this version cannot build: wrong types, sizes, ...
        raise UserError(f"{path} is malformed: its model config does not build ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:100] if str(e) else ''}); retrain to recreate it")
    return ({k: tuple(v.shape) for k, v in model.state_dict().items()},
            [(k, tuple(v.shape)) for k, v in model.named_parameters()])


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _require_finite(tensor, path, name) -> None:
    if not bool(torch.isfinite(tensor).all()):
        raise UserError(f"{path} holds non-finite weights ({name}); the training diverged before it was saved: retrain")


def _check_weights(state, shapes: dict, path, what: str) -> None:
    require(isinstance(state, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()),
             path, f"{what} must map parameter names to tensors")
    missing, extra = sorted(set(shapes) - set(state)), sorted(set(state) - set(shapes))
    require(not missing and not extra, path, f"{what} do not fit its config "
             f"(missing {', '.join(missing[:3]) or 'none'}; unexpected {', '.join(extra[:3]) or 'none'})")
    for name, shape in shapes.items():
        require(tuple(state[name].shape) == shape and state[name].is_floating_point(), path,
                 f"{what}: {name} is {state[name].dtype} {tuple(state[name].shape)}, its config builds float {shape}")
        _require_finite(state[name], path, f"{name} in {what}")


def _check_optimizer(opt, params: list, path) -> None:
    """The Adam state of the resume weights: one entry per parameter in model.parameters() order,
    each a step and moments of that parameter's shape (torch's load_state_dict checks no shape)."""
    what = "the resume state's optimizer"
    groups = opt.get("param_groups") if isinstance(opt, dict) else None
    require(isinstance(groups, list) and groups and all(isinstance(g, dict) for g in groups)
             and isinstance(opt.get("state"), dict), path, f"{what} must hold state and param_groups")
    ids = [i for g in groups for i in (g.get("params") if isinstance(g.get("params"), list) else [None])]
    require(ids == list(range(len(params))), path, f"{what} is not for the {len(params)} parameters of its model")
    for g in groups:
        betas = g.get("betas")
        require(all(_is_number(g.get(k)) for k in ("lr", "eps", "weight_decay")) and isinstance(betas, (list, tuple))
                 and len(betas) == 2 and all(_is_number(b) for b in betas), path,
                 f"{what}'s settings (lr, betas, eps, weight_decay) must be numbers")
    for i, s in opt["state"].items():
        require(is_int(i) and 0 <= i < len(params) and isinstance(s, dict) and {"step", "exp_avg", "exp_avg_sq"} <= set(s)
                 and all(torch.is_tensor(v) for v in s.values()), path,
                 f"{what} has a malformed entry {i!r} (expected step, exp_avg and exp_avg_sq tensors)")
        name, shape = params[i]
        for key, v in s.items():
            require(v.is_floating_point() and tuple(v.shape) == (() if key == "step" else shape), path,
                     f"{what}: {key} of {name} is {v.dtype} {tuple(v.shape)}, the parameter is float {shape}")
            _require_finite(v, path, f"optimizer state {key} of {name}")


def _check_history(ckpt: dict, path) -> dict:
    """The per-epoch history: lists of finite numbers, one value per epoch each, and the selected
    epoch among them."""
    history = ckpt.get("history", {})
    require(isinstance(history, dict) and all(isinstance(v, list) and all(map(_is_number, v)) for v in history.values()),
             path, "the training history must be lists of numbers")
    require(len({len(v) for v in history.values()}) <= 1, path, "the training history's lists differ in length")
    if "best_epoch" in ckpt:
        require(is_int(ckpt["best_epoch"]) and ckpt["best_epoch"] in history.get("epoch", []), path,
                 f"its best_epoch {ckpt['best_epoch']!r} is not an epoch of its history")
    return history


RECORD_TENSORS = ("indices", "labels", "shot_indices", "originals", "epoch", "val_loss", "xy", "reconstructions")


def _check_record(record, image_shape, classes: int, path) -> None:
    """The training record (latentlab.train.animation) a resumed run continues: frames of one length."""
    ok = isinstance(record, dict) and isinstance(record.get("view"), str) and all(
        torch.is_tensor(record.get(k)) for k in RECORD_TENSORS)
    if ok:
        n, s, e = len(record["indices"]), len(record["shot_indices"]), len(record["epoch"])
        labels, shape = record["labels"], tuple(image_shape)
        ok = (labels.shape == (n,) and not labels.is_floating_point() and bool(((labels >= 0) & (labels < classes)).all())
              and record["val_loss"].shape == (e,) and record["xy"].shape == (e, n, 2)
              and bool(torch.isfinite(record["xy"]).all() and torch.isfinite(record["val_loss"]).all())
              and record["originals"].shape == (s, *shape) and record["reconstructions"].shape == (e, s, *shape)
              and record["originals"].dtype == record["reconstructions"].dtype == torch.uint8)
    require(ok, path, "its training record (the frames of the animations) is malformed")


def load_checkpoint(path) -> dict:
    """A model checkpoint, checked: its config builds, its weights (selected and resume) are finite
    float tensors of the shapes that config builds, its dataset description agrees with the config,
    and its history is whole. The resume state, when there is one, is checked in full (optimizer,
    history up to its epoch, training record) before --resume writes anything."""
    ckpt = load_torch(path, "checkpoint", hint="run train.py first, or pass --model_path")
    shapes, params = _parameter_shapes(ckpt.get("config"), path)
    _check_weights(ckpt.get("state_dict"), shapes, path, "the weights")
    ds = ckpt.get("dataset")
    described = {"name", "class_names", "image_shape", "split", "num_train", "num_val", "data_dir", "image_size",
                 *FOLDER_READING}  # what re-reads its training split
    require(isinstance(ds, dict) and described <= set(ds) and isinstance(ds["name"], str) and is_names(ds["class_names"]),
             path, f"its dataset description must hold {', '.join(sorted(described))}")
    shape = ds["image_shape"]
    require(isinstance(shape, (list, tuple)) and list(shape) == list(ckpt["config"]["image_shape"]), path,
             f"its dataset's image shape {shape} differs from its config's {ckpt['config']['image_shape']}")
    require(is_run(ckpt.get("run")), path, "no run id")
    history = _check_history(ckpt, path)
    train = ckpt.get("train")
    require(isinstance(train, dict) and set(RECORDED) <= set(train) and all(map(is_plain, train.values())), path,
             f"the training settings must be a dict of plain values of {', '.join(RECORDED)}")
    if "resume" in ckpt:
        r = ckpt["resume"]
        require(isinstance(r, dict) and is_int(r.get("epoch")) and r["epoch"] >= 0, path,
                 "the resume state needs epoch, weights and optimizer")
        _check_weights(r.get("state_dict"), shapes, path, "the resume weights")
        _check_optimizer(r.get("optimizer"), params, path)
        require(set(history) == set(HISTORY_KEYS) and history["epoch"] == list(range(r["epoch"] + 1))
                 and "best_epoch" in ckpt, path, f"its history and best_epoch do not run to the resume state's "
                 f"epoch {r['epoch'] + 1}")
        if "record" in ckpt:
            _check_record(ckpt["record"], ckpt["config"]["image_shape"], len(ds["class_names"]), path)
    return ckpt


@dataclass
class CheckpointFile:
    """A checked checkpoint and the path it was read from."""
    path: Path
    ckpt: dict

    @property
    def latent_size(self) -> int:
        return int(self.ckpt["config"]["latent_size"])

    @property
    def family(self) -> str:
        return self.ckpt["config"]["family"]

    @property
    def dataset(self) -> str:
        return self.ckpt["dataset"]["name"]

    @property
    def name(self) -> str:
        """The model without its size: 'VAE (beta 1)', 'denoising conv autoencoder (noise std 0.2)'."""
        config = self.ckpt["config"]
        return describe(self.family, noise_std=config["noise_std"], beta=config["beta"],
                        umap_weight=config["umap_weight"], bottleneck=config["bottleneck"])

    @property
    def label(self) -> str:
        return f"{self.name}, latent size {self.latent_size}, {self.dataset}"
