"""The test data and the PCA baseline a training writes, checked when they are loaded, and the
checks that files belong together; the predicates every validator uses (checkpoints.py,
latent_files.py). Every step loads through these, so a file of the wrong kind, version or shape is
refused with one line naming the file and the fix. Where files live and how they are written: files.py.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from latentlab.cli import UserError
from latentlab.store.files import load_torch


def require(cond, path, what):
    if not cond:  # what may quote a value of the file: one line, whatever it holds
        raise UserError(f"{path} is malformed: {' '.join(what.split())[:300]}; retrain to recreate it")


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_shape(v) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 3 and all(is_int(s) and s >= 1 for s in v)


def is_plain(v) -> bool:
    """A setting's value as JSON holds it (a number, a string, None, a list of them), not a tensor."""
    if isinstance(v, (list, tuple)):
        return all(map(is_plain, v))
    return v is None or isinstance(v, (bool, int, float, str))


def is_names(v) -> bool:
    return isinstance(v, list) and all(isinstance(n, str) for n in v)


def is_run(v) -> bool:
    """A run id (latentlab.store.runs) as it names a folder's run, never a path."""
    return isinstance(v, str) and re.fullmatch(r"[0-9a-f]{1,64}", v) is not None


# ---------------------------------------------------------------- test data
def load_test_data(path) -> dict:
    """The held-out test split, checked: uint8 (N, C, H, W) images, one integer label per image,
    each a valid index into the class names, and the models of the training it belongs to."""
    data = load_torch(path, "test_data", hint="run train.py first, or pass --test_data")
    x, y = data.get("images"), data.get("labels")
    require(isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and x.dim() == 4 and len(x) > 0, path,
             "images must be a non-empty uint8 (N, C, H, W) tensor")
    require(isinstance(y, torch.Tensor) and y.shape == (x.shape[0],) and not y.is_floating_point()
             and y.dtype != torch.bool, path, "labels must be one integer per image")
    names = data.get("class_names")
    require(is_names(names) and len(names) > 0, path, "class names must be a list of strings")
    require(bool(((y >= 0) & (y < len(names))).all()), path, f"labels must lie in 0..{len(names) - 1}")
    require(isinstance(data.get("dataset"), str) and is_run(data.get("run")), path, "no dataset name or run id")
    sizes, models = data.get("latent_sizes"), data.get("models")
    require(isinstance(sizes, list) and sizes and all(is_int(k) and k > 0 for k in sizes)
             and isinstance(models, list) and len(models) == len(sizes), path,
             "it does not name the models it belongs to")
    return data


def check_test_data_matches(data: dict, ckpt: dict, data_path, model_path) -> None:
    """The test data must belong to the model: same dataset, same image shape, and named in it."""
    shape = tuple(data["images"].shape[1:])
    model_shape = tuple(ckpt["config"]["image_shape"])
    if shape != model_shape:
        raise UserError(f"test data {data_path} has images of shape {shape} but model {model_path} "
                        f"expects {model_shape}; pass the test data written by the same training")
    if data.get("dataset") != ckpt["dataset"].get("name"):
        raise UserError(f"test data {data_path} is from dataset {data.get('dataset')!r} but model {model_path} "
                        f"was trained on {ckpt['dataset'].get('name')!r}; pass matching files")
    if Path(model_path).name not in data["models"]:
        raise UserError(f"test data {data_path} belongs to {', '.join(data['models'])}, not to {model_path}; "
                        f"pass the test_data.pth written by the training of {Path(model_path).name}")


# ---------------------------------------------------------------- PCA baseline
def load_pca_baseline(path) -> dict:
    """The PCA baseline, checked: float mean (D,) and components (k, D), D = C*H*W of its image shape."""
    pca = load_torch(path, "pca_baseline", hint="run train.py first, or pass --pca_baseline")
    shape = pca.get("image_shape")
    require(is_shape(shape) and isinstance(pca.get("dataset"), str) and is_run(pca.get("run")), path,
             "no dataset name, image shape or run id")
    d = math.prod(shape)
    mean, comps = pca.get("mean"), pca.get("components")
    require(isinstance(mean, torch.Tensor) and mean.is_floating_point() and mean.shape == (d,), path,
             f"mean must be a float vector of {d} values")
    require(isinstance(comps, torch.Tensor) and comps.is_floating_point() and comps.dim() == 2
             and comps.shape[1] == d and comps.shape[0] >= 1, path, f"components must be a float (k, {d}) matrix")
    require(bool(torch.isfinite(mean).all() and torch.isfinite(comps).all()), path, "it holds non-finite values")
    require(isinstance(pca.get("scores"), dict), path, "scores must be a dict")
    return pca


def check_pca_matches(pca: dict, data: dict, pca_path, data_path, sizes) -> None:
    """The PCA baseline was fit on the test data's dataset and image shape, with a component for
    every latent size in sizes (up to the number of pixel values)."""
    same = "pass the pca_baseline.pth of the same training"
    shape = tuple(pca["image_shape"])
    if shape != tuple(data["images"].shape[1:]) or pca["dataset"] != data["dataset"]:
        raise UserError(f"PCA baseline {pca_path} is for {pca['dataset']} images of shape {shape} but {data_path} "
                        f"holds {data['dataset']} images of shape {tuple(data['images'].shape[1:])}; {same}")
    need = min(max(sizes), math.prod(shape))
    if pca["components"].shape[0] < need:
        raise UserError(f"PCA baseline {pca_path} has {pca['components'].shape[0]} components, latent size "
                        f"{max(sizes)} needs {need}; {same}")
