"""Caveats where the numbers may mislead (a model that barely trained, probes on a handful of images
per class), and step 6's cost bounded by the data (the MLP probe's budget, wide features reduced,
--baselines)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_main
from latentlab import caveats
from latentlab.analysis import mlp_probe, probes


@pytest.mark.slow  # trains, then runs steps 2 to 6
def test_a_model_trained_one_step_gets_its_caveat(tmp_path, capsys):
    # the digits' ~1,300 training images in one batch: one optimiser step an epoch
    run_main("train", "--latent_size", 4, "--dataset", "digits", "--num_epochs", 1, "--batch_size", 2048,
             "--snapshot_every", 0, "--output_dir", tmp_path)
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("caveat: ")]
    summary = json.loads((tmp_path / "training_summary.json").read_text())
    assert summary["models"]["4"]["optimiser_steps"] == 1
    assert any(c.startswith("4-d model: trained 1 optimiser step,") for c in summary["caveats"])
    assert printed == [f"caveat: {c}" for c in summary["caveats"]]
    # the checkpoint carries them, and step 2 repeats them
    ckpt = torch.load(tmp_path / "model_latent_size_4.pth", weights_only=True)
    assert any("trained 1 optimiser step," in c for c in ckpt["test_metrics"]["caveats"])
    metrics = run_main("viz_reconstruction", "--output_dir", tmp_path, "--quiet")
    assert any(c.startswith("4-d model: trained 1 optimiser step,") for c in metrics["caveats"])
    assert "caveat: 4-d model: trained 1 optimiser step," in capsys.readouterr().out  # --quiet keeps the table and them
    # encoding copies them beside the latents, and steps 4 to 6 repeat them with their own
    run_main("encode_latent_space", "--output_dir", tmp_path, "--quiet")
    for step in ("viz_latent_space", "viz_kmeans_latent_space", "classify_latent_space"):
        metrics = run_main(step, "--output_dir", tmp_path, "--quiet", *(["--vis_type", "pca"] if step == "viz_latent_space" else []))
        assert any(c.startswith("4-d model: trained 1 optimiser step,") for c in metrics["caveats"]), step
        assert "caveat: 4-d model: trained 1 optimiser step," in capsys.readouterr().out, step


def test_a_model_trained_long_enough_and_better_than_pca_has_none():
    assert caveats.training_caveats(caveats.MIN_OPTIMISER_STEPS, 0.5) == []
    assert caveats.training_caveats(None, 0.99) == []  # an older checkpoint: no step count to judge
    assert len(caveats.training_caveats(caveats.optimiser_steps(2, 88, 128), 1.0)) == 2  # 2 steps, MSE = PCA's


def test_the_mlp_probe_budget_scales_with_the_training_samples():
    steps, batch = mlp_probe.probe_steps(19)
    assert (steps, batch) == (mlp_probe.PROBE_MIN_STEPS, 19)  # a tiny fold: the floor, in batches of the fold
    big = 100_000
    assert mlp_probe.probe_steps(big) == (mlp_probe.PROBE_EPOCHS * -(-big // mlp_probe.MLP_BATCH), mlp_probe.MLP_BATCH)
    sizes = [10, 300, 3_000, 30_000, 300_000]
    assert [mlp_probe.probe_steps(n)[0] for n in sizes] == sorted(mlp_probe.probe_steps(n)[0] for n in sizes)
    assert mlp_probe.mlp_batches([19, 18], torch.Generator().manual_seed(0)).shape == (2, mlp_probe.PROBE_MIN_STEPS, 19)


def test_wide_features_are_reduced_on_the_training_fold_and_still_classify():
    # two classes that differ in 400 of 2,000 features, 40 samples: each fold's probes see at most
    # the 31 principal components its 32 training rows span
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    x = rng.normal(size=(40, 2000)).astype(np.float32)
    x[:, :400] += 3 * y[:, None]
    scores = probes.probe_scores(x, y, ("linear", "knn", "mlp"), folds=5, seed=0)
    for name in ("linear", "knn", "mlp"):
        assert scores[name]["probed_dims"] == 31 and scores[name]["accuracy"] > 0.9, (name, scores[name])
    narrow = probes.probe_scores(x[:, :50], y, ("knn",), folds=5, seed=0)
    assert narrow["knn"]["probed_dims"] == 50  # under the bound: as they are


def test_per_class_caveat():
    assert caveats.per_class_caveat([10, 12], "the test images scored hold") == []
    (line,) = caveats.per_class_caveat([12, 3], "the test images scored hold")
    assert "only 3 images of the smallest class" in line


@pytest.fixture(scope="module")
def small_photos(tmp_path_factory):
    """A trained run on a folder of 2 x 30 small colour images (24 x 24 x 3 = 1,728 pixel features),
    its test latents encoded: step 6's folds hold a handful of images per class."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for c, name in enumerate(("cats", "dogs")):
        (root / "data" / name).mkdir(parents=True)
        for i in range(30):
            img = rng.integers(0, 80, (24, 24, 3)) + np.array([150 * c, 60, 150 * (1 - c)])
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / "data" / name / f"{i}.png")
    out = root / "out"
    run_main("train", "--dataset", f"folder:{root / 'data'}", "--image_size", 24, "--latent_size", 4,
             "--num_epochs", 1, "--snapshot_every", 0, "--output_dir", out, "--quiet")
    run_main("encode_latent_space", "--output_dir", out, "--quiet")
    return out


def test_step6_on_few_wide_images_says_so(small_photos, capsys):
    m = run_main("classify_latent_space", "--output_dir", small_photos, "--folds", 3)
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("caveat: ")]
    assert printed == [f"caveat: {c}" for c in m["caveats"]]
    assert any(c.startswith("a probe's training fold holds only") for c in m["caveats"])
    pixels = m["models"]["4"]["raw_pixels"]
    assert pixels["dims"] == 1728 and pixels["probed_dims"] < 1728
    assert any(c.startswith("raw pixels (1728 features) reduced to") for c in m["caveats"])
    assert "probed_dims" not in m["models"]["4"]["pca"]  # 4 features: as they are


def test_step6_heldout_reduces_wide_pixels_on_the_training_split(small_photos, capsys):
    run_main("encode_latent_space", "--output_dir", small_photos, "--split", "train", "--quiet")
    m = run_main("classify_latent_space", "--output_dir", small_photos, "--protocol", "heldout", "--baselines", "pixels")
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("caveat: ")]
    assert printed == [f"caveat: {c}" for c in m["caveats"]]
    row = m["models"]["4"]
    assert row["raw_pixels"]["dims"] == 1728 and row["raw_pixels"]["probed_dims"] == row["training_samples"] - 1
    assert "pca" not in row and any(c.startswith("raw pixels (1728 features) reduced to") for c in m["caveats"])


@pytest.mark.parametrize("flag,kept", [(["pixels"], {"raw_pixels"}), (["pca"], {"pca"}), ([], set())])
def test_baselines_choose_what_step6_scores_beside_the_latents(small_photos, flag, kept):
    m = run_main("classify_latent_space", "--output_dir", small_photos, "--folds", 3, "--quiet", "--baselines", *flag)
    for row in m["models"].values():
        assert {"latent", "pca", "raw_pixels"} & set(row) == {"latent"} | kept
    saved = json.loads((small_photos / "classification_latent_size_4.json").read_text())
    assert saved["baselines"] == flag
