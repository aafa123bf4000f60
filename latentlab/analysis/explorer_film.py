"""The training film inside the explorer: each model's 2-D view of the same validation images after
every epoch, as train.py recorded it in the checkpoint (the frames of latent_evolution_*.gif),
with an epoch slider and a play button, both models side by side, the GIF's fixed axes and the
class colours; hovering a point names its class and training item.
"""
from __future__ import annotations

import numpy as np

FRAME_MS = 500  # the play button's pace: the GIF's 2 frames a second


def film_frames(records: list) -> dict | None:
    """The epochs every model's record holds, as {"epochs", "xy": [(E, n, 2) per model], "labels",
    "items", "views"}; None when a model has no record or the records are of other images."""
    import torch
    if not records or any(not isinstance(r, dict) or not len(r.get("epoch", [])) for r in records):
        return None
    if not all(torch.equal(records[0]["indices"], r["indices"]) for r in records[1:]):
        return None
    common = sorted(set.intersection(*(set(r["epoch"].tolist()) for r in records)))
    if not common:
        return None
    xy = []
    for r in records:
        at = {int(e): i for i, e in enumerate(r["epoch"].tolist())}
        xy.append(r["xy"][[at[e] for e in common]].numpy().astype(np.float32))
    return {"epochs": common, "xy": xy, "labels": records[0]["labels"].numpy(), "items": records[0]["indices"].numpy(),
            "views": [r["view"] for r in records]}


def film_layout(film: dict, class_names: list, model_names: tuple, num_epochs: int, js: dict):
    """The film as a bokeh layout: a slider and a play button over one panel per model, the last
    recorded epoch shown first. js: explorer.js by section."""
    from bokeh.layouts import column, row
    from bokeh.models import Button, ColumnDataSource, CustomJS, Div, HoverTool, Range1d, Slider
    from bokeh.plotting import figure
    from matplotlib.colors import to_hex

    from latentlab import palettes
    from latentlab.plots import fixed_limits
    colours = [to_hex(c) for c in palettes.class_colors(len(class_names))]
    last = len(film["epochs"]) - 1
    data = {"cls": [str(class_names[c]) for c in film["labels"]], "item": film["items"].astype(np.int32),
            "color": [colours[c] for c in film["labels"]]}
    for m, xy in enumerate(film["xy"]):
        data[f"x{m}"], data[f"y{m}"] = xy[last, :, 0], xy[last, :, 1]
    source = ColumnDataSource(data, name="film")
    panels = []
    for m, (xy, view) in enumerate(zip(film["xy"], film["views"])):
        (x0, x1), (y0, y1) = fixed_limits(xy)
        names = ("latent 1", "latent 2") if view == "latents" else ("principal component 1 (aligned)",
                                                                      "principal component 2 (aligned)")
        p = figure(title=f"{model_names[m]} model", width=420, height=380, x_range=Range1d(x0, x1),
                   y_range=Range1d(y0, y1), x_axis_label=names[0], y_axis_label=names[1], name=f"film_{m}",
                   tools="pan,wheel_zoom,reset", output_backend="webgl")
        r = p.scatter(f"x{m}", f"y{m}", source=source, color="color", size=4, alpha=0.8, line_color=None)
        p.add_tools(HoverTool(renderers=[r], tooltips=[("class", "@cls"), ("training item", "@item")]))
        panels.append(p)
    label = Div(text=f"epoch {film['epochs'][last] + 1} of {num_epochs}", name="film_epoch")
    args = dict(source=source, label=label, epochs=film["epochs"], total=num_epochs, n=len(film["labels"]),
                **{f"f{a}{m}": np.ascontiguousarray(xy[..., k]).ravel() for m, xy in enumerate(film["xy"])
                   for k, a in enumerate("xy")})
    head = Div(text=f"<b>the training film</b>: both models' view of the same {len(film['labels'])} seeded "
                    f"validation images after each recorded epoch (the 2-d model's latents as they are; the larger "
                    f"one's PCA, turned to match the previous epoch); axes fixed over all epochs", width=1060)
    if last == 0:
        return column(head, label, row(*panels))
    slider = Slider(start=1, end=last + 1, value=last + 1, step=1, title="recorded epoch", width=520, name="film_slider")
    slider.js_on_change("value", CustomJS(code=js["film_epoch"], args=args))
    play = Button(label="play", width=80, name="film_play")
    play.js_on_event("button_click", CustomJS(code=js["film_play"], args=dict(slider=slider, button=play, ms=FRAME_MS)))
    return column(head, row(slider, play, label), row(*panels))
