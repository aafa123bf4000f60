"""The explorer at scale, in headless Chromium: build time, page size, time to interactive and the
time from hovering a point to its image on screen.

    python encode_latent_space.py --output_dir OUT --num_samples all      # the test split
    python encode_latent_space.py --output_dir OUT --split train          # and the training split
    python benchmarks/bench_explorer.py --folder OUT --points 10000 70000 --screenshot docs/explorer.png

For each --points N: explore_latent_space.py --max_points N into OUT, once untimed (it caches the
projection and the neighbours), then timed (wall, as a user runs it) with the tiles made again
and with the tiles cached too; the page's
size and its tile folder's; --repeats fresh loads, each timed from navigation to bokeh's "document
idle" (every view drawn, tools live); and --hovers points of the left panel, each timed from the
pointer's move to its card showing that point with its image's tile loaded (page clock). Needs
Debian's chromium and chromium-driver. Wall time by nature: run it on a quiet machine.
--screenshot: the last page with a point clicked (its neighbours marked and listed), the training
film at its middle epoch and a point hovered, saved as an optimised PNG.
"""
from __future__ import annotations

import io
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latentlab.cli import Parser, UserError, run  # noqa: E402
from latentlab.ranges import positive_int, repeat_count  # noqa: E402

# the page's screen position of every point of a panel: (x, y) pairs
SCREEN = ("const doc = Bokeh.documents[0], v = Bokeh.index.find_one(doc.get_model_by_name('points_' + arguments[0]));"
          "const box = Bokeh.index.find_one(doc.get_model_by_name('panel_' + arguments[0])).canvas_view.el"
          ".getBoundingClientRect(); return Array.from(v.glyph.sx, (x, i) => [x + box.left, v.glyph.sy[i] + box.top]);")
# waits until the card shows a point other than arguments[0] and its image has loaded; returns the page clock
SHOWN = ("const done = arguments[1], card = document.querySelector('.lx-tooltip'), was = arguments[0];"
         "const poll = () => { if (card.style.display !== 'block' || card.dataset.i === was) return setTimeout(poll, 2);"
         "  const im = new Image(); im.onload = im.onerror = () => done([performance.now(), card.dataset.i]);"
         "  im.src = getComputedStyle(card.querySelector('.lx-test')).backgroundImage.slice(5, -2); }; poll();")


def parse_args(argv=None):
    p = Parser(description=__doc__.split("\n")[0])
    p.add_argument("--folder", required=True, help="a trained output folder, its latents encoded (both splits for 70,000)")
    p.add_argument("--points", type=positive_int, nargs="+", default=[10_000, 70_000], help="--max_points of each page")
    p.add_argument("--vis_type", default="umap", choices=("umap", "tsne", "pca"), help="the right panel's projection")
    p.add_argument("--repeats", type=repeat_count, default=3, help="fresh loads of each page")
    p.add_argument("--hovers", type=positive_int, default=20, help="points hovered on each page")
    p.add_argument("--screenshot", default=None, help="save a screenshot of the last page here")
    return p.parse_args(argv)


def open_browser(height: int = 1000):
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        raise UserError("needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver")
    opts = Options()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size=1500,{height}",
              "--force-device-scale-factor=1", "--enable-unsafe-swiftshader"):  # WebGL in software, as CI has
        opts.add_argument(a)
    opts.binary_location = chromium
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


def wait_idle(driver, timeout: float = 120) -> float:
    """Milliseconds from navigation start to bokeh's 'document idle at N ms' line."""
    from selenium.webdriver.support.ui import WebDriverWait
    lines = []

    def idle(d):
        lines.extend(e["message"] for e in d.get_log("browser"))
        return any("document idle at" in m for m in lines)
    WebDriverWait(driver, timeout, poll_frequency=0.05).until(idle)
    errors = [m for m in lines if "Uncaught" in m or "Error" in m]
    if errors:
        raise UserError(f"the page logged an error: {errors[0][:200]}")
    return float(re.search(r"document idle at (\d+(?:\.\d+)?) ms", next(m for m in lines if "document idle" in m)).group(1))


def build(out: Path, points: int, vis_type: str) -> tuple[float, dict]:
    """One explore_latent_space.py run, as a user types it: (wall seconds, what it printed of its page)."""
    cmd = [sys.executable, str(ROOT / "explore_latent_space.py"), "--output_dir", str(out), "--max_points", str(points),
           "--vis_type", vis_type]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise UserError(f"explore_latent_space.py failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    found = re.search(r"wrote (\S+) \((.*?); its images .*? in (\S+)/; (.*)\)", proc.stdout)
    if found is None:
        raise UserError(f"explore_latent_space.py printed no page line: {proc.stdout[-300:]}")
    page, tiles = Path(found.group(1)), out / found.group(3)
    return wall, {"page": page, "tiles": tiles, "drawn": found.group(4)}


def hover_times(driver, hovers: int, seed: int = 0) -> list[float]:
    """Milliseconds from a pointer move onto each of `hovers` seeded points of the left panel to its
    card with its image loaded."""
    import numpy as np
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    xy = np.array(driver.execute_script(SCREEN, 0))
    times, shown = [], ""
    for i in np.random.default_rng(seed).choice(len(xy), min(hovers, len(xy)), replace=False):
        start = driver.execute_script("return performance.now()")
        a = ActionBuilder(driver, duration=0)
        a.pointer_action.move_to_location(int(round(xy[i][0])), int(round(xy[i][1])))
        a.perform()
        try:
            end, shown = driver.execute_async_script(SHOWN, shown)
        except Exception:  # the point under the pointer is the one already shown (overlapping points)
            continue
        times.append(end - start)
    return times


def measure(args, out: Path, points: int) -> dict:
    import shutil
    shutil.rmtree(build(out, points, args.vis_type)[1]["tiles"])  # projection and neighbours cached; tiles made again next
    first, _ = build(out, points, args.vis_type)  # from the cached projection, the tiles made
    wall, built = build(out, points, args.vis_type)  # the tiles too from the cache
    page, tiles = built["page"], built["tiles"]
    row = {"points": points, "drawn": built["drawn"], "build_s": wall, "tiles_build_s": first,
           "page_mb": page.stat().st_size / 1e6,
           "tiles_mb": sum(p.stat().st_size for p in tiles.iterdir()) / 1e6, "idle_s": [], "hover_ms": []}
    for r in range(args.repeats):
        driver = open_browser()
        try:
            driver.set_script_timeout(3)
            driver.get(page.as_uri())
            row["idle_s"].append(wait_idle(driver) / 1000)
            if r == 0:
                row["hover_ms"] = hover_times(driver, args.hovers)
        finally:
            driver.quit()
    if not row["hover_ms"]:
        raise UserError(f"no hover of {page} showed a card; is the page broken?")
    print(f"{points} points ({row['drawn']}): build {first:.1f} s from the cached projection, {wall:.1f} s with the "
          f"tiles cached too; page {row['page_mb']:.1f} MB + tiles "
          f"{row['tiles_mb']:.1f} MB; interactive after {', '.join(f'{t:.2f}' for t in row['idle_s'])} s (median "
          f"{statistics.median(row['idle_s']):.2f} s); hover to image: median {statistics.median(row['hover_ms']):.0f} ms, "
          f"max {max(row['hover_ms']):.0f} ms over {len(row['hover_ms'])} points", flush=True)
    return row


def main(args) -> dict:
    out = Path(args.folder)  # not --output_dir: the explorer it runs takes that folder's writer lock
    if not (out / "test_data.pth").is_file():
        raise UserError(f"{out} holds no training; run train.py and encode_latent_space.py there first")
    rows = [measure(args, out, n) for n in args.points]
    if args.screenshot:
        shoot(out, Path(args.screenshot))
    return {"rows": rows}


def shoot(out: Path, path: Path) -> None:
    """The last page with a point of the right panel clicked, the film at its middle epoch and a
    point of the left panel hovered, saved as a palette PNG (small)."""
    import numpy as np
    from PIL import Image
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    page = max(out.glob("explorer_latent_size_*.html"), key=lambda p: p.stat().st_mtime)
    driver = open_browser(height=1750)
    try:
        driver.get(page.as_uri())
        wait_idle(driver)
        right, left = (np.array(driver.execute_script(SCREEN, k)) for k in (1, 0))
        for target, click in ((right[np.argmin(np.linalg.norm(right - np.median(right, 0), axis=1))], True),
                              (left[np.argmin(np.linalg.norm(left - np.median(left, 0), axis=1))], False)):
            a = ActionBuilder(driver, duration=0)
            a.pointer_action.move_to_location(int(target[0]), int(target[1]))
            if click:
                a.pointer_action.click()
            a.perform()
            time.sleep(1)
        driver.execute_script("const s = Bokeh.documents[0].get_model_by_name('film_slider');"
                              "if (s) s.value = Math.ceil(s.end / 2);")
        time.sleep(2)  # the tiles load at their first use
        png = driver.get_screenshot_as_png()
    finally:
        driver.quit()
    img = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=128)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} KB)")


if __name__ == "__main__":
    run(main, parse_args())
