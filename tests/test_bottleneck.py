"""train.py --bottleneck: codes on a sphere (the default for conv codes of 33 to 64 units), their
defaults by code size and family, the refusals, the record, --resume and the sweep."""
import dataclasses
import math

import pytest
import torch

from conftest import run_main, run_script
from latentlab.store import checkpoints
from latentlab.cli import UserError
from latentlab.settings import Settings
from model.autoencoder import ModelConfig, build_model, describe, model_from_checkpoint


@pytest.mark.parametrize("family, shape", [("conv", (1, 28, 28)), ("conv", (3, 8, 8)), ("mlp", (1, 8, 8))])
def test_a_sphere_code_has_length_sqrt_d_and_any_point_decodes_by_its_direction(family, shape):
    torch.manual_seed(0)
    sphere = build_model(ModelConfig(family=family, latent_size=16, image_shape=shape, bottleneck="sphere")).eval()
    x = torch.rand(5, *shape)
    z = sphere.encode(x)
    assert torch.allclose(z.norm(dim=1), torch.full((5,), 4.0), atol=1e-5)  # sqrt(16)
    logits, kl = sphere(x)
    assert torch.allclose(logits, sphere.decode_logits(z), atol=1e-5) and not kl.any()
    assert torch.allclose(sphere.decode(z), sphere.decode(3 * z), atol=1e-6)  # samples off it are projected
    torch.manual_seed(0)
    linear = build_model(ModelConfig(family=family, latent_size=16, image_shape=shape)).eval()
    assert not torch.allclose(linear.encode(x).norm(dim=1), torch.full((5,), 4.0), atol=1e-2)
    assert not torch.allclose(linear.decode(z), linear.decode(3 * z), atol=1e-3)


def test_the_default_bottleneck_by_code_size_and_family():
    shape = (1, 28, 28)

    def bottleneck(k, **flags):
        return Settings(latent_size=k, **flags).model_config(k, shape).bottleneck
    assert {k: bottleneck(k) for k in (2, 4, 32, 33, 64, 65, 256)} == {
        2: "linear", 4: "linear", 32: "linear", 33: "sphere", 64: "sphere", 65: "linear", 256: "linear"}
    assert bottleneck(64, model="vae") == bottleneck(64, model="mlp") == "linear"  # the VAE's code is Gaussian
    assert bottleneck(64, bottleneck="linear") == "linear" and bottleneck(8, bottleneck="sphere") == "sphere"
    assert bottleneck(8, model="mlp", bottleneck="sphere") == "sphere"
    assert bottleneck(2, bottleneck="sphere") == "linear"  # the 2-d companion: a circle is no map
    # titles say it
    assert describe("conv", 64, "fashion-mnist", bottleneck="sphere") == \
        "conv autoencoder on a sphere, latent size 64, fashion-mnist"


def test_a_bottleneck_the_model_cannot_take_is_refused(capsys):
    import train
    with pytest.raises(UserError, match="--bottleneck sphere: the VAE's code is Gaussian"):
        Settings(latent_size=64, model="vae", bottleneck="sphere").model_config(64, (1, 28, 28))
    for config in (dict(family="vae", latent_size=8), dict(family="conv", latent_size=2)):
        with pytest.raises(ValueError, match="cannot have it on a sphere"):
            ModelConfig(bottleneck="sphere", **config)
    with pytest.raises(ValueError, match="unknown bottleneck 'cube'"):
        ModelConfig(bottleneck="cube")
    with pytest.raises(SystemExit) as e:
        train.parse_args(["--latent_size", "4", "--bottleneck", "cube"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err and "argument --bottleneck: invalid choice: 'cube'" in err


@pytest.mark.slow
def test_train_py_refuses_a_sphere_for_the_vae_in_one_line(tmp_path):
    out = tmp_path / "out"
    proc = run_script("train.py", "--latent_size", 4, "--dataset", "digits", "--model", "vae", "--bottleneck", "sphere",
                      "--output_dir", out, check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "--bottleneck sphere: the VAE's code is Gaussian" in proc.stderr
    assert not out.exists() or not list(out.glob("*.pth"))


def test_the_bottleneck_is_recorded_used_by_later_steps_and_checked_by_resume(tmp_path):
    from latentlab.train.checkpoint import check_resume
    out = tmp_path / "out"
    run_main("train", "--latent_size", "4", "--dataset", "digits", "--num_epochs", "1", "--bottleneck", "sphere",
             "--snapshot_every", "0", "--quiet", "--output_dir", str(out))
    ckpt = checkpoints.load_checkpoint(out / "model_latent_size_4.pth")
    assert ckpt["config"]["bottleneck"] == "sphere"
    assert checkpoints.load_checkpoint(out / "model_latent_size_2.pth")["config"]["bottleneck"] == "linear"
    model = model_from_checkpoint(ckpt)  # rebuilt from the checkpoint alone
    z = model.encode(torch.rand(3, 1, 8, 8))
    assert torch.allclose(z.norm(dim=1), torch.full((3,), math.sqrt(4)), atol=1e-5)
    settings = Settings(latent_size=4, dataset="digits", bottleneck="sphere")
    check_resume(ckpt, out, settings, settings.model_config(4, (1, 8, 8)), "digits")
    linear = dataclasses.replace(settings, bottleneck="linear")
    with pytest.raises(UserError, match="--resume: .* was trained with bottleneck=sphere, not linear"):
        check_resume(ckpt, out, linear, linear.model_config(4, (1, 8, 8)), "digits")


def test_the_sweep_records_the_bottleneck_each_size_builds(tmp_path):
    import sweep_latent_size
    from latentlab.sweep.jobs import make_jobs
    args = sweep_latent_size.parse_args(["--models", "conv", "--output_dir", str(tmp_path)])
    jobs = make_jobs(args, ["digits"], [0], ["conv"], [2, 64], quiet=True)
    assert [job.settings["bottleneck"] for job in jobs] == ["linear", "sphere"]
    args = sweep_latent_size.parse_args(["--models", "conv", "--bottleneck", "linear", "--output_dir", str(tmp_path)])
    job, = make_jobs(args, ["digits"], [0], ["conv"], [64], quiet=True)
    assert job.settings["bottleneck"] == "linear" and job.train.bottleneck == "linear"
