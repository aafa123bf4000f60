"""Per-epoch side effects of a training, built on rank 0 and handed to the loop (train_model), which
knows nothing of what they do: each sees every epoch's model and checkpoint before the checkpoint is
written, and one that keeps something for --resume names its checkpoint key (state() goes in,
load_state() takes it back). The CSV log and the snapshots are here; the latent record is
animation.TrainingRecord, the TensorBoard scalars tensorboard_log.EpochLog.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

from latentlab import image_grids
from latentlab.data.datasets import to_float
from latentlab.store import atomic, files
from latentlab.store.checkpoints import HISTORY_KEYS
from model.autoencoder import describe


class Hook:
    key: str | None = None  # the checkpoint key of what it keeps for --resume (None: nothing)

    def after_epoch(self, epoch: int, model, ckpt: dict) -> None:
        pass

    def state(self):
        return None

    def load_state(self, saved, start: int) -> None:
        """Continue from a checkpoint's saved state (None: there was none), whose epochs before start stand."""


def load_states(hooks, ckpt: dict | None) -> None:
    """Each hook continues from what it kept in ckpt, the checkpoint a --resume continues (None: none)."""
    start = ckpt["resume"]["epoch"] + 1 if ckpt is not None else 0
    for hook in hooks:
        hook.load_state(ckpt.get(hook.key) if ckpt is not None and hook.key else None, start)


def save_after_hooks(hooks, epoch: int, model, ckpt: dict, path: Path) -> None:
    """The epoch's hooks, then its checkpoint at path with what they keep for --resume."""
    for hook in hooks:
        hook.after_epoch(epoch, model, ckpt)
        if hook.key:
            ckpt[hook.key] = hook.state()
    files.save_torch(ckpt, path)


class CsvLog(Hook):
    """train_log_latent_size_{N}.csv: the whole history, rewritten each epoch."""

    def __init__(self, path: Path):
        self.path = path

    def after_epoch(self, epoch, model, ckpt):
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(HISTORY_KEYS)
        for row in zip(*(ckpt["history"][k] for k in HISTORY_KEYS)):
            w.writerow([row[0] + 1, *row[1:]])
        atomic.atomic_write(self.path, lambda f: f.write(buf.getvalue().encode()))


class Snapshots(Hook):
    """reconstructions_latent_size_{N}_epoch_{E}.png of the snapshot images every `every` epochs and at the last."""

    def __init__(self, images_u8: torch.Tensor, device, every: int, num_epochs: int, family: str, out: Path):
        self.images, self.device, self.every, self.num_epochs = images_u8, device, every, num_epochs
        self.family, self.out = family, out

    def after_epoch(self, epoch, model, ckpt):
        last = epoch + 1 >= self.num_epochs or ckpt["stopped_early"]
        if (epoch + 1) % self.every and not last:
            return
        k = model.config.latent_size
        with torch.no_grad():
            model.eval()
            x = to_float(self.images.to(self.device))
            rec = model.reconstruct(x).float().cpu()
        fig = image_grids.image_rows([("original", x.cpu()), (f"{k}-d", rec)],
                               f"{describe(self.family, k)}: validation images after epoch {epoch + 1}")
        files.save_figure(fig, self.out / f"reconstructions_latent_size_{k}_epoch_{epoch + 1:03d}.png")


class Callback(Hook):
    """fn(latent_size, epoch, model, ckpt) after each epoch (benchmarks that score every epoch's model)."""

    def __init__(self, fn, latent_size: int):
        self.fn, self.latent_size = fn, latent_size

    def after_epoch(self, epoch, model, ckpt):
        self.fn(self.latent_size, epoch, model, ckpt)
