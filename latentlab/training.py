"""The training loop: data resident as uint8 tensors, batches as index slices of a seeded
permutation, model selection on a validation split, early stopping, exact resume, bf16 autocast
(on CUDA, and on CPUs with native bf16 instructions; see use_bf16), and DistributedDataParallel
when launched with torchrun.

Determinism: every epoch draws its permutation from a generator seeded by (seed, epoch) and
reseeds torch's global RNG (denoising noise, VAE sampling) by (seed, epoch, rank). So an epoch
depends only on the weights and optimizer state at its start, which the checkpoint holds: a run
resumed after a crash ends exactly where an uninterrupted one ends.
"""
from __future__ import annotations

import csv
import io
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from latentlab import artifacts
from latentlab.cli import UserError
from latentlab.datasets import to_float
from model.autoencoder import ModelConfig, build_model

try:
    from importlib.metadata import version as _pkg_version
except ImportError:  # pragma: no cover
    _pkg_version = None


@dataclass
class TrainSettings:
    num_epochs: int = 10
    batch_size: int = 128  # the global batch: under torchrun each of W processes takes batch_size / W
    lr: float = 3e-3  # the peak learning rate
    lr_schedule: str = "cosine"  # cosine: decay per step from lr to 0 over num_epochs; constant
    patience: int = 0  # stop after this many epochs without a better validation loss; 0 = never
    seed: int = 0
    val_fraction: float = 0.1
    snapshot_every: int = 5
    precision: str = "auto"  # auto | fp32 | bf16: see use_bf16
    quiet: bool = False


PRECISIONS = ("auto", "fp32", "bf16")
# bf16 autocast on a CPU only for images of at least this many pixels: on a 2-core AVX512-BF16 CPU
# it made 28x28 and 32x32 training steps 1.3-1.4x faster, and 8x8 ones (digits) up to 1.4x slower
BF16_CPU_MIN_PIXELS = 16 * 16


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX); without them, torch's
    bf16 kernels emulate it and are slower than fp32."""
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def use_bf16(precision: str, device: torch.device, image_shape) -> bool:
    """Whether training runs its forward pass under bf16 autocast (weights, gradients and the
    optimizer stay fp32). precision "fp32" / "bf16" decide; "auto" picks bf16 on CUDA GPUs, and on
    CPUs with native bf16 (cpu_has_native_bf16) for images of BF16_CPU_MIN_PIXELS or more; fp32
    elsewhere (CPUs without it, MPS, small images)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return True
    pixels = int(image_shape[-1]) * int(image_shape[-2])
    return device.type == "cpu" and pixels >= BF16_CPU_MIN_PIXELS and cpu_has_native_bf16()


# ---------------------------------------------------------------- torchrun
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): nccl on GPUs, gloo on CPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def close_distributed(d: Dist) -> None:
    """Leave the process group that init_distributed joined, so every process exits cleanly.
    The barrier first: no process tears its connections down while another still talks on them
    (seen once in CI without it: gloo aborted rank 0 at exit, after every artifact was written)."""
    if d.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _all_reduce_sum(values: list[float], device, d: Dist) -> list[float]:
    if d.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_ranks_ok(ok: bool, device, d: Dist) -> bool:
    """True when ok is true on every process (one tiny all-reduce under torchrun)."""
    return _all_reduce_sum([0.0 if ok else 1.0], device, d)[0] == 0


def run_agreed(fn, device, d: Dist, main_only: bool = False):
    """fn() on every process (on rank 0 alone when main_only), then agree: a UserError on any
    process stops all of them here, each with one line, instead of leaving the others waiting in
    the next collective until a timeout. Returns fn's result (None where it did not run)."""
    result, err = None, None
    if d.main or not main_only:
        try:
            result = fn()
        except UserError as e:
            err = e
    if not all_ranks_ok(err is None, device, d):
        raise err or UserError(f"process {d.rank} of {d.world} stops: another process failed (its message is above)")
    return result


def load_in_turn(load, device, d: Dist):
    """load() on every process, local rank 0 of each machine first: a dataset it downloads lands
    once, and the others then read its files. Errors stop every process (run_agreed)."""
    first = run_agreed(load if d.local_rank == 0 else (lambda: None), device, d)
    if d.world == 1:
        return first
    later = run_agreed(load if d.local_rank != 0 else (lambda: None), device, d)
    return first if d.local_rank == 0 else later


def local_batch_size(batch_size: int, d: Dist) -> int:
    """--batch_size is the global batch: each of the W processes takes batch_size / W per step."""
    if batch_size % d.world:
        raise UserError(f"--batch_size {batch_size} is the global batch and must split evenly across the "
                        f"{d.world} processes; use a multiple of {d.world}")
    return batch_size // d.world


# ---------------------------------------------------------------- data
def split_train_val(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded split of the training items into (train indices, validation indices)."""
    g = torch.Generator().manual_seed(seed + 7919)
    perm = torch.randperm(n, generator=g)
    n_val = max(1, int(round(n * val_fraction))) if val_fraction > 0 else 0
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def place_data(x_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Keep the uint8 tensor on the GPU when there is one and it fits easily, else on the CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if x_u8.numel() < free // 4:
            return x_u8.to(device)
    elif device.type == "mps":
        return x_u8.to(device)
    return x_u8


def epoch_shard(n: int, seed: int, epoch: int, d: Dist) -> torch.Tensor:
    """This process's share of a seeded permutation of range(n): disjoint across ranks, padded by
    wrapping round so every rank takes the same number of steps, and every item is covered.

    Ranks take every W-th item (rank r: perm[r::W]), so with the global batch B split evenly
    (b = B / W per rank), step i of the W ranks together sees perm[i*B:(i+1)*B], exactly the
    batch of step i in one process: a DDP run follows the single-process run, up to summation
    order and the at most W-1 wrapped items of the last step."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    if d.world > 1:
        total = math.ceil(n / d.world) * d.world
        perm = perm.repeat(math.ceil(total / n))[:total]  # wrap round (more than once when n < world)
        perm = perm[d.rank::d.world]
    return perm


# ---------------------------------------------------------------- one model
def library_versions() -> dict:
    out = {"torch": str(torch.__version__)}
    for pkg in ("torchvision", "numpy", "scikit-learn"):
        try:
            out[pkg] = _pkg_version(pkg)
        except Exception:
            pass
    return out


def learning_rate(settings: TrainSettings, step: int, steps_per_epoch: int) -> float:
    """The learning rate of a global step: a cosine from lr down to 0 over all epochs
    (Loshchilov & Hutter 2017, without restarts), or constant. A pure function of the step, so a
    resumed run follows the same schedule."""
    if settings.lr_schedule == "constant":
        return settings.lr
    total = max(1, settings.num_epochs * steps_per_epoch)
    return 0.5 * settings.lr * (1.0 + math.cos(math.pi * min(step, total) / total))


def _state_to_cpu(state: dict) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def _optimizer_to_cpu(state: dict) -> dict:
    out = {"state": {}, "param_groups": state["param_groups"]}
    for k, s in state["state"].items():
        out["state"][k] = {n: (v.detach().to("cpu", copy=True) if torch.is_tensor(v) else v) for n, v in s.items()}
    return out


def _best(history: dict) -> tuple[int | None, float]:
    if not history["val_loss"]:
        return None, math.inf
    i = min(range(len(history["val_loss"])), key=lambda j: history["val_loss"][j])
    return history["epoch"][i], history["val_loss"][i]


def write_log(history: dict, path: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    keys = ["epoch", "train_loss", "val_loss", "val_mse", "seconds", "images_per_s"]
    w.writerow(keys)
    for row in zip(*(history[k] for k in keys)):
        w.writerow([row[0] + 1, *row[1:]])
    artifacts.atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


@torch.no_grad()
def evaluate(model, x_u8: torch.Tensor, idx: torch.Tensor, device, batch: int, amp: bool, d: Dist) -> tuple[float, float]:
    """(objective, MSE) over x_u8[idx], averaged over every pixel value and all ranks."""
    model.eval()
    shard = idx[d.rank::d.world]
    obj_sum = mse_sum = 0.0
    n_img = 0
    for part in shard.split(batch):
        x = to_float(x_u8[part.to(x_u8.device)].to(device, non_blocking=True))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits, kl = model(x)
        obj_sum += model.objective(logits, kl, x).item() * len(part)
        mse_sum += (torch.sigmoid(logits.float()) - x).pow(2).mean().item() * len(part)
        n_img += len(part)
    obj_sum, mse_sum, n_img = _all_reduce_sum([obj_sum, mse_sum, float(n_img)], device, d)
    return obj_sum / max(n_img, 1), mse_sum / max(n_img, 1)


CHECK_EVERY = 20  # steps between checks that the running loss is finite (one host sync each)
HISTORY_KEYS = ("epoch", "train_loss", "val_loss", "val_mse", "seconds", "images_per_s")


def _diverged(config: ModelConfig, what: str, value, epoch: int, where: str, ckpt_path: Path, lr: float) -> UserError:
    kept = (f"the last good checkpoint ({ckpt_path}, epoch {epoch}) is kept" if epoch > 0
            else "no checkpoint of it was written")
    return UserError(f"training of the latent-{config.latent_size} {config.family} model diverged: the {what} became "
                     f"{value} in epoch {epoch + 1}{where}; {kept}; lower --lr (now {lr:g}) and retry")


def _finite_everywhere(value, device, d: Dist) -> bool:
    return all_ranks_ok(bool(torch.isfinite(torch.as_tensor(value)).all()), device, d)


def _load_resume(ckpt_path: Path, config: ModelConfig, meta: dict, train_meta: dict, model, opt):
    """The checkpoint to resume from (None when there is none yet), loaded into model and opt."""
    if not ckpt_path.is_file():
        return None
    ckpt = artifacts.load_checkpoint(ckpt_path)
    defaults = asdict(TrainSettings())  # for settings newer than the checkpoint
    for key in ("batch_size", "lr", "lr_schedule", "seed", "val_fraction", "precision"):
        was = ckpt.get("train", {}).get(key, defaults[key])
        if was != train_meta[key]:
            raise UserError(f"--resume: {ckpt_path} was trained with {key}={was}, "
                            f"not {train_meta[key]}; use the same flags or drop --resume")
    if ckpt["config"] != config.to_dict() or ckpt["dataset"].get("name") != meta["dataset"]["name"]:
        raise UserError(f"--resume: {ckpt_path} holds another model or dataset "
                        f"({ckpt['config']['family']}, {ckpt['dataset'].get('name')}); "
                        f"use the same flags or drop --resume")
    if "resume" not in ckpt or set(ckpt["history"]) != set(HISTORY_KEYS):
        raise UserError(f"--resume: {ckpt_path} has no resume state or history; drop --resume to start over")
    try:
        model.load_state_dict(ckpt["resume"]["state_dict"])
        opt.load_state_dict(ckpt["resume"]["optimizer"])
    except (ValueError, RuntimeError, KeyError, TypeError, IndexError) as e:
        raise UserError(f"--resume: the optimizer state in {ckpt_path} does not fit the model "
                        f"({type(e).__name__}); drop --resume to start over")
    return ckpt


def train_model(config: ModelConfig, train_x: torch.Tensor, train_idx: torch.Tensor, val_idx: torch.Tensor,
                settings: TrainSettings, device: torch.device, ckpt_path: Path, meta: dict,
                resume: bool = False, d: Dist = Dist(), on_epoch=None) -> dict:
    """Train one model on train_x[train_idx], select on train_x[val_idx], checkpoint every epoch
    to ckpt_path (rank 0), and return the final checkpoint dict.

    meta: what the checkpoint carries besides the training state (dataset name, class names, ...).
    on_epoch(epoch, model, ckpt): called on rank 0 after each checkpoint (snapshots, logs).
    """
    torch.manual_seed(settings.seed)  # the same initial weights for the same seed and config
    try:
        model = build_model(config).to(device)
    except (RuntimeError, MemoryError) as e:  # torch.OutOfMemoryError is a RuntimeError
        if not isinstance(e, MemoryError) and "memory" not in str(e) and "allocate" not in str(e):
            raise
        raise UserError(f"the latent-{config.latent_size} {config.family} model does not fit in memory on {device}; "
                        f"lower --latent_size or --image_size")
    amp = use_bf16(settings.precision, device, config.image_shape)
    channels_last = config.channels_last  # faster convolutions on CPUs and GPUs
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    history = {k: [] for k in HISTORY_KEYS}
    best_state, start = None, 0
    train_meta = {k: v for k, v in asdict(settings).items() if k != "quiet"}
    local_batch = local_batch_size(settings.batch_size, d)

    ckpt = run_agreed(lambda: _load_resume(ckpt_path, config, meta, train_meta, model, opt), device, d) if resume else None
    if ckpt is not None:
        history = {k: list(v) for k, v in ckpt["history"].items()}
        best_state = ckpt["state_dict"]
        start = ckpt["resume"]["epoch"] + 1
    if d.world > 1:  # every process must resume from the same epoch (one file on a shared file system)
        total, squares = _all_reduce_sum([float(start), float(start) ** 2], device, d)
        if total * total != d.world * squares:  # equality (Cauchy-Schwarz) only when all starts are equal
            raise UserError(f"--resume: the processes found different checkpoints at {ckpt_path} (this one: "
                            f"{'none' if ckpt is None else f'epoch {start}'}); put --output_dir on a file system "
                            f"every machine shares")
    if ckpt is not None:
        if ckpt.get("stopped_early") or start >= settings.num_epochs:
            if d.main and not settings.quiet:
                print(f"{ckpt_path.name}: already finished ({start} epochs), skipping")
            return ckpt

    net = model
    if d.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    ckpt = None
    stopped_early = False
    for epoch in range(start, settings.num_epochs):
        t0 = time.perf_counter()
        torch.manual_seed(settings.seed * 1_000_003 + epoch * 1009 + d.rank)  # noise and VAE sampling
        shard = train_idx[epoch_shard(len(train_idx), settings.seed, epoch, d)].to(train_x.device)
        model.train()
        loss_sum, seen = 0.0, 0
        steps = math.ceil(len(shard) / local_batch)
        bar = tqdm(total=steps, desc=f"latent {config.latent_size:>4} epoch {epoch + 1}/{settings.num_epochs}",
                   disable=settings.quiet or not d.main, leave=False, dynamic_ncols=True)
        for i in range(steps):
            idx = shard[i * local_batch:(i + 1) * local_batch]
            for group in opt.param_groups:
                group["lr"] = learning_rate(settings, epoch * steps + i, steps)
            x = to_float(train_x[idx].to(device, non_blocking=True))
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            x_in = x + config.noise_std * torch.randn_like(x) if config.noise_std > 0 else x  # denoising
            try:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    logits, kl = net(x_in)
                loss = model.objective(logits, kl, x)
                opt.zero_grad(set_to_none=True)
                loss.backward()
            except torch.cuda.OutOfMemoryError:  # torch.OutOfMemoryError in torch >= 2.5
                raise UserError(f"out of memory on {device} with {local_batch} images per step "
                                f"(--batch_size {settings.batch_size}); lower --batch_size")
            opt.step()
            loss_sum += loss.detach() * len(idx)  # a tensor: no device sync per step
            seen += len(idx)
            if (i + 1) % CHECK_EVERY == 0 or i == steps - 1:  # NaN and inf stay in the sum: stop early
                if not _finite_everywhere(loss_sum, device, d):
                    raise _diverged(config, "loss", float(loss_sum), epoch, f" (by step {i + 1} of {steps})",
                                    ckpt_path, settings.lr)
            if not bar.disable and (i % 20 == 0 or i == steps - 1):
                bar.set_postfix(loss=f"{loss.item():.5f}",
                                img_s=f"{seen * d.world / (time.perf_counter() - t0):.0f}")
            bar.update(1)
        bar.close()
        train_loss, seen_all = _all_reduce_sum([float(loss_sum), float(seen)], device, d)
        train_loss /= seen_all
        val_loss, val_mse = evaluate(model, train_x, val_idx, device, 1024, amp, d)
        if not math.isfinite(val_loss):
            raise _diverged(config, "validation loss", val_loss, epoch, "", ckpt_path, settings.lr)
        seconds = time.perf_counter() - t0
        for k, v in zip(history, (epoch, train_loss, val_loss, val_mse, seconds, seen_all / seconds)):
            history[k].append(v)
        best_epoch, _ = _best(history)
        if best_epoch == epoch:
            best_state = _state_to_cpu(model.state_dict())
        if d.main and not settings.quiet:
            tqdm.write(f"latent {config.latent_size:>4} | epoch {epoch + 1:>3}/{settings.num_epochs} | "
                       f"train {train_loss:.5f} | val {val_loss:.5f} | val MSE {val_mse:.5f} | "
                       f"{seen_all / seconds:,.0f} img/s{' *' if best_epoch == epoch else ''}")
        stopped_early = bool(settings.patience and epoch - best_epoch >= settings.patience)
        ckpt = {
            "kind": "checkpoint", "format_version": artifacts.FORMAT_VERSION,
            "config": config.to_dict(), "state_dict": best_state, **meta,
            "train": {**train_meta, "processes": d.world, "autocast": "bf16" if amp else "fp32"},
            "history": history, "best_epoch": best_epoch,
            "finished": stopped_early or epoch + 1 >= settings.num_epochs, "stopped_early": stopped_early,
            "resume": {"epoch": epoch, "state_dict": _state_to_cpu(model.state_dict()),
                       "optimizer": _optimizer_to_cpu(opt.state_dict())},
            "versions": library_versions(),
        }

        def write():
            artifacts.save_torch(ckpt, ckpt_path)
            if on_epoch:
                on_epoch(epoch, model, ckpt)
        run_agreed(write, device, d, main_only=True)  # a full disk on rank 0 stops every rank
        if stopped_early:
            if d.main and not settings.quiet:
                tqdm.write(f"latent {config.latent_size:>4} | early stop: no better validation loss for "
                           f"{settings.patience} epochs; best epoch {best_epoch + 1}")
            break
    return ckpt
