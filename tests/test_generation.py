"""viz_generation.py: the pieces that carry logic (latentlab/generation.py), then the script end to
end on the embedded digits, as a user runs it, for an autoencoder and a VAE."""
import pytest
import torch
from PIL import Image

import viz_generation
from conftest import run_script
from latentlab import artifacts, files, generation as gen, plots
from latentlab.cli import UserError
from latentlab.datasets import to_float
from latentlab.inference import encode_images
from model.autoencoder import model_from_checkpoint

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
def test_autoencoder_samples_follow_the_gaussian_fitted_to_the_latents():
    z = correlated_latents()
    mean, cov = gen.fit_gaussian(z)
    assert torch.allclose(mean, z.double().mean(0)) and torch.allclose(cov, torch.cov(z.double().T, correction=0))
    s, source = gen.sample_latents("conv", z, 50000, seed=1)
    assert s.shape == (50000, 3) and s.dtype == torch.float32 and "fitted" in source
    assert torch.allclose(s.double().mean(0), mean, atol=0.05)
    assert torch.allclose(torch.cov(s.double().T), cov, atol=0.06)  # entries of cov reach 4.0
    assert torch.corrcoef(s.T)[0, 1] > 0.9  # the correlation is kept, not just the variances
    assert torch.equal(s, gen.sample_latents("conv", z, 50000, seed=1)[0])  # seeded
    assert not torch.equal(s[:10], gen.sample_latents("conv", z, 10, seed=2)[0])


def test_a_singular_covariance_still_samples():
    z = correlated_latents(500)
    z = torch.cat([z, torch.full((500, 1), 0.7)], dim=1)  # a dead latent unit: zero variance
    s, _ = gen.sample_latents("mlp", z, 2000, seed=0)
    assert torch.isfinite(s).all() and torch.allclose(s[:, 3], torch.full((2000,), 0.7), atol=1e-4)
    few = correlated_latents(2)  # fewer latents than dimensions: rank 1
    assert torch.isfinite(gen.sample_latents("conv", few, 5, seed=0)[0]).all()


def test_vae_samples_come_from_the_prior_not_the_latents():
    z = correlated_latents()  # far from N(0, I): the prior must not be fitted to it
    s, source = gen.sample_latents("vae", z, 50000, seed=0)
    assert "prior" in source
    assert s.mean(0).abs().max() < 0.03 and torch.allclose(torch.cov(s.T), torch.eye(3), atol=0.03)


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
    tiles = plots.mosaic(imgs, ncols=2, pad=1, pad_value=1.0)[..., 0]  # grey images come back as RGB
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
        model = model_from_checkpoint(artifacts.load_checkpoint(trained / f"model_latent_size_{k}.pth"))
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
    proc = run_script("viz_generation.py", "--output_dir", trained_copy, "--seed", 3)
    assert_pngs(trained_copy, AE_FIGURES)
    for name in AE_FIGURES:  # where each figure landed is printed
        assert f"{trained_copy / name}" in proc.stdout


def test_explicit_paths_and_one_mode(trained, tmp_path):
    figs = tmp_path / "figs"
    run_script("viz_generation.py", "--model_path", trained / "model_latent_size_8.pth",
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
def test_vae_end_to_end(tmp_path):
    run_script("train.py", "--latent_size", 4, "--dataset", "digits", "--num_epochs", 2, "--model", "vae",
               "--snapshot_every", 0, "--output_dir", tmp_path, "--quiet")
    proc = run_script("viz_generation.py", "--output_dir", tmp_path, "--num_samples", 16)
    names = ["generation_samples_latent_size_2.png", "generation_samples_latent_size_4.png",
             "generation_interpolation_latent_size_4.png", "generation_manifold_latent_size_2.png",
             "generation_traversal_latent_size_4.png"]
    assert_pngs(tmp_path, names)
    assert proc.stdout.count("wrote ") == len(names)


@pytest.mark.parametrize("bad, message", [(["--index", "359"], "--index 359 is out of range"),
                                          (["--num_samples", "0"], "--num_samples")])
def test_bad_options_give_one_line_and_exit_2(trained, tmp_path, bad, message):
    proc = run_script("viz_generation.py", "--output_dir", trained, *bad, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not list(trained.glob("generation_*"))  # nothing written


def test_an_interpolation_needs_two_steps(tmp_path):
    with pytest.raises(UserError, match="--steps 1 is too few"):
        viz_generation.main(viz_generation.parse_args(["--steps", "1", "--output_dir", str(tmp_path)]))


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
        viz_generation.main(viz_generation.parse_args(["--output_dir", str(tmp_path / "empty")]))
