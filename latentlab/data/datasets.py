"""Dataset name -> train and test tensors, with class names.

Every dataset becomes `ImageData`: uint8 tensors of shape (N, C, H, W) and int64 labels, held whole
in memory (an image folder larger than the memory budget: memory-mapped from its decoded cache, see
latentlab.data.image_folder), so the training loop takes batches as index slices and never decodes an
image per item.
Local files come first (IDX files for the MNIST family); otherwise torchvision downloads into
data/<name>/. With neither, a UserError says which files to place where.
"""
from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from latentlab.cli import UserError, memory_available, memory_for
from latentlab.data.image_folder import (Reading, Unreadable, decode_images, default_memory_budget, folder_images,
                                    known_unreadable, list_folder, readable, record_unreadable, shown)

DATASETS = ("digits", "mnist", "fashion-mnist", "emnist", "cifar10", "cifar100", "gtsrb", "svhn", "folder:PATH")
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
# The MNIST-family file names, as published and as torchvision stores them under <root>/<Name>/raw/.
IDX_FILES = {
    "mnist": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    "fashion-mnist": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    "emnist": ("emnist-balanced-train-images-idx3-ubyte", "emnist-balanced-train-labels-idx1-ubyte",
               "emnist-balanced-test-images-idx3-ubyte", "emnist-balanced-test-labels-idx1-ubyte"),
}
TORCHVISION_DIR = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "emnist": "EMNIST"}


@dataclass
class ImageData:
    name: str
    train_x: torch.Tensor  # uint8 (N, C, H, W)
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    class_names: list = field(default_factory=list)
    split: str = ""  # how the test split was made
    skipped: list = field(default_factory=list)  # (path, why) of the unreadable files left out (--skip_unreadable)

    @property
    def image_shape(self) -> tuple:
        return tuple(self.train_x.shape[1:])


# ---------------------------------------------------------------- IDX files (MNIST family)
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def to_float(x_u8: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1] (the model's input normalisation)."""
    return x_u8.float().div_(255.0)


def take(x_u8: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x_u8[idx], read in ascending index order and returned in idx's order: on a memory-mapped
    dataset the reads then run forwards through the file, and the batch is the same either way."""
    if x_u8.device.type != "cpu" or len(idx) < 2:
        return x_u8[idx]
    ascending, order = idx.sort()
    out = torch.empty((len(idx), *x_u8.shape[1:]), dtype=x_u8.dtype)
    out[order] = x_u8[ascending]
    return out


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


def _find_idx(name: str, dirs: list[Path]) -> list[Path] | None:
    for d in dirs:
        found = []
        for stem in IDX_FILES[name]:
            hit = next((d / (stem + s) for s in ("", ".gz") if (d / (stem + s)).is_file()), None)
            found.append(hit)
        if all(found):
            return found
    return None


def _load_idx_dataset(name: str, dirs: list[Path]) -> tuple | None:
    paths = _find_idx(name, dirs)
    if paths is None:
        return None
    trx, tr_y, tex, te_y = (read_idx(p) for p in paths)
    if name == "emnist":  # the raw EMNIST images are stored transposed
        trx, tex = trx.transpose(0, 2, 1), tex.transpose(0, 2, 1)
    return (torch.from_numpy(np.ascontiguousarray(trx))[:, None], torch.from_numpy(tr_y.astype(np.int64)),
            torch.from_numpy(np.ascontiguousarray(tex))[:, None], torch.from_numpy(te_y.astype(np.int64)),
            f"official train/test split, read from {paths[0].parent}")


# ---------------------------------------------------------------- helpers
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


def _seeded_split(x: torch.Tensor, y: torch.Tensor, test_fraction: float, seed: int):
    train_idx, test_idx = split_indices(y, test_fraction, seed)
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]


def resize_uint8(x: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Resize (N, C, H, W) uint8 images to size x size with antialiased bilinear filtering."""
    if x.shape[-2:] == (size, size):
        return x
    n, c = len(x), x.shape[1]
    per_pixel = c * (2 * n + 4 * min(chunk, n))  # bytes: the uint8 parts and their concatenation, one float chunk
    fits = int((memory_available() / per_pixel) ** 0.5)
    with memory_for(f"{n} images of {c}x{size}x{size}", f"--image_size (at most {fits} fits)",
                    per_pixel * size * size):
        out = []
        for part in x.split(chunk):
            y = F.interpolate(part.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            out.append(y.round_().clamp_(0, 255).to(torch.uint8))
        return torch.cat(out)


def _no_network(name: str, root: Path, files: str, err: Exception) -> UserError:
    return UserError(f"cannot download {name} ({type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else 'no network'}); "
                     f"on a machine with a network run once to fill {root}/, or place {files} there "
                     f"(or in the folder named by --data_dir)")


# ---------------------------------------------------------------- the loaders
def _digits(data_dir, seed):
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.from_numpy(np.round(d.images * (255.0 / 16.0)).astype(np.uint8))[:, None]  # (1797, 1, 8, 8)
    y = torch.from_numpy(d.target.astype(np.int64))
    trx, tr_y, tex, te_y = _seeded_split(x, y, 0.2, seed=0)
    return trx, tr_y, tex, te_y, [str(i) for i in range(10)], "seeded stratified 80/20 split (split seed 0)"


def _idx_family(name, data_dir, root):
    dirs = [Path(data_dir)] if data_dir else []
    dirs += [root, root / "raw", root / TORCHVISION_DIR[name] / "raw"]
    found = _load_idx_dataset(name, dirs)
    if found is not None:
        return found
    if data_dir:
        raise UserError(f"no {name} IDX files in {data_dir}: expected {', '.join(IDX_FILES[name])} (plain or .gz)")
    import torchvision.datasets as tvd
    cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST}.get(name)
    try:
        if name == "emnist":
            tr = tvd.EMNIST(str(root), split="balanced", train=True, download=True)
            te = tvd.EMNIST(str(root), split="balanced", train=False, download=True)
        else:
            tr, te = cls(str(root), train=True, download=True), cls(str(root), train=False, download=True)
    except Exception as e:  # no network: URLError, RuntimeError, ...
        raise _no_network(name, root, " ".join(f + ".gz" for f in IDX_FILES[name]), e)
    found = _load_idx_dataset(name, [root / TORCHVISION_DIR[name] / "raw"])
    if found is None:  # torchvision stored them elsewhere: take its tensors
        return (tr.data[:, None], tr.targets.long(), te.data[:, None], te.targets.long(), "official train/test split")
    return found


def _class_names(name):
    if name == "fashion-mnist":
        return FASHION_CLASSES
    if name == "emnist":
        from torchvision.datasets import EMNIST
        return list(EMNIST.classes_split_dict["balanced"])
    return [str(i) for i in range(10)]


def _torchvision(name, root, image_size, quiet):
    import torchvision.datasets as tvd
    try:
        if name in ("cifar10", "cifar100"):
            cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
            tr, te = cls(str(root), train=True, download=True), cls(str(root), train=False, download=True)
            conv = lambda d: (torch.from_numpy(d.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(d.targets))
            (trx, tr_y), (tex, te_y) = conv(tr), conv(te)
            return trx, tr_y, tex, te_y, list(tr.classes), "official train/test split"
        if name == "svhn":
            tr, te = tvd.SVHN(str(root), split="train", download=True), tvd.SVHN(str(root), split="test", download=True)
            conv = lambda d: (torch.from_numpy(d.data), torch.from_numpy(d.labels.astype(np.int64)))
            (trx, tr_y), (tex, te_y) = conv(tr), conv(te)
            return trx, tr_y, tex, te_y, [str(i) for i in range(10)], "official train/test split"
        if name == "gtsrb":
            tr, te = tvd.GTSRB(str(root), split="train", download=True), tvd.GTSRB(str(root), split="test", download=True)
    except Exception as e:
        files = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz",
                 "svhn": "train_32x32.mat test_32x32.mat",
                 "gtsrb": "gtsrb/GTSRB-Training_fixed.zip gtsrb/GTSRB_Final_Test_Images.zip gtsrb/GTSRB_Final_Test_GT.zip"}[name]
        raise _no_network(name, root, files, e)
    size = image_size or 32  # GTSRB's images vary in size; 32x32 keeps the traffic signs legible

    def conv(d):
        samples = d._samples
        # squashed, as GTSRB's published crops of signs always were
        images = decode_images([p for p, _ in samples], size, channels=3, quiet=quiet, reading=Reading("squash"))
        return torch.from_numpy(images), torch.tensor([t for _, t in samples], dtype=torch.int64)
    (trx, tr_y), (tex, te_y) = conv(tr), conv(te)
    return trx, tr_y, tex, te_y, GTSRB_CLASSES, "official train/test split"


def _folder(path, image_size, cache_dir: Path, memory_budget: int, quiet: bool, reading: Reading,
            skip_unreadable: bool):
    """An image folder's seeded stratified split, decided on the file list (less the unreadable
    files, with skip_unreadable) before any image is decoded; both splits are slices of one array
    (the training images first), with no copy. Unreadable files are named all at once; their list
    is kept beside the cache, so a later load knows them without a decode."""
    root = Path(path)
    full = list_folder(root)
    bad = known_unreadable(root, full, cache_dir) or []
    if bad and not skip_unreadable:
        raise Unreadable(bad, skippable=True)
    while True:
        listing = readable(full, bad)
        if len(listing.files) == 0:
            raise UserError(f"folder dataset {shown(root)} has no readable images (all {len(bad)} cannot be read, "
                            f"as {shown(bad[0][0])}: {bad[0][1]}); replace them")
        train_idx, test_idx = split_indices(torch.from_numpy(listing.labels), 0.2, seed=0)
        order = torch.cat([train_idx, test_idx]).numpy()
        try:
            x = folder_images(root, listing, order, image_size or 32, cache_dir, memory_budget, quiet, reading)
            break
        except Unreadable as e:
            bad = sorted(bad + e.bad)
            record_unreadable(root, full, cache_dir, bad)
            if not skip_unreadable:
                raise Unreadable(bad, skippable=True) from None
    n = len(train_idx)
    y = listing.labels[order]
    # a tensor per split, each over its own slice of the array: saving the test split (test_data.pth)
    # then writes its images alone, not the whole storage a view of one tensor would carry
    return (torch.from_numpy(x[:n]), torch.from_numpy(y[:n]), torch.from_numpy(x[n:]), torch.from_numpy(y[n:]),
            [shown(c) for c in listing.classes], "seeded stratified 80/20 split (split seed 0)", bad)


def load_dataset(name: str, data_dir: str | None = None, image_size: int | None = None,
                 data_root: str = "data", seed: int = 0, memory_budget: float | None = None,
                 quiet: bool = False, resize: str = "crop", background: str = "#ffffff",
                 skip_unreadable: bool = False) -> ImageData:
    """Load a dataset by name (see DATASETS) as whole uint8 tensors.

    image_size resizes every image to image_size x image_size (folders and GTSRB default to 32).
    An image folder is decoded once into a cache under data_dir (else data_root)/folder_cache/;
    one larger than memory_budget GB (None: latentlab.data.image_folder.default_memory_budget) stays
    memory-mapped there. quiet: no progress bar while images decode. resize, background: how a
    folder's images become square and opaque (latentlab.data.image_folder.Reading; other datasets are
    resized as they always were). skip_unreadable: a folder's unreadable files are left out
    (listed in ImageData.skipped) instead of stopping the load.
    """
    skipped = []
    key = name.lower()
    if key.startswith("folder:"):
        budget = default_memory_budget() if memory_budget is None else int(memory_budget * 1e9)
        reading = Reading(resize, colour_or_error(background))
        trx, tr_y, tex, te_y, classes, split, skipped = _folder(
            name.split(":", 1)[1], image_size, Path(data_dir or data_root) / "folder_cache", budget, quiet, reading,
            skip_unreadable)
        key = name
    elif key == "digits":
        trx, tr_y, tex, te_y, classes, split = _digits(data_dir, seed)
    elif key in IDX_FILES:
        root = Path(data_root) / key
        trx, tr_y, tex, te_y, split = _idx_family(key, data_dir, root)
        classes = _class_names(key)
    elif key in ("cifar10", "cifar100", "svhn", "gtsrb"):
        root = Path(data_dir) if data_dir else Path(data_root) / key
        trx, tr_y, tex, te_y, classes, split = _torchvision(key, root, image_size, quiet)
    else:
        raise UserError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if len(tex) == 0:
        raise UserError(f"dataset {name} leaves no images for the test split (every class has one image); "
                        f"add images")
    if image_size:
        trx, tex = resize_uint8(trx, image_size), resize_uint8(tex, image_size)
    return ImageData(key, trx.contiguous(), tr_y.long(), tex.contiguous(), te_y.long(), list(classes), split, skipped)


def colour_or_error(text: str) -> str:
    """--background as #rrggbb; a UserError for a colour Pillow does not know."""
    from latentlab.data.image_folder import colour
    try:
        return colour(text)
    except ValueError:
        raise UserError(f"--background {text!r} is not a colour: give a name (white, black, gray...) or #rrggbb") from None
