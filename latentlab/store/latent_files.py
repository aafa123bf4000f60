"""Latents (latent_space_size_{N}.npy, _train.npy) and the JSON beside each: written together, and
checked against each other and against the test data they were encoded from when loaded."""
from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latentlab.cli import UserError
from latentlab.store import atomic, files
from latentlab.store.artifacts import is_int, is_names, is_run
from latentlab.store.files import FORMAT_VERSION, load_json
from model.autoencoder import FAMILIES, describe


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
    atomic.replace_together({path: lambda f: f.write(npy), meta_path: lambda f: f.write(files.json_text(meta).encode())})
    return path, meta_path


def _load_array(path) -> np.ndarray:
    """allow_pickle=False: an object array (pickled Python objects) is refused, never unpickled."""
    hint = "re-run encode_latent_space.py"
    if path.is_dir():
        raise UserError(f"{path} is a folder; pass a latent_space_size_{{N}}.npy written by encode_latent_space.py")
    if not path.is_file():
        raise UserError(f"{path} does not exist; run encode_latent_space.py first, or pass --latent_space")
    try:
        z = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):
            # np.load reads anything without NumPy's magic as a pickle, so a file of other bytes lands here too
            with open(path, "rb") as f:
                npy = f.read(6) == b"\x93NUMPY"
            raise UserError(f"{path} was refused: it holds pickled Python objects, which are never loaded; {hint}" if npy
                            else f"{path} is not a .npy file (no NumPy header); {hint}")
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
    if not is_names(names) or not isinstance(meta.get("dataset"), str) or str(meta.get("family")) not in FAMILIES \
            or meta.get("split") not in files.SPLITS or not is_run(meta.get("run")):
        raise UserError(f"{meta_path} has no class names, dataset, family, split or run id; {again}")
    if not isinstance(labels, list) or len(labels) != len(z) or not all(is_int(v) for v in labels):
        raise UserError(f"{meta_path} has {len(labels) if isinstance(labels, list) else 'no'} integer labels "
                        f"for {len(z)} latents; {again}")
    if not isinstance(indices, list) or len(indices) != len(z) or not all(is_int(v) for v in indices):
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
