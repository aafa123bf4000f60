"""train.py's folder: a folder of another run is refused unless --resume continues it or --overwrite
replaces it. An --overwrite trains in <folder>/.overwrite/ and replaces the folder's files only once
it has succeeded, each stage a rename, so a failure or a kill at any point leaves the earlier run in
place (or the swap finished by the folder's next writer)."""
from __future__ import annotations

import fnmatch
import shutil
from dataclasses import dataclass
from pathlib import Path

from latentlab.store import atomic, files
from latentlab.cli import UserError
from latentlab.store.locking import LOCK_NAME
from latentlab.store.runs import MARKER, TRAINED_BY, describe, folder_run, new_run_id, sizes_text

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
        atomic.remove_stale_temp_files(out, RUN_FILES)  # half-written files of the earlier run's killed writers
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
