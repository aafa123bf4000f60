"""Many image files decoded on every core (a process pool, a chunk of files per task), each worker
writing its chunk straight into the file being built; and the build of a folder's cache through a
temp file that only a complete build renames (fsync, os.replace), so a killed build is never taken
for a whole one."""
from __future__ import annotations

import errno
import mmap
import multiprocessing
import os
import socket
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np

from latentlab.cli import UserError, show_progress, usable_cores
from latentlab.data.image_file import (GRAY_MODES, Reading, Unreadable, _open_errors, _reason, _small_jpegs, decode_image,
                                       grey, shown)


CHUNK = 64  # images per task of the process pool

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


def _chunked_map(fn, items: list, *args, quiet: bool = True, what: str = ""):
    """fn(start, items[start:start + CHUNK], *args) for each chunk, in order, on a process pool (in
    this process for a few items); a progress bar (images/s, ETA) on a terminal unless quiet."""
    from tqdm import tqdm

    starts = range(0, len(items), CHUNK)
    chunks = [items[s:s + CHUNK] for s in starts]
    workers = min(usable_cores(), len(chunks))
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
    worker writes the chunks it decodes into (_publish). Returns the images in memory when they fit memory_budget bytes (forked
    workers write them into shared memory too; others' are read back as each chunk arrives), else None."""
    global _building
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_temps(final)
    tmp = final.parent / f".{final.name}.{socket.gethostname()}.{os.getpid()}.tmp"
    channels = channels or (1 if _grey_modes(files[:CHUNK], reading) else 3)  # a later image may restart it
    shape = (len(files), channels, size, size)
    image_bytes = channels * size * size
    images, shared = _in_memory(shape, memory_budget)
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
        _publish(tmp, final)
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
    return images


def _in_memory(shape: tuple, memory_budget: int) -> tuple[np.ndarray | None, bool]:
    """(the array the images are also kept in, or None past memory_budget bytes; whether it is
    shared memory the forked workers write into)."""
    if np.prod(shape) > memory_budget:
        return None, False
    if _start_method() == "fork":
        return np.frombuffer(mmap.mmap(-1, int(np.prod(shape))), np.uint8).reshape(shape), True
    return np.empty(shape, dtype=np.uint8), False


def _publish(tmp: Path, final: Path) -> None:
    """Rename the complete temp file to final, durably (the folder's entry too), and remove the
    older caches of the same folder, size and resize mode."""
    os.replace(tmp, final)
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    for old in final.parent.glob(f"{final.name.rsplit('-', 1)[0]}-*.npy"):
        if old != final:
            old.unlink(missing_ok=True)
