"""The timed paths of benchmarks/bench_train.py, each the same model, batch size and Adam: the bare
step on ready batches (the ceiling), train.py's loop, the per-item PIL path, and torch.compile."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from latentlab.data.datasets import to_float
from latentlab.settings import Settings
from latentlab.train.distributed import World
from latentlab.train.loop import TrainingSplit, train_model
from latentlab.train.precision import use_bf16
from latentlab.train.umap_loss import UmapLoss
from model.autoencoder import build_model

UMAP_WEIGHT = 0.1  # the loss's weight does not change a step's work


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_model(config, device, train_layout: bool):
    """The model as train_model builds it (train_layout) or in its default NCHW form."""
    torch.manual_seed(0)
    model = build_model(config).to(device)
    if train_layout and config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def step_fn(model, opt, device, amp: bool):
    def step(x):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits, kl = model(x)
        loss = model.objective(logits, kl, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss
    return step


def time_steps(step, batches, warmup: int, steps: int, device) -> float:
    """Images/s of step() over `steps` batches drawn from the iterator after `warmup` untimed ones."""
    for _ in range(warmup):
        step(next(batches))
    sync(device)
    t0 = time.perf_counter()
    n = 0
    for _ in range(steps):
        x = next(batches)
        step(x)
        n += len(x)
    sync(device)
    return n / (time.perf_counter() - t0)


def ceiling(config, x_u8, device, args) -> float:
    amp = use_bf16(args.precision, device, config.image_shape)
    model = make_model(config, device, True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fmt = torch.channels_last if config.channels_last else torch.contiguous_format
    ready = [to_float(x_u8[i * args.batch_size:(i + 1) * args.batch_size].to(device)).contiguous(memory_format=fmt)
             for i in range(min(16, len(x_u8) // args.batch_size))]
    cycle = (ready[i % len(ready)] for i in range(10**9))
    return time_steps(step_fn(model, opt, device, amp), cycle, args.warmup, args.steps, device)


def train_loop(config, x_placed, device, args, tmp: Path, umap_graph=None, edges: int = 0) -> float:
    """train_model over warmup + steps batches: epoch 1 warms up, epoch 2 is timed (its images/s).
    With umap_graph (the UMAP graph of those images), the UMAP loss drawing `edges` edges per step."""
    n = args.steps * args.batch_size
    split = TrainingSplit(x_placed, torch.arange(n), torch.arange(n, n + 64))
    settings = Settings(latent_size=config.latent_size, num_epochs=2, batch_size=args.batch_size, snapshot_every=0,
                        precision=args.precision)
    umap = None if umap_graph is None else UmapLoss(umap_graph, split.train, UMAP_WEIGHT, edges)
    ckpt = train_model(config, split, settings, tmp / "bench.pth", {"dataset": {"name": "bench"}},
                       World(device=device), quiet=True, umap=umap)
    return ckpt["history"]["images_per_s"][-1]


class PILImages(torch.utils.data.Dataset):
    """What a torchvision dataset does per item: a PIL image from the stored array, then ToTensor."""

    def __init__(self, x_u8: torch.Tensor, y: torch.Tensor):
        self.x = x_u8.permute(0, 2, 3, 1).numpy()  # (N, H, W, C) as PIL wants it
        self.y = y.numpy()
        from torchvision import transforms
        self.transform = transforms.ToTensor()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        from PIL import Image
        a = self.x[i]
        img = Image.fromarray(a[:, :, 0], mode="L") if a.shape[2] == 1 else Image.fromarray(a, mode="RGB")
        return self.transform(img), int(self.y[i])


def pil_path(config, x_u8, y, device, args, workers: int, train_layout: bool) -> float:
    amp = train_layout and use_bf16(args.precision, device, config.image_shape)
    model = make_model(config, device, train_layout)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n = (args.warmup + args.steps) * args.batch_size
    loader = torch.utils.data.DataLoader(PILImages(x_u8[:n], y[:n]), batch_size=args.batch_size, shuffle=True,
                                         num_workers=workers, pin_memory=device.type == "cuda", drop_last=True)
    fmt = torch.channels_last if train_layout and config.channels_last else torch.contiguous_format
    batches = (x.to(device, non_blocking=True).contiguous(memory_format=fmt) for x, _ in loader)
    return time_steps(step_fn(model, opt, device, amp), batches, args.warmup, args.steps, device)


def compiled(config, x_u8, device, args) -> tuple[float, float]:
    """(compile seconds, steady images/s) of train.py's step under torch.compile."""
    amp = use_bf16(args.precision, device, config.image_shape)
    model = make_model(config, device, True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    step = torch.compile(step_fn(model, opt, device, amp))
    fmt = torch.channels_last if config.channels_last else torch.contiguous_format
    ready = [to_float(x_u8[i * args.batch_size:(i + 1) * args.batch_size].to(device)).contiguous(memory_format=fmt)
             for i in range(min(16, len(x_u8) // args.batch_size))]
    t0 = time.perf_counter()
    step(ready[0])
    step(ready[1])  # the second call may compile the optimizer's graph too
    sync(device)
    compile_s = time.perf_counter() - t0
    cycle = (ready[i % len(ready)] for i in range(10**9))
    return compile_s, time_steps(step, cycle, args.warmup, args.steps, device)
