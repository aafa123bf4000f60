"""Size and load time of an explorer page (explore_latent_space.py) in headless Chromium.

    python explore_latent_space.py --output_dir output/fm
    python benchmarks/bench_explorer.py --page output/fm/explorer_latent_size_16.html --screenshot docs/explorer.png

Opens the page --repeats times, each in a fresh browser, and prints the file size and, per load,
the time from navigation start until bokeh reports its document idle (every view built and drawn,
tools live: interactive), as bokeh's own log line gives it. --screenshot then hovers a point of the
left panel (its tooltip and the decoding under the cursor) and saves the window as an optimised PNG.
Needs Debian's chromium and chromium-driver. Wall time by nature: run it on a quiet machine.
"""
from __future__ import annotations

import io
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latentlab.cli import Parser, UserError, run  # noqa: E402
from latentlab.ranges import repeat_count  # noqa: E402


def parse_args(argv=None):
    p = Parser(description=__doc__.split("\n")[0])
    p.add_argument("--page", required=True, help="an explorer_latent_size_{N}.html")
    p.add_argument("--repeats", type=repeat_count, default=3, help="fresh loads of the page")
    p.add_argument("--screenshot", default=None, help="save a screenshot of the page, a point hovered, here")
    return p.parse_args(argv)


def open_browser():
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        raise UserError("needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver")
    opts = Options()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1500,1000", "--force-device-scale-factor=1"):
        opts.add_argument(a)
    opts.binary_location = chromium
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


def wait_idle(driver, timeout: float = 60) -> float:
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


def main(args) -> dict:
    page = Path(args.page).resolve()
    if not page.is_file():
        raise UserError(f"{page} does not exist; run explore_latent_space.py first")
    times = []
    for _ in range(args.repeats):
        driver = open_browser()
        try:
            driver.get(page.as_uri())
            times.append(wait_idle(driver))
        finally:
            driver.quit()
    print(f"{page.name}: {page.stat().st_size / 1e6:.1f} MB; load to interactive (bokeh document idle): "
          f"{', '.join(f'{t / 1000:.2f}' for t in times)} s, median {statistics.median(times) / 1000:.2f} s")
    if args.screenshot:
        shoot(page, Path(args.screenshot))
    return {"bytes": page.stat().st_size, "idle_ms": times}


def shoot(page: Path, path: Path) -> None:
    """The window with a point of the left panel hovered, saved as a palette PNG (small)."""
    import numpy as np
    from PIL import Image
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    driver = open_browser()
    try:
        driver.get(page.as_uri())
        wait_idle(driver)
        xy = np.array(driver.execute_script(
            "const doc = Bokeh.documents[0], v = Bokeh.index.find_one(doc.get_model_by_name('points_0'));"
            "const box = Bokeh.index.find_one(doc.get_model_by_name('panel_0')).canvas_view.el.getBoundingClientRect();"
            "return Array.from(v.glyph.sx, (x, i) => [x + box.left, v.glyph.sy[i] + box.top]);"))
        target = xy[np.argmin(np.linalg.norm(xy - np.median(xy, 0), axis=1))]  # a point in the thick of it
        a = ActionBuilder(driver)
        a.pointer_action.move_to_location(int(target[0]), int(target[1]))
        a.perform()
        time.sleep(2)  # the browser decodes the sprite sheets at their first use
        png = driver.get_screenshot_as_png()
    finally:
        driver.quit()
    img = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=128)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} KB)")


if __name__ == "__main__":
    run(main, parse_args())
