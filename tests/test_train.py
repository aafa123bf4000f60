"""train.py end to end on the embedded digits, as a user runs it."""
import csv
import dataclasses
import gzip
import socket
import struct

import numpy as np
import pytest
import torch

from conftest import ROOT, run_main, run_meta, run_script
from latentlab.store import files
from latentlab.cli import UserError
from latentlab.data.datasets import load_dataset
from latentlab.data.sources import read_idx
from latentlab.settings import FOLDER_READING, MIN_IMAGE_SIZE, RESUME_MUST_MATCH, Settings, recorded
from latentlab.training_flags import flag_table
from model.autoencoder import model_from_checkpoint


@pytest.mark.slow
def test_both_models_learn_and_artifacts_describe_themselves(trained):
    for k in (2, 8):
        ckpt = torch.load(trained / f"model_latent_size_{k}.pth", weights_only=True)
        hist = ckpt["history"]
        # each model genuinely learns: the best validation loss is well below the first epoch's (the
        # 2-d model's funnel of dense layers starts slowly on 1,294 images: about 0.84 after 6 epochs)
        assert min(hist["val_loss"]) < 0.87 * hist["val_loss"][0], hist["val_loss"]
        assert hist["train_loss"][-1] < hist["train_loss"][0]
        assert ckpt["config"]["latent_size"] == k and ckpt["config"]["image_shape"] == [1, 8, 8]
        assert ckpt["dataset"]["name"] == "digits" and len(ckpt["dataset"]["class_names"]) == 10
        assert ckpt["format_version"] == files.FORMAT_VERSION and ckpt["kind"] == "checkpoint"
        assert set(ckpt["resume"]) == {"epoch", "state_dict", "optimizer"}
        assert ckpt["test_metrics"]["test_mse"] > 0
        # the model is rebuilt from the checkpoint alone, and reproduces the stored test MSE
        from latentlab.analysis.inference import model_mse
        model = model_from_checkpoint(ckpt)
        test = torch.load(trained / "test_data.pth", weights_only=True)
        assert model.encode(test["images"][:5].float() / 255).shape == (5, k)
        assert model_mse(model, test["images"], "cpu") == pytest.approx(ckpt["test_metrics"]["test_mse"], rel=1e-4)
        rows = list(csv.DictReader(open(trained / f"train_log_latent_size_{k}.csv")))
        assert len(rows) == len(hist["epoch"])
    test = torch.load(trained / "test_data.pth", weights_only=True)
    assert test["kind"] == "test_data" and test["images"].dtype == torch.uint8
    assert test["models"] == ["model_latent_size_2.pth", "model_latent_size_8.pth"]
    assert len(test["labels"]) == len(test["images"]) == 359
    pca = torch.load(trained / "pca_baseline.pth", weights_only=True)
    assert pca["scores"]["2"]["test_mse"] > pca["scores"]["8"]["test_mse"] > 0
    for png in ("training_curves.png", "reconstructions_latent_size_8_epoch_005.png",
                "reconstructions_latent_size_8_epoch_006.png"):
        assert (trained / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_latent_size_2_trains_one_model(tmp_path):
    run_main("train", "--latent_size", 2, "--dataset", "digits", "--num_epochs", 1,
             "--output_dir", tmp_path, "--quiet", "--model", "mlp")
    assert sorted(p.name for p in tmp_path.glob("model_*.pth")) == ["model_latent_size_2.pth"]


@pytest.mark.slow
@pytest.mark.parametrize("family,extra", [("vae", ["--beta", "0.5"]), ("mlp", ["--noise_std", "0.2"])])
def test_other_families_train(tmp_path, family, extra):
    run_main("train", "--latent_size", 4, "--dataset", "digits", "--num_epochs", 3, "--batch_size", 64,
             "--output_dir", tmp_path, "--quiet", "--model", family, *extra)
    ckpt = torch.load(tmp_path / "model_latent_size_4.pth", weights_only=True)
    assert ckpt["config"]["family"] == family
    assert min(ckpt["history"]["val_loss"]) < ckpt["history"]["val_loss"][0]


def _final_weights(path):
    return torch.load(path, weights_only=True)["resume"]["state_dict"]


class Interrupt(Exception):
    pass


@pytest.mark.slow
def test_resume_ends_identical_to_an_uninterrupted_run(tmp_path, monkeypatch):
    """A run interrupted after its second epoch, then resumed, ends bit-identical to one that was not."""
    from latentlab.train import loop
    from latentlab.train.hooks import Hook
    common = ["--latent_size", "4", "--dataset", "digits", "--batch_size", "64", "--quiet", "--seed", "3",
              "--model", "vae", "--noise_std", "0.1", "--num_epochs", "4"]  # VAE sampling and input noise draw random numbers
    run_main("train", *common, "--output_dir", str(tmp_path / "a"))

    real = loop.train_model

    class StopInThird(Hook):  # a kill during the third epoch's writes, before its checkpoint
        def after_epoch(self, epoch, model, ckpt):
            if epoch == 2:
                raise Interrupt

    def interrupted(*args, hooks=(), **kw):
        return real(*args, hooks=[*hooks, StopInThird()], **kw)
    monkeypatch.setattr("latentlab.train.run.train_model", interrupted)
    with pytest.raises(Interrupt):
        run_main("train", *common, "--output_dir", str(tmp_path / "b"))
    assert torch.load(tmp_path / "b" / "model_latent_size_2.pth", weights_only=True)["resume"]["epoch"] == 1
    monkeypatch.setattr("latentlab.train.run.train_model", real)
    run_main("train", *common, "--output_dir", tmp_path / "b", "--resume")
    for k in (2, 4):
        a, b = _final_weights(tmp_path / "a" / f"model_latent_size_{k}.pth"), _final_weights(tmp_path / "b" / f"model_latent_size_{k}.pth")
        assert a.keys() == b.keys()
        assert all(torch.equal(a[n], b[n]) for n in a)
        ha = torch.load(tmp_path / "a" / f"model_latent_size_{k}.pth", weights_only=True)["history"]
        hb = torch.load(tmp_path / "b" / f"model_latent_size_{k}.pth", weights_only=True)["history"]
        assert ha["val_loss"] == hb["val_loss"]


def test_precision_auto_picks_bf16_on_cuda_and_native_bf16_cpus_for_large_images(monkeypatch):
    from latentlab.train import precision
    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
    assert precision.use_bf16("auto", cuda, (1, 8, 8))
    assert precision.use_bf16("bf16", cpu, (1, 8, 8)) and not precision.use_bf16("fp32", cuda, (3, 32, 32))
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.use_bf16("auto", cpu, (1, 28, 28)) and precision.use_bf16("auto", cpu, (3, 16, 16))
    assert not precision.use_bf16("auto", cpu, (1, 8, 8)) and not precision.use_bf16("auto", cpu, (3, 15, 16))
    assert not precision.use_bf16("auto", mps, (1, 28, 28))
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert not precision.use_bf16("auto", cpu, (1, 28, 28))
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        precision.use_bf16("fp16", cpu, (1, 28, 28))


@pytest.mark.slow
def test_precision_flag_trains_under_bf16_autocast_and_is_recorded(tmp_path):
    common = ["--latent_size", 2, "--dataset", "digits", "--num_epochs", 1, "--quiet", "--model", "mlp"]
    losses = {}
    for p in ("fp32", "bf16"):
        run_main("train", *common, "--precision", p, "--output_dir", tmp_path / p)
        ckpt = torch.load(tmp_path / p / "model_latent_size_2.pth", weights_only=True)
        assert ckpt["train"]["precision"] == p and ckpt["train"]["autocast"] == p
        losses[p] = ckpt["history"]["train_loss"][0]
    assert losses["bf16"] != losses["fp32"]  # the forward pass did run in bf16 ...
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)  # ... and trained the same model
    proc = run_script("train.py", *common, "--num_epochs", 2, "--precision", "fp32", "--resume",
                      "--output_dir", tmp_path / "bf16", check=False)
    assert proc.returncode == 2 and "precision=bf16, not fp32" in proc.stderr


def test_cosine_schedule_decays_to_zero_and_constant_stays():
    from latentlab.train.loop import learning_rate
    s = Settings(latent_size=2, num_epochs=2, lr=0.01)
    assert learning_rate(s, 0, 10) == pytest.approx(0.01)
    assert learning_rate(s, 10, 10) == pytest.approx(0.005)
    assert learning_rate(s, 20, 10) == pytest.approx(0.0)
    s.lr_schedule = "constant"
    assert learning_rate(s, 15, 10) == 0.01


# ---------------------------------------------------------------- the settings, declared once
def test_every_setting_is_a_train_flag_with_its_default_and_the_sweep_takes_all_but_the_per_run_ones():
    import sweep_latent_size
    import train
    args = train.parse_args(["--latent_size", "4"])
    s = Settings.from_args(args)
    for f in dataclasses.fields(Settings):
        assert hasattr(args, f.name), f.name
        if f.default is not dataclasses.MISSING:
            assert getattr(s, f.name) == f.default, f.name
    sweep_args = vars(sweep_latent_size.parse_args([]))
    per_run = {f.name for f in dataclasses.fields(Settings) if f.metadata["per_run"]}
    assert per_run == {"latent_size", "model", "resume", "overwrite", "dataset", "seed"}
    assert {f.name for f in dataclasses.fields(Settings)} - per_run <= set(sweep_args)
    assert not per_run & set(sweep_args) - {"seed"}  # --seed is every step's; the sweep's --seeds defaults to it
    assert {"datasets", "seeds"} <= set(sweep_args)
    from latentlab.sweep.jobs import SETTINGS
    assert set(SETTINGS) <= set(sweep_args) and "data_dir" not in SETTINGS and "num_epochs" in SETTINGS


def test_readme_flag_table_is_the_rendered_one():
    readme = (ROOT / "README.md").read_text()
    start, end = "<!-- train-flags -->\n", "<!-- /train-flags -->"
    assert readme.count(start) == 1 and readme.count(end) == 1
    table = readme[readme.index(start) + len(start):readme.index(end)]
    assert table == flag_table()
    assert all(f"`--{f.name}`" in table for f in dataclasses.fields(Settings))


def test_too_small_an_image_size_is_refused_in_one_line(capsys):
    import train
    from model.parts import conv_stages
    assert conv_stages(MIN_IMAGE_SIZE, MIN_IMAGE_SIZE, 4) == 1 and conv_stages(MIN_IMAGE_SIZE - 2, MIN_IMAGE_SIZE - 2, 4) == 0
    with pytest.raises(SystemExit) as e:
        train.parse_args(["--latent_size", "4", "--image_size", str(MIN_IMAGE_SIZE - 1)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"argument --image_size: {MIN_IMAGE_SIZE - 1} is too small: use {MIN_IMAGE_SIZE} or more" in err
    assert train.parse_args(["--latent_size", "4", "--image_size", str(MIN_IMAGE_SIZE)]).image_size == MIN_IMAGE_SIZE


def _checkpoint_of(settings, config, dataset="digits"):
    from latentlab.store.checkpoints import HISTORY_KEYS
    return {"config": config.to_dict(), "dataset": {"name": dataset}, "train": recorded(settings),
            "history": {k: [] for k in HISTORY_KEYS}, "resume": {}}


@pytest.mark.parametrize("name", RESUME_MUST_MATCH)
def test_resume_refuses_a_checkpoint_of_another_setting(tmp_path, name):
    from latentlab.train.checkpoint import check_resume
    from model.autoencoder import ModelConfig
    was = Settings(latent_size=4)
    config = ModelConfig(latent_size=4, image_shape=(1, 8, 8))
    ckpt = _checkpoint_of(was, config)
    check_resume(ckpt, tmp_path, was, config, "digits")  # the same settings resume
    changed = {"val_fraction": 0.2, "batch_size": 64, "lr": 1e-3, "lr_schedule": "constant", "precision": "fp32",
               "seed": 1, "umap_edges": 256, "resize": "pad", "background": "#000000", "skip_unreadable": True}[name]
    now = dataclasses.replace(was, **{name: changed})
    if name in FOLDER_READING:  # how a folder's files are read: refused on a folder, no matter elsewhere
        check_resume(ckpt, tmp_path, now, config, "digits")
        ckpt = _checkpoint_of(was, config, "folder:photos")
        with pytest.raises(UserError, match=f"trained with {name}={getattr(was, name)}, not {changed}; use the same flags"):
            check_resume(ckpt, tmp_path, now, config, "folder:photos")
        return
    with pytest.raises(UserError, match=f"trained with {name}={getattr(was, name)}, not {changed}; use the same flags"):
        check_resume(ckpt, tmp_path, now, config, "digits")
    # the settings that may change between runs: more epochs, other patience, snapshots
    check_resume(ckpt, tmp_path, dataclasses.replace(was, num_epochs=20, patience=3, snapshot_every=0), config, "digits")
    with pytest.raises(UserError, match="holds another model or dataset"):
        check_resume(ckpt, tmp_path, was, dataclasses.replace(config, noise_std=0.1), "digits")
    with pytest.raises(UserError, match=r"trained with umap_weight=0.0, not 0.01 \(--umap_max_size sets the sizes it applies to\); use the same flags"):
        check_resume(ckpt, tmp_path, was, dataclasses.replace(config, umap_weight=0.01), "digits")
    with pytest.raises(UserError, match="holds another model or dataset"):
        check_resume(ckpt, tmp_path, was, config, "mnist")


@pytest.mark.slow
def test_same_seed_same_numbers(tmp_path):
    args = ["--latent_size", 3, "--dataset", "digits", "--num_epochs", 2, "--quiet", "--model", "mlp"]
    run_main("train", *args, "--output_dir", tmp_path / "a")
    run_main("train", *args, "--output_dir", tmp_path / "b")
    ha = torch.load(tmp_path / "a" / "model_latent_size_3.pth", weights_only=True)["history"]
    hb = torch.load(tmp_path / "b" / "model_latent_size_3.pth", weights_only=True)["history"]
    assert ha["train_loss"] == hb["train_loss"] and ha["val_loss"] == hb["val_loss"]


@pytest.mark.slow
def test_early_stopping_stops_and_keeps_the_best_epoch(tmp_path):
    # a learning rate this high makes the validation loss stall at once
    run_main("train", "--latent_size", 2, "--dataset", "digits", "--num_epochs", 30, "--quiet",
             "--model", "mlp", "--patience", "2", "--lr", "0.5", "--output_dir", tmp_path)
    ckpt = torch.load(tmp_path / "model_latent_size_2.pth", weights_only=True)
    assert ckpt["stopped_early"] and len(ckpt["history"]["epoch"]) < 30
    assert len(ckpt["history"]["epoch"]) - 1 - ckpt["best_epoch"] == 2


# ---------------------------------------------------------------- datasets
def _write_idx(path, arr, gz):
    codes = {np.uint8: 0x08}
    header = bytes([0, 0, codes[arr.dtype.type], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + arr.tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_reader_and_local_files_come_first(tmp_path, gz):
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    trx = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    tex = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", trx, gz)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", np.arange(12, dtype=np.uint8) % 10, gz)
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", tex, gz)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", np.arange(5, dtype=np.uint8), gz)
    assert np.array_equal(read_idx(tmp_path / f"train-images-idx3-ubyte{suffix}"), trx)
    data = load_dataset("fashion-mnist", data_dir=str(tmp_path))
    assert data.train_x.shape == (12, 1, 28, 28) and data.test_x.shape == (5, 1, 28, 28)
    assert np.array_equal(data.train_x[:, 0].numpy(), trx)
    assert data.class_names[0] == "T-shirt/top" and data.test_y.tolist() == [0, 1, 2, 3, 4]


def test_emnist_is_turned_the_right_way_up(tmp_path):
    img = np.zeros((1, 28, 28), dtype=np.uint8)
    img[0, 0, 5] = 255  # stored transposed: row 0, column 5 -> shown at row 5, column 0
    for split, n in (("train", 1), ("test", 1)):
        _write_idx(tmp_path / f"emnist-balanced-{split}-images-idx3-ubyte", img, False)
        _write_idx(tmp_path / f"emnist-balanced-{split}-labels-idx1-ubyte", np.zeros(n, dtype=np.uint8), False)
    data = load_dataset("emnist", data_dir=str(tmp_path))
    assert data.train_x[0, 0, 5, 0] == 255 and data.train_x[0, 0, 0, 5] == 0
    assert len(data.class_names) == 47


def test_corrupt_idx_is_named(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3I", 10, 28, 28) + b"\x00" * 100)
    with pytest.raises(UserError, match="truncated"):
        read_idx(tmp_path / "bad")
    (tmp_path / "junk").write_bytes(b"hello world")
    with pytest.raises(UserError, match="not an IDX file"):
        read_idx(tmp_path / "junk")


def test_no_network_gives_one_clear_line(tmp_path, monkeypatch, capsys):
    def refuse(*a, **k):
        raise OSError("network is unreachable")
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    import train
    from latentlab.cli import run
    args = train.parse_args(["--latent_size", "4", "--dataset", "mnist", "--output_dir", str(tmp_path / "out")])
    monkeypatch.chdir(tmp_path)  # data/ is looked for, and downloaded into, under the working folder
    with pytest.raises(SystemExit) as e:
        run(train.main, args)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot download mnist" in err[0] and "train-images-idx3-ubyte.gz" in err[0]
    assert "data/mnist" in err[0]


def test_folder_dataset(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / cls).mkdir()
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    data = load_dataset(f"folder:{tmp_path}", image_size=16)
    assert data.image_shape == (3, 16, 16) and data.class_names == ["cats", "dogs"]
    assert len(data.train_x) + len(data.test_x) == 12 and sorted(set(data.test_y.tolist())) == [0, 1]


def test_a_hook_keeps_its_state_in_the_checkpoint_and_a_resume_hands_it_back(tmp_path):
    """A per-epoch hook sees every epoch; what it keeps goes into the checkpoint under its key, and
    --resume hands it back with the epoch to continue from."""
    from latentlab.train.hooks import Hook
    from latentlab.train.loop import TrainingSplit, train_model
    from model.autoencoder import ModelConfig

    class Epochs(Hook):
        key = "epochs_seen"

        def __init__(self):
            self.seen, self.loaded = [], None

        def after_epoch(self, epoch, model, ckpt):
            self.seen.append(epoch)

        def state(self):
            return list(self.seen)

        def load_state(self, saved, start):
            self.loaded, self.seen = (saved, start), list(saved or [])
    x = torch.randint(0, 256, (80, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    split, path = TrainingSplit(x, torch.arange(64), torch.arange(64, 80)), tmp_path / "m.pth"
    cfg = ModelConfig(family="mlp", latent_size=2, image_shape=(1, 8, 8))
    meta = run_meta("noise", ["a"], split)
    first, again = Epochs(), Epochs()
    train_model(cfg, split, Settings(latent_size=2, num_epochs=2, batch_size=16), path, meta, hooks=[first], quiet=True)
    assert first.seen == [0, 1] and torch.load(path, weights_only=True)["epochs_seen"] == [0, 1]
    ckpt = train_model(cfg, split, Settings(latent_size=2, num_epochs=3, batch_size=16, resume=True), path, meta,
                       hooks=[again], quiet=True)
    assert again.loaded == ([0, 1], 2) and ckpt["epochs_seen"] == [0, 1, 2]
