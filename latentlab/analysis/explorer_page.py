"""The explorer's page: the bokeh layout, explorer.js, and the images as tiles.

Images travel as tiles of 16 x 16 images in the order of the points (test images PNG,
reconstructions JPEG: smooth, so far smaller): tile t of a set holds points 256 t to 256 t + 255.
By default the tiles sit in a folder beside the page, named by their content and loaded as the
mouse reaches them, so the page opens fast at any number of points; self-contained, they travel in
the page as base64 text, each turned into a blob: URL when first shown (browsers cap data: URLs).
The grid decoded under the cursor is one such sheet. The hover card, the neighbours panel and the
search are explorer.js's, reading the point columns of one bokeh ColumnDataSource.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import torch

TILE_SIDE = 16  # a tile holds 16 x 16 images: a hover loads one tile, tens of kB, at most
THUMB_PX = 64  # a hover image is at least this wide: small images are magnified by whole pixels
RECON_JPEG_QUALITY = 85
SELECTED_SHOWN = 200  # thumbnails drawn for a selection; the CSV holds all of it
TILE_FORMAT = {"side": TILE_SIDE, "png": "test", "jpeg": ["rec0", "rec1"], "quality": RECON_JPEG_QUALITY}


def to_u8(images: torch.Tensor) -> torch.Tensor:
    return images if images.dtype == torch.uint8 else images.clamp(0, 1).mul(255).round().to(torch.uint8)


def encode_sheet(images: torch.Tensor, cols: int, lossy: bool) -> bytes:
    """images (n, C, H, W) uint8 as one PNG (JPEG when lossy), cols to a row, row by row (missing
    cells black). One reshape, not torchvision's make_grid: that copies image by image, 45 of a
    70,000-point page's 65 s of tiles."""
    from PIL import Image
    n, c, h, w = images.shape
    rows = -(-n // cols)
    full = torch.cat([images, images.new_zeros((rows * cols - n, c, h, w))]) if rows * cols > n else images
    sheet = full.reshape(rows, cols, c, h, w).permute(0, 3, 1, 4, 2).reshape(rows * h, cols * w, c)
    buf = io.BytesIO()
    Image.fromarray(sheet[..., 0].numpy() if c == 1 else sheet.numpy()).save(
        buf, format="JPEG" if lossy else "PNG", **({"quality": RECON_JPEG_QUALITY} if lossy else {}))
    return buf.getvalue()


def tiles(images: torch.Tensor, lossy: bool) -> list[bytes]:
    """The images (n, C, H, W), float in [0, 1] or uint8, as encoded tiles of TILE_SIDE x TILE_SIDE."""
    per = TILE_SIDE * TILE_SIDE
    return [encode_sheet(to_u8(images[s:s + per]), TILE_SIDE, lossy) for s in range(0, len(images), per)]


def tile_files(sets: dict[str, tuple[list[bytes], bool]]) -> dict[str, bytes]:
    """{set name: (tiles, lossy)} -> {file name: bytes}: {set}_{t}.png or .jpg."""
    return {f"{name}_{t}.{'jpg' if lossy else 'png'}": blob for name, (blobs, lossy) in sets.items()
            for t, blob in enumerate(blobs)}


def remove_other_tile_folders(out: Path, stem: str, keep: str | None) -> None:
    """Once the page names keep (None: no folder), the other tile folders of this page go, and any
    a killed build left half-written."""
    import shutil

    from latentlab.store import atomic
    atomic.remove_stale_temp_folders(out, f"{stem}_tiles_")
    for p in out.glob(f"{stem}_tiles_*"):
        if p.is_dir() and p.name != keep:
            shutil.rmtree(p, ignore_errors=True)


def page_scripts() -> dict[str, str]:
    """explorer.js (package data beside this module) by section: name -> code."""
    from importlib.resources import files
    parts = re.split(r"^// == (\w+)$", files(__package__).joinpath("explorer.js").read_text(), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def colour_models(colorings: list[dict]) -> tuple:
    """The mapper, colour bar and the colouring table the "colour by" menu swaps: a colouring is
    {"name", "column", "entries": [(label, colour)] (codes 0, 1, ...) or None (a number)}."""
    from bokeh.models import ColorBar, LinearColorMapper
    from bokeh.palettes import Viridis256
    table = []
    for c in colorings:
        if c["entries"] is not None:
            table.append({"name": c["name"], "column": c["column"], "palette": [col for _, col in c["entries"]],
                          "low": -0.5, "high": len(c["entries"]) - 0.5, "number": False, "legend": _legend(c)})
        else:
            table.append({"name": c["name"], "column": c["column"], "palette": list(Viridis256), "low": c["low"],
                          "high": c["high"] if c["high"] > c["low"] else c["low"] + 1e-9, "number": True,
                          "legend": f"<b>{html.escape(c['name'])}</b>: from {c['low']:.4g} (dark) to {c['high']:.4g} "
                                    f"(yellow); grey: no value"})
    first = table[0]
    mapper = LinearColorMapper(palette=first["palette"], low=first["low"], high=first["high"], nan_color="#bbbbbb",
                               name="colors")
    bar = ColorBar(color_mapper=mapper, visible=first["number"], name="colorbar", width=12, title=first["name"],
                   title_text_font_size="10px")
    return mapper, bar, table


def _legend(c: dict) -> str:
    return f"<b>{html.escape(c['name'])}</b>: " + "".join(
        f'<span style="white-space:nowrap;margin-right:10px"><span style="display:inline-block;width:10px;height:10px;'
        f'border-radius:5px;background:{col}"></span> {html.escape(str(e))}</span> ' for e, col in c["entries"])


def build_page(*, title: str, subtitle: str, columns: dict, info: dict, image_hw: tuple[int, int], grid: dict,
               colorings: list[dict], panel_titles: tuple[str, str], axis_labels: tuple, csv_name: str,
               tiles_at: str | None, embedded: dict[str, bytes], film=None) -> str:
    """The whole page as one HTML string.

    columns: per point (n,), "x2", "y2" (2-d latents), "xp", "yp" (projection), "item", "split",
    "label" and the per-point numbers explorer.js reads (see point_data). info: what it needs once
    (class and split names, file names, model names, k). grid: {"sheet": bytes, "xs", "ys"}.
    tiles_at: the tile folder's name beside the page (None: the tiles are in embedded, {file name: bytes}).
    film: the training film's frames (explorer_film.film_frames) and {"class_names", "model_names", "num_epochs"}."""
    from bokeh.layouts import column, row
    from bokeh.models import BooleanFilter, CDSView, ColumnDataSource, CustomJS, Div, InlineStyleSheet

    js = page_scripts()
    h, w = image_hw
    scale = max(1, math.ceil(THUMB_PX / max(h, w)))
    n = len(columns["x2"])
    source = ColumnDataSource({**columns, "code": np.asarray(columns[colorings[0]["column"]], dtype=np.float32)},
                              name="points")
    marks = ColumnDataSource({"x2": [], "y2": [], "xp": [], "yp": [], "marker": [], "line": []}, name="marks")
    view = CDSView(filter=BooleanFilter(booleans=[True] * n), name="shown")
    mapper, bar, table = colour_models(colorings)
    plots = _panels(source, marks, view, mapper, panel_titles, axis_labels, js)
    plots[1].add_layout(bar, "right")
    config = {**info, "tiles": tiles_at, "side": TILE_SIDE, "tw": w * scale, "th": h * scale, "n": n,
              "grid": {"cols": grid["cols"], "w": 2 * w * scale, "h": 2 * h * scale}}
    decoded = Div(name="decoded", width=2 * w * scale + 160, text='<div class="lx-where">move the mouse over the left '
                  'panel</div>')
    plots[0].js_on_event("mousemove", CustomJS(code=js["decode_under_cursor"], args=dict(
        div=decoded, xs=list(map(float, grid["xs"])), ys=list(map(float, grid["ys"])))))
    legend = Div(text=table[0]["legend"], width=1060, name="legend")
    chosen = Div(text="click a point for its neighbours; select points with the box or lasso tool (toolbar) in "
                      "either panel, or search", width=1060, name="selected",
                 stylesheets=[InlineStyleSheet(css=":host{max-height:260px;overflow-y:auto}")])
    neighbours = Div(text="", width=1060, name="neighbours")
    for k, p in enumerate(plots):
        p.js_on_event("tap", CustomJS(code=js["neighbours"], args=dict(
            source=source, marks=marks, div=neighbours, plot=p, panel=k, view=view)))
    source.selected.js_on_change("indices", CustomJS(code=js["show_selection"], args=dict(
        source=source, div=chosen, shown=SELECTED_SHOWN)))
    controls = _controls(source, view, marks, plots, chosen, legend, (mapper, bar, table), info["splits"], csv_name, js)
    head = Div(text=f"<h2 style='margin:4px 0'>{html.escape(title)}</h2><div>{html.escape(subtitle)}</div>", width=1060)
    size = len(grid["xs"])
    grid_note = Div(text=f"<b>decoded under the cursor</b> (2-d model): the nearest cell of a {size}x{size} grid of "
                         f"decodings over the 1st-99th percentile box of the test latents", width=2 * w * scale + 160)
    parts = [head, row(*controls), legend, row(*plots, column(grid_note, decoded)), neighbours, chosen]
    if film is not None:
        from latentlab.analysis.explorer_film import film_layout
        parts.append(film_layout(*film, js=js))
    layout = column(*parts)
    return _html(layout, title, config, embedded, js["page_setup"])


def _controls(source, view, marks, plots, chosen, legend, colours: tuple, splits: list, csv_name: str, js: dict) -> list:
    """The row above the panels: colour by, search, the split (when there are two), export."""
    from bokeh.models import Button, CustomJS, Select, TextInput
    mapper, bar, table = colours
    select = Select(title="colour by", value=table[0]["name"], options=[t["name"] for t in table], name="color_by")
    select.js_on_change("value", CustomJS(code=js["colour_by"], args=dict(
        source=source, legend=legend, mapper=mapper, bar=bar, table=table)))
    search = TextInput(title="search: class, index, file name", width=330, name="search",
                       placeholder="e.g. Sneaker, class 3, 123, train 34, cat_01")
    search.js_on_change("value", CustomJS(code=js["search"], args=dict(source=source, plots=plots, div=chosen,
                                                                        view=view)))
    controls = [select, search]
    if len(splits) > 1:
        split = Select(title="split", value="all", options=["all", *splits], name="split", width=120)
        split.js_on_change("value", CustomJS(code=js["show_split"], args=dict(source=source, view=view, marks=marks)))
        controls.append(split)
    export = Button(label="export selection (CSV)", name="export", width=200)
    export.js_on_event("button_click", CustomJS(code=js["export_selection"], args=dict(source=source, filename=csv_name)))
    return controls + [export]


def _panels(source, marks, view, mapper, titles: tuple, labels: tuple, js: dict) -> list:
    """The two scatter panels of the points (the 2-d latents, the projection), on WebGL; hovering a
    point shows its card (explorer.js), clicking it marks its neighbours (marks) in both."""
    from bokeh.models import CustomJS, HoverTool
    from bokeh.plotting import figure
    n = len(source.data["x2"])
    size = float(np.clip(1200 / math.sqrt(max(n, 1)), 2, 9))
    plots = []
    for k, (x, y) in enumerate((("x2", "y2"), ("xp", "yp"))):
        p = figure(title=titles[k], width=520, height=500, tools="pan,wheel_zoom,box_select,lasso_select,reset",
                   active_drag="box_select", x_axis_label=labels[k][0], y_axis_label=labels[k][1],
                   name=f"panel_{k}", output_backend="webgl")
        r = p.scatter(x, y, source=source, view=view, size=size, color={"field": "code", "transform": mapper},
                      alpha=0.8, line_color=None, nonselection_fill_color="#c8c8c8", nonselection_alpha=0.35,
                      selection_line_color="black", name=f"points_{k}")
        p.scatter(x, y, source=marks, marker="marker", size=max(size * 2.2, 11), fill_color=None, line_color="line",
                  line_width=2, name=f"marks_{k}")
        p.add_tools(HoverTool(renderers=[r], tooltips=None, callback=CustomJS(code=js["hover"], args=dict(
            source=source, panel=k))))
        p.js_on_event("mouseleave", CustomJS(code="window.LX && LX.hideCard();"))
        plots.append(p)
    return plots


def _html(layout, title: str, config: dict, embedded: dict[str, bytes], setup: str) -> str:
    """layout as a page: bokeh inline, the configuration and explorer.js's set-up in its postamble,
    and the embedded tiles (the grid's sheet at least) as base64 text."""
    from bokeh.core.templates import get_env
    from bokeh.embed import file_html
    from bokeh.resources import INLINE
    blobs = "".join(f'<script type="text/plain" data-lx-file="{html.escape(name)}">{base64.b64encode(blob).decode()}'
                    f'</script>\n' for name, blob in embedded.items())
    conf = json.dumps(config).replace("</", "<\\/")
    template = get_env().from_string("{% extends 'file.html.jinja' %}{% block postamble %}{{ lx_files }}"
                                     "<script>{{ lx_script }}</script>{% endblock %}")
    return file_html(layout, resources=INLINE, title=title, template=template, template_variables={
        "lx_files": blobs, "lx_script": f"window.LX_CONFIG = {conf};\n{setup}"})
