"""Files of output/: where each artifact lives, how each kind is saved (atomically: atomic.py), safe
loads of this project's .pth and JSON files (kind and format version checked), and content-keyed
cache entries. What each kind must hold: artifacts.py, checkpoints.py, latent_files.py.

  model_latent_size_{N}.pth   kind "checkpoint": weights + config + dataset + history + resume state
  test_data.pth               kind "test_data": held-out images, labels, class names, split, models
  pca_baseline.pth            kind "pca_baseline": mean + components fit on the training split
  latent_space_size_{N}.npy   float32 (samples, N), with latent_space_size_{N}.json beside it (its SHA-256)
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from latentlab.cli import UserError
from latentlab.store.atomic import atomic_write

FORMAT_VERSION = 2  # bump when a file's fields change: a reader refuses files of any other version
KINDS = ("checkpoint", "test_data", "pca_baseline", "feature_classifier")


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


def save_torch(obj: dict, path) -> Path:
    return atomic_write(path, lambda f: torch.save(obj, f))


def save_json(obj, path) -> Path:
    return save_text(json_text(obj), path)


def json_text(obj) -> str:
    """obj as strict JSON: a float that is not finite (a metric that cannot be computed) is null,
    as JSON has no NaN or Infinity; numpy and torch values as Python ones, paths as strings."""
    return json.dumps(_plain(obj), indent=2, allow_nan=False) + "\n"


def _plain(o):
    if isinstance(o, dict):
        return {k: _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    if isinstance(o, (np.ndarray, np.generic, torch.Tensor)):
        return _plain(o.tolist())
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    return str(o) if isinstance(o, Path) else o


def save_text(text: str, path) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def save_npy(array: np.ndarray, path) -> Path:
    return atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


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
    try:
        return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight"))
    finally:
        plt.close(fig)


# ---------------------------------------------------------------- safe, validated loads
def cannot_read(path, e: OSError) -> UserError:
    """A file that is there but cannot be read (another user's, without read permission): not a damaged one."""
    return UserError(f"cannot read {path}: {e.strerror or e}; make it readable (chmod a+r) or pass a copy you can read")


def load_torch(path, kind: str, hint: str = "", redo: str = "re-run train.py with --overwrite") -> dict:
    """Load a .pth written by this project with weights_only=True and check its kind and version
    (redo: the step that writes it again, for one of another version).

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
    except PermissionError as e:
        raise cannot_read(path, e)
    except Exception as e:  # RuntimeError (bad zip), EOFError, ValueError, IndexError, ...: unreadable input
        if "allocate" in str(e):
            raise UserError(f"not enough memory to load {path}; free memory or use a machine with more")
        raise UserError(f"{path} is not a readable PyTorch file ({type(e).__name__}); "
                        f"it may be truncated or of another kind")
    if not isinstance(obj, dict) or obj.get("kind") not in KINDS:
        raise UserError(f"{path} is not a latentlab artifact (expected a {kind} written by train.py)")
    if obj["kind"] != kind:
        raise UserError(f"{path} is a {obj['kind']}, not a {kind}{'; ' + hint if hint else ''}")
    return check_version(obj, path, redo)


def load_json(path, kind: str, hint: str, redo: str | None = None) -> dict:
    """A JSON object this project wrote, of this kind (its "kind" field) and format version; any
    other file, or one that does not parse, is refused with one line ending in hint (in redo, the
    step that writes it again, for one of another version)."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; {hint}")
    except OSError as e:
        raise cannot_read(path, e)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise UserError(f"{path} is not valid JSON ({type(e).__name__}); {hint}")
    if not isinstance(obj, dict) or obj.get("kind") != kind:
        raise UserError(f"{path} is not a {kind} file; {hint}")
    return check_version(obj, path, redo or hint)


def check_version(obj: dict, path, redo: str) -> dict:
    """obj, when it is of this version's format; else a UserError naming the file and redo (the
    step that writes it again): this version reads no file of another."""
    version = obj.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:  # a tensor here would not compare to one bool
        when = "an earlier" if type(version) is int and version < FORMAT_VERSION else "another"
        raise UserError(f"{path} was written by {when} version of latentlab (format "
                        f"{' '.join(str(version).split())[:40]}); {redo}")
    return obj
