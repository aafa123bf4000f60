"""Option range checks: argparse types that refuse a value outside its range in one line, each
upper bound with what it fits (a figure's pixels, a machine's memory, the data)."""
from __future__ import annotations

import argparse
import math


def _ranged(kind, low=None, high=None, low_inclusive=True, allow=(), why: str = ""):
    """An argparse type: kind (int or float), finite, in [low, high] (low excluded unless
    low_inclusive); why says what the upper bound fits, in the error."""
    def parse(text):
        if text in allow:
            return text
        try:
            value = kind(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}")
        if kind is float and not math.isfinite(value):  # float("nan") passes every comparison below
            raise argparse.ArgumentTypeError(f"{text} is not a finite number")
        if low is not None and (value < low if low_inclusive else value <= low):
            raise argparse.ArgumentTypeError(f"{text} must be {'>=' if low_inclusive else '>'} {low}")
        if high is not None and value > high:
            shown = high if kind is int else f"{high:g}"
            raise argparse.ArgumentTypeError(f"{text} must be <= {shown}{f': {why}' if why else ''}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


MAX_ITEMS = 2**31 - 1  # images of a data set or a selection: more than any data set here holds
MAX_IMAGE_SIZE = 1024  # pixels a side: at 1024, a batch of 128 through the conv model's first stage (64 channels
                       # at 512x512) is 8 GB of float32 activations
MAX_WIDTH = 65_536  # units of a layer or a code: one dense layer of 65536 on a 32x32 RGB image is 200 M weights
MAX_FIGURE_IMAGES = 1024  # images in one figure: a 32 x 32 grid already fills a screen
MAX_GRID_SIDE = 256  # images per side or row of a figure: 256 of 28 pixels are 7168 pixels, past any screen
MAX_BATCH = 2**20  # images a step: more than any data set here holds, so one batch is all of it
MAX_EPOCHS = 100_000  # epochs: a week of the smallest model's training
MAX_FOLDS = 100  # folds: each needs a test image of every class, and 100 folds cost 100 fits
MAX_LR = 1e3  # Adam moves each weight by about lr a step: beyond it no network here stays meaningful
MAX_WEIGHT = 1e6  # a loss weight: beyond it the reconstruction term is lost below float32's resolution
MAX_NOISE_STD = 1e3  # std of the noise on pixels in [0, 1]: at 1000 the image is a millionth of the input's power
MAX_LATENT_STD = 100.0  # std of a latent unit: the test latents lie within a few; beyond is the decoder's far field
MAX_PROCESSES = 1024  # processes, jobs or CPUs at once: more than one machine has cores
MAX_MINUTES = 525_600  # a job's time limit: a year
MAX_REPEATS = 1000  # repeats of a timing
MAX_SCORED = 100_000  # generated images scored: precision and recall compare every pair, 10**10 distances at this
MAX_COMPONENTS = 1000  # mixture components: each fits a full covariance from its share of the latents

positive_int = _ranged(int, 1, MAX_ITEMS, why="more than any data set holds")
nonneg_int = _ranged(int, 0, MAX_ITEMS, why="more than any data set holds")
fraction = _ranged(float, 0.0, 0.9, low_inclusive=False, why="at least a tenth of the images must be left to train on")
count_or_all = _ranged(int, 1, MAX_ITEMS, allow=("all",), why="more than any data set holds")
at_least_two = _ranged(int, 2, MAX_ITEMS, why="more than any data set holds")
seed_int = _ranged(int, 0, 2**32 - 1, why="numpy takes seeds below 2**32")
image_side = _ranged(int, 1, MAX_IMAGE_SIZE, why="larger images leave no memory for a batch of the model's activations")
batch_images = _ranged(int, 1, MAX_BATCH, why="more images than any data set holds")
width = _ranged(int, 1, MAX_WIDTH, why="a wider layer or code does not fit in memory")
width_or_none = _ranged(int, 0, MAX_WIDTH, why="a wider layer does not fit in memory")
figure_images = _ranged(int, 1, MAX_FIGURE_IMAGES, why="more images than one figure can show")
grid_side = _ranged(int, 2, MAX_GRID_SIDE, why="more images a side than a figure can show")
row_length = _ranged(int, 1, MAX_GRID_SIDE, why="more images a row than a figure can show")
epoch_count = _ranged(int, 1, MAX_EPOCHS, why="a week of training or more")
epoch_count_or_off = _ranged(int, 0, MAX_EPOCHS, why="a week of training or more")
fold_count = _ranged(int, 2, MAX_FOLDS, why="each fold needs test images of every class")
adam_lr = _ranged(float, 0.0, MAX_LR, low_inclusive=False, why="larger Adam steps only diverge")
loss_weight = _ranged(float, 0.0, MAX_WEIGHT, why="a larger weight drowns the reconstruction term")
noise_level = _ranged(float, 0.0, MAX_NOISE_STD, why="more noise drowns the image (pixels are in [0, 1])")
std_multiple = _ranged(float, 0.0, MAX_LATENT_STD, low_inclusive=False,
                     why="the test latents lie within a few std; farther is the decoder's guess")
processes = _ranged(int, 1, MAX_PROCESSES, why="more than a machine has cores")
workers = _ranged(int, 0, MAX_PROCESSES, why="more than a machine has cores")
minutes = _ranged(int, 1, MAX_MINUTES, why="a year")
seconds = _ranged(float, 0.0, 60.0 * MAX_MINUTES, low_inclusive=False, why="a year")
repeat_count = _ranged(int, 1, MAX_REPEATS, why="a thousand timings already give a stable median")
scored_images = _ranged(int, 10, MAX_SCORED, why="precision and recall compare every pair of images")
mixture_components = _ranged(int, 1, MAX_COMPONENTS, why="each component needs a covariance fitted from its latents")
gigabytes = _ranged(float, 0.0, 2.0**20, low_inclusive=False, why="a pebibyte, more memory than a machine has")
