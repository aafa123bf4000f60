"""The training loop: data resident as uint8 tensors, batches as index slices of a seeded
permutation, model selection on a validation split, early stopping, exact resume, bf16 autocast
(see use_bf16), and DistributedDataParallel under torchrun (latentlab.train.distributed).

Determinism: every epoch draws its permutation by (seed, epoch) and reseeds torch's global RNG
(denoising noise, VAE sampling) by (seed, epoch, rank), so an epoch depends only on the weights and
optimizer state at its start, which the checkpoint holds: a resumed run ends where an uninterrupted
one ends. A memory-mapped dataset (an image folder over --memory_budget) reads each batch in
ascending index order and puts it back in the permutation's order (datasets.take), so the batches
do not depend on where the data lives.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import NamedTuple

import torch
from tqdm import tqdm

from latentlab.store.checkpoints import HISTORY_KEYS
from latentlab.train.checkpoint import best_epoch_of, load_resume, make_checkpoint, to_cpu
from latentlab.train.hooks import load_states, save_after_hooks
from latentlab.cli import UserError, memory_for, progress
from latentlab.data.datasets import take, to_float
from latentlab.train.distributed import World, all_ranks_ok, all_reduce_sum, epoch_shard, local_batch_size, run_agreed
from latentlab.store.replacing import STAGING
from latentlab.settings import Settings
from latentlab.train import seeds
from latentlab.train.precision import use_bf16
from latentlab.train.umap_loss import UmapLoss
from model.autoencoder import FAMILIES, ModelConfig, build_model

CHECK_EVERY = 20  # steps between checks that the running loss is finite (one host sync each)


# ---------------------------------------------------------------- data
class TrainingSplit(NamedTuple):
    images: torch.Tensor  # (N, C, H, W) uint8, where place_data put it
    train: torch.Tensor  # indices of the training images
    val: torch.Tensor  # indices of the validation images


def split_train_val(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded split of the training items into (train indices, validation indices)."""
    g = torch.Generator().manual_seed(seeds.validation(seed))
    perm = torch.randperm(n, generator=g)
    n_val = max(1, int(round(n * val_fraction))) if val_fraction > 0 else 0
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def place_data(x_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Keep the uint8 tensor on the GPU when there is one and it fits easily, else on the CPU (where
    it may be a memory map of an image folder's cache: batches then read from it, see take)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if x_u8.numel() < free // 4:
            return x_u8.to(device)
    elif device.type == "mps":
        return x_u8.to(device)
    return x_u8


# ---------------------------------------------------------------- the loop
def learning_rate(settings: Settings, step: int, steps_per_epoch: int) -> float:
    """The learning rate of a global step: a cosine from lr down to 0 over all epochs
    (Loshchilov & Hutter 2017, without restarts), or constant. A pure function of the step, so a
    resumed run follows the same schedule."""
    if settings.lr_schedule == "constant":
        return settings.lr
    total = max(1, settings.num_epochs * steps_per_epoch)
    return 0.5 * settings.lr * (1.0 + math.cos(math.pi * min(step, total) / total))


def _build(config: ModelConfig, device: torch.device, settings: Settings):
    with memory_for(f"the latent-{config.latent_size} {config.family} model", settings.size_flags(config), device=device):
        model = build_model(config).to(device)
    return model.to(memory_format=torch.channels_last) if config.channels_last else model


def _train_epoch(net, opt, split: TrainingSplit, settings: Settings, epoch: int, amp: bool, world: World,
                 quiet: bool, umap: UmapLoss | None = None) -> tuple[torch.Tensor, int, int, int]:
    """One epoch of this process's shard: (summed loss, images seen, steps run, steps). It stops at
    the first check where the summed loss is not finite on some process. With umap, each step also
    encodes the ends of its drawn graph edges and adds their UMAP loss."""
    model = getattr(net, "module", net)  # under DistributedDataParallel, the model it wraps
    device, config = world.device, model.config
    local_batch = local_batch_size(settings.batch_size, world)
    torch.manual_seed(seeds.epoch(settings.seed, epoch, world.rank))
    shard = split.train[epoch_shard(len(split.train), settings.seed, epoch, world)].to(split.images.device)
    steps = math.ceil(len(shard) / local_batch)
    ends = umap.epoch_ends(steps, settings.seed, epoch, world.rank).to(split.images.device) if umap else None
    model.train()
    loss_sum, seen, t0 = 0.0, 0, time.perf_counter()
    bar = progress(total=steps, desc=f"latent {config.latent_size:>4} epoch {epoch + 1}/{settings.num_epochs}", quiet=quiet)
    with bar:
        for i in range(steps):
            idx = shard[i * local_batch:(i + 1) * local_batch]
            for group in opt.param_groups:
                group["lr"] = learning_rate(settings, epoch * steps + i, steps)
            x = to_float(take(split.images, idx).to(device, non_blocking=True))
            x_ends = None if umap is None else to_float(take(split.images, ends[i]).to(device, non_blocking=True))
            if config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
                x_ends = x_ends if x_ends is None else x_ends.contiguous(memory_format=torch.channels_last)
            x_in = x + config.noise_std * torch.randn_like(x) if config.noise_std > 0 else x  # denoising
            try:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    logits, kl, *codes = net(x_in) if x_ends is None else net(x_in, x_ends)
                loss = model.objective(logits, kl, x) + (umap(codes[0]) if umap is not None else 0.0)
                opt.zero_grad(set_to_none=True)
                loss.backward()
            except torch.cuda.OutOfMemoryError:
                more = f" and {2 * umap.edges} edge ends (--umap_edges {umap.edges})" if umap else ""
                raise UserError(f"out of memory on {device} with {local_batch} images per step{more} "
                                f"(--batch_size {settings.batch_size}); lower --batch_size"
                                f"{' or --umap_edges' if umap else ''}")
            opt.step()
            loss_sum += loss.detach() * len(idx)  # a tensor: no device sync per step
            seen += len(idx)
            if (i + 1) % CHECK_EVERY == 0 or i == steps - 1:  # NaN and inf stay in the sum
                if not all_ranks_ok(bool(torch.isfinite(loss_sum)), world):
                    return loss_sum, seen, i + 1, steps
            if not bar.disable and (i % 20 == 0 or i == steps - 1):
                bar.set_postfix(loss=f"{loss.item():.5f}",
                                img_s=f"{seen * world.size / (time.perf_counter() - t0):.0f}")
            bar.update(1)
    return loss_sum, seen, steps, steps


@torch.no_grad()
def evaluate(model, x_u8: torch.Tensor, idx: torch.Tensor, batch: int, amp: bool, world: World) -> tuple[float, float]:
    """(objective, MSE) over x_u8[idx], averaged over every pixel value and all processes."""
    model.eval()
    obj_sum = mse_sum = 0.0
    n_img = 0
    for part in idx[world.rank::world.size].split(batch):
        x = to_float(x_u8[part.to(x_u8.device)].to(world.device, non_blocking=True))
        with torch.autocast(world.device.type, dtype=torch.bfloat16, enabled=amp):
            logits, kl = model(x)
        obj_sum += model.objective(logits, kl, x).item() * len(part)
        mse_sum += (torch.sigmoid(logits.float()) - x).pow(2).mean().item() * len(part)
        n_img += len(part)
    obj_sum, mse_sum, n_img = all_reduce_sum([obj_sum, mse_sum, float(n_img)], world)
    return obj_sum / max(n_img, 1), mse_sum / max(n_img, 1)


def _diverged(config: ModelConfig, what: str, value, epoch: int, where: str, path: Path,
              settings: Settings) -> UserError:
    if path.parent.name == STAGING:  # an --overwrite's new run: run.py removes it and says so
        kept = ""
    else:
        kept = (f"the last good checkpoint ({path}, epoch {epoch}) is kept; " if epoch > 0
                else "no checkpoint of it was written; ")
    return UserError(f"training of the latent-{config.latent_size} {config.family} model diverged: the {what} became "
                     f"{value} in epoch {epoch + 1}{where}; {kept}lower {divergence_fix(settings.lr, config)} and retry")


def divergence_fix(lr: float, config: ModelConfig) -> str:
    """The settings a diverged training of config can lower, with their values: --lr, and each of
    --beta, --noise_std, --umap_weight where it is in play (the VAE's beta above 1)."""
    causes = [("lr", lr, True), ("beta", config.beta, "beta" in FAMILIES[config.family].flags and config.beta > 1),
              ("noise_std", config.noise_std, config.noise_std > 0),
              ("umap_weight", config.umap_weight, config.umap_weight > 0)]
    return ", ".join(f"--{k} (now {v:g})" for k, v, in_play in causes if in_play)


def train_model(config: ModelConfig, split: TrainingSplit, settings: Settings, path: Path, meta: dict,
                world: World = World(), hooks=(), quiet: bool = False, umap: UmapLoss | None = None) -> dict:
    """Train one model on split.images[split.train], select it on split.images[split.val],
    checkpoint every epoch to path (rank 0), and return the final checkpoint dict.

    meta: what the checkpoint carries besides the training state (dataset name, class names, ...).
    hooks: rank 0's per-epoch side effects (latentlab.train.hooks), run before each checkpoint is
    written. umap: the UMAP loss of split (latentlab.train.umap_loss), added to the training
    objective; the validation loss, which selects the model, stays the reconstruction objective alone.
    """
    quiet = quiet or not world.main
    torch.manual_seed(settings.seed)  # the same initial weights for the same seed and config
    model = _build(config, world.device, settings)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    amp = use_bf16(settings.precision, world.device, config.image_shape)
    local_batch_size(settings.batch_size, world)
    ckpt = load_resume(path, settings, config, meta, model, opt, world) if settings.resume else None
    load_states(hooks, ckpt)
    history, best_state = {k: [] for k in HISTORY_KEYS}, None
    if ckpt is not None:
        if ckpt.get("stopped_early") or ckpt["resume"]["epoch"] + 1 >= settings.num_epochs:
            if not quiet:
                print(f"{path.name}: already finished ({ckpt['resume']['epoch'] + 1} epochs), skipping")
            return ckpt
        history, best_state = {k: list(v) for k, v in ckpt["history"].items()}, ckpt["state_dict"]
    net = model
    if world.size > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[world.device.index] if world.device.type == "cuda" else None)
    name = f"latent {config.latent_size:>4}"
    for epoch in range(len(history["epoch"]), settings.num_epochs):
        t0 = time.perf_counter()
        loss_sum, seen, step, steps = _train_epoch(net, opt, split, settings, epoch, amp, world, quiet, umap)
        loss_sum, seen = all_reduce_sum([float(loss_sum), float(seen)], world)
        if not math.isfinite(loss_sum):
            raise _diverged(config, "loss", loss_sum, epoch, f" (by step {step} of {steps})", path, settings)
        val_loss, val_mse = evaluate(model, split.images, split.val, 1024, amp, world)
        if not math.isfinite(val_loss):
            raise _diverged(config, "validation loss", val_loss, epoch, "", path, settings)
        seconds = time.perf_counter() - t0
        for k, v in zip(HISTORY_KEYS, (epoch, loss_sum / seen, val_loss, val_mse, seconds, seen / seconds)):
            history[k].append(v)
        best_epoch = best_epoch_of(history)
        if best_epoch == epoch:
            best_state = {k: to_cpu(v) for k, v in model.state_dict().items()}
        if not quiet:
            tqdm.write(f"{name} | epoch {epoch + 1:>3}/{settings.num_epochs} | train {loss_sum / seen:.5f} | "
                       f"val {val_loss:.5f} | val MSE {val_mse:.5f} | {seen / seconds:,.0f} img/s"
                       f"{' *' if best_epoch == epoch else ''}")
        stopped_early = bool(settings.patience and epoch - best_epoch >= settings.patience)
        ckpt = make_checkpoint(config, meta, settings, history, best_state, stopped_early, model, opt,
                               {"processes": world.size, "autocast": "bf16" if amp else "fp32"})
        # a full disk on rank 0 stops every rank
        run_agreed(lambda: save_after_hooks(hooks, epoch, model, ckpt, path), world, main_only=True)
        if stopped_early:
            if not quiet:
                tqdm.write(f"{name} | early stop: no better validation loss for {settings.patience} epochs; "
                           f"best epoch {best_epoch + 1}")
            break
    return ckpt
