"""One folder, one run. A training makes a run id; every artifact it writes, and every artifact a
later step makes from them, carries the id (`run`), and run.json in the folder names the run whose
results the folder holds.

- train.py refuses a folder that holds another run unless --resume (continue it) or --overwrite:
  the new run then trains in <folder>/.overwrite/ and replaces the folder's files only once it has
  succeeded, so a failure (or a kill) leaves the earlier run in place.
- A step writes into --output_dir only when the folder holds the run of its inputs, or no run yet
  (then it claims the folder: writes run.json); its inputs must all be of one run.
"""
from __future__ import annotations

import fnmatch
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from latentlab.store import files
from latentlab.cli import UserError
from latentlab.store.locking import LOCK_NAME

MARKER = "run.json"
KIND = "run"
TRAINED_BY = "train.py"
STAGING = ".overwrite"  # where an --overwrite trains until it has succeeded
REPLACING, REPLACED = ".replacing", ".replaced"  # the earlier run's files while the new run is swapped in
# what makes a folder a training's: train.py refuses to start over these without --overwrite or --resume
TRAINING_FILES = (MARKER, "test_data.pth", "pca_baseline.pth", "model_latent_size_*.pth")
# what --overwrite replaces: a run's files (every artifact is named after its model's latent size, but
# these) and train.py's tensorboard/; other files and sub-folders stay (output/ may hold other runs'
# folders, --output_dir may be a folder of the user's), as do the lock and the content-keyed cache/
RUN_FILES = (MARKER, "test_data.pth", "pca_baseline.pth", "training_curves.png", "training_summary.json",
             "*latent_size_*", "latent_space_size_*")
RUN_FOLDERS = ("tensorboard",)
KEPT = (LOCK_NAME, "cache", STAGING, REPLACING, REPLACED)


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


# ---------------------------------------------------------------- train.py: refuse, resume or replace
def training_files(folder) -> list[str]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if any(fnmatch.fnmatchcase(p.name, t) for t in TRAINING_FILES))


def replaceable(folder) -> list[Path]:
    """What --overwrite replaces in folder: RUN_FILES and RUN_FOLDERS."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if (p.name in RUN_FOLDERS and p.is_dir() and not p.is_symlink())
                  or (not p.is_dir() and any(fnmatch.fnmatchcase(p.name, t) for t in RUN_FILES)))


@dataclass
class TrainingPlan:
    """Where a training writes (the folder itself, or its staging folder under --overwrite) and its run id."""
    out: Path
    folder: Path
    run: str
    held: dict | None  # the run the folder held before (--resume continues it; --overwrite replaces it)

    @property
    def staged(self) -> bool:
        return self.folder != self.out

    def commit(self) -> None:
        """After the training succeeded: a staged run replaces the folder's files."""
        if self.staged:
            swap_in(self.out)

    def undo(self) -> None:
        """After the training failed: a staged run is removed, the folder stays as it was (unless the
        swap had begun: the next writer finishes it)."""
        if self.staged and not (self.out / REPLACING).exists() and not (self.out / REPLACED).exists():
            shutil.rmtree(self.folder, ignore_errors=True)


def plan_training(out, sizes, overwrite: bool, resume: bool) -> TrainingPlan:
    """Where and as which run a training writes into out; a folder of another run is refused
    unless overwrite or resume says what to do with it. Writes nothing but a stale staging folder's removal."""
    out = Path(out)
    finish_replacement(out)
    staging = out / STAGING
    if overwrite:
        if resume and staging.is_dir():  # continue an --overwrite that was killed
            return _resumed(out, staging, sizes)
        if staging.exists():
            shutil.rmtree(staging)
        try:
            held = folder_run(out)
        except UserError:  # a damaged run.json is replaced like the rest
            held = None
        return TrainingPlan(out, staging if replaceable(out) else out, new_run_id(), held)
    held, present = folder_run(out), training_files(out)
    if resume:
        return _resumed(out, out, sizes)
    if held is not None or present:
        if held is not None and held.get("written_by") != TRAINED_BY:
            what, ways = f"the results of {describe(held)}", "pass --overwrite to replace them"
        else:
            whose = f"the training of {describe(held)}" if held and held.get("run") else describe(held or {"run": None})
            what = f"{whose}: {', '.join(present)}"
            ways = "pass --overwrite to replace it, --resume to continue it"
        stopped = (f" (and {staging}, the new run of a stopped --overwrite: --overwrite --resume continues it)"
                   if staging.is_dir() else "")
        raise UserError(f"{out} holds {what}{stopped}; {ways}, or choose another --output_dir")
    return TrainingPlan(out, out, new_run_id(), None)


def _resumed(out: Path, folder: Path, sizes) -> TrainingPlan:
    """--resume continues the run in folder (out, or the staging folder of a killed --overwrite): a
    training's, of these sizes; it keeps that run's id (or its checkpoints')."""
    held = folder_run(folder)
    if held is not None and held.get("written_by") != TRAINED_BY:
        raise UserError(f"--resume: {folder} holds the results of {describe(held)}, trained in "
                        f"{held.get('inputs_from', 'another folder')}, not a training to continue; "
                        f"pass --overwrite to replace them, or choose another --output_dir")
    if held is not None and held.get("latent_sizes") and sorted(held["latent_sizes"]) != sorted(sizes):
        raise UserError(f"--resume: {folder} holds {describe(held)}, not a training of {sizes_text(sorted(sizes))}; "
                        f"give that run's --latent_size, --overwrite to replace it, or choose another --output_dir")
    return TrainingPlan(out, folder, (held or {}).get("run") or checkpoints_run(folder) or new_run_id(), held)


def checkpoints_run(folder) -> str | None:
    """The run id of the checkpoints in a folder without run.json (a resume keeps the run it continues)."""
    found = set()
    for p in sorted(Path(folder).glob("model_latent_size_*.pth")):
        try:
            found.add(files.load_torch(p, "checkpoint").get("run"))
        except UserError:  # unreadable: the resume itself says so
            pass
    found.discard(None)
    if len(found) > 1:
        raise UserError(f"--resume: the checkpoints in {folder} are of {len(found)} runs ({', '.join(sorted(found))}); "
                        f"keep those of one run there, or pass --overwrite to start over")
    return found.pop() if found else None


def check_resumed_dataset(plan: TrainingPlan, dataset: str) -> None:
    """--resume continues the folder's run: the same dataset (the sizes were checked by plan_training)."""
    held = plan.held
    if held is not None and held.get("dataset") not in (None, dataset):
        raise UserError(f"--resume: {plan.out} holds {describe(held)}, not a training on {dataset}; "
                        f"give that run's --dataset, --overwrite to replace it, or choose another --output_dir")


def swap_in(out) -> None:
    """Replace out's files by those of its staging folder: the earlier ones go to .replacing, which
    becomes .replaced once all are there, then the staged ones move in and .replaced is deleted.
    Each stage is a rename; run again after a kill at any point, it finishes the swap."""
    out = Path(out)
    replacing, replaced, staging = out / REPLACING, out / REPLACED, out / STAGING
    if not replaced.exists():
        files.remove_stale_temp_files(out, RUN_FILES)  # half-written files of the earlier run's killed writers
        replacing.mkdir(exist_ok=True)
        for p in replaceable(out):
            p.rename(replacing / p.name)
        replacing.rename(replaced)
    if staging.exists():
        for p in sorted(staging.iterdir()):
            if p.name not in KEPT:
                p.replace(out / p.name)
        shutil.rmtree(staging)
    shutil.rmtree(replaced)


def finish_replacement(out) -> None:
    """A swap that a kill stopped midway (only a finished run is swapped in) is finished; the folder's
    next writer calls this, holding its lock, before it reads anything there."""
    out = Path(out)
    if (out / REPLACING).exists() and not (out / STAGING).exists():  # no new run to finish: put the old one back
        for p in (out / REPLACING).iterdir():
            p.replace(out / p.name)
        (out / REPLACING).rmdir()
    if (out / REPLACING).exists() or (out / REPLACED).exists():
        swap_in(out)
