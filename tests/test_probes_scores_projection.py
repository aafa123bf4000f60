"""The analysis library on small synthetic data: SSIM as scikit-image computes it, reconstruction
scores, classifier probes that never see the samples they score, the fold-stacked MLP probe,
k-means scores, and the projection cache (and UMAP's persistent numba cache)."""
import importlib
import textwrap
import time

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from latentlab.analysis import mlp_probe, probes, projection
from latentlab.analysis.probes import cv_splits, heldout_set, probe_scores, probe_scores_of_sets
from latentlab.analysis.scores import cluster_purity, kmeans_nmi, kmeans_scores, reconstruction_scores, ssim, trustworthiness


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (1, 28, 28), (3, 5, 6)])
def test_ssim_of_a_batch_is_skimage_ssim_of_each_image(shape):
    """Pins the call's parameters (window, data range, channels) and the batch as one tall image:
    no window of one image reaches into the next."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, *shape, generator=g)
    y = (x + 0.2 * torch.randn(5, *shape, generator=g)).clamp(0, 1)
    y[2] = 1 - y[2]  # a very different neighbour above and below image 3
    win = min(7, *shape[1:])
    win -= 1 - win % 2
    expect = [structural_similarity(a.numpy().astype(np.float64), b.numpy().astype(np.float64), data_range=1.0,
                                    channel_axis=0, win_size=win) for a, b in zip(x, y)]
    np.testing.assert_allclose(ssim(x, y), expect, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ssim(x, x), np.ones(5))
    with pytest.raises(ValueError, match="at least 3x3"):
        ssim(x[..., :2, :], y[..., :2, :])


def test_reconstruction_scores_are_set_wide():
    x = torch.zeros(4, 1, 8, 8)
    rec = x.clone()
    rec[0] += 0.5  # one image off by 0.5 everywhere: set MSE = 0.25 / 4
    scores = reconstruction_scores([(x[:3], rec[:3]), (x[3:], rec[3:])])
    assert scores["mse"] == pytest.approx(0.0625)
    assert scores["psnr"] == pytest.approx(10 * np.log10(1 / 0.0625))
    assert scores["ssim"] == pytest.approx((3 + ssim(x[:1], rec[:1]).item()) / 4)


def _blobs(n_per_class=30, classes=4, dims=5, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, (classes, dims))
    labels = np.repeat(np.arange(classes), n_per_class)
    return centres[labels] + rng.normal(0, spread, (len(labels), dims)), labels


def _cv(sets: dict, folds=5, seed=0) -> dict:
    """{key: (features, labels)} as the engine's cross-validated sets."""
    return {key: (x, y, cv_splits(y, folds, seed)) for key, (x, y) in sets.items()}


def _knn_accuracy(x, y):
    return probe_scores(x, y, ("knn",))["knn"]["accuracy"]


@pytest.fixture
def short_mlp(monkeypatch):
    """A shorter MLP budget: the same code runs."""
    monkeypatch.setattr(mlp_probe, "PROBE_EPOCHS", 5)
    monkeypatch.setattr(mlp_probe, "PROBE_MIN_STEPS", 100)


def test_probes_learn_separable_classes(short_mlp):
    x, y = _blobs()
    scores = probe_scores(x, y, folds=5, seed=0)
    for name in ("linear", "knn", "mlp"):
        assert scores[name]["accuracy"] > 0.95 and scores[name]["macro_f1"] > 0.95
        assert scores[name]["predictions"].shape == y.shape


def test_probes_never_score_a_sample_they_were_fit_on():
    # every sample is its own point and its label is random: a 1-NN that had seen the sample it
    # predicts would be always right; held out, it can only guess (chance: 1/4)
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(200, 3)), rng.integers(0, 4, 200)
    scores = probe_scores(x, y, ("knn", "linear"), folds=5, seed=0, knn_k=1)
    assert scores["knn"]["accuracy"] < 0.45 and scores["linear"]["accuracy"] < 0.45


def test_knn_probe_predicts_as_scikit_learns_on_real_digits():
    """The torch k-NN against KNeighborsClassifier on the same folds of the 1797 8x8 digits."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier
    x, y = load_digits(return_X_y=True)
    x = x + np.random.default_rng(0).normal(0, 1e-3, x.shape)  # no exact distance ties between pixel vectors
    ours = probe_scores(x, y, ("knn",), folds=5, seed=0)
    knn = np.empty_like(y)
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(x, y):
        knn[te] = KNeighborsClassifier(10).fit(x[tr], y[tr]).predict(x[te])
    assert (ours["knn"]["predictions"] == knn).mean() > 0.995


def test_each_probe_s_confidence_is_the_probability_it_gave_its_prediction(short_mlp):
    """linear: scikit-learn's predict_proba (its prediction, predict's); knn: the share of the k
    neighbours that voted for it; mlp: a probability, highest where the classes are separable."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from latentlab.analysis.mlp_probe import standardise
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(300, 4)), rng.integers(0, 3, 300)
    x[:, 0] += 2 * y  # partly separable: confidences spread between 1/3 and 1
    ours = probe_scores(x, y, folds=5, seed=0, knn_k=4)
    proba, pred = np.empty((len(y), 3)), np.empty_like(y)
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(x, y):
        a, b = (t.numpy() for t in standardise(torch.as_tensor(x[tr], dtype=torch.float32),
                                               torch.as_tensor(x[te], dtype=torch.float32)))
        model = LogisticRegression(C=1.0).fit(a, y[tr])
        proba[te], pred[te] = model.predict_proba(b), model.predict(b)
    assert (ours["linear"]["predictions"] == pred).all()
    assert ours["linear"]["confidence"] == pytest.approx(proba.max(1), abs=1e-5)
    assert set(np.unique(ours["knn"]["confidence"])) <= {0.5, 0.75, 1.0}  # 4 votes, the winner holds 2 to 4
    mlp = ours["mlp"]["confidence"]
    assert mlp.shape == y.shape and (mlp > 1 / 3 - 1e-6).all() and (mlp <= 1).all() and mlp.std() > 0.01


@pytest.mark.parametrize("sizes,d", [([300, 290, 301], 2), ([517, 500], 20)])
def test_fold_stacked_mlps_train_as_separate_torch_fits(sizes, d, monkeypatch):
    """The fold-stacked MLPs against one torch.nn.Sequential + torch.optim.Adam per fold, from the
    same initial weights on the same batches: the same weights after training, folds of different
    sizes included."""
    monkeypatch.setattr(mlp_probe, "PROBE_EPOCHS", 2)
    monkeypatch.setattr(mlp_probe, "PROBE_MIN_STEPS", 5)
    g = torch.Generator().manual_seed(1)
    n = max(sizes)
    x, y = torch.randn(len(sizes), n, d, generator=g), torch.randint(0, 4, (len(sizes), n), generator=g)
    params = mlp_probe.init_mlps(len(sizes), d, 4, g)
    batches = mlp_probe.mlp_batches(sizes, g)
    per_epoch = -(-n // 256)
    assert batches.shape[1] == max(5, 2 * per_epoch) and all((batches[f] < m).all() for f, m in enumerate(sizes))
    nets = []
    for f in range(len(sizes)):
        net = torch.nn.Sequential(torch.nn.Linear(d, 256), torch.nn.ReLU(), torch.nn.Linear(256, 4))
        with torch.no_grad():
            for layer, w, b in ((net[0], params[0], params[1]), (net[2], params[2], params[3])):
                layer.weight.copy_(w[f].T)
                layer.bias.copy_(b[f, 0])
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
        for idx in batches[f]:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[f, idx]), y[f, idx]).backward()
            opt.step()
        nets.append(net)
    init = params[2].clone()
    mlp_probe.train_mlps(params, x, y, batches)
    for f, net in enumerate(nets):
        for ours, theirs in ((params[0][f], net[0].weight.T), (params[1][f, 0], net[0].bias),
                             (params[2][f], net[2].weight.T), (params[3][f, 0], net[2].bias)):
            torch.testing.assert_close(ours, theirs.detach(), rtol=0, atol=1e-5)  # Adam magnifies rounding where v ~ 0
    assert (params[2] - init).abs().max() > 1e-3  # it trained


def test_probe_fits_side_by_side_predict_as_one_after_another(short_mlp):
    """Fits in worker threads give exactly the predictions of the same fits run one at a time: no
    fit draws from a shared random generator or writes another's buffers. torch's thread count and
    global random state are as they were."""
    x, y = _blobs(n_per_class=40, dims=20, spread=8.0)  # overlapping classes: the probes disagree somewhere
    threads, rng = torch.get_num_threads(), torch.random.get_rng_state()
    sets = {"a": (x, y), "b": (x[:, :10], y)}
    alone = probe_scores_of_sets(_cv(sets), seed=0, workers=1)
    side_by_side = probe_scores_of_sets(_cv(sets), seed=0, workers=4)
    assert torch.get_num_threads() == threads and torch.equal(torch.random.get_rng_state(), rng)
    for key in sets:
        for name in ("linear", "knn", "mlp"):
            assert 0.5 < alone[key][name]["accuracy"] < 1
            assert (alone[key][name]["predictions"] == side_by_side[key][name]["predictions"]).all(), name
    with pytest.raises(ValueError, match="workers"):
        probe_scores(x, y, workers=0)


def test_a_failing_probe_fit_stops_the_others(monkeypatch):
    """An error in one fit reaches the caller without the fits not yet started being run first
    (a Ctrl-C would otherwise wait for all of them), and torch's thread count is restored."""
    x, y = _blobs()
    calls = []

    def failing(*args, **kwargs):
        calls.append(args[0])
        if len(calls) > 1:
            time.sleep(0.2)  # the other fits take a while: the first error comes back before they end
        raise RuntimeError("fit failed")
    monkeypatch.setattr(probes, "_out_of_fold", failing)
    threads = torch.get_num_threads()
    sets = {i: (x + i, y) for i in range(5)}
    with pytest.raises(RuntimeError, match="fit failed"):
        probe_scores_of_sets(_cv(sets), seed=0, workers=2)
    assert 1 <= len(calls) < 15 and torch.get_num_threads() == threads


def test_a_heldout_score_is_the_engine_on_one_split():
    """The held-out protocol is the cross-validation engine on one (train, test) split: scored on a
    fold's training rows and test rows as heldout_set, each probe predicts that fold's test rows as
    cross-validation does, and the spread of those accuracies is cross-validation's."""
    from sklearn.metrics import accuracy_score
    x, y = _blobs(n_per_class=40, dims=20, spread=8.0)  # overlapping classes: the probes err somewhere
    y = np.array([2, 5, 6, 9])[y]
    splits = cv_splits(y, 5, 0)
    cv = probe_scores_of_sets({0: (x, y, splits)}, ("linear", "knn"), knn_ks=(7,))[0]
    accuracies = {"linear": [], "knn": []}
    for tr, te in splits:
        held = probe_scores_of_sets({0: heldout_set(x[tr], y[tr], x[te], y[te])}, ("linear", "knn"), knn_ks=(7,))[0]
        for name, acc in accuracies.items():
            np.testing.assert_array_equal(held[name]["predictions"], cv[name]["predictions"][te])
            assert held[name]["accuracy"] == accuracy_score(y[te], held[name]["predictions"])
            assert "fold_accuracy_std" not in held[name]
            acc.append(held[name]["accuracy"])
    assert cv["knn"]["k"] == 7
    for name, acc in accuracies.items():
        assert 0.3 < cv[name]["accuracy"] < 1
        assert cv[name]["fold_accuracy_std"] == pytest.approx(np.std(acc), abs=1e-12)


def test_probes_keep_any_label_values(short_mlp):
    x, y = _blobs(classes=3)
    y = np.array([3, 7, 11])[y]  # labels of a subset of classes (e.g. --num_samples drew no 0s)
    scores = probe_scores(x, y, folds=5, seed=0)
    for name in ("linear", "knn", "mlp"):
        assert set(np.unique(scores[name]["predictions"])) <= {3, 7, 11} and scores[name]["accuracy"] > 0.95


def test_probe_predictions_are_cached_by_content(tmp_path, monkeypatch):
    x, y = _blobs()
    fits = []
    real = probes._out_of_fold
    monkeypatch.setattr(probes, "_out_of_fold", lambda *a, **k: fits.append(a[0]) or real(*a, **k))
    first = probe_scores(x, y, ("linear", "knn"), folds=5, seed=0, cache_dir=tmp_path)
    assert len(fits) == 2 and len(list(tmp_path.glob("probe_*.npy"))) == 2
    again = probe_scores(x, y, ("linear", "knn"), folds=5, seed=0, cache_dir=tmp_path)
    assert len(fits) == 2  # nothing fit again
    for name in ("linear", "knn"):
        assert again[name]["accuracy"] == first[name]["accuracy"]
        assert again[name]["fold_accuracy_std"] == first[name]["fold_accuracy_std"]
        assert (again[name]["predictions"] == first[name]["predictions"]).all()
    probe_scores(x + 1e-3, y, ("knn",), folds=5, seed=0, cache_dir=tmp_path)  # other features: fit
    probe_scores(x, y, ("knn",), folds=4, seed=0, cache_dir=tmp_path)  # other folds: fit
    assert len(fits) == 4
    for f in tmp_path.glob("probe_linear_*.npy"):
        f.write_bytes(b"torn")  # a damaged entry is fit again and replaced
    assert probe_scores(x, y, ("linear",), folds=5, seed=0, cache_dir=tmp_path)["linear"]["accuracy"] == first["linear"]["accuracy"]
    assert len(fits) == 5
    ticks = []
    both = probe_scores_of_sets(_cv({"a": (x * 2, y), "b": (x * 2, y)}), ("knn",), progress=lambda: ticks.append(1))
    assert len(fits) == 6 and len(ticks) == 10  # sets of the same content: fit once, counted for each
    assert (both["a"]["knn"]["predictions"] == both["b"]["knn"]["predictions"]).all()


def test_probes_refuse_too_few_samples():
    with pytest.raises(ValueError, match="at least 5 samples, the largest has 3"):
        probe_scores(np.zeros((6, 2)), np.array([0, 0, 0, 1, 1, 1]), folds=5)
    with pytest.raises(ValueError, match="single class"):
        probe_scores(np.zeros((6, 2)), np.zeros(6, dtype=int), folds=2)
    with pytest.raises(ValueError, match="single class"):
        probe_scores_of_sets({0: heldout_set(np.zeros((4, 2)), np.zeros(4, dtype=int), np.zeros((2, 2)), np.array([0, 1]))})


def test_kmeans_scores_on_clear_clusters():
    x, y = _blobs(classes=3)
    scores, clusters, centres = kmeans_scores(x, y, 3, seed=0)
    assert scores["nmi"] > 0.99 and scores["ari"] > 0.99 and scores["purity"] == 1.0 and scores["silhouette"] > 0.7
    assert clusters.shape == y.shape and centres.shape == (3, x.shape[1])
    shuffled = np.random.default_rng(0).permutation(y)
    assert kmeans_scores(x, shuffled, 3, seed=0)[0]["nmi"] < 0.1  # labels unrelated to the clusters
    with pytest.raises(ValueError, match="k-means needs 2 to 90 clusters for 90 samples, not 91"):
        kmeans_scores(x, y, 91)
    assert kmeans_nmi(x, y, 3) == scores["nmi"]


def test_cluster_purity():
    assert cluster_purity(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1])) == 0.75
    assert cluster_purity(np.array([0, 1, 2]), np.array([0, 0, 0])) == pytest.approx(1 / 3)


def test_trustworthiness_of_a_faithful_projection():
    x, _ = _blobs(dims=2)
    assert trustworthiness(x, x) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    assert trustworthiness(x, rng.normal(size=x.shape)) < 0.8
    assert trustworthiness(x[:9], x[:9]) == pytest.approx(1.0)  # 5 neighbours of 9 points: k clipped below n / 2
    with pytest.raises(ValueError, match="at least 3 samples, there are 2"):
        trustworthiness(x[:2], x[:2])


@pytest.fixture
def counted(monkeypatch):
    """Count the projections really computed."""
    calls = []
    real = projection.compute_projection

    def counting(z, method, params):
        calls.append((z.shape, method))
        return real(z, method, params)

    monkeypatch.setattr(projection, "compute_projection", counting)
    return calls


def test_projection_cache_skips_the_work(counted, tmp_path):
    z, _ = _blobs(dims=6)
    z = z.astype(np.float32)
    emb, info = projection.project(z, "pca", 2, seed=0, cache_dir=tmp_path)
    assert len(counted) == 1 and not info["cached"]
    files = list(tmp_path.iterdir())
    assert [f.name for f in files] == [info["path"].split("/")[-1]]  # one file, no temp file left behind
    assert np.array_equal(np.load(files[0], allow_pickle=False), emb)
    again, info2 = projection.project(z.copy(), "pca", 2, seed=0, cache_dir=tmp_path)  # same content, new array
    assert len(counted) == 1 and info2["cached"] and np.array_equal(again, emb)
    # other content, method, dimensions or seed: computed
    projection.project(z + 1e-3, "pca", 2, seed=0, cache_dir=tmp_path)
    projection.project(z, "pca", 3, seed=0, cache_dir=tmp_path)
    projection.project(z, "tsne", 2, seed=0, cache_dir=tmp_path)
    projection.project(z, "tsne", 2, seed=1, cache_dir=tmp_path)
    assert len(counted) == 5 and len(list(tmp_path.iterdir())) == 5
    # no cache folder: always computed, nothing written
    projection.project(z, "pca", 2, seed=0, cache_dir=None)
    assert len(counted) == 6 and len(list(tmp_path.iterdir())) == 5


def test_a_damaged_cache_file_is_computed_again(counted, tmp_path):
    z = _blobs(dims=4)[0].astype(np.float32)
    emb, info = projection.project(z, "pca", 2, cache_dir=tmp_path)
    path = tmp_path / info["path"].split("/")[-1]
    path.write_bytes(b"\x93NUMPY garbage")
    again, info2 = projection.project(z, "pca", 2, cache_dir=tmp_path)
    assert len(counted) == 2 and not info2["cached"] and np.array_equal(again, emb)
    assert np.array_equal(np.load(path, allow_pickle=False), emb)  # replaced by a good one
    np.save(path, np.zeros((3, 2), dtype=np.float32))  # a readable file of the wrong shape
    projection.project(z, "pca", 2, cache_dir=tmp_path)
    assert len(counted) == 3


def test_projection_refuses_too_few_samples_and_wide_tsne():
    with pytest.raises(ValueError, match="at least 5 latents, there are 3"):
        projection.project(np.zeros((3, 4), dtype=np.float32), "pca")
    with pytest.raises(ValueError, match="at most 3 dimensions"):
        projection.project(np.zeros((20, 8), dtype=np.float32), "tsne", dims=4)


def test_small_spaces_are_drawn_as_they_are():
    z = np.arange(10, dtype=np.float32).reshape(5, 2)
    xy, info = projection.view_2d(z, "umap")
    assert info is None and np.array_equal(xy, z)
    xy, info = projection.view_2d(z[:, :1], "umap")  # 1-d: on a zero y-axis
    assert info is None and np.array_equal(xy[:, 0], z[:, 0]) and not xy[:, 1].any()


def test_exact_neighbours_are_scikit_learns():
    from sklearn.neighbors import NearestNeighbors
    x, _ = _blobs(n_per_class=400, dims=8)  # 1,600 points: two query chunks of 1,024
    x = np.vstack([x, x[:3]])  # duplicates: each point still lists itself first
    idx, dist = projection.exact_neighbours(x, 15)
    assert idx.shape == dist.shape == (len(x), 15)
    assert (idx[:, 0] == np.arange(len(x))).all() and (dist[:, 0] == 0).all()
    ref_dist, ref_idx = NearestNeighbors(n_neighbors=15).fit(x).kneighbors(x)
    np.testing.assert_allclose(dist, ref_dist, atol=1e-4)
    assert np.mean([len(set(a) & set(b)) / 15 for a, b in zip(idx[:-3], ref_idx[:-3])]) > 0.999


@pytest.mark.slow  # UMAP layouts of thousands of points, twice
def test_umap_on_exact_neighbours_draws_as_well_as_umaps_own_neighbours():
    """Given our exact neighbours, UMAP keeps the neighbourhoods it keeps with its own k-NN."""
    x, y = _blobs(n_per_class=150, classes=6, dims=10, spread=2.0)
    params = projection.projection_params("umap", len(x), 2, 0)
    assert params["neighbours"] == "exact"
    ours = projection.compute_projection(x.astype(np.float32), "umap", params)
    theirs = projection.compute_projection(x.astype(np.float32), "umap", {**params, "neighbours": "nndescent"})
    assert ours.shape == theirs.shape == (len(x), 2)
    assert trustworthiness(x, ours) == pytest.approx(trustworthiness(x, theirs), abs=0.01)
    assert _knn_accuracy(ours, y) == pytest.approx(_knn_accuracy(theirs, y), abs=0.03)


@pytest.mark.slow  # UMAP layouts of thousands of points, twice
def test_umap_runs_a_short_layout_from_5000_samples_and_draws_as_well():
    """From UMAP_SHORT_LAYOUT_FROM samples the layout runs 200 epochs instead of 500: the picture
    keeps its neighbourhoods and its classes apart as well."""
    assert projection.projection_params("umap", projection.UMAP_SHORT_LAYOUT_FROM - 1, 2, 0)["n_epochs"] == 500
    x, y = _blobs(n_per_class=500, classes=10, dims=10, spread=2.0)
    params = projection.projection_params("umap", len(x), 2, 0)
    assert len(x) >= projection.UMAP_SHORT_LAYOUT_FROM and params["n_epochs"] == 200
    short = projection.compute_projection(x.astype(np.float32), "umap", params)
    long = projection.compute_projection(x.astype(np.float32), "umap", {**params, "n_epochs": 500})
    assert trustworthiness(x, short) == pytest.approx(trustworthiness(x, long), abs=0.01)
    assert _knn_accuracy(short, y) == pytest.approx(_knn_accuracy(long, y), abs=0.02)


def test_numba_cache_dir_follows_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert projection.numba_cache_dir() == tmp_path / "latentlab" / "numba"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert projection.numba_cache_dir() == tmp_path / "home" / ".cache" / "latentlab" / "numba"


def test_cache_all_numba_functions_writes_machine_code(monkeypatch, tmp_path):
    """A jitted function its author did not cache lands in the cache folder once turned on; one
    that already compiled, and other packages, are left alone."""
    numba = pytest.importorskip("numba")
    pkg = tmp_path / "src" / "jitpkg_for_test"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        import numba

        @numba.njit
        def add(a, b):
            return a + b

        @numba.njit
        def mul(a, b):
            return a * b
    """))
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    cache = tmp_path / "numba"
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(cache))
    mod = importlib.import_module("jitpkg_for_test")
    assert mod.mul(2, 3) == 6  # compiled before caching is turned on: stays as it is
    projection._cache_all_numba_functions(("jitpkg_for_test",))
    assert mod.add(2, 3) == 5
    written = sorted(p.name for p in cache.rglob("*.nbi"))
    assert written and all(name.startswith("__init__.add") for name in written), written
