"""No run replaces another run's results: a training over another run's folder is refused, an
--overwrite replaces the whole run only once it has succeeded (a kill or a failure leaves the earlier
run in place), steps refuse inputs of two runs, and --resume continues its own run."""
from pathlib import Path

import pytest

from conftest import checksums, one_error_line



TINY = ["--dataset", "digits", "--num_epochs", "1", "--snapshot_every", "0", "--batch_size", "64", "--quiet"]
# a training that diverges in its first epoch, within every flag's range
DIVERGING = ["--model", "vae", "--beta", "1e6", "--lr", "1000"]


def unchanged(folder) -> dict:
    """checksums without the writer lock's file, which every run through cli.run rewrites with its pid."""
    from latentlab.store.locking import LOCK_NAME
    return {k: v for k, v in checksums(folder).items() if k != LOCK_NAME}


def step_refused(module: str, argv, capsys, code: int = 2) -> str:
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


def test_a_training_over_another_runs_folder_is_refused_and_changes_nothing(run_a, capsys):
    before = unchanged(run_a)
    for flags in (["--latent_size", "8"], ["--latent_size", "4"]):  # other flags, and the same ones
        line = step_refused("train", [*flags, *TINY, "--output_dir", run_a], capsys)
        assert f"{run_a} holds the training of run {run_id(run_a)} (digits, latent sizes 2 and 4)" in line
        assert "--overwrite to replace it, --resume to continue it, or choose another --output_dir" in line
    assert unchanged(run_a) == before


def test_a_failed_overwrite_leaves_the_earlier_run_byte_identical(run_a, capsys, monkeypatch):
    before = unchanged(run_a)
    line = step_refused("train", ["--latent_size", "8", *TINY, *DIVERGING, "--overwrite",
                               "--output_dir", run_a], capsys)
    assert "diverged" in line and f"holds run {run_id(run_a)} (digits, latent sizes 2 and 4) as before" in line
    assert "is kept" not in line  # the new run's checkpoints are removed: the line never says otherwise
    assert unchanged(run_a) == before
    # Ctrl-C (or any other exception) late in the run, after both models trained: the same
    import latentlab.train.report

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(latentlab.train.report, "print_summary", interrupted)
    step_refused("train", ["--latent_size", "8", *TINY[:-1], "--overwrite", "--output_dir", run_a], capsys, code=130)
    assert unchanged(run_a) == before


def test_a_successful_overwrite_replaces_the_whole_run(run_a, two_runs, capsys):
    from conftest import run_main
    from latentlab.store import artifacts, checkpoints, latent_files
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
    assert checkpoints.load_checkpoint(run_a / "model_latent_size_2.pth")["run"] == new
    # the later steps run on the new run alone, and record it
    run_main("encode_latent_space", "--output_dir", run_a, "--quiet", "--device", "cpu")
    m = run_main("viz_kmeans_latent_space", "--output_dir", run_a, "--quiet")
    assert m["run"] == new and latent_files.load_latents(run_a / "latent_space_size_8.npy").meta["run"] == new


def test_kmeans_with_another_runs_latents_is_refused(run_a, two_runs, capsys):
    before = unchanged(run_a)
    line = step_refused("viz_kmeans_latent_space", ["--output_dir", run_a, "--latent_space",
                                                 two_runs["b"] / "latent_space_size_4.npy", "--quiet"], capsys)
    assert (f"{run_a} holds the results of run {run_id(run_a)} (digits, latent sizes 2 and 4); these inputs are of "
            f"run {run_id(two_runs['b'])} (digits) in {two_runs['b']}: write into {two_runs['b']}") in line
    assert unchanged(run_a) == before


def test_generation_with_another_runs_model_and_test_data_is_refused(run_a, two_runs, capsys):
    before = unchanged(run_a)
    b = two_runs["b"]
    line = step_refused("viz_generation", ["--output_dir", run_a, "--model_path", b / "model_latent_size_4.pth",
                                        "--test_data", b / "test_data.pth", "--quiet"], capsys)
    assert f"holds the results of run {run_id(run_a)}" in line and f"write into {b}" in line
    # a model of run B beside run A's test data of the same names: two trainings, refused before anything
    line = step_refused("viz_generation", ["--output_dir", run_a, "--model_path", b / "model_latent_size_4.pth",
                                        "--quiet"], capsys)
    assert f"is of run {run_id(run_a)} but {b / 'model_latent_size_4.pth'} of run {run_id(b)}" in line
    assert unchanged(run_a) == before


def test_a_val_fraction_that_leaves_no_training_image_writes_nothing(tmp_path, capsys):
    import numpy as np
    from PIL import Image
    root = tmp_path / "images"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):  # 3 per class: 1 test image and 2 training images each
            Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(root / c / f"{i}.png")
    out = tmp_path / "out"
    line = step_refused("train", ["--latent_size", "2", "--dataset", f"folder:{root}", "--val_fraction", "0.9",
                               "--output_dir", out, "--quiet"], capsys)
    assert "--val_fraction 0.9 holds out all 4 training images" in line and "lower --val_fraction" in line
    assert unchanged(out) == {}


def test_resume_continues_its_own_run_and_refuses_another_shape(run_a, capsys):
    from conftest import run_main
    from latentlab.store import checkpoints
    old, data_before = run_id(run_a), (run_a / "test_data.pth").read_bytes()
    before = unchanged(run_a)
    line = step_refused("train", ["--latent_size", "8", *TINY, "--resume", "--output_dir", run_a], capsys)
    assert "--resume:" in line and "not a training of latent sizes 2 and 8" in line
    line = step_refused("train", ["--latent_size", "4", *TINY, "--resume", "--lr", "0.01", "--output_dir", run_a], capsys)
    assert "lr=0.003, not 0.01" in line
    line = step_refused("train", ["--latent_size", "4", *TINY, "--resume", "--dataset", "fashion-mnist",
                               "--data_dir", run_a / "nothing", "--output_dir", run_a], capsys)
    assert unchanged(run_a) == before  # every refused resume wrote nothing
    run_main("train", "--latent_size", "4", *TINY, "--num_epochs", "2", "--resume", "--output_dir", run_a)
    ckpt = checkpoints.load_checkpoint(run_a / "model_latent_size_4.pth")
    assert len(ckpt["history"]["epoch"]) == 2 and ckpt["run"] == old == run_id(run_a)
    assert (run_a / "test_data.pth").read_bytes() == data_before  # the run's test data, kept as it was


def test_a_killed_overwrite_leaves_the_earlier_run_working_and_resumes(run_a, two_runs, capsys):
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
    line = step_refused("train", ["--latent_size", "4", *TINY, "--output_dir", run_a], capsys)
    assert f"{staged}, the new run of a stopped --overwrite: --overwrite --resume continues it" in line
    run_main("train", "--latent_size", "4", *TINY, "--seed", "1", "--overwrite", "--resume", "--output_dir", run_a)
    assert run_id(run_a) == run_id(two_runs["b"]) and not staged.exists()
    assert not (run_a / "kmeans_latent_space_latent_size_4.png").exists()  # run A's results went with it


def test_a_swap_stopped_midway_is_finished_by_the_next_writer(run_a, two_runs):
    """A kill between the renames of the swap: the earlier files half in .replacing, the new run staged."""
    import json
    import shutil

    import viz_kmeans_latent_space
    from latentlab.cli import run
    new = unchanged(two_runs["b"])
    staged, replacing = run_a / ".overwrite", run_a / ".replacing"
    shutil.copytree(two_runs["b"], staged)
    replacing.mkdir()
    for name in ("model_latent_size_2.pth", "test_data.pth"):
        (run_a / name).rename(replacing / name)
    run(viz_kmeans_latent_space.main, viz_kmeans_latent_space.parse_args(["--output_dir", str(run_a), "--quiet"]))
    assert json.loads((run_a / "kmeans_latent_space_latent_size_4.json").read_text())["run"] == run_id(two_runs["b"])
    now = unchanged(run_a)
    assert {k: now[k] for k in new} == new and not {".overwrite", ".replacing", ".replaced"} & {p.name for p in run_a.iterdir()}


@pytest.mark.parametrize("marker,message", [
    ("{not json", "run.json is not valid JSON"),
    ('{"kind": "latents", "format_version": 2}', "run.json is not a run file"),
    ('{"kind": "run", "format_version": 2, "run": "../../x", "dataset": "d", "latent_sizes": [2]}', "run.json is malformed"),
])
def test_a_run_json_that_is_not_a_run_marker_is_refused_in_one_line(run_a, two_runs, capsys, marker, message):
    (run_a / "run.json").write_text(marker)
    before = unchanged(run_a)
    assert message in step_refused("viz_kmeans_latent_space", ["--output_dir", run_a, "--quiet"], capsys)
    assert message in step_refused("train", ["--latent_size", "4", *TINY, "--output_dir", run_a], capsys)
    assert unchanged(run_a) == before


def test_a_folder_with_a_run_json_alone_is_a_run(tmp_path, two_runs, capsys):
    import shutil

    from conftest import run_main
    out = tmp_path / "marked"
    out.mkdir()
    shutil.copy(two_runs["a"] / "run.json", out / "run.json")
    assert "holds the training of run" in step_refused("train", ["--latent_size", "4", *TINY, "--output_dir", out], capsys)
    line = step_refused("viz_kmeans_latent_space", ["--output_dir", out, "--latent_space",
                                                 two_runs["b"] / "latent_space_size_4.npy", "--quiet"], capsys)
    assert "holds the results of run" in line
    m = run_main("viz_kmeans_latent_space", "--output_dir", out, "--latent_space",
                 two_runs["a"] / "latent_space_size_4.npy", "--quiet")
    assert m["run"] == run_id(two_runs["a"])


def test_two_steps_from_two_runs_into_one_new_folder(tmp_path, two_runs, capsys):
    import json

    from conftest import run_main
    out = tmp_path / "figures"
    run_main("viz_kmeans_latent_space", "--output_dir", out, "--latent_space", two_runs["a"] / "latent_space_size_4.npy",
             "--quiet")
    marker = json.loads((out / "run.json").read_text())
    assert marker["run"] == run_id(two_runs["a"]) and marker["written_by"] == "viz_kmeans_latent_space.py"
    before = unchanged(out)
    b = two_runs["b"]
    line = step_refused("viz_generation", ["--output_dir", out, "--model_path", b / "model_latent_size_4.pth",
                                        "--test_data", b / "test_data.pth", "--quiet"], capsys)
    assert f"{out} holds the results of run {run_id(two_runs['a'])}" in line
    # nor does train.py start over the results of a run whose training lives elsewhere
    line = step_refused("train", ["--latent_size", "4", *TINY, "--resume", "--output_dir", out], capsys)
    assert "not a training to continue" in line
    assert unchanged(out) == before


def test_a_stopped_first_training_says_how_to_retry_in_its_folder(tmp_path, capsys):
    from conftest import run_main
    out = tmp_path / "out"
    diverging = ["--latent_size", "2", *TINY, "--output_dir", out]
    line = step_refused("train", [*diverging, *DIVERGING], capsys)
    assert line.endswith(f"lower --lr (now 1000), --beta (now 1e+06) and retry "
                         f"(with --overwrite, as {out} now holds this stopped run)")
    assert "--overwrite to replace it" in step_refused("train", diverging, capsys)
    run_main("train", *diverging, "--overwrite")
    assert (out / "model_latent_size_2.pth").is_file()

def test_resume_keeps_the_run_of_the_checkpoints_it_continues(tmp_path, two_runs):
    """benchmarks/quality.py's way: the 2-d model of one folder copied beside a new size, then --resume."""
    import shutil

    from conftest import run_main
    out = tmp_path / "next"
    out.mkdir()
    shutil.copy2(two_runs["a"] / "model_latent_size_2.pth", out)
    run_main("train", "--latent_size", "8", *TINY, "--resume", "--output_dir", out)
    assert run_id(out) == run_id(two_runs["a"])
    assert run_main("viz_reconstruction", "--output_dir", out, "--quiet", "--device", "cpu")["run"] == run_id(out)
