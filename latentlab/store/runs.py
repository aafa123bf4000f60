"""One folder, one run. A training makes a run id; every artifact it writes, and every artifact a
later step makes from them, carries the id (`run`), and run.json in the folder names the run whose
results the folder holds.

- train.py refuses a folder that holds another run unless --resume (continue it) or --overwrite
  (replace it once the new run has succeeded): replacing.py.
- A step writes into --output_dir only when the folder holds the run of its inputs, or no run yet
  (then it claims the folder: writes run.json); its inputs must all be of one run.
"""
from __future__ import annotations

import re
import uuid
from pathlib import Path

from latentlab.store import files
from latentlab.cli import UserError

MARKER = "run.json"
KIND = "run"
TRAINED_BY = "train.py"


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def sizes_text(sizes) -> str:
    sizes = [str(k) for k in sizes]
    if len(sizes) <= 1:
        return f"latent size {''.join(sizes) or '?'}"
    return f"latent sizes {', '.join(sizes[:-1])} and {sizes[-1]}"


def describe(held: dict) -> str:
    """'run 3fa2c1d0e9b7 (digits, latent sizes 2 and 16)', or what is known of a run whose id cannot be read."""
    known = [held["dataset"]] if held.get("dataset") else []
    known += [sizes_text(held["latent_sizes"])] if held.get("latent_sizes") else []
    what = f" ({', '.join(known)})" if known else ""
    return f"run {held['run']}{what}" if held.get("run") else f"a training of unknown run{what}"


# ---------------------------------------------------------------- the marker
def read_marker(folder) -> dict | None:
    """<folder>/run.json, checked; None when there is none. Another file there is refused."""
    path = Path(folder) / MARKER
    if not path.exists():
        return None
    hint = "it is not latentlab's run marker: move it away, or choose another --output_dir"
    marker = files.load_json(path, KIND, hint, redo="re-run train.py with --overwrite, or choose another --output_dir")
    if not (isinstance(marker.get("run"), str) and re.fullmatch(r"[0-9a-f]{1,64}", marker["run"])
            and isinstance(marker.get("dataset"), str) and isinstance(marker.get("latent_sizes"), list)
            and all(isinstance(k, int) and not isinstance(k, bool) for k in marker["latent_sizes"])):
        raise UserError(f"{path} is malformed: it needs a run id, a dataset and latent sizes; {hint}")
    return marker


def write_marker(folder, run: str, dataset: str, latent_sizes, written_by: str, **extra) -> Path:
    return files.save_json({"kind": KIND, "format_version": files.FORMAT_VERSION, "run": run, "dataset": dataset,
                            "latent_sizes": sorted(latent_sizes), "written_by": written_by, **extra},
                           Path(folder) / MARKER)


def folder_run(folder) -> dict | None:
    """The run a folder holds: its run.json; without one, its test_data.pth (run None when it
    cannot be read); None when it holds neither (empty, or made by hand)."""
    marker = read_marker(folder)
    if marker is not None:
        return marker
    data_path = files.test_data_path(folder)
    if not data_path.is_file():
        return None
    try:
        data = files.load_torch(data_path, "test_data")
    except UserError:  # unreadable: the steps that read it say so; here it still marks a training's folder
        data = {}
    return {"run": data.get("run"), "dataset": data.get("dataset"), "latent_sizes": data.get("latent_sizes", []),
            "written_by": TRAINED_BY}


# ---------------------------------------------------------------- the steps: inputs of one run, into its folder
def _source(item) -> tuple[Path, str, str, list]:
    """(path, run id, dataset, latent sizes) of a step's input: a CheckpointFile, Latents, or (path, dict)."""
    if isinstance(item, tuple):
        path, obj = item
        return Path(path), obj["run"], obj["dataset"], list(obj.get("latent_sizes", []))
    meta = getattr(item, "ckpt", None) or item.meta
    return Path(item.path), meta["run"], item.dataset, [item.latent_size]


def inputs_run(*items) -> tuple[str, list]:
    """The run id of a step's inputs and their (path, ...) rows; inputs of two runs are refused."""
    rows = [_source(i) for i in items]
    for other in rows[1:]:
        if other[1] != rows[0][1]:
            raise UserError(f"{rows[0][0]} is of run {rows[0][1]} but {other[0]} of run {other[1]}: they come from "
                            f"two trainings; pass files of one training")
    return rows[0][1], rows


def claim(output_dir, *inputs, by: str) -> str:
    """Before a step's first write into output_dir: its inputs must be of one run, and the folder
    must hold that run's results, or none yet (it is then claimed for that run). Returns the run id."""
    out = Path(output_dir)
    run, rows = inputs_run(*inputs)
    held = folder_run(out)
    source, dataset = rows[0][0].parent, rows[0][2]
    if held is None:
        sizes = sorted({k for r in rows for k in r[3]})
        write_marker(out, run, dataset, sizes, by, inputs_from=str(source))
    elif held.get("run") != run:
        if source.resolve() == out.resolve():
            raise UserError(f"{out / MARKER} names {describe(held)} but the inputs there are of run {run}: the folder "
                            f"mixes two trainings; retrain into an empty --output_dir")
        raise UserError(f"{out} holds the results of {describe(held)}; these inputs are of run {run} ({dataset}) in "
                        f"{source}: write into {source}, or choose an empty --output_dir")
    return run
