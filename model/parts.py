"""The encoders and decoders that model families are built of (model.autoencoder.FAMILIES names
each family's): conv stages that halve the image, or dense layers over its pixels; and the conv
network's default widths by code size. Each encoder has `out_features`; each decoder maps
latent_size units to logits (B, C, H, W)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from model.autoencoder import ModelConfig


# The network train.py builds where --channels, --dense and --bottleneck are not given, by code size;
# each row was measured on Fashion-MNIST (docs/performance.md). Small codes get dense layers before
# them: without them the decoder's first layer maps the code linearly to the conv features, so a 2-d
# code reaches only a plane of them. Codes of a few units do best with a funnel (512 128 32) and half
# the channels, which trains in half the time to a lower error; a 16-d code loses with the funnel's
# narrow layers; beyond 32 units a 512-unit layer narrows the path more than the linear map limits it.
# A 64-d code on a sphere reconstructs better and keeps like images closer than a linear one; a
# 256-d one keeps them closer still, but reconstructs worse, so large codes stay linear.
# (largest latent size, channels, dense widths, bottleneck of the conv autoencoder)
DEFAULT_NETWORK = ((4, (32, 64, 128, 256), (512, 128, 32), "linear"),
                   (32, (64, 128, 256, 512), (512,), "linear"),
                   (64, (64, 128, 256, 512), (), "sphere"),
                   (math.inf, (64, 128, 256, 512), (), "linear"))


def conv_network(latent_size: int, image_shape=None) -> dict:
    """The channels, dense widths and bottleneck a conv model of this latent size gets by default.
    Images that halve more often than DEFAULT_NETWORK has stages (128x128 and up) get further stages
    of the last width, so the features before the bottleneck stay at most 4x4 per channel."""
    channels, dense, bottleneck = next(row[1:] for row in DEFAULT_NETWORK if latent_size <= row[0])
    if image_shape is not None:
        channels += (channels[-1],) * max(0, conv_stages(*image_shape[-2:]) - len(channels))
    return {"channels": channels, "dense": dense, "bottleneck": bottleneck}


def gelu_stack(d: int, widths) -> tuple[list, int]:
    """Linear + GELU layers from d features through each width: (the layers, the last width)."""
    layers = []
    for units in widths:
        layers += [nn.Linear(d, units), nn.GELU()]
        d = units
    return layers, d


def conv_stages(height: int, width: int, max_stages: int = 99) -> int:
    """How many stride-2 stages keep every feature map even-sized and larger than 4 pixels."""
    n = 0
    while n < max_stages and height % 2 == 0 and width % 2 == 0 and min(height, width) > 4:
        height, width, n = height // 2, width // 2, n + 1
    return n


class ConvEncoder(nn.Module):
    """(B, C, H, W) -> (B, features): one stride-2 4x4 conv per stage, each halving H and W
    (one conv per stage: a second one costs CPU time without a better reconstruction)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c, h, w = cfg.image_shape
        n = conv_stages(h, w, len(cfg.channels))
        layers, c_in = [], c
        for c_out in cfg.channels[:n]:
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.GELU()]
            c_in = c_out
        if n == 0:  # odd-sized images: keep the resolution, one 3x3 stage
            c_in = cfg.channels[0]
            layers += [nn.Conv2d(c, c_in, 3, padding=1), nn.GELU()]
        self.net = nn.Sequential(*layers)
        self.feature_shape = (c_in, h >> n, w >> n)  # (C', H / 2^n, W / 2^n)
        self.out_features = math.prod(self.feature_shape)
        self.dense = nn.Identity()
        if cfg.dense:  # as the Parametric UMAP paper's conv AE (Sainburg et al. 2021): Dense before the bottleneck
            layers, self.out_features = gelu_stack(self.out_features, cfg.dense)
            self.dense = nn.Sequential(*layers)

    def forward(self, x):
        return self.dense(self.net(x).flatten(1))


class ConvDecoder(nn.Module):
    """(B, latent) -> logits (B, C, H, W): the mirror of ConvEncoder, one stride-2 4x4 transposed
    conv per stage; the last one emits the image (a further 3x3 conv costs CPU time for no gain)."""

    def __init__(self, cfg: ModelConfig, feature_shape: tuple):
        super().__init__()
        c = cfg.image_shape[0]
        self.feature_shape = feature_shape
        self.fc = nn.Linear(cfg.latent_size, math.prod(feature_shape))
        if cfg.dense:  # the mirror of the encoder's dense layers
            layers, d = gelu_stack(cfg.latent_size, reversed(cfg.dense))
            self.fc = nn.Sequential(*layers, nn.Linear(d, math.prod(feature_shape)))
        n = conv_stages(cfg.image_shape[1], cfg.image_shape[2], len(cfg.channels))
        chans = list(cfg.channels[:n])[::-1] + [c]  # e.g. 28x28x1: [64, 32, 1]
        layers = []
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            layers += [nn.GELU(), nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)]
        if n == 0:  # odd-sized images: one 3x3 conv at full resolution
            layers = [nn.GELU(), nn.Conv2d(cfg.channels[0], c, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        return self.net(self.fc(z).view(-1, *self.feature_shape))


class MLPEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        layers, self.out_features = gelu_stack(math.prod(cfg.image_shape), cfg.hidden)
        self.net = nn.Sequential(nn.Flatten(), *layers)

    def forward(self, x):
        return self.net(x)


class MLPDecoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.image_shape = cfg.image_shape
        layers, d = gelu_stack(cfg.latent_size, reversed(cfg.hidden))
        self.net = nn.Sequential(*layers, nn.Linear(d, math.prod(cfg.image_shape)))

    def forward(self, z):
        return self.net(z).view(-1, *self.image_shape)


def conv_parts(cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
    encoder = ConvEncoder(cfg)
    return encoder, ConvDecoder(cfg, encoder.feature_shape)


def by_code_size(column: int, stages: int | None = None) -> str:
    """A column of model.parts.DEFAULT_NETWORK as the docs show a default: '512 up to latent
    size 32, none above' (rows with the same value shown once)."""
    shown = []
    for largest, *row in DEFAULT_NETWORK:
        value = row[column - 1]
        widths = value if isinstance(value, str) else " ".join(map(str, value[:stages])) or "none"
        if shown and shown[-1][1] == widths:
            shown.pop()
        shown.append((largest, widths))
    return ", ".join(f"{w} up to latent size {n}" if n != float("inf") else f"{w} above" for n, w in shown)
