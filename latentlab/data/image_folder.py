"""Image files -> uint8 arrays (N, C, S, S), decoded once, small, on every core; and a folder of
them (one sub-folder per class) cached on disk as one memory-mappable .npy.

Each image is shrunk as it is read (a JPEG decodes at 1/2, 1/4 or 1/8 scale through Pillow's
draft mode), turned upright by its EXIF orientation, scaled to 8 bits by its own range when it
has more (16-bit, 32-bit int and float images), composited on a background colour where it
is transparent, then made S x S (RESIZE_MODES: centre-cropped, letterboxed or squashed); nothing is
kept at full size. The cache holds the training images first and the test images after, so both splits are
slices of one memory map; its name carries a key of the file list, sizes, mtimes and S, so a
changed folder gets a new cache, and it appears under its name only once complete (a temp file,
fsync, os.replace), so a killed build is never taken for a whole one.
"""
from __future__ import annotations

import errno
import mmap
import multiprocessing
import os
import socket
import stat
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np

from latentlab.cli import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".tif", ".tiff", ".webp"}
# modes that hold one grey value per pixel: a folder of only these becomes 1-channel images
GRAY_MODES = {"1", "L", "LA", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}
CHUNK = 64  # images per task of the process pool
CACHE_FORMAT = 2  # in the key: a change of the decoding gives new cache names
SHOWN_BAD_FILES = 3  # unreadable files named in the one error line
# how a non-square image becomes square: crop, the centre square (a circle stays round); pad, the
# whole image letterboxed onto the background colour; squash, stretched (the benchmark sets' way)
RESIZE_MODES = ("crop", "pad", "squash")


class Reading(NamedTuple):
    """How the files of a folder become images: in the cache's key."""
    resize: str = "crop"
    background: str = "#ffffff"  # under transparent pixels, and around a padded image


def colour(text: str) -> str:
    """A colour Pillow's ImageColor knows (a name, #rrggbb, rgb(...)) as #rrggbb; ValueError else."""
    from PIL import ImageColor
    r, g, b = ImageColor.getrgb(text)[:3]
    return f"#{r:02x}{g:02x}{b:02x}"


def shown(path) -> str:
    """A path as an error line or a figure shows it: newlines, other control characters and bytes
    that are not valid in the file system's encoding appear escaped, never raw."""
    text = str(path)
    return text if text.isprintable() else repr(text)[1:-1]


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


# ---------------------------------------------------------------- one image
def to_8bit(img):
    """16-bit, 32-bit int and float images -> mode L, scaled by their own range (min -> 0, max -> 255;
    non-finite values to the nearest end); other modes are returned as they are."""
    from PIL import Image
    if img.mode not in ("I", "F") and not img.mode.startswith("I;16"):
        return img
    a = np.asarray(img, dtype=np.float64)
    finite = a[np.isfinite(a)]
    lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
    a = np.nan_to_num(a, nan=lo, posinf=hi, neginf=lo)
    scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return Image.fromarray(np.round(scaled).astype(np.uint8), "L")


def grey(colour: str) -> bool:
    """Whether a colour is a shade of grey: an image composited or padded on it can stay grey."""
    from PIL import ImageColor
    r, g, b = ImageColor.getrgb(colour)[:3]
    return r == g == b


def _squared(img, size: int, resize: str, background: str):
    """A PIL image made size x size as RESIZE_MODES says."""
    from PIL import Image, ImageColor, ImageOps
    if img.size == (size, size):
        return img
    if resize == "crop":
        return ImageOps.fit(img, (size, size), Image.BILINEAR)
    if resize == "pad":
        return ImageOps.pad(img, (size, size), Image.BILINEAR, color=ImageColor.getcolor(background, img.mode))
    return img.resize((size, size), Image.BILINEAR)


def _opaque(img, background: str):
    """An image with transparency (an alpha band, or a palette or colour key marked transparent)
    composited onto the background colour; others as they are."""
    from PIL import Image
    if img.mode not in ("RGBA", "LA", "PA", "La", "RGBa") and "transparency" not in img.info:
        return img
    rgba = img.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, background), rgba).convert("RGB")


def _fitted(x: np.ndarray, size: int, reading: Reading) -> tuple[np.ndarray, bool] | None:
    """A small JPEG as torchvision decoded it, uint8 (c, h, w) -> (uint8 (3, size, size), grey) as
    Pillow's path makes it; None where Pillow's path would give other pixels."""
    c, h, w = x.shape
    if c not in (1, 3) or min(h // size, w // size) >= 2:  # Pillow's draft would shrink it: keep its pixels
        return None
    if c == 1 and not grey(reading.background) and reading.resize == "pad" and (h, w) != (size, size):
        return None  # a grey photo padded with a colour: Pillow's path makes it a colour image
    if (h, w) != (size, size):
        from PIL import Image
        img = _squared(Image.fromarray(x[0] if c == 1 else x.transpose(1, 2, 0)), size, *reading)
        x = np.asarray(img).reshape(size, size, c).transpose(2, 0, 1)
    return np.broadcast_to(x, (3, size, size)), c == 1 and grey(reading.background)


def _small_jpegs(paths: list, size: int, reading: Reading) -> list:
    """The JPEGs of at most about size x size pixels among paths, through torchvision's decoder
    (libjpeg-turbo, as Pillow's, the same pixels; without Pillow's per-file parsing, several times
    faster on small images), in one call for all, EXIF-rotated. For each path (uint8 (3, size, size),
    grey), or None (another format, a larger image, CMYK, damaged): Pillow's path takes it."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg
    limit = 3 * size * size  # bytes: a larger file holds a larger image, which Pillow's draft shrinks
    found, encoded = [], []
    for i, p in enumerate(paths):
        if os.path.splitext(str(p))[1].lower() not in (".jpg", ".jpeg"):
            continue
        try:
            with open(p, "rb") as f:
                data = f.read(limit + 1)
        except OSError:  # Pillow's path names the error
            continue
        if 0 < len(data) <= limit:
            found.append(i)
            encoded.append(torch.frombuffer(bytearray(data), dtype=torch.uint8))

    def decode(data):
        try:
            return decode_jpeg(data, mode=ImageReadMode.UNCHANGED, apply_exif_orientation=True)
        except RuntimeError:
            return None
    decoded = decode(encoded) if encoded else []
    if decoded is None:  # one damaged file fails the whole list: each on its own
        decoded = [decode(data) for data in encoded]
    out = [None] * len(paths)
    for i, x in zip(found, decoded):
        out[i] = None if x is None else _fitted(x.numpy(), size, reading)
    return out


def decode_image(path, size: int, reading: Reading = Reading(), small: bool = True) -> tuple[np.ndarray, bool]:
    """One image file -> (uint8 (3, size, size), whether it holds grey values alone (GRAY_MODES;
    composited on a grey background): then its three channels are equal), shrunk while it is decoded.
    small=False: not a small JPEG that torchvision's decoder takes (_small_jpegs)."""
    from PIL import Image, ImageOps
    found = _small_jpegs([path], size, reading)[0] if small else None
    if found is not None:
        return found
    with Image.open(path) as img:
        gray = img.mode in GRAY_MODES and grey(reading.background)
        # JPEG only: decode at a reduced scale, each side still at least size (covers the centre crop)
        img.draft("L" if gray else "RGB", (size, size))
        if img.getexif().get(0x0112, 1) != 1:  # Orientation: phone photos are stored on their side
            img = ImageOps.exif_transpose(img)
        img = _squared(_opaque(to_8bit(img), reading.background).convert("L" if gray else "RGB"), size, *reading)
    a = np.asarray(img)
    return (np.broadcast_to(a, (3, size, size)) if gray else a.transpose(2, 0, 1)), gray


def _reason(e: Exception) -> str:
    from PIL import UnidentifiedImageError
    if isinstance(e, UnidentifiedImageError):  # its message repeats the path, which the error line names
        return "not an image file Pillow can identify"
    return str(e).splitlines()[0][:120] if str(e) else type(e).__name__


def _open_errors():
    from PIL import Image, UnidentifiedImageError
    return (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)


class Into(NamedTuple):
    """Where decoded chunks go instead of back to the caller: image i at byte offset + i * C*S*S of
    a file (the temp file of a cache), its first `channels` channels; with memory, also into
    _building[i], the images in shared memory that a forked worker inherits."""
    path: str
    offset: int
    channels: int
    memory: bool = False


_building = None  # uint8 (N, C, S, S) in shared memory while a build fills it; never pickled


def _start_method() -> str | None:
    """fork where there is one: the workers inherit torch, torchvision and _building."""
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else None


def _decode_chunk(start: int, paths: list, size: int, reading: Reading, into: Into | None = None):
    """The images paths[0..n), which are images start..start+n of the whole list: (uint8 (n, 3, size,
    size), or None when written into a file, which are grey (n,) bool, [(position in paths, why it
    cannot be read)]). Written by the worker itself, the pixels never cross between processes."""
    arr = np.zeros((len(paths), 3, size, size), dtype=np.uint8)
    gray = np.ones(len(paths), dtype=bool)
    bad = []
    errors = _open_errors()
    for i, (p, small) in enumerate(zip(paths, _small_jpegs(paths, size, reading))):
        try:
            arr[i], gray[i] = small if small is not None else decode_image(p, size, reading, small=False)
        except errors as e:
            bad.append((i, _reason(e)))
    if into is None:
        return arr, gray, bad
    rows = np.ascontiguousarray(arr[:, :into.channels])
    if into.memory:
        _building[start:start + len(rows)] = rows
    with open(into.path, "r+b") as f:
        f.seek(into.offset + start * into.channels * size * size)
        f.write(rows)
    return None, gray, bad


# ---------------------------------------------------------------- many images, on every core
def _workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _chunked_map(fn, items: list, *args, quiet: bool = True, what: str = ""):
    """fn(start, items[start:start + CHUNK], *args) for each chunk, in order, on a process pool (in
    this process for a few items); a progress bar (images/s, ETA) on a terminal unless quiet."""
    from tqdm import tqdm

    from latentlab.cli import show_progress
    starts = range(0, len(items), CHUNK)
    chunks = [items[s:s + CHUNK] for s in starts]
    workers = min(_workers(), len(chunks))
    with tqdm(total=len(items), unit="img", desc=what, disable=not show_progress(quiet),
              leave=False, dynamic_ncols=True) as bar:
        if workers <= 1 or multiprocessing.current_process().daemon:  # a daemon may not start processes
            results = (fn(s, c, *args) for s, c in zip(starts, chunks))
            for c, r in zip(chunks, results):
                bar.update(len(c))
                yield r
            return
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(_start_method()))
        try:
            for c, r in zip(chunks, pool.map(fn, starts, chunks, *[[a] * len(chunks) for a in args])):
                bar.update(len(c))
                yield r
        finally:  # a stopped build waits for the chunks being decoded, not for the rest
            pool.shutdown(cancel_futures=True)


def unreadable_files(bad: list) -> str:
    """[(path, why)] as an error line or a summary names them: every one up to SHOWN_BAD_FILES, then a count."""
    names = "; ".join(f"{shown(p)} ({why})" for p, why in bad[:SHOWN_BAD_FILES])
    return names + (f" and {len(bad) - SHOWN_BAD_FILES} more" if len(bad) > SHOWN_BAD_FILES else "")


class Unreadable(UserError):
    """Files that cannot be decoded, every one of them: bad holds (path, why), sorted."""

    def __init__(self, bad: list, skippable: bool = False):
        self.bad = bad = sorted(bad)
        rest = ", or pass --skip_unreadable to train on the rest" if skippable else ""
        if len(bad) == 1:
            super().__init__(f"cannot read image {shown(bad[0][0])}: {bad[0][1]}; remove or replace the file{rest}")
        else:
            super().__init__(f"cannot read {len(bad)} images: {unreadable_files(bad)}; remove or replace them{rest}")


def decoded_chunks(paths: list, size: int, quiet: bool = True, reading: Reading = Reading(),
                   into: Into | None = None):
    """Yield (start, uint8 (n, 3, size, size) or None when written into a file, which are grey (n,)
    bool) for consecutive chunks of paths, decoded on every core; after the last, every unreadable
    file is named at once (Unreadable)."""
    if any(os.path.splitext(str(p))[1].lower() in (".jpg", ".jpeg") for p in paths):
        import torchvision.io  # noqa: F401  here, before the workers fork: imported once, not once a worker
    bad = []
    for start, (arr, gray, errors) in zip(range(0, len(paths), CHUNK),
                                          _chunked_map(_decode_chunk, paths, size, reading, into, quiet=quiet,
                                                       what="decoding images")):
        bad += [(paths[start + i], why) for i, why in errors]
        yield start, arr, gray
    if bad:
        raise Unreadable(bad)


def decode_images(paths: list, size: int, channels: int | None = None, quiet: bool = True,
                  reading: Reading = Reading()) -> np.ndarray:
    """Every file decoded into one uint8 array (N, C, size, size); C: channels, or when None, 1 if
    every image holds grey values alone, else 3."""
    out, all_gray = np.empty((len(paths), 3, size, size), dtype=np.uint8), True
    for start, arr, gray in decoded_chunks(paths, size, quiet, reading):
        out[start:start + len(arr)] = arr
        all_gray &= bool(gray.all())
    return out[:, :1].copy() if channels == 1 or (channels is None and all_gray) else out


# ---------------------------------------------------------------- the cache of a folder
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


# ---------------------------------------------------------------- unreadable files
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


def _remove_dead_temps(final: Path) -> None:
    """Temp files of this cache that a killed build on this machine left behind."""
    host = socket.gethostname()
    for tmp in final.parent.glob(f".{final.name}.{host}.*.tmp"):
        pid = tmp.name[len(f".{final.name}.{host}."):-len(".tmp")]
        try:
            os.kill(int(pid), 0)
        except (ValueError, ProcessLookupError):
            tmp.unlink(missing_ok=True)
        except PermissionError:  # alive, another user's
            pass


class _OtherChannels(Exception):
    """The images hold grey values alone, or not, unlike the header modes of the first chunk said:
    the build starts again with this many channels."""

    def __init__(self, channels: int):
        self.channels = channels


def _grey_modes(paths: list, reading: Reading) -> bool:
    """Whether the images of paths (those Pillow can open) hold grey values alone, as decode_image
    decides it, by their modes: Pillow reads only the headers."""
    from PIL import Image
    modes = []
    for p in paths:
        try:
            with Image.open(p) as img:
                modes.append(img.mode)
        except _open_errors():  # named when the build decodes it
            pass
    return grey(reading.background) and all(m in GRAY_MODES for m in modes)


def build_cache(files: list[Path], size: int, final: Path, quiet: bool = True, channels: int | None = None,
                reading: Reading = Reading(), memory_budget: int = 0) -> np.ndarray | None:
    """Decode files into final (.npy of uint8 (N, C, size, size); C: 1 if every image holds grey
    values alone, else 3) through a temp file that only a complete build renames, and that each
    worker writes the chunks it decodes into; older caches of the same folder, size and resize mode
    are removed after it. Returns the images in memory when they fit memory_budget bytes (forked
    workers write them into shared memory too; others' are read back as each chunk arrives), else None."""
    global _building
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_temps(final)
    tmp = final.parent / f".{final.name}.{socket.gethostname()}.{os.getpid()}.tmp"
    channels = channels or (1 if _grey_modes(files[:CHUNK], reading) else 3)  # a later image may restart it
    shape = (len(files), channels, size, size)
    image_bytes = channels * size * size
    images, shared = None, False
    if len(files) * image_bytes <= memory_budget:
        shared = _start_method() == "fork"
        images = np.frombuffer(mmap.mmap(-1, len(files) * image_bytes), np.uint8).reshape(shape) if shared \
            else np.empty(shape, dtype=np.uint8)
    chunks, all_grey = iter(()), True
    try:
        _building = images if shared else None
        np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape).flush()  # the .npy header
        offset = os.path.getsize(tmp) - len(files) * image_bytes
        with open(tmp, "r+b") as f:
            try:  # claim the blocks now: a full disk stops the build here, not with a torn file
                os.posix_fallocate(f.fileno(), 0, os.path.getsize(tmp))
            except (AttributeError, OSError) as e:  # no fallocate here (macOS, some network file systems)
                if getattr(e, "errno", None) == errno.ENOSPC:
                    raise
            chunks = decoded_chunks(files, size, quiet, reading, Into(str(tmp), offset, channels, shared))
            for start, _, gray in chunks:
                if channels == 1 and not gray.all():
                    raise _OtherChannels(3)
                all_grey &= bool(gray.all())
                if images is not None and not shared:  # the chunk is in the page cache now
                    f.seek(offset + start * image_bytes)
                    f.readinto(memoryview(images[start:start + len(gray)]).cast("B"))
            if channels == 3 and all_grey:
                raise _OtherChannels(1)
            os.fsync(f.fileno())
        os.replace(tmp, final)
        dir_fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as e:
        chunks.close()  # the workers stop before the temp file goes
        tmp.unlink(missing_ok=True)
        if isinstance(e, _OtherChannels):
            return build_cache(files, size, final, quiet, e.channels, reading, memory_budget)
        if isinstance(e, OSError) and not isinstance(e, PermissionError):
            raise UserError(f"cannot write the decoded cache of this folder ({np.prod(shape) / 1e9:.2f} GB) to "
                            f"{shown(final.parent)}: {e.strerror or e}; free space there or give --data_dir "
                            f"on another disk")
        raise
    finally:
        _building = None
    for old in final.parent.glob(f"{final.name.rsplit('-', 1)[0]}-*.npy"):
        if old != final:
            old.unlink(missing_ok=True)
    return images


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
