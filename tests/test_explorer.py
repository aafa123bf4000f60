"""The latent explorer on a digits run: the data its page embeds and the tiles beside it (fast),
then the page itself in a real headless Chromium driven by selenium (slow): console, points,
hover, neighbours, search, the training film, colours, selection."""
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
from sklearn.neighbors import NearestNeighbors

from conftest import run_main, run_refused, written
from latentlab.analysis import explorer
from latentlab.analysis.projection import view_2d
from latentlab.store import latent_files
from model.autoencoder import model_from_checkpoint


def step(module, out, *flags):
    return run_main(module, "--output_dir", out, "--quiet", "--device", "cpu", *flags)


@pytest.fixture(scope="module")
def explored(trained, tmp_path_factory):
    """A copy of the tiny digits training, encoded (all 359 test images), with k-means and a k-NN
    classifier run, then explored (PCA on the right: no numba compile). Returns (folder, result)."""
    out = tmp_path_factory.mktemp("explorer") / "output"
    shutil.copytree(trained, out)
    step("encode_latent_space", out, "--num_samples", "all")
    step("viz_kmeans_latent_space", out)
    step("classify_latent_space", out, "--probes", "knn")
    return out, step("explore_latent_space", out, "--vis_type", "pca", "--grid_size", 12)


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


def page_config(html: str) -> dict:
    return json.loads(re.search(r"window\.LX_CONFIG = (\{.*?\});\n", html).group(1))


def colouring(out, result, name) -> np.ndarray:
    """The per-point column behind the colouring called name."""
    return page_columns((out / "explorer_latent_size_8.html").read_text())[result["colorings"][name]]


def tile_image(folder, name: str) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(folder / name))


def cell(sheet_px: np.ndarray, i: int, h: int, w: int) -> np.ndarray:
    j = i % (explorer_page.TILE_SIDE ** 2)
    r, c = divmod(j, explorer_page.TILE_SIDE)
    return sheet_px[r * h:(r + 1) * h, c * w:(c + 1) * w]


from latentlab.analysis import explorer_page  # noqa: E402


# ---------------------------------------------------------------- what the page holds (fast)
def test_every_latent_is_a_point_with_its_coordinates(explored):
    out, result = explored
    html = (out / "explorer_latent_size_8.html").read_text()
    cols = page_columns(html)
    z2, meta = np.load(out / "latent_space_size_2.npy"), json.loads((out / "latent_space_size_2.json").read_text())
    z8 = np.load(out / "latent_space_size_8.npy")
    assert result["points"] == result["total"] == len(z2) == 359 and len(cols["x2"]) == 359
    assert result["splits"] == ["test"] and set(cols["split"].tolist()) == {0}
    np.testing.assert_array_equal(cols["item"], meta["indices"])
    np.testing.assert_array_equal(cols["label"], meta["labels"])
    np.testing.assert_allclose(np.stack([cols["x2"], cols["y2"]], 1), z2, rtol=1e-6)
    xy, info = view_2d(z8, "pca", 0, out / "cache")  # the projection of step 4, from its cache
    assert info["cached"]
    np.testing.assert_allclose(np.stack([cols["xp"], cols["yp"]], 1), xy, rtol=1e-6)
    assert "all 359 encoded test images drawn" in html and "12x12 grid" in html
    assert "<script src" not in html and "cdn.bokeh.org" not in html  # opens offline
    assert page_config(html)["classes"] == meta["class_names"] and page_config(html)["tiles"] == result["tiles"]
    # the images sit in the tile folder beside the page, the grid's sheet alone inside it
    assert re.findall(r'<script type="text/plain" data-lx-file="([^"]+)">', html) == ["grid_0.jpg"]
    tiles = sorted(p.name for p in (out / result["tiles"]).iterdir())
    assert tiles == sorted(["errors.npy", *(f"{s}_{t}.{'png' if s == 'test' else 'jpg'}" for s in ("test", "rec0", "rec1")
                                             for t in (0, 1))])  # and each image's reconstruction errors


def test_kmeans_and_predictions_are_those_of_steps_5_and_6(explored):
    out, result = explored
    cols = page_columns((out / "explorer_latent_size_8.html").read_text())
    assert result["kmeans"] == [2, 8] and result["predictions"] == {2: "knn", 8: "knn"} and result["notes"] == []
    meta = json.loads((out / "latent_space_size_8.json").read_text())
    step5 = json.loads((out / "kmeans_latent_space_latent_size_8.json").read_text())
    step6 = json.loads((out / "classification_latent_size_8.json").read_text())
    assert step6["predictions"]["probe"] == "knn" and step6["predictions"]["protocol"] == "cv"
    for m, k in enumerate((2, 8)):
        from latentlab.analysis.probes import probe_scores
        pred = step6["predictions"]["by_latent_size"][str(k)]
        z = np.load(out / f"latent_space_size_{k}.npy")
        assert pred == probe_scores(z, np.array(meta["labels"]), ("knn",))["knn"]["predictions"].tolist()
        np.testing.assert_array_equal(cols[f"pred_{m}"], pred)
        np.testing.assert_array_equal(cols[f"cluster_{m}"], step5["clusters"]["by_latent_size"][str(k)])
    wrong = colouring(out, result, "knn classifier right / wrong, 8-d model")
    assert wrong.sum() == round((1 - step6["models"]["8"]["latent"]["knn"]["accuracy"]) * 359)


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
    wrote = {"2": [i % 3 for i in range(359)], "8": [(7 * i) % 5 for i in range(359)]}
    path.write_text(json.dumps({**meta, "clusters": {"by_latent_size": wrote}}))
    result = step("explore_latent_space", out, "--vis_type", "pca", "--grid_size", 4)
    cols = page_columns((out / "explorer_latent_size_8.html").read_text())
    for m, k in enumerate(("2", "8")):
        np.testing.assert_array_equal(cols[f"cluster_{m}"], wrote[k])
    assert not any("k-means" in n for n in result["notes"])
    before = written(out)
    for broken in ({}, {"8": wrote["8"][:-1]}, {"8": [-1] + wrote["8"][1:]}, {"8": [0.5] * 359}, {"8": "x"}):
        path.write_text(json.dumps({**meta, "clusters": {"by_latent_size": {"2": wrote["2"], **broken}}}))
        err = run_refused("explore_latent_space", ["--output_dir", out, "--vis_type", "pca", "--device", "cpu"], capsys)
        assert f"{path} is malformed" in err and "re-run viz_kmeans_latent_space.py" in err
        assert {k: v for k, v in written(out).items() if k != path.name} == {
            k: v for k, v in before.items() if k != path.name}  # the page and its tiles stay
    meta["models"]["2"]["latents_sha256"] = "0" * 64  # the 2-d latents were encoded again after step 5
    meta["models"]["8"]["latents"] = str(src / "latent_space_size_8.npy")  # and these are another folder's
    path.write_text(json.dumps({**meta, "clusters": {"by_latent_size": wrote}}))
    notes = step("explore_latent_space", out, "--vis_type", "pca", "--grid_size", 4)["notes"]
    assert [n for n in notes if "k-means" in n] == [f"{path} is not of {out / f'latent_space_size_{k}.npy'}: no k-means "
                                                    f"shown for it" for k in (2, 8)]


def test_tiles_are_the_images_and_reconstructions_and_errors_their_mse(explored):
    out, result = explored
    cols = page_columns((out / "explorer_latent_size_8.html").read_text())
    folder = out / result["tiles"]
    data = torch.load(out / "test_data.pth", weights_only=True)
    test = [tile_image(folder, f"test_{t}.png") for t in (0, 1)]
    assert test[0].shape == (16 * 8, 16 * 8)
    for i in (0, 57, 255, 256, 358):  # exact: the images are stored lossless
        np.testing.assert_array_equal(cell(test[i // 256], i, 8, 8), data["images"][cols["item"][i], 0].numpy())
    model = model_from_checkpoint(torch.load(out / "model_latent_size_8.pth", weights_only=True))
    with torch.no_grad():
        rec = model.decode(torch.from_numpy(np.load(out / "latent_space_size_8.npy")[:3]))
    sheet = tile_image(folder, "rec1_0.jpg").astype(float)
    for i in range(3):  # JPEG: close, not exact
        assert np.abs(cell(sheet, i, 8, 8) - rec[i, 0].numpy() * 255).mean() < 8
    mse = (rec - data["images"][cols["item"][:3]].float() / 255).pow(2).flatten(1).mean(1).numpy()
    np.testing.assert_allclose(cols["err_1"][:3], mse, rtol=1e-4)


def test_neighbours_are_those_of_sklearn_and_kept_their_share_in_the_picture(explored):
    out, _ = explored
    cols = page_columns((out / "explorer_latent_size_8.html").read_text())
    z8 = np.load(out / "latent_space_size_8.npy")
    dist, idx = NearestNeighbors(n_neighbors=9).fit(z8).kneighbors(z8)
    got = np.stack([cols[f"nb_{j}"] for j in range(8)], 1)
    same = (got == idx[:, 1:]).all(1)
    assert same.mean() > 0.99  # ties at equal distance may order differently
    np.testing.assert_allclose(np.stack([cols[f"nd_{j}"] for j in range(8)], 1), dist[:, 1:], rtol=1e-4, atol=1e-5)
    xy = np.stack([cols["xp"], cols["yp"]], 1)
    pic = NearestNeighbors(n_neighbors=9).fit(xy).kneighbors(xy, return_distance=False)[:, 1:]
    share = np.array([len(set(a) & set(b)) for a, b in zip(idx[:, 1:], pic)]) / 8
    assert np.abs(cols["kept"] - share).max() <= 1 / 8 and np.mean(cols["kept"] == share) > 0.98


def test_max_points_draws_a_seeded_sample_and_says_so(explored, tmp_path):
    src, _ = explored
    out = tmp_path / "out"
    shutil.copytree(src, out)
    first = step("explore_latent_space", out, "--vis_type", "pca", "--max_points", 100, "--grid_size", 4)
    html = (out / "explorer_latent_size_8.html").read_text()
    assert first["points"] == 100 and "100 of 359 encoded test images drawn" in html
    assert len(set(page_columns(html)["item"].tolist())) == 100
    np.testing.assert_array_equal(explorer.sample_points(359, 100, 0), explorer.sample_points(359, 100, 0))
    assert not np.array_equal(explorer.sample_points(359, 100, 0), explorer.sample_points(359, 100, 1))


def test_both_splits_drawn_once_the_training_split_is_encoded(explored, tmp_path):
    src, _ = explored
    out = tmp_path / "out"
    shutil.copytree(src, out)
    step("encode_latent_space", out, "--num_samples", "all")  # both splits encoded by this folder's models
    step("encode_latent_space", out, "--split", "train")
    result = step("explore_latent_space", out, "--vis_type", "pca", "--grid_size", 4)
    train = json.loads((out / "latent_space_size_8_train.json").read_text())
    cols = page_columns((out / "explorer_latent_size_8.html").read_text())
    assert result["splits"] == ["test", "train"] and result["points"] == 359 + len(train["indices"])
    np.testing.assert_array_equal(cols["item"][cols["split"] == 1], train["indices"])
    np.testing.assert_array_equal(cols["label"][cols["split"] == 1], train["labels"])
    assert (cols["cluster_1"][cols["split"] == 1] == -1).all()  # step 5 clustered the test latents alone
    assert find_model(page_document((out / "explorer_latent_size_8.html").read_text()), "split") is not None


def test_self_contained_puts_the_tiles_in_the_page_and_removes_the_folder(explored, tmp_path):
    src, first = explored
    out = tmp_path / "out"
    shutil.copytree(src, out)
    (out / f".{first['tiles']}.x1y2z3.tmpdir").mkdir()  # a build killed midway
    result = step("explore_latent_space", out, "--vis_type", "pca", "--grid_size", 12, "--self_contained")
    html = (out / "explorer_latent_size_8.html").read_text()
    assert result["tiles"] is None and page_config(html)["tiles"] is None
    assert sorted(re.findall(r'<script type="text/plain" data-lx-file="([^"]+)">', html)) == sorted(
        ["grid_0.jpg", "rec0_0.jpg", "rec0_1.jpg", "rec1_0.jpg", "rec1_1.jpg", "test_0.png", "test_1.png"])
    assert not list(out.glob("*tiles*")) and not list(out.glob(".*tmpdir"))
    again = step("explore_latent_space", out, "--vis_type", "pca", "--grid_size", 12)
    assert again["tiles"] == first["tiles"]  # named by their content: the same images, the same folder


def test_color_csv_colours_by_its_columns_and_a_malformed_one_is_one_line(explored, tmp_path, capsys):
    src, _ = explored
    out = tmp_path / "out"
    shutil.copytree(src, out)
    items = json.loads((out / "latent_space_size_8.json").read_text())["indices"]
    good = tmp_path / "scores.csv"
    good.write_text("index,score,other\n" + "".join(f"{i},{i * 0.5},{-i}\n" for i in items[:300]))
    result = step("explore_latent_space", out, "--vis_type", "pca", "--grid_size", 4, "--color_csv", good)
    assert {"score (--color_csv)", "other (--color_csv)"} <= set(result["colorings"])
    score = colouring(out, result, "score (--color_csv)")
    cols = page_columns((out / "explorer_latent_size_8.html").read_text())
    shown = np.isin(cols["item"], items[:300])
    np.testing.assert_allclose(score[shown], cols["item"][shown] * 0.5)
    assert np.isnan(score[~shown]).all()
    before = written(out)
    for text, said in (("score\n1\n", "no index column"), ("index,score\n1,abc\n", "line 2"),
                       ("index,score\n100000,1\n", "none of the 359 points"), ("", "no index column")):
        good.write_text(text)
        err = run_refused("explore_latent_space", ["--output_dir", out, "--vis_type", "pca", "--color_csv", good], capsys)
        assert said in err and "--color_csv" in err
        assert written(out) == before
    assert "--color_csv" in run_refused("explore_latent_space", ["--output_dir", out, "--color_csv", tmp_path / "none.csv"],
                                        capsys)


@pytest.fixture(scope="module")
def folder_page(tmp_path_factory):
    """A folder of 24 photos in two classes, odd file names in sub-folders, trained, both splits
    encoded and explored. Returns (the photos' folder, the page)."""
    from PIL import Image
    root, rng = tmp_path_factory.mktemp("folder"), np.random.default_rng(0)
    for c in ("cats", "dogs"):
        (root / "photos" / c / "sub dir").mkdir(parents=True)
        for k in range(12):
            Image.fromarray(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)).save(
                root / "photos" / c / ("sub dir" if k % 2 else "") / f"{c} #{k}.png")
    out = root / "out"
    run_main("train", "--latent_size", 3, "--dataset", f"folder:{root / 'photos'}", "--image_size", 8,
             "--num_epochs", 1, "--output_dir", out, "--data_dir", root / "cache", "--quiet", "--snapshot_every", 0)
    step("encode_latent_space", out, "--num_samples", "all")
    step("encode_latent_space", out, "--split", "train")
    step("explore_latent_space", out, "--vis_type", "pca", "--grid_size", 4)
    return root / "photos", out / "explorer_latent_size_3.html"


def test_a_folder_page_carries_each_image_file_name(folder_page):
    photos, page = folder_page
    html = page.read_text()
    conf, cols = page_config(html), page_columns(html)
    test = json.loads((page.parent / "latent_space_size_3.json").read_text())
    assert len(conf["files"]) == 24 and conf["files"][:len(test["files"])] == test["files"]
    for name, label, in zip(conf["files"], cols["label"]):
        assert name.startswith(conf["classes"][label] + "/") and (photos / name).is_file()


def test_bad_input_one_line(explored, tmp_path, capsys):
    src, _ = explored
    out = tmp_path / "out"
    shutil.copytree(src, out)
    latents = latent_files.load_latents(out / "latent_space_size_8.npy")
    latent_files.save_latents(out / "latent_space_size_8.npy", latents.z + 1.0, latents.meta)  # not what this model encodes
    before = written(out)
    err = run_refused("explore_latent_space", ["--output_dir", out, "--vis_type", "pca"], capsys)
    assert "was not encoded by" in err and "encode_latent_space.py" in err
    assert written(out) == before
    (out / "latent_space_size_2.json").unlink()
    assert "latent_space_size_2.json is missing" in run_refused("explore_latent_space", ["--output_dir", out], capsys)
    few = tmp_path / "few"
    shutil.copytree(src, few)
    step("encode_latent_space", few, "--num_samples", 3)
    assert "needs at least 5 latents, there are 3" in run_refused(
        "explore_latent_space", ["--output_dir", few, "--vis_type", "pca"], capsys)
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert "cannot write to" in run_refused("explore_latent_space", ["--output_dir", blocked], capsys)


# ---------------------------------------------------------------- the page in headless Chromium (slow)
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver "
                                   "(apt-get install chromium chromium-driver); .ci/run installs them")
# Finds an element by CSS selector anywhere in the page, inside bokeh's shadow roots too.
DEEP_QUERY = """
const deep = (sel, root) => { const hit = root.querySelector(sel); if (hit) return hit;
  for (const el of root.querySelectorAll('*')) if (el.shadowRoot) { const f = deep(sel, el.shadowRoot); if (f) return f; }
  return null; };
const deepAll = (sel, root) => [...root.querySelectorAll(sel), ...[...root.querySelectorAll('*')]
  .filter(el => el.shadowRoot).flatMap(el => deepAll(sel, el.shadowRoot))];
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
MODEL = "Bokeh.documents[0].get_model_by_name(arguments[0])"


def open_page(driver, path):
    driver.get(path.as_uri())
    driver.execute_async_script("const done = arguments[0]; const t = setInterval(() => { "
                                "if (window.Bokeh && Bokeh.documents.length && Bokeh.index.roots.length && window.LX) "
                                "{ clearInterval(t); done(); } }, 50);")


@pytest.fixture(scope="module")
def browser(explored, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    if not (CHROMIUM and DRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver")
    src, _ = explored
    out = tmp_path_factory.mktemp("browsed") / "output"  # with a --color_csv column
    shutil.copytree(src, out)
    items = json.loads((out / "latent_space_size_8.json").read_text())["indices"]
    (out.parent / "scores.csv").write_text("index,score\n" + "".join(f"{i},{i % 7}\n" for i in items))
    result = step("explore_latent_space", out, "--vis_type", "pca", "--grid_size", 12,
                  "--color_csv", out.parent / "scores.csv")
    opts = Options()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,1700",
              "--force-device-scale-factor=1", "--enable-unsafe-swiftshader"):  # WebGL in software
        opts.add_argument(a)
    opts.binary_location = CHROMIUM
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    open_page(driver, out / "explorer_latent_size_8.html")
    yield driver, page_columns((out / "explorer_latent_size_8.html").read_text()), out, result
    driver.quit()


def move(driver, x, y):
    from selenium.webdriver.common.action_chains import ActionChains
    ActionChains(driver).move_by_offset(0, 0).perform()  # no-op that makes sure the pointer exists
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    a = ActionBuilder(driver, duration=0)  # one jump: no pointer events over the points on the way
    a.pointer_action.move_to_location(int(round(x)), int(round(y)))
    a.perform()


def click(driver, x, y):
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    a = ActionBuilder(driver, duration=0)
    a.pointer_action.move_to_location(int(round(x)), int(round(y))).click()
    a.perform()


def deep(driver, selector):
    return driver.execute_script(DEEP_QUERY + "return deep(arguments[0], document);", selector)


def wait_for(driver, script, *args):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, 10).until(lambda d: d.execute_script(script, *args))


def png_pixels(png: bytes) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)


def isolated(driver, panel: int) -> tuple[int, np.ndarray]:
    """The point of panel whose nearest other point is farthest on screen, and every point's position."""
    pos = driver.execute_script(SCREEN, panel)
    xy = np.stack([pos["x"], pos["y"]], 1)
    gap = np.sort(np.linalg.norm(xy[:, None] - xy[None], axis=-1), axis=1)[:, 1]
    return int(gap.argmax()), xy


@pytest.mark.slow
@needs_browser
def test_page_loads_without_errors_and_draws_every_point_on_webgl(browser):
    driver, cols, _, _ = browser
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []
    for k in (0, 1):
        pos = driver.execute_script(SCREEN, k)
        assert len(pos["x"]) == len(cols["x2"]) == 359 and np.isfinite(pos["x"] + pos["y"]).all()
        left, top, right, bottom = pos["frame"]
        assert all(left <= x <= right and top <= y <= bottom for x, y in zip(pos["x"], pos["y"]))
        assert driver.execute_script(f"return {MODEL}.output_backend", f"panel_{k}") == "webgl"


@pytest.mark.slow
@needs_browser
def test_hover_shows_that_image_from_its_tile(browser, explored):
    driver, cols, out, _ = browser
    i, xy = isolated(driver, 0)
    move(driver, *xy[i])
    wait_for(driver, "const c = document.querySelector('.lx-tooltip'); return c.style.display === 'block' "
                     "&& c.dataset.i === arguments[0]", str(i))
    assert deep(driver, ".lx-tooltip .lx-index").text == f"test {cols['item'][i]}"
    box = driver.execute_async_script(  # once its tile has loaded: the image's place on the screen
        "const done = arguments[0], el = document.querySelector('.lx-tooltip .lx-test'), im = new Image();"
        "im.onload = im.onerror = () => { const r = el.getBoundingClientRect(); done([r.left, r.top]); };"
        "im.src = getComputedStyle(el).backgroundImage.slice(5, -2);")
    left, top = (int(round(v)) + 1 for v in box)  # inside the 1-pixel border; no scrolling, which would move the card
    shown = png_pixels(driver.get_screenshot_as_png())[top:top + 64, left:left + 64]  # the 8x8 image magnified 8 times
    data = torch.load(out / "test_data.pth", weights_only=True)
    drawn = data["images"][cols["item"], 0].reshape(len(cols["item"]), -1).numpy().astype(float)
    centres = shown[4::8, 4::8][:8, :8].ravel()  # one screen pixel inside each image pixel
    np.testing.assert_allclose(centres, drawn[i], atol=2)
    move(driver, 5, 5)  # off the panels: the card goes
    wait_for(driver, "return document.querySelector('.lx-tooltip').style.display === 'none'")


@pytest.mark.slow
@needs_browser
def test_a_click_lists_the_neighbours_sklearn_finds_and_marks_them(browser):
    driver, cols, out, _ = browser
    i, xy = isolated(driver, 1)
    click(driver, *xy[i])
    wait_for(driver, DEEP_QUERY + "return deep('.lx-picked', document)")
    assert int(deep(driver, ".lx-picked").get_attribute("data-i")) == i
    listed = driver.execute_script(DEEP_QUERY + "return deepAll('.lx-neighbour', document).map("
                                   "e => [e.dataset.space, +e.dataset.i]);")
    z8 = np.load(out / "latent_space_size_8.npy")
    want = NearestNeighbors(n_neighbors=9).fit(z8).kneighbors(z8[i:i + 1], return_distance=False)[0, 1:]
    assert [j for s, j in listed if s == "latent"] == want.tolist()
    xy_p = np.stack([cols["xp"], cols["yp"]], 1)
    near = NearestNeighbors(n_neighbors=9).fit(xy_p).kneighbors(xy_p[i:i + 1], return_distance=False)[0, 1:]
    assert [j for s, j in listed if s == "picture"] == near.tolist()
    marks = driver.execute_script(f"return {MODEL}.data", "marks")
    assert marks["marker"] == ["diamond"] + ["circle"] * 8 + ["square"] * 8
    np.testing.assert_allclose(marks["xp"][1:9], cols["xp"][want], rtol=1e-5)


@pytest.mark.slow
@needs_browser
def test_search_by_class_and_index_lights_up_those_points(browser):
    driver, cols, out, _ = browser
    names = json.loads((out / "latent_space_size_8.json").read_text())["class_names"]
    selected = f"return Array.from({MODEL}.selected.indices)"
    for query, want in ((f"class {names[3]}", np.flatnonzero(cols["label"] == 3)),
                        (f"test {cols['item'][17]}", [17]), (str(cols["item"][40]), [40])):
        driver.execute_script(f"{MODEL}.value = arguments[1]", "search", query)
        wait_for(driver, f"return {MODEL}.selected.indices.length > 0", "points")
        assert sorted(driver.execute_script(selected, "points")) == list(want)
    x_range = driver.execute_script(f"const r = {MODEL}.x_range; return [r.start, r.end]", "panel_1")
    assert x_range[0] < cols["xp"][40] < x_range[1] and x_range[1] - x_range[0] < np.ptp(cols["xp"])  # zoomed in
    driver.execute_script(f"{MODEL}.value = ''", "search")


@pytest.mark.slow
@needs_browser
def test_the_epoch_slider_draws_that_epochs_record(browser):
    driver, _, out, _ = browser
    record = torch.load(out / "model_latent_size_8.pth", weights_only=True)["record"]
    assert len(record["epoch"]) == 6
    for e in (2, 5, 1):
        driver.execute_script(f"{MODEL}.value = arguments[1]", "film_slider", e)
        wait_for(driver, f"return {MODEL}.text.startsWith('epoch ' + arguments[1] + ' ')", "film_epoch", e)
        x1 = driver.execute_script(f"return Array.from({MODEL}.data.x1)", "film")
        np.testing.assert_allclose(x1, record["xy"][e - 1, :, 0].numpy(), rtol=1e-6)


@pytest.mark.slow
@needs_browser
def test_colour_by_a_csv_column_shows_a_colour_bar_and_class_hides_it(browser):
    driver, cols, _, result = browser
    choose = f"{MODEL}.value = arguments[1]"
    driver.execute_script(choose, "color_by", "score (--color_csv)")
    wait_for(driver, f"return {MODEL}.visible", "colorbar")
    code = driver.execute_script(f"return Array.from({MODEL}.data.code)", "points")
    np.testing.assert_allclose(code, cols["item"] % 7)
    assert driver.execute_script("const m = Bokeh.documents[0].get_model_by_name('colors'); return [m.low, m.high]") == [0, 6]
    driver.execute_script(choose, "color_by", "class")
    wait_for(driver, f"return !{MODEL}.visible", "colorbar")
    np.testing.assert_array_equal(driver.execute_script(f"return Array.from({MODEL}.data.code)", "points"), cols["label"])
    assert "cluster 0" not in driver.execute_script(f"return {MODEL}.text", "legend")


@pytest.mark.slow
@needs_browser
def test_moving_over_empty_space_changes_the_decoding(browser):
    driver, _, _, _ = browser
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
def test_box_selection_greys_the_rest_in_both_panels_and_exports_its_rows(browser):
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    driver, cols, _, _ = browser
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
    assert f"<b>{len(chosen[1])}</b> selected" in driver.execute_script(f"return {MODEL}.text", "selected")
    grey = driver.execute_script("return Bokeh.documents[0].get_model_by_name('points_1').nonselection_glyph.fill_color")
    assert grey["value"] == "#c8c8c8"  # the rest stays, greyed
    driver.execute_script("window.__csv = null; HTMLAnchorElement.prototype.click = function () { window.__csv = this.href; };")
    deep(driver, ".bk-btn").click()
    csv = driver.execute_script("return decodeURIComponent(window.__csv.split(',').slice(1).join(','));").splitlines()
    assert csv[0] == "split,index,class,file,latent_1,latent_2,projection_1,projection_2"
    assert sorted(int(r.split(",")[1]) for r in csv[1:]) == sorted(cols["item"][chosen[1]].tolist())
    shot = png_pixels(driver.get_screenshot_as_png())
    assert shot.std() > 10 and len(np.unique(shot)) > 20  # not blank


@pytest.mark.slow
@needs_browser
def test_search_by_file_name_lights_up_those_files(browser, folder_page):
    driver = browser[0]
    open_page(driver, folder_page[1])  # the last browser test: the digits page is left
    files = page_config(folder_page[1].read_text())["files"]
    for query in ("sub dir", "#3.png", "DOGS #1"):  # a part of the path, any case
        driver.execute_script(f"{MODEL}.value = arguments[1]", "search", query)
        wait_for(driver, f"return {MODEL}.selected.indices.length > 0", "points")
        want = [i for i, f in enumerate(files) if query.lower() in f.lower()]
        assert sorted(driver.execute_script(f"return Array.from({MODEL}.selected.indices)", "points")) == want
    card = driver.execute_script("LX.showCard(Bokeh.documents[0].get_model_by_name('points').data, 5);"
                                 "return document.querySelector('.lx-tooltip .lx-file').textContent")
    assert card == files[5]


def test_a_step_6_json_without_predictions_gives_a_note_not_a_crash(tmp_path):
    from latentlab.store.step_results import step6_predictions
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
    assert notes == [] and preds[8][1] == "knn5" and preds[8][0].tolist() == [1, 0, 1] and preds[8][2] is None
    for confidence, kept in (([0.5, 1.0, 0.75], True), ([0.5, 7.0, 0.75], False), ([0.5, 1.0], False)):
        path.write_text(json.dumps({"models": row, "predictions": {"probe": "knn5", "by_latent_size": {"8": [1, 0, 1]},
                                                                   "confidence_by_latent_size": {"8": confidence}}}))
        preds, _ = step6_predictions(tmp_path, [lat])
        assert (preds[8][2] is not None) == kept  # a probability per prediction, each in [0, 1], or none
