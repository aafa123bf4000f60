"""What steps 5 and 6 hand on to later steps, per test latent: the k-means cluster of each
(viz_kmeans_latent_space.py) and the best probe's prediction and its confidence
(classify_latent_space.py), read from their JSON and checked against the latents they are of.
"""
from __future__ import annotations

import json

import numpy as np


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
    (predictions (n,), probe name, the probability it gave each prediction (n,) or None where the
    JSON holds none)} and notes."""
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
        c = np.asarray(shown.get("confidence_by_latent_size", {}).get(str(lat.latent_size), []), dtype=np.float64)
        preds[lat.latent_size] = (p, shown["probe"], c if c.shape == p.shape and ((c >= 0) & (c <= 1)).all() else None)
    return preds, notes
