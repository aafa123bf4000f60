"""What every step shares: the common flags, option range checks, seeding, the device rule, and
the way a user error becomes one line on stderr and exit status 2."""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import sys
import traceback

import numpy as np
import torch


class UserError(Exception):
    """A problem with the user's input or environment: shown as one line, exit status 2."""


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
    common.add_argument("--quiet", action="store_true", help="no progress bars or tables")
    common.add_argument("--debug", action="store_true", help="show the traceback of an error")
    common.add_argument("--wait_for_lock", action="store_true",
                        help="when another process is writing into --output_dir, wait for it instead of stopping")
    return parser


def _ranged(kind, low=None, high=None, low_inclusive=True, allow=()):
    def parse(text):
        if text in allow:
            return text
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}")
        if not math.isfinite(value):  # float("nan") passes every comparison below
            raise argparse.ArgumentTypeError(f"{text} is not a finite number")
        if low is not None and (value < low if low_inclusive else value <= low):
            raise argparse.ArgumentTypeError(f"{text} must be {'>=' if low_inclusive else '>'} {low}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{text} must be <= {high}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


positive_int = _ranged(int, 1)
nonneg_int = _ranged(int, 0)
positive_float = _ranged(float, 0.0, low_inclusive=False)
nonneg_float = _ranged(float, 0.0)
fraction = _ranged(float, 0.0, 0.9, low_inclusive=False)
count_or_all = _ranged(int, 1, allow=("all",))
at_least_two = _ranged(int, 2)
seed_int = _ranged(int, 0, 2**32 - 1)  # numpy takes seeds below 2**32


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


def run(main, args) -> None:
    """Run a step's main(args) holding the writer lock of its --output_dir (rank 0 alone under
    torchrun: the other ranks do not write); a UserError becomes one line and exit status 2
    (--debug: traceback)."""
    try:
        with contextlib.ExitStack() as stack:
            output_dir = getattr(args, "output_dir", None)
            if output_dir is not None and os.environ.get("RANK", "0") == "0":
                stack.callback(_writer_lock(output_dir, getattr(args, "wait_for_lock", False)).release)
                from latentlab.runs import finish_replacement
                finish_replacement(output_dir)  # a swap of runs that a kill stopped midway, before anything reads
            main(args)
    except UserError as e:
        if getattr(args, "debug", False):
            traceback.print_exc()
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)


def _writer_lock(output_dir, wait: bool):
    """The held lock of --output_dir (latentlab.locking), its failures worded for the user."""
    from latentlab import locking
    try:
        return locking.FolderLock(output_dir, wait=wait).acquire()
    except locking.FolderBusy as e:
        raise UserError(f"{output_dir} is being written by {e}; wait for it to finish, pass --wait_for_lock, "
                        f"or choose another --output_dir")
    except OSError as e:
        raise UserError(f"cannot write to {output_dir}: {e.strerror or e}; choose a writable --output_dir")
