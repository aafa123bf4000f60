"""The latent explorer on a digits run: the data its page embeds (fast), then the page itself in a
real headless Chromium driven by selenium (slow): console, points, hover, decoding, selection."""
import base64
import gzip
import io
import json
import re
import shutil
import types

import numpy as np
import pytest
import torch

import classify_latent_space
import encode_latent_space
import explore_latent_space
import viz_kmeans_latent_space
from latentlab.analysis import explorer
from latentlab.store import latent_files
from latentlab.cli import run
from latentlab.analysis.projection import view_2d
from model.autoencoder import model_from_checkpoint


def step(module, out, *flags):
    return module.main(module.parse_args(["--output_dir", str(out), "--quiet", "--device", "cpu", *map(str, flags)]))


@pytest.fixture(scope="module")
def explored(trained, tmp_path_factory):
    """A copy of the tiny digits training, encoded (all 359 test images), with k-means and a k-NN
    classifier run, then explored (PCA on the right: no numba compile). Returns (folder, result)."""
    out = tmp_path_factory.mktemp("explorer") / "output"
    shutil.copytree(trained, out)
    step(encode_latent_space, out, "--num_samples", "all")
    step(viz_kmeans_latent_space, out)
    step(classify_latent_space, out, "--probes", "knn")
    return out, step(explore_latent_space, out, "--vis_type", "pca", "--grid_size", 12)


def page_document(html: str) -> dict:
    """The bokeh document embedded in the page, as JSON."""
    found = re.search(r'<script type="application/json" id="[^"]+">\s*(.*?)\s*</script>', html, re.S)
    return next(iter(json.loads(found.group(1)).values()))


def decoded(value):
    """A value of bokeh's serialisation: ndarrays (base64 bytes) and maps to numpy and dicts."""
    if isinstance(value, dict) and value.get("type") == "ndarray":
        raw = base64.b64decode(value["array"]["data"])
        raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw  # bokeh gzips large arrays
        return np.frombuffer(raw, dtype=value["dtype"]).reshape(value["shape"]).copy()
    if isinstance(value, dict) and value.get("type") == "map":
        return {k: decoded(v) for k, v in value["entries"]}
    return value


def find_model(node, name):
    if isinstance(node, dict):
        if node.get("name") == name or (node.get("attributes") or {}).get("name") == name:
            return node
        node = list(node.values())
    if isinstance(node, list):
        for v in node:
            hit = find_model(v, name)
            if hit is not None:
                return hit
    return None


def page_columns(html: str) -> dict:
    return decoded(find_model(page_document(html), "points")["attributes"]["data"])


def sheet(html: str, name: str) -> np.ndarray:
    """The sprite sheet of CSS property --lx-{name}, decoded: (H, W) grey or (H, W, 3)."""
    from PIL import Image
    url = re.search(rf'<script type="text/plain" data-lx-sheet="{name}" data-mime="image/\w+">([^<]+)</script>', html).group(1)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url))))


def tile(sheet_px: np.ndarray, i: int, cols: int, h: int, w: int) -> np.ndarray:
    r, c = divmod(i, cols)
    return sheet_px[r * h:(r + 1) * h, c * w:(c + 1) * w]


# ---------------------------------------------------------------- what the page embeds (fast)
def test_every_latent_is_a_point_with_its_coordinates(explored):
    out, result = explored
    html = (out / "explorer_latent_size_8.html").read_text()
    cols = page_columns(html)
    z2, meta = np.load(out / "latent_space_size_2.npy"), json.loads((out / "latent_space_size_2.json").read_text())
    z8 = np.load(out / "latent_space_size_8.npy")
    assert result["points"] == result["total"] == len(z2) == 359 and len(cols["x2"]) == 359
    np.testing.assert_array_equal(cols["test_index"], meta["indices"])
    np.testing.assert_allclose(np.stack([cols["x2"], cols["y2"]], 1), z2, rtol=1e-6)
    xy, info = view_2d(z8, "pca", 0, out / "cache")  # the projection of step 4, from its cache
    assert info["cached"]
    np.testing.assert_allclose(np.stack([cols["xp"], cols["yp"]], 1), xy, rtol=1e-6)
    assert cols["cls"] == [meta["class_names"][c] for c in meta["labels"]]
    assert "all 359 encoded test images drawn" in html and "12x12 grid" in html
    assert "<script src" not in html and "cdn.bokeh.org" not in html  # self-contained: opens offline
    # large data: URLs show nothing in Chromium: the sheets travel as text and become blob: URLs
    assert "--lx-test:url(data" not in html and html.count('<script type="text/plain" data-lx-sheet=') == 4


def test_kmeans_and_predictions_are_those_of_steps_5_and_6(explored):
    out, result = explored
    cols = page_columns((out / "explorer_latent_size_8.html").read_text())
    assert result["kmeans"] == [2, 8] and result["predictions"] == {2: "knn", 8: "knn"} and result["notes"] == []
    meta = json.loads((out / "latent_space_size_8.json").read_text())
    step6 = json.loads((out / "classification_latent_size_8.json").read_text())
    assert step6["predictions"]["probe"] == "knn" and step6["predictions"]["protocol"] == "cv"
    names = meta["class_names"]
    for k in (2, 8):  # step 6's cross-validated predictions, as its engine gives them, are the page's
        from latentlab.analysis.probes import probe_scores
        pred = step6["predictions"]["by_latent_size"][str(k)]
        z = np.load(out / f"latent_space_size_{k}.npy")
        assert pred == probe_scores(z, np.array(meta["labels"]), ("knn",))["knn"]["predictions"].tolist()
        shown = [f"{names[p]} {'(right)' if p == y else '(WRONG)'} ({k}-d knn)" for p, y in zip(pred, meta["labels"])]
        assert all(s in c for s, c in zip(shown, cols["prediction"]))
    assert all(re.fullmatch(r"\d+ \(2-d\), \d+ \(8-d\)", c) for c in cols["kmeans"])
    wrong = sum("(WRONG) (8-d" in p for p in cols["prediction"])
    assert wrong == round((1 - step6["models"]["8"]["latent"]["knn"]["accuracy"]) * 359)
    wrong_code = cols[f"code_{list(result['colorings']).index('knn classifier right / wrong, 8-d model')}"]
    assert wrong_code.sum() == wrong and set(wrong_code.tolist()) <= {0, 1}
    np.testing.assert_array_equal(cols["code_0"], meta["labels"])  # "class" first, codes are labels


def test_the_clusters_shown_are_those_step_5_wrote(explored, tmp_path, capsys):
    """The page shows the clusters step 5's JSON holds, whatever they are: nothing is re-run. A
    JSON of other latents is a note; one without a cluster of each latent is refused in one line."""
    src, _ = explored
    out = tmp_path / "out"
    shutil.copytree(src, out)
    path = out / "kmeans_latent_space_latent_size_8.json"
    meta = json.loads(path.read_text())
    for k in ("2", "8"):  # the copy's latents, not those of the folder copied
        meta["models"][k]["latents"] = str(out / f"latent_space_size_{k}.npy")
    written = {"2": [i % 3 for i in range(359)], "8": [(7 * i) % 5 for i in range(359)]}
    path.write_text(json.dumps({**meta, "clusters": {"by_latent_size": written}}))
    result = step(explore_latent_space, out, "--vis_type", "pca", "--grid_size", 4)
    page = (out / "explorer_latent_size_8.html").read_bytes()
    cols, names = page_columns(page.decode()), list(result["colorings"])
    for k in ("2", "8"):
        np.testing.assert_array_equal(cols[f"code_{names.index(f'k-means cluster, {k}-d model')}"], written[k])
    assert cols["kmeans"][10] == "1 (2-d), 0 (8-d)" and cols["kmeans"][11] == "2 (2-d), 2 (8-d)"
    assert not any("k-means" in n for n in result["notes"])
    for broken in ({}, {"8": written["8"][:-1]}, {"8": [-1] + written["8"][1:]}, {"8": [0.5] * 359}, {"8": "x"}):
        path.write_text(json.dumps({**meta, "clusters": {"by_latent_size": {"2": written["2"], **broken}}}))
        err = refused(explore_latent_space, ["--output_dir", str(out), "--vis_type", "pca", "--device", "cpu"], capsys)
        assert f"{path} is malformed" in err and "re-run viz_kmeans_latent_space.py" in err
        assert (out / "explorer_latent_size_8.html").read_bytes() == page  # the page written stays
    meta["models"]["2"]["latents_sha256"] = "0" * 64  # the 2-d latents were encoded again after step 5
    meta["models"]["8"]["latents"] = str(src / "latent_space_size_8.npy")  # and these are another folder's
    path.write_text(json.dumps({**meta, "clusters": {"by_latent_size": written}}))
    notes = step(explore_latent_space, out, "--vis_type", "pca", "--grid_size", 4)["notes"]
    assert [n for n in notes if "k-means" in n] == [f"{path} is not of {out / f'latent_space_size_{k}.npy'}: no k-means "
                                                    f"shown for it" for k in (2, 8)]


def test_sprite_tiles_are_the_test_images_and_reconstructions(explored):
    out, _ = explored
    html = (out / "explorer_latent_size_8.html").read_text()
    cols = page_columns(html)
    data = torch.load(out / "test_data.pth", weights_only=True)
    test = sheet(html, "test")
    side = int(np.ceil(np.sqrt(359)))
    assert test.shape == (side * 8, side * 8)
    for i in (0, 57, 358):  # exact: the test images are stored lossless
        np.testing.assert_array_equal(tile(test, i, side, 8, 8), data["images"][cols["test_index"][i], 0].numpy())
    model = model_from_checkpoint(torch.load(out / "model_latent_size_8.pth", weights_only=True))
    with torch.no_grad():
        rec = model.decode(torch.from_numpy(np.load(out / "latent_space_size_8.npy")[:3]))[:, 0].numpy() * 255
    rec_sheet = sheet(html, "recN").astype(float)
    for i in range(3):  # JPEG: close, not exact
        assert np.abs(tile(rec_sheet, i, side, 8, 8) - rec[i]).mean() < 8
    assert sheet(html, "grid").shape == (12 * 8, 12 * 8)  # 144 decodings, 12 a row


def test_max_points_draws_a_seeded_sample_and_says_so(explored, tmp_path):
    src, _ = explored
    out = tmp_path / "out"
    shutil.copytree(src, out)
    first = step(explore_latent_space, out, "--vis_type", "pca", "--max_points", 100, "--grid_size", 4)
    html = (out / "explorer_latent_size_8.html").read_text()
    cols = page_columns(html)
    assert first["points"] == 100 and "100 of 359 encoded test images drawn" in html
    assert len(set(cols["test_index"].tolist())) == 100
    np.testing.assert_array_equal(explorer.sample_points(359, 100, 0), explorer.sample_points(359, 100, 0))
    assert not np.array_equal(explorer.sample_points(359, 100, 0), explorer.sample_points(359, 100, 1))


def refused(module, argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        run(module.main, module.parse_args(argv))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_bad_input_one_line(explored, tmp_path, capsys):
    src, _ = explored
    out = tmp_path / "out"
    shutil.copytree(src, out)
    latents = latent_files.load_latents(out / "latent_space_size_8.npy")
    latent_files.save_latents(out / "latent_space_size_8.npy", latents.z + 1.0, latents.meta)  # not what this model encodes
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".latentlab.lock"}
    err = refused(explore_latent_space, ["--output_dir", str(out), "--vis_type", "pca"], capsys)
    assert "was not encoded by" in err and "encode_latent_space.py" in err
    assert before == {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".latentlab.lock"}
    (out / "latent_space_size_2.json").unlink()
    assert "latent_space_size_2.json is missing" in refused(explore_latent_space, ["--output_dir", str(out)], capsys)
    few = tmp_path / "few"
    shutil.copytree(src, few)
    step(encode_latent_space, few, "--num_samples", 3)
    assert "needs at least 5 latents, there are 3" in refused(
        explore_latent_space, ["--output_dir", str(few), "--vis_type", "pca"], capsys)
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert "cannot write to" in refused(explore_latent_space, ["--output_dir", str(blocked)], capsys)


# ---------------------------------------------------------------- the page in headless Chromium (slow)
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver "
                                   "(apt-get install chromium chromium-driver); .ci/run installs them")
# Finds an element by CSS selector anywhere in the page, inside bokeh's shadow roots too.
DEEP_QUERY = """
const deep = (sel, root) => { const hit = root.querySelector(sel); if (hit) return hit;
  for (const el of root.querySelectorAll('*')) if (el.shadowRoot) { const f = deep(sel, el.shadowRoot); if (f) return f; }
  return null; };
"""
# Screen positions (CSS pixels of the viewport) of every point of panel k, and of its frame.
SCREEN = """
const doc = Bokeh.documents[0], k = arguments[0];
const view = Bokeh.index.find_one(doc.get_model_by_name('points_' + k));
const plot = Bokeh.index.find_one(doc.get_model_by_name('panel_' + k));
const box = plot.canvas_view.el.getBoundingClientRect(), f = plot.frame;
return {x: Array.from(view.glyph.sx, v => v + box.left), y: Array.from(view.glyph.sy, v => v + box.top),
        frame: [f.bbox.left + box.left, f.bbox.top + box.top, f.bbox.right + box.left, f.bbox.bottom + box.top]};
"""


@pytest.fixture(scope="module")
def browser(explored):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    if not (CHROMIUM and DRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver")
    opts = Options()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1500,1100",
              "--force-device-scale-factor=1"):
        opts.add_argument(a)
    opts.binary_location = CHROMIUM
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    out, _ = explored
    driver.get((out / "explorer_latent_size_8.html").as_uri())
    driver.execute_async_script("const done = arguments[0]; const t = setInterval(() => { "
                                "if (window.Bokeh && Bokeh.documents.length && Bokeh.index.roots.length) "
                                "{ clearInterval(t); done(); } }, 50);")
    yield driver, page_columns((out / "explorer_latent_size_8.html").read_text())
    driver.quit()


def move(driver, x, y):
    from selenium.webdriver.common.action_chains import ActionChains
    ActionChains(driver).move_by_offset(0, 0).perform()  # no-op that makes sure the pointer exists
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    a = ActionBuilder(driver)
    a.pointer_action.move_to_location(int(round(x)), int(round(y)))
    a.perform()


def deep(driver, selector):
    return driver.execute_script(DEEP_QUERY + "return deep(arguments[0], document);", selector)


def png_pixels(png: bytes) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)


@pytest.mark.slow
@needs_browser
def test_page_loads_without_errors_and_draws_every_point(browser):
    driver, cols = browser
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []
    for k in (0, 1):
        pos = driver.execute_script(SCREEN, k)
        assert len(pos["x"]) == len(cols["x2"]) == 359 and np.isfinite(pos["x"] + pos["y"]).all()
        left, top, right, bottom = pos["frame"]
        assert all(left <= x <= right and top <= y <= bottom for x, y in zip(pos["x"], pos["y"]))


@pytest.mark.slow
@needs_browser
def test_hover_shows_that_test_image(browser, explored):
    driver, cols = browser
    pos = driver.execute_script(SCREEN, 0)
    xy = np.stack([pos["x"], pos["y"]], 1)
    gap = np.sort(np.linalg.norm(xy[:, None] - xy[None], axis=-1), axis=1)[:, 1]
    i = int(gap.argmax())  # the most isolated point: its tooltip is its own
    move(driver, *xy[i])
    tip = deep(driver, ".lx-tooltip")
    assert tip is not None and tip.is_displayed()
    assert deep(driver, ".lx-index").text == str(cols["test_index"][i])
    shown = png_pixels(deep(driver, ".lx-test").screenshot_as_png)  # the 8x8 image magnified 8 times
    data = torch.load(explored[0] / "test_data.pth", weights_only=True)
    drawn = data["images"][cols["test_index"], 0].reshape(len(cols["test_index"]), -1).numpy().astype(float)
    centres = shown[4::8, 4::8][:8, :8].ravel()  # one screen pixel inside each image pixel
    # bokeh's tooltip is slightly translucent over white, so compare by correlation: the image
    # shown matches that test index's, and no other drawn image as well
    corr = np.array([np.corrcoef(img, centres)[0, 1] if img.std() > 0 else 0 for img in drawn])
    assert corr[i] > 0.99 and corr.argmax() == i or np.array_equal(drawn[corr.argmax()], drawn[i])


@pytest.mark.slow
@needs_browser
def test_moving_over_empty_space_changes_the_decoding(browser):
    driver, _ = browser
    pos = driver.execute_script(SCREEN, 0)
    left, top, right, bottom = pos["frame"]
    xy = np.stack([pos["x"], pos["y"]], 1)
    spots = [(x, y) for x in np.linspace(left + 5, right - 5, 25) for y in np.linspace(top + 5, bottom - 5, 25)
             if np.linalg.norm(xy - (x, y), axis=1).min() > 15]
    a, b = spots[0], spots[-1]  # empty spots far apart
    move(driver, *a)
    first = (deep(driver, ".lx-decoded").get_attribute("data-cell"), deep(driver, ".lx-decoded").screenshot_as_png)
    move(driver, *b)
    second = (deep(driver, ".lx-decoded").get_attribute("data-cell"), deep(driver, ".lx-decoded").screenshot_as_png)
    assert first[0] is not None and first[0] != second[0]
    assert np.abs(png_pixels(first[1]) - png_pixels(second[1])).max() > 0
    assert "of 12x12" in deep(driver, ".lx-where").text


@pytest.mark.slow
@needs_browser
def test_box_selection_lights_the_same_points_in_the_other_panel(browser, tmp_path):
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    driver, cols = browser
    pos = driver.execute_script(SCREEN, 0)
    left, top, right, bottom = pos["frame"]
    x0, y0, x1, y1 = left + 0.2 * (right - left), top + 0.2 * (bottom - top), left + 0.6 * (right - left), top + 0.7 * (bottom - top)
    a = ActionBuilder(driver)
    a.pointer_action.move_to_location(int(x0), int(y0)).pointer_down()
    a.pointer_action.move_to_location(int((x0 + x1) / 2), int((y0 + y1) / 2)).move_to_location(int(x1), int(y1)).pointer_up()
    a.perform()
    x, y = np.array(pos["x"]), np.array(pos["y"])
    inside = set(np.flatnonzero((x >= int(x0)) & (x <= int(x1)) & (y >= int(y0)) & (y <= int(y1))).tolist())
    ambiguous = set(np.flatnonzero((np.abs(x - x0) < 2) | (np.abs(x - x1) < 2) | (np.abs(y - y0) < 2) | (np.abs(y - y1) < 2)).tolist())
    chosen = driver.execute_script("const doc = Bokeh.documents[0]; return ["
                                   "doc.get_model_by_name('points_0').data_source.selected.indices,"
                                   "doc.get_model_by_name('points_1').data_source.selected.indices];")
    assert len(inside) > 5 and set(chosen[1]) - ambiguous == inside - ambiguous
    assert chosen[0] == chosen[1]  # the other panel draws the same selection
    assert f"{len(chosen[1])} selected" in deep(driver, "[title^='test ']").find_element("xpath", "../..").text
    driver.execute_script("window.__csv = null; HTMLAnchorElement.prototype.click = function () { window.__csv = this.href; };")
    deep(driver, ".bk-btn").click()
    csv = driver.execute_script("return decodeURIComponent(window.__csv.split(',').slice(1).join(','));").splitlines()
    assert csv[0] == "test_index,class,latent_1,latent_2,projection_1,projection_2"
    assert sorted(int(r.split(",")[0]) for r in csv[1:]) == sorted(cols["test_index"][chosen[1]].tolist())
    shot = png_pixels(driver.get_screenshot_as_png())
    assert shot.std() > 10 and len(np.unique(shot)) > 20  # not blank


@pytest.mark.slow
@needs_browser
def test_colour_by_swaps_colours_and_legend(browser):
    from selenium.webdriver.support.ui import WebDriverWait
    driver, cols = browser
    driver.execute_script("const select = Bokeh.documents[0].get_model_by_name('color_by');"
                          "select.value = select.options[1];")
    legend = "return Bokeh.documents[0].get_model_by_name('legend').text;"
    WebDriverWait(driver, 10).until(lambda d: d.execute_script(legend).startswith("<b>k-means cluster, 2-d model</b>"))
    assert "cluster 9" in driver.execute_script(legend)
    code = driver.execute_script("return Array.from(Bokeh.documents[0].get_model_by_name('points').data.code);")
    np.testing.assert_array_equal(code, cols["code_1"])
    assert not np.array_equal(cols["code_1"], cols["code_0"])


def test_a_step_6_json_without_predictions_gives_a_note_not_a_crash(tmp_path):
    from latentlab.analysis.explorer import step6_predictions
    path = tmp_path / "classification_latent_size_8.json"
    lat = types.SimpleNamespace(latent_size=8, z=np.zeros((3, 8)), path=tmp_path / "latent_space_size_8.npy",
                                class_names=["a", "b"])
    row = {"8": {"samples": 3, "latents": str(lat.path)}}
    for predictions in (None, {"probe": "knn", "by_latent_size": {"8": [0, 1]}},  # none; of fewer latents
                        {"probe": "knn", "by_latent_size": {"8": [0, 1, 2]}}):  # a class the latents do not name
        path.write_text(json.dumps({"models": row, **({"predictions": predictions} if predictions else {})}))
        preds, notes = step6_predictions(tmp_path, [lat])
        assert preds == {} and "holds no predictions" in notes[0] and "classify_latent_space.py" in notes[0]
    path.write_text(json.dumps({"models": row, "predictions": {"probe": "knn5", "by_latent_size": {"8": [1, 0, 1]}}}))
    preds, notes = step6_predictions(tmp_path, [lat])
    assert notes == [] and preds[8][1] == "knn5" and preds[8][0].tolist() == [1, 0, 1]
