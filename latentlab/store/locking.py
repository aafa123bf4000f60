"""One writer per output folder: an exclusive `fcntl.flock` on `<folder>/.latentlab.lock`, held
while a step runs. The lock file names its holder (pid, host, command), so a refused writer can
say who holds the folder. The OS releases the lock when the holding process ends, however it
ends, so a killed run never blocks the next one; readers never take it.

On network file systems: Linux NFS clients (v3 with lockd, v4) map flock to POSIX locks that the
server arbitrates, so writers on different machines exclude each other. Some mounts (Lustre
without `-o flock`, some CIFS and FUSE mounts) keep locks local to one machine or refuse them;
there a refused lock is reported, and writers on other machines are not seen.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

LOCK_NAME = ".latentlab.lock"
_held: dict[Path, int] = {}  # folder -> how many nested holds in this process


class FolderBusy(Exception):
    """Another process holds the folder's lock."""


def holder(folder) -> str:
    """Who holds (or last held) the folder's lock, in words, from the lock file."""
    try:
        info = json.loads((Path(folder) / LOCK_NAME).read_text())
        return f"process {info['pid']} on {info['host']} ({info['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


class FolderLock:
    """The writer lock of one folder. acquire() raises FolderBusy when another process holds it,
    or (wait=True) waits until it is free. Re-entrant within one process, so a step that calls
    another (the sweep calling a training) holds it once."""

    def __init__(self, folder, wait: bool = False, poll_seconds: float = 0.5):
        self.folder, self.wait, self.poll_seconds = Path(folder).resolve(), wait, poll_seconds
        self.fd = None

    def acquire(self) -> "FolderLock":
        if self.folder in _held:
            _held[self.folder] += 1
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES) or not self.wait:
                    os.close(fd)
                    if e.errno in (errno.EAGAIN, errno.EACCES):
                        raise FolderBusy(holder(self.folder)) from None
                    raise
                time.sleep(self.poll_seconds)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv) or sys.executable}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self.fd, _held[self.folder] = fd, 1
        return self

    def release(self) -> None:
        _held[self.folder] -= 1
        if _held[self.folder] == 0:
            del _held[self.folder]
            if self.fd is not None:
                os.close(self.fd)  # closing the descriptor releases the lock
                self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
