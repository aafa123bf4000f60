"""Image folders (latentlab.image_folder): the decoded cache is reused, rebuilt when a file
changes, and survives a kill mid-build; training from its memory map gives the weights training in
memory gives; the conv family at 64x64 and 128x128; the data benchmark on a tiny folder."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, run_script
from latentlab import image_folder
from latentlab.datasets import load_dataset
from latentlab.settings import Settings
from latentlab.training import TrainingSplit, split_train_val, train_model
from model.autoencoder import DEFAULT_NETWORK, build_model


def make_folder(root: Path, per_class: int = 40, size: int = 24, classes=("cats", "dogs"), seed: int = 0) -> Path:
    """PNGs of class-dependent noise (a class mean the models can learn), per_class per sub-folder."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = 60 + 120 * c + rng.normal(0, 40, (size, size, 3))
            Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(root / name / f"{i:03d}.png")
    return root


def caches(cache_dir: Path) -> list[Path]:
    return sorted((cache_dir / "folder_cache").glob("*.npy"))


def test_the_cache_is_reused_and_rebuilt_when_a_file_changes(tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "photos", per_class=40)  # 80 files: two chunks, the process pool
    first = load_dataset(f"folder:{folder}", data_dir=tmp_path, image_size=16)
    [cache] = caches(tmp_path)
    assert first.train_x.shape == (64, 3, 16, 16) and len(first.test_x) == 16

    def no_build(*args, **kwargs):
        raise AssertionError("the cache was rebuilt though nothing changed")
    monkeypatch.setattr(image_folder, "build_cache", no_build)
    again = load_dataset(f"folder:{folder}", data_dir=tmp_path, image_size=16)
    assert torch.equal(again.train_x, first.train_x) and torch.equal(again.test_y, first.test_y)
    monkeypatch.undo()

    changed = folder / "dogs" / "000.png"
    Image.fromarray(np.zeros((24, 24, 3), dtype=np.uint8)).save(changed)
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    rebuilt = load_dataset(f"folder:{folder}", data_dir=tmp_path, image_size=16)
    [new_cache] = caches(tmp_path)  # the stale one is gone
    assert new_cache != cache
    before, after = torch.cat([first.train_x, first.test_x]), torch.cat([rebuilt.train_x, rebuilt.test_x])
    differ = torch.nonzero((before != after).flatten(1).any(1)).flatten()
    assert len(differ) == 1 and after[differ[0]].max() == 0  # the changed image alone, now black


def test_another_image_size_is_a_cache_of_its_own(tmp_path):
    folder = make_folder(tmp_path / "photos", per_class=5)
    load_dataset(f"folder:{folder}", data_dir=tmp_path, image_size=16)
    small = load_dataset(f"folder:{folder}", data_dir=tmp_path, image_size=8)
    assert small.image_shape == (3, 8, 8) and len(caches(tmp_path)) == 2


def split_order(folder: Path):
    """(files, the order the cache holds them in: the training split, then the test split)."""
    from latentlab.datasets import split_indices
    listing = image_folder.list_folder(folder)
    train_idx, test_idx = split_indices(torch.from_numpy(listing.labels), 0.2, seed=0)
    return listing, torch.cat([train_idx, test_idx]).numpy()


def test_a_temp_file_left_by_a_killed_build_is_never_taken_and_is_removed(tmp_path):
    folder = make_folder(tmp_path / "photos", per_class=5)
    listing, order = split_order(folder)
    files = listing.files
    final = image_folder.cache_path(listing, order, 16, tmp_path / "folder_cache", folder)
    final.parent.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    torn = final.parent / f".{final.name}.{image_folder.socket.gethostname()}.{int(dead.stdout)}.tmp"
    np.lib.format.open_memmap(torn, mode="w+", dtype=np.uint8, shape=(len(files), 3, 16, 16))  # all zeros
    data = load_dataset(f"folder:{folder}", data_dir=tmp_path, image_size=16)
    assert not torn.exists() and final.is_file()
    expected = image_folder.decode_images([files[i] for i in order], 16)
    assert np.array_equal(torch.cat([data.train_x, data.test_x]).numpy(), expected) and expected.mean() > 10


@pytest.mark.slow
def test_a_build_killed_midway_leaves_no_cache_and_the_next_load_is_whole(tmp_path):
    folder = make_folder(tmp_path / "photos", per_class=400, size=256)
    cache_dir = tmp_path / "folder_cache"
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from latentlab.datasets import load_dataset; "
            f"load_dataset('folder:{folder}', data_dir={str(tmp_path)!r}, image_size=32, quiet=True)")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.time() + 120
        while not list(cache_dir.glob(".*.tmp")) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)  # the first chunk is written; the rest are decoding
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert caches(tmp_path) == [] and list(cache_dir.glob(".*.tmp")), "the build ended before the kill: a larger folder"
    data = load_dataset(f"folder:{folder}", data_dir=tmp_path, image_size=32, quiet=True)
    assert not list(cache_dir.glob(".*.tmp")) and len(caches(tmp_path)) == 1
    listing, order = split_order(folder)
    expected = image_folder.decode_images([listing.files[i] for i in order], 32)
    assert np.array_equal(torch.cat([data.train_x, data.test_x]).numpy(), expected)


def test_a_folder_over_the_memory_budget_trains_from_its_memory_map_to_the_same_weights(tmp_path):
    folder = make_folder(tmp_path / "photos", per_class=24, size=16)
    in_memory = load_dataset(f"folder:{folder}", data_dir=tmp_path, image_size=8)
    mapped = load_dataset(f"folder:{folder}", data_dir=tmp_path, image_size=8, memory_budget=1e-9)
    listing, order = split_order(folder)
    assert isinstance(image_folder.folder_images(folder, listing, order, 8, tmp_path / "folder_cache", 1), np.memmap)
    assert not isinstance(image_folder.folder_images(folder, listing, order, 8, tmp_path / "folder_cache", 2**40),
                          np.memmap)
    settings = Settings(latent_size=4, num_epochs=2, batch_size=8, snapshot_every=0, seed=3)
    weights = []
    for data, name in ((in_memory, "memory"), (mapped, "mapped")):
        split = TrainingSplit(data.train_x, *split_train_val(len(data.train_x), settings.val_fraction, settings.seed))
        ckpt = train_model(settings.model_config(4, data.image_shape), split, settings, tmp_path / f"{name}.pth",
                           {}, quiet=True)
        weights.append(ckpt["resume"]["state_dict"])
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.parametrize("family", ["conv", "vae"])
@pytest.mark.parametrize("size,stages", [(64, 4), (128, 5)])
def test_the_conv_family_adds_stages_as_large_images_allow(family, size, stages):
    settings = Settings(latent_size=16, model=family)
    config = settings.model_config(16, (3, size, size))
    assert len(config.channels) == stages
    model = build_model(config)
    assert model.encoder.feature_shape == (config.channels[-1], 4, 4)
    x = torch.rand(2, 3, size, size)
    logits, *_ = model(x)
    assert logits.shape == x.shape


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_small_images_keep_the_documented_networks(shape):
    for largest, channels, dense, _ in DEFAULT_NETWORK:
        latent = 2 if largest == 4 else min(int(min(largest, 256)), 256)
        config = Settings(latent_size=latent).model_config(latent, shape)
        assert config.channels == channels and config.dense == dense


@pytest.mark.slow
def test_the_data_benchmark_runs_on_a_tiny_folder_and_refuses_a_bad_size(tmp_path):
    out = run_script("benchmarks/bench_data.py", "--work_dir", tmp_path, "--photos", 6, "--photo_size", "80x60",
                     "--small", 20, "--small_size", "16x16", "--image_size", 8, "--loader_workers", 0, "--repeats", 2).stdout
    assert "photos: 6 JPEGs of 80x60 -> 8x8" in out and "small: 20 JPEGs of 16x16 -> 8x8" in out
    assert out.count("load_dataset, from the cache") == 2 and out.count("ImageFolder's speed") == 2
    bad = run_script("benchmarks/bench_data.py", "--photo_size", "3000", check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "is not WIDTHxHEIGHT" in bad.stderr


def test_colour_images_after_many_grey_ones_make_a_colour_cache(tmp_path):
    root = tmp_path / "mixed"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    for i in range(90):  # more grey images than one chunk, first in the cache's order
        Image.fromarray(np.full((12, 12), i, dtype=np.uint8)).save(root / "a" / f"{i:02d}.png")
    for i in range(5):
        Image.fromarray(np.full((12, 12, 3), (200, 10, i), dtype=np.uint8)).save(root / "b" / f"{i}.png")
    data = load_dataset(f"folder:{root}", data_dir=tmp_path, image_size=12)
    x = torch.cat([data.train_x, data.test_x])
    y = torch.cat([data.train_y, data.test_y])
    assert x.shape[1] == 3 and len(caches(tmp_path)) == 1 and not list((tmp_path / "folder_cache").glob(".*"))
    grey, colour = x[y == 0], x[y == 1]
    assert (grey[:, 0] == grey[:, 1]).all() and (grey[:, 1] == grey[:, 2]).all()
    assert (colour[:, 0] == 200).all() and (colour[:, 1] == 10).all()


@pytest.mark.parametrize("exact_max_dim", [4096, 16])
def test_the_pca_baseline_of_a_memory_map_is_the_one_of_its_training_rows_in_memory(tmp_path, exact_max_dim):
    from latentlab.pca import fit_pca
    folder = make_folder(tmp_path / "photos", per_class=20, size=8)
    mapped = load_dataset(f"folder:{folder}", data_dir=tmp_path, image_size=8, memory_budget=1e-9)
    idx = torch.arange(0, len(mapped.train_x), 3)
    mean, comps = fit_pca(mapped.train_x, 5, exact_max_dim=exact_max_dim, idx=idx)
    ref_mean, ref_comps = fit_pca(mapped.train_x[idx].clone(), 5, exact_max_dim=exact_max_dim)
    assert torch.equal(mean, ref_mean) and torch.equal(comps, ref_comps)
