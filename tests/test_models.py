"""Shapes and gradients for every model family, 1 and 3 channels, every image size the datasets give."""
import pytest
import torch

from model.autoencoder import FAMILIES, ModelConfig, build_model


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 64, 64), (1, 7, 7), (3, 48, 48)])
@pytest.mark.parametrize("latent_size", [1, 2, 16])
def test_shapes_and_gradients(family, shape, latent_size):
    torch.manual_seed(0)
    model = build_model(ModelConfig(family=family, latent_size=latent_size, image_shape=shape))
    x = torch.rand(4, *shape)
    z = model.encode(x)
    assert z.shape == (4, latent_size)
    assert model.decode(z).shape == (4, *shape)
    rec = model.reconstruct(x)
    assert rec.shape == x.shape and rec.min() >= 0 and rec.max() <= 1
    model.train()
    logits, kl = model(x)
    assert logits.shape == x.shape and kl.shape == (4,)
    loss = model.objective(logits, kl, x)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_bottleneck_is_linear_so_latents_can_be_negative():
    torch.manual_seed(0)
    model = build_model(ModelConfig(family="conv", latent_size=16, image_shape=(1, 28, 28)))
    z = model.encode(torch.rand(64, 1, 28, 28))
    assert (z < 0).any() and (z > 0).any()


def test_vae_samples_in_training_and_uses_the_mean_in_eval():
    torch.manual_seed(0)
    model = build_model(ModelConfig(family="vae", latent_size=4, image_shape=(1, 8, 8)))
    x = torch.rand(3, 1, 8, 8)
    model.eval()
    a, _ = model(x)
    b, _ = model(x)
    assert torch.equal(a, b)
    model.train()
    c, kl = model(x)
    assert not torch.equal(a, c)
    assert (kl >= 0).all()


def test_config_round_trips_through_a_plain_dict():
    cfg = ModelConfig(family="mlp", latent_size=3, image_shape=(3, 32, 32), noise_std=0.2)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown model family"):
        ModelConfig(family="transformer")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 7, 7)])
def test_a_loaded_model_computes_what_it_trained_as(family, shape):
    """model_from_checkpoint puts conv models in channels_last (as training does): the same latents
    and reconstructions as the plain layout, whatever layout the input comes in."""
    from model.autoencoder import model_from_checkpoint
    torch.manual_seed(0)
    config = ModelConfig(family=family, latent_size=8, image_shape=shape)
    plain = build_model(config).eval()
    loaded = model_from_checkpoint({"config": config.to_dict(), "state_dict": plain.state_dict()})
    weights = [p for p in loaded.parameters() if p.dim() == 4]
    if not FAMILIES[family].channels_last:
        assert not weights
    else:
        assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    x = torch.rand(5, *shape)
    with torch.no_grad():
        for inputs in (x, x.contiguous(memory_format=torch.channels_last)):
            torch.testing.assert_close(loaded.encode(inputs), plain.encode(x), rtol=0, atol=1e-5)
            rec = loaded.reconstruct(inputs)
            torch.testing.assert_close(rec, plain.reconstruct(x), rtol=0, atol=1e-5)
            assert rec.reshape(5, -1).shape == (5, x[0].numel())
