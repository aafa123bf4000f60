"""Image folders (latentlab.data.image_folder): the decoded cache is reused, rebuilt when a file
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

from conftest import ROOT
from latentlab.data import decoding, image_file, image_folder
from latentlab.data.datasets import load_dataset
from latentlab.settings import Settings
from latentlab.train.loop import TrainingSplit, split_train_val, train_model
from model.autoencoder import build_model
from model.parts import DEFAULT_NETWORK


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
    from latentlab.data.sources import split_indices
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
    torn = final.parent / f".{final.name}.{decoding.socket.gethostname()}.{int(dead.stdout)}.tmp"
    np.lib.format.open_memmap(torn, mode="w+", dtype=np.uint8, shape=(len(files), 3, 16, 16))  # all zeros
    data = load_dataset(f"folder:{folder}", data_dir=tmp_path, image_size=16)
    assert not torn.exists() and final.is_file()
    expected = decoding.decode_images([files[i] for i in order], 16)
    assert np.array_equal(torch.cat([data.train_x, data.test_x]).numpy(), expected) and expected.mean() > 10


@pytest.mark.slow
def test_a_build_killed_midway_leaves_no_cache_and_the_next_load_is_whole(tmp_path):
    folder = make_folder(tmp_path / "photos", per_class=400, size=256)
    cache_dir = tmp_path / "folder_cache"
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from latentlab.data.datasets import load_dataset; "
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
    expected = decoding.decode_images([listing.files[i] for i in order], 32)
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


def mapped_file(tensor: torch.Tensor) -> str:
    """The file whose mapping holds the tensor's first byte ('' for anonymous memory)."""
    ptr = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        lo, hi = (int(v, 16) for v in fields[0].split("-"))
        if lo <= ptr < hi:
            return fields[5] if len(fields) > 5 else ""
    return ""


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads the process's mappings from /proc")
def test_a_training_over_the_memory_budget_reads_its_split_from_the_map_and_saves_the_test_split_alone(
        tmp_path, monkeypatch):
    from conftest import run_main
    from latentlab.train import run
    folder = make_folder(tmp_path / "photos", per_class=20, size=8)
    handed = []
    for name in ("train_model", "fit_pca"):  # each is handed the training images
        real = getattr(run, name)

        def spy(*args, real=real, **kwargs):
            handed.append(next(a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)
                               or hasattr(a, "images")))
            return real(*args, **kwargs)
        monkeypatch.setattr(run, name, spy)
    run_main("train", "--dataset", f"folder:{folder}", "--latent_size", 4, "--num_epochs", 1, "--image_size", 8,
             "--snapshot_every", 0, "--memory_budget", "1e-9", "--data_dir", tmp_path / "cache", "--quiet",
             "--output_dir", tmp_path / "out")
    [cache] = caches(tmp_path / "cache")
    images = [getattr(h, "images", h) for h in handed]
    assert len(images) == 3 and all(mapped_file(x) == str(cache.resolve()) for x in images)  # PCA, 2-d, 4-d model
    test_images = torch.load(tmp_path / "out" / "test_data.pth", weights_only=True)["images"]
    assert len(test_images) == 8 and test_images.untyped_storage().nbytes() == test_images.numel()


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
    from latentlab.analysis.pca import fit_pca
    folder = make_folder(tmp_path / "photos", per_class=20, size=8)
    mapped = load_dataset(f"folder:{folder}", data_dir=tmp_path, image_size=8, memory_budget=1e-9)
    idx = torch.arange(0, len(mapped.train_x), 3)
    mean, comps = fit_pca(mapped.train_x, 5, exact_max_dim=exact_max_dim, idx=idx)
    ref_mean, ref_comps = fit_pca(mapped.train_x[idx].clone(), 5, exact_max_dim=exact_max_dim)
    assert torch.equal(mean, ref_mean) and torch.equal(comps, ref_comps)


# ---------------------------------------------------------------- photos as photos: square, opaque, the readable rest
def save_both_classes(root: Path, image, suffix: str = ".png", per_class: int = 3) -> Path:
    """The same PIL image per_class times in each of two class sub-folders."""
    for name in ("a", "b"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image.save(root / name / f"{i}{suffix}")
    return root


def loaded(root: Path, cache: Path, size: int = 16, **reading) -> torch.Tensor:
    data = load_dataset(f"folder:{root}", data_dir=cache, image_size=size, quiet=True, **reading)
    return torch.cat([data.train_x, data.test_x])


def disc(width: int, height: int) -> Image.Image:
    """A white disc of diameter `height` centred on a wide black canvas."""
    yy, xx = np.mgrid[:height, :width]
    inside = (xx - (width - 1) / 2) ** 2 + (yy - (height - 1) / 2) ** 2 <= (height / 2 - 1) ** 2
    return Image.fromarray(np.where(inside, 255, 0).astype(np.uint8))


def box(image: torch.Tensor) -> tuple[int, int]:
    """(width, height) of the bounding box of the bright pixels of a (C, H, W) image."""
    rows, cols = torch.nonzero(image[0] > 127, as_tuple=True)
    return int(cols.max() - cols.min() + 1), int(rows.max() - rows.min() + 1)


# a PNG; a large JPEG (Pillow's draft decode at 1/4 scale); a small one (torchvision's decoder)
@pytest.mark.parametrize("width,suffix", [(48, ".png"), (192, ".jpg"), (48, ".jpg")])
def test_crop_keeps_a_circle_round_and_squash_does_not(tmp_path, width, suffix):
    root = save_both_classes(tmp_path / "discs", disc(width, width // 2), suffix)
    if suffix == ".jpg":
        small = image_file._small_jpegs([root / "a" / "0.jpg"], 16, image_file.Reading())[0]
        assert (small is not None) == (width == 48)
    for image in loaded(root, tmp_path):  # crop: the default for folders
        w, h = box(image)
        assert abs(w - h) <= 1 and h >= 13  # round, and as large as the crop leaves it
    squashed = loaded(root, tmp_path, resize="squash")
    w, h = box(squashed[0])
    assert h - w >= 5  # stretched upright into an ellipse


def test_pad_keeps_the_whole_image_with_the_background_around_it(tmp_path):
    wide = Image.fromarray(np.full((16, 32, 3), (200, 40, 40), dtype=np.uint8))  # red, twice as wide as tall
    root = save_both_classes(tmp_path / "wide", wide)
    for background, rgb in (("white", (255, 255, 255)), ("#0000ff", (0, 0, 255))):
        x = loaded(root, tmp_path, resize="pad", background=background)
        assert x.shape[1:] == (3, 16, 16)
        band = torch.tensor(rgb, dtype=torch.uint8)[:, None, None]
        assert (x[:, :, :4] == band).all() and (x[:, :, 12:] == band).all()  # above and below: the background
        assert (x[:, :, 4:12] == torch.tensor([200, 40, 40], dtype=torch.uint8)[:, None, None]).all()  # every column kept


@pytest.mark.parametrize("width", [48, 192])  # torchvision's decoder, Pillow's draft decode
def test_a_grey_photo_padded_with_a_colour_becomes_a_colour_image(tmp_path, width):
    root = save_both_classes(tmp_path / "grey", Image.new("L", (width, width // 2), 128), ".jpg")
    x = loaded(root, tmp_path, resize="pad", background="#0000ff")
    assert x.shape[1] == 3 and (x[:, :, :4] == torch.tensor([0, 0, 255], dtype=torch.uint8)[:, None, None]).all()
    assert (x[:, :, 5:11] - 128).abs().max() <= 2  # the photo, grey in all three channels


@pytest.mark.parametrize("width", [16, 48, 192])  # as large as the output, smaller than a draft, larger
def test_grey_jpegs_on_a_colour_background_make_a_colour_cache_at_any_size(tmp_path, width):
    root = save_both_classes(tmp_path / "grey", Image.new("L", (width, width), 90), ".jpg")
    x = loaded(root, tmp_path, background="#0000ff")  # cropped: the background never shows
    assert x.shape[1] == 3 and (x - 90).abs().max() <= 2
    assert loaded(root, tmp_path / "white").shape[1] == 1


@pytest.mark.parametrize("start_method", ["fork", None])  # workers that share the images, or a read back
def test_the_images_a_build_returns_are_the_ones_it_cached(tmp_path, monkeypatch, start_method):
    folder = make_folder(tmp_path / "photos", per_class=70, size=12)  # three chunks
    for i in range(0, 70, 7):  # small JPEGs too: torchvision's decoder
        Image.open(folder / "cats" / f"{i:03d}.png").save(folder / "cats" / f"{i:03d}.jpg")
    monkeypatch.setattr(decoding, "_start_method", lambda: start_method)
    listing, order = split_order(folder)
    files = [listing.files[i] for i in order]
    final = tmp_path / "cache" / "images.npy"
    images = decoding.build_cache(files, 12, final, memory_budget=2**30)
    assert np.array_equal(images, np.load(final)) and np.array_equal(images, decoding.decode_images(files, 12))
    assert images.shape == (150, 3, 12, 12) and images[:, :, 2:-2].mean() > 10
    assert decoding.build_cache(files, 12, final, memory_budget=1) is None  # over the budget: the file alone


def transparent(mode: str) -> Image.Image:
    """A 16x16 image of this mode: an opaque dark left half, a fully transparent right half (red
    underneath, which must not show)."""
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[:, :8, :3] = 30
    rgba[:, 8:, 0] = 250
    rgba[:, :8, 3] = 255
    image = Image.fromarray(rgba, "RGBA")
    if mode == "P":  # a palette with one transparent entry, as a GIF keeps it
        image = image.convert("RGB").quantize(2)
        image.info["transparency"] = image.getpixel((15, 0))
        return image
    return image.convert(mode)


@pytest.mark.parametrize("mode,suffix", [("RGBA", ".png"), ("LA", ".png"), ("P", ".gif"), ("P", ".png")])
def test_transparent_areas_come_out_white_or_the_background_colour(tmp_path, mode, suffix):
    root = save_both_classes(tmp_path / mode, transparent(mode), suffix)
    x = loaded(root, tmp_path)
    assert (x[:, :, :, 8:] == 255).all() and (x[:, :, :, :8] == 30).all()
    green = loaded(root, tmp_path, background="#00ff00")
    assert green.shape[1] == 3  # a colour under a grey image makes it a colour one
    assert (green[:, :, :, 8:] == torch.tensor([0, 255, 0], dtype=torch.uint8)[:, None, None]).all()
    assert (green[:, :, :, :8] == 30).all()


def test_a_changed_resize_or_background_makes_a_new_cache(tmp_path):
    root = save_both_classes(tmp_path / "discs", disc(32, 16))
    crop = loaded(root, tmp_path)
    [crop_cache] = caches(tmp_path)
    pad = loaded(root, tmp_path, resize="pad")
    pad_black = loaded(root, tmp_path, resize="pad", background="black")
    names = caches(tmp_path)
    assert crop_cache in names and len(names) == 2  # the crop cache stays; the pad one was rebuilt for black
    assert not torch.equal(crop, pad) and not torch.equal(pad, pad_black)
    assert torch.equal(loaded(root, tmp_path), crop)


def test_a_bad_background_is_one_line_and_exit_2(tmp_path, capsys):
    from conftest import run_main
    from latentlab.cli import UserError
    with pytest.raises(SystemExit) as e:
        run_main("train", "--dataset", "digits", "--latent_size", 4, "--background", "nocolour",
                 "--output_dir", tmp_path / "out")
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err and "--background: 'nocolour' is not a colour" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(UserError, match="--background '#12345' is not a colour"):
        load_dataset(f"folder:{tmp_path}", background="#12345")


def test_skip_unreadable_trains_on_the_rest_and_counts_them(tmp_path, capsys):
    from conftest import run_main
    from latentlab.cli import UserError
    root = make_folder(tmp_path / "photos", per_class=10, size=12)
    for name in ("a_broken.png", "b_broken.jpg", "c_broken.png"):
        (root / "dogs" / name).write_bytes(b"\x89PNG\r\n\x1a\n not really")
    flags = ["--dataset", f"folder:{root}", "--latent_size", 4, "--num_epochs", 1, "--image_size", 8,
             "--snapshot_every", 0, "--data_dir", tmp_path / "cache"]
    with pytest.raises(UserError) as err:
        run_main("train", *flags, "--output_dir", tmp_path / "refused")
    line = str(err.value)
    assert line.startswith("cannot read 3 images: ") and all(n in line for n in ("a_broken", "b_broken", "c_broken"))
    assert line.endswith("remove or replace them, or pass --skip_unreadable to train on the rest")
    capsys.readouterr()

    out = tmp_path / "out"
    run_main("train", *flags, "--skip_unreadable", "--output_dir", out)
    first = capsys.readouterr().out.splitlines()[0]
    assert "3 unreadable files skipped: " in first and "a_broken.png" in first
    ckpt = torch.load(out / "model_latent_size_4.pth", weights_only=False)
    ds = ckpt["dataset"]
    assert ds["skipped"] == 3 and ds["skip_unreadable"] and ds["resize"] == "crop"
    test_data = torch.load(out / "test_data.pth", weights_only=False)
    assert test_data["skipped"] == 3 and ds["num_train"] + ds["num_val"] + len(test_data["labels"]) == 20
    # the training split is re-read the same way: the same 16 readable images
    run_main("encode_latent_space", "--output_dir", out, "--split", "train", "--quiet")
    assert len(np.load(out / "latent_space_size_4_train.npy")) == 16
    # the first load of a folder, with the flag from the start: the same readable rest
    fresh = load_dataset(f"folder:{root}", data_dir=tmp_path / "fresh", image_size=8, skip_unreadable=True, quiet=True)
    assert [path for path, _ in fresh.skipped] == [str(root / "dogs" / n) for n in ("a_broken.png", "b_broken.jpg",
                                                                                     "c_broken.png")]
    assert len(fresh.train_x) + len(fresh.test_x) == 20


def test_a_sweep_job_done_with_other_reading_flags_counts_on_digits_and_is_refused_on_a_folder(tmp_path):
    from latentlab.store import files
    from latentlab.sweep import jobs
    from latentlab.cli import UserError
    now = {"resize": "crop", "background": "#ffffff", "skip_unreadable": False}
    for dataset in ("digits", "folder:photos"):
        path = files.save_json({"kind": jobs.KIND, "format_version": files.FORMAT_VERSION,
                                "settings": {"dataset": dataset, **now, "resize": "squash"},
                                "metrics": dict.fromkeys(jobs.METRICS, 0.5)},
                               tmp_path / dataset.replace(":", "_") / "metrics.json")
        if dataset == "digits":
            assert jobs.load_finished(path, now)["metrics"]["knn"] == 0.5
        else:  # its images were squashed: not the numbers a crop gives
            with pytest.raises(UserError, match="was swept with --resize squash, not crop"):
                jobs.load_finished(path, now)
