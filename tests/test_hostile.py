"""The hostile trial of issue 38, one test per case: each bad input or failure ends in one line and
exit status 2, and the files already on disk are unchanged (their checksums before and after).

Sections, one per class of defect: images of every mode (A), runs that never replace another run's
results (B), writes and loads (C), sizes, ranges and the fixes that errors name (D)."""
import hashlib
from pathlib import Path

import pytest

from conftest import ROOT, run_script  # noqa: F401  (the sections below use them)


def one_error_line(stderr: str) -> str:
    """The single `error: ...` line a user sees; anything more (a traceback, a second line) fails."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in stderr, stderr
    return lines[0]


def checksums(folder) -> dict:
    """{relative path: sha256} of every file under folder: what 'nothing lost' compares."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(proc) -> str:
    """A finished script that must have stopped with exit 2 and one line; returns that line."""
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return one_error_line(proc.stderr)


# ================================================================ A: images of every mode
# (16-bit, 32-bit int and float images scaled by their range; EXIF orientation; odd file names)



# ================================================================ B: no run replaces another run's results
# (train.py --overwrite / --resume, steps writing into another run's folder, --val_fraction)



# ================================================================ C: writes and loads
# (a real full disk, atomic pairs, umask modes, non-finite weights, malformed resume state, JSON)



# ================================================================ D: sizes, ranges and the fixes named
# (absurd sizes refused before allocating, divergence and size fixes named right, the sweep)
