"""Loading an image folder: latentlab's decoder and cache against torchvision's ImageFolder with a
DataLoader, on generated folders of large photos and of many small images; and the peak memory of
a training on a folder, memory-mapped and in memory.

    python benchmarks/bench_data.py
    python benchmarks/bench_data.py --photos 2000 --small 50000 --image_size 64 --work_dir /tmp/bench_data
    python benchmarks/bench_data.py --photos 0 --small 0 --train_sizes 10000 40000

Generates (once, in parallel, kept under --work_dir for reruns) a folder of photo-like JPEGs
(smooth gradients, shapes, sensor noise: realistic file sizes) and one of small JPEGs, two and ten
classes. Then, each in a process of its own, measures: ImageFolder + DataLoader(--loader_workers)
with the same resize into one uint8 tensor; load_dataset's first load (decode and build the
cache); its load from the cache. Prints seconds, images/s, CPU seconds (the process and its
workers: the figure a loaded machine distorts least) and peak RSS of each, and the ratios.
With --train_sizes, for each size a folder of that many small JPEGs and its cache, then train.py
(one epoch of a small 2-d MLP) in a process of its own from the memory-mapped cache (a --memory_budget
below it) and from memory: its peak RSS (VmHWM, mapped pages of the cache included) and its peak
anonymous memory (RssAnon, sampled), which must not grow with the folder.
"""
import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from latentlab.cli import Parser, UserError, run  # noqa: E402
from latentlab.ranges import nonneg_int, positive_int  # noqa: E402
from photo_folders import generate, image_shape  # noqa: E402

PATHS = ("imagefolder", "first_load", "cached_load")


def parse_args(argv=None):
    p = Parser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--work_dir", default="/tmp/latentlab_bench_data", help="generated folders and caches")
    p.add_argument("--photos", type=nonneg_int, default=2000, help="photo-like JPEGs (0: skip that folder)")
    p.add_argument("--photo_size", type=image_shape, default=(3000, 2000), help="WIDTHxHEIGHT of the photos")
    p.add_argument("--small", type=nonneg_int, default=50000, help="small JPEGs (0: skip that folder)")
    p.add_argument("--small_size", type=image_shape, default=(64, 64), help="WIDTHxHEIGHT of the small images")
    p.add_argument("--image_size", type=positive_int, default=64, help="--image_size of the loads")
    p.add_argument("--repeats", type=positive_int, default=3, help="interleaved repeats of every path")
    p.add_argument("--loader_workers", type=nonneg_int, default=2, help="DataLoader workers of the ImageFolder path")
    p.add_argument("--train_sizes", type=positive_int, nargs="*", default=[],
                   help="folder sizes of the training-memory measurement (none: skip it)")
    p.add_argument("--child", nargs=4, metavar=("PATH", "FOLDER", "IMAGE_SIZE", "CACHE"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---------------------------------------------------------------- one measured path, in its own process
def measure(path: str, folder: str, image_size: int, cache: str) -> dict:
    """Load the folder one way: seconds, images, peak RSS of the loading process (the pool's
    workers and the DataLoader's each hold one chunk or batch at a time). train_mapped and
    train_memory: train.py on it instead, and its peak anonymous memory too."""
    t0 = time.perf_counter()
    if path.startswith("train_"):
        return train_peak(path, folder, image_size, cache)
    if path == "imagefolder":
        import torch
        from torch.utils.data import DataLoader
        from torchvision import datasets, transforms
        ds = datasets.ImageFolder(folder, transforms.Compose([
            transforms.Resize((image_size, image_size), transforms.InterpolationMode.BILINEAR),
            transforms.PILToTensor()]))
        workers = int(cache)
        loader = DataLoader(ds, batch_size=256, num_workers=workers, persistent_workers=False)
        count = len(torch.cat([batch for batch, _ in loader]))
    else:
        from latentlab.data.datasets import load_dataset
        # squashed, as ImageFolder's Resize((S, S)) above: the same work on both paths
        data = load_dataset(f"folder:{folder}", image_size=image_size, data_dir=cache, quiet=True, resize="squash")
        count = len(data.train_x) + len(data.test_x)
    seconds = time.perf_counter() - t0
    if path != "imagefolder":  # a page of each: images that workers wrote into shared memory count once touched
        for x in (data.train_x, data.test_x):
            x.reshape(-1)[::4096].sum()
    return {"seconds": seconds, "images": count, "rss_mb": status_kb("VmHWM") / 1024}


def status_kb(field: str) -> int:
    """A field of /proc/self/status in kB: VmHWM, this process's peak resident memory (unlike
    getrusage's ru_maxrss it starts afresh at exec, so the parent's size at the fork does not
    count), or RssAnon, its anonymous memory now."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def train_peak(path: str, folder: str, image_size: int, cache: str) -> dict:
    """One epoch of train.py (the 2-d MLP, one hidden layer of 64) on the folder, its cache in cache, in this
    process: from the memory map (train_mapped: a budget below the cache) or from memory."""
    import train
    peak_anon, done = [0], threading.Event()

    def sample():  # RssAnon has no high-water mark of its own
        while not done.wait(0.02):
            peak_anon[0] = max(peak_anon[0], status_kb("RssAnon"))
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    flags = ["--dataset", f"folder:{folder}", "--data_dir", cache, "--image_size", str(image_size),
             "--resize", "squash", "--model", "mlp", "--hidden", "64", "--latent_size", "2", "--num_epochs", "1",
             "--snapshot_every", "0", "--quiet", "--overwrite", "--output_dir", str(Path(cache) / path)]
    if path == "train_mapped":
        flags += ["--memory_budget", "0.001"]
    t0 = time.perf_counter()
    train.main(train.parse_args(flags))
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    return {"seconds": seconds, "images": 0, "rss_mb": status_kb("VmHWM") / 1024,
            "anon_mb": max(peak_anon[0], status_kb("RssAnon")) / 1024}


def run_child(path: str, folder: Path, image_size: int, extra: str) -> dict:
    """A measurement in a process of its own, with the CPU seconds of that process and its workers."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, __file__, "--child", path, str(folder), str(image_size), extra],
                          capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise UserError(f"the {path} measurement failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["cpu_s"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return row


def bench_folder(name: str, folder: Path, args) -> dict:
    """Each path --repeats times, interleaved (the machine's load drifts): the median seconds, the
    highest peak RSS, and the median of each repeat's speed-up over ImageFolder."""
    cache = Path(args.work_dir) / f"cache_{name}"
    runs, start = {path: [] for path in PATHS}, load_average()
    for _ in range(args.repeats):
        shutil.rmtree(cache, ignore_errors=True)
        runs["imagefolder"].append(run_child("imagefolder", folder, args.image_size, str(args.loader_workers)))
        runs["first_load"].append(run_child("first_load", folder, args.image_size, str(cache)))
        runs["cached_load"].append(run_child("cached_load", folder, args.image_size, str(cache)))
    rows = {path: {"seconds": statistics.median(r["seconds"] for r in runs[path]), "images": runs[path][0]["images"],
                   "cpu_s": statistics.median(r["cpu_s"] for r in runs[path]),
                   "rss_mb": max(r["rss_mb"] for r in runs[path])} for path in PATHS}
    for path in ("first_load", "cached_load"):
        rows[path]["speedup"] = statistics.median(a["seconds"] / b["seconds"]
                                                  for a, b in zip(runs["imagefolder"], runs[path]))
        rows[path]["cpu_ratio"] = statistics.median(a["cpu_s"] / b["cpu_s"]
                                                    for a, b in zip(runs["imagefolder"], runs[path]))
    rows["cache_bytes"] = sum(p.stat().st_size for p in cache.rglob("*.npy"))
    rows["load"] = f"{start} at the start, {load_average()} at the end"
    return rows


def main(args) -> dict:
    if args.child:
        path, folder, size, extra = args.child
        print(json.dumps(measure(path, folder, int(size), extra)))
        return {}
    work = Path(args.work_dir)
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create --work_dir {work}: {e.strerror or e}")
    results = {}
    for name, count, size, classes in (("photos", args.photos, args.photo_size, 2),
                                       ("small", args.small, args.small_size, 10)):
        if count:
            folder = generate(work / f"{name}_{count}_{size[0]}x{size[1]}", count, size, classes)
            results[name] = bench_folder(name, folder, args)
            print_rows(name, count, size, args, results[name])
    if args.train_sizes:
        results["training"] = bench_training(work, args)
    return results


def load_average() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "n/a"


def bench_training(work: Path, args) -> dict:
    """For each of --train_sizes: the folder and its cache (a first load, not measured), then the
    mapped and the in-memory training, each in a process of its own."""
    rows = {}
    print(f"\ntrain.py, 1 epoch of the 2-d MLP (--hidden 64) at {args.image_size}x{args.image_size} (load average "
          f"{load_average()}):")
    print(f"{'images':>8} {'cache MB':>9} {'path':<12} {'seconds':>8} {'peak RSS MB':>12} {'peak anon MB':>13}")
    for count in args.train_sizes:
        folder = generate(work / f"small_{count}_{args.small_size[0]}x{args.small_size[1]}", count,
                          args.small_size, 10)
        cache = work / f"cache_train_{count}"
        run_child("cached_load", folder, args.image_size, str(cache))
        cache_mb = sum(p.stat().st_size for p in cache.rglob("*.npy")) / 1e6
        for path in ("train_mapped", "train_memory"):
            r = rows[(count, path)] = run_child(path, folder, args.image_size, str(cache))
            print(f"{count:>8,} {cache_mb:>9,.0f} {path[6:]:<12} {r['seconds']:>8.1f} {r['rss_mb']:>12,.0f} "
                  f"{r['anon_mb']:>13,.0f}", flush=True)
    print(f"(load average at the end {load_average()})")
    return rows


def print_rows(name: str, count: int, size: tuple, args, rows: dict) -> None:
    print(f"\n{name}: {count} JPEGs of {size[0]}x{size[1]} -> {args.image_size}x{args.image_size}; "
          f"cache {rows['cache_bytes'] / 1e6:,.0f} MB; load average {rows['load']}")
    print(f"{'path':<34} {'seconds':>8} {'img/s':>8} {'CPU s':>7} {'peak RSS MB':>12}")
    labels = {"imagefolder": f"ImageFolder + DataLoader({args.loader_workers} workers)",
              "first_load": "load_dataset, first (decode+cache)", "cached_load": "load_dataset, from the cache"}
    for path in PATHS:
        r = rows[path]
        print(f"{labels[path]:<34} {r['seconds']:>8.2f} {r['images'] / r['seconds']:>8,.0f} {r['cpu_s']:>7.1f} "
              f"{r['rss_mb']:>12,.0f}")
    print(f"first load: {rows['first_load']['speedup']:.2f}x ImageFolder's speed, "
          f"{rows['first_load']['cpu_ratio']:.2f}x less CPU; cached load: {rows['cached_load']['speedup']:.1f}x "
          f"(medians of {args.repeats} interleaved repeats)")


if __name__ == "__main__":
    run(main, parse_args())
