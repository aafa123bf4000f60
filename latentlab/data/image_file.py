"""One image file -> a small uint8 array (3, S, S): shrunk as it is read (a JPEG decodes at 1/2,
1/4 or 1/8 scale through Pillow's draft mode, small JPEGs in a batch through torchvision), turned
upright by its EXIF orientation, scaled to 8 bits by its own range when it has more (16-bit, 32-bit
int and float images), composited on a background colour where it is transparent, then made S x S
(RESIZE_MODES: centre-cropped, letterboxed or squashed); nothing is kept at full size. A file that cannot be decoded is named in one line (Unreadable)."""
from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from latentlab.cli import UserError


# modes that hold one grey value per pixel: a folder of only these becomes 1-channel images
GRAY_MODES = {"1", "L", "LA", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}

# how a non-square image becomes square: crop, the centre square (a circle stays round); pad, the
# whole image letterboxed onto the background colour; squash, stretched (the benchmark sets' way)
RESIZE_MODES = ("crop", "pad", "squash")


class Reading(NamedTuple):
    """How the files of a folder become images: in the cache's key."""
    resize: str = "crop"
    background: str = "#ffffff"  # under transparent pixels, and around a padded image


def colour(text: str) -> str:
    """A colour Pillow's ImageColor knows (a name, #rrggbb, rgb(...)) as #rrggbb; ValueError else."""
    from PIL import ImageColor
    r, g, b = ImageColor.getrgb(text)[:3]
    return f"#{r:02x}{g:02x}{b:02x}"


def shown(path) -> str:
    """A path as an error line or a figure shows it: newlines, other control characters and bytes
    that are not valid in the file system's encoding appear escaped, never raw."""
    text = str(path)
    return text if text.isprintable() else repr(text)[1:-1]


def to_8bit(img):
    """16-bit, 32-bit int and float images -> mode L, scaled by their own range (min -> 0, max -> 255;
    non-finite values to the nearest end); other modes are returned as they are."""
    from PIL import Image
    if img.mode not in ("I", "F") and not img.mode.startswith("I;16"):
        return img
    a = np.asarray(img, dtype=np.float64)
    finite = a[np.isfinite(a)]
    lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
    a = np.nan_to_num(a, nan=lo, posinf=hi, neginf=lo)
    scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return Image.fromarray(np.round(scaled).astype(np.uint8), "L")


def grey(colour: str) -> bool:
    """Whether a colour is a shade of grey: an image composited or padded on it can stay grey."""
    from PIL import ImageColor
    r, g, b = ImageColor.getrgb(colour)[:3]
    return r == g == b


def _squared(img, size: int, resize: str, background: str):
    """A PIL image made size x size as RESIZE_MODES says."""
    from PIL import Image, ImageColor, ImageOps
    if img.size == (size, size):
        return img
    if resize == "crop":
        return ImageOps.fit(img, (size, size), Image.BILINEAR)
    if resize == "pad":
        return ImageOps.pad(img, (size, size), Image.BILINEAR, color=ImageColor.getcolor(background, img.mode))
    return img.resize((size, size), Image.BILINEAR)


def _opaque(img, background: str):
    """An image with transparency (an alpha band, or a palette or colour key marked transparent)
    composited onto the background colour; others as they are."""
    from PIL import Image
    if img.mode not in ("RGBA", "LA", "PA", "La", "RGBa") and "transparency" not in img.info:
        return img
    rgba = img.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, background), rgba).convert("RGB")


def _fitted(x: np.ndarray, size: int, reading: Reading) -> tuple[np.ndarray, bool] | None:
    """A small JPEG as torchvision decoded it, uint8 (c, h, w) -> (uint8 (3, size, size), grey) as
    Pillow's path makes it; None where Pillow's path would give other pixels."""
    c, h, w = x.shape
    if c not in (1, 3) or min(h // size, w // size) >= 2:  # Pillow's draft would shrink it: keep its pixels
        return None
    if c == 1 and not grey(reading.background) and reading.resize == "pad" and (h, w) != (size, size):
        return None  # a grey photo padded with a colour: Pillow's path makes it a colour image
    if (h, w) != (size, size):
        from PIL import Image
        img = _squared(Image.fromarray(x[0] if c == 1 else x.transpose(1, 2, 0)), size, *reading)
        x = np.asarray(img).reshape(size, size, c).transpose(2, 0, 1)
    return np.broadcast_to(x, (3, size, size)), c == 1 and grey(reading.background)


def _small_jpegs(paths: list, size: int, reading: Reading) -> list:
    """The JPEGs of at most about size x size pixels among paths, through torchvision's decoder
    (libjpeg-turbo, as Pillow's, the same pixels; without Pillow's per-file parsing, several times
    faster on small images), in one call for all, EXIF-rotated. For each path (uint8 (3, size, size),
    grey), or None (another format, a larger image, CMYK, damaged): Pillow's path takes it."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg
    limit = 3 * size * size  # bytes: a larger file holds a larger image, which Pillow's draft shrinks
    found, encoded = [], []
    for i, p in enumerate(paths):
        if os.path.splitext(str(p))[1].lower() not in (".jpg", ".jpeg"):
            continue
        try:
            with open(p, "rb") as f:
                data = f.read(limit + 1)
        except OSError:  # Pillow's path names the error
            continue
        if 0 < len(data) <= limit:
            found.append(i)
            encoded.append(torch.frombuffer(bytearray(data), dtype=torch.uint8))

    def decode(data):
        try:
            return decode_jpeg(data, mode=ImageReadMode.UNCHANGED, apply_exif_orientation=True)
        except RuntimeError:
            return None
    decoded = decode(encoded) if encoded else []
    if decoded is None:  # one damaged file fails the whole list: each on its own
        decoded = [decode(data) for data in encoded]
    out = [None] * len(paths)
    for i, x in zip(found, decoded):
        out[i] = None if x is None else _fitted(x.numpy(), size, reading)
    return out


def decode_image(path, size: int, reading: Reading = Reading(), small: bool = True) -> tuple[np.ndarray, bool]:
    """One image file -> (uint8 (3, size, size), whether it holds grey values alone (GRAY_MODES;
    composited on a grey background): then its three channels are equal), shrunk while it is decoded.
    small=False: not a small JPEG that torchvision's decoder takes (_small_jpegs)."""
    from PIL import Image, ImageOps
    found = _small_jpegs([path], size, reading)[0] if small else None
    if found is not None:
        return found
    with Image.open(path) as img:
        gray = img.mode in GRAY_MODES and grey(reading.background)
        # JPEG only: decode at a reduced scale, each side still at least size (covers the centre crop)
        img.draft("L" if gray else "RGB", (size, size))
        if img.getexif().get(0x0112, 1) != 1:  # Orientation: phone photos are stored on their side
            img = ImageOps.exif_transpose(img)
        img = _squared(_opaque(to_8bit(img), reading.background).convert("L" if gray else "RGB"), size, *reading)
    a = np.asarray(img)
    return (np.broadcast_to(a, (3, size, size)) if gray else a.transpose(2, 0, 1)), gray


def _reason(e: Exception) -> str:
    from PIL import UnidentifiedImageError
    if isinstance(e, UnidentifiedImageError):  # its message repeats the path, which the error line names
        return "not an image file Pillow can identify"
    return str(e).splitlines()[0][:120] if str(e) else type(e).__name__


def _open_errors():
    from PIL import Image, UnidentifiedImageError
    return (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)


SHOWN_BAD_FILES = 3  # unreadable files named in the one error line


def unreadable_files(bad: list) -> str:
    """[(path, why)] as an error line or a summary names them: every one up to SHOWN_BAD_FILES, then a count."""
    names = "; ".join(f"{shown(p)} ({why})" for p, why in bad[:SHOWN_BAD_FILES])
    return names + (f" and {len(bad) - SHOWN_BAD_FILES} more" if len(bad) > SHOWN_BAD_FILES else "")


class Unreadable(UserError):
    """Files that cannot be decoded, every one of them: bad holds (path, why), sorted."""

    def __init__(self, bad: list, skippable: bool = False):
        self.bad = bad = sorted(bad)
        rest = ", or pass --skip_unreadable to train on the rest" if skippable else ""
        if len(bad) == 1:
            super().__init__(f"cannot read image {shown(bad[0][0])}: {bad[0][1]}; remove or replace the file{rest}")
        else:
            super().__init__(f"cannot read {len(bad)} images: {unreadable_files(bad)}; remove or replace them{rest}")
