"""A model family and a dataset are one registry entry each: a toy of each, added here alone (one
monkeypatched entry of model.autoencoder.FAMILIES and of latentlab.data.sources.SOURCES), trains
through train.py's main and encodes through encode_latent_space.py's."""
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import run_main
from latentlab.cli import UserError
from latentlab.data import sources
from latentlab.settings import Settings
from latentlab.store import checkpoints
from model import autoencoder


class PoolEncoder(nn.Module):
    """(B, C, H, W) -> (B, C*H*W/4): 2x2 average pooling, no weights."""

    def __init__(self, cfg):
        super().__init__()
        self.out_features = math.prod(cfg.image_shape) // 4
        self.net = nn.Sequential(nn.AvgPool2d(2), nn.Flatten())

    def forward(self, x):
        return self.net(x)


class PoolDecoder(nn.Module):
    """(B, latent) -> logits (B, C, H, W): one linear map to the pooled image, upsampled 2x."""

    def __init__(self, cfg):
        super().__init__()
        c, h, w = cfg.image_shape
        self.net = nn.Sequential(nn.Linear(cfg.latent_size, c * h * w // 4), nn.Unflatten(1, (c, h // 2, w // 2)),
                                 nn.Upsample(scale_factor=2))

    def forward(self, z):
        return self.net(z)


def toy_read(name, root, data_dir, image_size, quiet):
    """80 images 1x8x8 in two classes (dark, light), the test split the last quarter of each."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(80) % 2
    x = (y[:, None, None, None] * 160 + torch.randint(0, 90, (80, 1, 8, 8), generator=g)).to(torch.uint8)
    return x[:60], y[:60], x[60:], y[60:], "the last 20 images", None


TOY_FAMILY = autoencoder.Family("pool autoencoder", lambda cfg: (PoolEncoder(cfg), PoolDecoder(cfg)), (),
                                lambda latent_size, image_shape=None: {"bottleneck": "linear"}, latent="pooled code")


@pytest.fixture
def toys(monkeypatch):
    monkeypatch.setitem(autoencoder.FAMILIES, "pool", TOY_FAMILY)
    monkeypatch.setitem(sources.SOURCES, "toy", sources.Source(toy_read, ["dark", "light"]))


def test_a_toy_family_and_a_toy_dataset_train_and_encode_from_one_entry_each(toys, tmp_path):
    out = tmp_path / "out"
    run_main("train", "--latent_size", 3, "--model", "pool", "--dataset", "toy", "--num_epochs", 1,
             "--batch_size", 16, "--snapshot_every", 0, "--output_dir", out, "--quiet")
    ckpt = checkpoints.load_checkpoint(out / "model_latent_size_3.pth")
    assert ckpt["config"]["family"] == "pool" and ckpt["dataset"]["class_names"] == ["dark", "light"]
    assert set(ckpt["state_dict"]) == {"decoder.net.0.weight", "decoder.net.0.bias", "to_latent.weight", "to_latent.bias"}
    run_main("encode_latent_space", "--output_dir", out, "--quiet")
    latents = out / "latent_space_size_3.npy"
    meta = json.loads(latents.with_suffix(".json").read_text())
    assert meta["family"] == "pool" and meta["latent"] == "pooled code" and meta["class_names"] == ["dark", "light"]
    assert meta["labels"] == [i % 2 for i in range(20)] and np.load(latents).shape == (20, 3)


def test_a_family_refuses_the_width_flags_it_does_not_declare(toys):
    with pytest.raises(UserError, match="--hidden sets the mlp network, not the pool one; use no width flag"):
        Settings(latent_size=3, model="pool", hidden=(8,)).model_config(3, (1, 8, 8))
    with pytest.raises(UserError, match="--channels and --dense set the conv and vae networks, not the pool one"):
        Settings(latent_size=3, model="pool", channels=(8,)).model_config(3, (1, 8, 8))
