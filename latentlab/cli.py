"""What every step shares: the common flags (their range checks: ranges.py), seeding, the device
rule, allocations worded by the flags that size them, and the way a user error becomes one line
on stderr and exit status 2 (a signal that stops a step: 128 + its number)."""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import sys
import traceback
from pathlib import Path

import numpy as np
import torch

from latentlab.ranges import seed_int


class UserError(Exception):
    """A problem with the user's input or environment: shown as one line, exit status 2."""


class Interrupted(BaseException):
    """A step stopped by a signal (SIGTERM, SIGINT): its one line, and exit status 128 + the
    signal's number. A BaseException, as KeyboardInterrupt, so that no `except Exception` records
    it as a failure."""

    def __init__(self, signum: int, line: str):
        super().__init__(line)
        self.signum, self.line = signum, line


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (the usage block is what --help is for)."""

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(2)


def make_parser(description: str) -> Parser:
    """A parser that already has the flags every step shares."""
    parser = Parser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common = parser.add_argument_group("common")
    common.add_argument("--output_dir", default="output", help="where artifacts are read and written")
    common.add_argument("--seed", type=seed_int, default=0, help="seed for random, numpy and torch (0 to 2**32-1)")
    common.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                        help="auto picks cuda, then mps, then cpu")
    common.add_argument("--quiet", action="store_true", help="only the result tables and the files written: no progress or notes")
    common.add_argument("--debug", action="store_true", help="show the traceback of an error")
    common.add_argument("--wait_for_lock", action="store_true",
                        help="when another process is writing into --output_dir, wait for it instead of stopping")
    return parser


def seed_everything(seed: int) -> None:
    """The one place that seeds random, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str = "auto") -> torch.device:
    """auto -> cuda, then mps, then cpu. Under torchrun each process takes its LOCAL_RANK GPU."""
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
        local_rank, count = int(os.environ.get("LOCAL_RANK", 0)), torch.cuda.device_count()
        if local_rank >= count:
            raise UserError(f"process with LOCAL_RANK {local_rank} has no GPU: only {count} visible on this machine; "
                            f"start at most {count} processes per machine (torchrun --nproc_per_node={count})")
        return torch.device("cuda", local_rank)
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("--device mps was asked for but MPS is not available; use --device cpu or auto")
    return torch.device(name)


@contextlib.contextmanager
def worded(hint: str):
    """Word the ValueError a library function raises for input it cannot use (too few samples,
    ...) for the user of a step: the library's sentence, then what to do with this step's flags."""
    try:
        yield
    except ValueError as e:
        raise UserError(f"{e}; {hint}") from e


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it, else all of them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def memory_available(device=None) -> int:
    """Bytes that an allocation on device (None: this machine's memory) can take now."""
    if device is not None and torch.device(device).type == "cuda":
        return torch.cuda.mem_get_info(torch.device(device))[0]
    try:
        import psutil
        return psutil.virtual_memory().available
    except ImportError:  # psutil is optional: Linux's estimate, which counts the page cache it can drop
        pass
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return sys.maxsize  # unknown: no check, and a failing allocation is still worded (memory_for)


@contextlib.contextmanager
def memory_for(what: str, flags: str, nbytes: int | None = None, device=None):
    """Word an allocation for what, sized by flags (e.g. "--num_samples"): refused before it is
    made when its nbytes exceed the free memory of device (None: this machine's), since an
    allocation the kernel overcommits ends in the OOM killer with no message; and, when it fails
    inside the block (MemoryError, torch's out-of-memory and can't-allocate errors), one line."""
    where = "the GPU" if device is not None and torch.device(device).type == "cuda" else "this machine"
    if nbytes is not None:
        free = memory_available(device)
        if nbytes > free:
            raise UserError(f"not enough memory for {what}: it needs {nbytes / 2**30:.1f} GiB and {where} has "
                            f"{free / 2**30:.1f} GiB free; lower {flags}")
    try:
        yield
    except MemoryError as e:
        raise UserError(f"not enough memory for {what} on {where}; lower {flags}") from e
    except RuntimeError as e:  # torch.OutOfMemoryError is one; so is the CPU allocator's failure
        if not isinstance(e, torch.OutOfMemoryError) and "can't allocate memory" not in str(e):
            raise
        raise UserError(f"not enough memory for {what} on {where}; lower {flags}") from e


def show_progress(quiet: bool) -> bool:
    """Progress bars on a terminal alone: piped into a log (nohup, SLURM, `> log`) each redraw
    of a bar would be a line; there the steps' own lines (an epoch, a table, a file written) remain."""
    return not quiet and sys.stderr.isatty()


def progress(iterable=None, *, quiet: bool, **kwargs):
    """A tqdm bar, shown when show_progress(quiet)."""
    from tqdm import tqdm
    return tqdm(iterable, disable=not show_progress(quiet), leave=False, dynamic_ncols=True, **kwargs)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """A console table: labels (the first column) left-aligned, the other cells right-aligned,
    each column as wide as its widest cell, so that no label (a long folder path) is cut."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return " ".join([cells[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))])
    head = line(header)
    return "\n".join([head, "-" * len(head), *map(line, rows)])


def run(main, args) -> None:
    """Run a step's main(args) holding the writer lock of its --output_dir (rank 0 alone under
    torchrun: the other ranks do not write); a UserError becomes one line and exit status 2
    (--debug: traceback). A step that fails removes the folders it made that hold nothing."""
    made = []  # folders this run may create, with their missing parents: those absent now
    try:
        with contextlib.ExitStack() as stack:
            output_dir = getattr(args, "output_dir", None)
            made = _absent_folders(args)
            if output_dir is not None and os.environ.get("RANK", "0") == "0":
                stack.callback(_writer_lock(output_dir, getattr(args, "wait_for_lock", False)).release)
                stack.push(lambda kind, *_: kind is not None and _remove_empty(made))  # before the lock's release
                from latentlab.store.replacing import finish_replacement
                finish_replacement(output_dir)  # a swap of runs that a kill stopped midway, before anything reads
            main(args)
    except UserError as e:
        if getattr(args, "debug", False):
            traceback.print_exc()
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)
    except Interrupted as e:
        sys.stderr.write(f"{e.line}\n")
        sys.exit(128 + e.signum)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)


DATA_ROOT = Path("data")  # where latentlab.data.datasets downloads a dataset by default: data/<name>/


def _absent_folders(args) -> list[Path]:
    """The folders a step may create that do not exist yet, with their missing parents, deepest
    first: --output_dir, --data_dir and data/<name>/ of a download."""
    names = [getattr(args, "dataset", None), *(getattr(args, "datasets", None) or [])]
    folders = [getattr(args, "output_dir", None), getattr(args, "data_dir", None),
               *(DATA_ROOT / str(n).lower() for n in names if n and ":" not in str(n))]
    absent = {p for f in folders if f is not None for p in [Path(f).absolute(), *Path(f).absolute().parents]
              if not p.exists()}
    return sorted(absent, key=lambda p: len(p.parts), reverse=True)


def _remove_empty(folders: list[Path]) -> None:
    """Remove each folder that holds no file but its writer lock (empty sub-folders go with it)."""
    from latentlab.store.locking import LOCK_NAME
    for folder in folders:
        if folder.is_dir() and all(p.is_dir() or p == folder / LOCK_NAME for p in folder.rglob("*")):
            shutil.rmtree(folder, ignore_errors=True)


def _writer_lock(output_dir, wait: bool):
    """The held lock of --output_dir (latentlab.store.locking), its failures worded for the user."""
    from latentlab.store import locking
    try:
        return locking.FolderLock(output_dir, wait=wait).acquire()
    except locking.FolderBusy as e:
        raise UserError(f"{output_dir} is being written by {e}; wait for it to finish, pass --wait_for_lock, "
                        f"or choose another --output_dir")
    except OSError as e:
        raise UserError(f"cannot write to {output_dir}: {e.strerror or e}; choose a writable --output_dir")
