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

import io
import json
import os
import pickle
import tempfile
import zipfile
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


def latents_path(output_dir, latent_size: int) -> Path:
    return Path(output_dir) / f"latent_space_size_{latent_size}.npy"


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


def save_torch(obj: dict, path) -> Path:
    return atomic_write(path, lambda f: torch.save(obj, f))


def save_json(obj, path) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, (np.ndarray, torch.Tensor)):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot store {type(o).__name__} in JSON")


def save_figure(fig, path, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG atomically, then close it."""
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


# ---------------------------------------------------------------- safe, validated loads
def load_torch(path, kind: str, hint: str = "") -> dict:
    """Load a .pth written by this project with weights_only=True and check its kind and version."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist{'; ' + hint if hint else ''}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UserError(f"{path} was refused: it holds Python objects other than tensors and plain values "
                        f"(weights_only load: {str(e).splitlines()[0][:100]}); only load files this project wrote")
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, UnicodeDecodeError, AttributeError) as e:
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


def _require(cond, path, what):
    if not cond:
        raise UserError(f"{path} is malformed: {what}; retrain to recreate it")


def load_checkpoint(path) -> dict:
    ckpt = load_torch(path, "checkpoint", hint="run train.py first, or pass --model_path")
    _require(isinstance(ckpt.get("config"), dict) and isinstance(ckpt.get("state_dict"), dict), path,
             "no config or weights")
    _require(isinstance(ckpt.get("dataset"), dict), path, "no dataset description")
    return ckpt


def model_from_checkpoint(ckpt: dict, device="cpu", weights: str = "best"):
    """Rebuild the model from the checkpoint alone (config + weights), in eval mode."""
    from model.autoencoder import build_model
    try:
        model = build_model(ckpt["config"])
        state = ckpt["state_dict"] if weights == "best" else ckpt["resume"]["state_dict"]
        model.load_state_dict(state)
    except (ValueError, RuntimeError, KeyError, TypeError) as e:
        raise UserError(f"the checkpoint's weights do not fit its config ({str(e).splitlines()[0][:120]}); retrain")
    return model.to(device).eval()


def load_test_data(path) -> dict:
    data = load_torch(path, "test_data", hint="run train.py first, or pass --test_data")
    x, y = data.get("images"), data.get("labels")
    _require(isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and x.dim() == 4, path,
             "images must be a uint8 (N, C, H, W) tensor")
    _require(isinstance(y, torch.Tensor) and y.shape == (x.shape[0],), path, "labels must match the images")
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


def save_latents(path, latents: np.ndarray, meta: dict) -> tuple[Path, Path]:
    """latents: float32 (samples, N). meta (JSON beside it) holds labels, test indices and the rest."""
    path = Path(path)
    latents = np.ascontiguousarray(latents, dtype=np.float32)
    meta_path = path.with_suffix(".json")
    save_json({"kind": "latents", "format_version": FORMAT_VERSION, "shape": list(latents.shape), **meta}, meta_path)
    atomic_write(path, lambda f: np.save(f, latents, allow_pickle=False))
    return path, meta_path


def load_latents(path) -> tuple[np.ndarray, dict]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; run encode_latent_space.py first, or pass --latent_space")
    try:
        z = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise UserError(f"{path} was refused: {str(e).splitlines()[0][:120]} (pickled objects are never loaded)")
    except (OSError, EOFError) as e:
        raise UserError(f"{path} is not a readable .npy file ({type(e).__name__}); re-run encode_latent_space.py")
    if not isinstance(z, np.ndarray):  # np.load opens any zip archive (a .pth, an .npz) as an NpzFile
        z.close()
        raise UserError(f"{path} is a zip archive (a .pth or .npz?), not a .npy latent array; "
                        f"pass a latent_space_size_{{N}}.npy written by encode_latent_space.py")
    if z.ndim != 2 or z.dtype.kind != "f":
        raise UserError(f"{path} is not a latent array: expected float (samples, size), found "
                        f"{getattr(z, 'dtype', type(z))} of shape {getattr(z, 'shape', '?')}")
    meta_path = path.with_suffix(".json")
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise UserError(f"{meta_path} is missing: the latents need their labels; re-run encode_latent_space.py")
    except (ValueError, OSError, UnicodeDecodeError) as e:
        raise UserError(f"{meta_path} is not valid JSON ({type(e).__name__}); re-run encode_latent_space.py")
    if not isinstance(meta, dict) or meta.get("kind") != "latents":
        raise UserError(f"{meta_path} does not describe latents; re-run encode_latent_space.py")
    labels = meta.get("labels")
    if not isinstance(labels, list) or len(labels) != z.shape[0]:
        raise UserError(f"{meta_path} has {len(labels) if isinstance(labels, list) else 'no'} labels "
                        f"for {z.shape[0]} latents; re-run encode_latent_space.py")
    if not np.isfinite(z).all():
        raise UserError(f"{path} holds non-finite values; re-encode with a healthy model")
    return z.astype(np.float32, copy=False), meta
