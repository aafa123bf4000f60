"""A folder of images (one sub-folder per class) -> uint8 (N, C, S, S), cached on disk as one
memory-mappable .npy. The cache holds the training images first and the test images after, so both
splits are slices of one memory map; its name carries a key of the file list, sizes, mtimes and S,
so a changed folder gets a new cache (decoding.py builds it)."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import NamedTuple

import numpy as np

from latentlab.cli import UserError
from latentlab.data.decoding import build_cache, decode_images
from latentlab.data.image_file import Reading, shown


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".tif", ".tiff", ".webp"}

CACHE_FORMAT = 2  # in the key: a change of the decoding gives new cache names


class Listing(NamedTuple):
    files: list  # image paths (str: a Path per file costs more than the rest of a cached load), class by class, each class's in sorted order (the order decides the split)
    labels: np.ndarray  # (N,) int64 class indices
    classes: list  # the sub-folders' names
    stamps: list  # [path relative to the folder, size, mtime in ns] of each file: the cache's key


def list_folder(root: Path) -> Listing:
    """The images of a folder with one sub-folder per class, found recursively in each; symlinked
    folders are not entered (as pathlib's rglob)."""
    if not root.is_dir():
        raise UserError(f"folder dataset {shown(root)} does not exist; give folder:PATH with one sub-folder per class")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files, labels, stamps = [], [], []
    for i, c in enumerate(classes):
        found = []
        for dirpath, _, names in os.walk(root / c):
            rel = tuple(Path(dirpath).relative_to(root).parts)
            found += [(rel + (n,), dirpath) for n in names if os.path.splitext(n)[1].lower() in IMAGE_SUFFIXES]
        for parts, dirpath in sorted(found):  # sorted as Paths sort: part by part
            path = os.path.join(dirpath, parts[-1])
            try:
                st = os.stat(path)
            except OSError:  # a broken link: not an image file
                continue
            if stat.S_ISREG(st.st_mode):
                files.append(path)
                labels.append(i)
                stamps.append(["/".join(parts), st.st_size, st.st_mtime_ns])
    if not files:
        raise UserError(f"folder dataset {shown(root)} has no images: expected one sub-folder per class "
                        f"holding {', '.join(sorted(IMAGE_SUFFIXES))} files")
    found = sorted({classes[i] for i in labels})
    if len(found) < 2:
        raise UserError(f"folder dataset {shown(root)} has images of one class only ({shown(found[0])}); the later "
                        f"steps compare classes: give at least two sub-folders, one per class")
    return Listing(files, np.asarray(labels, dtype=np.int64), classes, stamps)


def cache_path(listing: Listing, order: np.ndarray, size: int, cache_dir: Path, root: Path,
               reading: Reading = Reading()) -> Path:
    """Where the decoded images of a folder (taken in this order) at size x size, read this way, are
    cached: named by the folder, the size and the resize mode (each keeps its own cache) and a key
    of every file's path, size and mtime and the reading."""
    from latentlab.store.files import content_key
    key = content_key({"format": CACHE_FORMAT, "size": size, "files": listing.stamps, "reading": list(reading)},
                      order.astype(np.int64))
    return cache_dir / f"{_folder_id(root)}-{size}px-{reading.resize}-{key}.npy"


def _folder_id(root: Path) -> str:
    from latentlab.store.files import content_key
    return f"folder-{content_key({'root': str(root.resolve())})[:10]}"


def _unreadable_record(root: Path, listing: Listing, cache_dir: Path) -> Path:
    """Where the unreadable files of this very file list are recorded (whatever the size or reading)."""
    from latentlab.store.files import content_key
    key = content_key({"format": CACHE_FORMAT, "files": listing.stamps})
    return cache_dir / f"{_folder_id(root)}-unreadable-{key}.json"


def known_unreadable(root: Path, listing: Listing, cache_dir: Path) -> list | None:
    """[(path, why)] that a decode of this file list found unreadable; None when none recorded."""
    import json
    try:
        bad = json.loads(_unreadable_record(root, listing, cache_dir).read_text())
    except (OSError, ValueError):
        return None
    files = set(listing.files)
    if not isinstance(bad, list) or not all(isinstance(b, list) and len(b) == 2 and b[0] in files for b in bad):
        return None
    return [tuple(b) for b in bad]


def record_unreadable(root: Path, listing: Listing, cache_dir: Path, bad: list) -> None:
    """Keep the unreadable files found, so a later load (with --skip_unreadable, or to name them
    again) needs no decode to know them; older records of the folder are removed."""
    from latentlab.store.files import save_json
    path = _unreadable_record(root, listing, cache_dir)
    try:
        for old in cache_dir.glob(f"{_folder_id(root)}-unreadable-*.json"):
            old.unlink(missing_ok=True)
        save_json([list(b) for b in bad], path)
    except (OSError, UserError):  # a cache folder that cannot be written: found again next time
        pass


def readable(listing: Listing, bad: list) -> Listing:
    """The listing without the unreadable files."""
    gone = {p for p, _ in bad}
    keep = [i for i, p in enumerate(listing.files) if p not in gone]
    return Listing([listing.files[i] for i in keep], listing.labels[keep], listing.classes,
                   [listing.stamps[i] for i in keep])


def _valid(path: Path, n: int, size: int) -> bool:
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return False
    return a.dtype == np.uint8 and a.ndim == 4 and a.shape[0] == n and a.shape[1] in (1, 3) and a.shape[2:] == (size, size)


def folder_images(root: Path, listing: Listing, order: np.ndarray, size: int, cache_dir: Path,
                  memory_budget: int, quiet: bool = True, reading: Reading = Reading()) -> np.ndarray:
    """uint8 (N, C, size, size) images of the listing's files in this order, from the cache (built
    first when missing or stale): read into memory when they fit memory_budget bytes, else
    memory-mapped (copy-on-write, so the file is never changed). A cache folder that cannot be
    written: decoded into memory."""
    ordered = [listing.files[i] for i in order]
    try:
        final = cache_path(listing, order, size, cache_dir, root, reading)
        if not _valid(final, len(ordered), size):
            images = build_cache(ordered, size, final, quiet, reading=reading, memory_budget=memory_budget)
            if images is not None:
                return images
    except PermissionError as e:
        if not quiet:
            print(f"note: cannot write the decoded cache to {shown(cache_dir)} ({e.strerror}); decoding into "
                  f"memory (give --data_dir a writable folder to decode once)", flush=True)
        return decode_images(ordered, size, quiet=quiet, reading=reading)
    header = np.load(final, mmap_mode="r", allow_pickle=False)
    mode = None if header.nbytes <= memory_budget else "c"  # "c": a private map, so no step writes the cache
    return np.load(final, mmap_mode=mode, allow_pickle=False)


def default_memory_budget() -> int:
    """Bytes a decoded folder may take in memory by default: half of this machine's RAM, shared by
    the processes torchrun starts on it."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return ram // (2 * max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
