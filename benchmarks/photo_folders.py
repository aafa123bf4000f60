"""Generated image folders for benchmarks/bench_data.py: photo-like JPEGs (smooth gradients, shapes,
sensor noise: realistic file sizes) in class sub-folders, made in parallel and kept for reruns."""
import argparse
import json
import shutil
from pathlib import Path

from latentlab.cli import UserError


def image_shape(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT (e.g. 3000x2000)")
    if min(w, h) < 8 or w * h > 50_000_000:
        raise argparse.ArgumentTypeError(f"{text}: give 8 to 50 megapixels a side product, e.g. 3000x2000")
    return w, h


_NOISE = {}  # per worker process: one sensor-noise field per size, cropped at a random offset per photo


def photo(args) -> None:
    """One photo-like JPEG: a smooth colour field, a few shapes, Gaussian sensor noise."""
    path, (w, h), seed = args
    import numpy as np
    from PIL import Image, ImageChops, ImageDraw
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(8):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        box = [x0, y0, x0 + int(rng.integers(w // 20, w // 3) + 1), y0 + int(rng.integers(h // 20, h // 3) + 1)]
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    if (w, h) not in _NOISE:
        _NOISE[(w, h)] = Image.merge("RGB", [Image.effect_noise((w + 64, h + 64), 6) for _ in range(3)])
    dx, dy = (int(v) for v in rng.integers(0, 64, 2))
    noise = _NOISE[(w, h)].crop((dx, dy, dx + w, dy + h))
    ImageChops.add(img, noise, offset=-128).save(path, quality=90)


def generate(folder: Path, count: int, size: tuple, classes: int) -> Path:
    """count JPEGs of size in classes sub-folders, made in parallel; kept for reruns (done.json)."""
    from concurrent.futures import ProcessPoolExecutor
    done = folder / "done.json"
    spec = {"count": count, "size": list(size), "classes": classes}
    if done.is_file() and json.loads(done.read_text()) == spec:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    for c in range(classes):
        (folder / f"class_{c}").mkdir(parents=True)
    jobs = [(folder / f"class_{i % classes}" / f"{i:06d}.jpg", size, i) for i in range(count)]
    print(f"generating {count} JPEGs of {size[0]}x{size[1]} in {folder} ...", flush=True)
    try:
        with ProcessPoolExecutor() as pool:
            list(pool.map(photo, jobs, chunksize=64))
    except OSError as e:
        raise UserError(f"cannot generate the folder in {folder}: {e.strerror or e}; give --work_dir on a disk "
                        f"with room")
    done.write_text(json.dumps(spec))
    return folder
