"""The interactive latent explorer's data: the points of one or both splits, each with its
coordinates in both panels, its k nearest neighbours in the N-d latents, how many of them the
picture keeps, its reconstruction errors, the cluster and prediction steps 5 and 6 wrote, and any
numbers of a --color_csv; explorer_page.py lays them out.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

NEIGHBOURS_K = 8  # the neighbours a click lists, and those "neighbours kept" compares


@dataclass
class Points:
    """The drawn points, in page order: the 2-d and N-d latents (n, 2) and (n, N), labels, each
    point's split (code into splits), row in that split's latents and index in its data, its image (uint8 (n, C, H, W)) and file name."""
    z2: np.ndarray
    zn: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    row: np.ndarray
    item: np.ndarray
    images: torch.Tensor
    splits: list
    files: list | None = None


def sample_points(n: int, max_points: int, seed: int) -> np.ndarray:
    """Rows to draw: all n, or a seeded sample of max_points of them (in their order)."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))


def neighbours(z: np.ndarray, k: int, cache_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest other rows of z (Euclidean, exact), through the cache: (indices int32 (n, k),
    distances float32 (n, k)), nearest first."""
    from latentlab.analysis.projection import exact_neighbours
    from latentlab.store import files
    z = np.ascontiguousarray(z, dtype=np.float32)
    k = min(k, len(z) - 1)
    path = None
    if cache_dir is not None:
        path = cache_dir / f"neighbours_{files.content_key({'k': k, 'shape': list(z.shape), 'exact': True}, z)}.npy"
        found = files.load_cached_npy(path, lambda a: a.shape == (len(z), 2 * k) and a.dtype == np.float32)
        if found is not None:
            return found[:, :k].astype(np.int32), found[:, k:]
    idx, dist = exact_neighbours(z, k + 1)
    idx, dist = idx[:, 1:].astype(np.int32), dist[:, 1:]  # each row's own index comes first: drop it
    if path is not None:  # indices below 2**24 are exact in float32
        files.save_npy(np.concatenate([idx.astype(np.float32), dist], axis=1), path)
    return idx, dist


def kept_share(full: np.ndarray, picture: np.ndarray) -> np.ndarray:
    """Per point, the share of its neighbours in the latents (n, k) that are among its neighbours
    in the picture (n, k): 1 where the picture keeps its whole neighbourhood."""
    return (full[:, :, None] == picture[:, None, :]).any(axis=2).mean(axis=1, dtype=np.float32)


def reconstructions(net, z: np.ndarray, images: torch.Tensor, device, batch: int) -> tuple[torch.Tensor, np.ndarray]:
    """Decodings of z as uint8 images and each one's MSE against its image (uint8 (n, C, H, W)),
    a batch at a time, so no float copy of the whole set is made."""
    from latentlab.analysis.explorer_page import to_u8
    from latentlab.data.datasets import to_float
    from latentlab.generate.sampling import decode_latents
    out, err = [], []
    for s in range(0, len(z), batch):
        rec = decode_latents(net, torch.from_numpy(z[s:s + batch]), device, batch)
        err.append((rec - to_float(images[s:s + batch])).pow(2).flatten(1).mean(1).numpy())
        out.append(to_u8(rec))
    return torch.cat(out), np.concatenate(err).astype(np.float32)


def read_color_csv(path, points: Points) -> dict[str, np.ndarray]:
    """--color_csv: a header row, a column "index" (the image's index in its split; a column "split"
    may say which, test by default) and one or more numeric columns -> {column: value of each point,
    NaN where the CSV gives none}."""
    import csv
    from latentlab.cli import UserError
    hint = "give a header row with a column index, optionally split, and numeric columns"
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"--color_csv {path} cannot be read ({getattr(e, 'strerror', None) or e}); {hint}")
    names = [c for c in (rows[0].keys() if rows else []) if c not in ("index", "split")]
    if not rows or "index" not in rows[0] or not names:
        raise UserError(f"--color_csv {path} holds no index column and value column; {hint}")
    where = {(points.splits[s], int(i)): r for r, (s, i) in enumerate(zip(points.split, points.item))}
    values = {c: np.full(len(points.labels), np.nan, dtype=np.float32) for c in names}
    for line, row in enumerate(rows, start=2):
        try:
            key = ((row.get("split") or "test").strip(), int(row["index"]))
            nums = {c: float(row[c]) for c in names}
        except (TypeError, ValueError):
            raise UserError(f"--color_csv {path}, line {line}: the index must be a whole number and every value a "
                            f"number; {hint}")
        if key in where:
            for c, v in nums.items():
                values[c][where[key]] = v
    if all(np.isnan(v).all() for v in values.values()):
        raise UserError(f"--color_csv {path} gives a value to none of the {len(points.labels)} points drawn; "
                        f"its index column must hold the images' indices in their split (as the page shows them)")
    return {f"{c} (--color_csv)": v for c, v in values.items()}


def gather(parts: list, max_points: int, seed: int) -> tuple[Points, int]:
    """The points to draw from parts [(split, 2-d latents, N-d latents, that split's images)]: all
    of them, or a seeded sample of max_points; returns (points, how many there are in all)."""
    sizes = [len(p[1].z) for p in parts]
    rows = sample_points(sum(sizes), max_points, seed)
    starts = np.cumsum([0, *sizes])
    pick = [rows[(rows >= a) & (rows < b)] - a for a, b in zip(starts[:-1], starts[1:])]
    items = [lat.indices[r] for (_, lat, _, _), r in zip(parts, pick)]
    points = Points(z2=np.concatenate([two.z[r] for (_, two, _, _), r in zip(parts, pick)]),
                    zn=np.concatenate([big.z[r] for (_, _, big, _), r in zip(parts, pick)]),
                    labels=np.concatenate([lat.labels[r] for (_, lat, _, _), r in zip(parts, pick)]),
                    split=np.concatenate([np.full(len(r), k) for k, r in enumerate(pick)]),
                    row=np.concatenate(pick), item=np.concatenate(items),
                    images=torch.cat([imgs[torch.from_numpy(i)] for (_, _, _, imgs), i in zip(parts, items)]),
                    splits=[p[0] for p in parts])
    if all(isinstance(lat.meta.get("files"), list) for _, lat, _, _ in parts):  # a folder's, as encoding recorded them
        points.files = [str(lat.meta["files"][r]) for (_, lat, _, _), rows in zip(parts, pick) for r in rows]
    return points, sum(sizes)


def on_test_points(points: Points, per_test_row: np.ndarray, missing=-1) -> np.ndarray:
    """A value per test latent (step 5's cluster, step 6's prediction) as one per point; missing elsewhere."""
    out = np.full(len(points.labels), missing, dtype=per_test_row.dtype)
    test = points.split == points.splits.index("test")
    out[test] = per_test_row[points.row[test]]
    return out


def point_columns(points: Points, xy: np.ndarray, class_names: list, model_names: tuple, found: dict) -> tuple:
    """(the page's per-point columns, its colourings) for points drawn at xy (the projection).
    found: "clusters" and "preds" ({model position: per-test-latent values}, steps 5 and 6; preds
    also the probe's name), "errors" (each model's reconstruction MSE per point), "neighbours"
    ((indices, distances) in the N-d latents), "kept" (their share the picture keeps), "extra"
    (--color_csv columns)."""
    from matplotlib.colors import to_hex

    from latentlab import palettes
    n = len(points.labels)
    cols = {"x2": points.z2[:, 0], "y2": points.z2[:, 1], "xp": xy[:, 0], "yp": xy[:, 1],
            "item": points.item.astype(np.int32), "split": points.split.astype(np.int8),
            "label": points.labels.astype(np.int32), "kept": found["kept"]}
    idx, dist = found["neighbours"]
    for j in range(idx.shape[1]):
        cols[f"nb_{j}"], cols[f"nd_{j}"] = idx[:, j], dist[:, j]
    colorings = [{"name": "class", "column": "label",
                  "entries": [(c, to_hex(col)) for c, col in zip(class_names, palettes.class_colors(len(class_names)))]}]
    right, wrong = map(to_hex, palettes.OUTCOME_COLORS)
    for m, model in enumerate(model_names):
        cols[f"cluster_{m}"] = on_test_points(points, found["clusters"][m]) if m in found["clusters"] else np.full(n, -1)
        if m in found["clusters"]:
            cp = palettes.cluster_colors(int(found["clusters"][m].max()) + 1)
            colorings.append({"name": f"k-means cluster, {model} model", "column": f"cluster_{m}",
                              "entries": [(f"cluster {j}", to_hex(c)) for j, c in enumerate(cp)]})
        cols[f"pred_{m}"] = on_test_points(points, found["preds"][m][0]) if m in found["preds"] else np.full(n, -1)
        if m in found["preds"]:
            cols[f"wrong_{m}"] = np.where(cols[f"pred_{m}"] < 0, np.nan, cols[f"pred_{m}"] != points.labels)
            colorings.append({"name": f"{found['preds'][m][1]} classifier right / wrong, {model} model",
                              "column": f"wrong_{m}", "entries": [("right", right), ("wrong", wrong)]})
    for m, model in enumerate(model_names):
        cols[f"err_{m}"] = found["errors"][m]
        colorings.append({"name": f"reconstruction MSE, {model} model", "column": f"err_{m}", "entries": None})
    colorings.append({"name": f"neighbours kept (of {idx.shape[1]}, {model_names[1]} latents in the picture)",
                      "column": "kept", "entries": None})
    for j, (name, values) in enumerate(found["extra"].items()):
        cols[f"csv_{j}"] = values
        colorings.append({"name": name, "column": f"csv_{j}", "entries": None})
    for c in colorings:
        if c["entries"] is None:
            v = np.asarray(cols[c["column"]], dtype=np.float64)
            c["low"], c["high"] = (float(np.nanmin(v)), float(np.nanmax(v))) if np.isfinite(v).any() else (0.0, 1.0)
    for k in cols:
        if k not in ("x2", "y2", "xp", "yp") and cols[k].dtype.kind == "f":
            cols[k] = cols[k].astype(np.float32)
    return cols, colorings
