"""Images of every mode a folder may hold load right: 16-bit and 32-bit and float images scaled by
their range, EXIF orientation, and every unreadable file named in one line."""
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import checksums, refused, run_script


def _mode_folder(root: Path, arrays: dict, mode: str | None = None, suffix: str = ".png") -> Path:
    """One sub-folder per class, holding each array of arrays[class] as an image of this mode."""
    from PIL import Image
    for name, images in arrays.items():
        (root / name).mkdir(parents=True)
        for i, a in enumerate(images):
            Image.fromarray(a, mode).save(root / name / f"{i}{suffix}") if mode else \
                Image.fromarray(a).save(root / name / f"{i}{suffix}")
    return root


def _ramps(dtype, low, high, n=3, size=16):
    """n horizontal ramps from low to high: a known contrast, the same in every image."""
    return [np.tile(np.linspace(low, high, size), (size, 1)).astype(dtype) for _ in range(n)]


def _loaded(root, tmp_path, size=16):
    from latentlab.data.datasets import load_dataset
    data = load_dataset(f"folder:{root}", data_dir=tmp_path, image_size=size)
    return torch.cat([data.train_x, data.test_x])


def test_a_16_bit_png_keeps_its_contrast(tmp_path):
    from PIL import Image
    root = _mode_folder(tmp_path / "micro", {"a": _ramps(np.uint16, 1000, 4000), "b": _ramps(np.uint16, 200, 3000)})
    with Image.open(root / "a" / "0.png") as img:
        assert img.mode.startswith("I;16")  # what a microscope writes
    x = _loaded(root, tmp_path)
    assert x.shape[1] == 1 and x.min() == 0 and x.max() == 255
    assert (x == 255).float().mean() < 0.1  # not saturated: convert("L") left 98% at 255
    assert (x[:, 0, :, 1:].int() >= x[:, 0, :, :-1].int()).all()  # the ramp is still a ramp


@pytest.mark.parametrize("dtype,low,high", [(np.int32, -10**6, 10**6), (np.float32, -0.5, 0.5), (np.float32, 0, 1e-4)])
def test_32_bit_int_and_float_images_are_scaled_by_their_range(tmp_path, dtype, low, high):
    arrays = {"a": _ramps(dtype, low, high), "b": _ramps(dtype, high, low)}
    x = _loaded(_mode_folder(tmp_path / "sci", arrays, "I" if dtype == np.int32 else "F", ".tif"), tmp_path)
    assert x.shape[1] == 1 and x.min() == 0 and x.max() == 255
    assert len(torch.unique(x)) > 10  # the range is spread over the 8 bits, not clipped to two values


def test_a_float_image_with_nan_and_inf_still_loads_by_its_finite_range(tmp_path):
    ramps = _ramps(np.float32, 0, 1)
    ramps[0][0, :3] = [np.nan, np.inf, -np.inf]
    x = _loaded(_mode_folder(tmp_path / "sci", {"a": ramps, "b": _ramps(np.float32, 1, 0)}, "F", ".tif"), tmp_path)
    assert x.min() == 0 and x.max() == 255 and len(torch.unique(x)) > 10


@pytest.mark.parametrize("size", [16, 40])  # Pillow's draft decode (4x larger) and torchvision's (small JPEGs)
def test_a_jpeg_with_exif_orientation_6_loads_upright(tmp_path, size):
    from PIL import Image
    upright = np.zeros((64, 32), dtype=np.uint8)
    upright[:32] = 255  # bright top half, as the phone's user saw it
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # the sensor's rows: on its side
    for name in ("a", "b"):
        (tmp_path / "phone" / name).mkdir(parents=True)
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees clockwise to display
        stored.save(tmp_path / "phone" / name / "0.jpg", exif=exif.tobytes())
        stored.save(tmp_path / "phone" / name / "1.jpg", exif=exif.tobytes())
    x = _loaded(tmp_path / "phone", tmp_path, size).float()
    half = size // 2
    top, bottom = x[:, 0, :half].mean(), x[:, 0, half:].mean()
    left, right = x[:, 0, :, :half].mean(), x[:, 0, :, half:].mean()
    assert top > 200 and bottom < 50 and abs(left - right) < 20


def test_every_unreadable_file_is_named_in_one_line(tmp_path):
    from latentlab.cli import UserError
    from latentlab.data.datasets import load_dataset
    root = _mode_folder(tmp_path / "mixed", {"a": _ramps(np.uint8, 0, 255, n=2), "b": _ramps(np.uint8, 0, 255, n=2)})
    for i in range(5):
        (root / "b" / f"broken{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(UserError) as err:
        load_dataset(f"folder:{root}", data_dir=tmp_path)
    line = str(err.value)
    assert "\n" not in line and line.startswith("cannot read 5 images: ") and "and 2 more" in line
    assert all(f"broken{i}.png" in line for i in range(3))


@pytest.mark.slow
@pytest.mark.parametrize("name", [b"bad\xff\xfename.png", b"two\nlines.png"])
def test_an_unreadable_file_with_an_odd_name_is_one_error_line(tmp_path, name):
    import os
    root = _mode_folder(tmp_path / "odd", {"a": _ramps(np.uint8, 0, 255), "b": _ramps(np.uint8, 0, 255)})
    with open(os.path.join(os.fsencode(root / "b"), name), "wb") as f:
        f.write(b"not an image at all")
    before = checksums(root)
    line = refused(run_script("train.py", "--dataset", f"folder:{root}", "--latent_size", 4, "--num_epochs", 1,
                              "--data_dir", tmp_path / "cache", "--output_dir", tmp_path / "out", check=False))
    assert line.startswith("error: cannot read image ") and "remove or replace the file" in line
    shown = "bad\\udcff\\udcfename.png" if b"\xff" in name else "two\\nlines.png"
    assert shown in line  # escaped, never raw bytes or a second line
    assert checksums(root) == before and not list((tmp_path / "cache").rglob("*.npy"))
