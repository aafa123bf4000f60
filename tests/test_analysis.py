"""Steps 2-6 end to end on the embedded digits, after the tiny training, as a user runs them: with
no arguments, then with the explicit paths of the README; and every user-error path."""
import contextlib
import importlib
import io
import json
import math
import shutil

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from conftest import run_main, run_script
from latentlab.store import files
from latentlab.cli import run
from model.autoencoder import model_from_checkpoint

STEPS = ["viz_reconstruction.py", "encode_latent_space.py", "viz_latent_space.py",
         "viz_kmeans_latent_space.py", "classify_latent_space.py"]
# The machine running the suite may be small and shared: one BLAS thread per step process keeps the
# sklearn probes from fighting over cores (it changes no result).
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def pipeline(trained, tmp_path_factory):
    """A copy of the trained folder after every step ran with no arguments but --output_dir, in order.
    Returns (folder, {script: stdout})."""
    out = tmp_path_factory.mktemp("pipeline") / "output"
    shutil.copytree(trained, out)
    # the first step in a process of its own, as typed; the rest through run(), as their __main__
    # does, in this process: the same code, without four more imports of torch and scikit-learn
    stdout = {STEPS[0]: run_script(STEPS[0], "--output_dir", out, env=ONE_THREAD).stdout}
    for script in STEPS[1:]:
        mod = importlib.import_module(script.removesuffix(".py"))
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            run(mod.main, mod.parse_args(["--output_dir", str(out)]))
        stdout[script] = printed.getvalue()
    return out, stdout


def load_json(path):
    return json.loads(path.read_text())


def numbers(obj):
    """Every number in a JSON document."""
    if isinstance(obj, dict):
        for v in obj.values():
            yield from numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


def assert_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    img = plt.imread(path)
    assert img.ndim == 3 and min(img.shape[:2]) > 100 and img.std() > 0  # decodes, and is not blank


def snapshot(folder):
    """Every file's bytes, but the writer lock's, which names each step that ran."""
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != ".latentlab.lock"}


# ---------------------------------------------------------------- no arguments, in order
def test_defaults_reconstruction(pipeline):
    out, stdout = pipeline
    assert_png(out / "reconstruction_latent_size_8.png")
    m = load_json(out / "reconstruction_latent_size_8.json")
    assert all(math.isfinite(v) for v in numbers(m))
    assert m["test_images"] == 359 and set(m["models"]) == {"2", "8"}
    pca = torch.load(out / "pca_baseline.pth", weights_only=True)
    for k, r in m["models"].items():
        ckpt = torch.load(out / f"model_latent_size_{k}.pth", weights_only=True)
        # the same set-wide MSE train.py measured, and the PCA MSE train.py stored
        assert r["autoencoder"]["mse"] == pytest.approx(ckpt["test_metrics"]["test_mse"], rel=1e-4)
        assert r["pca"]["mse"] == pytest.approx(pca["scores"][k]["test_mse"], rel=1e-4)
        for s in (r["autoencoder"], r["pca"]):
            assert 0 < s["mse"] < 1 and s["psnr"] == pytest.approx(10 * math.log10(1 / s["mse"]))
            assert 0 < s["ssim"] <= 1
    # more latent dimensions reconstruct better, for the model and for PCA
    assert m["models"]["8"]["autoencoder"]["ssim"] > m["models"]["2"]["autoencoder"]["ssim"]
    assert m["models"]["8"]["pca"]["mse"] < m["models"]["2"]["pca"]["mse"]
    assert "SSIM" in stdout["viz_reconstruction.py"] and "PCA, 8 components" in stdout["viz_reconstruction.py"]


def test_defaults_encode(pipeline):
    out, _ = pipeline
    test = torch.load(out / "test_data.pth", weights_only=True)
    metas = {}
    for k in (2, 8):
        z = np.load(out / f"latent_space_size_{k}.npy", allow_pickle=False)
        meta = load_json(out / f"latent_space_size_{k}.json")
        metas[k] = meta
        # the default 1000 is more than the 359 test images: all of them, in order
        assert z.shape == (359, k) and z.dtype == np.float32 and np.isfinite(z).all()
        assert meta["indices"] == list(range(359)) and meta["labels"] == test["labels"].tolist()
        assert meta["latent_size"] == k and meta["family"] == "conv" and meta["dataset"] == "digits"
        assert meta["class_names"] == test["class_names"]
        # the stored latents are what the model gives for those images
        model = model_from_checkpoint(torch.load(out / f"model_latent_size_{k}.pth", weights_only=True))
        with torch.no_grad():
            expect = model.encode(test["images"][:20].float() / 255).numpy()
        np.testing.assert_allclose(z[:20], expect, rtol=1e-5, atol=1e-5)
    assert metas[2]["indices"] == metas[8]["indices"]


def test_defaults_projection_umap(pipeline):
    out, stdout = pipeline
    assert_png(out / "projection_umap_latent_size_8.png")
    m = load_json(out / "projection_umap_latent_size_8.json")
    assert all(math.isfinite(v) for v in numbers(m))
    r8, r2 = m["models"]["8"], m["models"]["2"]
    assert 0.5 < r8["trustworthiness"] <= 1
    assert r2["drawn"] == "as is" and "trustworthiness" not in r2
    for r in (r2, r8):
        assert 0.1 < r["knn10_accuracy_2d"] <= 1  # better than chance over 10 classes
    cached = list((out / "cache").glob("projection_umap_2d_*.npy"))
    assert len(cached) == 1 and np.load(cached[0], allow_pickle=False).shape == (359, 2)
    assert "trustworthiness" in stdout["viz_latent_space.py"]


def test_defaults_kmeans_reuses_the_umap_of_the_previous_step(pipeline):
    out, stdout = pipeline
    m = load_json(out / "kmeans_latent_space_latent_size_8.json")
    assert m["num_clusters"] == 10 and m["space"] == "latent"  # default: one cluster per class
    for k in ("2", "8"):
        r = m["models"][k]
        assert 0 <= r["nmi"] <= 1 and -1 <= r["ari"] <= 1 and 0.1 <= r["purity"] <= 1 and -1 <= r["silhouette"] <= 1
        assert_png(out / f"kmeans_latent_space_latent_size_{k}.png")
    assert m["models"]["8"]["nmi"] > 0.2  # the clusters say something about the classes
    # the 8-d latents were drawn with the UMAP viz_latent_space.py computed: loaded, not computed again
    assert m["models"]["8"]["view"]["cached"] is True
    assert len(list((out / "cache").glob("projection_*.npy"))) == 1
    assert "loaded from the cache" in stdout["viz_kmeans_latent_space.py"]


def test_kmeans_writes_the_cluster_of_each_latent_it_scored(pipeline):
    """The JSON hands on each latent's cluster, in the order of its latents file: the clusters
    whose NMI, ARI and purity it reports, so later steps (the explorer) recompute nothing."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    from latentlab.analysis.scores import cluster_purity
    out, _ = pipeline
    m = load_json(out / "kmeans_latent_space_latent_size_8.json")
    assert sorted(m["clusters"]["by_latent_size"]) == ["2", "8"]
    for k in ("2", "8"):
        clusters = np.array(m["clusters"]["by_latent_size"][k])
        labels = np.array(load_json(out / f"latent_space_size_{k}.json")["labels"])
        assert clusters.shape == labels.shape == (m["models"][k]["samples"],) and set(clusters) == set(range(10))
        assert m["models"][k]["latents_sha256"] == load_json(out / f"latent_space_size_{k}.json")["npy_sha256"]
        assert math.isclose(normalized_mutual_info_score(labels, clusters), m["models"][k]["nmi"], abs_tol=1e-12)
        assert math.isclose(adjusted_rand_score(labels, clusters), m["models"][k]["ari"], abs_tol=1e-12)
        assert math.isclose(cluster_purity(labels, clusters), m["models"][k]["purity"], abs_tol=1e-12)


def test_kmeans_in_umap_space_reuses_the_cached_umap(pipeline, tmp_path, monkeypatch):
    from latentlab.analysis import projection
    out = tmp_path / "out"
    shutil.copytree(pipeline[0], out)
    computed = []

    def pca_instead(z, method, params):  # stands in for a UMAP to compute (numba compiles for a minute)
        computed.append(z.shape)
        return projection.compute_projection.__wrapped__(z, "pca", {**params, "random_state": 0})

    pca_instead.__wrapped__ = projection.compute_projection
    monkeypatch.setattr(projection, "compute_projection", pca_instead)
    m = run_main("viz_kmeans_latent_space", "--output_dir", out, "--space", "umap", "--quiet")
    # the 2-d UMAP was new; the 8-d one is the 2-d UMAP viz_latent_space.py computed, with the same parameters
    assert computed == [(359, 2)]
    assert m["models"]["8"]["umap"]["cached"] is True and m["models"]["2"]["umap"]["cached"] is False
    assert m["models"]["8"]["clustered_in"] == "its 2-d UMAP" and m["models"]["8"]["view"] is None
    assert 0 <= m["models"]["8"]["nmi"] <= 1
    assert_png(out / "kmeans_umap_space_latent_size_8.png")


def test_defaults_classify(pipeline):
    out, stdout = pipeline
    assert_png(out / "confusion_matrix_latent_size_8.png")
    m = load_json(out / "classification_latent_size_8.json")
    assert all(math.isfinite(v) for v in numbers(m))
    for k in ("2", "8"):
        r = m["models"][k]
        assert r["latent"]["dims"] == int(k) and r["pca"]["dims"] == int(k) and r["raw_pixels"]["dims"] == 64
        for feats in ("latent", "pca", "raw_pixels"):
            for probe in ("linear", "knn", "mlp"):
                s = r[feats][probe]
                assert 0 <= s["macro_f1"] <= 1 and 0 <= s["accuracy"] <= 1
    assert m["models"]["8"]["latent"]["linear"]["accuracy"] > 0.5  # chance is 0.1
    assert m["models"]["8"]["raw_pixels"]["mlp"]["accuracy"] > 0.8
    assert "raw pixels" in stdout["classify_latent_space.py"]
    # each probe's predictions are cached: 3 probes x (2 latent sets, 2 PCA sets, the raw pixels once),
    # plus viz_latent_space.py's 10-NN in the 8-d model's 2-D picture; its 10-NN on the latents
    # themselves are the ones step 6 would fit, which step 6 loaded
    assert len(list((out / "cache").glob("probe_*.npy"))) == 15 + 1


def test_analysis_is_deterministic(pipeline, tmp_path):
    """Same seed, same device, same numbers (in-process, as the notebook calls main)."""
    from threadpoolctl import threadpool_limits
    out, _ = pipeline
    results = []
    for run_dir in ("a", "b"):
        d = tmp_path / run_dir
        with threadpool_limits(1):  # as ONE_THREAD does for the processes
            a = run_main("viz_kmeans_latent_space", "--latent_space", out / "latent_space_size_8.npy", "--output_dir", d,
                     "--vis_type", "pca", "--quiet")
            b = run_main("classify_latent_space", "--latent_space", out / "latent_space_size_8.npy", "--test_data",
                     out / "test_data.pth", "--output_dir", d, "--probes", "linear", "--quiet")
        results.append((a["models"], b["models"]))
    strip = lambda r: json.dumps(r, sort_keys=True, default=str).replace(str(tmp_path / "a"), "").replace(str(tmp_path / "b"), "")  # noqa: E731
    assert strip(results[0]) == strip(results[1])


# ---------------------------------------------------------------- the README's explicit paths
def test_explicit_paths_as_in_the_readme(pipeline, tmp_path, capsys):
    src, _ = pipeline
    before = snapshot(src)
    out = tmp_path / "elsewhere"
    z8 = out / "latent_space_size_8.npy"
    commands = [
        ("viz_reconstruction.py", "--model_path", src / "model_latent_size_8.pth", "--test_data", src / "test_data.pth",
         "--num_images", 5),
        ("encode_latent_space.py", "--model_path", src / "model_latent_size_8.pth", "--test_data", src / "test_data.pth",
         "--num_samples", 150, "--seed", 1),
        ("viz_latent_space.py", "--latent_space", z8, "--vis_type", "pca"),
        ("viz_kmeans_latent_space.py", "--latent_space", z8, "--num_clusters", 6, "--vis_type", "pca"),
        ("classify_latent_space.py", "--latent_space", z8, "--test_data", src / "test_data.pth", "--folds", 3,
         "--probes", "linear", "knn"),
    ]
    for script, *args in commands:  # in this process, through run() as each __main__ (the pipeline ran one as typed)
        mod = importlib.import_module(script.removesuffix(".py"))
        capsys.readouterr()
        run(mod.main, mod.parse_args([str(a) for a in (*args, "--output_dir", out, "--quiet")]))
        printed, err = capsys.readouterr()
        # --quiet: the step's results and the files it wrote, no progress and no notes
        assert err == "" and "\r" not in printed and "note" not in printed, (script, printed, err)
        assert str(out) in printed.splitlines()[-1], (script, printed)
    assert snapshot(src) == before  # the inputs are only read
    meta = load_json(out / "latent_space_size_8.json")
    # a seeded sample of 150, kept in test-set order, the same for both models
    assert len(meta["indices"]) == 150 and meta["indices"] == sorted(meta["indices"]) and meta["seed"] == 1
    assert meta["indices"] == load_json(out / "latent_space_size_2.json")["indices"]
    assert meta["model_path"] == str(src / "model_latent_size_8.pth")
    for png in ("reconstruction_latent_size_8.png", "projection_pca_latent_size_8.png",
                "kmeans_latent_space_latent_size_2.png", "kmeans_latent_space_latent_size_8.png",
                "confusion_matrix_latent_size_8.png"):
        assert_png(out / png)
    assert load_json(out / "kmeans_latent_space_latent_size_8.json")["num_clusters"] == 6
    c = load_json(out / "classification_latent_size_8.json")
    assert c["folds"] == 3 and c["models"]["8"]["samples"] == 150 and set(c["models"]["8"]["latent"]) == {"linear", "knn", "dims"}


# ---------------------------------------------------------------- user errors: one line, status 2, nothing touched
def refused(capsys, module, *argv) -> str:
    """Run a step in-process as `python module.py argv` would; it must exit 2 with one line on stderr."""
    mod = importlib.import_module(module)
    with pytest.raises(SystemExit) as e:
        run(mod.main, mod.parse_args([str(a) for a in argv]))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_errors_from_a_real_process(pipeline, tmp_path):
    out, _ = pipeline
    before = snapshot(out)
    for script, args, words in [
        ("encode_latent_space.py", ["--test_data", out / "model_latent_size_8.pth"], "is a checkpoint, not a test_data"),
        ("classify_latent_space.py", ["--output_dir", tmp_path], "does not exist"),
    ]:
        proc = run_script(script, "--output_dir", out, *args, check=False)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and words in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert snapshot(out) == before


@pytest.fixture
def shrunk_test_data(pipeline, tmp_path):
    """test_data.pth of the same training with the images resized to 16x16."""
    out, _ = pipeline
    data = torch.load(out / "test_data.pth", weights_only=True)
    data["images"] = torch.nn.functional.interpolate(data["images"].float(), size=16).round().to(torch.uint8)
    path = tmp_path / "shrunk" / "test_data.pth"
    files.save_torch(data, path)
    return path


def _latents_copy(src_npy, dst_folder, name, edit=None):
    dst_folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(src_npy, dst_folder / name)
    meta = load_json(src_npy.with_suffix(".json"))
    if edit:
        edit(meta)
    (dst_folder / name).with_suffix(".json").write_text(json.dumps(meta))
    return dst_folder / name


CASES = {
    "missing test data": lambda out, tmp, shrunk: (
        "viz_reconstruction", ["--output_dir", tmp / "empty"], "does not exist"),
    "checkpoint given as test data": lambda out, tmp, shrunk: (
        "viz_reconstruction", ["--test_data", out / "model_latent_size_2.pth"], "is a checkpoint, not a test_data"),
    "test data given as checkpoint": lambda out, tmp, shrunk: (
        "encode_latent_space", ["--model_path", out / "test_data.pth"], "is a test_data, not a checkpoint"),
    "test data of another image shape": lambda out, tmp, shrunk: (
        "encode_latent_space", ["--model_path", out / "model_latent_size_8.pth", "--test_data", shrunk],
        "has images of shape (1, 16, 16) but model"),
    "model of another training": lambda out, tmp, shrunk: (
        "viz_reconstruction", ["--model_path", shutil.copy(out / "model_latent_size_8.pth", tmp / "model_latent_size_16.pth"),
                               "--test_data", out / "test_data.pth"], "belongs to model_latent_size_2.pth"),
    "latent file of another size than its name": lambda out, tmp, shrunk: (
        "viz_latent_space", ["--latent_space", _latents_copy(out / "latent_space_size_2.npy", tmp / "z", "latent_space_size_8.npy"),
                             "--vis_type", "pca"], "is named for size 8 but holds latents of size 2"),
    "latent file of another size than its model": lambda out, tmp, shrunk: (
        "viz_kmeans_latent_space", ["--latent_space", _latents_copy(out / "latent_space_size_8.npy", tmp / "z", "z.npy",
                                                                    lambda m: m.update(latent_size=256))],
        "says latent_size 256"),
    "checkpoint given as latents": lambda out, tmp, shrunk: (
        "viz_latent_space", ["--latent_space", out / "model_latent_size_8.pth"], "not a .npy latent array"),
    "latents of other test data": lambda out, tmp, shrunk: (
        "classify_latent_space", ["--latent_space", _latents_copy(out / "latent_space_size_8.npy", tmp / "z", "latent_space_size_8.npy",
                                                                  lambda m: m.update(labels=m["labels"][::-1])),
                                  "--test_data", out / "test_data.pth"], "differ from those of the same items"),
    "test data given as pca baseline": lambda out, tmp, shrunk: (
        "classify_latent_space", ["--pca_baseline", out / "test_data.pth"], "is a test_data, not a pca_baseline"),
    "more clusters than samples": lambda out, tmp, shrunk: (
        "viz_kmeans_latent_space", ["--num_clusters", 360], "--num_clusters 360 but there are only 359 latents"),
    "one cluster": lambda out, tmp, shrunk: ("viz_kmeans_latent_space", ["--num_clusters", 1], "must be >= 2"),
    "unknown vis_type": lambda out, tmp, shrunk: ("viz_latent_space", ["--vis_type", "lda"], "invalid choice: 'lda'"),
    "zero samples": lambda out, tmp, shrunk: ("encode_latent_space", ["--num_samples", 0], "must be >= 1"),
    "samples not a number": lambda out, tmp, shrunk: ("encode_latent_space", ["--num_samples", "many"], "is not an integer"),
    "more images than the test set": lambda out, tmp, shrunk: (
        "viz_reconstruction", ["--num_images", 400], "--num_images 400 but the test data holds 359"),
    "umap wider than the samples": lambda out, tmp, shrunk: (
        "viz_kmeans_latent_space", ["--space", "umap", "--umap_dims", 358], "--umap_dims 358 needs at least 360 latents"),
    "unknown baseline": lambda out, tmp, shrunk: (
        "classify_latent_space", ["--baselines", "umap"], "invalid choice: 'umap'"),
    "more folds than samples of any class": lambda out, tmp, shrunk: (
        "classify_latent_space", ["--folds", 100], "100-fold cross-validation needs a class with at least 100 samples"),
}


@pytest.mark.parametrize("case", CASES)
def test_user_errors(case, pipeline, shrunk_test_data, tmp_path, capsys):
    out, _ = pipeline
    before = snapshot(out)
    module, argv, words = CASES[case](out, tmp_path, shrunk_test_data)
    if "--output_dir" not in argv:
        argv = [*argv, "--output_dir", out]
    err = refused(capsys, module, *argv)
    assert words in err
    assert snapshot(out) == before  # nothing deleted, nothing written


# ---------------------------------------------------------------- figures (issue 39)
def test_both_confusion_panels_show_the_same_probe(pipeline, tmp_path, monkeypatch):
    """Like for like: the probe most accurate on the N-d latents, in both panels, named with its accuracy."""
    from latentlab import plots
    out, _ = pipeline
    drawn, real = {}, plots.confusion_figure

    def spy(panels, class_names, title):
        drawn.update(panels=[t for _, t in panels], title=title)
        return real(panels, class_names, title)
    monkeypatch.setattr(plots, "confusion_figure", spy)
    m = run_main("classify_latent_space", "--latent_space", out / "latent_space_size_8.npy", "--test_data",
                 out / "test_data.pth", "--output_dir", tmp_path, "--baselines", "--quiet")
    scores = {k: {p: s["accuracy"] for p, s in m["models"][k]["latent"].items() if isinstance(s, dict)} for k in ("2", "8")}
    probe = max(scores["8"], key=scores["8"].get)
    assert m["figure_probe"] == probe and f"both panels: the {probe} probe" in drawn["title"]
    assert len(drawn["panels"]) == 2
    for k, panel in zip(("2", "8"), drawn["panels"]):
        assert f"{probe} probe on the latents: accuracy {scores[k][probe]:.3f}" in panel
