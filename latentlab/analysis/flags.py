"""The flags that steps 2-7 and the sweep share, each declared once: images per batch, the folds of
the cross-validation, and how N-d latents are drawn in 2-D. The library's defaults are the same
constants."""
from latentlab.ranges import batch_images, fold_count
from latentlab.analysis.projection import METHODS

BATCH_SIZE = 512  # images per batch when a step encodes or decodes (no gradients: larger than training's)
FOLDS = 5
VIS_TYPE = "umap"


def add_batch_size(group, what: str = "images per batch") -> None:
    group.add_argument("--batch_size", type=batch_images, default=BATCH_SIZE, help=what)


def add_folds(group, what: str = "folds of the stratified cross-validation") -> None:
    group.add_argument("--folds", type=fold_count, default=FOLDS, help=what)


def add_vis_type(group, what: str = "how the N-d latents are projected to 2-D") -> None:
    group.add_argument("--vis_type", default=VIS_TYPE, choices=METHODS, help=what)
