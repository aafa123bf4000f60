"""One training run, as train.py does it: decide where it writes (latentlab.store.runs: one folder, one
run), load the dataset, carve the validation split, write the held-out test data and the PCA
baseline, train the 2-d and the N-d model, and summarise them against PCA at the same size.
train.py, the sweep and the notebook all call `run_training`."""
from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from latentlab import caveats, plots
from latentlab.store import files, runs
from latentlab.train import animation, tensorboard_log
from latentlab.cli import UserError, pick_device, seed_everything
from latentlab.data.datasets import load_dataset, to_float
from latentlab.data.decoding import unreadable_files
from latentlab.analysis.inference import encode_images, model_mse, sample_test_items
from latentlab.analysis.pca import fit_pca, pca_mse
from latentlab.analysis.scores import psnr
from latentlab.train.distributed import (World, close_distributed, from_main, init_distributed, load_in_turn,
                                   local_batch_size, run_agreed)
from latentlab.settings import Settings
from latentlab.train.checkpoint import check_resumable, write_log
from latentlab.train.loop import TrainingSplit, place_data, split_train_val, train_model
from latentlab.train.umap_loss import UmapLoss, fuzzy_graph
from model.autoencoder import describe

SNAPSHOT_IMAGES = 8
# What train.py writes: the names whose temp files, left by a killed run, it removes at its start.
OUTPUTS = ("model_latent_size_*.pth", "test_data.pth", "pca_baseline.pth", "train_log_latent_size_*.csv",
           "training_curves.png", "reconstructions_latent_size_*_epoch_*.png", "training_summary.json",
           *animation.OUTPUTS)


def model_sizes(latent_size: int) -> list[int]:
    """The 2-d bottleneck beside the chosen one (one model when the chosen one is 2)."""
    return sorted({2, latent_size})


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


def reading(settings: Settings, data) -> dict:
    """How the images were read (a folder's), for the steps that re-read the training split, and
    how many unreadable files were left out."""
    return {"resize": settings.resize, "background": settings.background,
            "skip_unreadable": settings.skip_unreadable, "skipped": len(data.skipped)}


def skipped_note(skipped: list) -> str:
    """The unreadable files --skip_unreadable left out, for the training's first line ('' for none)."""
    if not skipped:
        return ""
    return f"; {len(skipped)} unreadable file{'s' if len(skipped) > 1 else ''} skipped: {unreadable_files(skipped)}"


def snapshot(model, images_u8, device, epoch: int, latent_size: int, family: str, out: Path) -> None:
    with torch.no_grad():
        model.eval()
        x = to_float(images_u8.to(device))
        rec = model.reconstruct(x).float().cpu()
    fig = plots.image_rows([("original", x.cpu()), (f"{latent_size}-d", rec)],
                           f"{describe(family, latent_size)}: validation images after epoch {epoch + 1}")
    files.save_figure(fig, out / f"reconstructions_latent_size_{latent_size}_epoch_{epoch + 1:03d}.png")


def run_training(args, companion: bool = True, on_epoch=None) -> dict:
    """args: the namespace of train.py's parser. Returns {latent_size: summary row}.
    companion=False trains the --latent_size model alone, without the 2-d one beside it (the sweep).
    on_epoch(latent_size, epoch, model, ckpt): also called on rank 0 after each epoch's checkpoint
    and logs (benchmarks that score every epoch's model).

    Under torchrun every process runs this; rank 0 alone writes. Every check that can fail on
    the user's input runs on all processes alike (or is agreed on), so they stop together.
    A folder that holds another run is refused unless --overwrite or --resume (latentlab.store.runs);
    a failed --overwrite leaves the folder's earlier run as it was."""
    settings = Settings.from_args(args)
    world = init_distributed(pick_device(args.device))
    out, plan = Path(args.output_dir), None
    sizes = model_sizes(settings.latent_size) if companion else [settings.latent_size]
    try:
        plan = run_agreed(lambda: runs.plan_training(out, sizes, settings.overwrite, settings.resume), world,
                          main_only=True)
        plan = from_main(plan, world)
        rows = train_and_summarise(settings, plan, world, args.quiet or not world.main, sizes, on_epoch)
        run_agreed(plan.commit, world, main_only=True)
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
            close_distributed(world)  # the processes agreed on the error: all of them are here
            raise e from None
        raise
    close_distributed(world)  # the last step (write_summary) was agreed on: all processes are here
    return rows


def train_and_summarise(settings: Settings, plan: runs.TrainingPlan, world: World, quiet: bool, sizes: list[int],
                        also_on_epoch=None) -> dict:
    """Every check of the user's input runs before the first write (test_data.pth, pca_baseline.pth,
    run.json), so a refused training writes nothing."""
    out = plan.folder
    seed_everything(settings.seed)
    local_batch_size(settings.batch_size, world)
    if settings.tensorboard:
        tensorboard_log.require_tensorboard()
    files.ensure_writable(out)
    if world.main:
        files.remove_stale_temp_files(out, OUTPUTS)
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
        runs.check_resumed_dataset(plan, data.name)
    configs = {k: settings.model_config(k, data.image_shape) for k in sizes}  # bad widths stop before any write
    if settings.resume:  # so does a resume state that cannot be continued, of either model
        for k in sizes:
            run_agreed(lambda k=k: check_resumable(files.checkpoint_path(out, k), settings, configs[k], data.name), world)
    if not quiet:
        print(f"{data.name}: {len(split.train)} train / {len(split.val)} validation / {len(data.test_x)} test images "
              f"of shape {tuple(data.image_shape)}, {len(data.class_names)} classes; device {world.device}"
              f"{f', {world.size} processes' if world.size > 1 else ''}"
              f"{skipped_note(data.skipped)}")
    umap = None
    if any(c.umap_weight > 0 for c in configs.values()):
        graph = load_in_turn(lambda: fuzzy_graph(data.train_x[split.train], plan.out / "cache", quiet), world)
        umap = UmapLoss(graph, split.train, settings.umap_weight, settings.umap_edges)
    baseline = run_agreed(lambda: write_run(data, split.train, sizes, settings, plan), world, main_only=True)

    meta = {"run": plan.run,
            "dataset": {"name": data.name, "class_names": data.class_names, "image_shape": list(data.image_shape),
                        "split": data.split, "num_train": len(split.train), "num_val": len(split.val),
                        # what re-reads the training split (encode_latent_space.py --split train)
                        "data_dir": str(Path(settings.data_dir).resolve()) if settings.data_dir else None,
                        "image_size": settings.image_size, **reading(settings, data)},
            "seed": settings.seed}
    shot_idx = split.val[:SNAPSHOT_IMAGES]
    shots = data.train_x[shot_idx]
    sample = animation.record_sample(split.val, settings.seed)
    histories, rows = {}, {}
    for k in sizes:
        config = configs[k]
        path = files.checkpoint_path(out, k)
        what = describe(settings.model, k, data.name, umap_weight=config.umap_weight, bottleneck=config.bottleneck)
        recorder = (animation.TrainingRecord(split.images, data.train_y, sample, shot_idx, k, world.device)
                    if settings.snapshot_every else None)
        board = (tensorboard_log.open_writer(tensorboard_log.run_dir(out, settings.model, k))
                 if settings.tensorboard and world.main else None)

        def on_epoch(epoch, model, ckpt, k=k, board=board):
            write_log(ckpt["history"], out / f"train_log_latent_size_{k}.csv")
            last = epoch + 1 >= settings.num_epochs or ckpt["stopped_early"]
            if settings.snapshot_every and ((epoch + 1) % settings.snapshot_every == 0 or last):
                snapshot(model, shots, world.device, epoch, k, settings.model, out)
            if board is not None:
                if epoch == 0:
                    tensorboard_log.log_graph(board, model, shots[:2], world.device)
                tensorboard_log.log_epoch(board, epoch, ckpt)
            if also_on_epoch is not None:
                also_on_epoch(k, epoch, model, ckpt)

        ckpt = train_model(config, split, settings, path, meta, world, on_epoch=on_epoch, quiet=quiet,
                           recorder=recorder, umap=umap if config.umap_weight > 0 else None)
        histories[f"{k}-d"] = {**ckpt["history"], "best_epoch": ckpt["best_epoch"]}
        row = run_agreed(lambda: summarise(ckpt, data, world.device, baseline, path), world, main_only=True)
        if world.main:
            rows[k] = row

        def write_extras(ckpt=ckpt, board=board, what=what):
            if settings.snapshot_every and ckpt.get("record") is not None:
                animation.write_animations(ckpt["record"], out, k, what, data.class_names, settings.num_epochs)
            if board is not None:
                log_to_projector(board, ckpt, data, settings, world.device, quiet)
                board.close()
        run_agreed(write_extras, world, main_only=True)

    def write_summary():
        title = f"{settings.model} autoencoder on {data.name}: training curves"
        files.save_figure(plots.training_curves(histories, title), out / "training_curves.png")
        files.save_json({"run": plan.run, "dataset": data.name, "model": settings.model, "models": rows,
                         "caveats": model_caveats(rows)}, out / "training_summary.json")
        print_summary(rows, plan.out)  # the result table and its caveats, --quiet too
    run_agreed(write_summary, world, main_only=True)
    return rows


def log_to_projector(board, ckpt: dict, data, settings: Settings, device, quiet: bool) -> None:
    """The run's settings and test metrics as hparams, and the selected model's latents of a seeded
    sample of test images (as encode_latent_space.py draws it by default) in the projector."""
    hparams = {**ckpt["train"], "model": settings.model, "latent_size": ckpt["config"]["latent_size"],
               "dataset": data.name, "noise_std": settings.noise_std, "beta": settings.beta,
               "umap_weight": ckpt["config"]["umap_weight"]}
    metrics = {k: ckpt["test_metrics"][k] for k in ("test_mse", "test_psnr", "val_mse", "mse_vs_pca")}
    tensorboard_log.log_hparams(board, hparams, metrics)
    from model.autoencoder import model_from_checkpoint
    indices, _ = sample_test_items(len(data.test_x), tensorboard_log.PROJECTOR_SAMPLES, settings.seed)
    z = encode_images(model_from_checkpoint(ckpt, device), data.test_x[indices], device)
    note = tensorboard_log.log_embedding(board, z, data.test_y[indices], indices, data.class_names,
                                         data.test_x[indices], "test latents", len(ckpt["history"]["epoch"]))
    if note and not quiet:
        tqdm.write(note)


def write_run(data, train_idx, sizes, settings: Settings, plan: runs.TrainingPlan) -> dict:
    """test_data.pth (the held-out test split, for the later steps), the PCA baseline and run.json.
    A resumed run keeps those it wrote (the same split and fit), so a resume refused later changes none."""
    out = plan.folder
    if settings.resume and plan.held is not None and plan.held.get("run") == plan.run:
        try:
            data_file = files.load_torch(files.test_data_path(out), "test_data")
            baseline = files.load_torch(files.pca_path(out), "pca_baseline")
            if data_file.get("run") == baseline.get("run") == plan.run:
                return baseline
        except UserError:  # missing or damaged (a kill between writes): written again below
            pass
    baseline = write_test_data_and_baseline(data, train_idx, sizes, out, plan.run)
    runs.write_marker(out, plan.run, data.name, sizes, runs.TRAINED_BY, model=settings.model)
    return baseline


def write_test_data_and_baseline(data, train_idx, sizes, out: Path, run: str) -> dict:
    """test_data.pth (the held-out test split, for the later steps) and the PCA baseline."""
    files.save_torch({
        "kind": "test_data", "format_version": files.FORMAT_VERSION, "run": run, "dataset": data.name,
        "images": data.test_x, "labels": data.test_y, "class_names": data.class_names,
        "split": data.split, "models": [files.checkpoint_path(out, k).name for k in sizes],
        "latent_sizes": sizes, "skipped": len(data.skipped),
    }, files.test_data_path(out))
    return fit_pca_baseline(data, train_idx, sizes, out, run)


def summarise(ckpt: dict, data, device, baseline: dict, path: Path) -> dict:
    """Score the selected (best-validation) weights on the test split; store the scores in the checkpoint."""
    from model.autoencoder import model_from_checkpoint
    model = model_from_checkpoint(ckpt, device)
    k = ckpt["config"]["latent_size"]
    test_mse = model_mse(model, data.test_x, device)
    best = ckpt["history"]["epoch"].index(ckpt["best_epoch"])
    pca = baseline["scores"][str(k)]
    row = {"best_epoch": ckpt["best_epoch"] + 1, "epochs_run": len(ckpt["history"]["epoch"]),
           "val_mse": ckpt["history"]["val_mse"][best], "test_mse": test_mse, "test_psnr": psnr(test_mse),
           "pca_test_mse": pca["test_mse"], "pca_test_psnr": pca["test_psnr"],
           "mse_vs_pca": test_mse / pca["test_mse"] if pca["test_mse"] > 0 else float("nan"),
           "train_seconds": sum(ckpt["history"]["seconds"]),
           "optimiser_steps": caveats.optimiser_steps(len(ckpt["history"]["epoch"]), ckpt["dataset"]["num_train"],
                                                      ckpt["train"]["batch_size"])}
    row["caveats"] = caveats.training_caveats(row["optimiser_steps"], row["mse_vs_pca"])  # the later steps repeat them
    ckpt["test_metrics"] = row
    files.save_torch(ckpt, path)
    return row


def model_caveats(rows: dict) -> list[str]:
    """Each model's caveats, named by its latent size."""
    return caveats.of_models({k: r.get("caveats", []) for k, r in rows.items()})


def print_summary(rows: dict, out: Path) -> None:
    head = f"{'latent':>6} {'best ep':>7} {'val MSE':>9} {'test MSE':>9} {'PSNR dB':>8} {'PCA MSE':>9} {'PCA dB':>7} {'AE/PCA':>7} {'time s':>7}"
    lines = [head, "-" * len(head)]
    for k, r in rows.items():
        lines.append(f"{k:>6} {r['best_epoch']:>7} {r['val_mse']:>9.5f} {r['test_mse']:>9.5f} {r['test_psnr']:>8.2f} "
                     f"{r['pca_test_mse']:>9.5f} {r['pca_test_psnr']:>7.2f} {r['mse_vs_pca']:>7.2f} {r['train_seconds']:>7.0f}")
    tqdm.write("\n".join(lines))
    caveats.print_caveats(model_caveats(rows), tqdm.write)
    tqdm.write(f"artifacts in {out}/: {', '.join(files.checkpoint_path(out, k).name for k in rows)}, "
               f"test_data.pth, pca_baseline.pth, training_curves.png, training_summary.json")
