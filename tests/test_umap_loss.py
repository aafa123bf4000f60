"""The UMAP loss on the codes (train.py --umap_weight): the graph, the edge draws, the loss against
a direct computation, the models' extra pass, and a training that it makes neighbours of neighbours."""
import json

import numpy as np
import pytest
import torch

from conftest import run_main, run_refused
from latentlab.analysis import projection
from latentlab.cli import UserError
from latentlab.store import files
from latentlab.data.datasets import load_dataset
from latentlab.train.umap_loss import NEGATIVES, NEIGHBOURS, FuzzyGraph, UmapLoss, fuzzy_graph, umap_cross_entropy
from model.autoencoder import FAMILIES, ModelConfig, build_model


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_the_graph_is_umaps_symmetric_fuzzy_graph_and_is_cached_by_content(digits, tmp_path, monkeypatch):
    images = digits.train_x[:300]
    graph = fuzzy_graph(images, tmp_path)
    n = len(images)
    assert graph.head.dtype == graph.tail.dtype == torch.int64
    assert ((graph.weight > 0) & (graph.weight <= 1)).all()
    dense = torch.zeros(n, n, dtype=torch.float64)
    dense[graph.head, graph.tail] = graph.weight
    assert torch.allclose(dense, dense.T)  # the fuzzy union is symmetric
    assert (dense.diagonal() == 0).all()
    assert ((dense > 0).sum(1) >= NEIGHBOURS).all()  # every image keeps its 15 neighbours
    # UMAP's local connectivity: the edge to an image's nearest other image (by pixels) has weight 1
    x = images.reshape(n, -1).double()
    d = torch.cdist(x, x)
    d.fill_diagonal_(float("inf"))
    assert torch.allclose(dense[torch.arange(n), d.argmin(1)], torch.ones(n, dtype=torch.float64), atol=1e-5)
    # a second call loads the cache entry: nothing is computed again
    monkeypatch.setattr(projection, "exact_neighbours", lambda *a: pytest.fail("recomputed"))
    again = fuzzy_graph(images, tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(graph, again))
    assert len(list(tmp_path.glob("umap_graph_*.npy"))) == 1


def test_a_damaged_cache_entry_is_rebuilt(digits, tmp_path):
    images = digits.train_x[:50]
    graph = fuzzy_graph(images, tmp_path)
    (entry,) = tmp_path.glob("umap_graph_*.npy")
    entry.write_bytes(b"not an array")
    again = fuzzy_graph(images, tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(graph, again))
    assert np.load(entry).shape[0] == 3


def _reference_cross_entropy(z_head, z_tail, drawn, a, b):
    """UMAP's cross-entropy written out pair by pair, in float64."""
    ends = np.concatenate([z_head, z_tail])
    terms = []
    for i in range(len(z_head)):
        q = 1 / (1 + a * np.sum((z_head[i] - z_tail[i]) ** 2) ** b)
        terms.append(-np.log(np.clip(q, 1e-4, 1 - 1e-4)))
    for j, k in enumerate(drawn):
        q = 1 / (1 + a * np.sum((z_head[j % len(z_head)] - ends[k]) ** 2) ** b)
        terms.append(-np.log(np.clip(1 - q, 1e-4, 1 - 1e-4)))
    return np.mean(terms)


def test_the_cross_entropy_is_umaps_pair_by_pair():
    g = torch.Generator().manual_seed(0)
    z_head, z_tail = torch.randn(7, 3, generator=g), torch.randn(7, 3, generator=g)
    a, b = 1.577, 0.895
    torch.manual_seed(4)
    loss = umap_cross_entropy(z_head, z_tail, a, b)
    torch.manual_seed(4)
    drawn = torch.randint(0, 14, (NEGATIVES * 7,)).numpy()  # the same draw the loss makes
    assert loss.item() == pytest.approx(_reference_cross_entropy(z_head.numpy().astype(np.float64),
                                                                 z_tail.numpy().astype(np.float64), drawn, a, b),
                                        rel=1e-5)


def test_the_loss_pulls_edges_together_and_pushes_the_rest_apart():
    """Gradient steps on free codes of a graph of two cliques end with each clique tight and the
    two apart: what the loss is for."""
    members = [list(range(0, 5)), list(range(5, 10))]
    head = torch.tensor([i for c in members for i in c for j in c if i != j])
    tail = torch.tensor([j for c in members for i in c for j in c if i != j])
    loss = UmapLoss(FuzzyGraph(head, tail, torch.ones(len(head), dtype=torch.float64)), torch.arange(10), 1.0, 64)
    torch.manual_seed(0)
    z = torch.nn.Parameter(torch.randn(10, 2))
    assert _within_and_between(z.detach(), members)[0] > _within_and_between(z.detach(), members)[1]
    opt = torch.optim.Adam([z], lr=0.05)
    for step, ends in enumerate(loss.epoch_ends(300, 0, 0, 0)):
        opt.zero_grad()
        loss(z[ends]).backward()
        opt.step()
    within, between = _within_and_between(z.detach(), members)
    assert within < between / 2


def _within_and_between(z, members):
    """(the largest distance within a clique, the smallest between the two)"""
    d = torch.cdist(z, z)
    return max(d[np.ix_(c, c)].max() for c in members), d[np.ix_(members[0], members[1])].min()


def test_edges_are_drawn_by_weight_seeded_by_seed_epoch_and_rank():
    head, tail = torch.tensor([0, 1, 2, 3]), torch.tensor([1, 0, 3, 2])
    weight = torch.tensor([0.1, 0.1, 0.8, 0.8], dtype=torch.float64)
    train_idx = torch.tensor([10, 11, 12, 13])  # the graph's positions are positions in the training indices
    loss = UmapLoss(FuzzyGraph(head, tail, weight), train_idx, 0.5, 100)
    ends = loss.epoch_ends(50, 0, 0, 0)
    assert ends.shape == (50, 200)
    heads, tails = ends[:, :100].flatten(), ends[:, 100:].flatten()
    assert set(heads.tolist()) <= {10, 11, 12, 13}
    assert torch.equal(tails, train_idx[tail[(heads - 10)]])  # each tail is its head's edge partner
    share = ((heads == 12) | (heads == 13)).float().mean().item()
    assert share == pytest.approx(0.8 / 0.9, abs=0.02)
    assert torch.equal(ends, loss.epoch_ends(50, 0, 0, 0))
    for other in (loss.epoch_ends(50, 1, 0, 0), loss.epoch_ends(50, 0, 1, 0), loss.epoch_ends(50, 0, 0, 1)):
        assert not torch.equal(ends, other)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_ends_are_encoded_in_the_same_pass(family):
    torch.manual_seed(0)
    model = build_model(ModelConfig(family=family, latent_size=3, image_shape=(1, 8, 8), umap_weight=0.1)).eval()
    x, ends = torch.rand(4, 1, 8, 8), torch.rand(6, 1, 8, 8)
    logits, kl, codes = model(x, ends)
    plain_logits, plain_kl = model(x)
    assert torch.allclose(logits, plain_logits, atol=1e-6) and torch.allclose(kl, plain_kl, atol=1e-6)
    assert torch.allclose(codes, model.encode(ends), atol=1e-6)


@pytest.mark.slow
def test_training_with_the_umap_loss_keeps_neighbours_together_and_records_it(tmp_path, capsys):
    """Digits, the 2-d model with and without the loss, seed and budget alike: the test images' 5-NN
    accuracy in the 2-d codes rises, the checkpoint and the figures name the loss. The two trainings
    and their encodings run in this process (train.py's and the step's own main), the rest as a user
    runs it."""
    from sklearn.neighbors import KNeighborsClassifier
    common = ["--latent_size", 2, "--dataset", "digits", "--num_epochs", 15, "--batch_size", 64,
              "--snapshot_every", 0, "--quiet"]
    accuracy = {}
    for weight in (0, 0.01):
        out = tmp_path / f"w{weight}"
        run_main("train", *common, "--umap_weight", weight, "--umap_edges", 256, "--output_dir", out)
        for split in ("train", "test"):
            run_main("encode_latent_space", "--output_dir", out, "--split", split, "--num_samples", "all", "--quiet")
        z = {s: np.load(files.latents_path(out, 2, s)) for s in ("train", "test")}
        y = {s: json.loads(files.latents_path(out, 2, s).with_suffix(".json").read_text())["labels"]
             for s in ("train", "test")}
        knn = KNeighborsClassifier(5).fit(z["train"], y["train"])
        accuracy[weight] = knn.score(z["test"], y["test"])
        ckpt = torch.load(out / "model_latent_size_2.pth", weights_only=True)
        assert ckpt["config"]["umap_weight"] == weight and ckpt["train"]["umap_edges"] == 256
    assert accuracy[0.01] > accuracy[0] + 0.05, accuracy
    assert list((tmp_path / "w0.01" / "cache").glob("umap_graph_*.npy"))
    run_main("viz_latent_space", "--output_dir", tmp_path / "w0.01", "--quiet")
    # resuming with another weight is refused in one line, and the checkpoint stays
    before = (tmp_path / "w0.01" / "model_latent_size_2.pth").read_bytes()
    line = run_refused("train", [*common, "--umap_weight", 0.1, "--umap_edges", 256, "--resume",
                                 "--output_dir", tmp_path / "w0.01"], capsys)
    assert "trained with umap_weight=0.01, not 0.1" in line
    assert (tmp_path / "w0.01" / "model_latent_size_2.pth").read_bytes() == before


def test_the_loss_goes_to_the_models_up_to_umap_max_size_and_the_sweep_records_each_runs_weight(tmp_path):
    """--umap_weight weighs the loss on the 2-d model and leaves the chosen size plain, unless
    --umap_max_size reaches it; a sweep's records of its runs say which got it."""
    import sweep_latent_size
    from latentlab.settings import Settings
    from latentlab.sweep.jobs import make_jobs
    weights = lambda s, k: s.model_config(k, (1, 28, 28)).umap_weight
    given = Settings(latent_size=64, umap_weight=0.1)
    assert weights(given, 2) == 0.1 and weights(given, 64) == 0.0
    assert weights(Settings(latent_size=64, umap_weight=0.1, umap_max_size=64), 64) == 0.1

    args = sweep_latent_size.parse_args(["--latent_sizes", "2", "8", "--models", "conv", "--umap_weight", "0.1",
                                         "--output_dir", str(tmp_path / "sweep")])
    jobs = {job.latent_size: job for job in make_jobs(args, ["digits"], [0], ["conv"], [2, 8], quiet=True)}
    assert jobs[2].settings["umap_weight"] == 0.1 and jobs[8].settings["umap_weight"] == 0.0
    assert jobs[8].train.umap_weight == 0.1 and jobs[8].train.umap_max_size == 2  # train.py applies the rule


@pytest.mark.slow
def test_a_run_trains_the_2d_model_with_the_loss_and_the_chosen_size_without(tmp_path):
    run_main("train", "--latent_size", 3, "--dataset", "digits", "--num_epochs", 1, "--snapshot_every", 0,
             "--umap_weight", 0.01, "--umap_edges", 16, "--quiet", "--output_dir", tmp_path)
    ckpts = {k: torch.load(tmp_path / f"model_latent_size_{k}.pth", weights_only=True) for k in (2, 3)}
    assert ckpts[2]["config"]["umap_weight"] == 0.01 and ckpts[3]["config"]["umap_weight"] == 0.0
    assert list((tmp_path / "cache").glob("umap_graph_*.npy"))


def test_a_sweep_record_without_a_setting_is_refused_and_the_checkpoint_records_the_loss(tmp_path):
    """A current sweep's metrics name every setting of the job, the UMAP loss's too."""
    from latentlab.settings import Settings, recorded
    from latentlab.sweep.jobs import KIND, METRICS, SETTINGS, load_finished
    defaults = Settings(latent_size=2)
    settings = {"dataset": "digits", **{k: getattr(defaults, k) for k in SETTINGS if hasattr(defaults, k)}}
    path = tmp_path / "metrics.json"
    record = {"kind": KIND, "format_version": files.FORMAT_VERSION, "settings": settings, "metrics": {k: 0.5 for k in METRICS}}
    assert load_finished(files.save_json(record, path), settings) is not None
    record["settings"] = {k: v for k, v in settings.items() if not k.startswith("umap_")}
    with pytest.raises(UserError, match="does not record --umap_weight, --umap_edges: an earlier version"):
        load_finished(files.save_json(record, path), settings)
    assert "umap_edges" in recorded(defaults)
