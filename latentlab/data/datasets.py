"""Dataset name -> train and test tensors, with class names.

Every dataset becomes `ImageData`: uint8 tensors of shape (N, C, H, W) and int64 labels, held whole
in memory (an image folder larger than the memory budget: memory-mapped from its decoded cache, see
latentlab.data.image_folder), so the training loop takes batches as index slices and never decodes an
image per item.
The named datasets are latentlab.data.sources.SOURCES (one entry each); an image folder is folder:PATH.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from latentlab.cli import UserError, memory_available, memory_for
from latentlab.data.image_file import Unreadable
from latentlab.data.image_file import Reading, shown
from latentlab.data.image_folder import (default_memory_budget, folder_images, known_unreadable, list_folder, readable,
                                         record_unreadable)
from latentlab.data.sources import DATASETS, SOURCES, split_indices


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
    train_files: list = field(default_factory=list)  # a folder's images' paths relative to it, per split; else empty
    test_files: list = field(default_factory=list)

    @property
    def image_shape(self) -> tuple:
        return tuple(self.train_x.shape[1:])


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


# ---------------------------------------------------------------- helpers
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
    rel = [listing.stamps[i][0] for i in order]
    # a tensor per split, each over its own slice of the array: saving the test split (test_data.pth)
    # then writes its images alone, not the whole storage a view of one tensor would carry
    return (torch.from_numpy(x[:n]), torch.from_numpy(y[:n]), torch.from_numpy(x[n:]), torch.from_numpy(y[n:]),
            [shown(c) for c in listing.classes], "seeded stratified 80/20 split (split seed 0)", bad, rel[:n], rel[n:])


def load_dataset(name: str, data_dir: str | None = None, image_size: int | None = None,
                 data_root: str = "data", memory_budget: float | None = None,
                 quiet: bool = False, resize: str = "crop", background: str = "#ffffff",
                 skip_unreadable: bool = False) -> ImageData:
    """Load a dataset by name (a key of SOURCES, or folder:PATH) as whole uint8 tensors.

    image_size resizes every image to image_size x image_size (folders and GTSRB default to 32).
    An image folder is decoded once into a cache under data_dir (else data_root)/folder_cache/;
    one larger than memory_budget GB (None: latentlab.data.image_folder.default_memory_budget) stays
    memory-mapped there. quiet: no progress bar while images decode. resize, background: how a
    folder's images become square and opaque (latentlab.data.image_file.Reading; other datasets are
    resized as they always were). skip_unreadable: a folder's unreadable files are left out
    (listed in ImageData.skipped) instead of stopping the load.
    """
    skipped, files = [], ([], [])
    key = name.lower()
    if key.startswith("folder:"):
        budget = default_memory_budget() if memory_budget is None else int(memory_budget * 1e9)
        reading = Reading(resize, colour_or_error(background))
        trx, tr_y, tex, te_y, classes, split, skipped, *files = _folder(
            name.split(":", 1)[1], image_size, Path(data_dir or data_root) / "folder_cache", budget, quiet, reading,
            skip_unreadable)
        key = name
    elif key in SOURCES:
        source = SOURCES[key]
        trx, tr_y, tex, te_y, split, tv = source.read(key, Path(data_root) / key, data_dir, image_size, quiet)
        classes = source.classes(tv) if callable(source.classes) else source.classes
    else:
        raise UserError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if len(tex) == 0:
        raise UserError(f"dataset {name} leaves no images for the test split (every class has one image); "
                        f"add images")
    if image_size:
        trx, tex = resize_uint8(trx, image_size), resize_uint8(tex, image_size)
    return ImageData(key, trx.contiguous(), tr_y.long(), tex.contiguous(), te_y.long(), list(classes), split, skipped,
                     *files)


def colour_or_error(text: str) -> str:
    """--background as #rrggbb; a UserError for a colour Pillow does not know."""
    from latentlab.data.image_file import colour
    try:
        return colour(text)
    except ValueError:
        raise UserError(f"--background {text!r} is not a colour: give a name (white, black, gray...) or #rrggbb") from None
