"""One training run, as train.py does it: train, then report. Every process decides where the run
writes (latentlab.store.runs: one folder, one run), loads the dataset, carves the validation split,
writes the held-out test data and the PCA baseline (rank 0, one agreed step) and trains the 2-d and
the N-d model; the process group closes; rank 0 alone then scores both models against PCA at the
same size, animates, logs and prints. train.py, the sweep and the notebook all call `run_training`."""
from __future__ import annotations

from pathlib import Path

from latentlab.store import atomic, files, replacing, runs
from latentlab.train import animation, tensorboard_log
from latentlab.cli import UserError, pick_device, seed_everything
from latentlab.data.datasets import load_dataset
from latentlab.data.image_file import unreadable_files
from latentlab.analysis.pca import fit_pca, pca_mse
from latentlab.analysis.scores import psnr
from latentlab.train.distributed import (World, close_distributed, from_main, init_distributed, load_in_turn,
                                         local_batch_size, run_agreed)
from latentlab.settings import Settings
from latentlab.train.checkpoint import check_resumable, run_meta
from latentlab.train.hooks import Callback, CsvLog, Snapshots
from latentlab.train.loop import TrainingSplit, place_data, split_train_val, train_model
from latentlab.train.report import Trained, report
from latentlab.train.umap_loss import UmapLoss, fuzzy_graph

SNAPSHOT_IMAGES = 8
# What train.py writes: the names whose temp files, left by a killed run, it removes at its start.
OUTPUTS = ("model_latent_size_*.pth", "test_data.pth", "pca_baseline.pth", "train_log_latent_size_*.csv",
           "training_curves.png", "reconstructions_latent_size_*_epoch_*.png", "training_summary.json",
           *animation.OUTPUTS)


def fit_pca_baseline(data, train_idx, sizes, out: Path, run: str) -> dict:
    """PCA fit on the training split (validation excluded, as for the models), scored on the test split."""
    mean, comps = fit_pca(data.train_x, max(sizes), idx=train_idx)
    scores = {}
    for k in sizes:
        mse = pca_mse(data.test_x, mean, comps, k)
        scores[str(k)] = {"test_mse": mse, "test_psnr": psnr(mse), "components": min(k, comps.shape[0])}
    baseline = {"kind": "pca_baseline", "format_version": files.FORMAT_VERSION, "run": run, "dataset": data.name,
                "image_shape": list(data.image_shape), "mean": mean, "components": comps, "scores": scores,
                "fit_on": f"{len(train_idx)} training images (validation split excluded)"}
    files.save_torch(baseline, files.pca_path(out))
    return baseline


def skipped_note(skipped: list) -> str:
    """The unreadable files --skip_unreadable left out, for the training's first line ('' for none)."""
    if not skipped:
        return ""
    return f"; {len(skipped)} unreadable file{'s' if len(skipped) > 1 else ''} skipped: {unreadable_files(skipped)}"


def run_training(settings: Settings, output_dir, device: str = "auto", quiet: bool = False, companion: bool = True,
                 on_epoch=None) -> dict:
    """Train and report; returns {latent_size: summary row} (empty on the ranks other than 0).
    companion=False trains the --latent_size model alone, without the 2-d one beside it (the sweep).
    on_epoch(latent_size, epoch, model, ckpt): also called on rank 0 after each epoch (benchmarks
    that score every epoch's model).

    Under torchrun every check that can fail on the user's input runs on all processes alike (or
    is agreed on), so they stop together. A folder that holds another run is refused unless
    --overwrite or --resume (latentlab.store.runs); a failed --overwrite leaves the folder's
    earlier run as it was."""
    world = init_distributed(pick_device(device))
    out, plan, rows = Path(output_dir), None, {}
    sizes = sorted({2, settings.latent_size}) if companion else [settings.latent_size]  # the 2-d model beside
    try:
        plan = from_main(run_agreed(lambda: replacing.plan_training(out, sizes, settings.overwrite, settings.resume),
                                    world, main_only=True), world)
        trained = train_all(settings, plan, world, quiet or not world.main, sizes, on_epoch)
        close_distributed(world)  # the last checkpoint's write was agreed on: all processes are here
        if world.main:
            rows = report(settings, trained, quiet)
            plan.commit()
    except BaseException as e:
        if world.main and plan is not None and plan.staged:
            plan.undo()
            if isinstance(e, UserError):
                e = UserError(f"{e}; --overwrite stopped, so its new run is removed and {out} holds "
                              f"{runs.describe(plan.held) if plan.held else 'its earlier files'} as before")
        elif (isinstance(e, UserError) and world.main and plan is not None and not settings.resume
              and files.test_data_path(out).is_file()):  # the folder now holds this stopped run
            e = UserError(f"{e} (with --overwrite, as {out} now holds this stopped run)")
        if isinstance(e, UserError):
            close_distributed(world)  # agreed on by every process, so all of them are here
            raise e from None
        raise
    return rows


def prepare(settings: Settings, plan: replacing.TrainingPlan, world: World, quiet: bool, sizes: list[int]):
    """Load, check and write the run's files: every check of the user's input (the resume states in
    write_run's agreed step) runs before the first write (test_data.pth, pca_baseline.pth, run.json),
    so a refused training writes nothing. Returns (data, split, configs, umap, baseline)."""
    out = plan.folder
    seed_everything(settings.seed)
    local_batch_size(settings.batch_size, world)
    if settings.tensorboard:
        tensorboard_log.require_tensorboard()
    atomic.ensure_writable(out)
    if world.main:
        atomic.remove_stale_temp_files(out, OUTPUTS)
    data = load_in_turn(lambda: load_dataset(settings.dataset, data_dir=settings.data_dir, image_size=settings.image_size,
                                             memory_budget=settings.memory_budget, quiet=quiet, resize=settings.resize,
                                             background=settings.background,
                                             skip_unreadable=settings.skip_unreadable), world)
    if len(data.train_x) < 4:
        raise UserError(f"dataset {settings.dataset} has only {len(data.train_x)} training images; it needs at least 4")
    split = TrainingSplit(place_data(data.train_x, world.device),
                          *split_train_val(len(data.train_x), settings.val_fraction, settings.seed))
    if len(split.train) == 0:
        raise UserError(f"--val_fraction {settings.val_fraction:g} holds out all {len(split.val)} training images of "
                        f"{data.name} for validation and leaves none to train on; lower --val_fraction or add images")
    if settings.resume:
        replacing.check_resumed_dataset(plan, data.name)
    configs = {k: settings.model_config(k, data.image_shape) for k in sizes}  # bad widths stop before any write
    baseline = run_agreed(lambda: write_run(data, split.train, configs, settings, plan), world, main_only=True)
    if not quiet:
        print(f"{data.name}: {len(split.train)} train / {len(split.val)} validation / {len(data.test_x)} test images "
              f"of shape {tuple(data.image_shape)}, {len(data.class_names)} classes; device {world.device}"
              f"{f', {world.size} processes' if world.size > 1 else ''}"
              f"{skipped_note(data.skipped)}")
    umap = None
    if any(c.umap_weight > 0 for c in configs.values()):
        graph = load_in_turn(lambda: fuzzy_graph(data.train_x[split.train], plan.out / "cache", quiet), world)
        umap = UmapLoss(graph, split.train, settings.umap_weight, settings.umap_edges)
    return data, split, configs, umap, baseline


def train_all(settings: Settings, plan: replacing.TrainingPlan, world: World, quiet: bool, sizes: list[int],
              on_epoch=None) -> Trained:
    """Every process trains each model; rank 0 alone runs the per-epoch hooks."""
    data, split, configs, umap, baseline = prepare(settings, plan, world, quiet, sizes)
    meta = run_meta(plan.run, data, split, settings)
    shots = split.val[:SNAPSHOT_IMAGES]
    sample = animation.record_sample(split.val, settings.seed)
    models = {}
    for k in sizes:
        hooks = epoch_hooks(settings, plan.folder, k, split, data.train_y, shots, sample, world.device,
                            on_epoch) if world.main else []
        ckpt = train_model(configs[k], split, settings, files.checkpoint_path(plan.folder, k), meta, world,
                           hooks=hooks, quiet=quiet, umap=umap if configs[k].umap_weight > 0 else None)
        models[k] = (ckpt, hooks)
    return Trained(plan, data, baseline, world.device, models)


def epoch_hooks(settings: Settings, out: Path, k: int, split: TrainingSplit, labels, shots, sample, device,
                on_epoch=None) -> list:
    """Rank 0's per-epoch side effects of the latent-k model, in their order: the record first, as
    the TensorBoard log shows its reconstructions."""
    hooks = []
    if settings.snapshot_every:
        hooks.append(animation.TrainingRecord(split.images, labels, sample, shots, k, device))
    hooks.append(CsvLog(out / f"train_log_latent_size_{k}.csv"))
    shot_images = split.images[shots.to(split.images.device)]
    if settings.snapshot_every:
        hooks.append(Snapshots(shot_images, device, settings.snapshot_every, settings.num_epochs, settings.model, out))
    if settings.tensorboard:
        writer = tensorboard_log.open_writer(tensorboard_log.run_dir(out, settings.model, k))
        hooks.append(tensorboard_log.EpochLog(writer, shot_images[:2], device))
    if on_epoch is not None:
        hooks.append(Callback(on_epoch, k))
    return hooks


def write_run(data, train_idx, configs: dict, settings: Settings, plan: replacing.TrainingPlan) -> dict:
    """test_data.pth (the held-out test split, for the later steps), the PCA baseline and run.json,
    once a --resume is known to continue both models. A resumed run keeps those it wrote (the same
    split and fit), so a resume refused later changes none."""
    out, sizes = plan.folder, list(configs)
    if settings.resume:
        for k, config in configs.items():
            check_resumable(files.checkpoint_path(out, k), settings, config, data.name)
        if plan.held is not None and plan.held.get("run") == plan.run:
            try:
                data_file = files.load_torch(files.test_data_path(out), "test_data")
                baseline = files.load_torch(files.pca_path(out), "pca_baseline")
                if data_file.get("run") == baseline.get("run") == plan.run:
                    return baseline
            except UserError:  # missing or damaged (a kill between writes): written again below
                pass
    files.save_torch({
        "kind": "test_data", "format_version": files.FORMAT_VERSION, "run": plan.run, "dataset": data.name,
        "images": data.test_x, "labels": data.test_y, "class_names": data.class_names,
        "split": data.split, "models": [files.checkpoint_path(out, k).name for k in sizes],
        "latent_sizes": sizes, "skipped": len(data.skipped), **({"files": data.test_files} if data.test_files else {}),
    }, files.test_data_path(out))
    baseline = fit_pca_baseline(data, train_idx, sizes, out, plan.run)
    runs.write_marker(out, plan.run, data.name, sizes, runs.TRAINED_BY, model=settings.model)
    return baseline
