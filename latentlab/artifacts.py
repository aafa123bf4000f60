"""Save and load the artifacts of output/: checkpoints, test data, the PCA baseline, latents,
JSON metrics and figures. Writes are atomic; loads are safe (weights_only, allow_pickle=False)
and validated, and a file of the wrong kind or version is refused with one clear line.

The contract (see DESIGN.md):
  model_latent_size_{N}.pth   kind "checkpoint": weights + config + dataset + history + resume state
  test_data.pth               kind "test_data": held-out images, labels, class names, split, models
  pca_baseline.pth            kind "pca_baseline": mean + components fit on the training split
  latent_space_size_{N}.npy   float32 (samples, N), with latent_space_size_{N}.json beside it
"""
from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import math
import os
import pickle
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from latentlab.cli import UserError

FORMAT_VERSION = 1
KINDS = ("checkpoint", "test_data", "pca_baseline")


def checkpoint_path(output_dir, latent_size: int) -> Path:
    return Path(output_dir) / f"model_latent_size_{latent_size}.pth"


def test_data_path(output_dir) -> Path:
    return Path(output_dir) / "test_data.pth"


def pca_path(output_dir) -> Path:
    return Path(output_dir) / "pca_baseline.pth"


SPLITS = ("test", "train")


def latents_path(output_dir, latent_size: int, split: str = "test") -> Path:
    """latent_space_size_{N}.npy for the test split, latent_space_size_{N}_train.npy beside it for the training split."""
    return Path(output_dir) / f"latent_space_size_{latent_size}{'' if split == 'test' else '_' + split}.npy"


# ---------------------------------------------------------------- atomic writes
def atomic_write(path, write) -> Path:
    """Call write(file_object) on a temp file in path's folder, fsync it, then os.replace it onto
    path: a crash at any moment leaves the old file or the new one, never a torn one."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise UserError(f"cannot write to {path.parent}: {e.strerror or e}; choose a writable --output_dir")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        raise UserError(f"cannot write {path}: {e.strerror or e} (disk full or not writable?); "
                        f"free space or choose another --output_dir")
    except BaseException:
        _remove(tmp)
        raise
    return path


def _remove(p):
    try:
        os.unlink(p)
    except OSError:
        pass


def ensure_writable(folder) -> Path:
    """Fail at once, with one line, when folder cannot hold artifacts (not after hours of work)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".write_check.", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise UserError(f"cannot write to {folder}: {e.strerror or e}; choose a writable --output_dir")
    return folder


# atomic_write's temp files: "." + target name + "." + mkstemp's 8 random characters + ".tmp"
_TEMP_FILE = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")


def remove_stale_temp_files(folder, targets: tuple[str, ...]) -> list[Path]:
    """Delete the temp files atomic_write left when its process was killed mid-write, for the
    target names matching the glob patterns `targets` (those the caller alone writes)."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TEMP_FILE.match(p.name)
        if m and p.is_file() and any(fnmatch.fnmatchcase(m["target"], t) for t in targets):
            _remove(p)
            removed.append(p)
    return removed


def save_torch(obj: dict, path) -> Path:
    return atomic_write(path, lambda f: torch.save(obj, f))


def save_json(obj, path) -> Path:
    return save_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n", path)


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, (np.ndarray, torch.Tensor)):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot store {type(o).__name__} in JSON")


def save_text(text: str, path) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def save_npy(array: np.ndarray, path) -> Path:
    return atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))


# ---------------------------------------------------------------- content-keyed cache entries
def content_key(description: dict, *arrays: np.ndarray) -> str:
    """The key of a cache entry: 20 hex digits of SHA-256 over a JSON description (everything
    that decides the result) and the bytes of the input arrays."""
    h = hashlib.sha256()
    h.update(json.dumps(description, sort_keys=True).encode())
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:20]


def load_cached_npy(path, valid) -> np.ndarray | None:
    """A cache entry written by save_npy, or None when there is none, or it is damaged, or
    valid(array) is false: the caller then computes it again (and replaces it)."""
    if path is None or not Path(path).is_file():
        return None
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError):
        return None
    return array if valid(array) else None


def save_figure(fig, path, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG atomically, then close it."""
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


# ---------------------------------------------------------------- safe, validated loads
def load_torch(path, kind: str, hint: str = "") -> dict:
    """Load a .pth written by this project with weights_only=True and check its kind and version.

    weights_only: the unpickler builds tensors and plain values only, so a file that asks to
    import anything else (a pickled function call, a class of any module) is refused and runs
    nothing. Any other failure to parse (random bytes, a truncated copy) is a UserError too."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist{'; ' + hint if hint else ''}")
    if not path.is_file():
        raise UserError(f"{path} is not a file; pass the {kind} .pth file itself")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about odd pickle protocols in garbage
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise UserError(f"{path} was refused: it asks to import {found.group(1)}, and a safe (weights-only) "
                            f"load runs no code from a file; only load files that latentlab wrote")
        raise UserError(f"{path} is not a readable PyTorch file (bad pickle data); it may be truncated or of another kind")
    except MemoryError:
        raise UserError(f"not enough memory to load {path}; free memory or use a machine with more")
    except Exception as e:  # RuntimeError (bad zip), EOFError, ValueError, IndexError, ...: unreadable input
        if "allocate" in str(e):
            raise UserError(f"not enough memory to load {path}; free memory or use a machine with more")
        raise UserError(f"{path} is not a readable PyTorch file ({type(e).__name__}); "
                        f"it may be truncated or of another kind")
    if not isinstance(obj, dict) or obj.get("kind") not in KINDS:
        raise UserError(f"{path} is not a latentlab artifact (expected a {kind} written by train.py)")
    if obj["kind"] != kind:
        raise UserError(f"{path} is a {obj['kind']}, not a {kind}{'; ' + hint if hint else ''}")
    if obj.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path} has format version {obj.get('format_version')}, this version reads "
                        f"{FORMAT_VERSION}; retrain with this version's train.py")
    return obj


def load_json(path, kind: str, hint: str) -> dict:
    """A JSON object this project wrote, of this kind (its "kind" field) and format version; any
    other file, or one that does not parse, is refused with one line ending in hint."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; {hint}")
    except (ValueError, OSError, UnicodeDecodeError, RecursionError) as e:
        raise UserError(f"{path} is not valid JSON ({type(e).__name__}); {hint}")
    if not isinstance(obj, dict) or obj.get("kind") != kind:
        raise UserError(f"{path} is not a {kind} file; {hint}")
    if obj.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path} has format version {obj.get('format_version')}, this version reads {FORMAT_VERSION}; {hint}")
    return obj


def _require(cond, path, what):
    if not cond:
        raise UserError(f"{path} is malformed: {what}; retrain to recreate it")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_shape(v) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 3 and all(_is_int(s) and s >= 1 for s in v)


def _is_names(v) -> bool:
    return isinstance(v, list) and all(isinstance(n, str) for n in v)


def _parameter_shapes(config, path) -> dict:
    """Build the model of a checkpoint's config on the meta device (no memory, no compute) and
    return {parameter name: shape}: the config must build, and the weights must fit it."""
    from model.autoencoder import FAMILIES, ModelConfig, build_model
    _require(isinstance(config, dict), path, "no model config")
    _require(config.get("family") in FAMILIES, path, f"model family {config.get('family')!r} is not one of {', '.join(FAMILIES)}")
    _require(_is_int(config.get("latent_size")) and config["latent_size"] >= 1, path, "latent_size must be a positive integer")
    _require(_is_shape(config.get("image_shape")), path, "image_shape must be three positive integers (C, H, W)")
    for key in ("beta", "noise_std"):
        v = config.get(key, 0.0)
        _require(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0, path, f"{key} must be a number >= 0")
    try:
        with torch.device("meta"):
            model = build_model(ModelConfig.from_dict(config))
    except Exception as e:  # a config this version cannot build: wrong types, sizes, ...
        raise UserError(f"{path} is malformed: its model config does not build ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:100] if str(e) else ''}); retrain to recreate it")
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _check_weights(state, shapes: dict, path, what: str) -> None:
    _require(isinstance(state, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()),
             path, f"{what} must map parameter names to tensors")
    missing, extra = sorted(set(shapes) - set(state)), sorted(set(state) - set(shapes))
    _require(not missing and not extra, path, f"{what} do not fit its config "
             f"(missing {', '.join(missing[:3]) or 'none'}; unexpected {', '.join(extra[:3]) or 'none'})")
    for name, shape in shapes.items():
        _require(tuple(state[name].shape) == shape and state[name].is_floating_point(), path,
                 f"{what}: {name} is {state[name].dtype} {tuple(state[name].shape)}, its config builds float {shape}")


def load_checkpoint(path) -> dict:
    """A model checkpoint, checked: its config builds, its weights (selected and resume) are float
    tensors of the shapes that config builds, and its dataset description agrees with the config."""
    ckpt = load_torch(path, "checkpoint", hint="run train.py first, or pass --model_path")
    shapes = _parameter_shapes(ckpt.get("config"), path)
    _check_weights(ckpt.get("state_dict"), shapes, path, "the weights")
    ds = ckpt.get("dataset")
    _require(isinstance(ds, dict) and isinstance(ds.get("name"), str) and _is_names(ds.get("class_names")), path,
             "no dataset description (name, class names)")
    _require(list(ds.get("image_shape", ckpt["config"]["image_shape"])) == list(ckpt["config"]["image_shape"]), path,
             f"its dataset's image shape {ds.get('image_shape')} differs from its config's {ckpt['config']['image_shape']}")
    history = ckpt.get("history", {})
    _require(isinstance(history, dict) and all(isinstance(v, list) for v in history.values()), path,
             "the training history must be lists")
    _require(isinstance(ckpt.get("train", {}), dict), path, "the training settings must be a dict")
    if "resume" in ckpt:
        r = ckpt["resume"]
        _require(isinstance(r, dict) and _is_int(r.get("epoch")) and r["epoch"] >= 0
                 and isinstance(r.get("optimizer"), dict), path, "the resume state needs epoch, weights and optimizer")
        _check_weights(r.get("state_dict"), shapes, path, "the resume weights")
    return ckpt


def model_from_checkpoint(ckpt: dict, device="cpu", weights: str = "best"):
    """Rebuild the model from the checkpoint alone (config + weights), in eval mode; conv models in
    channels_last memory format as they trained (inputs may come in either format)."""
    from model.autoencoder import build_model
    try:
        model = build_model(ckpt["config"])
        state = ckpt["state_dict"] if weights == "best" else ckpt["resume"]["state_dict"]
        model.load_state_dict(state)
    except (ValueError, RuntimeError, KeyError, TypeError) as e:
        raise UserError(f"the checkpoint's weights do not fit its config ({str(e).splitlines()[0][:120]}); retrain")
    if model.config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.to(device).eval()


def load_test_data(path) -> dict:
    """The held-out test split, checked: uint8 (N, C, H, W) images, one integer label per image,
    each a valid index into the class names."""
    data = load_torch(path, "test_data", hint="run train.py first, or pass --test_data")
    x, y = data.get("images"), data.get("labels")
    _require(isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and x.dim() == 4 and len(x) > 0, path,
             "images must be a non-empty uint8 (N, C, H, W) tensor")
    _require(isinstance(y, torch.Tensor) and y.shape == (x.shape[0],) and not y.is_floating_point()
             and y.dtype != torch.bool, path, "labels must be one integer per image")
    names = data.get("class_names")
    _require(_is_names(names) and len(names) > 0, path, "class names must be a list of strings")
    _require(bool(((y >= 0) & (y < len(names))).all()), path, f"labels must lie in 0..{len(names) - 1}")
    _require(isinstance(data.get("dataset"), str), path, "no dataset name")
    return data


def check_test_data_matches(data: dict, ckpt: dict, data_path, model_path) -> None:
    """The test data must belong to the model: same dataset, same image shape."""
    shape = tuple(data["images"].shape[1:])
    model_shape = tuple(ckpt["config"]["image_shape"])
    if shape != model_shape:
        raise UserError(f"test data {data_path} has images of shape {shape} but model {model_path} "
                        f"expects {model_shape}; pass the test data written by the same training")
    if data.get("dataset") != ckpt["dataset"].get("name"):
        raise UserError(f"test data {data_path} is from dataset {data.get('dataset')!r} but model {model_path} "
                        f"was trained on {ckpt['dataset'].get('name')!r}; pass matching files")


def load_pca_baseline(path) -> dict:
    """The PCA baseline, checked: float mean (D,) and components (k, D), D = C*H*W of its image shape."""
    pca = load_torch(path, "pca_baseline", hint="run train.py first")
    shape = pca.get("image_shape")
    _require(_is_shape(shape) and isinstance(pca.get("dataset"), str), path, "no dataset name or image shape")
    d = math.prod(shape)
    mean, comps = pca.get("mean"), pca.get("components")
    _require(isinstance(mean, torch.Tensor) and mean.is_floating_point() and mean.shape == (d,), path,
             f"mean must be a float vector of {d} values")
    _require(isinstance(comps, torch.Tensor) and comps.is_floating_point() and comps.dim() == 2
             and comps.shape[1] == d and comps.shape[0] >= 1, path, f"components must be a float (k, {d}) matrix")
    _require(bool(torch.isfinite(mean).all() and torch.isfinite(comps).all()), path, "it holds non-finite values")
    _require(isinstance(pca.get("scores", {}), dict), path, "scores must be a dict")
    return pca


def check_pca_matches(pca: dict, ckpt: dict, pca_path, model_path) -> None:
    """The PCA baseline must come from the model's dataset and image shape."""
    if list(pca["image_shape"]) != list(ckpt["config"]["image_shape"]) or pca["dataset"] != ckpt["dataset"].get("name"):
        raise UserError(f"PCA baseline {pca_path} is for {pca['dataset']} images of shape {tuple(pca['image_shape'])} "
                        f"but model {model_path} is for {ckpt['dataset'].get('name')} images of shape "
                        f"{tuple(ckpt['config']['image_shape'])}; pass the files of the same training")


def save_latents(path, latents: np.ndarray, meta: dict) -> tuple[Path, Path]:
    """latents: float32 (samples, N). meta (JSON beside it) holds labels, test indices and the rest."""
    path = Path(path)
    latents = np.ascontiguousarray(latents, dtype=np.float32)
    meta_path = path.with_suffix(".json")
    save_json({"kind": "latents", "format_version": FORMAT_VERSION, "shape": list(latents.shape), **meta}, meta_path)
    save_npy(latents, path)
    return path, meta_path


def load_latents(path) -> tuple[np.ndarray, dict]:
    """Latents (float32 (samples, N)) and their meta (labels, ...), checked against each other.
    allow_pickle=False: an object array (pickled Python objects) is refused, never unpickled."""
    path = Path(path)
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
    except Exception as e:  # OSError, EOFError, SyntaxError in a forged header, ...: unreadable input
        raise UserError(f"{path} is not a readable .npy file ({type(e).__name__}); {hint}")
    if not isinstance(z, np.ndarray):  # np.load opens any zip archive (a .pth, an .npz) as an NpzFile
        z.close()
        raise UserError(f"{path} is a zip archive (a .pth or .npz?), not a .npy latent array; "
                        f"pass a latent_space_size_{{N}}.npy written by encode_latent_space.py")
    if not isinstance(z, np.ndarray) or z.ndim != 2 or z.dtype.kind != "f" or z.shape[0] == 0:
        raise UserError(f"{path} is not a latent array: expected float (samples, size), found "
                        f"{getattr(z, 'dtype', type(z))} of shape {getattr(z, 'shape', '?')}")
    meta_path = path.with_suffix(".json")
    if not meta_path.exists():
        raise UserError(f"{meta_path} is missing: the latents need their labels; {hint}")
    meta = load_json(meta_path, "latents", hint)
    if meta.get("shape", list(z.shape)) != list(z.shape):
        raise UserError(f"{path} holds an array of shape {list(z.shape)} but {meta_path} describes {meta.get('shape')}: "
                        f"the two files do not belong together; {hint}")
    if meta.get("latent_size", z.shape[1]) != z.shape[1]:
        raise UserError(f"{path} has latents of size {z.shape[1]} but {meta_path} says latent_size "
                        f"{meta.get('latent_size')}; {hint}")
    labels = meta.get("labels")
    if not isinstance(labels, list) or len(labels) != z.shape[0] or not all(_is_int(v) for v in labels):
        raise UserError(f"{meta_path} has {len(labels) if isinstance(labels, list) else 'no'} integer labels "
                        f"for {z.shape[0]} latents; {hint}")
    if not np.isfinite(z).all():
        raise UserError(f"{path} holds non-finite values; re-encode with a healthy model")
    return z.astype(np.float32, copy=False), meta


def check_latents_match(latents: np.ndarray, meta: dict, ckpt: dict, latents_path, model_path) -> None:
    """Latents must come from the model: their width is its latent size, and their dataset (when
    the meta names one) is the model's."""
    size = ckpt["config"]["latent_size"]
    if latents.shape[1] != size:
        raise UserError(f"latents {latents_path} have size {latents.shape[1]} but model {model_path} has latent "
                        f"size {size}; encode with that model, or pass the matching --latent_space")
    ds = meta.get("dataset")
    ds = ds.get("name") if isinstance(ds, dict) else ds
    if ds is not None and ds != ckpt["dataset"].get("name"):
        raise UserError(f"latents {latents_path} are of dataset {ds!r} but model {model_path} was trained on "
                        f"{ckpt['dataset'].get('name')!r}; pass matching files")
