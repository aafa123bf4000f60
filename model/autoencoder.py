"""The networks only: the autoencoder, the VAE, FAMILIES (the registry of model families: one Family
entry declares all that the rest of the code asks of one; their encoders and decoders are in
model.parts) and `build_model(config)`.

No argparse, no file I/O, no device choice. Images are float tensors in [0, 1] of shape
(B, C, H, W); the decoders return logits, and `decode` squashes them with a sigmoid.

The bottleneck is a plain linear layer, so latents may be negative: a ReLU there would leave
only the positive orthant of the latent space to the codes. With `bottleneck="sphere"` its output
is scaled to length sqrt(latent_size), and the decoder sees directions only.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from model.parts import MLPDecoder, MLPEncoder, conv_network, conv_parts


def describe(family: str, latent_size: int | None = None, dataset: str | None = None, *,
             noise_std: float = 0.0, beta: float | None = None, umap_weight: float = 0.0,
             bottleneck: str = "linear") -> str:
    """How titles and tables name a model: 'conv autoencoder', 'VAE (beta 1)', 'denoising MLP
    autoencoder (noise std 0.2), latent size 8, digits', 'conv autoencoder with UMAP loss (weight
    0.01)', 'conv autoencoder on a sphere, latent size 64', ..."""
    kind = FAMILIES.get(family)
    name = kind.title if kind else family
    if bottleneck == "sphere":
        name += " on a sphere"
    if kind and "beta" in kind.flags and beta is not None:
        name += f" (beta {beta:g})"
    if noise_std:
        name = f"denoising {name} (noise std {noise_std:g})"
    if umap_weight:
        name += f" with UMAP loss (weight {umap_weight:g})"
    return ", ".join([name] + ([f"latent size {latent_size}"] if latent_size is not None else [])
                     + ([dataset] if dataset is not None else []))


BOTTLENECKS = ("linear", "sphere")
WIDTHS = ("channels", "dense", "hidden")  # the config's width fields; each family takes some of them


@dataclass
class ModelConfig:
    family: str = "conv"  # a key of FAMILIES
    latent_size: int = 2
    image_shape: tuple = (1, 28, 28)  # (C, H, W)
    # conv, vae: channels of each stride-2 stage; as many stages are used as the image
    # can be halved while it stays even and larger than 4 pixels (8x8 -> 1 stage, 28 -> 2, 32 -> 3).
    channels: tuple = (64, 128, 256, 512)
    hidden: tuple = (512, 256)  # mlp: widths of the hidden layers, encoder side; () is a linear autoencoder
    dense: tuple = ()  # conv, vae: widths of dense layers between the conv features and the bottleneck, encoder side (mirrored)
    beta: float = 1.0  # vae: weight of the KL term (Higgins et al. 2017, beta-VAE)
    noise_std: float = 0.0  # denoising: std of the Gaussian noise added to the input while training
    umap_weight: float = 0.0  # weight of the UMAP loss on the codes while training (latentlab.train.umap_loss); 0: none
    # linear: the code is the bottleneck layer's output; sphere: that output scaled to length
    # sqrt(latent_size), so every code lies on one sphere and only its direction carries the image
    bottleneck: str = "linear"
    normalisation: str = "pixels/255 in [0,1]"  # how images map to model inputs

    def __post_init__(self):
        self.image_shape = tuple(int(s) for s in self.image_shape)
        self.channels = tuple(int(c) for c in self.channels)
        self.hidden = tuple(int(h) for h in self.hidden)
        self.dense = tuple(int(u) for u in self.dense)
        if self.family not in FAMILIES:
            raise ValueError(f"unknown model family {self.family!r}; choose one of {', '.join(FAMILIES)}")
        if self.bottleneck not in BOTTLENECKS:
            raise ValueError(f"unknown bottleneck {self.bottleneck!r}; choose one of {', '.join(BOTTLENECKS)}")
        if self.bottleneck == "sphere" and (FAMILIES[self.family].no_sphere or self.latent_size < 3):
            raise ValueError(f"a {self.family} model with a code of {self.latent_size} units cannot have it on a "
                             f"sphere ({FAMILIES[self.family].no_sphere or 'a 2-unit one would be a circle'})")
        if not self.channels or min(self.channels) < 1 or min(self.hidden + self.dense, default=1) < 1:
            raise ValueError(f"widths must be positive: channels {self.channels}, hidden {self.hidden}, dense {self.dense}")

    @property
    def channels_last(self) -> bool:
        """Whether the model runs in channels_last memory format, in training and when loaded."""
        return FAMILIES[self.family].channels_last

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return cls(**d)


class Autoencoder(nn.Module):
    """Deterministic autoencoder; `objective` is the mean squared error in [0, 1] pixel units."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.encoder, self.decoder = FAMILIES[cfg.family].parts(cfg)
        self.to_latent = nn.Linear(self.encoder.out_features, self.latent_outputs(cfg))

    @staticmethod
    def latent_outputs(cfg: ModelConfig) -> int:
        return cfg.latent_size

    def encode(self, x):
        """(B, C, H, W) in [0, 1] -> (B, latent_size)."""
        return self.onto_code(self.to_latent(self.encoder(x)))

    def onto_code(self, z):
        """z as a code of this bottleneck: on a sphere, scaled to length sqrt(latent_size) (each unit's
        mean square 1), normalised in fp32 under autocast; linear codes pass as they are."""
        if self.config.bottleneck == "linear":
            return z
        return (F.normalize(z.float(), dim=1) * math.sqrt(z.shape[1])).to(z.dtype)

    def decode_logits(self, z):
        """Any z decodes: on a sphere, its direction does (samples and interpolations are projected)."""
        return self.decoder(self.onto_code(z))

    def decode(self, z):
        """(B, latent_size) -> images (B, C, H, W) in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z))

    def reconstruct(self, x):
        return self.decode(self.encode(x))

    def forward(self, x, ends=None):
        """Returns (logits (B, C, H, W), kl (B,)); kl is zero for a deterministic autoencoder.
        Training calls this through DistributedDataParallel, so the loss is computed outside.
        ends: more images (the UMAP loss's edge ends), encoded in the same pass; their codes
        come back third."""
        z = self.encode(x if ends is None else torch.cat([x, ends]))
        out = self.decode_logits(z[:len(x)]), x.new_zeros(x.shape[0])
        return out if ends is None else (*out, z[len(x):])

    def objective(self, logits, kl, target):
        return F.mse_loss(torch.sigmoid(logits.float()), target)


class VAE(Autoencoder):
    """Variational autoencoder (Kingma & Welling 2014) with the conv encoder/decoder.

    Objective per pixel value: (BCE summed over the image + beta * KL(q(z|x) || N(0, I))) / (C*H*W),
    i.e. the negative ELBO of a Bernoulli decoder, scaled by the image size so that its magnitude
    compares across image sizes. In eval mode the latent is the posterior mean.
    """

    @staticmethod
    def latent_outputs(cfg: ModelConfig) -> int:
        return 2 * cfg.latent_size  # mean and log-variance

    def posterior(self, x):
        mu, logvar = self.to_latent(self.encoder(x)).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def encode(self, x):
        return self.posterior(x)[0]

    def forward(self, x, ends=None):
        """As Autoencoder.forward; the codes of the ends are their posterior means."""
        mu, logvar = self.posterior(x if ends is None else torch.cat([x, ends]))
        mu, logvar, mu_ends = mu[:len(x)], logvar[:len(x)], mu[len(x):]
        z = mu
        if self.training:  # reparameterisation trick; the training loop seeds the global RNG
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        kl = 0.5 * (mu.float().pow(2) + logvar.float().exp() - 1.0 - logvar.float()).sum(dim=1)
        return (self.decode_logits(z), kl) if ends is None else (self.decode_logits(z), kl, mu_ends)

    def objective(self, logits, kl, target):
        d = target[0].numel()
        bce = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="sum") / target.shape[0]
        return (bce + self.config.beta * kl.mean()) / d


def standard_normal(n: int, latent_size: int, generator: torch.Generator) -> torch.Tensor:
    """n draws (n, latent_size) of the VAE's prior N(0, I)."""
    return torch.randn(n, latent_size, generator=generator)


@dataclass(frozen=True)
class Family:
    """All that the code asks of a model family, so that a new family is one entry of FAMILIES."""
    title: str  # how titles and tables name it
    parts: Callable  # ModelConfig -> (encoder, with out_features; decoder of latent_size inputs to logits)
    flags: tuple  # the width fields (WIDTHS) it takes, and "beta" where its objective has a KL term
    defaults: Callable  # (latent_size, image_shape or None) -> the widths and bottleneck the flags leave unset
    model: type = Autoencoder  # Autoencoder, or a subclass with its own forward and objective
    channels_last: bool = False  # its memory format: oneDNN's convolutions prefer channels_last
    prior: Callable | None = None  # (n, latent_size, generator) -> n latents of its prior; None: it has none
    latent: str = "encoder output"  # what its latents are (the latents' JSON says it)
    no_sphere: str = ""  # why its code cannot lie on a sphere; "": it can


FAMILIES = {
    "conv": Family("conv autoencoder", conv_parts, ("channels", "dense"), conv_network, channels_last=True),
    "mlp": Family("MLP autoencoder", lambda cfg: (MLPEncoder(cfg), MLPDecoder(cfg)), ("hidden",),
                  lambda latent_size, image_shape=None: {"hidden": ModelConfig.hidden, "bottleneck": "linear"}),
    "vae": Family("VAE", conv_parts, ("channels", "dense", "beta"),
                  lambda latent_size, image_shape=None: {**conv_network(latent_size, image_shape), "bottleneck": "linear"},
                  model=VAE, channels_last=True, prior=standard_normal, latent="posterior mean",
                  no_sphere="the VAE's code is Gaussian"),
}


def build_model(config: ModelConfig | dict) -> Autoencoder:
    cfg = config if isinstance(config, ModelConfig) else ModelConfig.from_dict(config)
    return FAMILIES[cfg.family].model(cfg)


def model_from_checkpoint(ckpt: dict, device="cpu", weights: str = "best") -> Autoencoder:
    """Rebuild the model from a checkpoint dict alone (its config and its best or its last
    weights), in eval mode; conv models in channels_last memory format as they trained (inputs
    may come in either format)."""
    model = build_model(ckpt["config"])
    model.load_state_dict(ckpt["state_dict"] if weights == "best" else ckpt["resume"]["state_dict"])
    if model.config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.to(device).eval()


def takers(flag: str) -> str:
    """The model families that take a flag, as help texts name them: 'conv, vae'."""
    return ", ".join(name for name, family in FAMILIES.items() if flag in family.flags)
