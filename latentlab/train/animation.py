"""Watch it learn: a per-epoch record of each model during training, and the animations drawn from it.

`TrainingRecord` keeps, after every epoch, a 2-D view of the latents of a fixed seeded sample of
validation images (the latents themselves for the 2-d model; for an N-d model the PCA of that
epoch's latents, turned by an orthogonal Procrustes rotation to best match the previous frame) and
the reconstructions of the snapshot images. The record is a dict of plain tensors that the
checkpoint carries, so `--resume` continues it. `write_animations` turns it into
latent_evolution_latent_size_{N}.gif and reconstructions_latent_size_{N}.gif (and .mp4 of the
latents where ffmpeg is present).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
from matplotlib import animation
from scipy.linalg import orthogonal_procrustes
from tqdm import tqdm

from latentlab import image_grids, plots
from latentlab.plots import ROBUST_PERCENTILES as AXIS_PERCENTILES, fixed_limits
from latentlab.cli import UserError
from latentlab.data.datasets import to_float
from latentlab.train import seeds
from latentlab.train.hooks import Hook

RECORD_IMAGES = 2000  # validation images whose latents are recorded each epoch (fewer when the split is smaller)
FPS = 2
OUTPUTS = ("latent_evolution_latent_size_*.gif", "latent_evolution_latent_size_*.mp4",
           "reconstructions_latent_size_*.gif")


def record_sample(val_idx: torch.Tensor, seed: int) -> torch.Tensor:
    """The validation items recorded each epoch: a seeded sample of at most RECORD_IMAGES, in split order."""
    n = min(RECORD_IMAGES, len(val_idx))
    pick = torch.randperm(len(val_idx), generator=torch.Generator().manual_seed(seeds.record(seed)))[:n]
    return val_idx[pick.sort().values]


def _pca_2d(z: np.ndarray) -> np.ndarray:
    """The top two principal components' coordinates of z (n, k)."""
    zc = z - z.mean(0)
    _, _, vt = np.linalg.svd(zc, full_matrices=False)
    return zc @ vt[:2].T


class TrainingRecord(Hook):
    """The per-epoch record of one model, kept in its checkpoint under "record". images: the training
    items (N, C, H, W) uint8, wherever they live; sample / shots: indices of the recorded and the
    snapshot validation images."""
    key = "record"

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, sample: torch.Tensor, shots: torch.Tensor,
                 latent_size: int, device):
        self.images, self.device, self.latent_size = images, device, latent_size
        self.record = {"indices": sample.cpu(), "labels": labels[sample.cpu()].cpu().long(),
                       "shot_indices": shots.cpu(), "originals": images[shots.to(images.device)].cpu(),
                       "view": "latents" if latent_size == 2 else "pca_procrustes",
                       "epoch": torch.zeros(0, dtype=torch.long), "val_loss": torch.zeros(0, dtype=torch.float64),
                       "xy": torch.zeros(0, len(sample), 2),
                       "reconstructions": torch.zeros((0, len(shots), *images.shape[1:]), dtype=torch.uint8)}

    def state(self) -> dict:
        return self.record

    def load_state(self, saved: dict | None, start: int) -> None:
        """Continue a checkpoint's record (its epochs before start); a record of another sample starts afresh."""
        indices = saved.get("indices") if isinstance(saved, dict) else None
        if torch.is_tensor(indices) and torch.equal(indices, self.record["indices"]):
            keep = saved["epoch"] < start
            self.record = {**saved, **{k: saved[k][keep] for k in ("epoch", "val_loss", "xy", "reconstructions")}}

    @torch.no_grad()
    def after_epoch(self, epoch: int, model, ckpt: dict) -> None:
        """Record the model as it is after `epoch`."""
        model.eval()
        parts = []
        for part in self.record["indices"].split(1024):
            x = to_float(self.images[part.to(self.images.device)].to(self.device))
            parts.append(model.encode(x).float().cpu())
        z = torch.cat(parts).numpy().astype(np.float64)
        if self.latent_size == 2:
            xy = z
        else:
            xy = _pca_2d(z)
            if len(self.record["xy"]):  # turn (and possibly mirror) onto the previous frame
                rotation, _ = orthogonal_procrustes(xy, self.record["xy"][-1].numpy().astype(np.float64))
                xy = xy @ rotation
        rec = model.reconstruct(to_float(self.record["originals"].to(self.device))).float().cpu()
        r = self.record
        self.record = {**r, "epoch": torch.cat([r["epoch"], torch.tensor([epoch])]),
                       "val_loss": torch.cat([r["val_loss"], torch.tensor([ckpt["history"]["val_loss"][-1]],
                                                                          dtype=torch.float64)]),
                       "xy": torch.cat([r["xy"], torch.from_numpy(xy).float()[None]]),
                       "reconstructions": torch.cat([r["reconstructions"],
                                                     (rec.clamp(0, 1) * 255).round().to(torch.uint8)[None]])}


# ---------------------------------------------------------------- drawing
def save_gif(fig, draw_frame, frames: int, path: Path) -> Path:
    """Draw frames 0..frames-1 with draw_frame(i) and write them with matplotlib's Pillow writer,
    one figure draw per frame (FuncAnimation.save draws each frame twice or more). Atomic: written in a
    temp folder beside path (the writer takes a file name), then os.replace onto path."""
    path = Path(path)
    # tight_layout leaves a placeholder layout engine, for which every savefig lays the figure out
    # again in a draw of its own: the layout is fixed by now, so no engine
    fig.set_layout_engine(None)
    try:
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
            writer = animation.PillowWriter(fps=FPS)
            with writer.saving(fig, str(Path(tmp) / path.name), dpi=fig.dpi):
                for i in range(frames):
                    draw_frame(i)
                    writer.grab_frame()
            os.replace(Path(tmp) / path.name, path)
    except OSError as e:  # worded as latentlab.store.atomic.atomic_write words it
        raise UserError(f"cannot write {path}: {e.strerror or e} (disk full or not writable?); "
                        f"free space or choose another --output_dir")
    return path


def gif_to_mp4(gif: Path, mp4: Path) -> Path | None:
    """The GIF's frames as an H.264 MP4 (re-encoded by ffmpeg, not drawn again); None without ffmpeg."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return None
    with tempfile.TemporaryDirectory(dir=mp4.parent, prefix=f".{mp4.name}.") as tmp:
        # yuv420p (what players expect) needs even sides
        try:
            subprocess.run([ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-i", str(gif), "-pix_fmt", "yuv420p",
                            "-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2", "-movflags", "+faststart",
                            str(Path(tmp) / mp4.name)], check=True, capture_output=True, text=True)
            os.replace(Path(tmp) / mp4.name, mp4)
        except (OSError, subprocess.CalledProcessError) as e:  # the GIF is the artifact; the MP4 a convenience
            tqdm.write(f"note: {mp4.name} not written ({(getattr(e, 'stderr', '') or str(e)).strip()})")
            return None
    return mp4


def latent_animation(record: dict, class_names: list, what: str, num_epochs: int):
    """The recorded 2-D views, points coloured by class: (figure, draw_frame(i) for epoch i of the record)."""
    import matplotlib.pyplot as plt
    xy, labels = record["xy"].numpy(), record["labels"].numpy()
    colors = np.array(plots.class_colors(len(class_names)))[labels]
    (x0, x1), (y0, y1) = fixed_limits(xy)
    fig, ax = plt.subplots(figsize=(7.2, 5.4))
    dots = ax.scatter(xy[0, :, 0], xy[0, :, 1], s=plots._point_size(len(labels)), c=colors, alpha=0.8, linewidths=0)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    aligned = record["view"] != "latents"
    ax.set_xlabel("principal component 1 (aligned)" if aligned else "latent 1")
    ax.set_ylabel("principal component 2 (aligned)" if aligned else "latent 2")
    ax.grid(alpha=0.3)
    ax.legend(handles=[plt.Line2D([], [], marker="o", linestyle="", color=plots.class_colors(len(class_names))[c],
                                  label=str(name)) for c, name in enumerate(class_names)],
              title="class", loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, frameon=False,
              ncol=1 if len(class_names) <= 25 else 2)
    view = ("PCA of each epoch's latents, rotated to match the previous frame (orthogonal Procrustes)"
            if aligned else "the latents themselves")
    ax.text(0.0, -0.13, f"{len(labels)} seeded validation images; {view};\naxes fixed over all epochs "
            f"({AXIS_PERCENTILES[0]:g}-{AXIS_PERCENTILES[1]:g} percentile of every frame's points)",
            transform=ax.transAxes, fontsize=7, va="top")
    title = ax.set_title("", fontsize=9)

    def frame(i):
        dots.set_offsets(xy[i])
        title.set_text(f"{what}\nepoch {int(record['epoch'][i]) + 1}/{num_epochs}, "
                       f"validation loss {float(record['val_loss'][i]):.5f}")
    frame(0)  # the two-line title in place before the layout leaves room for it
    fig.tight_layout()
    return fig, frame


def reconstruction_animation(record: dict, what: str, num_epochs: int):
    """Originals above their reconstructions: (figure, draw_frame(i) for epoch i of the record)."""
    originals = to_float(record["originals"])
    recs = record["reconstructions"]
    fig = image_grids.image_rows([("original", originals), ("reconstructed", to_float(recs[0]))], f"{what}\n")
    n = len(originals)
    images = fig.axes[0].images[n:]  # the second row's
    title = fig._suptitle  # matplotlib keeps the suptitle's Text there (no public getter)

    def frame(i):
        for c, im in enumerate(images):
            im.set_data(image_grids.image_for_display(to_float(recs[i][c])))
        title.set_text(f"{what}\nvalidation images after epoch {int(record['epoch'][i]) + 1}/{num_epochs}, "
                       f"validation loss {float(record['val_loss'][i]):.5f}")
    return fig, frame


def write_animations(record: dict, out: Path, latent_size: int, what: str, class_names: list,
                     num_epochs: int, mp4: bool = True) -> list[Path]:
    """The record's GIFs (and an MP4 of the latents where ffmpeg is present and mp4 is on)."""
    import matplotlib.pyplot as plt
    frames = len(record["epoch"])
    if frames == 0:
        return []
    fig, frame = latent_animation(record, class_names, f"{what}: 2-D view of the latent space", num_epochs)
    gif = save_gif(fig, frame, frames, out / f"latent_evolution_latent_size_{latent_size}.gif")
    plt.close(fig)
    written = [gif]
    if mp4:
        written.append(gif_to_mp4(gif, gif.with_suffix(".mp4")))
    fig, frame = reconstruction_animation(record, what, num_epochs)
    written.append(save_gif(fig, frame, frames, out / f"reconstructions_latent_size_{latent_size}.gif"))
    plt.close(fig)
    return [p for p in written if p is not None]
