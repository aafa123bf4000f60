"""The training split encoded beside the test split, the held-out classifier protocol, and the
network widths train.py takes (--channels, --dense, --hidden), on the digits and tiny IDX files."""
import dataclasses
import json
import struct

import numpy as np
import pytest
import torch

from conftest import run_main, run_refused, written
from latentlab.store import checkpoints, files, latent_files
from latentlab.cli import UserError
from latentlab.settings import Settings
from model.autoencoder import FAMILIES, ModelConfig, build_model, model_from_checkpoint


def _encode(out, *extra):
    return run_main("encode_latent_space", "--output_dir", str(out), "--quiet", *extra)


def _classify(out, *extra):
    return run_main("classify_latent_space", "--output_dir", str(out), "--quiet", *extra)


def _train(out, *extra):
    return run_main("train", "--output_dir", str(out), "--quiet", "--snapshot_every", "0", *extra)


# ---------------------------------------------------------------- step 3: --split train
def test_train_and_test_encodings_lie_side_by_side_and_say_what_they_are(trained_copy):
    from latentlab.data.datasets import load_dataset
    out = trained_copy
    _encode(out, "--split", "train")
    _encode(out, "--num_samples", "all")
    train_x = load_dataset("digits").train_x
    for k in (2, 8):
        test, train = (latent_files.load_latents(out / f"latent_space_size_{k}{s}.npy") for s in ("", "_train"))
        test_z, test_meta, train_z, train_meta = test.z, test.meta, train.z, train.meta
        assert test_meta["split"] == "test" and train_meta["split"] == "train"
        assert test_z.shape == (359, k) and train_z.shape == (1438, k)  # the training split, validation included
        assert train_meta["dataset"] == "digits" and train_meta["indices"] == list(range(1438))
        assert train_meta["labels"] == load_dataset("digits").train_y.tolist()
        # the latents are the model's encoding of the dataset's training images
        model = model_from_checkpoint(checkpoints.load_checkpoint(out / f"model_latent_size_{k}.pth"))
        with torch.no_grad():
            np.testing.assert_allclose(train_z[:50], model.encode(train_x[:50].float() / 255).numpy(), atol=1e-5)
    assert not any("train" in p.name for p in out.glob("*.pth"))  # the training images are not copied into output/


def test_heldout_probes_fit_on_the_training_latents_and_score_the_test_latents(trained_copy):
    from sklearn.neighbors import KNeighborsClassifier

    from latentlab.data.datasets import load_dataset
    out = trained_copy
    _encode(out, "--split", "train")
    _encode(out, "--num_samples", "all")
    m = _classify(out, "--protocol", "heldout", "--probes", "linear", "knn")
    saved = json.loads((out / "classification_latent_size_8.json").read_text())
    assert m["protocol"] == saved["protocol"] == "heldout" and saved["folds"] is None
    row = saved["models"]["8"]
    assert row["samples"] == 359 and row["training_samples"] == 1438
    for name in ("latent", "pca", "raw_pixels"):
        assert set(row[name]) == {"linear", "knn5", "knn10", "dims"}
    # the raw-pixel 5-NN is scikit-learn's, fit on the training images and scored on the test images
    data = load_dataset("digits")
    flat = lambda x: x.reshape(len(x), -1).float().numpy() / 255
    expected = KNeighborsClassifier(5).fit(flat(data.train_x), data.train_y).score(flat(data.test_x), data.test_y)
    assert row["raw_pixels"]["knn5"]["accuracy"] == pytest.approx(expected, abs=1e-9)
    train, test = (latent_files.load_latents(out / f"latent_space_size_8{s}.npy") for s in ("_train", ""))
    expected = KNeighborsClassifier(10).fit(train.z, train.labels).score(test.z, test.labels)
    assert row["latent"]["knn10"]["accuracy"] == pytest.approx(expected, abs=1e-9)
    # the shown probe's held-out prediction of each test latent, in the JSON: what the explorer colours by
    from latentlab.store.step_results import step6_predictions
    shown = saved["predictions"]
    assert shown["probe"] == saved["figure_probe"] and shown["protocol"] == "heldout"
    tests = [latent_files.load_latents(out / f"latent_space_size_{k}.npy") for k in (2, 8)]
    preds, notes = step6_predictions(out, tests)
    assert notes == [] and set(preds) == {2, 8}
    for lat in tests:
        pred, probe, confidence = preds[lat.latent_size]
        assert probe == shown["probe"] and pred.tolist() == shown["by_latent_size"][str(lat.latent_size)]
        accuracy = saved["models"][str(lat.latent_size)]["latent"][probe]["accuracy"]
        assert np.mean(pred == lat.labels) == pytest.approx(accuracy, abs=1e-12)
    assert _classify(out, "--probes", "knn")["protocol"] == "cv"  # the default; knn there is 10-NN by folds


def test_heldout_mlp_probe_learns_from_the_training_split():
    from sklearn.datasets import load_digits

    from latentlab.analysis.probes import heldout_set, probe_scores_of_sets
    d = load_digits()
    x, y = d.data.astype(np.float32), d.target
    scores = probe_scores_of_sets({0: heldout_set(x[:1400], y[:1400], x[1400:], y[1400:])}, ("mlp",))[0]
    assert scores["mlp"]["accuracy"] > 0.85 and len(scores["mlp"]["predictions"]) == len(x) - 1400


def test_heldout_without_training_latents_says_how_to_make_them(trained_copy):
    _encode(trained_copy)
    with pytest.raises(UserError, match=r"needs the training split's latents .*latent_space_size_2_train\.npy; make "
                                        r"them with `python encode_latent_space.py --split train"):
        _classify(trained_copy, "--protocol", "heldout")


def test_training_latents_are_refused_where_test_latents_belong(trained_copy):
    _encode(trained_copy, "--split", "train")
    with pytest.raises(UserError, match="encodes the training split; pass the test-split latents"):
        _classify(trained_copy, "--latent_space", str(trained_copy / "latent_space_size_8_train.npy"))


def test_a_checkpoint_without_its_data_folder_or_of_format_1_is_refused(trained_copy):
    path = trained_copy / "model_latent_size_8.pth"
    ckpt = torch.load(path, weights_only=True)
    del ckpt["dataset"]["data_dir"]
    files.save_torch(ckpt, path)
    with pytest.raises(UserError, match="is malformed: its dataset description must hold .*data_dir"):
        _encode(trained_copy)
    files.save_torch({**ckpt, "format_version": 1}, path)
    with pytest.raises(UserError, match=r"model_latent_size_8.pth was written by an earlier version of latentlab "
                                        r"\(format 1\); re-run train.py with --overwrite"):
        _encode(trained_copy)


def _write_idx(path, array):
    path.write_bytes(bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


def test_missing_dataset_files_give_train_py_s_line(tmp_path):
    data = tmp_path / "fm"
    data.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train", 40), ("t10k", 20)):
        _write_idx(data / f"{name}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        _write_idx(data / f"{name}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))
    out = tmp_path / "out"
    _train(out, "--latent_size", "2", "--model", "mlp", "--hidden", "--dataset", "fashion-mnist",
           "--data_dir", str(data), "--num_epochs", "1", "--batch_size", "16")
    _encode(out, "--split", "train")
    assert json.loads((out / "latent_space_size_2_train.json").read_text())["data_dir"] == str(data.resolve())
    (data / "train-images-idx3-ubyte").unlink()
    with pytest.raises(UserError, match=f"no fashion-mnist IDX files in {data.resolve()}: expected train-images-idx3-ubyte"):
        _encode(out, "--split", "train")


# ---------------------------------------------------------------- step 1: network widths
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (1, 7, 7)])
@pytest.mark.parametrize("family,widths", [("conv", {"channels": (16,)}), ("conv", {"channels": (8, 16), "dense": (32,)}),
                                           ("vae", {"channels": (8,), "dense": (16, 8)}), ("mlp", {"hidden": (64,)}),
                                           ("mlp", {"hidden": ()})])
def test_widths_build_the_networks_they_name(family, widths, shape):
    settings = Settings(latent_size=3, model=family, channels=widths.get("channels"), hidden=widths.get("hidden"),
                        dense=widths.get("dense", ()))
    stages = {8: 1, 28: 2, 32: 3, 7: 1}[shape[1]]
    if len(widths.get("channels", ())) > stages:
        with pytest.raises(UserError, match=f"--channels gives 2 stages but {shape[1]}x{shape[2]} images take at most 1"):
            settings.model_config(3, shape)
        return
    model = build_model(settings.model_config(3, shape))
    x = torch.rand(2, *shape)
    assert model.encode(x).shape == (2, 3) and model.reconstruct(x).shape == x.shape
    convs = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if "hidden" in FAMILIES[family].flags:
        assert not convs
        widths_seen = [m.out_features for m in model.encoder.modules() if isinstance(m, torch.nn.Linear)]
        assert widths_seen == list(widths["hidden"])
        if not widths["hidden"]:  # a linear autoencoder: one matrix each way, nothing between
            assert len(linears) == 2 and sum(p.numel() for p in model.parameters()) == 2 * 3 * x[0].numel() + 3 + x[0].numel()
    else:
        assert [c.out_channels for c in convs] == list(widths["channels"])
        dense = [m.out_features for m in model.encoder.modules() if isinstance(m, torch.nn.Linear)]
        assert dense == list(widths.get("dense", ()))
        assert model.to_latent.in_features == (widths["dense"][-1] if "dense" in widths else model.encoder.out_features)
        decoder_dense = [m.in_features for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)]
        assert decoder_dense == [3, *reversed(widths.get("dense", ()))]  # the mirror, from the code up


def test_default_widths_by_code_size():
    shape = (1, 28, 28)
    for family in ("conv", "vae"):
        configs = {k: Settings(latent_size=k, model=family).model_config(k, shape) for k in (2, 4, 5, 32, 33, 64)}
        assert {k: c.dense for k, c in configs.items()} == {2: (512, 128, 32), 4: (512, 128, 32), 5: (512,),
                                                            32: (512,), 33: (), 64: ()}
        assert {k: c.channels[:2] for k, c in configs.items()} == {2: (32, 64), 4: (32, 64), 5: (64, 128),
                                                                   32: (64, 128), 33: (64, 128), 64: (64, 128)}
        for none in ((0,), ()):  # --dense 0, --dense alone: none
            assert Settings(latent_size=2, model=family, dense=none).model_config(2, shape).dense == ()
        assert Settings(latent_size=64, model=family, dense=(256,)).model_config(64, shape).dense == (256,)
    assert Settings(latent_size=2, model="mlp").model_config(2, shape).dense == ()
    model = build_model(Settings(latent_size=2).model_config(2, (3, 32, 32)))
    assert [m.out_channels for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)] == [32, 64, 128]
    model = build_model(Settings(latent_size=64).model_config(64, (3, 32, 32)))
    assert [m.out_channels for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)] == [64, 128, 256]


def test_bad_widths_are_refused_in_one_line(capsys):
    import train
    for flags, message in ((["--channels", "0"], "argument --channels: 0 must be >= 1"),
                           (["--hidden", "-3"], "argument --hidden: -3 must be >= 1"),
                           (["--dense", "512", "-1"], "argument --dense: -1 must be >= 0")):
        with pytest.raises(SystemExit) as e:
            train.parse_args(["--latent_size", "4", *flags])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and "\n" not in err and message in err
    for settings, message in ((Settings(latent_size=4, channels=(8, 16, 32)), "--channels gives 3 stages but 28x28 images take at most 2"),
                              (Settings(latent_size=4, hidden=(64,)), "--hidden sets the mlp network, not the conv one; use --channels and --dense"),
                              (Settings(latent_size=4, model="mlp", dense=(8,)), "--channels and --dense set the conv"),
                              (Settings(latent_size=4, dense=(64, 0)), "--dense 64 0: 0 means no dense layer")):
        with pytest.raises(UserError, match=message):
            settings.model_config(4, (1, 28, 28))
    with pytest.raises(ValueError, match="widths must be positive"):
        ModelConfig(channels=(8, 0))


def test_widths_are_recorded_used_by_later_steps_and_checked_by_resume(tmp_path):
    from latentlab.train.checkpoint import check_resume
    out = tmp_path / "out"
    _train(out, "--latent_size", "4", "--dataset", "digits", "--num_epochs", "1", "--channels", "8", "--dense", "16", "8")
    ckpt = checkpoints.load_checkpoint(out / "model_latent_size_4.pth")
    assert ckpt["config"]["channels"] == [8] and ckpt["config"]["dense"] == [16, 8]
    assert ckpt["state_dict"]["encoder.dense.0.weight"].shape == (16, 8 * 4 * 4)
    assert ckpt["state_dict"]["encoder.dense.2.weight"].shape == (8, 16)
    assert _encode(out)["latents"]["4"]["shape"] == [359, 4]  # rebuilt from the checkpoint alone
    settings = Settings(latent_size=4, dataset="digits", channels=(8,), dense=(16, 8))
    check_resume(ckpt, out, settings, settings.model_config(4, (1, 8, 8)), "digits")
    for other, message in (({"channels": (16,)}, r"channels=\[8\], not \[16\]"), ({"dense": (16,)}, r"dense=\[16, 8\], not \[16\]")):
        changed = dataclasses.replace(settings, **other)
        with pytest.raises(UserError, match=f"--resume: .* was trained with {message}"):
            check_resume(ckpt, out, changed, changed.model_config(4, (1, 8, 8)), "digits")


def test_the_sweep_passes_the_widths_on(tmp_path):
    import dataclasses

    import sweep_latent_size
    from latentlab.sweep.jobs import make_jobs
    args = sweep_latent_size.parse_args(["--models", "mlp", "--hidden", "32", "16", "--output_dir", str(tmp_path)])
    job, = make_jobs(args, ["digits"], [0], ["mlp"], [2], quiet=True)
    assert job.settings["hidden"] == [32, 16] and job.settings["channels"] is None  # recorded with its numbers
    conv, = make_jobs(sweep_latent_size.parse_args(["--models", "conv", "--output_dir", str(tmp_path)]),
                      ["digits"], [0], ["conv"], [2], quiet=True)
    # the defaults as resolved, so that a sweep made with other defaults is not resumed as the same one
    assert conv.settings["dense"] == [512, 128, 32] and conv.settings["channels"] == [32, 64, 128, 256]
    passed = type(job)(**json.loads(json.dumps(dataclasses.asdict(job)))).train  # as a job process reads job.json
    assert passed.model_config(2, (1, 8, 8)).hidden == (32, 16)


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
