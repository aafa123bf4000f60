"""Atomic writes: a file is written to a temp file beside it, synced and renamed over its name, so
a reader sees the old file or the new one, never half of one (a group of files replaced together:
replace_together); files get the user's umask; a writer's stale temp files are removed."""
from __future__ import annotations

import contextlib
import fnmatch
import io
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path

from latentlab.cli import UserError

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


def write_folder(folder, contents: dict[str, bytes]) -> Path:
    """A new folder holding contents ({file name: bytes}), put in place by one rename: a kill
    leaves no folder under that name, or the whole of it (the hidden temp folder is removed by
    remove_stale_temp_folders). An existing folder of that name is kept: name it by its content."""
    folder = Path(folder)
    if folder.is_dir():
        return folder
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmpdir"))
    try:
        for name, blob in contents.items():
            with open(tmp / name, "wb") as f:
                f.write(blob)
        os.chmod(tmp, 0o777 & ~_umask())
        _fsync_folder(tmp)
        os.rename(tmp, folder)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(e, OSError):
            raise
        raise UserError(f"cannot write {folder}: {e.strerror or e} (disk full or not writable?); "
                        f"free space or choose another --output_dir")
    _fsync_folder(folder.parent)
    return folder


def remove_stale_temp_folders(folder, prefix: str) -> None:
    """Delete the hidden temp folders write_folder left when its process was killed, for target
    names starting with prefix (those the caller alone writes, holding the folder's writer lock)."""
    for p in Path(folder).glob(f".{prefix}*.tmpdir"):
        shutil.rmtree(p, ignore_errors=True)
