"""Find what an analysis step reads: the paths it was given, or else what train.py and
encode_latent_space.py left in --output_dir. Each file is loaded with the safe loaders of
artifacts.py and checked against the others (same training, dataset, image shape and size).

Defaults: `test_data.pth` in --output_dir names the models of its training (`latent_sizes`,
`models`): the N-d model is the size that is not 2, and the 2-d model sits beside it. Latents are
`latent_space_size_{N}.npy` in --output_dir, with `latent_space_size_2.npy` beside them. A step
given an explicit N-d file looks for its 2-d companion in the same folder and goes on without it
(saying so) when there is none.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latentlab import artifacts
from latentlab.cli import UserError

FAMILY_NAMES = {"conv": "conv autoencoder", "mlp": "MLP autoencoder", "vae": "VAE"}


def model_label(family: str, latent_size: int, dataset: str) -> str:
    """How titles and tables name a model: 'conv autoencoder, latent size 8, digits'."""
    return f"{FAMILY_NAMES.get(family, family)}, latent size {latent_size}, {dataset}"


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
def load_trained_test_data(test_data, output_dir) -> tuple[dict, Path]:
    """--test_data, or test_data.pth in --output_dir; checked to name the models it belongs to."""
    path = Path(test_data) if test_data else artifacts.test_data_path(output_dir)
    data = artifacts.load_test_data(path)
    sizes, models = data.get("latent_sizes"), data.get("models")
    if not (isinstance(sizes, list) and sizes and all(isinstance(k, int) and k > 0 for k in sizes)
            and isinstance(models, list) and len(models) == len(sizes)):
        raise UserError(f"{path} is malformed: it does not name the models it belongs to; retrain to recreate it")
    if not isinstance(data.get("class_names"), list) or not data["class_names"]:
        raise UserError(f"{path} is malformed: no class names; retrain to recreate it")
    return data, path


@dataclass
class Model:
    path: Path
    ckpt: dict

    @property
    def latent_size(self) -> int:
        return int(self.ckpt["config"]["latent_size"])

    @property
    def family(self) -> str:
        return self.ckpt["config"]["family"]

    @property
    def dataset(self) -> str:
        return self.ckpt["dataset"].get("name", "?")

    @property
    def label(self) -> str:
        return model_label(self.family, self.latent_size, self.dataset)


def load_model(path, data: dict, data_path) -> Model:
    """A checkpoint that belongs with the test data: named in it, same dataset, same image shape."""
    path = Path(path)
    ckpt = artifacts.load_checkpoint(path)
    artifacts.check_test_data_matches(data, ckpt, data_path, path)
    if path.name not in data["models"]:
        raise UserError(f"test data {data_path} belongs to {', '.join(data['models'])}, not to {path}; "
                        f"pass the test_data.pth written by the training of {path.name}")
    return Model(path, ckpt)


def load_training_split(model: Model) -> tuple:
    """The training split (uint8 images (N, C, H, W), int64 labels) of the dataset the checkpoint
    names, re-read from its files (never copied into output/): dataset, data folder, image size."""
    ds = model.ckpt["dataset"]
    if "data_dir" not in ds or "image_size" not in ds:
        raise UserError(f"{model.path} is too old to name its dataset's folder and image size, so its training split "
                        f"cannot be re-read; retrain it with this version's train.py")
    return read_training_split(ds["name"], ds["data_dir"], ds["image_size"], model.ckpt["config"]["image_shape"],
                               ds.get("num_train", 0) + ds.get("num_val", 0), model.path)


def read_training_split(name: str, data_dir, image_size, image_shape, count: int, source) -> tuple:
    """load_dataset's training split, checked to be the one `source` names: count images of image_shape."""
    from latentlab.datasets import load_dataset
    data = load_dataset(name, data_dir=data_dir, image_size=image_size)
    if tuple(data.image_shape) != tuple(image_shape) or len(data.train_x) != count:
        raise UserError(f"the {name} training split read now ({len(data.train_x)} images of shape "
                        f"{tuple(data.image_shape)}) is not the one of {source} ({count} of shape "
                        f"{tuple(image_shape)}); point it at the same files, or retrain and re-encode")
    return data.train_x, data.train_y


def find_models(model_path, test_data, output_dir, quiet: bool = False) -> tuple[dict, Path, list[Model]]:
    """(test data, its path, [2-d model, N-d model]): --model_path (or the N-d model the test data
    names) and the 2-d model beside it."""
    data, data_path = load_trained_test_data(test_data, output_dir)
    path = Path(model_path) if model_path else artifacts.checkpoint_path(data_path.parent, chosen_size(data["latent_sizes"]))
    main = load_model(path, data, data_path)
    models = [main]
    if main.latent_size != 2:
        two = artifacts.checkpoint_path(path.parent, 2)
        if two.is_file():
            models.insert(0, load_model(two, data, data_path))
        else:
            say(quiet, f"note: {two} not found; working on the {main.latent_size}-d model alone")
    return data, data_path, models


# ---------------------------------------------------------------- latents
@dataclass
class Latents:
    path: Path
    z: np.ndarray  # float32 (samples, latent_size)
    meta: dict
    labels: np.ndarray  # int64 (samples,)
    indices: np.ndarray  # int64 (samples,): rows of the test data that were encoded

    @property
    def latent_size(self) -> int:
        return self.z.shape[1]

    @property
    def split(self) -> str:
        return self.meta.get("split", "test")  # latents older than --split encoded the test split

    @property
    def class_names(self) -> list:
        return self.meta["class_names"]

    @property
    def dataset(self) -> str:
        return self.meta["dataset"]

    @property
    def family(self) -> str:
        return self.meta.get("family", "?")

    @property
    def label(self) -> str:
        return model_label(self.family, self.latent_size, self.dataset)


def load_latent_file(path) -> Latents:
    """latent_space_size_{N}.npy and its JSON, checked: size, labels, indices, class names."""
    path = Path(path)
    z, meta = artifacts.load_latents(path)
    again = "re-run encode_latent_space.py"
    if meta.get("latent_size") != z.shape[1]:
        raise UserError(f"{path} holds latents of size {z.shape[1]} but its JSON says the model's size is "
                        f"{meta.get('latent_size')}; {again}")
    named = re.fullmatch(r"latent_space_size_(\d+)(_train)?\.npy", path.name)
    if named and int(named.group(1)) != z.shape[1]:
        raise UserError(f"{path} is named for size {named.group(1)} but holds latents of size {z.shape[1]}; "
                        f"pass the file of the model you mean, or {again}")
    names, indices = meta.get("class_names"), meta.get("indices")
    if not isinstance(names, list) or not isinstance(meta.get("dataset"), str):
        raise UserError(f"{path.with_suffix('.json')} has no class names or dataset; {again}")
    if not isinstance(indices, list) or len(indices) != len(z):
        raise UserError(f"{path.with_suffix('.json')} does not say which test items were encoded; {again}")
    try:
        labels, idx = np.asarray(meta["labels"], dtype=np.int64), np.asarray(indices, dtype=np.int64)
    except (TypeError, ValueError):
        raise UserError(f"{path.with_suffix('.json')} has labels or indices that are not integers; {again}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
        raise UserError(f"{path.with_suffix('.json')} has labels outside its {len(names)} classes; {again}")
    return Latents(path, z, meta, labels, idx)


def find_latents(latent_space, output_dir, data: dict | None = None, quiet: bool = False) -> list[Latents]:
    """[2-d latents, N-d latents]: --latent_space (or latent_space_size_{N}.npy in --output_dir, N
    from the test data there) and latent_space_size_2.npy beside it."""
    if latent_space:
        path = Path(latent_space)
    else:
        if data is None:
            if not artifacts.test_data_path(output_dir).is_file():
                raise UserError(f"{artifacts.test_data_path(output_dir)} does not exist, so the default latents are "
                                f"unknown; run train.py and encode_latent_space.py first, or pass --latent_space")
            data, _ = load_trained_test_data(None, output_dir)
        path = artifacts.latents_path(output_dir, chosen_size(data["latent_sizes"]))
    main = load_latent_file(path)
    found = [main]
    if main.latent_size != 2:
        two = artifacts.latents_path(path.parent, 2, main.split)
        if two.is_file():
            companion = load_latent_file(two)
            if companion.dataset != main.dataset:
                raise UserError(f"{two} is from dataset {companion.dataset!r} but {path} from {main.dataset!r}; "
                                f"re-run encode_latent_space.py so both come from the same training")
            found.insert(0, companion)
        else:
            say(quiet, f"note: {two} not found; working on the {main.latent_size}-d latents alone")
    return found


def check_latents_match(latents: Latents, data: dict, data_path) -> None:
    """The latents were encoded from this test data: same dataset, indices inside it, same labels."""
    if latents.split != "test":
        raise UserError(f"{latents.path} encodes the {latents.split}ing split; pass the test-split latents "
                        f"({artifacts.latents_path(latents.path.parent, latents.latent_size).name})")
    if latents.dataset != data["dataset"]:
        raise UserError(f"{latents.path} was encoded from dataset {latents.dataset!r} but {data_path} holds "
                        f"{data['dataset']!r}; pass the test data of the same training")
    n = len(data["labels"])
    if len(latents.indices) and (latents.indices.min() < 0 or latents.indices.max() >= n):
        raise UserError(f"{latents.path} refers to test items beyond the {n} of {data_path}; "
                        f"pass the test data it was encoded from, or re-run encode_latent_space.py")
    if not np.array_equal(data["labels"].numpy()[latents.indices], latents.labels):
        raise UserError(f"the labels stored with {latents.path} differ from those of the same items in {data_path}; "
                        f"it was encoded from other test data: re-run encode_latent_space.py")


def load_pca_baseline(pca_baseline, data: dict, data_path, sizes) -> dict:
    """--pca_baseline, or pca_baseline.pth beside the test data: same dataset and image shape, and
    enough components for every latent size in sizes (as many as there are pixel values at most)."""
    path = Path(pca_baseline) if pca_baseline else artifacts.pca_path(Path(data_path).parent)
    pca = artifacts.load_torch(path, "pca_baseline", hint="run train.py first, or pass --pca_baseline")
    shape = list(data["images"].shape[1:])
    dims = int(np.prod(shape))
    comps, mean = pca.get("components"), pca.get("mean")
    if not (hasattr(comps, "shape") and comps.dim() == 2 and comps.shape[1] == dims and mean.shape == (dims,)):
        raise UserError(f"{path} does not fit the test data's images {tuple(shape)}; "
                        f"pass the pca_baseline.pth of the same training")
    if pca.get("dataset") != data["dataset"]:
        raise UserError(f"{path} was fit on dataset {pca.get('dataset')!r} but {data_path} holds {data['dataset']!r}; "
                        f"pass the pca_baseline.pth of the same training")
    need = min(max(sizes), dims)
    if comps.shape[0] < need:
        raise UserError(f"{path} has {comps.shape[0]} components, latent size {max(sizes)} needs {need}; "
                        f"pass the pca_baseline.pth of the same training")
    return pca
