"""The diagnosis step (diagnose_latent_space.py) and its library, against answers known beforehand:
CKA of a space with itself, a rotated and scaled copy and independent noise; TwoNN of a linear
subspace; a unit zeroed by hand; continuity of an exact copy; a label-efficiency curve on a separable
set; step 2's MSE at noise 0; and its refusals (one line, exit 2, nothing lost)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import parse_refused, run_main, run_refused, written
from latentlab.analysis import diagnosis, label_efficiency as le
from latentlab.analysis.scores import continuity, global_score, projection_structure, trustworthiness


def test_cka_of_itself_and_of_a_rotated_scaled_copy_is_1_and_of_noise_near_0():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 10)) @ rng.normal(size=(10, 10))
    rotation, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    assert diagnosis.linear_cka(x, x) == pytest.approx(1.0)
    assert diagnosis.linear_cka(x, 3.5 * x @ rotation + 7.0) == pytest.approx(1.0)
    assert diagnosis.linear_cka(x, rng.normal(size=(2000, 12))) < 0.02


def test_twonn_of_a_5d_linear_subspace_in_64d_is_5():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, 5)) @ rng.normal(size=(5, 64))
    assert diagnosis.intrinsic_dimension(x)["twonn"] == pytest.approx(5.0, abs=0.5)
    assert diagnosis.components_for(x)["0.95"] <= 5


def test_a_unit_zeroed_by_hand_counts_one_active_unit_fewer():
    from latentlab.analysis.inference import encode_images
    from model.autoencoder import ModelConfig, build_model
    torch.manual_seed(0)
    model = build_model(ModelConfig(family="mlp", latent_size=6, image_shape=(1, 8, 8), hidden=(32,))).eval()
    with torch.no_grad():
        model.to_latent.weight.mul_(20.0)  # every unit well above the threshold
    images = torch.randint(0, 256, (200, 1, 8, 8), dtype=torch.uint8)
    before = diagnosis.units_in_use(encode_images(model, images, "cpu"))
    with torch.no_grad():
        model.to_latent.weight[3].zero_()
        model.to_latent.bias[3] = 0.7  # a constant unit: no variance over the images
    after = diagnosis.units_in_use(encode_images(model, images, "cpu"))
    assert before["active_units"] == 6 and after["active_units"] == 5
    assert after["variance"][3] == pytest.approx(0.0, abs=1e-10)


def test_kl_per_unit_of_a_vae_sums_to_its_kl_and_a_unit_at_the_prior_is_collapsed():
    from model.autoencoder import ModelConfig, build_model
    torch.manual_seed(0)
    model = build_model(ModelConfig(family="vae", latent_size=4, image_shape=(1, 8, 8), channels=(8,))).eval()
    half = model.config.latent_size
    with torch.no_grad():  # unit 2: mean 0, log-variance 0 on every image, the prior itself
        for row in (2, half + 2):
            model.to_latent.weight[row].zero_()
            model.to_latent.bias[row] = 0.0
    images = torch.randint(0, 256, (50, 1, 8, 8), dtype=torch.uint8)
    kl = diagnosis.kl_per_unit(model, images, "cpu", 16)
    with torch.no_grad():
        _, total = model(images.float() / 255)
    assert kl.sum() == pytest.approx(total.mean().item(), rel=1e-4)
    units = diagnosis.units_in_use(np.zeros((50, 4)), kl)
    assert kl[2] == pytest.approx(0.0, abs=1e-9) and units["collapsed_units"] >= 1


def test_continuity_of_an_exact_copy_is_1_and_the_global_score_of_a_scaled_copy_is_1():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2))
    assert continuity(x, x.copy()) == pytest.approx(1.0)
    assert global_score(x, 4.0 * x) == pytest.approx(1.0)
    high = np.concatenate([x, np.zeros((300, 3))], axis=1)
    row = projection_structure(high, x)
    assert row["trustworthiness"] == pytest.approx(1.0) and set(row["continuity_k"]) == {"5", "10", "20"}


def test_continuity_is_trustworthiness_with_the_spaces_swapped():
    rng = np.random.default_rng(1)
    high, low = rng.normal(size=(200, 6)), rng.normal(size=(200, 2))
    assert continuity(high, low, 10) == trustworthiness(low, high, 10)
    assert global_score(high, low) < 0.3


def test_label_efficiency_is_non_decreasing_on_a_separable_set():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 200)
    x = (rng.normal(size=(600, 8)) + 3.0 * np.eye(3, 8)[labels]).astype(np.float32)
    pools = le.cv_pools(labels, 0)
    sizes, left = le.drawable(labels, pools, (1, 10, 100), 3)
    assert sizes == [1, 10, 100] and left == []
    curves = le.label_efficiency({"x": x}, labels, pools, sizes, 0)["x"]
    for probe, curve in curves.items():
        means = [curve[n]["mean"] for n in ("1", "10", "100", "all")]
        assert all(b >= a - 0.005 for a, b in zip(means, means[1:])), (probe, means)
        assert curve["1"]["draws"] == le.DRAWS and means[-1] > 0.9 and means[0] < means[-1]


def test_draws_of_more_labels_than_a_class_holds_are_left_out_and_fewer_images_than_classes_refused():
    labels = np.repeat(np.arange(4), 12)
    pools = le.cv_pools(labels, 0)
    sizes, left = le.drawable(labels, pools, (1, 10, 100), 4)
    assert sizes == [1] and len(left) == 2
    with pytest.raises(ValueError, match="per class needs 1 image of each of the 10 classes"):
        le.require_draw(np.arange(5), 10, 1, "the test latents")


def test_noise_zero_gives_the_models_own_mse_and_codes():
    from latentlab.analysis.inference import encode_images, model_mse
    from latentlab.analysis.robustness import model_under_noise, noisy_batches
    from model.autoencoder import ModelConfig, build_model
    torch.manual_seed(0)
    model = build_model(ModelConfig(family="mlp", latent_size=3, image_shape=(1, 8, 8), hidden=(16,))).eval()
    images = torch.randint(0, 256, (70, 1, 8, 8), dtype=torch.uint8)
    errors, codes = model_under_noise(model, images, 0.0, 0, "cpu", 32)
    assert errors.shape == (70,) and errors.mean() == pytest.approx(model_mse(model, images, "cpu", 32), rel=1e-6)
    np.testing.assert_allclose(codes, encode_images(model, images, "cpu"), rtol=1e-5, atol=1e-6)
    first = [n for _, n in noisy_batches(images, 0.3, 5, 32)]
    again = [n for _, n in noisy_batches(images, 0.3, 5, 32)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))  # seeded: every coder meets the same noise


def test_worst_per_class_picks_each_class_s_largest_errors_largest_first():
    labels = np.array([0, 1, 0, 1, 0, 0, 1])
    errors = np.array([0.1, 0.5, 0.9, 0.2, 0.3, 0.05, 0.7])
    assert diagnosis.worst_per_class(errors, labels, 2) == {0: [2, 4], 1: [6, 1]}


def test_confident_errors_are_each_class_s_wrong_rows_surest_first():
    labels = np.array([0, 0, 0, 1, 1, 1, 2])
    predicted = np.array([1, 2, 0, 0, 1, 0, 2])  # class 2 has no error
    confidence = np.array([0.6, 0.9, 0.99, 0.5, 0.99, 0.7, 0.8])
    assert diagnosis.confident_errors_per_class(predicted, confidence, labels, 1) == {0: [1], 1: [5]}
    assert diagnosis.confident_errors_per_class(predicted, confidence, labels) == {0: [1, 0], 1: [5, 3]}


def test_negative_noise_levels_are_refused_in_one_line(capsys):
    assert "--noise_levels" in parse_refused("diagnose_latent_space", ["--noise_levels", "-1"], capsys)


# ---------------------------------------------------------------- the step, on the trained digits
def test_the_step_after_steps_1_to_3_and_noise_zero_reproduces_step_2(trained_copy, capsys):
    out = trained_copy
    run_main("encode_latent_space", "--output_dir", out, "--num_samples", "all", "--quiet")
    run_main("viz_reconstruction", "--output_dir", out, "--quiet")
    capsys.readouterr()
    run_main("diagnose_latent_space", "--output_dir", out, "--noise_levels", 0, 0.2)
    printed = capsys.readouterr().out
    assert "active units" in printed and "linear CKA" in printed
    d = json.loads((out / "diagnosis_latent_size_8.json").read_text())
    step2 = json.loads((out / "reconstruction_latent_size_8.json").read_text())["models"]
    for size, name in (("2", "2-d conv"), ("8", "8-d conv")):
        assert d["robustness"][name]["mse"][0] == pytest.approx(step2[size]["autoencoder"]["mse"], rel=1e-5)
        k = step2[size]["pca"]["components"]
        assert d["robustness"][f"PCA, {k}"]["mse"][0] == pytest.approx(step2[size]["pca"]["mse"], rel=1e-5)
    assert d["units"]["8-d conv"]["units"] == 8 and len(d["units"]["8-d conv"]["variance"]) == 8
    assert d["agreement"]["8-d conv vs raw pixels"]["cka"] <= 1 + 1e-9
    assert set(d["label_efficiency"]["raw pixels"]) == {"linear", "knn"}
    assert all(Path(path).is_file() for path in d["figures"].values())
    worst = d["worst_reconstructions"]["8-d conv"]
    assert len(worst) == 10 and all(1 <= len(cases) <= 4 for cases in worst.values())
    assert d["label_protocol"] == "cv"
    assert d["probe_errors"] == {} and "errors" not in d["figures"]  # step 6 has not run: a note says so
    assert any("classify_latent_space.py" in c for c in d["caveats"])
    run_main("encode_latent_space", "--output_dir", out, "--split", "train", "--quiet")
    run_main("classify_latent_space", "--output_dir", out, "--probes", "knn", "linear", "--quiet")
    step6 = json.loads((out / "classification_latent_size_8.json").read_text())["predictions"]
    run_main("diagnose_latent_space", "--output_dir", out, "--noise_levels", 0, "--labels_per_class", 1, 10, "--quiet")
    held = json.loads((out / "diagnosis_latent_size_8.json").read_text())
    assert held["label_protocol"] == "heldout" and held["labels_per_class"] == [1, 10]
    assert held["label_efficiency"]["8-d conv"]["linear"]["all"]["draws"] == 1
    # step 6's best probe's surest errors, as its JSON holds them
    errors, test = held["probe_errors"]["8-d conv"], np.load(out / "latent_space_size_8.npy")
    indices = json.loads((out / "latent_space_size_8.json").read_text())["indices"]
    pred, conf = np.array(step6["by_latent_size"]["8"]), np.array(step6["confidence_by_latent_size"]["8"])
    assert errors["probe"] == step6["probe"] and Path(held["figures"]["probe_errors"]).is_file()
    labels = np.array(json.loads((out / "latent_space_size_8.json").read_text())["labels"])
    assert errors["errors"] == int((pred != labels).sum()) > 0 and len(test) == len(pred)
    for cases in errors["by_class"].values():
        rows = [indices.index(c["test_index"]) for c in cases]
        assert all(pred[r] != labels[r] for r in rows) and [c["confidence"] for c in cases] == sorted(conf[rows], reverse=True)


def test_latents_of_another_run_are_refused(trained_copy, capsys):
    run_main("encode_latent_space", "--output_dir", trained_copy, "--quiet")
    meta_path = trained_copy / "latent_space_size_2.json"
    meta = json.loads(meta_path.read_text())
    meta["run"] = "f" * 12
    meta_path.write_text(json.dumps(meta))
    before = written(trained_copy)
    line = run_refused("diagnose_latent_space", ["--output_dir", trained_copy], capsys)
    assert "two trainings" in line and written(trained_copy) == before


def test_fewer_images_than_classes_for_a_draw_is_refused(trained_copy, capsys):
    run_main("encode_latent_space", "--output_dir", trained_copy, "--num_samples", 5, "--quiet")
    before = written(trained_copy)
    line = run_refused("diagnose_latent_space", ["--output_dir", trained_copy], capsys)
    assert "per class" in line and "--num_samples" in line and written(trained_copy) == before


def test_training_latents_of_different_images_are_refused(trained_copy, capsys):
    out = trained_copy
    run_main("encode_latent_space", "--output_dir", out, "--num_samples", "all", "--split", "train", "--quiet")
    run_main("encode_latent_space", "--output_dir", out, "--num_samples", "all", "--quiet")
    meta_path = out / "latent_space_size_2_train.json"
    meta = json.loads(meta_path.read_text())
    meta["indices"] = meta["indices"][::-1]  # the same images, in another order: not the same rows
    meta_path.write_text(json.dumps(meta))
    before = written(out)
    line = run_refused("diagnose_latent_space", ["--output_dir", out], capsys)
    assert "encode different training images" in line and "--split train" in line and written(out) == before
