"""The in-domain classifier whose features score generated images (generate/scores.py): a small conv net
trained once per training split, seeded, for a bounded number of steps, then kept in the output
folder as `feature_classifier_{key}.pth` and reused by every later run and sweep job of that data.

The key hashes the training split (images and labels), the image shape, the classes and this
module's training recipe, so another dataset (or another image size) gets a file of its own and
the file of the first stays. The file loads with weights_only=True and carries what it was trained
on and its accuracy on the test images; one that cannot be read, or that is of another training
split than its name says, is refused in one line and never overwritten.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from latentlab.store import files
from latentlab.cli import UserError, progress
from latentlab.data.datasets import take, to_float

KIND = "feature_classifier"
SIDE = 32  # larger images are shrunk to at most SIDE a side first: a bounded cost per image on any dataset
FEATURES = 128  # the width of the penultimate layer: the features FD and precision/recall are measured in
RECIPE = {"version": 1, "side": SIDE, "widths": [16, 32, 64], "features": FEATURES, "batch": 128, "lr": 2e-3,
          "epochs": 2, "min_steps": 300, "max_steps": 600, "seed": 0}


class FeatureNet(nn.Module):
    """Three stride-2 convolutions (28 -> 14 -> 7 -> 4 pixels), pooled to 4 x 4, a dense layer of
    FEATURES ReLUs, and a linear read-out of the classes. features(x): float images (n, C, H, W) in [0, 1] -> (n, FEATURES)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        a, b, c = RECIPE["widths"]
        self.convs = nn.Sequential(nn.Conv2d(channels, a, 3, 2, 1), nn.ReLU(), nn.Conv2d(a, b, 3, 2, 1), nn.ReLU(),
                                   nn.Conv2d(b, c, 3, 2, 1), nn.ReLU())
        self.dense = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(c * 16, FEATURES), nn.ReLU())
        self.head = nn.Linear(FEATURES, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if max(x.shape[-2:]) > SIDE:
            x = F.adaptive_avg_pool2d(x, (min(x.shape[-2], SIDE), min(x.shape[-1], SIDE)))
        return self.dense(self.convs(x * 2 - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def data_key(train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int) -> str:
    """The content key of a classifier: its training split, image shape, classes and recipe."""
    return files.content_key({"kind": KIND, "recipe": RECIPE, "shape": list(train_x.shape), "classes": num_classes},
                             train_x.numpy(), train_y.numpy())


def classifier_path(folder, key: str) -> Path:
    return Path(folder) / f"{KIND}_{key}.pth"


@torch.no_grad()
def features(net: FeatureNet, images, device, batch: int = 1024) -> np.ndarray:
    """Features float32 (n, FEATURES) of images: a float tensor (n, C, H, W) in [0, 1], or an iterable
    of such batches (decoded one at a time, so the images are never all held)."""
    net.eval()
    parts = images.split(batch) if torch.is_tensor(images) else images
    # clamped: the classifier saw pixels in [0, 1] only (PCA's reconstructions leave it)
    return torch.cat([net.features(p.float().clamp(0, 1).to(device)).cpu() for p in parts]).numpy()


@torch.no_grad()
def accuracy(net: FeatureNet, x_u8: torch.Tensor, y: torch.Tensor, device) -> float:
    net.eval()
    hits = sum(int((net(to_float(p.to(device))).argmax(1).cpu() == t).sum()) for p, t in zip(x_u8.split(1024), y.split(1024)))
    return hits / len(y)


def train(train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int, device, quiet: bool) -> FeatureNet:
    """Adam on cross-entropy for RECIPE's epochs, at least min_steps and at most max_steps steps
    (a bounded cost on any data set), batches from seeded permutations."""
    g = torch.Generator().manual_seed(RECIPE["seed"])
    torch.manual_seed(RECIPE["seed"])  # the initial weights
    net = FeatureNet(train_x.shape[1], num_classes).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=RECIPE["lr"])
    batch = min(RECIPE["batch"], len(train_x))
    per_epoch = math.ceil(len(train_x) / batch)
    steps = min(max(RECIPE["epochs"] * per_epoch, RECIPE["min_steps"]), RECIPE["max_steps"])
    order = torch.empty(0, dtype=torch.int64)
    net.train()
    for _ in progress(range(steps), quiet=quiet, desc="training the feature classifier", unit="step"):
        if len(order) < batch:
            order = torch.cat([order, torch.randperm(len(train_x), generator=g)])
        idx, order = order[:batch], order[batch:]
        x, y = to_float(take(train_x, idx).to(device)), train_y[idx].to(device)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


def load(path: Path, key: str, channels: int, num_classes: int) -> tuple[FeatureNet, dict]:
    """The classifier at path, checked: of this kind and format, trained on the split of key, with
    weights that fit its network. Anything else is refused and left where it is."""
    keep = "it is left as it is: move it away to train the classifier again"
    obj = files.load_torch(path, KIND, hint=keep, redo=keep)
    if obj.get("key") != key:
        raise UserError(f"{path} holds the classifier of another training split ({obj.get('dataset', '?')!r}, key "
                        f"{str(obj.get('key'))[:20]!r}; this one is {key}): it was copied or renamed; {keep}")
    net = FeatureNet(channels, num_classes)
    state = obj.get("state_dict")
    acc = obj.get("test_accuracy")
    try:
        net.load_state_dict(state)
        ok = all(torch.isfinite(v).all() for v in state.values()) and isinstance(acc, float) and 0 <= acc <= 1
    except Exception:  # a state of other names or shapes: a damaged or hand-made file
        ok = False
    if not ok:
        raise UserError(f"{path} is malformed: its weights do not fit the feature classifier of "
                        f"{channels}-channel images and {num_classes} classes; {keep}")
    return net.eval(), obj


def obtain(folder, dataset: str, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
           test_y: torch.Tensor, num_classes: int, device, quiet: bool = True) -> tuple[FeatureNet, dict]:
    """The classifier of this training split: loaded from folder when it was trained before, else
    trained now, scored on the test images and saved there. Returns (net on device, its record:
    path, key, dataset, test_accuracy, trained (now or before))."""
    key = data_key(train_x, train_y, num_classes)
    path = classifier_path(folder, key)
    if path.exists():
        net, obj = load(path, key, train_x.shape[1], num_classes)
        return net.to(device), {"path": str(path), "key": key, "dataset": obj.get("dataset"),
                                "test_accuracy": obj["test_accuracy"], "trained_now": False}
    if not quiet:
        print(f"training the feature classifier of {dataset} on its {len(train_x)} training images (once per "
              f"dataset: kept as {path})", flush=True)
    start = time.perf_counter()
    net = train(train_x, train_y, num_classes, device, quiet)
    seconds = time.perf_counter() - start
    acc = accuracy(net, test_x, test_y, device)
    files.save_torch({"kind": KIND, "format_version": files.FORMAT_VERSION, "key": key, "dataset": dataset,
                      "image_shape": list(train_x.shape[1:]), "num_classes": num_classes, "recipe": RECIPE,
                      "train_images": len(train_x), "test_accuracy": float(acc), "test_images": len(test_y),
                      "train_seconds": seconds, "torch": str(torch.__version__),
                      "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}}, path)
    return net, {"path": str(path), "key": key, "dataset": dataset, "test_accuracy": float(acc), "trained_now": True,
                 "train_seconds": seconds}
