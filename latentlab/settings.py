"""Every training setting, declared once: `Settings`, one field per setting with its help text.

From it come train.py's flags (add_training_flags), the settings a checkpoint must share to be
resumed (RESUME_MUST_MATCH), the settings that make a sweep's numbers (RESULT_SETTINGS), the
checkpoint's record of the training (recorded) and the README's flag table (flag_table).
"""
from __future__ import annotations

import argparse
from dataclasses import MISSING, dataclass, field, fields

from latentlab.cli import UserError
from latentlab.ranges import (MAX_IMAGE_SIZE, adam_lr, batch_images, epoch_count, epoch_count_or_off, fraction,
                              gigabytes, image_side, loss_weight, noise_level, width, width_or_none)
from latentlab.data.sources import DATASETS
from latentlab.data.image_file import RESIZE_MODES, colour
from model.autoencoder import BOTTLENECKS, FAMILIES, WIDTHS, ModelConfig, build_model, takers
from model.parts import by_code_size, conv_stages

PRECISIONS = ("auto", "fp32", "bf16")
# the smallest square the conv encoder halves once (model.parts.conv_stages: even, > 4 pixels)
MIN_IMAGE_SIZE = 6


def image_size(text: str) -> int:
    size = image_side(text)
    if size < MIN_IMAGE_SIZE:
        raise argparse.ArgumentTypeError(f"{size} is too small: use {MIN_IMAGE_SIZE} or more, the smallest size "
                                          f"the conv encoder halves at least once")
    return size


def background_colour(text: str) -> str:
    try:
        return colour(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a colour: give a name Pillow knows (white, black, "
                                         f"gray, ...) or #rrggbb") from None


def setting(default=MISSING, *, help: str, group: str, type=None, choices=None, shown: str | None = None,
            per_run: bool = False, makes_results: bool = True, resume_must_match: bool = False,
            recorded: bool = False, shared: bool = False, nargs=None):
    """A Settings field.

    group: its argparse group. shown: the default as the docs show it, where the value (None) says
    nothing. per_run: the sweep sets it for each of its runs. makes_results: another value gives
    other numbers. resume_must_match: --resume refuses a checkpoint trained with another value.
    recorded: kept in the checkpoint's "train" record. shared: its flag is one that every step
    has (latentlab.cli.make_parser).
    nargs: the flag takes a list (argparse's nargs); the value is a tuple.
    """
    return field(default=default, metadata=dict(
        help=help, group=group, type=type, choices=choices, shown=shown, per_run=per_run,
        makes_results=makes_results, resume_must_match=resume_must_match, recorded=recorded,
        shared=shared, nargs=nargs))


@dataclass
class Settings:
    latent_size: int = setting(help="size of the second bottleneck (the first is 2)", group="model",
                               type=width, shown="(required)", per_run=True)
    model: str = setting("conv", help="network family (vae: the conv encoder/decoder with a sampled bottleneck)",
                         group="model", choices=FAMILIES, per_run=True)
    noise_std: float = setting(0.0, help="denoising: std of the Gaussian noise on the input (the target stays "
                                         "clean); any family; at most 1000", group="model", type=noise_level)
    beta: float = setting(1.0, help=f"{takers('beta')}: weight of the KL term (0 to 1e6)", group="model",
                          type=loss_weight)
    channels: tuple | None = setting(None, help=f"{takers('channels')}: channels of each stride-2 stage, at most as many stages "
                                                "as the image halves (28x28: 2, 32x32: 3, 64x64: 4, 128x128: 5)", group="model",
                                     type=width, nargs="+", shown=by_code_size(1, 2) + " (28x28; a third stage at 32x32, a fourth at 64x64, "
                                                                   "more of the last width above)")
    dense: tuple | None = setting(None, help=f"{takers('dense')}: widths of dense layers between the conv features and "
                                             "the bottleneck, mirrored in the decoder (`--dense` alone or 0: none)",
                                  group="model", type=width_or_none, nargs="*",
                                  shown=by_code_size(2))
    hidden: tuple | None = setting(None, help=f"{takers('hidden')}: widths of the hidden layers, encoder side (mirrored); "
                                              "`--hidden` alone: none, a linear autoencoder", group="model",
                                   type=width, nargs="*", shown="512 256")
    bottleneck: str | None = setting(None, help=f"{', '.join(k for k, f in FAMILIES.items() if not f.no_sphere)}: "
                                                "linear, the bottleneck layer's output; or sphere, that output scaled "
                                                "to length sqrt(latent size), so that only its direction carries the "
                                                "image (a 2-unit code stays linear: on a sphere it would be a circle)",
                                     group="model", choices=BOTTLENECKS,
                                     shown=by_code_size(3) + " (conv); linear (mlp, vae)")
    umap_weight: float = setting(0.0, help="weight of a UMAP loss on the codes beside the reconstruction, as in "
                                           "Parametric UMAP's UMAP-regularised autoencoder (0.1 at 2-d; its cost: "
                                           "docs/performance.md); 0: off, at most 1e6", group="model",
                                 type=loss_weight)
    # the sweep records each run's resulting weight (resolved_network), so this setting is not compared itself
    umap_max_size: int = setting(2, help="UMAP loss: on the models whose code has at most this many units (2: the "
                                         "2-d model alone; at 64-d the loss hurts)", group="model",
                                 type=width, makes_results=False)
    umap_edges: int = setting(1024, help="UMAP loss: edges of the training images' UMAP graph drawn per "
                                         "step, both ends encoded beside the batch", group="model",
                              type=batch_images, resume_must_match=True, recorded=True)
    dataset: str = setting("gtsrb", help=f"one of: {', '.join(DATASETS)}", group="data", per_run=True)
    data_dir: str | None = setting(None, help="folder holding the dataset's files", group="data",
                                   shown="data/<name>/", makes_results=False)
    image_size: int | None = setting(None, help=f"resize images to this square size ({MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE})",
                                     group="data", type=image_size, shown="native (32 for gtsrb and folders)")
    resize: str = setting("crop", help="folders: how an image becomes square: crop, its centre square (round things "
                                       "stay round); pad, the whole image on the --background; squash, stretched "
                                       "(the benchmark sets are resized as published)", group="data",
                          choices=RESIZE_MODES, resume_must_match=True, recorded=True)
    background: str = setting("#ffffff", help="folders: the colour under transparent pixels and around a padded "
                                              "image (a name Pillow knows, as white, or #rrggbb)", group="data",
                              type=background_colour,
                              resume_must_match=True, recorded=True)
    skip_unreadable: bool = setting(False, help="folders: train on the readable images, leaving out (and counting) "
                                                "the files that cannot be decoded", group="data",
                                    resume_must_match=True, recorded=True)
    memory_budget: float | None = setting(None, help="GB of memory a decoded image folder may take; a larger one "
                                                     "trains and encodes from its memory-mapped cache on disk",
                                          group="data", type=gigabytes, shown="half of the machine's RAM",
                                          makes_results=False)
    val_fraction: float = setting(0.1, help="share of the training split held out for model selection",
                                  group="data", type=fraction, resume_must_match=True, recorded=True)
    num_epochs: int = setting(20, help="epochs per model", group="training", type=epoch_count, recorded=True)
    batch_size: int = setting(128, help="global batch size (under torchrun, split evenly across the processes)",
                              group="training", type=batch_images, resume_must_match=True, recorded=True)
    lr: float = setting(3e-3, help="peak Adam learning rate (at most 1000)", group="training", type=adam_lr,
                        resume_must_match=True, recorded=True)
    lr_schedule: str = setting("cosine", help="cosine: per-step decay from --lr to 0 over --num_epochs; "
                                              "constant: --lr throughout", group="training",
                               choices=("cosine", "constant"), resume_must_match=True, recorded=True)
    patience: int = setting(0, help="early stopping after this many epochs without a better validation loss "
                                    "(0: off)", group="training", type=epoch_count_or_off, recorded=True)
    precision: str = setting("auto", help="autocast of the forward pass; auto: bf16 on CUDA GPUs, and on CPUs with "
                                          "native bf16 (AVX512-BF16 or AMX) for images of 16x16 pixels or more, "
                                          "fp32 elsewhere", group="training", choices=PRECISIONS,
                             resume_must_match=True, recorded=True)
    resume: bool = setting(False, help="continue an interrupted (or killed) run from its last completed epoch",
                           group="training", per_run=True, makes_results=False)
    overwrite: bool = setting(False, help="replace the run that --output_dir holds (named in its run.json; train.py "
                                          "refuses it otherwise): its files stay until the new run has succeeded",
                              group="training", per_run=True, makes_results=False)
    snapshot_every: int = setting(5, help="a reconstruction snapshot every N epochs, and the per-epoch record "
                                          "animated at the end (0: snapshots and animations off)", group="training",
                                  type=epoch_count_or_off, makes_results=False, recorded=True)
    tensorboard: bool = setting(False, help="also log to <output_dir>/tensorboard/ (scalars, reconstructions, "
                                            "hyperparameters, the test latents in the projector)",
                                group="training", makes_results=False)
    seed: int = setting(0, help="seed of the weights, the split, the shuffling and the noise", group="common",
                        shared=True, per_run=True, resume_must_match=True, recorded=True)

    @classmethod
    def from_args(cls, args: argparse.Namespace, **given) -> "Settings":
        """The settings in a namespace of train.py's flags (other attributes are ignored), and those given."""
        values = {f.name: given[f.name] if f.name in given else getattr(args, f.name) for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def model_config(self, latent_size: int, image_shape) -> ModelConfig:
        """The network these settings ask for at one latent size; a width or depth the family or the
        image cannot take is a UserError."""
        self.check_network_flags()
        h, w = image_shape[1:]
        stages = max(1, conv_stages(h, w))  # images that never halve take one full-resolution stage
        if self.channels is not None and len(self.channels) > stages:
            raise UserError(f"--channels gives {len(self.channels)} stages but {h}x{w} images take at most "
                            f"{stages} (each stride-2 stage halves the image while it stays even and larger "
                            f"than 4 pixels); give at most {stages} widths")
        given = {k: v for k, v in (("channels", self.channels), ("hidden", self.hidden)) if v is not None}
        if self.bottleneck is not None:
            given["bottleneck"] = self.bottleneck if latent_size >= 3 else "linear"
        defaults = FAMILIES[self.model].defaults(latent_size, image_shape)
        if self.dense is not None:
            given["dense"] = tuple(u for u in self.dense if u)
        config = ModelConfig(family=self.model, latent_size=latent_size, image_shape=tuple(image_shape),
                             beta=self.beta, noise_std=self.noise_std,
                             umap_weight=umap_weight_at(self.umap_weight, self.umap_max_size, latent_size),
                             **{**defaults, **given})
        self.check_model_fits(config)
        return config

    def check_network_flags(self) -> None:
        """The width and bottleneck flags against the family, which needs no image: a UserError for
        a flag the family does not take."""
        family = FAMILIES[self.model]
        # --dense 0 (or alone) asks for no dense layers, which every family can have
        foreign = [k for k in WIDTHS if k not in family.flags and getattr(self, k) is not None
                   and (k != "dense" or any(self.dense))]
        if foreign:
            owners = [k for k, f in FAMILIES.items() if foreign[0] in f.flags]
            theirs, ours = ([f"--{k}" for k in WIDTHS if k in FAMILIES[name].flags] for name in (owners[0], self.model))
            raise UserError(f"{' and '.join(theirs)} set{'s' * (len(theirs) == 1)} the {' and '.join(owners)} "
                            f"network{'s' * (len(owners) > 1)}, not the {self.model} one; use "
                            f"{' and '.join(ours) or 'no width flag'}, or --model {owners[0]}")
        if self.bottleneck == "sphere" and family.no_sphere:
            raise UserError(f"--bottleneck sphere: {family.no_sphere}, not on a sphere; use --model "
                            f"{' or '.join(k for k, f in FAMILIES.items() if not f.no_sphere)}, or drop --bottleneck")
        if self.dense and 0 in self.dense and len(self.dense) > 1:
            raise UserError(f"--dense {' '.join(map(str, self.dense))}: 0 means no dense layer and stands alone; "
                            f"give positive widths, or 0 (or --dense alone) for none")

    def size_flags(self, config: ModelConfig) -> str:
        """The flags that size config's network, with their values: the ones the user set (or, with
        none set, --latent_size and --image_size), for the fix an error names."""
        h, w = config.image_shape[1:]
        shown = {"channels": self.channels, "dense": self.dense, "hidden": self.hidden}
        flags = [f"--{k} (now {' '.join(map(str, v)) or 'none'})" for k, v in shown.items() if v is not None]
        if not flags or config.latent_size > 512:  # past the default network's widths, the code itself is large
            flags.append(f"--latent_size (now {config.latent_size})")
        if self.image_size is not None or not flags:
            flags.append(f"--image_size (now {h}x{w})")
        return ", ".join(flags)

    def check_model_fits(self, config: ModelConfig) -> None:
        """Refuse, before any allocation, a network whose training state (weights, gradients and
        Adam's two moments: 16 bytes a parameter) exceeds this machine's free memory, where it is built."""
        import torch
        from latentlab.cli import memory_available
        with torch.device("meta"):  # shapes only: counts the parameters without allocating them
            parameters = sum(p.numel() for p in build_model(config).parameters())
        free = memory_available()
        if 16 * parameters > free:
            raise UserError(f"the latent-{config.latent_size} {config.family} model has {parameters / 1e6:,.0f} M "
                            f"parameters, and training them needs {16 * parameters / 2**30:.1f} GiB; this machine has "
                            f"{free / 2**30:.1f} GiB free; lower {self.size_flags(config)}")


def umap_weight_at(weight: float, max_size: int, latent_size: int) -> float:
    """The UMAP loss's weight on a model of this latent size: --umap_weight up to --umap_max_size units, 0 above."""
    return weight if latent_size <= max_size else 0.0


def names(**metadata) -> tuple[str, ...]:
    """The settings whose metadata has these values, in declaration order."""
    return tuple(f.name for f in fields(Settings) if all(f.metadata[k] == v for k, v in metadata.items()))


RESUME_MUST_MATCH = names(resume_must_match=True)  # the model's config and dataset are compared whole
RESULT_SETTINGS = names(makes_results=True, per_run=False)  # the sweep's folder names hold the per-run ones
RECORDED = names(recorded=True)


def recorded(settings: Settings) -> dict:
    """What the checkpoint's "train" dict keeps of the settings."""
    return {k: getattr(settings, k) for k in RECORDED}


FOLDER_READING = ("resize", "background", "skip_unreadable")  # how a folder's files become images


def applies(name: str, dataset: str) -> bool:
    """Whether a setting can change a run on this dataset: the folder reading settings leave the
    other datasets as they are, so a run on one of those need not match them."""
    return name not in FOLDER_READING or dataset.lower().startswith("folder:")
