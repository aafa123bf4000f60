"""Files of output/: where each artifact lives, atomic writes (of one file, or of a group replaced
together), safe loads of this project's .pth and JSON files (kind and format version checked), and
content-keyed cache entries. What each kind must hold: artifacts.py, checkpoints.py, latent_files.py.

  model_latent_size_{N}.pth   kind "checkpoint": weights + config + dataset + history + resume state
  test_data.pth               kind "test_data": held-out images, labels, class names, split, models
  pca_baseline.pth            kind "pca_baseline": mean + components fit on the training split
  latent_space_size_{N}.npy   float32 (samples, N), with latent_space_size_{N}.json beside it (its SHA-256)
"""
from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import io
import json
import math
import os
import pickle
import re
import secrets
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from latentlab.cli import UserError

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


# ---------------------------------------------------------------- atomic writes
def atomic_write(path, write) -> Path:
    """Call write(file_object) and put what it wrote at path atomically: a crash at any moment
    leaves the old file or the new one, never a torn one (replace_together, for one file)."""
    return replace_together({path: write})[0]


def replace_together(writers: dict) -> list[Path]:
    """{path: write(file_object)}: write every file, then replace them together, so a failure
    leaves all the old files or all the new ones (a machine crash between two renames excepted,
    which the readers of a group detect: see latent_files.save_latents).

    Each writer runs into memory first (the artifact's size in RAM once more), so a failure of the
    disk (full, read-only, quota) happens in a plain write and becomes one line naming the file,
    never an error from inside a serialiser (torch.save's zip writer raises RuntimeError). The
    files get the mode the umask gives a new file, not mkstemp's 0600."""
    paths = [Path(p) for p in writers]
    blobs = []
    for path, write in zip(paths, writers.values()):
        buf = io.BytesIO()
        try:
            write(buf)
        except MemoryError:
            raise UserError(f"not enough memory to write {path}; free memory or use a machine with more")
        blobs.append(buf.getbuffer())
    temps, backups, done = [], {}, []
    try:
        for path, blob in zip(paths, blobs):
            temps.append(_write_temp(path, blob))
        if len(paths) > 1:  # hard links to the old files, to put them back if a later rename fails
            for path in filter(Path.exists, paths):
                backups[path] = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
                try:
                    os.link(path, backups[path])
                except OSError:  # a file system without hard links
                    shutil.copy2(path, backups[path])
        for path, tmp in zip(paths, temps):
            os.replace(tmp, path)
            done.append(path)
    except BaseException as e:
        for p in done:  # put the group back as it was
            with contextlib.suppress(OSError):
                if p in backups:
                    os.replace(backups.pop(p), p)
                else:
                    os.unlink(p)
        for p in [*temps, *backups.values()]:
            _remove(p)
        if not isinstance(e, OSError):
            raise
        raise UserError(f"cannot write {path}: {e.strerror or e} (disk full or not writable?); "
                        f"free space or choose another --output_dir")
    for p in backups.values():
        _remove(p)
    for folder in {p.parent for p in paths}:
        _fsync_folder(folder)
    return paths


def _write_temp(path: Path, blob) -> str:
    """blob in a new temp file beside path (fsynced, with the umask's mode); returns its name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
            with contextlib.suppress(OSError):  # a file system without modes keeps its own
                os.fchmod(f.fileno(), 0o666 & ~_umask())
    except BaseException:
        _remove(tmp)
        raise
    return tmp


def _umask() -> int:
    """The process's umask. os.umask can only set it: set 0o077 for the instant it is read, so a
    file another thread creates meanwhile is too private rather than too open."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    """Make the renames into folder durable, where the OS lets a folder be opened and synced."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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
