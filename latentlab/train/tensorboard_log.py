"""TensorBoard logs of a training (`train.py --tensorboard`) and the Embedding Projector of the
latents (also from `encode_latent_space.py --tensorboard`), written with torch's SummaryWriter
into <output_dir>/tensorboard/<family>_latent_size_<N>/, one run per model.

    tensorboard --logdir output/tensorboard
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from latentlab.cli import UserError
from latentlab.data.datasets import to_float
from latentlab.train.hooks import Hook

SPRITE_LIMIT = 8192  # TensorBoard's projector refuses sprites wider or taller than this many pixels
PROJECTOR_SAMPLES = 1000  # test images train.py sends to the projector (as encode_latent_space.py by default)
INSTALL = "TensorBoard is not installed; install it with `pip install tensorboard` (or drop --tensorboard)"


def require_tensorboard() -> None:
    """Fail at once, in one line, when --tensorboard is asked for without TensorBoard installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise UserError(INSTALL) from None


def run_dir(output_dir, family: str, latent_size: int) -> Path:
    """The run folder of one model: the same for its training and its encoded latents."""
    return Path(output_dir) / "tensorboard" / f"{family}_latent_size_{latent_size}"


def open_writer(folder: Path):
    require_tensorboard()
    from torch.utils.tensorboard import SummaryWriter
    try:
        return SummaryWriter(log_dir=str(folder))
    except OSError as e:
        raise UserError(f"cannot write to {folder}: {e.strerror or e}; choose a writable --output_dir")


class EpochLog(Hook):
    """A model's training in TensorBoard: its graph after the first epoch, then each epoch's scalars
    (from its checkpoint) and the reconstructions of its record (when recorded)."""

    def __init__(self, writer, example_u8: torch.Tensor, device):
        self.writer, self.example, self.device = writer, example_u8, device

    def after_epoch(self, epoch, model, ckpt):
        if epoch == 0:
            self.log_graph(model)
        h, step, writer = ckpt["history"], epoch + 1, self.writer
        writer.add_scalar("loss/train", h["train_loss"][-1], step)
        writer.add_scalar("loss/validation", h["val_loss"][-1], step)
        writer.add_scalar("mse/validation", h["val_mse"][-1], step)
        writer.add_scalar("images_per_s", h["images_per_s"][-1], step)
        # the learning rate of the epoch's last step, as the scheduler left it in the optimizer
        writer.add_scalar("learning_rate", ckpt["resume"]["optimizer"]["param_groups"][0]["lr"], step)
        record = ckpt.get("record")
        if record is not None and len(record["epoch"]) and int(record["epoch"][-1]) == epoch:
            from torchvision.utils import make_grid  # here: importing torchvision is slow, and --tensorboard rare
            grid = torch.cat([to_float(record["originals"]), to_float(record["reconstructions"][-1])])
            writer.add_image("reconstructions (top: validation images, bottom: reconstructed)",
                             make_grid(grid, nrow=len(record["originals"]), pad_value=1.0), step)
        writer.flush()

    def log_graph(self, model) -> None:
        """The model graph, traced on the example batch; skipped with a note where tracing fails."""
        import warnings
        model.eval()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's warnings about the VAE's sampling branch
                self.writer.add_graph(model, to_float(self.example.to(self.device)))
        except Exception as e:  # a model the tracer cannot follow still trains and logs its scalars
            from tqdm import tqdm
            tqdm.write(f"note: TensorBoard graph not written ({type(e).__name__})")


def log_hparams(writer, hparams: dict, metrics: dict) -> None:
    """The run's settings beside its final metrics (the HPARAMS tab), in the run's own folder."""
    clean = {k: v for k, v in hparams.items() if isinstance(v, (int, float, str, bool))}
    writer.add_hparams(clean, {f"hparam/{k}": float(v) for k, v in metrics.items()}, run_name=".")
    writer.flush()


def sprite_images(images_u8: torch.Tensor) -> tuple[torch.Tensor, str | None]:
    """The thumbnails of the sprite, float (n, C, h, w) in [0, 1], downscaled so that the square
    sprite (ceil(sqrt(n)) thumbnails a side) stays within SPRITE_LIMIT; with a note when they were."""
    n, _, h, w = images_u8.shape
    per_side = math.ceil(math.sqrt(n))
    side = SPRITE_LIMIT // per_side
    x = to_float(images_u8)
    if max(h, w) <= side:
        return x, None
    scale = side / max(h, w)
    size = (max(1, int(h * scale)), max(1, int(w * scale)))
    x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    return x, (f"note: the projector's sprite thumbnails were downscaled from {h}x{w} to {size[0]}x{size[1]} "
               f"pixels so that {n} of them fit TensorBoard's {SPRITE_LIMIT}x{SPRITE_LIMIT} sprite limit")


def log_embedding(writer, latents, labels, indices, class_names: list, images_u8: torch.Tensor, tag: str,
                  step: int) -> str | None:
    """The latents (n, k) in the projector: class name and test index as metadata, the images as
    the sprite. Returns the note of sprite_images (None when the thumbnails kept their size)."""
    sprite, note = sprite_images(images_u8)
    metadata = [[str(class_names[int(c)]), str(int(i))] for c, i in zip(labels, indices)]
    writer.add_embedding(torch.as_tensor(latents, dtype=torch.float32), metadata=metadata, label_img=sprite,
                         global_step=step, tag=tag, metadata_header=["class", "test index"])
    writer.flush()
    return note
