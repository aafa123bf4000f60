"""The named datasets, one entry of SOURCES each: its reader (local files first, as the MNIST
family's IDX files, else torchvision's download into data/<name>/), its class names, the files a
user places where there is no network, and torchvision's download. Adding a dataset is one entry.
"""
from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from latentlab.cli import UserError
from latentlab.data.decoding import decode_images
from latentlab.data.image_file import Reading

TEN_DIGITS = [str(i) for i in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
GTSRB_CLASSES = [
    "Speed limit 20", "Speed limit 30", "Speed limit 50", "Speed limit 60", "Speed limit 70",
    "Speed limit 80", "End of speed limit 80", "Speed limit 100", "Speed limit 120", "No passing",
    "No passing for trucks", "Right of way at next intersection", "Priority road", "Yield", "Stop",
    "No vehicles", "Trucks prohibited", "No entry", "General caution", "Dangerous curve left",
    "Dangerous curve right", "Double curve", "Bumpy road", "Slippery road", "Road narrows on the right",
    "Road work", "Traffic signals", "Pedestrians", "Children crossing", "Bicycles crossing",
    "Beware of ice/snow", "Wild animals crossing", "End of all limits", "Turn right ahead",
    "Turn left ahead", "Ahead only", "Go straight or right", "Go straight or left", "Keep right",
    "Keep left", "Roundabout mandatory", "End of no passing", "End of no passing for trucks",
]
# The MNIST-family files as published; torchvision stores them under <root>/<its class name>/raw/.
MNIST_IDX = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz")


# ---------------------------------------------------------------- IDX files (MNIST family)
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or .gz): magic (0, 0, dtype, ndim), big-endian dims, then data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise UserError(f"cannot read IDX file {path}: {e}")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise UserError(f"{path} is not an IDX file (bad magic number); re-download it")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    count = int(np.prod(dims)) if dims else 1
    body = raw[4 + 4 * ndim:]
    if len(body) != count * dtype.itemsize:
        raise UserError(f"{path} is truncated or corrupt: expected {count * dtype.itemsize} data bytes, "
                        f"found {len(body)}; re-download it")
    return np.frombuffer(body, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(source: "Source", dirs: list[Path]) -> list[Path] | None:
    for d in dirs:
        found = [next((d / (stem + s) for s in ("", ".gz") if (d / (stem + s)).is_file()), None)
                 for stem in source.stems]
        if all(found):
            return found
    return None


def _load_idx_dataset(source: "Source", dirs: list[Path]) -> tuple | None:
    paths = _find_idx(source, dirs)
    if paths is None:
        return None
    trx, tr_y, tex, te_y = (read_idx(p) for p in paths)
    if source.transposed:
        trx, tex = trx.transpose(0, 2, 1), tex.transpose(0, 2, 1)
    return (torch.from_numpy(np.ascontiguousarray(trx))[:, None], torch.from_numpy(tr_y.astype(np.int64)),
            torch.from_numpy(np.ascontiguousarray(tex))[:, None], torch.from_numpy(te_y.astype(np.int64)),
            f"official train/test split, read from {paths[0].parent}")


def split_indices(y: torch.Tensor, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A stratified split of the items with labels y: the same test_fraction of every class, chosen
    by a seeded permutation. Returns (training indices, test indices), each ascending."""
    g = torch.Generator().manual_seed(seed)
    test_idx = []
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        test_idx.append(idx[: max(1, round(len(idx) * test_fraction))] if len(idx) > 1 else idx[:0])
    test_idx = torch.cat(test_idx).sort().values
    mask = torch.ones(len(y), dtype=torch.bool)
    mask[test_idx] = False
    return torch.nonzero(mask).flatten(), test_idx


def _fetch(name: str, root: Path) -> tuple:
    """torchvision's training and test sets of a source, downloaded into root where absent."""
    import torchvision.datasets as tvd
    source = SOURCES[name]
    cls, train, test = source.torchvision
    try:
        return getattr(tvd, cls)(str(root), download=True, **train), getattr(tvd, cls)(str(root), download=True, **test)
    except Exception as e:  # no network: URLError, RuntimeError, ...
        why = str(e).splitlines()[0][:120] if str(e) else "no network"
        raise UserError(f"cannot download {name} ({type(e).__name__}: {why}); on a machine with a network run once to "
                        f"fill {root}/, or place {' '.join(source.files)} there (or in the folder named by --data_dir)")


# ---------------------------------------------------------------- the readers: (name, root, data_dir, image_size,
# quiet) -> (train x, train y, test x, test y, split, torchvision's training set or None)
def _digits(name, root, data_dir, image_size, quiet):
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.from_numpy(np.round(d.images * (255.0 / 16.0)).astype(np.uint8))[:, None]  # (1797, 1, 8, 8)
    y = torch.from_numpy(d.target.astype(np.int64))
    train_idx, test_idx = split_indices(y, 0.2, seed=0)
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx], "seeded stratified 80/20 split (split seed 0)", None


def _idx(name, root, data_dir, image_size, quiet):
    """IDX files: from data_dir, else from root (as published, or where torchvision stores them), else downloaded."""
    source = SOURCES[name]
    raw = root / source.torchvision[0] / "raw"
    found = _load_idx_dataset(source, ([Path(data_dir)] if data_dir else []) + [root, root / "raw", raw])
    if found is not None:
        return (*found, None)
    if data_dir:
        raise UserError(f"no {name} IDX files in {data_dir}: expected {', '.join(source.stems)} (plain or .gz)")
    tr, te = _fetch(name, root)
    found = _load_idx_dataset(source, [raw])
    if found is None:  # torchvision stored them elsewhere: take its tensors
        return tr.data[:, None], tr.targets.long(), te.data[:, None], te.targets.long(), "official train/test split", tr
    return (*found, tr)


def _torchvision(arrays):
    """A reader of a torchvision set: downloaded into data_dir (else root), each split's arrays(set,
    image_size, quiet) -> (uint8 images (N, C, H, W), labels)."""
    def read(name, root, data_dir, image_size, quiet):
        tr, te = _fetch(name, Path(data_dir) if data_dir else root)
        return (*arrays(tr, image_size, quiet), *arrays(te, image_size, quiet), "official train/test split", tr)
    return read


def _gtsrb_arrays(d, image_size, quiet):
    # GTSRB's images vary in size; 32x32 keeps the signs legible; squashed, as its published crops always were
    images = decode_images([p for p, _ in d._samples], image_size or 32, channels=3, quiet=quiet,
                           reading=Reading("squash"))
    return torch.from_numpy(images), torch.tensor([t for _, t in d._samples], dtype=torch.int64)


@dataclass(frozen=True)
class Source:
    """A dataset, all in one entry of SOURCES: its reader, class names and files, and torchvision's download."""
    read: Callable  # (name, root, data_dir, image_size, quiet) -> see the readers above
    classes: list | Callable  # the class names, or a callable of torchvision's training set (None: read locally)
    files: tuple = ()  # the files a user places in data/<name>/ (or --data_dir) where there is no network
    torchvision: tuple = ()  # (class in torchvision.datasets, its arguments for the training split, for the test split)
    transposed: bool = False  # IDX images stored transposed (EMNIST's)

    @property
    def stems(self) -> list[str]:
        """IDX files: their names, plain or .gz."""
        return [f.removesuffix(".gz") for f in self.files]


def _emnist_classes(_):
    from torchvision.datasets import EMNIST
    return list(EMNIST.classes_split_dict["balanced"])


_cifar = _torchvision(lambda d, size, quiet: (torch.from_numpy(d.data).permute(0, 3, 1, 2).contiguous(),
                                             torch.tensor(d.targets)))
_TRAIN_TEST = ({"train": True}, {"train": False})
_SPLITS = ({"split": "train"}, {"split": "test"})
SOURCES = {
    "digits": Source(_digits, TEN_DIGITS),
    "mnist": Source(_idx, TEN_DIGITS, MNIST_IDX, ("MNIST", *_TRAIN_TEST)),
    "fashion-mnist": Source(_idx, FASHION_CLASSES, MNIST_IDX, ("FashionMNIST", *_TRAIN_TEST)),
    "emnist": Source(_idx, _emnist_classes, ("emnist-balanced-train-images-idx3-ubyte.gz",
                                             "emnist-balanced-train-labels-idx1-ubyte.gz",
                                             "emnist-balanced-test-images-idx3-ubyte.gz",
                                             "emnist-balanced-test-labels-idx1-ubyte.gz"),
                     ("EMNIST", {"split": "balanced", "train": True}, {"split": "balanced", "train": False}),
                     transposed=True),
    "cifar10": Source(_cifar, lambda tv: list(tv.classes), ("cifar-10-python.tar.gz",), ("CIFAR10", *_TRAIN_TEST)),
    "cifar100": Source(_cifar, lambda tv: list(tv.classes), ("cifar-100-python.tar.gz",), ("CIFAR100", *_TRAIN_TEST)),
    "gtsrb": Source(_torchvision(_gtsrb_arrays), GTSRB_CLASSES, ("gtsrb/GTSRB-Training_fixed.zip",
                    "gtsrb/GTSRB_Final_Test_Images.zip", "gtsrb/GTSRB_Final_Test_GT.zip"), ("GTSRB", *_SPLITS)),
    "svhn": Source(_torchvision(lambda d, size, quiet: (torch.from_numpy(d.data), torch.from_numpy(d.labels.astype(np.int64)))),
                   TEN_DIGITS, ("train_32x32.mat", "test_32x32.mat"), ("SVHN", *_SPLITS)),
}
DATASETS = (*SOURCES, "folder:PATH")  # as help texts and errors name them
