"""What each artifact of output/ must hold, checked when it is loaded: one validator per kind
(checkpoint, test data, PCA baseline, latents) and the checks that two files belong together.
Every step loads through these, so a file of the wrong kind, version or shape is refused with one
line naming the file and the fix. Where files live and how they are written is files.py.
"""
from __future__ import annotations

import hashlib
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from latentlab.cli import UserError
from latentlab.store import files
from latentlab.store.files import FORMAT_VERSION, load_json, load_torch
from latentlab.settings import FOLDER_READING, RECORDED
from model.autoencoder import FAMILIES, ModelConfig, build_model, describe


# the per-epoch history a checkpoint carries: one value per epoch in each list
HISTORY_KEYS = ("epoch", "train_loss", "val_loss", "val_mse", "seconds", "images_per_s")


def _require(cond, path, what):
    if not cond:  # what may quote a value of the file: one line, whatever it holds
        raise UserError(f"{path} is malformed: {' '.join(what.split())[:300]}; retrain to recreate it")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_shape(v) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 3 and all(_is_int(s) and s >= 1 for s in v)


def _is_plain(v) -> bool:
    """A setting's value as JSON holds it (a number, a string, None, a list of them), not a tensor."""
    if isinstance(v, (list, tuple)):
        return all(map(_is_plain, v))
    return v is None or isinstance(v, (bool, int, float, str))


def _is_names(v) -> bool:
    return isinstance(v, list) and all(isinstance(n, str) for n in v)


def _is_run(v) -> bool:
    """A run id (latentlab.store.runs) as it names a folder's run, never a path."""
    return isinstance(v, str) and re.fullmatch(r"[0-9a-f]{1,64}", v) is not None


def _parameter_shapes(config, path) -> tuple[dict, list]:
    """Build the model of a checkpoint's config on the meta device (no memory, no compute) and
    return ({state_dict name: shape}, [(parameter name, shape)] in model.parameters() order, the
    optimizer's): the config must build, and the weights must fit it."""
    fields = ModelConfig().to_dict()
    _require(isinstance(config, dict) and set(config) == set(fields) and all(map(_is_plain, config.values())), path,
             f"its model config must hold plain values of {', '.join(fields)}")
    _require(str(config.get("family")) in FAMILIES, path, f"model family {config.get('family')!r} is not one of {', '.join(FAMILIES)}")
    _require(_is_int(config.get("latent_size")) and config["latent_size"] >= 1, path, "latent_size must be a positive integer")
    _require(_is_shape(config.get("image_shape")), path, "image_shape must be three positive integers (C, H, W)")
    for key in ("beta", "noise_std"):
        v = config[key]
        _require(_is_number(v) and v >= 0, path, f"{key} must be a number >= 0")
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
    _require(isinstance(state, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()),
             path, f"{what} must map parameter names to tensors")
    missing, extra = sorted(set(shapes) - set(state)), sorted(set(state) - set(shapes))
    _require(not missing and not extra, path, f"{what} do not fit its config "
             f"(missing {', '.join(missing[:3]) or 'none'}; unexpected {', '.join(extra[:3]) or 'none'})")
    for name, shape in shapes.items():
        _require(tuple(state[name].shape) == shape and state[name].is_floating_point(), path,
                 f"{what}: {name} is {state[name].dtype} {tuple(state[name].shape)}, its config builds float {shape}")
        _require_finite(state[name], path, f"{name} in {what}")


def _check_optimizer(opt, params: list, path) -> None:
    """The Adam state of the resume weights: one entry per parameter in model.parameters() order,
    each a step and moments of that parameter's shape (torch's load_state_dict checks no shape)."""
    what = "the resume state's optimizer"
    groups = opt.get("param_groups") if isinstance(opt, dict) else None
    _require(isinstance(groups, list) and groups and all(isinstance(g, dict) for g in groups)
             and isinstance(opt.get("state"), dict), path, f"{what} must hold state and param_groups")
    ids = [i for g in groups for i in (g.get("params") if isinstance(g.get("params"), list) else [None])]
    _require(ids == list(range(len(params))), path, f"{what} is not for the {len(params)} parameters of its model")
    for g in groups:
        betas = g.get("betas")
        _require(all(_is_number(g.get(k)) for k in ("lr", "eps", "weight_decay")) and isinstance(betas, (list, tuple))
                 and len(betas) == 2 and all(_is_number(b) for b in betas), path,
                 f"{what}'s settings (lr, betas, eps, weight_decay) must be numbers")
    for i, s in opt["state"].items():
        _require(_is_int(i) and 0 <= i < len(params) and isinstance(s, dict) and {"step", "exp_avg", "exp_avg_sq"} <= set(s)
                 and all(torch.is_tensor(v) for v in s.values()), path,
                 f"{what} has a malformed entry {i!r} (expected step, exp_avg and exp_avg_sq tensors)")
        name, shape = params[i]
        for key, v in s.items():
            _require(v.is_floating_point() and tuple(v.shape) == (() if key == "step" else shape), path,
                     f"{what}: {key} of {name} is {v.dtype} {tuple(v.shape)}, the parameter is float {shape}")
            _require_finite(v, path, f"optimizer state {key} of {name}")


def _check_history(ckpt: dict, path) -> dict:
    """The per-epoch history: lists of finite numbers, one value per epoch each, and the selected
    epoch among them."""
    history = ckpt.get("history", {})
    _require(isinstance(history, dict) and all(isinstance(v, list) and all(map(_is_number, v)) for v in history.values()),
             path, "the training history must be lists of numbers")
    _require(len({len(v) for v in history.values()}) <= 1, path, "the training history's lists differ in length")
    if "best_epoch" in ckpt:
        _require(_is_int(ckpt["best_epoch"]) and ckpt["best_epoch"] in history.get("epoch", []), path,
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
    _require(ok, path, "its training record (the frames of the animations) is malformed")


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
    _require(isinstance(ds, dict) and described <= set(ds) and isinstance(ds["name"], str) and _is_names(ds["class_names"]),
             path, f"its dataset description must hold {', '.join(sorted(described))}")
    shape = ds["image_shape"]
    _require(isinstance(shape, (list, tuple)) and list(shape) == list(ckpt["config"]["image_shape"]), path,
             f"its dataset's image shape {shape} differs from its config's {ckpt['config']['image_shape']}")
    _require(_is_run(ckpt.get("run")), path, "no run id")
    history = _check_history(ckpt, path)
    train = ckpt.get("train")
    _require(isinstance(train, dict) and set(RECORDED) <= set(train) and all(map(_is_plain, train.values())), path,
             f"the training settings must be a dict of plain values of {', '.join(RECORDED)}")
    if "resume" in ckpt:
        r = ckpt["resume"]
        _require(isinstance(r, dict) and _is_int(r.get("epoch")) and r["epoch"] >= 0, path,
                 "the resume state needs epoch, weights and optimizer")
        _check_weights(r.get("state_dict"), shapes, path, "the resume weights")
        _check_optimizer(r.get("optimizer"), params, path)
        _require(set(history) == set(HISTORY_KEYS) and history["epoch"] == list(range(r["epoch"] + 1))
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


# ---------------------------------------------------------------- test data
def load_test_data(path) -> dict:
    """The held-out test split, checked: uint8 (N, C, H, W) images, one integer label per image,
    each a valid index into the class names, and the models of the training it belongs to."""
    data = load_torch(path, "test_data", hint="run train.py first, or pass --test_data")
    x, y = data.get("images"), data.get("labels")
    _require(isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and x.dim() == 4 and len(x) > 0, path,
             "images must be a non-empty uint8 (N, C, H, W) tensor")
    _require(isinstance(y, torch.Tensor) and y.shape == (x.shape[0],) and not y.is_floating_point()
             and y.dtype != torch.bool, path, "labels must be one integer per image")
    names = data.get("class_names")
    _require(_is_names(names) and len(names) > 0, path, "class names must be a list of strings")
    _require(bool(((y >= 0) & (y < len(names))).all()), path, f"labels must lie in 0..{len(names) - 1}")
    _require(isinstance(data.get("dataset"), str) and _is_run(data.get("run")), path, "no dataset name or run id")
    sizes, models = data.get("latent_sizes"), data.get("models")
    _require(isinstance(sizes, list) and sizes and all(_is_int(k) and k > 0 for k in sizes)
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
    _require(_is_shape(shape) and isinstance(pca.get("dataset"), str) and _is_run(pca.get("run")), path,
             "no dataset name, image shape or run id")
    d = math.prod(shape)
    mean, comps = pca.get("mean"), pca.get("components")
    _require(isinstance(mean, torch.Tensor) and mean.is_floating_point() and mean.shape == (d,), path,
             f"mean must be a float vector of {d} values")
    _require(isinstance(comps, torch.Tensor) and comps.is_floating_point() and comps.dim() == 2
             and comps.shape[1] == d and comps.shape[0] >= 1, path, f"components must be a float (k, {d}) matrix")
    _require(bool(torch.isfinite(mean).all() and torch.isfinite(comps).all()), path, "it holds non-finite values")
    _require(isinstance(pca.get("scores"), dict), path, "scores must be a dict")
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


# ---------------------------------------------------------------- latents
@dataclass
class Latents:
    """Checked latents: z float32 (samples, latent_size); labels and indices int64 (samples,),
    indices being the rows of the test data that were encoded."""
    path: Path
    z: np.ndarray
    meta: dict
    labels: np.ndarray
    indices: np.ndarray

    @property
    def latent_size(self) -> int:
        return self.z.shape[1]

    @property
    def split(self) -> str:
        return self.meta["split"]

    @property
    def class_names(self) -> list:
        return self.meta["class_names"]

    @property
    def dataset(self) -> str:
        return self.meta["dataset"]

    @property
    def family(self) -> str:
        return self.meta["family"]

    @property
    def label(self) -> str:
        return describe(self.family, self.latent_size, self.dataset)


def save_latents(path, latents: np.ndarray, meta: dict) -> tuple[Path, Path]:
    """latents: float32 (samples, N). meta (JSON beside it) holds labels, test indices and the rest,
    and the SHA-256 of the .npy: the two are replaced together, and a reader refuses a pair that
    does not belong together."""
    path = Path(path)
    latents = np.ascontiguousarray(latents, dtype=np.float32)
    buf = io.BytesIO()
    np.save(buf, latents, allow_pickle=False)
    npy = buf.getbuffer()
    meta = {"kind": "latents", "format_version": FORMAT_VERSION, "shape": list(latents.shape), **meta,
            "npy_sha256": hashlib.sha256(npy).hexdigest()}
    meta_path = path.with_suffix(".json")
    files.replace_together({path: lambda f: f.write(npy), meta_path: lambda f: f.write(files.json_text(meta).encode())})
    return path, meta_path


def _load_array(path) -> np.ndarray:
    """allow_pickle=False: an object array (pickled Python objects) is refused, never unpickled."""
    hint = "re-run encode_latent_space.py"
    if not path.is_file():
        raise UserError(f"{path} does not exist; run encode_latent_space.py first, or pass --latent_space")
    try:
        z = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise UserError(f"{path} was refused: it holds pickled Python objects, which are never loaded; {hint}")
        raise UserError(f"{path} is not a readable .npy file ({str(e).splitlines()[0][:80] if str(e) else 'ValueError'}); {hint}")
    except MemoryError:
        raise UserError(f"not enough memory to load {path}")
    except PermissionError as e:
        raise files.cannot_read(path, e)
    except Exception as e:  # OSError, EOFError, SyntaxError in a forged header, ...: unreadable input
        raise UserError(f"{path} is not a readable .npy file ({type(e).__name__}); {hint}")
    if not isinstance(z, np.ndarray):  # np.load opens any zip archive (a .pth, an .npz) as an NpzFile
        z.close()
        raise UserError(f"{path} is a zip archive (a .pth or .npz?), not a .npy latent array; "
                        f"pass a latent_space_size_{{N}}.npy written by encode_latent_space.py")
    if z.ndim != 2 or z.dtype.kind != "f" or z.shape[0] == 0:
        raise UserError(f"{path} is not a latent array: expected float (samples, size), found "
                        f"{z.dtype} of shape {z.shape}")
    if not np.isfinite(z).all():
        raise UserError(f"{path} holds non-finite values; re-encode with a healthy model")
    return z.astype(np.float32, copy=False)


def _sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def load_latents(path) -> Latents:
    """latent_space_size_{N}.npy and its JSON, checked against each other: shape, size, labels,
    indices, class names."""
    path = Path(path)
    z = _load_array(path)
    meta_path, again = path.with_suffix(".json"), "re-run encode_latent_space.py"
    if not meta_path.exists():
        raise UserError(f"{meta_path} is missing: the latents need their labels; {again}")
    meta = load_json(meta_path, "latents", again)
    if meta.get("npy_sha256") != _sha256(path):
        raise UserError(f"{path} and {meta_path} do not belong together (the array is not the one the JSON "
                        f"describes); {again}")
    if meta.get("shape") != list(z.shape):
        raise UserError(f"{path} holds an array of shape {list(z.shape)} but {meta_path} describes {meta.get('shape')}: "
                        f"the two files do not belong together; {again}")
    if meta.get("latent_size") != z.shape[1]:
        raise UserError(f"{path} holds latents of size {z.shape[1]} but {meta_path} says latent_size "
                        f"{meta.get('latent_size')}; {again}")
    named = re.fullmatch(r"latent_space_size_(\d+)(_train)?\.npy", path.name)
    if named and int(named.group(1)) != z.shape[1]:
        raise UserError(f"{path} is named for size {named.group(1)} but holds latents of size {z.shape[1]}; "
                        f"pass the file of the model you mean, or {again}")
    names, labels, indices = meta.get("class_names"), meta.get("labels"), meta.get("indices")
    if not _is_names(names) or not isinstance(meta.get("dataset"), str) or str(meta.get("family")) not in FAMILIES \
            or meta.get("split") not in files.SPLITS or not _is_run(meta.get("run")):
        raise UserError(f"{meta_path} has no class names, dataset, family, split or run id; {again}")
    if not isinstance(labels, list) or len(labels) != len(z) or not all(_is_int(v) for v in labels):
        raise UserError(f"{meta_path} has {len(labels) if isinstance(labels, list) else 'no'} integer labels "
                        f"for {len(z)} latents; {again}")
    if not isinstance(indices, list) or len(indices) != len(z) or not all(_is_int(v) for v in indices):
        raise UserError(f"{meta_path} does not say which test items were encoded; {again}")
    labels, indices = np.asarray(labels, dtype=np.int64), np.asarray(indices, dtype=np.int64)
    if labels.min() < 0 or labels.max() >= len(names):
        raise UserError(f"{meta_path} has labels outside its {len(names)} classes; {again}")
    return Latents(path, z, meta, labels, indices)


def check_latents_match(latents: Latents, data: dict, data_path) -> None:
    """The latents were encoded from this test data: same dataset, indices inside it, same labels."""
    if latents.split != "test":
        raise UserError(f"{latents.path} encodes the {latents.split}ing split; pass the test-split latents "
                        f"({files.latents_path(latents.path.parent, latents.latent_size).name})")
    if latents.dataset != data["dataset"]:
        raise UserError(f"{latents.path} was encoded from dataset {latents.dataset!r} but {data_path} holds "
                        f"{data['dataset']!r}; pass the test data of the same training")
    n = len(data["labels"])
    if latents.indices.min() < 0 or latents.indices.max() >= n:
        raise UserError(f"{latents.path} refers to test items beyond the {n} of {data_path}; "
                        f"pass the test data it was encoded from, or re-run encode_latent_space.py")
    if not np.array_equal(data["labels"].numpy()[latents.indices], latents.labels):
        raise UserError(f"the labels stored with {latents.path} differ from those of the same items in {data_path}; "
                        f"it was encoded from other test data: re-run encode_latent_space.py")
