"""viz_generation.py: the pieces that carry logic (latentlab/generate/sampling.py), then the script end to
end on the embedded digits, as a user runs it, for an autoencoder and a VAE."""
import numpy as np
import pytest
import torch
from PIL import Image

import viz_generation
from conftest import refused, run_main, run_script
from latentlab import image_grids, plots
from latentlab.generate import sampling as gen
from latentlab.store import artifacts, checkpoints, files
from latentlab.cli import UserError, run
from latentlab.data.datasets import to_float
from latentlab.analysis.inference import encode_images
from model.autoencoder import FAMILIES, model_from_checkpoint

AE_FIGURES = ["generation_samples_latent_size_2.png", "generation_samples_latent_size_8.png",
              "generation_interpolation_latent_size_8.png", "generation_manifold_latent_size_2.png",
              "generation_traversal_latent_size_8.png"]


def assert_pngs(folder, names):
    for name in names:
        with Image.open(folder / name) as img:
            img.verify()  # a complete, valid PNG
        with Image.open(folder / name) as img:
            assert img.format == "PNG" and min(img.size) > 200, (name, img.size)


def correlated_latents(n=4000, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.tensor([[2.0, 0.0, 0.0], [1.5, 0.5, 0.0], [-0.3, 0.2, 0.1]])
    return torch.randn(n, 3, generator=g) @ mix.T + torch.tensor([3.0, -1.0, 0.5])


# ---------------------------------------------------------------- the pieces
def gaussian_draw(z, n, seed):
    return gen.draw("gaussian", gen.fitted_sampler(z.numpy(), "gaussian", 1, seed), z.shape[1], n, seed)


def test_autoencoder_samples_follow_the_gaussian_fitted_to_the_latents():
    z = correlated_latents()
    mean, cov = gen.fit_gaussian(z)
    assert torch.allclose(mean, z.double().mean(0)) and torch.allclose(cov, torch.cov(z.double().T, correction=0))
    s = gaussian_draw(z, 50000, seed=1)
    assert s.shape == (50000, 3) and s.dtype == torch.float32
    assert torch.allclose(s.double().mean(0), mean, atol=0.05)
    assert torch.allclose(torch.cov(s.double().T), cov, atol=0.06)  # entries of cov reach 4.0
    assert torch.corrcoef(s.T)[0, 1] > 0.9  # the correlation is kept, not just the variances
    assert torch.equal(s, gaussian_draw(z, 50000, seed=1))  # seeded
    assert not torch.equal(s[:10], gaussian_draw(z, 10, seed=2))


def test_a_singular_covariance_still_samples():
    z = correlated_latents(500)
    z = torch.cat([z, torch.full((500, 1), 0.7)], dim=1)  # a dead latent unit: zero variance
    s = gaussian_draw(z, 2000, seed=0)
    assert torch.isfinite(s).all() and torch.allclose(s[:, 3], torch.full((2000,), 0.7), atol=1e-4)
    few = correlated_latents(2)  # fewer latents than dimensions: rank 1
    assert torch.isfinite(gaussian_draw(few, 5, seed=0)).all()


def test_vae_prior_samples_are_standard_normal():
    s = gen.draw("prior", None, 3, 50000, seed=0, prior=FAMILIES["vae"].prior)
    assert "prior" in gen.sampler_source("prior", None, 0)
    assert s.mean(0).abs().max() < 0.03 and torch.allclose(torch.cov(s.T), torch.eye(3), atol=0.03)


def test_the_mixture_finds_two_clusters_is_fitted_once_and_draws_seeded(tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(0)
    z = torch.cat([torch.randn(1500, 2, generator=g) * 0.3 + 4, torch.randn(500, 2, generator=g) * 0.3 - 4]).numpy()
    packed = gen.fitted_sampler(z, "gmm", 2, seed=0, cache_dir=tmp_path)
    assert packed.shape == (2, 1 + 2 + 4) and sorted(packed[:, 0].round(2).tolist()) == [0.25, 0.75]
    s = gen.draw("gmm", packed, 2, 4000, seed=3)
    assert 0.7 < (s[:, 0] > 0).float().mean() < 0.8  # both modes, in their weights, no mass between them
    assert (s.norm(dim=1) > 3).float().mean() > 0.99
    assert torch.equal(s, gen.draw("gmm", packed, 2, 4000, seed=3))
    # the Gaussian of the same latents puts most of its samples between the two modes
    assert (gaussian_draw(torch.from_numpy(z), 4000, 3).norm(dim=1) < 3).float().mean() > 0.2
    assert len(list(tmp_path.glob("sampler_gmm_*.npy"))) == 1
    with pytest.raises(ValueError, match="at least as many latents"):
        gen.fit_mixture(z[:5], "gmm", 10, 0)
    monkeypatch.setattr(gen, "fit_mixture", lambda *a: pytest.fail("fitted again"))
    assert np.array_equal(gen.fitted_sampler(z, "gmm", 2, seed=0, cache_dir=tmp_path), packed)  # from the cache


def test_a_mixture_of_more_components_is_fitted_on_more_latents_and_its_title_says_on_how_many(monkeypatch):
    seen = []
    monkeypatch.setattr(gen, "GMM_FIT_MIN", 100)
    monkeypatch.setattr(gen, "GMM_FIT_PER_COMPONENT", 40)
    z = np.random.default_rng(0).normal(size=(400, 2))
    from sklearn import mixture
    fit = mixture.GaussianMixture.fit
    monkeypatch.setattr(mixture.GaussianMixture, "fit", lambda self, x: seen.append(len(x)) or fit(self, x))
    for k in (2, 5, 20):
        gen.fit_mixture(z, "gmm", k, 0)
    assert seen == [100, 200, 400]  # the floor, then 40 a component, at most every latent
    assert gen.mixture_fit_size(10) == 400
    assert "fitted to the latents of 100 of the 400 training images" in gen.sampler_source("gmm", np.zeros((2, 7)), 400)
    assert "fitted to the latents of the 400 training images" in gen.sampler_source("gmm", np.zeros((20, 7)), 400)


def test_manifold_grid_spans_the_percentile_box_of_the_latents():
    g = torch.Generator().manual_seed(0)
    z2 = torch.randn(1000, 2, generator=g) * torch.tensor([3.0, 0.5]) + torch.tensor([1.0, -2.0])
    grid, xs, ys = gen.manifold_grid(z2, 5)
    lo = torch.quantile(z2, 0.01, dim=0)
    hi = torch.quantile(z2, 0.99, dim=0)
    assert grid.shape == (25, 2)
    assert xs[0] == pytest.approx(lo[0].item(), abs=1e-5) and xs[-1] == pytest.approx(hi[0].item(), abs=1e-5)
    assert ys[0] == pytest.approx(lo[1].item(), abs=1e-5) and ys[-1] == pytest.approx(hi[1].item(), abs=1e-5)
    # row-major from the top-left, as the mosaic is drawn: x grows along a row, y falls down the rows
    assert torch.allclose(grid[0], torch.stack([xs[0], ys[-1]]))
    assert torch.allclose(grid[4], torch.stack([xs[-1], ys[-1]]))
    assert torch.allclose(grid[-1], torch.stack([xs[-1], ys[0]]))
    assert torch.allclose(grid.view(5, 5, 2)[2, :, 0], xs) and torch.allclose(grid.view(5, 5, 2)[:, 1, 1], ys.flip(0))
    assert 0.02 <= gen.share_outside(z2, xs, ys) <= 0.05  # 1% beyond each of four edges, minus overlaps


def test_the_highest_variance_dimensions_are_chosen():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2000, 5, generator=g) * torch.tensor([1.0, 5.0, 0.1, 3.0, 2.0]) + 10
    assert gen.top_variance_dims(z, 3).tolist() == [1, 3, 4]
    assert gen.top_variance_dims(z, 8).tolist() == [1, 3, 4, 0, 2]  # at most every dimension


def test_traversal_moves_one_dimension_at_a_time_in_units_of_its_std():
    z0 = torch.tensor([0.5, -1.0, 2.0, 0.0])
    std = torch.tensor([1.0, 2.0, 0.5, 4.0])
    offsets = gen.traversal_offsets(3.0, 7)
    assert offsets.tolist() == [-3, -2, -1, 0, 1, 2, 3]
    t = gen.traversal_latents(z0, torch.tensor([3, 1]), std, offsets)
    assert t.shape == (2, 7, 4)
    assert torch.allclose(t[0, :, 3], offsets * 4.0) and torch.allclose(t[1, :, 1], -1.0 + offsets * 2.0)
    assert torch.equal(t[0, :, :3], z0[:3].expand(7, 3)) and torch.equal(t[1, :, [0, 2, 3]], z0[[0, 2, 3]].expand(7, 3))
    assert torch.equal(t[:, 3], z0.expand(2, 4))  # the zero offset is the image's own latent


def test_interpolation_line_and_the_choice_of_images():
    line = gen.interpolate_latents(torch.tensor([0.0, 2.0]), torch.tensor([1.0, -2.0]), 5)
    assert torch.allclose(line, torch.tensor([[0, 2], [0.25, 1], [0.5, 0], [0.75, -1], [1, -2]]))
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    assert gen.pick_pair(labels, [4, 1], seed=0) == (4, 1)
    for seed in range(10):
        a, b = gen.pick_pair(labels, None, seed)
        assert labels[a] != labels[b] and (a, b) == gen.pick_pair(labels, None, seed)
        assert gen.pick_pair(labels, [2], seed)[0] == 2 and labels[gen.pick_pair(labels, [2], seed)[1]] != 0
    with pytest.raises(UserError, match="--index 6 is out of range: the test data has 6 images"):
        viz_generation.check_indices([2, 6], 6)
    with pytest.raises(UserError, match="one or two"):
        viz_generation.check_indices([1, 2, 3], 6)
    with pytest.raises(ValueError, match="at least two test images"):
        gen.pick_pair(labels[:1], None, seed=0)


def test_image_grid_places_image_i_at_row_i_div_ncols_with_no_outer_border():
    imgs = torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1).expand(5, 1, 2, 3) / 10
    tiles = image_grids.mosaic(imgs, ncols=2, pad=1, pad_value=1.0)[..., 0]  # grey images come back as RGB
    assert tiles.shape == (3 * 3 - 1, 2 * 4 - 1)
    assert (tiles[0:2, 0:3] == 0.0).all() and (tiles[0:2, 4:7] == pytest.approx(0.1))
    assert (tiles[6:8, 0:3] == pytest.approx(0.4)) and (tiles[6:8, 4:7] == 1.0).all()  # empty slot: padding
    assert (tiles[2, :] == 1.0).all() and (tiles[:, 3] == 1.0).all()


def test_class_colors_are_distinct_for_every_dataset_size():
    import matplotlib.colors
    import numpy as np
    for n in (2, 10, 11, 20, 43, 62):
        colors = plots.class_colors(n)
        rgb = np.array([matplotlib.colors.to_rgb(c) for c in colors])
        gaps = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1) + np.eye(n) * 9
        assert len(colors) == n and gaps.min() > 0.1, (n, gaps.min())


def test_interpolation_ends_decode_to_the_reconstructions(trained):
    data = artifacts.load_test_data(trained / "test_data.pth")
    for k in (2, 8):
        model = model_from_checkpoint(checkpoints.load_checkpoint(trained / f"model_latent_size_{k}.pth"))
        z = torch.from_numpy(encode_images(model, data["images"], "cpu", batch=50))  # batches of 50: the last one is short
        x = to_float(data["images"][[10, 200]])
        with torch.no_grad():
            assert torch.allclose(z[[10, 200]], model.encode(x), atol=1e-5)
            line = gen.decode_latents(model, gen.interpolate_latents(z[10], z[200], 6), "cpu", batch=4)
            rec = model.reconstruct(x)
            mid = model.decode((z[10:11] + z[200:201]) / 2)
        assert line.shape == (6, 1, 8, 8)
        assert torch.allclose(line[0], rec[0], atol=1e-5) and torch.allclose(line[-1], rec[1], atol=1e-5)
        line_odd = gen.decode_latents(model, gen.interpolate_latents(z[10], z[200], 3), "cpu")
        assert torch.allclose(line_odd[1], mid[0], atol=1e-5)


# ---------------------------------------------------------------- the script, as a user runs it
def test_autoencoder_with_no_arguments_draws_every_figure(trained_copy):
    # --num_scored: the score's sample, which the scores' own tests cover, not what is under test here
    proc = run_script("viz_generation.py", "--output_dir", trained_copy, "--seed", 3, "--num_scored", 500)
    assert_pngs(trained_copy, AE_FIGURES)
    for name in AE_FIGURES:  # where each figure landed is printed
        assert f"{trained_copy / name}" in proc.stdout


def test_explicit_paths_and_one_mode(trained, tmp_path):
    figs = tmp_path / "figs"
    run_main("viz_generation", "--model_path", trained / "model_latent_size_8.pth",
             "--test_data", trained / "test_data.pth", "--output_dir", figs, "--mode", "interpolate",
             "--index", 3, 7, "--steps", 5, "--quiet")
    assert sorted(p.name for p in figs.iterdir() if p.name != ".latentlab.lock") == [
        "generation_interpolation_latent_size_8.png", "run.json"]  # run.json: the folder now holds that run's results
    assert_pngs(figs, ["generation_interpolation_latent_size_8.png"])


def test_main_returns_the_written_paths_and_finds_a_lone_model(trained, tmp_path):
    # the N-d checkpoint without its 2-d sibling: only the N-d model's figures
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "model_latent_size_8.pth").write_bytes((trained / "model_latent_size_8.pth").read_bytes())
    args = viz_generation.parse_args(["--model_path", str(lone / "model_latent_size_8.pth"), "--test_data",
                                      str(trained / "test_data.pth"), "--output_dir", str(tmp_path / "f"),
                                      "--index", "5", "--num_dims", "3", "--num_samples", "10", "--quiet"])
    written = viz_generation.main(args)
    assert sorted(written) == ["interpolation_latent_size_8", "samples_latent_size_8", "traversal_latent_size_8"]
    assert all(p.is_file() and p.parent == tmp_path / "f" for p in written.values())


@pytest.mark.slow
def test_vae_end_to_end(tmp_path, capsys):
    run_main("train", "--latent_size", 4, "--dataset", "digits", "--num_epochs", 2, "--model", "vae",
             "--snapshot_every", 0, "--output_dir", tmp_path, "--quiet")
    capsys.readouterr()
    run_main("viz_generation", "--output_dir", tmp_path, "--num_samples", 16)
    printed = capsys.readouterr().out
    names = ["generation_samples_latent_size_2.png", "generation_samples_latent_size_4.png",
             "generation_interpolation_latent_size_4.png", "generation_manifold_latent_size_2.png",
             "generation_traversal_latent_size_4.png"]
    assert_pngs(tmp_path, names)
    assert (tmp_path / "generation_latent_size_4.json").is_file()  # --mode all scores too
    assert printed.count("wrote ") == len(names) + 1


@pytest.mark.parametrize("bad, message", [(["--index", "359"], "--index 359 is out of range"),
                                          (["--num_samples", "0"], "--num_samples"),
                                          (["--sampler", "gan"], "argument --sampler: invalid choice: 'gan'"),
                                          (["--sampler", "gmm", "prior"], "--sampler prior: the conv autoencoder, latent size 2"),
                                          (["--gmm_components", "0"], "--gmm_components: 0 must be >= 1"),
                                          (["--gmm_components", "1e9"], "--gmm_components: '1e9' is not an integer"),
                                          (["--num_scored", "1000001"], "--num_scored: 1000001 must be <= 100000")])
def test_bad_options_give_one_line_and_exit_2(trained, capsys, bad, message):
    """In this process, as the script's __main__ runs it (the test below runs one through the script)."""
    with pytest.raises(SystemExit) as e:
        run(viz_generation.main, viz_generation.parse_args(["--output_dir", str(trained), *bad]))
    err = capsys.readouterr().err
    assert e.value.code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert not list(trained.glob("generation_*")) and not list(trained.glob("feature_classifier_*"))  # nothing written


def test_a_bad_option_through_the_script_is_one_line_and_exit_2(trained):
    line = refused(run_script("viz_generation.py", "--output_dir", trained, "--sampler", "gmm", "prior", check=False))
    assert line.startswith("error: --sampler prior: the conv autoencoder, latent size 2")
    assert not list(trained.glob("generation_*"))


def test_an_interpolation_needs_two_steps(tmp_path):
    with pytest.raises(UserError, match="--steps 1 is too few"):
        run_main("viz_generation", "--steps", "1", "--output_dir", str(tmp_path))


def test_test_data_of_another_model_is_refused(trained, tmp_path):
    other = {**torch.load(trained / "test_data.pth", weights_only=True)}
    other["images"] = torch.zeros(4, 1, 6, 6, dtype=torch.uint8)
    other["labels"] = torch.zeros(4, dtype=torch.int64)
    files.save_torch(other, tmp_path / "test_data.pth")
    args = viz_generation.parse_args(["--model_path", str(trained / "model_latent_size_8.pth"),
                                      "--test_data", str(tmp_path / "test_data.pth"), "--output_dir", str(tmp_path)])
    with pytest.raises(UserError, match=r"shape \(1, 6, 6\).*expects \(1, 8, 8\)"):
        viz_generation.main(args)
    with pytest.raises(UserError, match="does not exist.*run train.py first"):
        run_main("viz_generation", "--output_dir", str(tmp_path / "empty"))


# ---------------------------------------------------------------- the scores and their classifier
@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks on a shared machine: threads only wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits_classifier(tmp_path_factory, one_thread):
    from latentlab.generate import feature_net
    from latentlab.data.datasets import load_dataset
    d = load_dataset("digits", quiet=True)
    folder = tmp_path_factory.mktemp("classifier")
    net, info = feature_net.obtain(folder, "digits", d.train_x, d.train_y, d.test_x, d.test_y, 10, "cpu")
    return d, folder, net, info


def test_fd_is_zero_for_a_set_against_itself_and_grows_with_noise(digits_classifier):
    from latentlab.generate import scores as gen_scores
    d, _, net, info = digits_classifier
    assert info["trained_now"] and info["test_accuracy"] > 0.9
    scorer = gen_scores.Scorer.of_test_images(net, d.test_x, "cpu")
    same = scorer.full([to_float(d.test_x)])
    assert same["fd"] == pytest.approx(0, abs=1e-6) and same["precision"] == same["recall"] == 1.0
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(d.test_x.shape, generator=g)
    fds = [scorer.fd([to_float(d.test_x) + std * noise]) for std in (0.05, 0.2, 0.5)]
    assert 0 < fds[0] < fds[1] < fds[2], fds
    floor = scorer.full([to_float(d.train_x)])  # other images of the same data: near, not equal
    assert 0 < floor["fd"] < fds[1] and floor["precision"] > 0.8 and floor["recall"] > 0.8


def test_novelty_is_zero_for_copies_of_training_images_and_about_one_for_new_ones(digits_classifier):
    from latentlab import caveats
    from latentlab.generate import scores as gen_scores
    d, _, net, _ = digits_classifier
    scorer = gen_scores.Scorer.of_test_images(net, d.test_x, "cpu", d.train_x)
    assert scorer.full([to_float(d.train_x[:400])])["novelty"] == pytest.approx(0, abs=1e-4)  # rounding alone
    assert scorer.full([to_float(d.test_x)])["novelty"] == pytest.approx(1)
    g = torch.Generator().manual_seed(0)
    novelty = [scorer.full([to_float(d.train_x[:400]) + std * torch.randn(400, *d.image_shape, generator=g)])["novelty"]
               for std in (0.01, 0.3)]
    assert 0 < novelty[0] < 0.5 < 1.5 < novelty[1], novelty  # near-copies, then images further than new data
    assert "novelty" not in gen_scores.Scorer.of_test_images(net, d.test_x, "cpu").full([to_float(d.test_x)])
    assert scorer.real_nearest > 0 and caveats.copied_test_images(False) == []
    copied = gen_scores.Scorer.of_test_images(net, d.test_x, "cpu", torch.cat([d.train_x, d.test_x[:len(d.test_x) * 2 // 3]]))
    assert copied.real_nearest == 0 and "novelty" not in copied.full([to_float(d.test_x)])  # two thirds of them copied
    assert "remove the duplicates" in caveats.copied_test_images(True)[0]


def test_precision_and_recall_tell_realism_from_coverage():
    from latentlab.generate import scores as gen_scores
    g = torch.Generator().manual_seed(0)
    real = torch.randn(2000, 8, generator=g).numpy()
    collapsed = real[:50].repeat(40, axis=0) + 1e-3 * torch.randn(2000, 8, generator=g).numpy()  # realistic, not diverse
    p, r = gen_scores.precision_recall(real, collapsed)
    assert p > 0.95 and r < 0.3
    far = real + 10.0
    assert gen_scores.precision_recall(real, far) == (0.0, 0.0)
    assert gen_scores.frechet_distance(real, far) == pytest.approx(800, rel=0.01)  # 8 dimensions shifted by 10


def test_the_classifier_is_reused_and_another_datasets_gets_its_own(digits_classifier, tmp_path, monkeypatch):
    import shutil
    from latentlab.generate import feature_net
    d, folder, net, info = digits_classifier
    work = tmp_path / "out"
    shutil.copytree(folder, work)
    path = feature_net.classifier_path(work, info["key"])
    before = path.read_bytes()
    with monkeypatch.context() as m:
        m.setattr(feature_net, "train", lambda *a: pytest.fail("trained again"))
        again, second = feature_net.obtain(work, "digits", d.train_x, d.train_y, d.test_x, d.test_y, 10, "cpu")
    assert not second["trained_now"] and second["test_accuracy"] == info["test_accuracy"]
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), net.state_dict().values()))
    # another dataset (here: other images of the same shape) trains a classifier of its own (its training
    # stubbed: what is checked is where it goes); the first stays
    other_x, other_y = 255 - d.train_x, d.train_y
    with monkeypatch.context() as m:
        m.setattr(feature_net, "train", lambda x, y, classes, device, quiet: feature_net.FeatureNet(x.shape[1], classes))
        _, third = feature_net.obtain(work, "inverted", other_x, other_y, 255 - d.test_x, d.test_y, 10, "cpu")
    assert third["trained_now"] and third["key"] != info["key"] and path.read_bytes() == before
    # a classifier copied over the name of another is refused, and stays as it is
    other = feature_net.classifier_path(work, third["key"])
    other.write_bytes(before)
    with pytest.raises(UserError, match=r"classifier of another training split.*copied or renamed") as e:
        feature_net.obtain(work, "inverted", other_x, other_y, 255 - d.test_x, d.test_y, 10, "cpu")
    assert "\n" not in str(e.value) and other.read_bytes() == before


@pytest.mark.parametrize("damage", ["truncated", "checkpoint"])
def test_a_damaged_classifier_is_refused_and_not_overwritten(digits_classifier, tmp_path, damage):
    from latentlab.generate import feature_net
    d, folder, _, info = digits_classifier
    path = feature_net.classifier_path(tmp_path, info["key"])
    blob = (folder / path.name).read_bytes()[:500] if damage == "truncated" else files.json_text({}).encode()
    if damage == "checkpoint":
        files.save_torch({"kind": "checkpoint", "format_version": files.FORMAT_VERSION}, path)
        blob = path.read_bytes()
    else:
        path.write_bytes(blob)
    with pytest.raises(UserError, match=path.name) as e:
        feature_net.obtain(tmp_path, "digits", d.train_x, d.train_y, d.test_x, d.test_y, 10, "cpu")
    assert "\n" not in str(e.value) and path.read_bytes() == blob


def test_scores_are_the_same_at_a_seed_and_the_second_run_reuses_the_classifier(trained_copy, capsys, one_thread):
    import json
    from conftest import run_main
    flags = ["--output_dir", trained_copy, "--mode", "score", "--sampler", "gaussian", "gmm", "--num_scored", 400]
    run_main("viz_generation", *flags)
    shown = capsys.readouterr().out
    assert "training images (400; the floor)" in shown and "conv autoencoder 8-d, gmm samples" in shown
    assert "PCA 8, gaussian samples" in shown and "pixel blending, midpoints of 1000 test pairs" in shown
    path = trained_copy / "generation_latent_size_8.json"
    first = json.loads(path.read_text())
    run_main("viz_generation", *flags, "--quiet")
    second = json.loads(path.read_text())
    assert first["classifier"]["trained_now"] and not second["classifier"]["trained_now"]
    assert len(list(trained_copy.glob("feature_classifier_*.pth"))) == 1

    def numbers(r):  # every score, without the timings
        return {k: ({s: {m: v for m, v in sc.items() if m != "seconds"} for s, sc in m["samples"].items()},
                    m["midpoints_fd"], m.get("reconstructions"), m.get("training_reconstructions"))
                for part in ("models", "pca") for k, m in r[part].items()}
    assert numbers(first) == numbers(second) and first["floor"] == second["floor"]
    m8 = first["models"]["8"]
    assert first["floor"]["novelty"] < 1e-4 and 0 < m8["training_reconstructions"]["novelty"] < m8["samples"]["gmm"]["novelty"]
    assert m8["reconstructions"]["fd"] < m8["training_reconstructions"]["fd"]  # paired with the images they are scored against
    assert not any("a copy among the training images" in c for c in first["caveats"])  # digits' splits share no image
    assert set(m8["samples"]) == {"gaussian", "gmm"} and m8["best_sampler"] in ("gaussian", "gmm")
    assert first["run"] == json.loads((trained_copy / "run.json").read_text())["run"]
    assert 0 < first["floor"]["fd"] < m8["samples"]["gaussian"]["fd"]  # the data itself is the closest
    assert first["classifier"]["test_accuracy"] > 0.9


