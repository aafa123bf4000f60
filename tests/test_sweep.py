"""sweep_latent_size.py on the embedded digits with a tiny budget: its outputs, its numbers against
those of the steps, skipping finished pairs, resuming an interrupted training, refusing other flags."""
import csv
import json
import math
import shutil

import pytest

from conftest import run_script
from latentlab import artifacts, files
from latentlab.locking import LOCK_NAME
from latentlab.sweep import METRICS, family_name, metrics_path, run_dir

pytestmark = pytest.mark.slow  # every test reads one sweep of four trainings

FLAGS = ["--latent_sizes", "4", "2", "--models", "mlp", "vae", "--dataset", "digits", "--num_epochs", "2",
         "--batch_size", "64", "--snapshot_every", "0"]
PAIRS = [(f, k) for f in ("mlp", "vae", "pca") for k in (2, 4)]


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A sweep interrupted in the first epoch of its last training (vae, 4), then run again to the end.
    Returns (output folder, the interrupted checkpoint, the second run's stdout, stamps of the pairs
    that were finished before the second run)."""
    import sweep_latent_size
    from latentlab import training
    out = tmp_path_factory.mktemp("sweep")
    real = training.train_model

    def interrupted(config, *args, on_epoch=None, **kw):
        def stop(epoch, model, ckpt):
            on_epoch(epoch, model, ckpt)
            if (config.family, config.latent_size) == ("vae", 4):
                raise Interrupt
        return real(config, *args, on_epoch=stop, **kw)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("latentlab.experiment.train_model", interrupted)
        with pytest.raises(Interrupt):
            sweep_latent_size.main(sweep_latent_size.parse_args(FLAGS + ["--output_dir", str(out), "--quiet"]))
    ckpt_path = run_dir(out, "vae", 4) / "model_latent_size_4.pth"
    at_interrupt = artifacts.load_checkpoint(ckpt_path)
    finished = [p for p in PAIRS if p not in (("vae", 4), ("pca", 4))]
    stamps = {path: path.stat().st_mtime_ns for f, k in finished for path in run_dir(out, f, k).iterdir()}
    proc = run_script("sweep_latent_size.py", *FLAGS, "--output_dir", out)
    return out, at_interrupt, proc.stdout, stamps


def test_finished_pairs_are_skipped_and_an_interrupted_training_resumes(sweep):
    out, at_interrupt, stdout, stamps = sweep
    assert at_interrupt["resume"]["epoch"] == 0
    for f, k in [("mlp", 2), ("vae", 2), ("pca", 2), ("mlp", 4)]:
        assert f"{family_name(f)}, latent size {k}: finished, skipping" in stdout
    assert "VAE, latent size 4: training" in stdout and "VAE, latent size 4: finished" not in stdout
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing of theirs was written again
    resumed = artifacts.load_checkpoint(run_dir(out, "vae", 4) / "model_latent_size_4.pth")
    assert resumed["history"]["epoch"] == [0, 1]
    assert resumed["history"]["seconds"][0] == at_interrupt["history"]["seconds"][0]  # epoch 1 kept, not retrained


def test_outputs_hold_every_pair_with_finite_metrics_in_range(sweep):
    out = sweep[0]
    with open(out / "sweep_results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["family"], int(r["latent_size"])) for r in rows] == PAIRS
    for r in rows:
        m = {k: float(r[k]) for k in METRICS}
        assert all(math.isfinite(v) for v in m.values()), r
        assert 0 < m["test_mse"] < 1 and m["test_psnr"] == pytest.approx(10 * math.log10(1 / m["test_mse"]))
        assert 0 < m["test_ssim"] <= 1
        assert all(0 <= m[k] <= 1 for k in ("linear_probe", "knn", "kmeans_nmi"))
        assert (r["epochs_run"] == "") == (r["family"] == "pca")
    pca4 = next(r for r in rows if (r["family"], r["latent_size"]) == ("pca", "4"))
    assert float(pca4["linear_probe"]) > 0.5  # 4 principal components of digits separate the 10 classes well
    md = (out / "sweep_results.md").read_text().splitlines()
    assert len(md) == 2 + len(PAIRS) and md[0].startswith("| model | latent size | test MSE")
    png = (out / "sweep_metrics.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) < 200_000
    for f, k in PAIRS:
        rec = files.load_json(metrics_path(run_dir(out, f, k)), "sweep_metrics", "")
        assert rec["settings"]["num_epochs"] == 2 and rec["test_images"] == 359
        if f != "pca":  # the model of that size alone: no 2-d companion
            assert [p.name for p in run_dir(out, f, k).glob("model_*.pth")] == [f"model_latent_size_{k}.pth"]


def test_numbers_are_those_of_the_training_and_the_steps(sweep, tmp_path):
    """The sweep's numbers for one pair and PCA equal what train.py and steps 2, 3, 5 and 6 report."""
    import classify_latent_space
    import encode_latent_space
    import viz_kmeans_latent_space
    import viz_reconstruction
    out = sweep[0]
    ours = files.load_json(metrics_path(run_dir(out, "mlp", 4)), "sweep_metrics", "")["metrics"]
    pca = files.load_json(metrics_path(run_dir(out, "pca", 4)), "sweep_metrics", "")["metrics"]
    trained = json.loads((run_dir(out, "mlp", 4) / "training_summary.json").read_text())["models"]["4"]
    assert ours["test_mse"] == pytest.approx(trained["test_mse"])
    steps = tmp_path / "steps"
    shutil.copytree(run_dir(out, "mlp", 4), steps)
    common = ["--output_dir", str(steps), "--quiet"]
    rec = viz_reconstruction.main(viz_reconstruction.parse_args(common))["models"]["4"]
    encode_latent_space.main(encode_latent_space.parse_args(common + ["--num_samples", "all"]))
    cls = classify_latent_space.main(classify_latent_space.parse_args(common + ["--probes", "linear", "knn"]))["models"]["4"]
    km = viz_kmeans_latent_space.main(viz_kmeans_latent_space.parse_args(common + ["--vis_type", "pca"]))["models"]["4"]
    assert (ours["test_mse"], ours["test_ssim"]) == pytest.approx((rec["autoencoder"]["mse"], rec["autoencoder"]["ssim"]))
    assert (pca["test_mse"], pca["test_ssim"]) == pytest.approx((rec["pca"]["mse"], rec["pca"]["ssim"]))
    assert (ours["linear_probe"], ours["knn"]) == (cls["latent"]["linear"]["accuracy"], cls["latent"]["knn"]["accuracy"])
    assert (pca["linear_probe"], pca["knn"]) == (cls["pca"]["linear"]["accuracy"], cls["pca"]["knn"]["accuracy"])
    assert ours["kmeans_nmi"] == pytest.approx(km["nmi"])


def test_a_sweep_with_other_flags_is_refused_before_it_trains(sweep):
    out = sweep[0]
    def stamps():  # of every file but the writer lock, which each run takes
        return sorted(p.stat().st_mtime_ns for p in out.rglob("*") if p.name != LOCK_NAME)
    before = stamps()
    proc = run_script("sweep_latent_size.py", *FLAGS, "--num_epochs", "3", "--output_dir", out, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "was swept with --num_epochs 2, not 3" in proc.stderr
    assert stamps() == before
