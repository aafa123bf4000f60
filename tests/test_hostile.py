"""The hostile trial of issue 38, one test per case: each bad input or failure ends in one line and
exit status 2, and the files already on disk are unchanged (their checksums before and after).

Sections, one per class of defect: images of every mode (A), runs that never replace another run's
results (B), writes and loads (C), sizes, ranges and the fixes that errors name (D)."""
import functools
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, edit_torch, run_script  # noqa: F401  (the sections below use them)


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
def _mode_folder(root: Path, arrays: dict, mode: str | None = None, suffix: str = ".png") -> Path:
    """One sub-folder per class, holding each array of arrays[class] as an image of this mode."""
    from PIL import Image
    for name, images in arrays.items():
        (root / name).mkdir(parents=True)
        for i, a in enumerate(images):
            Image.fromarray(a, mode).save(root / name / f"{i}{suffix}") if mode else \
                Image.fromarray(a).save(root / name / f"{i}{suffix}")
    return root


def _ramps(dtype, low, high, n=3, size=16):
    """n horizontal ramps from low to high: a known contrast, the same in every image."""
    return [np.tile(np.linspace(low, high, size), (size, 1)).astype(dtype) for _ in range(n)]


def _loaded(root, tmp_path, size=16):
    from latentlab.data.datasets import load_dataset
    data = load_dataset(f"folder:{root}", data_dir=tmp_path, image_size=size)
    return torch.cat([data.train_x, data.test_x])


def test_a_16_bit_png_keeps_its_contrast(tmp_path):
    from PIL import Image
    root = _mode_folder(tmp_path / "micro", {"a": _ramps(np.uint16, 1000, 4000), "b": _ramps(np.uint16, 200, 3000)})
    with Image.open(root / "a" / "0.png") as img:
        assert img.mode.startswith("I;16")  # what a microscope writes
    x = _loaded(root, tmp_path)
    assert x.shape[1] == 1 and x.min() == 0 and x.max() == 255
    assert (x == 255).float().mean() < 0.1  # not saturated: convert("L") left 98% at 255
    assert (x[:, 0, :, 1:].int() >= x[:, 0, :, :-1].int()).all()  # the ramp is still a ramp


@pytest.mark.parametrize("dtype,low,high", [(np.int32, -10**6, 10**6), (np.float32, -0.5, 0.5), (np.float32, 0, 1e-4)])
def test_32_bit_int_and_float_images_are_scaled_by_their_range(tmp_path, dtype, low, high):
    arrays = {"a": _ramps(dtype, low, high), "b": _ramps(dtype, high, low)}
    x = _loaded(_mode_folder(tmp_path / "sci", arrays, "I" if dtype == np.int32 else "F", ".tif"), tmp_path)
    assert x.shape[1] == 1 and x.min() == 0 and x.max() == 255
    assert len(torch.unique(x)) > 10  # the range is spread over the 8 bits, not clipped to two values


def test_a_float_image_with_nan_and_inf_still_loads_by_its_finite_range(tmp_path):
    ramps = _ramps(np.float32, 0, 1)
    ramps[0][0, :3] = [np.nan, np.inf, -np.inf]
    x = _loaded(_mode_folder(tmp_path / "sci", {"a": ramps, "b": _ramps(np.float32, 1, 0)}, "F", ".tif"), tmp_path)
    assert x.min() == 0 and x.max() == 255 and len(torch.unique(x)) > 10


@pytest.mark.parametrize("size", [16, 40])  # Pillow's draft decode (4x larger) and torchvision's (small JPEGs)
def test_a_jpeg_with_exif_orientation_6_loads_upright(tmp_path, size):
    from PIL import Image
    upright = np.zeros((64, 32), dtype=np.uint8)
    upright[:32] = 255  # bright top half, as the phone's user saw it
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # the sensor's rows: on its side
    for name in ("a", "b"):
        (tmp_path / "phone" / name).mkdir(parents=True)
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees clockwise to display
        stored.save(tmp_path / "phone" / name / "0.jpg", exif=exif.tobytes())
        stored.save(tmp_path / "phone" / name / "1.jpg", exif=exif.tobytes())
    x = _loaded(tmp_path / "phone", tmp_path, size).float()
    half = size // 2
    top, bottom = x[:, 0, :half].mean(), x[:, 0, half:].mean()
    left, right = x[:, 0, :, :half].mean(), x[:, 0, :, half:].mean()
    assert top > 200 and bottom < 50 and abs(left - right) < 20


def test_every_unreadable_file_is_named_in_one_line(tmp_path):
    from latentlab.cli import UserError
    from latentlab.data.datasets import load_dataset
    root = _mode_folder(tmp_path / "mixed", {"a": _ramps(np.uint8, 0, 255, n=2), "b": _ramps(np.uint8, 0, 255, n=2)})
    for i in range(5):
        (root / "b" / f"broken{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(UserError) as err:
        load_dataset(f"folder:{root}", data_dir=tmp_path)
    line = str(err.value)
    assert "\n" not in line and line.startswith("cannot read 5 images: ") and "and 2 more" in line
    assert all(f"broken{i}.png" in line for i in range(3))


@pytest.mark.slow
@pytest.mark.parametrize("name", [b"bad\xff\xfename.png", b"two\nlines.png"])
def test_an_unreadable_file_with_an_odd_name_is_one_error_line(tmp_path, name):
    import os
    root = _mode_folder(tmp_path / "odd", {"a": _ramps(np.uint8, 0, 255), "b": _ramps(np.uint8, 0, 255)})
    with open(os.path.join(os.fsencode(root / "b"), name), "wb") as f:
        f.write(b"not an image at all")
    before = checksums(root)
    line = refused(run_script("train.py", "--dataset", f"folder:{root}", "--latent_size", 4, "--num_epochs", 1,
                              "--data_dir", tmp_path / "cache", "--output_dir", tmp_path / "out", check=False))
    assert line.startswith("error: cannot read image ") and "remove or replace the file" in line
    shown = "bad\\udcff\\udcfename.png" if b"\xff" in name else "two\\nlines.png"
    assert shown in line  # escaped, never raw bytes or a second line
    assert checksums(root) == before and not list((tmp_path / "cache").rglob("*.npy"))



# ================================================================ B: no run replaces another run's results
# (train.py --overwrite / --resume, steps writing into another run's folder, --val_fraction)

TINY = ["--dataset", "digits", "--num_epochs", "1", "--snapshot_every", "0", "--batch_size", "64", "--quiet"]
# a training that diverges in its first epoch, within every flag's range
DIVERGING = ["--model", "vae", "--beta", "1e6", "--lr", "1000"]


def b_unchanged(folder) -> dict:
    """checksums without the writer lock's file, which every run through cli.run rewrites with its pid."""
    from latentlab.store.locking import LOCK_NAME
    return {k: v for k, v in checksums(folder).items() if k != LOCK_NAME}


def b_refused(module: str, argv, capsys, code: int = 2) -> str:
    """A step's main through cli.run, as the script runs it, in this process: exit `code`; its one line."""
    import importlib

    from latentlab.cli import run
    mod = importlib.import_module(module)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run(mod.main, mod.parse_args([str(a) for a in argv]))
    err = capsys.readouterr().err
    assert e.value.code == code, err
    return one_error_line(err) if code == 2 else err


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two tiny digits trainings of the same sizes (so their files have the same names), each encoded."""
    import torch

    from conftest import run_main
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folders = {}
    for name, seed in (("a", 0), ("b", 1)):
        out = tmp_path_factory.mktemp(f"run_{name}")
        run_main("train", "--latent_size", 4, *TINY, "--seed", seed, "--output_dir", out)
        run_main("encode_latent_space", "--output_dir", out, "--quiet", "--device", "cpu")
        folders[name] = out
    torch.set_num_threads(threads)
    return folders


@pytest.fixture
def run_a(two_runs, tmp_path):
    """A private copy of run A's folder."""
    import shutil
    out = tmp_path / "a"
    shutil.copytree(two_runs["a"], out)
    return out


def run_id(folder) -> str:
    import json
    return json.loads((Path(folder) / "run.json").read_text())["run"]


def test_b_a_training_over_another_runs_folder_is_refused_and_changes_nothing(run_a, capsys):
    before = b_unchanged(run_a)
    for flags in (["--latent_size", "8"], ["--latent_size", "4"]):  # other flags, and the same ones
        line = b_refused("train", [*flags, *TINY, "--output_dir", run_a], capsys)
        assert f"{run_a} holds the training of run {run_id(run_a)} (digits, latent sizes 2 and 4)" in line
        assert "--overwrite to replace it, --resume to continue it, or choose another --output_dir" in line
    assert b_unchanged(run_a) == before


def test_b_a_failed_overwrite_leaves_the_earlier_run_byte_identical(run_a, capsys, monkeypatch):
    before = b_unchanged(run_a)
    line = b_refused("train", ["--latent_size", "8", *TINY, *DIVERGING, "--overwrite",
                               "--output_dir", run_a], capsys)
    assert "diverged" in line and f"holds run {run_id(run_a)} (digits, latent sizes 2 and 4) as before" in line
    assert "is kept" not in line  # the new run's checkpoints are removed: the line never says otherwise
    assert b_unchanged(run_a) == before
    # Ctrl-C (or any other exception) late in the run, after both models trained: the same
    import latentlab.train.report

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(latentlab.train.report, "print_summary", interrupted)
    b_refused("train", ["--latent_size", "8", *TINY[:-1], "--overwrite", "--output_dir", run_a], capsys, code=130)
    assert b_unchanged(run_a) == before


def test_b_a_successful_overwrite_replaces_the_whole_run(run_a, two_runs, capsys):
    from conftest import run_main
    from latentlab.store import artifacts
    (run_a / "cache").mkdir(exist_ok=True)
    (run_a / "cache" / "entry.npy").write_bytes(b"kept: keyed by content")
    (run_a / "another_run").mkdir()
    (run_a / "another_run" / "notes.txt").write_text("a sub-folder is another folder, left alone")
    (run_a / "notes.txt").write_text("not an artifact: left alone")
    old = run_id(run_a)
    run_main("train", "--latent_size", "8", *TINY, "--overwrite", "--output_dir", run_a)
    new = run_id(run_a)
    assert new != old
    names = {p.name for p in run_a.iterdir()}
    assert not names & {"model_latent_size_4.pth", "latent_space_size_4.npy", "latent_space_size_2.json",
                        ".overwrite", ".replaced", ".replacing"}
    assert {"model_latent_size_2.pth", "model_latent_size_8.pth", "another_run", "cache"} <= names
    assert (run_a / "cache" / "entry.npy").exists() and (run_a / "another_run" / "notes.txt").exists()
    assert (run_a / "notes.txt").read_text() == "not an artifact: left alone"
    assert artifacts.load_test_data(run_a / "test_data.pth")["run"] == new
    assert artifacts.load_checkpoint(run_a / "model_latent_size_2.pth")["run"] == new
    # the later steps run on the new run alone, and record it
    run_main("encode_latent_space", "--output_dir", run_a, "--quiet", "--device", "cpu")
    m = run_main("viz_kmeans_latent_space", "--output_dir", run_a, "--quiet")
    assert m["run"] == new and artifacts.load_latents(run_a / "latent_space_size_8.npy").meta["run"] == new


def test_b_kmeans_with_another_runs_latents_is_refused(run_a, two_runs, capsys):
    before = b_unchanged(run_a)
    line = b_refused("viz_kmeans_latent_space", ["--output_dir", run_a, "--latent_space",
                                                 two_runs["b"] / "latent_space_size_4.npy", "--quiet"], capsys)
    assert (f"{run_a} holds the results of run {run_id(run_a)} (digits, latent sizes 2 and 4); these inputs are of "
            f"run {run_id(two_runs['b'])} (digits) in {two_runs['b']}: write into {two_runs['b']}") in line
    assert b_unchanged(run_a) == before


def test_b_generation_with_another_runs_model_and_test_data_is_refused(run_a, two_runs, capsys):
    before = b_unchanged(run_a)
    b = two_runs["b"]
    line = b_refused("viz_generation", ["--output_dir", run_a, "--model_path", b / "model_latent_size_4.pth",
                                        "--test_data", b / "test_data.pth", "--quiet"], capsys)
    assert f"holds the results of run {run_id(run_a)}" in line and f"write into {b}" in line
    # a model of run B beside run A's test data of the same names: two trainings, refused before anything
    line = b_refused("viz_generation", ["--output_dir", run_a, "--model_path", b / "model_latent_size_4.pth",
                                        "--quiet"], capsys)
    assert f"is of run {run_id(run_a)} but {b / 'model_latent_size_4.pth'} of run {run_id(b)}" in line
    assert b_unchanged(run_a) == before


def test_b_a_val_fraction_that_leaves_no_training_image_writes_nothing(tmp_path, capsys):
    import numpy as np
    from PIL import Image
    root = tmp_path / "images"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):  # 3 per class: 1 test image and 2 training images each
            Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(root / c / f"{i}.png")
    out = tmp_path / "out"
    line = b_refused("train", ["--latent_size", "2", "--dataset", f"folder:{root}", "--val_fraction", "0.9",
                               "--output_dir", out, "--quiet"], capsys)
    assert "--val_fraction 0.9 holds out all 4 training images" in line and "lower --val_fraction" in line
    assert b_unchanged(out) == {}


def test_b_resume_continues_its_own_run_and_refuses_another_shape(run_a, capsys):
    from conftest import run_main
    from latentlab.store import artifacts
    old, data_before = run_id(run_a), (run_a / "test_data.pth").read_bytes()
    before = b_unchanged(run_a)
    line = b_refused("train", ["--latent_size", "8", *TINY, "--resume", "--output_dir", run_a], capsys)
    assert "--resume:" in line and "not a training of latent sizes 2 and 8" in line
    line = b_refused("train", ["--latent_size", "4", *TINY, "--resume", "--lr", "0.01", "--output_dir", run_a], capsys)
    assert "lr=0.003, not 0.01" in line
    line = b_refused("train", ["--latent_size", "4", *TINY, "--resume", "--dataset", "fashion-mnist",
                               "--data_dir", run_a / "nothing", "--output_dir", run_a], capsys)
    assert b_unchanged(run_a) == before  # every refused resume wrote nothing
    run_main("train", "--latent_size", "4", *TINY, "--num_epochs", "2", "--resume", "--output_dir", run_a)
    ckpt = artifacts.load_checkpoint(run_a / "model_latent_size_4.pth")
    assert len(ckpt["history"]["epoch"]) == 2 and ckpt["run"] == old == run_id(run_a)
    assert (run_a / "test_data.pth").read_bytes() == data_before  # the run's test data, kept as it was


def test_b_a_killed_overwrite_leaves_the_earlier_run_working_and_resumes(run_a, two_runs, capsys):
    """A SIGKILL during an --overwrite leaves its new run in <folder>/.overwrite/ (built here by hand,
    as the kill leaves it): the earlier run stays usable, train.py names it, --overwrite --resume continues it."""
    import shutil

    from conftest import run_main
    staged = run_a / ".overwrite"
    shutil.copytree(two_runs["b"], staged)
    (staged / "model_latent_size_4.pth").unlink()  # killed before its second model
    for p in staged.glob("latent_space_*"):
        p.unlink()
    m = run_main("viz_kmeans_latent_space", "--output_dir", run_a, "--quiet")
    assert m["run"] == run_id(run_a)
    line = b_refused("train", ["--latent_size", "4", *TINY, "--output_dir", run_a], capsys)
    assert f"{staged}, the new run of a stopped --overwrite: --overwrite --resume continues it" in line
    run_main("train", "--latent_size", "4", *TINY, "--seed", "1", "--overwrite", "--resume", "--output_dir", run_a)
    assert run_id(run_a) == run_id(two_runs["b"]) and not staged.exists()
    assert not (run_a / "kmeans_latent_space_latent_size_4.png").exists()  # run A's results went with it


def test_b_a_swap_stopped_midway_is_finished_by_the_next_writer(run_a, two_runs):
    """A kill between the renames of the swap: the earlier files half in .replacing, the new run staged."""
    import json
    import shutil

    import viz_kmeans_latent_space
    from latentlab.cli import run
    new = b_unchanged(two_runs["b"])
    staged, replacing = run_a / ".overwrite", run_a / ".replacing"
    shutil.copytree(two_runs["b"], staged)
    replacing.mkdir()
    for name in ("model_latent_size_2.pth", "test_data.pth"):
        (run_a / name).rename(replacing / name)
    run(viz_kmeans_latent_space.main, viz_kmeans_latent_space.parse_args(["--output_dir", str(run_a), "--quiet"]))
    assert json.loads((run_a / "kmeans_latent_space_latent_size_4.json").read_text())["run"] == run_id(two_runs["b"])
    now = b_unchanged(run_a)
    assert {k: now[k] for k in new} == new and not {".overwrite", ".replacing", ".replaced"} & {p.name for p in run_a.iterdir()}


@pytest.mark.parametrize("marker,message", [
    ("{not json", "run.json is not valid JSON"),
    ('{"kind": "latents", "format_version": 2}', "run.json is not a run file"),
    ('{"kind": "run", "format_version": 2, "run": "../../x", "dataset": "d", "latent_sizes": [2]}', "run.json is malformed"),
])
def test_b_a_run_json_that_is_not_a_run_marker_is_refused_in_one_line(run_a, two_runs, capsys, marker, message):
    (run_a / "run.json").write_text(marker)
    before = b_unchanged(run_a)
    assert message in b_refused("viz_kmeans_latent_space", ["--output_dir", run_a, "--quiet"], capsys)
    assert message in b_refused("train", ["--latent_size", "4", *TINY, "--output_dir", run_a], capsys)
    assert b_unchanged(run_a) == before


def test_b_a_folder_with_a_run_json_alone_is_a_run(tmp_path, two_runs, capsys):
    import shutil

    from conftest import run_main
    out = tmp_path / "marked"
    out.mkdir()
    shutil.copy(two_runs["a"] / "run.json", out / "run.json")
    assert "holds the training of run" in b_refused("train", ["--latent_size", "4", *TINY, "--output_dir", out], capsys)
    line = b_refused("viz_kmeans_latent_space", ["--output_dir", out, "--latent_space",
                                                 two_runs["b"] / "latent_space_size_4.npy", "--quiet"], capsys)
    assert "holds the results of run" in line
    m = run_main("viz_kmeans_latent_space", "--output_dir", out, "--latent_space",
                 two_runs["a"] / "latent_space_size_4.npy", "--quiet")
    assert m["run"] == run_id(two_runs["a"])


def test_b_two_steps_from_two_runs_into_one_new_folder(tmp_path, two_runs, capsys):
    import json

    from conftest import run_main
    out = tmp_path / "figures"
    run_main("viz_kmeans_latent_space", "--output_dir", out, "--latent_space", two_runs["a"] / "latent_space_size_4.npy",
             "--quiet")
    marker = json.loads((out / "run.json").read_text())
    assert marker["run"] == run_id(two_runs["a"]) and marker["written_by"] == "viz_kmeans_latent_space.py"
    before = b_unchanged(out)
    b = two_runs["b"]
    line = b_refused("viz_generation", ["--output_dir", out, "--model_path", b / "model_latent_size_4.pth",
                                        "--test_data", b / "test_data.pth", "--quiet"], capsys)
    assert f"{out} holds the results of run {run_id(two_runs['a'])}" in line
    # nor does train.py start over the results of a run whose training lives elsewhere
    line = b_refused("train", ["--latent_size", "4", *TINY, "--resume", "--output_dir", out], capsys)
    assert "not a training to continue" in line
    assert b_unchanged(out) == before


def test_b_a_stopped_first_training_says_how_to_retry_in_its_folder(tmp_path, capsys):
    from conftest import run_main
    out = tmp_path / "out"
    diverging = ["--latent_size", "2", *TINY, "--output_dir", out]
    line = b_refused("train", [*diverging, *DIVERGING], capsys)
    assert line.endswith(f"lower --lr (now 1000), --beta (now 1e+06) and retry "
                         f"(with --overwrite, as {out} now holds this stopped run)")
    assert "--overwrite to replace it" in b_refused("train", diverging, capsys)
    run_main("train", *diverging, "--overwrite")
    assert (out / "model_latent_size_2.pth").is_file()

def test_b_resume_keeps_the_run_of_the_checkpoints_it_continues(tmp_path, two_runs):
    """benchmarks/quality.py's way: the 2-d model of one folder copied beside a new size, then --resume."""
    import shutil

    from conftest import run_main
    out = tmp_path / "next"
    out.mkdir()
    shutil.copy2(two_runs["a"] / "model_latent_size_2.pth", out)
    run_main("train", "--latent_size", "8", *TINY, "--resume", "--output_dir", out)
    assert run_id(out) == run_id(two_runs["a"])
    assert run_main("viz_reconstruction", "--output_dir", out, "--quiet", "--device", "cpu")["run"] == run_id(out)

# ================================================================ C: writes and loads
# (a real full disk, atomic pairs, umask modes, non-finite weights, malformed resume state, JSON)
import json
import math
import os
import re
import shutil
import subprocess

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from latentlab.store import artifacts, files
from latentlab.cli import UserError


def _exit_and_line(module: str, argv, capsys) -> tuple[int, str]:
    """A step's main through cli.run in this process, as its script runs it: (exit status, stderr)."""
    import importlib
    from latentlab.cli import run
    mod = importlib.import_module(module)
    try:
        run(mod.main, mod.parse_args([str(a) for a in argv]))
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs mounted under tmp_path: a real file system that fills up (root only)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def _fill(disk) -> None:
    """Fill the file system of disk to its last byte."""
    try:
        with open(disk / "filler", "wb", buffering=0) as f:
            while f.write(b"\0" * 4096):
                pass
    except OSError:  # ENOSPC: full
        pass


def _artifacts_in(folder) -> dict:
    """checksums of folder without the writer lock's file, which every run rewrites with its own pid."""
    return {k: v for k, v in checksums(folder).items() if k != ".latentlab.lock"}


def _temp_files(folder) -> list:
    return sorted(p.name for p in Path(folder).rglob(".*.tmp"))


def test_C_a_training_into_a_full_disk_stops_with_one_line_and_keeps_what_was_there(small_disk, capsys):
    """torch.save's zip writer raised RuntimeError on ENOSPC (a traceback): now a checkpoint
    larger than the disk's room gives one line and exit 2, and the files already there stay."""
    (small_disk / "notes.txt").write_text("a colleague's notes\n")
    before = _artifacts_in(small_disk)
    code, err = _exit_and_line("train", ["--latent_size", 2, "--dataset", "digits", "--model", "mlp", "--num_epochs", 1,
                                         "--output_dir", small_disk, "--quiet"], capsys)
    assert code == 2, err
    line = one_error_line(err)
    assert "No space left on device" in line and "model_latent_size_2.pth" in line
    after = _artifacts_in(small_disk)
    assert {k: after.get(k) for k in before} == before and not _temp_files(small_disk)


def _figure():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.imshow(np.random.default_rng(0).random((200, 200)))
    return fig


_LATENT_META = {"labels": [0, 1, 2, 3], "indices": [0, 1, 2, 3], "latent_size": 2, "dataset": "digits",
                "class_names": list("0123456789"), "family": "conv", "split": "test", "run": "a1"}
FULL_DISK_WRITES = {  # (what is written, the file whose old version must stay)
    "torch.save": (lambda d: files.save_torch({"w": torch.ones(20_000)}, d / "a.pth"), "a.pth"),
    "np.save": (lambda d: files.save_npy(np.ones(20_000), d / "a.npy"), "a.npy"),
    "JSON": (lambda d: files.save_json({"values": list(range(20_000))}, d / "a.json"), "a.json"),
    "savefig": (lambda d: files.save_figure(_figure(), d / "a.png"), "a.png"),
    "a latent pair": (lambda d: artifacts.save_latents(d / "latent_space_size_2.npy", np.ones((4000, 2)),
                                                        {**_LATENT_META, "labels": [0] * 4000, "indices": list(range(4000))}),
                      "latent_space_size_2.npy"),
}


@pytest.mark.parametrize("kind", FULL_DISK_WRITES)
def test_C_every_kind_of_write_into_a_full_disk_gives_one_line_and_keeps_the_old_file(small_disk, kind):
    write, name = FULL_DISK_WRITES[kind]
    if kind == "a latent pair":
        artifacts.save_latents(small_disk / name, np.zeros((4, 2)), _LATENT_META)
    else:
        (small_disk / name).write_bytes(b"the old version")
    _fill(small_disk)
    before = _artifacts_in(small_disk)
    with pytest.raises(UserError) as e:
        write(small_disk)
    assert "\n" not in str(e.value) and f"cannot write {small_disk}" in str(e.value) and "No space left" in str(e.value)
    assert _artifacts_in(small_disk) == before and not _temp_files(small_disk)
    if kind == "a latent pair":
        assert artifacts.load_latents(small_disk / name).z.shape == (4, 2)  # the old pair, whole


def test_C_a_pair_whose_second_rename_fails_is_put_back_whole(tmp_path, monkeypatch):
    """save_latents replaced the .json, then the .npy: a failure between them left a new JSON
    beside an old array. Now the group goes back to the old pair."""
    path = tmp_path / "latent_space_size_2.npy"
    artifacts.save_latents(path, np.zeros((4, 2)), _LATENT_META)
    before = _artifacts_in(tmp_path)
    replace, calls = os.replace, []

    def second_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return replace(src, dst)
    monkeypatch.setattr(os, "replace", second_fails)
    with pytest.raises(UserError, match="cannot write .*latent_space_size_2.json: No space left on device"):
        artifacts.save_latents(path, np.ones((6, 2)), {**_LATENT_META, "labels": [0] * 6, "indices": list(range(6))})
    monkeypatch.undo()
    assert _artifacts_in(tmp_path) == before and not _temp_files(tmp_path)
    assert (artifacts.load_latents(path).z == 0).all()


def test_C_a_torn_pair_is_refused_and_so_is_a_pair_without_the_hash(tmp_path):
    """A crash between the two renames (or a hand copy) leaves a JSON beside another array of the
    same shape: its SHA-256 says they do not belong together."""
    old, new = tmp_path / "old", tmp_path / "new"
    for folder, value in ((old, 0.0), (new, 1.0)):
        artifacts.save_latents(folder / "latent_space_size_2.npy", np.full((4, 2), value), _LATENT_META)
    shutil.copy(new / "latent_space_size_2.json", old / "latent_space_size_2.json")  # new JSON, old array
    with pytest.raises(UserError, match=r"latent_space_size_2.npy and .*latent_space_size_2.json do not belong "
                                         r"together .*; re-run encode_latent_space.py"):
        artifacts.load_latents(old / "latent_space_size_2.npy")
    meta = json.loads((new / "latent_space_size_2.json").read_text())
    del meta["npy_sha256"]
    (new / "latent_space_size_2.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="do not belong together"):
        artifacts.load_latents(new / "latent_space_size_2.npy")


def test_C_files_of_format_1_are_refused_in_one_line_by_the_step_that_reads_them_and_left_as_they_are(tmp_path, capsys):
    """A checkpoint (read by train.py --resume) and a latents sidecar (read by step 4) that an
    earlier version wrote: one line names the file and the step that writes it again."""
    ckpt = tmp_path / "model_latent_size_2.pth"
    files.save_torch({"kind": "checkpoint", "format_version": 1, "config": {"latent_size": 2}}, ckpt)
    latents = tmp_path / "latent_space_size_2.npy"
    artifacts.save_latents(latents, np.zeros((4, 2)), _LATENT_META)
    meta = json.loads(latents.with_suffix(".json").read_text())
    latents.with_suffix(".json").write_text(json.dumps({**meta, "format_version": 1}))
    before = _artifacts_in(tmp_path)
    line = run_refused("train", ["--latent_size", "2", "--dataset", "digits", "--model", "mlp", "--resume", "--quiet",
                                 "--output_dir", tmp_path], capsys)
    assert line == (f"error: {ckpt} was written by an earlier version of latentlab (format 1); "
                    f"re-run train.py with --overwrite")
    line = run_refused("viz_kmeans_latent_space", ["--latent_space", latents, "--output_dir", tmp_path, "--quiet"], capsys)
    assert line == (f"error: {latents.with_suffix('.json')} was written by an earlier version of latentlab (format 1); "
                    f"re-run encode_latent_space.py")
    assert _artifacts_in(tmp_path) == before


def test_C_a_latent_value_changed_on_disk_is_refused(tmp_path):
    """One flipped bit in the array's data keeps its header, shape and finiteness: the hash tells."""
    path = tmp_path / "latent_space_size_2.npy"
    artifacts.save_latents(path, np.ones((4, 2)), _LATENT_META)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # inside the last float32: 1.0 becomes another finite number
    path.write_bytes(bytes(data))
    assert np.isfinite(np.load(path)).all() and not (np.load(path) == 1).all()
    with pytest.raises(UserError, match="do not belong together"):
        artifacts.load_latents(path)


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_C_artifacts_get_the_mode_the_umask_gives_and_a_replaced_file_too(tmp_path, umask, mode):
    """Files were 0600 whatever the umask (mkstemp's mode survived the rename). A replaced file
    takes the umask's mode too, as a file written afresh would."""
    was = os.umask(umask)
    try:
        (tmp_path / "replaced.json").write_text("{}")
        (tmp_path / "replaced.json").chmod(0o600)
        written = [files.save_json({}, tmp_path / "new.json"), files.save_json({"a": 1}, tmp_path / "replaced.json"),
                   *artifacts.save_latents(tmp_path / "latent_space_size_2.npy", np.zeros((4, 2)), _LATENT_META)]
        assert os.umask(umask) == umask
    finally:
        os.umask(was)
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in written} == {p.name: oct(mode) for p in written}


def test_C_a_training_writes_every_artifact_with_the_umask_mode(trained):
    mask = os.umask(0o022)
    os.umask(mask)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in trained.iterdir() if p.is_file() and p.suffix != ".lock"
             and not p.name.startswith(".")}
    assert modes and set(modes.values()) == {oct(0o666 & ~mask)}, modes


def test_C_a_colleague_reads_what_was_written_and_is_told_plainly_what_they_cannot_read(tmp_path):
    """Another user (uid 65534) loads a checkpoint written under umask 022, and one made 0600:
    'cannot read ...: Permission denied', not 'may be truncated'."""
    import sys
    import tempfile
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv (util-linux) to run a process as another user")
    shared = Path(tempfile.mkdtemp(dir="/tmp"))  # pytest's tmp_path is private to its user
    try:
        shared.chmod(0o755)
        was = os.umask(0o022)
        try:
            artifacts.save_latents(shared / "latent_space_size_2.npy", np.zeros((4, 2)), _LATENT_META)
            files.save_json({"kind": "k", "format_version": files.FORMAT_VERSION}, shared / "private.json")
        finally:
            os.umask(was)
        (shared / "private.json").chmod(0o600)
        code = ("import sys; from latentlab.store import artifacts, files\n"
                "print(artifacts.load_latents(sys.argv[1]).z.shape)\n"
                "try: files.load_json(sys.argv[2], 'k', '')\n"
                "except Exception as e: print(e)")
        proc = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code,
                               shared / "latent_space_size_2.npy", shared / "private.json"],
                              cwd=ROOT, capture_output=True, text=True)
    finally:
        shutil.rmtree(shared)
    assert proc.stdout.splitlines() == ["(4, 2)", f"cannot read {shared / 'private.json'}: Permission denied; make it "
                                                  f"readable (chmod a+r) or pass a copy you can read"], proc.stderr


# ---------------------------------------------------------------- non-finite weights and numbers
NON_FINITE = {
    "NaN in the decoder's selected weights": (lambda c: c["state_dict"]["decoder.fc.0.weight"].__setitem__((0, 0), float("nan")),
                                              r"decoder.fc.0.weight in the weights"),
    "inf in the resume weights": (lambda c: c["resume"]["state_dict"]["to_latent.bias"].fill_(float("inf")),
                                  r"to_latent.bias in the resume weights"),
    "NaN in Adam's moments": (lambda c: c["resume"]["optimizer"]["state"][3]["exp_avg_sq"].fill_(float("nan")),
                              r"optimizer state exp_avg_sq of "),
}


@pytest.mark.parametrize("case", NON_FINITE)
def test_C_non_finite_weights_are_refused_with_one_line(trained_copy, capsys, case):
    """A checkpoint whose decoder held NaN passed the load checks, and step 2 wrote "psnr": Infinity."""
    change, name = NON_FINITE[case]
    edit_torch(trained_copy / "model_latent_size_8.pth", trained_copy / "model_latent_size_8.pth", change)
    before = _artifacts_in(trained_copy)
    code, err = _exit_and_line("viz_reconstruction", ["--output_dir", trained_copy, "--quiet"], capsys)
    assert code == 2
    assert re.search(rf"model_latent_size_8.pth holds non-finite weights \({name}.*\); the training diverged before "
                      rf"it was saved: retrain", one_error_line(err))
    assert _artifacts_in(trained_copy) == before


def test_C_json_holds_null_where_a_number_is_not_finite(tmp_path):
    from latentlab.analysis.scores import psnr
    assert math.isnan(psnr(float("nan"))) and psnr(0.0) == float("inf")  # NaN MSE is no perfect reconstruction
    path = files.save_json({"mse": float("nan"), "psnr": np.float32("inf"), "per_class": np.array([1.0, -np.inf]),
                             "t": torch.tensor(float("nan")), "n": np.int64(3)}, tmp_path / "m.json")

    def no_constants(name):
        raise ValueError(f"{name} is not JSON")
    assert json.loads(path.read_text(), parse_constant=no_constants) == {
        "mse": None, "psnr": None, "per_class": [1.0, None], "t": None, "n": 3}


def test_C_the_sweep_reads_a_metric_written_as_null(tmp_path):
    """A perfect reconstruction's PSNR is inf, written as null: the sweep still counts the job as
    finished, and its table shows the mean of what is there."""
    from latentlab.sweep import jobs, report
    record = {"kind": jobs.KIND, "format_version": files.FORMAT_VERSION, "family": "conv", "latent_size": 2,
              "settings": {"dataset": "digits", "seed": 0}, "metrics": {m: 0.5 for m in jobs.METRICS}}
    record["metrics"]["test_psnr"] = float("inf")
    m = jobs.load_finished(files.save_json(record, tmp_path / "metrics.json"), {})
    assert m["metrics"]["test_psnr"] is None
    row, = report.aggregate(report.run_rows([m]))
    assert math.isnan(row["test_psnr_mean"]) and row["test_mse_mean"] == 0.5


@pytest.mark.parametrize("field,value", [("labels", "[NaN, 1, 2, 3]"), ("latent_size", "NaN"), ("shape", "[4, Infinity]"),
                                         ("indices", "[0, 1, 2, -Infinity]")])
def test_C_a_latent_sidecar_with_nan_literals_is_refused(tmp_path, field, value):
    path = tmp_path / "latent_space_size_2.npy"
    artifacts.save_latents(path, np.zeros((4, 2)), _LATENT_META)
    meta = path.with_suffix(".json")
    text = re.sub(rf'"{field}": (\[[^\]]*\]|\d+)', f'"{field}": {value}', meta.read_text(), count=1)
    assert text != meta.read_text()
    meta.write_text(text)
    with pytest.raises(UserError) as e:
        artifacts.load_latents(path)
    assert "\n" not in str(e.value) and "re-run encode_latent_space.py" in str(e.value)


# ---------------------------------------------------------------- the whole resume state
RESUME_FLAGS = ["--latent_size", 8, "--dataset", "digits", "--num_epochs", 8, "--batch_size", 64, "--resume",
                "--snapshot_every", 0, "--quiet"]


def _params(c):
    return c["resume"]["optimizer"]["state"]


MALFORMED_RESUME = {
    "an optimizer moment of another shape": (lambda c: _params(c)[2].update(exp_avg=torch.zeros(3)),
                                             r"exp_avg of .* is torch.float32 \(3,\), the parameter is float"),
    "an optimizer for fewer parameters": (lambda c: c["resume"]["optimizer"]["param_groups"][0]["params"].pop(),
                                          "optimizer is not for the 12 parameters of its model"),
    "an optimizer entry without its moments": (lambda c: _params(c)[0].pop("exp_avg_sq"), "has a malformed entry 0"),
    "an optimizer without betas": (lambda c: c["resume"]["optimizer"]["param_groups"][0].pop("betas"),
                                   r"settings \(lr, betas, eps, weight_decay\) must be numbers"),
    "history lists of other lengths": (lambda c: c["history"]["val_loss"].pop(), "history's lists differ in length"),
    "a history that is not numbers": (lambda c: c["history"]["seconds"].__setitem__(0, "fast"), "lists of numbers"),
    "no best_epoch": (lambda c: c.pop("best_epoch"), "history and best_epoch do not run to the resume state's epoch 6"),
    "a best_epoch outside the history": (lambda c: c.update(best_epoch=17), "best_epoch 17 is not an epoch of its history"),
    "a resume epoch beyond the history": (lambda c: c["resume"].update(epoch=9), "do not run to the resume state's epoch 10"),
    "a record of other lengths": (lambda c: c["record"].update(val_loss=c["record"]["val_loss"][:2]),
                                  "training record .* is malformed"),
    "a record that is not a dict": (lambda c: c.update(record=[1, 2]), "training record .* is malformed"),
}


@pytest.mark.parametrize("case", MALFORMED_RESUME)
def test_C_a_malformed_resume_state_is_refused_before_anything_is_written(trained_copy, capsys, case):
    """--resume crashed on these (tracebacks), once after rewriting the 2-d checkpoint. The 8-d
    checkpoint is the later one: every model's resume state is checked before any write."""
    change, message = MALFORMED_RESUME[case]
    edit_torch(trained_copy / "model_latent_size_8.pth", trained_copy / "model_latent_size_8.pth", change)
    before = _artifacts_in(trained_copy)
    code, err = _exit_and_line("train", [*RESUME_FLAGS, "--output_dir", trained_copy], capsys)
    assert code == 2, err
    assert re.search(f"model_latent_size_8.pth is malformed: .*{message}.*; retrain to recreate it", one_error_line(err))
    assert _artifacts_in(trained_copy) == before


def _key_paths(obj, at=()):
    """Every key path of the nested dicts in obj (lists and tensors are leaves)."""
    for k, v in obj.items():
        yield (*at, k)
        if isinstance(v, dict):
            yield from _key_paths(v, (*at, k))


def _resume_from(ckpt, path) -> str:
    """load_resume of ckpt saved at path, as train.py --resume calls it: "resumed" or its UserError line."""
    from latentlab.train.checkpoint import load_resume
    from latentlab.settings import Settings
    from model.autoencoder import build_model
    import train
    torch.save(ckpt, path)
    settings = Settings.from_args(train.parse_args([str(a) for a in RESUME_FLAGS]))
    model = build_model(_WHOLE["config"])
    opt = torch.optim.Adam(model.parameters())
    try:
        load_resume(path, settings, model.config, {"dataset": _WHOLE["dataset"]}, model, opt)
        return "resumed"
    except UserError as e:
        assert "\n" not in str(e)
        return str(e)


_WHOLE = {}


@pytest.fixture
def whole(trained):
    """The trained 8-d checkpoint as a dict, loaded once."""
    if not _WHOLE:
        _WHOLE.update(torch.load(trained / "model_latent_size_8.pth", weights_only=True))
    return _WHOLE


def _at(ckpt, keys):
    for k in keys[:-1]:
        ckpt = ckpt[k]
    return ckpt


def test_C_a_resume_state_missing_any_key_is_refused_or_resumes(whole, tmp_path):
    """Each key of the checkpoint (nested ones too: optimizer, history, record) removed in turn:
    --resume either continues or stops with one UserError line, never with another exception."""
    import copy
    outcome = {}
    for keys in _key_paths(whole):
        ckpt = copy.deepcopy(whole)
        del _at(ckpt, keys)[keys[-1]]
        outcome[keys] = _resume_from(ckpt, tmp_path / "model_latent_size_8.pth")
    needed = [("resume",), ("history",), ("best_epoch",), ("resume", "optimizer", "state"), ("record", "xy"),
              ("resume", "optimizer", "state", 0, "exp_avg"), ("history", "val_loss"), ("config",)]
    assert all(outcome[k] != "resumed" for k in needed), {k: outcome[k] for k in needed}
    assert outcome[("versions",)] == outcome[("record",)] == "resumed"  # a note, and a record that starts afresh


JUNK = st.sampled_from([None, "text", float("nan"), float("inf"), -1, 10**6, True, [], {}, [1.0, "a"],
                        torch.zeros(3), torch.full((2, 2), float("nan")), torch.zeros(0, dtype=torch.uint8)])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pick=st.integers(0, 10**6), junk=JUNK)
def test_C_a_resume_state_with_any_value_replaced_is_refused_or_resumes(whole, tmp_path, pick, junk):
    import copy
    paths = list(_key_paths(whole))
    keys = paths[pick % len(paths)]
    ckpt = copy.deepcopy(whole)
    _at(ckpt, keys)[keys[-1]] = junk
    _resume_from(ckpt, tmp_path / "model_latent_size_8.pth")  # a UserError line or a resume, nothing else


# ================================================================ D: sizes, ranges and the fixes named
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


@pytest.mark.parametrize("module,argv,message", [
    ("train", ["--latent_size", 8, "--image_size", 100000], "--image_size: 100000 must be <= 1024"),
    ("explore_latent_space", ["--grid_size", 100000], "--grid_size: 100000 must be <= 256"),
    ("viz_generation", ["--grid_size", 100000], "--grid_size: 100000 must be <= 256"),
    ("viz_generation", ["--max_std", "1e308"], "--max_std: 1e308 must be <= 100"),
    ("viz_generation", ["--num_samples", 1000000000], "--num_samples: 1000000000 must be <= 1024"),
    ("train", ["--latent_size", 8, "--lr", "1e308"], "--lr: 1e308 must be <= 1000"),
    ("train", ["--latent_size", 8, "--beta", "inf"], "--beta: inf is not a finite number"),
    ("train", ["--latent_size", 8, "--channels", 100000], "--channels: 100000 must be <= 65536"),
    ("sweep_latent_size", ["--latent_sizes", 2, 10**9], "--latent_sizes: 1000000000 must be <= 65536"),
    ("sweep_latent_size", ["--max_parallel", 10**6], "--max_parallel: 1000000 must be <= 1024"),
])
def test_absurd_sizes_are_refused_when_parsed_naming_the_flag_and_its_bound(module, argv, message, capsys):
    assert message in parse_refused(module, argv, capsys)


def test_images_resized_past_the_memory_are_refused_before_any_allocation(tmp_path, capsys):
    # 60000 Fashion-MNIST images at 1024x1024 need about 140 GiB: refused before the resize starts
    data = Path("/usr/share/datasets/fashion-mnist")
    if not data.is_dir():
        pytest.skip("no Fashion-MNIST IDX files (apt-get install dataset-fashion-mnist)")
    out = tmp_path / "out"
    line = run_refused("train", ["--latent_size", 8, "--dataset", "fashion-mnist", "--data_dir", data,
                                 "--image_size", 1024, "--output_dir", out, "--quiet"], capsys)
    assert "not enough memory for 60000 images of 1x1024x1024" in line
    assert "lower --image_size (at most " in line
    assert written(out) == {}


def test_a_model_too_big_is_refused_before_it_is_built_naming_the_widths_set(tmp_path, capsys):
    out = tmp_path / "out"
    line = run_refused("train", ["--latent_size", 8, "--dataset", "digits", "--channels", 65536, "--dense", 65536,
                                 "--output_dir", out, "--quiet"], capsys)
    assert "the latent-2 conv model has" in line and "M parameters" in line
    assert line.endswith("lower --channels (now 65536), --dense (now 65536)")
    assert written(out) == {}


def test_a_divergence_names_the_settings_in_play_with_their_values(tmp_path, capsys):
    out = tmp_path / "out"
    line = run_refused("train", ["--latent_size", 2, "--dataset", "digits", "--model", "vae", "--num_epochs", 1,
                                 "--beta", "1e6", "--lr", 1000, "--snapshot_every", 0, "--output_dir", out,
                                 "--quiet"], capsys)
    assert "latent-2 vae model diverged" in line
    assert "lower --lr (now 1000), --beta (now 1e+06) and retry" in line
    assert not (out / "model_latent_size_2.pth").exists()


def test_the_fix_of_a_divergence_names_only_what_is_in_play():
    from latentlab.train.loop import divergence_fix
    from model.autoencoder import ModelConfig
    assert divergence_fix(0.003, ModelConfig(family="conv", latent_size=8)) == "--lr (now 0.003)"
    assert divergence_fix(0.5, ModelConfig(family="mlp", latent_size=8, noise_std=0.25, umap_weight=0.1)) == \
        "--lr (now 0.5), --noise_std (now 0.25), --umap_weight (now 0.1)"
    assert divergence_fix(0.5, ModelConfig(family="vae", latent_size=8, beta=1.0)) == "--lr (now 0.5)"
    assert divergence_fix(0.5, ModelConfig(family="conv", latent_size=8, beta=50.0)) == "--lr (now 0.5)"  # no KL term


def test_an_allocation_that_fails_is_worded_with_the_flags_that_size_it():
    import torch
    from latentlab.cli import UserError, memory_for
    with pytest.raises(UserError, match=r"^not enough memory for 10 samples: it needs 931322\.6 GiB and this machine "
                                        r"has .* GiB free; lower --num_samples$"):
        with memory_for("10 samples", "--num_samples", nbytes=10**15):
            pytest.fail("allocated")
    for failure in (MemoryError(), torch.OutOfMemoryError("CUDA out of memory"),
                    RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 10 bytes")):
        with pytest.raises(UserError, match=r"^not enough memory for a grid on this machine; lower --grid_size$"):
            with memory_for("a grid", "--grid_size"):
                raise failure
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):  # not a catch-all: other errors stay bugs
        with memory_for("a grid", "--grid_size"):
            raise RuntimeError("shapes cannot be multiplied")


@pytest.mark.parametrize("argv,message", [
    (["--datasets", "digits", "imagenet"], "--datasets: unknown dataset 'imagenet'; choose from: digits, mnist"),
    (["--datasets", "folder:/no/such/folder"], "--datasets folder:/no/such/folder: no such folder"),
    (["--datasets", "digits", "--models", "conv", "mlp", "--channels", 8], "--channels and --dense set the conv"),
    (["--datasets", "digits", "--models", "vae", "--bottleneck", "sphere"], "--bottleneck sphere: the VAE's code"),
])
def test_a_sweep_that_every_job_would_fail_is_refused_before_any_folder(tmp_path, capsys, argv, message):
    out = tmp_path / "sweep"
    assert message in run_refused("sweep_latent_size", [*argv, "--output_dir", out, "--quiet"], capsys)
    assert written(out) == {}


@pytest.mark.slow
def test_a_sweep_stopped_by_sigterm_stops_its_jobs_and_the_same_command_resumes_them(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    import psutil
    out = tmp_path / "sweep"
    flags = ["--datasets", "digits", "--models", "mlp", "--latent_sizes", 2, 4, "--num_epochs", 1, "--batch_size", 64,
             "--snapshot_every", 0, "--max_parallel", 2, "--output_dir", out, "--quiet"]
    sweep = subprocess.Popen([sys.executable, str(ROOT / "sweep_latent_size.py"), *map(str, flags)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (jobs := psutil.Process(sweep.pid).children(recursive=True)):  # the first job has started
            assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()
            time.sleep(0.05)
        sweep.send_signal(signal.SIGTERM)
        _, err = sweep.communicate(timeout=120)
    finally:
        sweep.kill()
    assert sweep.returncode == 143, err
    line, = err.strip().splitlines()
    assert re.fullmatch(r"interrupted by SIGTERM: stopped [12] running jobs?; re-run the same command to resume", line), line
    alive = [p.pid for p in jobs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"the sweep left its jobs running: {alive}"
    assert not list(out.rglob("error.json"))  # stopped, not failed: the next call resumes them
    again = run_script("sweep_latent_size.py", *flags[:-1])
    assert "2 done, 0 running, 0 failed, 0 left" in again.stdout


SCRIPTS = ["train", "viz_reconstruction", "encode_latent_space", "viz_latent_space", "viz_kmeans_latent_space",
           "classify_latent_space", "viz_generation", "explore_latent_space", "sweep_latent_size"]
BENCHMARKS = ["bench_chain", "bench_encode_kmeans", "bench_explorer", "bench_probes", "bench_projection", "bench_train",
              "neighbours_over_training", "quality", "training_budget"]


def parser_of(module):
    """The argparse parser a script or benchmark builds (caught as it parses), and what its
    required options need to parse."""
    import argparse

    class Built(Exception):
        pass

    def catch(self, args=None, namespace=None):
        raise Built(self)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_args", catch)
        with pytest.raises(Built) as built:
            (module.parse_args if hasattr(module, "parse_args") else module.main)([])
    parser = built.value.args[0]
    required = []
    for a in parser._actions:
        if a.required:
            required += ([a.option_strings[0]] if a.option_strings else []) + ["8"]
    return parser, required


@functools.cache
def numeric_options():
    """(script, its parser, its required options, flag, nargs) of every option with a type."""
    import importlib

    from conftest import load_benchmark
    found = []
    for name in SCRIPTS + BENCHMARKS:
        module = importlib.import_module(name) if name in SCRIPTS else load_benchmark(name)
        parser, required = parser_of(module)
        for a in parser._actions:
            if a.option_strings and a.type is not None and a.type not in (str,):
                found.append((name, parser, required, a.option_strings[0], a.nargs))
    return found


def test_every_numeric_option_of_every_script_has_an_upper_bound():
    import math
    unbounded = []
    assert len(numeric_options()) > 60
    for name, parser, required, flag, _ in numeric_options():
        for huge in ("1" + "0" * 30, "1e300"):
            try:
                value = parser.parse_args([*required, flag, huge] if flag not in required else [flag, huge])
            except SystemExit:
                continue
            v = getattr(value, parser._option_string_actions[flag].dest)
            v = v[0] if isinstance(v, list) else v
            if not (isinstance(v, float) and math.isfinite(v) and v < 1e6):
                unbounded.append(f"{name} {flag} {huge}")
    assert unbounded == []


@pytest.mark.slow
def test_fuzzed_numeric_options_parse_or_are_refused_in_one_line():
    import contextlib
    import io

    from hypothesis import HealthCheck, given, settings, strategies as st
    values = st.one_of(st.sampled_from(["0", "-1", "nan", "-nan", "inf", "-inf", "1e308", "1e309", "-1e308", "", " ",
                                        "abc", "1.5", "0x10", "1_000", "9" * 400, "1e-320", "\x00", "٣", "+5", "--"]),
                       st.integers().map(str), st.floats().map(str), st.text(max_size=8))

    @settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
    @given(option=st.sampled_from(numeric_options()), value=values)
    def check(option, value):
        name, parser, required, flag, nargs = option
        err = io.StringIO()
        argv = [*(required if flag not in required else []), f"{flag}={value}"]
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                parser.parse_args(argv)
            except SystemExit as e:
                assert e.code == 2, (name, argv, e.code)
                lines = err.getvalue().strip().splitlines()
                assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in lines[0], (name, argv, lines)
    check()


@pytest.mark.parametrize("argv,flag", [(["--mode", "sample", "--num_samples", 1024], "--num_samples"),
                                       (["--mode", "traverse", "--grid_size", 256], "--grid_size")])
def test_generation_past_the_free_memory_is_refused_before_decoding(trained_copy, monkeypatch, capsys, argv, flag):
    from latentlab import cli
    monkeypatch.setattr(cli, "memory_available", lambda device=None: 2**10)  # a machine with 1 KiB free
    before = checksums(trained_copy)
    line = run_refused("viz_generation", [*argv, "--output_dir", trained_copy, "--device", "cpu", "--quiet"], capsys)
    assert re.fullmatch(rf"error: not enough memory for \d+ decoded images of 1x8x8: it needs .* GiB and this "
                        rf"machine has 0\.0 GiB free; lower {flag}", line), line
    assert written(trained_copy) == {k: v for k, v in before.items() if k != ".latentlab.lock"}


# ================================================================ H1: one probe engine, step 6's predictions
from conftest import run_main  # noqa: E402


def test_heldout_on_training_latents_of_one_class_is_one_line_and_writes_nothing(trained_copy, capsys):
    """The held-out protocol's training rows are checked as cross-validation's folds are: one class
    among the training latents is a user error naming the flag that gives more, not a traceback."""
    for split, count in (("test", "all"), ("train", 1)):
        run_main("encode_latent_space", "--output_dir", trained_copy, "--split", split, "--num_samples", count, "--quiet")
    before = written(trained_copy)
    line = run_refused("classify_latent_space", ["--output_dir", trained_copy, "--protocol", "heldout", "--quiet",
                                                 "--device", "cpu"], capsys)
    assert line == ("error: the training rows hold a single class; a classifier needs at least two; encode more "
                    "training images with encode_latent_space.py --split train --num_samples"), line
    assert written(trained_copy) == before
