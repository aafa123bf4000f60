"""Find what an analysis step reads: the paths it was given, or else what train.py and
encode_latent_space.py left in --output_dir. Each file is loaded through its validator in
artifacts.py and checked against the others (same training, dataset, image shape and size; the same
run id where both have one, latentlab.store.runs). Before a step writes, runs.claim checks that
--output_dir holds the run of its inputs (or none yet).

Defaults: `test_data.pth` in --output_dir names the models of its training (`latent_sizes`,
`models`): the N-d model is the size that is not 2, and the 2-d model sits beside it. Latents are
`latent_space_size_{N}.npy` in --output_dir, with `latent_space_size_2.npy` beside them. A step
given an explicit N-d file looks for its 2-d companion in the same folder and goes on without it
(saying so) when there is none.
"""
from __future__ import annotations

from pathlib import Path

from latentlab.store import artifacts, checkpoints, files, latent_files, runs
from latentlab.store.checkpoints import CheckpointFile
from latentlab.store.latent_files import Latents
from latentlab.cli import UserError
from latentlab.settings import FOLDER_READING


def chosen_size(sizes) -> int:
    """The --latent_size of the training: the size beside the 2-d one (2 when it was alone)."""
    others = [k for k in sizes if k != 2]
    return max(others) if others else 2


INPUT_FLAGS = {
    "model_path": "the N-d checkpoint (default: the one test_data.pth names); the 2-d one is read beside it",
    "test_data": "test_data.pth of the same training (default: in --output_dir)",
    "pca_baseline": "pca_baseline.pth of the same training (default: beside the test data)",
    "latent_space": "latent_space_size_{N}.npy (default: the N-d latents in --output_dir); the 2-d ones are read beside it",
}


def add_input_flags(parser, *names: str) -> None:
    """Declare the input paths a step reads (keys of INPUT_FLAGS), each defaulting to None: found
    as this module's docstring says."""
    group = parser.add_argument_group("inputs")
    for name in names:
        # "%(default).0s" prints nothing; it stops the help formatter from adding "(default: None)"
        group.add_argument(f"--{name}", default=None, help=INPUT_FLAGS[name] + "%(default).0s")


def say(quiet: bool, line: str) -> None:
    if not quiet:
        print(line, flush=True)


# ---------------------------------------------------------------- test data and models
def find_test_data(test_data, output_dir) -> tuple[dict, Path]:
    """--test_data, or test_data.pth in --output_dir."""
    path = Path(test_data) if test_data else files.test_data_path(output_dir)
    return artifacts.load_test_data(path), path


def load_model(path, data: dict, data_path) -> CheckpointFile:
    """A checkpoint that belongs with the test data: named in it, same dataset, same image shape."""
    path = Path(path)
    ckpt = checkpoints.load_checkpoint(path)
    artifacts.check_test_data_matches(data, ckpt, data_path, path)
    runs.inputs_run((data_path, data), (path, ckpt))
    return CheckpointFile(path, ckpt)


def load_training_split(model: CheckpointFile, with_files: bool = False) -> tuple:
    """The training split (uint8 images (N, C, H, W), int64 labels; with_files, a folder's file
    paths too) of the dataset the checkpoint names, re-read from its files (never copied into
    output/): dataset, data folder, image size."""
    ds = model.ckpt["dataset"]
    return read_training_split(ds["name"], ds["data_dir"], ds["image_size"], model.ckpt["config"]["image_shape"],
                               ds["num_train"] + ds["num_val"], model.path, reading_of(ds), with_files)


def reading_of(described: dict) -> dict:
    """How a training read its images (a checkpoint's dataset description, or the latents of its
    training split that carry it), as load_dataset's arguments."""
    return {k: described[k] for k in FOLDER_READING}


def read_training_split(name: str, data_dir, image_size, image_shape, count: int, source, reading: dict,
                        with_files: bool = False) -> tuple:
    """load_dataset's training split, read as `reading` says (reading_of), checked to be the one
    `source` names: count images of image_shape."""
    from latentlab.data.datasets import load_dataset
    data = load_dataset(name, data_dir=data_dir, image_size=image_size, **reading)
    if tuple(data.image_shape) != tuple(image_shape) or len(data.train_x) != count:
        raise UserError(f"the {name} training split read now ({len(data.train_x)} images of shape "
                        f"{tuple(data.image_shape)}) is not the one of {source} ({count} of shape "
                        f"{tuple(image_shape)}); point it at the same files, or retrain and re-encode")
    return (data.train_x, data.train_y, data.train_files) if with_files else (data.train_x, data.train_y)


def find_models(model_path, test_data, output_dir, quiet: bool = False) -> tuple[dict, Path, list[CheckpointFile]]:
    """(test data, its path, [2-d model, N-d model]): --model_path (or the N-d model the test data
    names) and the 2-d model beside it."""
    data, data_path = find_test_data(test_data, output_dir)
    path = Path(model_path) if model_path else files.checkpoint_path(data_path.parent, chosen_size(data["latent_sizes"]))
    main = load_model(path, data, data_path)
    models = [main]
    if main.latent_size != 2:
        two = files.checkpoint_path(path.parent, 2)
        if two.is_file():
            models.insert(0, load_model(two, data, data_path))
        else:
            say(quiet, f"note: {two} not found; working on the {main.latent_size}-d model alone")
    return data, data_path, models


def find_pca_baseline(pca_baseline, data: dict, data_path, sizes) -> dict:
    """--pca_baseline, or pca_baseline.pth beside the test data."""
    path = Path(pca_baseline) if pca_baseline else files.pca_path(Path(data_path).parent)
    pca = artifacts.load_pca_baseline(path)
    artifacts.check_pca_matches(pca, data, path, data_path, sizes)
    runs.inputs_run((data_path, data), (path, pca))
    return pca


# ---------------------------------------------------------------- latents
def find_latents(latent_space, output_dir, data: dict | None = None, quiet: bool = False) -> list[Latents]:
    """[2-d latents, N-d latents]: --latent_space (or latent_space_size_{N}.npy in --output_dir, N
    from the test data there) and latent_space_size_2.npy beside it."""
    if latent_space:
        path = Path(latent_space)
    else:
        if data is None:
            if not files.test_data_path(output_dir).is_file():
                raise UserError(f"{files.test_data_path(output_dir)} does not exist, so the default latents are "
                                f"unknown; run train.py and encode_latent_space.py first, or pass --latent_space")
            data, _ = find_test_data(None, output_dir)
        path = files.latents_path(output_dir, chosen_size(data["latent_sizes"]))
    main = latent_files.load_latents(path)
    found = [main]
    if main.latent_size != 2:
        two = files.latents_path(path.parent, 2, main.split)
        if two.is_file():
            companion = latent_files.load_latents(two)
            if companion.dataset != main.dataset:
                raise UserError(f"{two} is from dataset {companion.dataset!r} but {path} from {main.dataset!r}; "
                                f"re-run encode_latent_space.py so both come from the same training")
            runs.inputs_run(main, companion)
            found.insert(0, companion)
        else:
            say(quiet, f"note: {two} not found; working on the {main.latent_size}-d latents alone")
    return found


def training_latents(lat, needed_by: str, otherwise: str):
    """The training-split latents beside test latents `lat`, checked to come from the same model;
    needed_by and otherwise complete the line that says they are missing."""
    path = files.latents_path(lat.path.parent, lat.latent_size, "train")
    if not path.is_file():
        raise UserError(f"{needed_by} needs the training split's latents {path}; make them with "
                        f"`python encode_latent_space.py --split train --output_dir {lat.path.parent}`, "
                        f"or {otherwise}")
    train = latent_files.load_latents(path)
    source = {"data_dir", "image_size", "image_shape", "split_size", *FOLDER_READING}  # what re-reads its images
    if train.split != "train" or not source <= set(train.meta) or train.meta.get("model_path") != lat.meta.get("model_path"):
        raise UserError(f"{path} was not encoded from the training split by the model of {lat.path} "
                        f"({lat.meta.get('model_path')}); re-run encode_latent_space.py --split train")
    return train


def training_pair(latents, needed_by: str, otherwise: str) -> list | None:
    """The training-split latents beside each of the test latents (training_latents), checked to
    encode the same training images; None where any of them has not been encoded."""
    import numpy as np
    if not all(files.latents_path(lat.path.parent, lat.latent_size, "train").is_file() for lat in latents):
        return None
    trains = [training_latents(lat, needed_by, otherwise) for lat in latents]
    for t in trains[:-1]:
        if not np.array_equal(t.indices, trains[-1].indices):
            raise UserError(f"{t.path} and {trains[-1].path} encode different training images; re-run "
                            f"encode_latent_space.py --split train so both encode the same")
    return trains


def training_images(trains):
    """The training images the training latents `trains` encoded, re-read from their dataset, and
    checked against the labels stored with each."""
    m = trains[-1].meta
    images, labels = read_training_split(m["dataset"], m["data_dir"], m["image_size"], m["image_shape"], m["split_size"],
                                         trains[-1].path, reading_of(m))
    for t in trains:
        if len(t.indices) and (t.indices.max() >= len(labels) or not (labels.numpy()[t.indices] == t.labels).all()):
            raise UserError(f"the labels stored with {t.path} differ from the dataset's training split; "
                            f"re-run encode_latent_space.py --split train")
    return images
