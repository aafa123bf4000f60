"""Shared fixtures: one tiny training on the embedded digits (train.py's main, in this process), reused by
the tests of the later steps (they only read its output folder, copied per test when they write);
and the helpers that run a step as a user does and check a refusal: exit 2, one line, nothing lost."""
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Under pytest-xdist (`make test`: a worker a core), each worker's torch, and the scripts it starts,
# take their share of the cores: torch's default of every core in every worker oversubscribes them.
# Set before any test module imports torch; a thread count the caller set is kept.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))


# Fixtures that train, or run the scripts in processes of their own: a test that uses one is marked
# slow, so `make test-fast` (-m "not slow") leaves it out.
SLOW_FIXTURES = {"trained", "trained_copy", "two_runs", "pipeline", "samples", "sweep", "start_training", "torchrun"}


@pytest.fixture(scope="session", autouse=True)
def no_fsync():
    """No fsync in this process: what the tests check is that a writer is atomic (a temp file renamed
    over its name), not that it survives a power cut, and fsync costs tens of ms a file on a VM's
    disk, hundreds of times a suite. The steps run in processes of their own still sync."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(os, "fsync", lambda fd: None)
        yield


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def run_script(script, *args, check=True, env=None, timeout=600):
    """Run one of the step scripts in its own process, as a user does; returns CompletedProcess."""
    cmd = [sys.executable, str(ROOT / script), *map(str, args)]
    e = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=e, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc


def run_main(module: str, *args):
    """Run a step script's main(parse_args(args)) in this process: the in-process run_script."""
    import importlib
    mod = importlib.import_module(module)
    return mod.main(mod.parse_args([str(a) for a in args]))


def edit_torch(src, dst, change):
    """A copy of the .pth src at dst, change(obj) applied to what it holds: a hand-edited artifact."""
    import torch
    obj = torch.load(src, weights_only=True)
    change(obj)
    torch.save(obj, dst)
    return dst


def run_meta(name: str, class_names: list, split):
    """What a checkpoint says of its run and dataset (latentlab.train.checkpoint.run_meta), for
    images a test made (split: a TrainingSplit)."""
    from types import SimpleNamespace
    from latentlab.settings import Settings
    from latentlab.train import checkpoint
    data = SimpleNamespace(name=name, class_names=class_names, image_shape=tuple(split.images.shape[1:]),
                           split="made by the test", skipped=[])
    return checkpoint.run_meta("0" * 12, data, split, Settings(latent_size=2))


def load_benchmark(name: str):
    """benchmarks/<name>.py as a module, for tests that call its main() in-process."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """output/ of `train.py --latent_size 8 --dataset digits` with a few epochs (conv family)."""
    out = tmp_path_factory.mktemp("trained")
    run_main("train", "--latent_size", 8, "--dataset", "digits", "--num_epochs", 6,
             "--batch_size", 64, "--output_dir", out, "--quiet")
    return out


@pytest.fixture
def trained_copy(trained, tmp_path):
    """A private copy of the trained output folder, for tests that write into it."""
    dst = tmp_path / "out"
    shutil.copytree(trained, dst)
    return dst


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


# (absurd sizes refused before allocating, divergence and size fixes named right, the sweep)
def parse_refused(module: str, argv, capsys) -> str:
    """A script's parse_args refusing argv: exit 2 and one line naming the flag; returns that line."""
    import importlib
    with pytest.raises(SystemExit) as e:
        importlib.import_module(module).parse_args([str(a) for a in argv])
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and ": error: argument " in lines[0], lines
    return lines[0]


def run_refused(module: str, argv, capsys) -> str:
    """A script's main through cli.run, in this process, as the script runs it: exit 2, one line."""
    import importlib
    from latentlab.cli import run
    mod = importlib.import_module(module)
    with pytest.raises(SystemExit) as e:
        run(mod.main, mod.parse_args([str(a) for a in argv]))
    assert e.value.code == 2
    return one_error_line(capsys.readouterr().err)


def written(folder) -> dict:
    """What a run left in folder, but the writer lock's file that every step takes."""
    return {k: v for k, v in checksums(folder).items() if k != ".latentlab.lock"} if Path(folder).exists() else {}
