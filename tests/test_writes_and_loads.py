"""Writes and loads: a full disk, atomic pairs, umask modes, non-finite weights, malformed resume
state, JSON and files of another format: each refused in one line, with what was on disk kept."""
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import ROOT, checksums, edit_torch, one_error_line, run_refused
from latentlab.cli import UserError
from latentlab.store import atomic, files, latent_files






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


def test_a_training_into_a_full_disk_stops_with_one_line_and_keeps_what_was_there(small_disk, capsys):
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
    "a latent pair": (lambda d: latent_files.save_latents(d / "latent_space_size_2.npy", np.ones((4000, 2)),
                                                        {**_LATENT_META, "labels": [0] * 4000, "indices": list(range(4000))}),
                      "latent_space_size_2.npy"),
    "a folder (the explorer's tiles)": (lambda d: atomic.write_folder(d / "tiles_0123", {
        f"test_{t}.png": np.random.default_rng(t).bytes(60_000) for t in range(6)}), "explorer_latent_size_8.html"),
}


@pytest.mark.parametrize("kind", FULL_DISK_WRITES)
def test_every_kind_of_write_into_a_full_disk_gives_one_line_and_keeps_the_old_file(small_disk, kind):
    write, name = FULL_DISK_WRITES[kind]
    if kind == "a latent pair":
        latent_files.save_latents(small_disk / name, np.zeros((4, 2)), _LATENT_META)
    else:
        (small_disk / name).write_bytes(b"the old version")
    _fill(small_disk)
    before = _artifacts_in(small_disk)
    with pytest.raises(UserError) as e:
        write(small_disk)
    assert "\n" not in str(e.value) and f"cannot write {small_disk}" in str(e.value) and "No space left" in str(e.value)
    assert _artifacts_in(small_disk) == before and not _temp_files(small_disk)
    if kind == "a latent pair":
        assert latent_files.load_latents(small_disk / name).z.shape == (4, 2)  # the old pair, whole


def test_a_pair_whose_second_rename_fails_is_put_back_whole(tmp_path, monkeypatch):
    """save_latents replaced the .json, then the .npy: a failure between them left a new JSON
    beside an old array. Now the group goes back to the old pair."""
    path = tmp_path / "latent_space_size_2.npy"
    latent_files.save_latents(path, np.zeros((4, 2)), _LATENT_META)
    before = _artifacts_in(tmp_path)
    replace, calls = os.replace, []

    def second_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return replace(src, dst)
    monkeypatch.setattr(os, "replace", second_fails)
    with pytest.raises(UserError, match="cannot write .*latent_space_size_2.json: No space left on device"):
        latent_files.save_latents(path, np.ones((6, 2)), {**_LATENT_META, "labels": [0] * 6, "indices": list(range(6))})
    monkeypatch.undo()
    assert _artifacts_in(tmp_path) == before and not _temp_files(tmp_path)
    assert (latent_files.load_latents(path).z == 0).all()


def test_a_torn_pair_is_refused_and_so_is_a_pair_without_the_hash(tmp_path):
    """A crash between the two renames (or a hand copy) leaves a JSON beside another array of the
    same shape: its SHA-256 says they do not belong together."""
    old, new = tmp_path / "old", tmp_path / "new"
    for folder, value in ((old, 0.0), (new, 1.0)):
        latent_files.save_latents(folder / "latent_space_size_2.npy", np.full((4, 2), value), _LATENT_META)
    shutil.copy(new / "latent_space_size_2.json", old / "latent_space_size_2.json")  # new JSON, old array
    with pytest.raises(UserError, match=r"latent_space_size_2.npy and .*latent_space_size_2.json do not belong "
                                         r"together .*; re-run encode_latent_space.py"):
        latent_files.load_latents(old / "latent_space_size_2.npy")
    meta = json.loads((new / "latent_space_size_2.json").read_text())
    del meta["npy_sha256"]
    (new / "latent_space_size_2.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="do not belong together"):
        latent_files.load_latents(new / "latent_space_size_2.npy")


def test_files_of_format_1_are_refused_in_one_line_by_the_step_that_reads_them_and_left_as_they_are(tmp_path, capsys):
    """A checkpoint (read by train.py --resume) and a latents sidecar (read by step 4) that an
    earlier version wrote: one line names the file and the step that writes it again."""
    ckpt = tmp_path / "model_latent_size_2.pth"
    files.save_torch({"kind": "checkpoint", "format_version": 1, "config": {"latent_size": 2}}, ckpt)
    latents = tmp_path / "latent_space_size_2.npy"
    latent_files.save_latents(latents, np.zeros((4, 2)), _LATENT_META)
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


def test_a_latent_value_changed_on_disk_is_refused(tmp_path):
    """One flipped bit in the array's data keeps its header, shape and finiteness: the hash tells."""
    path = tmp_path / "latent_space_size_2.npy"
    latent_files.save_latents(path, np.ones((4, 2)), _LATENT_META)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # inside the last float32: 1.0 becomes another finite number
    path.write_bytes(bytes(data))
    assert np.isfinite(np.load(path)).all() and not (np.load(path) == 1).all()
    with pytest.raises(UserError, match="do not belong together"):
        latent_files.load_latents(path)


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_artifacts_get_the_mode_the_umask_gives_and_a_replaced_file_too(tmp_path, umask, mode):
    """Files were 0600 whatever the umask (mkstemp's mode survived the rename). A replaced file
    takes the umask's mode too, as a file written afresh would."""
    was = os.umask(umask)
    try:
        (tmp_path / "replaced.json").write_text("{}")
        (tmp_path / "replaced.json").chmod(0o600)
        written = [files.save_json({}, tmp_path / "new.json"), files.save_json({"a": 1}, tmp_path / "replaced.json"),
                   *latent_files.save_latents(tmp_path / "latent_space_size_2.npy", np.zeros((4, 2)), _LATENT_META)]
        assert os.umask(umask) == umask
    finally:
        os.umask(was)
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in written} == {p.name: oct(mode) for p in written}


def test_a_training_writes_every_artifact_with_the_umask_mode(trained):
    mask = os.umask(0o022)
    os.umask(mask)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in trained.iterdir() if p.is_file() and p.suffix != ".lock"
             and not p.name.startswith(".")}
    assert modes and set(modes.values()) == {oct(0o666 & ~mask)}, modes


def test_a_colleague_reads_what_was_written_and_is_told_plainly_what_they_cannot_read(tmp_path):
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
            latent_files.save_latents(shared / "latent_space_size_2.npy", np.zeros((4, 2)), _LATENT_META)
            files.save_json({"kind": "k", "format_version": files.FORMAT_VERSION}, shared / "private.json")
        finally:
            os.umask(was)
        (shared / "private.json").chmod(0o600)
        code = ("import sys; from latentlab.store import files, latent_files\n"
                "print(latent_files.load_latents(sys.argv[1]).z.shape)\n"
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
def test_non_finite_weights_are_refused_with_one_line(trained_copy, capsys, case):
    """A checkpoint whose decoder held NaN passed the load checks, and step 2 wrote "psnr": Infinity."""
    change, name = NON_FINITE[case]
    edit_torch(trained_copy / "model_latent_size_8.pth", trained_copy / "model_latent_size_8.pth", change)
    before = _artifacts_in(trained_copy)
    code, err = _exit_and_line("viz_reconstruction", ["--output_dir", trained_copy, "--quiet"], capsys)
    assert code == 2
    assert re.search(rf"model_latent_size_8.pth holds non-finite weights \({name}.*\); the training diverged before "
                      rf"it was saved: retrain", one_error_line(err))
    assert _artifacts_in(trained_copy) == before


def test_json_holds_null_where_a_number_is_not_finite(tmp_path):
    from latentlab.analysis.scores import psnr
    assert math.isnan(psnr(float("nan"))) and psnr(0.0) == float("inf")  # NaN MSE is no perfect reconstruction
    path = files.save_json({"mse": float("nan"), "psnr": np.float32("inf"), "per_class": np.array([1.0, -np.inf]),
                             "t": torch.tensor(float("nan")), "n": np.int64(3)}, tmp_path / "m.json")

    def no_constants(name):
        raise ValueError(f"{name} is not JSON")
    assert json.loads(path.read_text(), parse_constant=no_constants) == {
        "mse": None, "psnr": None, "per_class": [1.0, None], "t": None, "n": 3}


def test_the_sweep_reads_a_metric_written_as_null(tmp_path):
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
def test_a_latent_sidecar_with_nan_literals_is_refused(tmp_path, field, value):
    path = tmp_path / "latent_space_size_2.npy"
    latent_files.save_latents(path, np.zeros((4, 2)), _LATENT_META)
    meta = path.with_suffix(".json")
    text = re.sub(rf'"{field}": (\[[^\]]*\]|\d+)', f'"{field}": {value}', meta.read_text(), count=1)
    assert text != meta.read_text()
    meta.write_text(text)
    with pytest.raises(UserError) as e:
        latent_files.load_latents(path)
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
def test_a_malformed_resume_state_is_refused_before_anything_is_written(trained_copy, capsys, case):
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


def test_a_resume_state_missing_any_key_is_refused_or_resumes(whole, tmp_path):
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
def test_a_resume_state_with_any_value_replaced_is_refused_or_resumes(whole, tmp_path, pick, junk):
    import copy
    paths = list(_key_paths(whole))
    keys = paths[pick % len(paths)]
    ckpt = copy.deepcopy(whole)
    _at(ckpt, keys)[keys[-1]] = junk
    _resume_from(ckpt, tmp_path / "model_latent_size_8.pth")  # a UserError line or a resume, nothing else
