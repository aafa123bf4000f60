"""Hostile files, crashes and bad input lose nothing: safe and validated loads, atomic writes with
resume after a kill, training guards, option checks, and one line with exit status 2 for users."""
import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings, strategies as st

import train
from conftest import ROOT, edit_torch, run_meta, run_script
from latentlab.store import artifacts, checkpoints, latent_files
from latentlab.store.files import FORMAT_VERSION
from latentlab.cli import UserError, run
from latentlab.data.datasets import load_dataset
from latentlab.settings import Settings
from latentlab.train.loop import TrainingSplit, train_model
from model.autoencoder import Autoencoder, ModelConfig


def one_error_line(proc_or_err: str) -> str:
    lines = proc_or_err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in proc_or_err, proc_or_err
    return lines[0]


@pytest.fixture
def one_thread():
    """In-process trainings on one thread: two threads on a busy two-core machine spin, ~30x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def run_in_process(argv, capsys) -> str:
    """train.py's main through cli.run, as the script runs it; returns its one error line."""
    with pytest.raises(SystemExit) as e:
        run(train.main, train.parse_args(argv))
    assert e.value.code == 2
    return capsys.readouterr().err


# ---------------------------------------------------------------- hostile files
class MakesMarker:
    """Unpickling this calls open(marker, "w"): a stand-in for any code a hostile file could run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def hostile(tmp_path):
    """Files that create `marker` when unpickled: a .pth in torch's zip format and in the raw
    pickle format, and an .npy holding a pickled object array (with a valid sibling .json)."""
    marker = tmp_path / "marker"
    payload = MakesMarker(marker)
    files = {"zip": tmp_path / "zip.pth", "raw": tmp_path / "raw.pth", "npy": tmp_path / "latents.npy"}
    torch.save({"kind": "checkpoint", "format_version": FORMAT_VERSION, "state_dict": {}, "x": payload}, files["zip"])
    torch.save({"kind": "checkpoint", "x": payload}, files["raw"], _use_new_zipfile_serialization=False)
    np.save(files["npy"], np.array([payload, 1], dtype=object), allow_pickle=True)
    (tmp_path / "latents.json").write_text(json.dumps({"kind": "latents", "format_version": FORMAT_VERSION, "labels": [0, 1]}))
    # the control: an unsafe load of each does run the payload
    torch.load(files["zip"], weights_only=False)
    assert marker.exists()
    marker.unlink()
    np.load(files["npy"], allow_pickle=True)
    assert marker.exists()
    marker.unlink()
    return files, marker


@pytest.mark.parametrize("loader", [checkpoints.load_checkpoint, artifacts.load_test_data, artifacts.load_pca_baseline])
@pytest.mark.parametrize("fmt", ["zip", "raw"])
def test_pickled_code_in_a_pth_is_refused_and_never_runs(hostile, loader, fmt):
    files, marker = hostile
    with pytest.raises(UserError, match=r"was refused: it asks to import io\.open.*runs no code"):
        loader(files[fmt])
    assert not marker.exists()


def test_pickled_objects_in_latents_are_refused_and_never_run(hostile):
    files, marker = hostile
    with pytest.raises(UserError, match="was refused: it holds pickled Python objects"):
        latent_files.load_latents(files["npy"])
    assert not marker.exists()


def test_a_folder_or_other_bytes_given_as_latents_are_named_for_what_they_are(tmp_path):
    """np.load reads bytes without NumPy's header as a pickle: the message says the file is no .npy."""
    other = tmp_path / "odd name é.npy"
    other.write_bytes(b"not an array")
    with pytest.raises(UserError, match=r"odd name é.npy is not a .npy file \(no NumPy header\)"):
        latent_files.load_latents(other)
    with pytest.raises(UserError, match="is a folder; pass a latent_space_size_{N}.npy"):
        latent_files.load_latents(tmp_path)


@pytest.mark.slow
def test_resume_from_a_hostile_checkpoint_is_refused_through_the_script(hostile, tmp_path):
    files, marker = hostile
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(files["zip"], out / "model_latent_size_2.pth")
    proc = run_script("train.py", "--latent_size", 2, "--dataset", "digits", "--num_epochs", 1, "--model", "mlp",
                      "--output_dir", out, "--resume", "--quiet", check=False)
    assert proc.returncode == 2
    assert "model_latent_size_2.pth was refused: it asks to import io.open" in one_error_line(proc.stderr)
    assert not marker.exists()


def test_no_module_loads_files_unsafely():
    """Every .pth goes through torch.load(weights_only=True) and every .npy through
    np.load(allow_pickle=False); nothing unpickles."""
    sources = [p for d in ("latentlab", "model") for p in (ROOT / d).glob("*.py")] + list(ROOT.glob("*.py"))
    for p in sources:
        for line in p.read_text().splitlines():
            for call, safe in (("torch.load(", "weights_only=True"), ("np.load(", "allow_pickle=False"),
                               ("numpy.load(", "allow_pickle=False"), ("pickle.load", "never")):
                assert call not in line or safe in line, f"{p.name}: {line.strip()}"


# ---------------------------------------------------------------- validation on load
CHECKPOINT_DEFECTS = {
    "weights that are not tensors": (lambda c: c["state_dict"].update({"to_latent.bias": [0.0] * 8}),
                                     "must map parameter names to tensors"),
    "a family that does not exist": (lambda c: c["config"].update(family="transformer"),
                                     "model family 'transformer' is not one of conv, mlp, vae"),
    "a config the weights do not fit": (lambda c: c["config"].update(latent_size=5),
                                        r"the weights: decoder.fc.0.weight is torch.float32 \(512, 8\), its config builds float \(512, 5\)"),
    "a config that does not build": (lambda c: c["config"].update(channels="wide"),
                                     "its model config does not build"),
    "resume weights of another model": (lambda c: c["resume"]["state_dict"].pop("to_latent.bias"),
                                        "the resume weights do not fit its config"),
    "an earlier format version": (lambda c: c.update(format_version=1), r"bad.pth was written by an earlier version of "
                                                                      r"latentlab \(format 1\); re-run train.py"),
    "a config without a field": (lambda c: c["config"].pop("bottleneck"), "its model config must hold plain values of"),
    "a training record without a setting": (lambda c: c["train"].pop("precision"), "the training settings must be"),
    "no run id": (lambda c: c.pop("run"), "is malformed: no run id"),
    "a dataset of another image shape": (lambda c: c["dataset"].update(image_shape=[3, 8, 8]),
                                         r"dataset's image shape \[3, 8, 8\] differs"),
}


@pytest.mark.parametrize("defect", CHECKPOINT_DEFECTS)
def test_a_malformed_checkpoint_is_refused_with_what_is_wrong(trained, tmp_path, defect):
    change, message = CHECKPOINT_DEFECTS[defect]
    path = edit_torch(trained / "model_latent_size_8.pth", tmp_path / "bad.pth", change)
    with pytest.raises(UserError, match=message):
        checkpoints.load_checkpoint(path)


def test_each_loader_wants_its_own_kind(trained):
    with pytest.raises(UserError, match="is a test_data, not a checkpoint"):
        checkpoints.load_checkpoint(trained / "test_data.pth")
    with pytest.raises(UserError, match="is a checkpoint, not a pca_baseline"):
        artifacts.load_pca_baseline(trained / "model_latent_size_2.pth")
    with pytest.raises(UserError, match="does not exist; run train.py first"):
        artifacts.load_test_data(trained / "nothing.pth")
    with pytest.raises(UserError, match="is not a file"):
        checkpoints.load_checkpoint(trained)


@pytest.mark.parametrize("change,message", [
    (lambda d: d.update(labels=d["labels"].float()), "labels must be one integer per image"),
    (lambda d: d["labels"].__setitem__(0, 10), r"labels must lie in 0..9"),
    (lambda d: d.update(images=d["images"].float()), "images must be a non-empty uint8"),
])
def test_malformed_test_data_is_refused(trained, tmp_path, change, message):
    with pytest.raises(UserError, match=message):
        artifacts.load_test_data(edit_torch(trained / "test_data.pth", tmp_path / "t.pth", change))


def test_malformed_pca_baseline_is_refused(trained, tmp_path):
    path = edit_torch(trained / "pca_baseline.pth", tmp_path / "p.pth", lambda p: p.update(components=p["components"][:, :10]))
    with pytest.raises(UserError, match=r"components must be a float \(k, 64\) matrix"):
        artifacts.load_pca_baseline(path)


def test_mismatches_between_files_name_both_sides(trained, tmp_path):
    ckpt = checkpoints.load_checkpoint(trained / "model_latent_size_8.pth")
    data = artifacts.load_test_data(trained / "test_data.pth")
    artifacts.check_test_data_matches(data, ckpt, "t", "model_latent_size_8.pth")  # the files of one training agree
    with pytest.raises(UserError, match="belongs to model_latent_size_2.pth, model_latent_size_8.pth, not to other/M.pth"):
        artifacts.check_test_data_matches(data, ckpt, "T.pth", "other/M.pth")
    pca = artifacts.load_pca_baseline(trained / "pca_baseline.pth")
    artifacts.check_pca_matches(pca, data, "p", "t", [2, 8])
    with pytest.raises(UserError, match=r"P.pth has \d+ components, latent size 99 needs 64"):
        artifacts.check_pca_matches({**pca, "components": pca["components"][:8]}, data, "P.pth", "T.pth", [2, 99])
    data["dataset"] = "mnist"
    with pytest.raises(UserError, match="test data T.pth is from dataset 'mnist' but model M.pth was trained on 'digits'"):
        artifacts.check_test_data_matches(data, ckpt, "T.pth", "M.pth")
    with pytest.raises(UserError, match=r"PCA baseline P.pth is for digits images of shape \(1, 8, 8\) but T.pth holds mnist"):
        artifacts.check_pca_matches(pca, data, "P.pth", "T.pth", [2, 8])
    z_path = tmp_path / "latent_space_size_2.npy"
    latent_files.save_latents(z_path, np.zeros((4, 2)), {"labels": [0, 1, 2, 3], "indices": [0, 1, 2, 3], "dataset": "digits",
                                                      "latent_size": 2, "class_names": list("0123456789"),
                                                      "family": "conv", "split": "test", "run": "a1"})
    latents = latent_files.load_latents(z_path)
    with pytest.raises(UserError, match=r"latent_space_size_2.npy was encoded from dataset 'digits' but T.pth holds 'mnist'"):
        latent_files.check_latents_match(latents, data, "T.pth")
    data["dataset"] = "digits"
    with pytest.raises(UserError, match=r"labels stored with .* differ from those of the same items in T.pth"):
        latent_files.check_latents_match(latents, data, "T.pth")


@pytest.mark.parametrize("meta,message", [
    ({"latent_size": 3}, "holds latents of size 2 but .* says latent_size 3"),
    ({"labels": [0, 1, 2]}, "has 3 integer labels for 4 latents"),
    ({"labels": [0, 1, 2, 12]}, "has labels outside its 10 classes"),
    ({"indices": [0, 1]}, "does not say which test items were encoded"),
    ({"class_names": None}, "has no class names, dataset, family, split or run id"),
    ({"split": None}, "has no class names, dataset, family, split or run id"),
    ({"run": "../a1"}, "has no class names, dataset, family, split or run id"),
    ({"format_version": 1}, r"was written by an earlier version of latentlab \(format 1\); re-run encode_latent_space.py"),
    ({"npy_sha256": None}, "do not belong together"),
    ({"shape": [5, 2]}, "do not belong together"),
])
def test_latents_that_contradict_their_meta_are_refused(tmp_path, meta, message):
    path = tmp_path / "latent_space_size_2.npy"
    np.save(path, np.zeros((4, 2), dtype=np.float32))
    whole = {"kind": "latents", "format_version": FORMAT_VERSION, "labels": [0, 1, 2, 3], "indices": [0, 1, 2, 3],
             "latent_size": 2, "dataset": "digits", "class_names": list("0123456789"), "family": "conv", "split": "test",
             "run": "a1", "shape": [4, 2], "npy_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    path.with_suffix(".json").write_text(json.dumps({**whole, **meta}))
    with pytest.raises(UserError, match=message):
        latent_files.load_latents(path)


# ---------------------------------------------------------------- any bytes: only UserError
@pytest.fixture(scope="module")
def samples(trained, tmp_path_factory):
    """The bytes of every real artifact, and a folder for the fuzzed copies."""
    work = tmp_path_factory.mktemp("fuzz")
    latent_files.save_latents(work / "real.npy", np.random.default_rng(0).normal(size=(30, 8)),
                           {"labels": [i % 10 for i in range(30)], "indices": list(range(30)), "latent_size": 8,
                            "dataset": "digits", "class_names": list("0123456789"), "family": "conv", "split": "test",
                            "run": "a1"})
    real = {"checkpoint": (trained / "model_latent_size_8.pth").read_bytes(),
            "test_data": (trained / "test_data.pth").read_bytes(),
            "pca_baseline": (trained / "pca_baseline.pth").read_bytes(),
            "latents": (work / "real.npy").read_bytes(), "latents_json": (work / "real.json").read_bytes()}
    return real, work


LOADERS = {"checkpoint": checkpoints.load_checkpoint, "test_data": artifacts.load_test_data,
           "pca_baseline": artifacts.load_pca_baseline, "latents": latent_files.load_latents}


def _load_bytes(work, kind, data, meta=None):
    """Write data where `kind`'s loader reads it (latents: with its .json) and load it."""
    path = work / ("fuzz.npy" if kind == "latents" else "fuzz.pth")
    path.write_bytes(data)
    if kind == "latents":
        path.with_suffix(".json").write_bytes(meta)
    return LOADERS[kind](path)


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(kind=st.sampled_from(sorted(LOADERS)), data=st.binary(max_size=400) | st.binary(max_size=60).map(
    lambda b: b"PK\x03\x04" + b if len(b) % 2 else b"\x80\x02" + b))  # also bytes that open like a zip or a pickle
def test_random_bytes_are_refused_cleanly(samples, kind, data):
    real, work = samples
    with pytest.raises(UserError):
        _load_bytes(work, kind, data, real["latents_json"])


@FUZZ
@given(kind=st.sampled_from(sorted(LOADERS) + ["latents_json"]), cut=st.floats(0.0, 0.999))
@example(kind="latents_json", cut=0.998046875)  # found by CI: only the final newline cut
def test_truncated_artifacts_are_refused_cleanly(samples, kind, cut):
    real, work = samples
    whole = real[kind]
    part = whole[:int(len(whole) * cut)]
    assume(whole[len(part):].strip())  # a cut of the final newline alone leaves a complete JSON file
    with pytest.raises(UserError):
        if kind == "latents_json":
            _load_bytes(work, "latents", real["latents"], part)
        else:
            _load_bytes(work, kind, part, real["latents_json"])


@FUZZ
@given(kind=st.sampled_from(sorted(LOADERS)), flips=st.lists(st.tuples(st.floats(0, 0.999), st.integers(1, 255)),
                                                             min_size=1, max_size=8))
def test_corrupted_artifacts_load_or_are_refused_never_crash(samples, kind, flips):
    real, work = samples
    data = bytearray(real[kind])
    for where, xor in flips:
        data[int(where * len(data))] ^= xor
    try:  # a flipped weight still loads; anything else must be refused with one line
        _load_bytes(work, kind, bytes(data), real["latents_json"])
    except UserError:
        pass


# ---------------------------------------------------------------- atomic writes, resume after a kill
def test_a_killed_training_resumes_to_the_weights_of_an_uninterrupted_one(trained, tmp_path):
    """SIGKILL once the first checkpoint is on disk (the next epoch is running), then --resume:
    the same flags as the `trained` run end with its weights, bit for bit."""
    out = tmp_path / "out"
    flags = ["--latent_size", "8", "--dataset", "digits", "--num_epochs", "6", "--batch_size", "64",
             "--output_dir", str(out), "--quiet"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *flags], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = out / "model_latent_size_2.pth"
    guard = time.monotonic() + 600  # against a hang only; no assertion on time
    while not first.exists() and proc.poll() is None and time.monotonic() < guard:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "train.py ended before it could be killed"
    killed_at = checkpoints.load_checkpoint(first)  # never torn: the old file or the new one
    assert killed_at["resume"]["epoch"] < 5 and not (out / "model_latent_size_8.pth").exists()
    # what a kill in the middle of a write leaves: a temp file of ours (removed) and of someone else (kept)
    (out / ".model_latent_size_8.pth.x1y2z3_4.tmp").write_bytes(b"half a checkpoint")
    (out / ".notes.txt.abcdefgh.tmp").write_bytes(b"not ours")
    run_script("train.py", *flags, "--resume")
    for k in (2, 8):
        a = checkpoints.load_checkpoint(out / f"model_latent_size_{k}.pth")
        b = checkpoints.load_checkpoint(trained / f"model_latent_size_{k}.pth")
        for weights in ("state_dict", "resume"):
            sa = a[weights] if weights == "state_dict" else a["resume"]["state_dict"]
            sb = b[weights] if weights == "state_dict" else b["resume"]["state_dict"]
            assert all(torch.equal(sa[n], sb[n]) for n in sb), (k, weights)
        assert a["history"]["val_loss"] == b["history"]["val_loss"]
    assert sorted(p.name for p in out.glob(".*.tmp")) == [".notes.txt.abcdefgh.tmp"]


def test_a_full_disk_gives_one_line_and_leaves_no_temp_files(tmp_path, monkeypatch, capsys, one_thread):
    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "replace", full)
    out = tmp_path / "out"
    err = run_in_process(["--latent_size", "2", "--dataset", "digits", "--num_epochs", "1", "--output_dir", str(out),
                          "--quiet"], capsys)
    assert "No space left on device" in one_error_line(err) and "test_data.pth" in err
    assert not out.exists()  # no temp file left, so the folder the run made went with its lock


@pytest.mark.slow
def test_an_output_dir_that_cannot_be_a_folder_gives_one_line(tmp_path):
    (tmp_path / "a_file").write_text("")
    proc = run_script("train.py", "--latent_size", 2, "--dataset", "digits", "--output_dir", tmp_path / "a_file" / "out",
                      check=False)
    assert proc.returncode == 2
    assert f"cannot write to {tmp_path / 'a_file' / 'out'}: Not a directory" in one_error_line(proc.stderr)


# ---------------------------------------------------------------- training guards
def test_a_non_finite_loss_stops_within_the_epoch_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, one_thread):
    calls = {"train": 0}
    objective = Autoencoder.objective

    def breaks_at_step_40(self, logits, kl, target):
        loss = objective(self, logits, kl, target)
        if self.training:
            calls["train"] += 1
            if calls["train"] >= 40:  # epoch 2 (32 steps an epoch), step 8
                return loss * float("nan")
        return loss
    monkeypatch.setattr(Autoencoder, "objective", breaks_at_step_40)
    x = torch.randint(0, 256, (160, 1, 8, 8), dtype=torch.uint8)
    path = tmp_path / "m.pth"
    cfg = ModelConfig(family="mlp", latent_size=2, image_shape=(1, 8, 8))
    split = TrainingSplit(x, torch.arange(128), torch.arange(128, 160))
    with pytest.raises(UserError, match=r"latent-2 mlp model diverged: the loss became nan in epoch 2 \(by step 20 of 32\); "
                                        r"the last good checkpoint \(.*m.pth, epoch 1\) is kept; lower --lr"):
        train_model(cfg, split, Settings(latent_size=2, num_epochs=4, batch_size=4), path,
                    run_meta("noise", ["a"], split), quiet=True)
    assert calls["train"] == 32 + 20  # stopped at the first check after the NaN, not at the epoch's end
    kept = checkpoints.load_checkpoint(path)
    assert kept["resume"]["epoch"] == 0 and all(torch.isfinite(v).all() for v in kept["resume"]["state_dict"].values())


def test_a_diverging_training_says_so_in_one_line(tmp_path, capsys, one_thread):
    err = run_in_process(["--latent_size", "2", "--dataset", "digits", "--model", "vae", "--num_epochs", "2",
                          "--beta", "1e6", "--lr", "1000", "--output_dir", str(tmp_path), "--quiet"], capsys)
    assert "latent-2 vae model diverged: the loss became nan in epoch 1" in one_error_line(err)
    assert "no checkpoint of it was written" in err and not (tmp_path / "model_latent_size_2.pth").exists()


# ---------------------------------------------------------------- options and inputs
@pytest.mark.slow
def test_an_out_of_range_option_gives_one_line_through_the_script(tmp_path):
    """One case as a user types it; the rest of the ranges in this process, below."""
    proc = run_script("train.py", "--latent_size", "0", "--output_dir", tmp_path, "--dataset", "digits", check=False)
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "\n" not in line and "argument --latent_size: 0 must be >= 1" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv,message", [
    (["--num_epochs", "0"], "argument --num_epochs: 0 must be >= 1"),
    (["--batch_size", "0"], "argument --batch_size: 0 must be >= 1"), (["--lr", "0"], "argument --lr: 0 must be > 0.0"),
    (["--noise_std", "-0.1"], "argument --noise_std: -0.1 must be >= 0.0"),
    (["--lr", "nan"], "nan is not a finite number"), (["--lr", "inf"], "inf is not a finite number"),
    (["--beta", "-1"], "-1 must be >= 0.0"), (["--val_fraction", "0"], "0 must be > 0.0"),
    (["--val_fraction", "0.95"], "0.95 must be <= 0.9"), (["--image_size", "0"], "0 must be >= 1"),
    (["--patience", "-1"], "-1 must be >= 0"), (["--snapshot_every", "-2"], "-2 must be >= 0"),
    (["--seed", "-1"], "-1 must be >= 0"), (["--num_epochs", "two"], "'two' is not an integer"),
    (["--model", "transformer"], "argument --model: invalid choice: 'transformer' (choose from"),
])
def test_every_numeric_option_is_range_checked(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        train.parse_args(["--latent_size", "4", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err


def test_unknown_dataset_lists_the_valid_ones_and_debug_shows_the_traceback(tmp_path, capsys):
    argv = ["--latent_size", "4", "--dataset", "imagenet", "--output_dir", str(tmp_path)]
    line = one_error_line(run_in_process(argv, capsys))
    assert "unknown dataset 'imagenet'; choose one of: digits, mnist, fashion-mnist" in line and "folder:PATH" in line
    err = run_in_process(argv + ["--debug"], capsys)
    assert "Traceback (most recent call last)" in err and "load_dataset" in err
    assert err.strip().splitlines()[-1] == line


def _image_folder(root, classes, n=3):
    from PIL import Image
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((10, 10), 40 * i, dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_folder_datasets_name_the_folder_or_the_file(tmp_path):
    with pytest.raises(UserError, match=f"folder dataset {tmp_path / 'none'} does not exist"):
        load_dataset(f"folder:{tmp_path / 'none'}")
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    with pytest.raises(UserError, match=f"folder dataset {tmp_path / 'empty'} has no images"):
        load_dataset(f"folder:{tmp_path / 'empty'}")
    one = _image_folder(tmp_path / "one", ["cats"])
    with pytest.raises(UserError, match=f"folder dataset {one} has images of one class only \\(cats\\)"):
        load_dataset(f"folder:{one}")
    two = _image_folder(tmp_path / "two", ["cats", "dogs"])
    (two / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(UserError, match=f"cannot read image {two / 'dogs' / 'broken.png'}"):
        load_dataset(f"folder:{two}")


def test_a_gpu_that_is_not_there_is_a_user_error(monkeypatch):
    from latentlab.cli import pick_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="--device cuda was asked for but no CUDA GPU is visible"):
        pick_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "3")
    with pytest.raises(UserError, match="LOCAL_RANK 3 has no GPU: only 2 visible"):
        pick_device("cuda")
