"""The interactive latent explorer: one self-contained HTML page (bokeh and explorer.js inline),
two linked scatter panels (the 2-d latents, a projection of the N-d ones) and, per point, the
cluster and prediction steps 5 and 6 wrote.

Images travel as sprite sheets, one per set (test images, each model's reconstructions, the
decodings of a grid), tiles in the order of the points. They sit once in the page's head as CSS
custom properties (--lx-test, ...), which inherit into bokeh's shadow DOM: a tooltip, thumbnail or
decoded view is a div naming one and moving the background to its tile; no image is repeated.
Reconstructions and decodings are JPEG (smooth, so far smaller than PNG); test images stay PNG.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import re

import numpy as np
import torch

THUMB_PX = 64  # a tooltip image is at least this wide: small images are magnified by whole pixels
RECON_JPEG_QUALITY = 85
SELECTED_SHOWN = 200  # thumbnails drawn for a selection; the CSV holds all of it


def sample_points(n: int, max_points: int, seed: int) -> np.ndarray:
    """Rows to draw: all n, or a seeded sample of max_points of them (in their order)."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))


def sprite_sheet(images: torch.Tensor, lossy: bool = False) -> tuple[str, int]:
    """images (n, C, H, W), float in [0, 1] or uint8 -> (a data: URL of one PNG (JPEG when lossy)
    holding them as tiles of a grid, row by row, columns of that grid)."""
    from PIL import Image
    from torchvision.utils import make_grid
    if images.dtype != torch.uint8:
        images = images.clamp(0, 1).mul(255).round().to(torch.uint8)
    cols = math.ceil(math.sqrt(len(images)))
    sheet = make_grid(images, nrow=cols, padding=0)  # (3, rows * H, cols * W): grey is repeated
    sheet = sheet[0] if images.shape[1] == 1 else sheet.permute(1, 2, 0)
    buf, mime = io.BytesIO(), "jpeg" if lossy else "png"
    Image.fromarray(sheet.numpy()).save(buf, format=mime, **({"quality": RECON_JPEG_QUALITY} if lossy else {}))
    return f"data:image/{mime};base64,{base64.b64encode(buf.getvalue()).decode()}", cols


def _img_style(var: str, w: int, h: int, cols: int) -> str:
    """Inline style of a div showing one tile of the sheet in CSS property var (position added after)."""
    return (f"width:{w}px;height:{h}px;background-image:var({var});background-size:{cols * w}px auto;"
            f"image-rendering:pixelated;background-repeat:no-repeat;border:1px solid #ccc;")


def point_data(two, big, rows: np.ndarray, xy: np.ndarray, clusters: dict, preds: dict) -> tuple[dict, dict]:
    """build_page's columns and colorings for the drawn rows of the 2-d latents two and the N-d
    latents big (inputs.Latents of the same items), xy the projection of big, clusters and preds
    from step5_clusters and step6_predictions."""
    from matplotlib.colors import to_hex

    from latentlab import palettes
    labels, names = big.labels[rows], big.class_names
    colorings = {"class": (labels, [(n, to_hex(c)) for n, c in zip(names, palettes.class_colors(len(names)))])}
    for k, c in clusters.items():
        cp = palettes.cluster_colors(int(c.max()) + 1)
        colorings[f"k-means cluster, {k}-d model"] = (c[rows], [(f"cluster {j}", to_hex(cp[j])) for j in range(len(cp))])
    right, wrong = map(to_hex, palettes.OUTCOME_COLORS)
    for k, (p, probe) in preds.items():
        colorings[f"{probe} classifier right / wrong, {k}-d model"] = (
            (p[rows] != labels).astype(np.int64), [("right", right), ("wrong", wrong)])

    def per_point(found, text):
        return [", ".join(text(k, v, i) for k, v in found.items()) or "(step not run)" for i in rows]
    columns = {"x2": two.z[rows, 0], "y2": two.z[rows, 1], "xp": xy[rows, 0], "yp": xy[rows, 1],
               "test_index": big.indices[rows], "cls": [names[c] for c in labels],
               "kmeans": per_point(clusters, lambda k, c, i: f"{c[i]} ({k}-d)"),
               "prediction": per_point(preds, lambda k, pp, i: f"{names[pp[0][i]]} "
                                       f"{'(right)' if pp[0][i] == big.labels[i] else '(WRONG)'} ({k}-d {pp[1]})")}
    return columns, colorings


def build_page(*, title: str, subtitle: str, columns: dict, sheets: dict, image_hw: tuple[int, int],
               grid: dict, colorings: dict, panel_titles: tuple[str, str], axis_labels: tuple, model_names: tuple,
               csv_name: str) -> str:
    """The whole page as one HTML string.

    columns: per point, "x2", "y2" (2-d latents), "xp", "yp" (projection), "test_index", "cls"
    (class name), "kmeans", "prediction" (text for the tooltip). sheets: {"test", "rec2", "recN"}
    -> (data URL, columns), tiles in the order of the points; grid: {"sheet": (data URL, columns),
    "xs", "ys" (the grid's coordinates)}. colorings: name -> (code of each point (n,),
    legend entries [(name, colour)], entry c the colour of code c), the first shown at load."""
    from bokeh.layouts import column, row
    from bokeh.models import Button, ColumnDataSource, CustomJS, Div, InlineStyleSheet, LinearColorMapper, Select

    js = page_scripts()
    h, w = image_hw
    scale = max(1, math.ceil(THUMB_PX / max(h, w)))
    tw, th, cols = w * scale, h * scale, sheets["test"][1]
    # colours are codes (an int column per colouring) through one colour mapper, whose palette
    # and code column the "colour by" menu swaps; pos: each point's tile, as a CSS background-position
    codes = [np.asarray(c, dtype=np.int32) for c, _ in colorings.values()]
    source = ColumnDataSource(dict(columns, code=codes[0], pos=[f"-{(i % cols) * tw}px -{(i // cols) * th}px"
                                                                for i in range(len(codes[0]))],
                                   **{f"code_{i}": c for i, c in enumerate(codes)}), name="points")
    palettes = [[c for _, c in entries] for _, entries in colorings.values()]
    mapper = LinearColorMapper(palette=palettes[0], low=-0.5, high=len(palettes[0]) - 0.5, name="colors")
    plots = _panels(source, mapper, sheets, tw, th, panel_titles, axis_labels, model_names)
    style, size = _img_style("--lx-grid", 2 * tw, 2 * th, grid["sheet"][1]), len(grid["xs"])  # the grid's cells
    decoded = Div(name="decoded", width=2 * tw + 160, text=f'<div class="lx-decoded" style="{style}background-position:0px '
                  f'0px"></div><div class="lx-where">move the mouse over the left panel</div>')
    plots[0].js_on_event("mousemove", CustomJS(code=js["decode_under_cursor"], args=dict(
        div=decoded, xs=list(map(float, grid["xs"])), ys=list(map(float, grid["ys"])), cols=grid["sheet"][1],
        w=2 * tw, h=2 * th, style=style)))
    legends = [f"<b>{html.escape(name)}</b>: " + "".join(
        f'<span style="white-space:nowrap;margin-right:10px"><span style="display:inline-block;width:10px;height:10px;'
        f'border-radius:5px;background:{c}"></span> {html.escape(str(e))}</span> ' for e, c in entries)
        for name, (_, entries) in colorings.items()]
    legend = Div(text=legends[0], width=1060, name="legend")
    select = Select(title="colour by", value=next(iter(colorings)), options=list(colorings), name="color_by")
    select.js_on_change("value", CustomJS(code=js["colour_by"], args=dict(
        source=source, legend=legend, mapper=mapper, names=list(colorings), legends=legends, palettes=palettes)))
    chosen = Div(text="select points with the box or lasso tool (toolbar) in either panel", width=1060, name="selected",
                 stylesheets=[InlineStyleSheet(css=":host{max-height:260px;overflow-y:auto}")])
    source.selected.js_on_change("indices", CustomJS(code=js["show_selection"], args=dict(
        source=source, div=chosen, shown=SELECTED_SHOWN, style=_img_style("--lx-test", tw, th, cols))))
    export = Button(label="export selection (CSV)", name="export", width=200)
    export.js_on_event("button_click", CustomJS(code=js["export_selection"], args=dict(source=source, filename=csv_name)))
    head = Div(text=f"<h2 style='margin:4px 0'>{html.escape(title)}</h2><div>{html.escape(subtitle)}</div>", width=1060)
    grid_note = Div(text=f"<b>decoded under the cursor</b> (2-d model): the nearest cell of a {size}x{size} grid of "
                         f"decodings over the 1st-99th percentile box of the test latents", width=2 * tw + 160)
    layout = column(head, row(select, export), legend, row(*plots, column(grid_note, decoded)), chosen)
    return _html(layout, title, {**sheets, "grid": grid["sheet"]}, js["sheets_to_blobs"])


def page_scripts() -> dict[str, str]:
    """explorer.js (package data beside this module) by section: name -> code."""
    from importlib.resources import files
    parts = re.split(r"^// == (\w+)$", files(__package__).joinpath("explorer.js").read_text(), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def _panels(source, mapper, sheets: dict, tw: int, th: int, titles: tuple, labels: tuple, model_names: tuple) -> list:
    """The two scatter panels of the points (the 2-d latents, the projection); hovering a point
    shows its test image and both reconstructions (tiles of tw x th pixels)."""
    from bokeh.models import HoverTool
    from bokeh.plotting import figure

    def img(var, label):
        return (f'<div style="text-align:center;font-size:10px"><div class="lx-{var}" '
                f'style="{_img_style("--lx-" + var, tw, th, sheets[var][1])}background-position:@pos"></div>{label}</div>')
    tooltip = (f'<div class="lx-tooltip" style="width:{3 * tw + 24}px"><div style="display:flex;gap:4px">'
               f'{img("test", "test image")}{img("rec2", model_names[0])}{img("recN", model_names[1])}</div>'
               f'<div><b>@cls</b>, test index <span class="lx-index">@test_index</span></div>'
               f'<div>k-means cluster: @kmeans</div><div>classifier: @prediction</div></div>')
    size = float(np.clip(1200 / math.sqrt(max(len(source.data["x2"]), 1)), 3, 9))
    plots = []
    for k, (x, y) in enumerate((("x2", "y2"), ("xp", "yp"))):
        p = figure(title=titles[k], width=520, height=500, tools="pan,wheel_zoom,box_select,lasso_select,reset",
                   active_drag="box_select", x_axis_label=labels[k][0], y_axis_label=labels[k][1],
                   name=f"panel_{k}", output_backend="canvas")
        r = p.scatter(x, y, source=source, size=size, color={"field": "code", "transform": mapper}, alpha=0.75, line_color=None,
                      nonselection_alpha=0.08, selection_line_color="black", name=f"points_{k}")
        p.add_tools(HoverTool(renderers=[r], tooltips=tooltip, limit=1))  # the nearest point alone
        plots.append(p)
    return plots


def _html(layout, title: str, sheets: dict, to_blobs: str) -> str:
    """layout as a self-contained page, the sprite sheets in its head."""
    from bokeh.core.templates import get_env
    from bokeh.embed import file_html
    from bokeh.resources import INLINE
    # Browsers cap URLs (Chromium at 2 MB), so a large data: URL in CSS shows nothing: each sheet
    # travels as base64 text and becomes a short blob: URL when the page opens
    blobs = "".join(f'<script type="text/plain" data-lx-sheet="{k}" data-mime="{url[5:url.index(";")]}">'
                    f'{url[url.index(",") + 1:]}</script>\n' for k, (url, _) in sheets.items())
    template = get_env().from_string("{% extends 'file.html.jinja' %}{% block postamble %}{{ sprite_sheets }}"
                                     "<script>" + to_blobs + "</script>{% endblock %}")
    return file_html(layout, resources=INLINE, title=title, template=template, template_variables={"sprite_sheets": blobs})


# ---------------------------------------------------------------- what steps 5 and 6 found, per point
def _step_json(path):
    from latentlab.cli import UserError
    try:
        meta = json.loads(path.read_text())
        return meta if isinstance(meta.get("models"), dict) else None
    except (ValueError, OSError, AttributeError) as e:
        raise UserError(f"{path} is not readable JSON ({type(e).__name__}); re-run the step that wrote it, or remove it")


def _other_file(named, path) -> bool:
    from pathlib import Path
    return not isinstance(named, str) or Path(named).resolve() != Path(path).resolve()


def step5_clusters(out, latents) -> tuple[dict, list[str]]:
    """Step 5's k-means cluster of each latent, as its JSON in out holds them ({latent size: (n,)}), and notes."""
    size = latents[-1].latent_size
    found = [p for p in (out / f"kmeans_{s}_space_latent_size_{size}.json" for s in ("latent", "umap")) if p.is_file()]
    if not found:
        return {}, ["no k-means: viz_kmeans_latent_space.py has not run"]
    meta, clusters, notes = _step_json(found[0]) or {}, {}, []
    for lat in latents:
        r = meta.get("models", {}).get(str(lat.latent_size))
        if (not isinstance(r, dict) or r.get("samples") != len(lat.z) or _other_file(r.get("latents"), lat.path)
                or r.get("latents_sha256") != lat.meta["npy_sha256"]):  # encoded again since step 5 ran
            notes.append(f"{found[0]} is not of {lat.path}: no k-means shown for it")
            continue
        try:
            c = np.asarray(meta["clusters"]["by_latent_size"][str(lat.latent_size)])
        except (KeyError, TypeError, ValueError):  # none written, or not a list of numbers
            c = np.zeros(0)
        if c.shape != (len(lat.z),) or c.dtype.kind != "i" or not 0 <= c.min() <= c.max() < len(c):
            from latentlab.cli import UserError
            raise UserError(f"{found[0]} is malformed: it holds no cluster number of each of the {len(lat.z)} "
                            f"{lat.latent_size}-d latents; re-run viz_kmeans_latent_space.py")
        clusters[lat.latent_size] = c
    return clusters, notes


def step6_predictions(out, latents) -> tuple[dict, list[str]]:
    """Step 6's prediction of each latent by the classifier its figure shows (the most accurate on
    the N-d latents, the same for every model), read from its JSON in out: {latent size:
    (predictions (n,), probe name)} and notes."""
    path = out / f"classification_latent_size_{latents[-1].latent_size}.json"
    if not path.is_file():
        return {}, ["no classifier: classify_latent_space.py has not run"]
    meta, preds, notes = _step_json(path) or {}, {}, []
    shown = meta.get("predictions") if isinstance(meta.get("predictions"), dict) else {}
    by_size = shown.get("by_latent_size") if isinstance(shown.get("probe"), str) else None
    for lat in latents:
        r = meta.get("models", {}).get(str(lat.latent_size))
        p = np.asarray(by_size.get(str(lat.latent_size), []) if isinstance(by_size, dict) else [])
        if (not r or r.get("samples") != len(lat.z) or _other_file(r.get("latents"), lat.path)
                or p.shape != (len(lat.z),) or p.dtype.kind not in "iu" or not ((p >= 0) & (p < len(lat.class_names))).all()):
            notes.append(f"{path} is not of {lat.path} or holds no predictions of it: no predictions shown for it; "
                         f"re-run classify_latent_space.py")
            continue
        preds[lat.latent_size] = (p, shown["probe"])
    return preds, notes
