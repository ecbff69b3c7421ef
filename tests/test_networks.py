"""The image networks: residual conv encoder/decoder of any size and channel count, and the
autoregressive PixelCNN decoder (causality, normalisation, pixel-by-pixel sampling)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from pyro_vae import VAE, ConfigError
from pyro_vae.likelihoods import LIKELIHOODS
from pyro_vae.nn import NETWORKS
from pyro_vae.pixelcnn import Autoregressive


@pytest.mark.parametrize("x_shape", [(1, 28, 28), (3, 32, 32), (2, 7, 9)])
@pytest.mark.parametrize("network", ["resnet", "pixelcnn"])
def test_image_networks_take_any_size_and_channel_count(network, x_shape) -> None:
    vae = VAE(
        x_shape,
        3,
        network=network,
        network_options={"channels": 8},
        hidden=(16,),
        likelihood="logistic-mixture",
        likelihood_options={"components": 2},
    )
    x = torch.randint(0, 256, (4, *x_shape)).float() / 255
    assert vae.encoder(x).shape == (4, 16)
    assert vae.encoder(x.expand(2, *x.shape)).shape == (2, 4, 16)  # a particle dimension in front
    d = vae.decode(torch.randn(2, 4, 3))
    assert tuple(d.batch_shape) == (2, 4) and tuple(d.event_shape) == x_shape
    assert torch.isfinite(d.log_prob(x)).all()


def test_network_options_are_typed_and_refused_when_unknown() -> None:
    nets = NETWORKS.build("resnet", channels="12", blocks="2")
    assert (nets.channels, nets.blocks) == (12, 2)
    with pytest.raises(ConfigError, match="takes no option 'layers'"):
        NETWORKS.build("resnet", layers=3)
    with pytest.raises(ConfigError, match="kernel must be odd"):
        NETWORKS.build("pixelcnn", kernel=4)
    with pytest.raises(ConfigError, match="--network mlp"):
        VAE((64,), 2, network="resnet")


def pixelcnn(x_shape, likelihood="bernoulli", **opts):
    torch.manual_seed(0)
    vae = VAE(
        x_shape,
        2,
        network="pixelcnn",
        network_options={"channels": 8, "layers": 3, "kernel": 3, **opts},
        hidden=(8,),
        likelihood=likelihood,
    )
    for (
        p
    ) in vae.parameters():  # random weights everywhere, so every connection the masks allow is live
        torch.nn.init.normal_(p, std=0.3)
    return vae


@pytest.mark.parametrize("x_shape", [(1, 5, 6), (3, 4, 4)])
def test_a_pixel_changes_only_the_outputs_of_later_pixels(x_shape) -> None:
    vae = pixelcnn(x_shape, "discretized-logistic")
    decoder = vae.decoder
    context = decoder.context(torch.randn(1, 2))
    x = torch.rand(1, *x_shape)
    base = decoder.conditional(x, context)
    c, h, w = x_shape
    for i, j in [(0, 0), (2, 1), (h - 1, w - 1), (1, w - 1)]:
        for ch in range(c):
            bumped = x.clone()
            bumped[0, ch, i, j] += 0.7
            changed = (decoder.conditional(bumped, context) - base).abs().amax(1)[0] > 1e-7
            position = torch.arange(h * w).reshape(h, w)
            later = position > i * w + j
            assert not (changed & ~later).any(), (
                f"pixel {(i, j)} reached an earlier or its own output"
            )
            if i * w + j < h * w - 1:
                # the receptive field of a few 3x3 masked layers reaches the next pixels
                assert changed[later].any(), f"pixel {(i, j)} reached no later output"


def test_the_autoregressive_distribution_is_normalised_and_sampled_by_pixels() -> None:
    """All 2**6 binary 2x3 images: the probabilities under p(x | z) sum to one, and draws made
    pixel by pixel follow them."""
    vae = pixelcnn((1, 2, 3))
    d = vae.decode(torch.randn(1, 2))
    assert isinstance(d, Autoregressive)
    images = torch.tensor(list(itertools.product([0.0, 1.0], repeat=6))).reshape(-1, 1, 2, 3)
    p = d.log_prob(images).exp()
    assert abs(float(p.detach().sum()) - 1) < 1e-5
    n = 3000
    torch.manual_seed(1)
    draws = d.expand((n,)).sample()
    counts = (draws.reshape(n, 1, 6) == images.reshape(1, -1, 6)).all(-1).sum(0).float()
    assert counts.sum() == n
    se = (p * (1 - p) / n).sqrt()
    assert ((counts / n - p).abs() <= 5 * se + 2e-3).all()


def test_generation_uses_the_pixels_already_drawn() -> None:
    """Generation runs the network once per pixel, each time on the pixels drawn so far."""
    like = LIKELIHOODS.build("bernoulli", x_shape=(1, 2, 2))
    vae = pixelcnn((1, 2, 2))
    calls = []
    original = vae.decoder.conditional

    def spy(x, context):
        calls.append(x.clone())
        return original(x, context)

    vae.decoder.conditional = spy
    vae.decoder.distribution(torch.randn(3, 2), like).sample()
    assert len(calls) == 4  # one pass per pixel
    # pass k sees the k pixels drawn before it and zeros after
    for k, seen in enumerate(calls):
        flat = seen.reshape(3, 4)
        assert (flat[:, k:] == 0).all()


@pytest.mark.parametrize("network", ["resnet", "pixelcnn"])
def test_free_bits_and_kl_warm_up_train_the_image_networks(network) -> None:
    from pyro_vae import DataConfig, ModelConfig, RunConfig, TrainConfig, train
    from pyro_vae.data import Dataset

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (40, 1, 6, 6), generator=g).float() / 255
    data = Dataset("eight-bit", x[:32], x[32:])
    config = RunConfig(
        data=DataConfig("digits"),
        model=ModelConfig(
            latent_dim=3,
            hidden=(8,),
            network=network,
            network_options={"channels": 4},
            likelihood="discretized-logistic",
        ),
        train=TrainConfig(
            epochs=2, batch_size=16, device="cpu", free_bits=0.5, kl_anneal=2, kl_anneal_start=0.1
        ),
    )
    result = train(config, progress=False, dataset=data)
    assert all(
        math.isfinite(r["train_elbo"]) and math.isfinite(r["test_elbo"]) for r in result.history
    )
