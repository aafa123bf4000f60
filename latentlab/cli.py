"""What every step shares: the common flags, option range checks (each bound with what it fits),
seeding, the device rule, allocations worded by the flags that size them, and the way a user error
becomes one line on stderr and exit status 2 (a signal that stops a step: 128 + its number)."""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import shutil
import sys
import traceback
from pathlib import Path

import numpy as np
import torch


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


def _ranged(kind, low=None, high=None, low_inclusive=True, allow=(), why: str = ""):
    """An argparse type: kind (int or float), finite, in [low, high] (low excluded unless
    low_inclusive); why says what the upper bound fits, in the error."""
    def parse(text):
        if text in allow:
            return text
        try:
            value = kind(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}")
        if kind is float and not math.isfinite(value):  # float("nan") passes every comparison below
            raise argparse.ArgumentTypeError(f"{text} is not a finite number")
        if low is not None and (value < low if low_inclusive else value <= low):
            raise argparse.ArgumentTypeError(f"{text} must be {'>=' if low_inclusive else '>'} {low}")
        if high is not None and value > high:
            shown = high if kind is int else f"{high:g}"
            raise argparse.ArgumentTypeError(f"{text} must be <= {shown}{f': {why}' if why else ''}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


# The upper bounds, each with what it fits: a figure's pixels, a machine's memory, the data.
MAX_ITEMS = 2**31 - 1  # images of a data set or a selection: more than any data set here holds
MAX_IMAGE_SIZE = 1024  # pixels a side: at 1024, a batch of 128 through the conv model's first stage (64 channels
                       # at 512x512) is 8 GB of float32 activations
MAX_WIDTH = 65_536  # units of a layer or a code: one dense layer of 65536 on a 32x32 RGB image is 200 M weights
MAX_FIGURE_IMAGES = 1024  # images in one figure: a 32 x 32 grid already fills a screen
MAX_GRID_SIDE = 256  # images per side or row of a figure: 256 of 28 pixels are 7168 pixels, past any screen
MAX_BATCH = 2**20  # images a step: more than any data set here holds, so one batch is all of it
MAX_EPOCHS = 100_000  # epochs: a week of the smallest model's training
MAX_FOLDS = 100  # folds: each needs a test image of every class, and 100 folds cost 100 fits
MAX_LR = 1e3  # Adam moves each weight by about lr a step: beyond it no network here stays meaningful
MAX_WEIGHT = 1e6  # a loss weight: beyond it the reconstruction term is lost below float32's resolution
MAX_NOISE_STD = 1e3  # std of the noise on pixels in [0, 1]: at 1000 the image is a millionth of the input's power
MAX_LATENT_STD = 100.0  # std of a latent unit: the test latents lie within a few; beyond is the decoder's far field
MAX_PROCESSES = 1024  # processes, jobs or CPUs at once: more than one machine has cores
MAX_MINUTES = 525_600  # a job's time limit: a year
MAX_REPEATS = 1000  # repeats of a timing
MAX_SCORED = 100_000  # generated images scored: precision and recall compare every pair, 10**10 distances at this
MAX_COMPONENTS = 1000  # mixture components: each fits a full covariance from its share of the latents

positive_int = _ranged(int, 1, MAX_ITEMS, why="more than any data set holds")
nonneg_int = _ranged(int, 0, MAX_ITEMS, why="more than any data set holds")
fraction = _ranged(float, 0.0, 0.9, low_inclusive=False, why="at least a tenth of the images must be left to train on")
count_or_all = _ranged(int, 1, MAX_ITEMS, allow=("all",), why="more than any data set holds")
at_least_two = _ranged(int, 2, MAX_ITEMS, why="more than any data set holds")
seed_int = _ranged(int, 0, 2**32 - 1, why="numpy takes seeds below 2**32")
image_side = _ranged(int, 1, MAX_IMAGE_SIZE, why="larger images leave no memory for a batch of the model's activations")
batch_images = _ranged(int, 1, MAX_BATCH, why="more images than any data set holds")
width = _ranged(int, 1, MAX_WIDTH, why="a wider layer or code does not fit in memory")
width_or_none = _ranged(int, 0, MAX_WIDTH, why="a wider layer does not fit in memory")
figure_images = _ranged(int, 1, MAX_FIGURE_IMAGES, why="more images than one figure can show")
grid_side = _ranged(int, 2, MAX_GRID_SIDE, why="more images a side than a figure can show")
row_length = _ranged(int, 1, MAX_GRID_SIDE, why="more images a row than a figure can show")
epoch_count = _ranged(int, 1, MAX_EPOCHS, why="a week of training or more")
epoch_count_or_off = _ranged(int, 0, MAX_EPOCHS, why="a week of training or more")
fold_count = _ranged(int, 2, MAX_FOLDS, why="each fold needs test images of every class")
adam_lr = _ranged(float, 0.0, MAX_LR, low_inclusive=False, why="larger Adam steps only diverge")
loss_weight = _ranged(float, 0.0, MAX_WEIGHT, why="a larger weight drowns the reconstruction term")
noise_level = _ranged(float, 0.0, MAX_NOISE_STD, why="more noise drowns the image (pixels are in [0, 1])")
std_multiple = _ranged(float, 0.0, MAX_LATENT_STD, low_inclusive=False,
                     why="the test latents lie within a few std; farther is the decoder's guess")
processes = _ranged(int, 1, MAX_PROCESSES, why="more than a machine has cores")
workers = _ranged(int, 0, MAX_PROCESSES, why="more than a machine has cores")
minutes = _ranged(int, 1, MAX_MINUTES, why="a year")
seconds = _ranged(float, 0.0, 60.0 * MAX_MINUTES, low_inclusive=False, why="a year")
repeat_count = _ranged(int, 1, MAX_REPEATS, why="a thousand timings already give a stable median")
scored_images = _ranged(int, 10, MAX_SCORED, why="precision and recall compare every pair of images")
mixture_components = _ranged(int, 1, MAX_COMPONENTS, why="each component needs a covariance fitted from its latents")
gigabytes = _ranged(float, 0.0, 2.0**20, low_inclusive=False, why="a pebibyte, more memory than a machine has")


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
                from latentlab.store.runs import finish_replacement
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
