"""The per-epoch training record and its animations: one GIF frame per epoch, frames that change,
a record that --resume continues exactly, and --snapshot_every 0 turning it all off."""
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_main
from latentlab import plots
from latentlab.train import animation

COMMON = ["--dataset", "digits", "--model", "mlp", "--batch_size", "64", "--lr_schedule", "constant", "--quiet",
          "--seed", "1"]
EPOCHS = 2


def _train(out, *extra):
    return run_main("train", "--latent_size", "4", "--num_epochs", str(EPOCHS), *COMMON, "--output_dir", str(out),
                    *extra)  # a later --num_epochs wins


def _frames(path):
    with Image.open(path) as im:
        frames = []
        for i in range(im.n_frames):
            im.seek(i)
            frames.append(np.asarray(im.convert("RGB")))
        return im.n_frames, frames


def _record(out, k):
    return torch.load(out / f"model_latent_size_{k}.pth", weights_only=True)["record"]


@pytest.fixture(scope="module")
def animated(tmp_path_factory):
    out = tmp_path_factory.mktemp("animated")
    _train(out)
    return out


@pytest.mark.slow  # trains
@pytest.mark.parametrize("name", ["latent_evolution_latent_size_2.gif", "latent_evolution_latent_size_4.gif",
                                  "reconstructions_latent_size_2.gif", "reconstructions_latent_size_4.gif"])
def test_one_frame_per_epoch_and_consecutive_frames_differ(animated, name):
    n, frames = _frames(animated / name)
    assert n == EPOCHS
    for a, b in zip(frames, frames[1:]):
        assert a.shape == b.shape and not np.array_equal(a, b)


@pytest.mark.slow  # trains
def test_the_record_is_plain_tensors_of_a_fixed_sample_in_the_checkpoint(animated):
    for k in (2, 4):
        r = _record(animated, k)
        assert r["epoch"].tolist() == list(range(EPOCHS))
        n = len(r["indices"])
        assert n == min(animation.RECORD_IMAGES, 144)  # digits: 144 validation images
        assert r["xy"].shape == (EPOCHS, n, 2) and torch.isfinite(r["xy"]).all()
        assert r["reconstructions"].shape[:2] == (EPOCHS, len(r["originals"]))
        assert r["reconstructions"].dtype == torch.uint8
        assert not torch.equal(r["xy"][0], r["xy"][-1])
    assert torch.equal(_record(animated, 2)["indices"], _record(animated, 4)["indices"])


@pytest.mark.slow  # trains
def test_resume_continues_the_record(animated, tmp_path):
    """A run of 1 epoch, resumed to 2 (a constant learning rate: the schedule does not depend on
    --num_epochs): the record and the GIF are those of the run of 2 epochs."""
    _train(tmp_path, "--num_epochs", "1")
    assert _record(tmp_path, 2)["epoch"].tolist() == [0]
    assert _frames(tmp_path / "latent_evolution_latent_size_2.gif")[0] == 1
    _train(tmp_path, "--resume")
    for k in (2, 4):
        a, b = _record(animated, k), _record(tmp_path, k)
        assert b["epoch"].tolist() == list(range(EPOCHS))
        assert torch.equal(a["xy"], b["xy"]) and torch.equal(a["reconstructions"], b["reconstructions"])
    assert _frames(tmp_path / "latent_evolution_latent_size_2.gif")[0] == EPOCHS


@pytest.mark.slow  # trains
def test_snapshot_every_0_records_and_animates_nothing(tmp_path):
    run_main("train", "--latent_size", "2", "--num_epochs", "1", *COMMON, "--output_dir", str(tmp_path),
             "--snapshot_every", "0")
    assert not list(tmp_path.glob("*.gif")) and not list(tmp_path.glob("*.mp4"))
    assert not list(tmp_path.glob("reconstructions_*"))
    assert "record" not in torch.load(tmp_path / "model_latent_size_2.pth", weights_only=True)


def test_axis_limits_are_one_pair_for_the_whole_run():
    xy = np.zeros((3, 1000, 2))
    xy[0] = np.random.default_rng(0).normal(size=(1000, 2))  # a small first frame
    xy[2] = 10 * np.random.default_rng(1).normal(size=(1000, 2))  # a wide last one
    (x0, x1), (y0, y1) = plots.fixed_limits(xy)
    assert x0 < -10 and x1 > 10 and y0 < -10 and y1 > 10  # the wide frame fits
    assert x1 < np.abs(xy).max() * 1.05  # the extreme 0.5% are not what sets them
