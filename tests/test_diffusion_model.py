"""The diffusion renderer's network: shapes, loss, overfitting, deterministic few-step sampling, EMA, init."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from diffusers import UNet2DModel

from common.errors import InputError
from renderers.diffusion.model import (
    EMA,
    DiffusionNetConfig,
    HeadDiffusion,
    init_from_pretrained,
    min_snr_weights,
)

SIZE = 16
COND = 10


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: threads only add overhead (and stall badly on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(**overrides) -> DiffusionNetConfig:
    values = dict(
        sample_size=SIZE, conditioning_channels=COND, block_out_channels=(16, 32), layers_per_block=1,
        attention=(False, True), attention_head_dim=8, norm_num_groups=8,
    )  # fmt: skip
    values.update(overrides)
    return DiffusionNetConfig(**values)


def tiny_model(seed: int = 0, **overrides) -> HeadDiffusion:
    torch.manual_seed(seed)
    return HeadDiffusion(tiny_config(**overrides))


def batch(n: int = 2, seed: int = 1) -> dict[str, torch.Tensor]:
    """A smooth RGBA head and matching inputs (the conditioning is a function of the image)."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, SIZE), torch.linspace(-1, 1, SIZE), indexing="ij")
    phase = torch.rand(n, 1, 1, 1, generator=g) * 3
    rgb = torch.cat([torch.sin(2 * xs + phase), torch.cos(2 * ys + phase), xs * ys * phase], 1).clamp(-1, 1)
    alpha = (xs**2 + ys**2 < 0.6).float().expand(n, 1, SIZE, SIZE) * 2 - 1
    x0 = torch.cat([rgb, alpha], 1)
    conditioning = torch.cat([x0, x0[:, :3] * 0.5, x0[:, :3] ** 2], 1)[:, :COND]
    reference = x0[:1, :3].expand(n, -1, -1, -1).contiguous()
    previous = torch.roll(x0, 1, dims=3)
    return {"x0": x0, "conditioning": conditioning, "reference": reference, "previous": previous}


def test_no_torchvision():
    assert "torchvision" not in sys.modules


def test_config_checks():
    assert DiffusionNetConfig().in_channels == 4 + 11 + 3 + 4
    assert tiny_config(use_previous=False).in_channels == 4 + COND + 3
    with pytest.raises(ValueError, match="attention"):
        tiny_config(attention=(True,))
    with pytest.raises(ValueError, match="v_prediction"):
        tiny_config(prediction_type="epsilon")
    with pytest.raises(ValueError, match="multiple"):
        tiny_config(block_out_channels=(12, 32))
    # lists from YAML become tuples
    assert tiny_config(block_out_channels=[16, 32], attention=[0, 1]).attention == (False, True)


def test_forward_shapes():
    model = tiny_model()
    b = batch(3)
    noisy = torch.randn(3, 4, SIZE, SIZE)
    v = model(noisy, torch.tensor([0, 500, 999]), b["conditioning"], b["reference"], b["previous"])
    assert v.shape == (3, 4, SIZE, SIZE)
    # no previous frame: zeros; a scalar timestep is expanded
    v0 = model(noisy, 10, b["conditioning"], b["reference"])
    vz = model(noisy, 10, b["conditioning"], b["reference"], torch.zeros(3, 4, SIZE, SIZE))
    assert torch.equal(v0, vz)
    # a network without the previous frame rejects one
    plain = tiny_model(use_previous=False)
    assert plain(noisy, 10, b["conditioning"], b["reference"]).shape == (3, 4, SIZE, SIZE)
    with pytest.raises(ValueError, match="previous"):
        plain(noisy, 10, b["conditioning"], b["reference"], b["previous"])
    with pytest.raises(ValueError, match="channels"):
        model(noisy, 10, b["conditioning"][:, :5], b["reference"])


def test_min_snr_weights_formula():
    snr = torch.tensor([0.0, 1e-3, 0.5, 4.0, 5.0, 20.0, 1e4])
    expected = torch.tensor([min(s, 5.0) / (s + 1.0) for s in snr.tolist()])
    torch.testing.assert_close(min_snr_weights(snr, 5.0), expected)
    floored = torch.tensor([max(min(s, 5.0), 1.0) / (s + 1.0) for s in snr.tolist()])
    torch.testing.assert_close(min_snr_weights(snr, 5.0, floor=1.0), floored)
    # the model's SNR is alpha_bar / (1 - alpha_bar) of its schedule; zero terminal SNR with the cosine one
    model = tiny_model()
    t = torch.tensor([0, 250, 999])
    a = model.scheduler.alphas_cumprod[t]
    torch.testing.assert_close(model.snr(t), a / (1 - a))
    assert model.snr(torch.tensor([999])).item() < 1e-6


def test_loss_weighting_and_determinism():
    model = tiny_model()
    b = batch()
    args = (b["x0"], b["conditioning"], b["reference"], b["previous"])
    loss, parts = model.loss(*args, generator=torch.Generator().manual_seed(3))
    again, _ = model.loss(*args, generator=torch.Generator().manual_seed(3))
    assert torch.isfinite(loss) and loss.requires_grad
    assert torch.equal(loss, again)
    assert set(parts) == {"v_mse", "x0_mse"} and all(torch.isfinite(p) for p in parts.values())
    # a weight map of ones is the plain mean; doubling it doubles the loss
    ones, _ = model.loss(
        *args, weight=torch.ones(2, 1, SIZE, SIZE), generator=torch.Generator().manual_seed(3)
    )
    twice, _ = model.loss(
        *args, weight=2 * torch.ones(2, 1, SIZE, SIZE), generator=torch.Generator().manual_seed(3)
    )
    torch.testing.assert_close(ones, loss)
    torch.testing.assert_close(twice, 2 * loss)


@pytest.mark.slow  # 150 training steps
def test_overfits_one_batch():
    model = tiny_model(use_previous=False)
    b = batch(2)
    # evaluate on many fixed (t, noise) draws: the same images repeated
    ev = [t.repeat(8, 1, 1, 1) for t in (b["x0"], b["conditioning"], b["reference"])]

    def eval_loss() -> float:
        with torch.no_grad():
            return model.loss(*ev, generator=torch.Generator().manual_seed(123))[0].item()

    def sample_error(steps: int) -> float:
        x = model.sample(b["conditioning"], b["reference"], steps=steps, seed=4)
        return (x - b["x0"]).square().mean().item()

    before, sampled_before = eval_loss(), sample_error(4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    train = [t.repeat(4, 1, 1, 1) for t in (b["x0"], b["conditioning"], b["reference"])]
    for _ in range(150):
        loss, _ = model.loss(*train, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert after < 0.25 * before, (before, after)
    # the few-step sampler now paints the training images much better than the untrained network
    assert sample_error(4) < 0.1 * sampled_before
    assert sample_error(1) < 0.5 * sampled_before


def test_sample_deterministic_per_seed():
    model = tiny_model()
    b = batch(3)
    args = (b["conditioning"], b["reference"], b["previous"])
    a = model.sample(*args, steps=4, seed=7)
    again = model.sample(*args, steps=4, seed=7)
    other = model.sample(*args, steps=4, seed=8)
    assert a.shape == (3, 4, SIZE, SIZE)
    assert torch.equal(a, again)
    assert not torch.equal(a, other)
    # an explicit generator is the same as its seed
    assert torch.equal(a, model.sample(*args, steps=4, generator=torch.Generator().manual_seed(7)))
    # shared noise: a frame's result does not depend on the batch around it
    alone = model.sample(*(t[1:2] for t in args), steps=4, seed=7)
    torch.testing.assert_close(alone, a[1:2], atol=1e-5, rtol=0)
    # sampling restores the training mode
    model.train()
    model.sample(*args, steps=1)
    assert model.training


@pytest.mark.parametrize("scheduler", ["ddim", "dpm++"])
def test_sample_steps_and_schedulers(scheduler):
    model = tiny_model()
    b = batch(2)
    for steps in (1, 2, 4, 8):
        x = model.sample(b["conditioning"], b["reference"], steps=steps, scheduler=scheduler, seed=0)
        assert x.shape == (2, 4, SIZE, SIZE)
        assert torch.isfinite(x).all()
        assert x.min() >= -1 and x.max() <= 1
    # DDIM with eta > 0 is stochastic but still seeded
    if scheduler == "ddim":
        s1 = model.sample(b["conditioning"], b["reference"], steps=4, eta=1.0, seed=2, shared_noise=False)
        s2 = model.sample(b["conditioning"], b["reference"], steps=4, eta=1.0, seed=2, shared_noise=False)
        assert torch.equal(s1, s2)
    with pytest.raises(ValueError, match="sampler"):
        model.sample(b["conditioning"], b["reference"], scheduler="euler")


def test_one_step_returns_predicted_x0():
    """One trailing step goes from t = T to the prediction x0 = sqrt(a) x_T - sqrt(1 - a) v (clipped)."""
    model = tiny_model()
    b = batch(2)
    x = model.sample(b["conditioning"], b["reference"], b["previous"], steps=1, seed=5)
    noise = torch.randn((1, 4, SIZE, SIZE), generator=torch.Generator().manual_seed(5)).expand(2, -1, -1, -1)
    with torch.no_grad():
        v = model(noise, 999, b["conditioning"], b["reference"], b["previous"])
    a = model.scheduler.alphas_cumprod[999]
    expected = (a.sqrt() * noise - (1 - a).sqrt() * v).clamp(-1, 1)
    torch.testing.assert_close(x, expected, atol=1e-5, rtol=0)
    y = model.sample(b["conditioning"], b["reference"], b["previous"], steps=1, seed=5, scheduler="dpm++")
    torch.testing.assert_close(y, expected, atol=1e-4, rtol=0)


def test_ema_math_and_applied():
    model = tiny_model()
    ema = EMA(model, decay=0.9)
    assert ema.decay_at(0) == pytest.approx(0.1)
    assert ema.decay_at(10**6) == 0.9
    start = {k: v.clone() for k, v in ema.state_dict().items()}
    # one update from a known shadow toward new constant params
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model, step=100)
    name, p = next(iter(model.named_parameters()))
    torch.testing.assert_close(ema.shadow[name], 0.9 * start[name] + 0.1 * p.detach())
    for step in range(101, 400):
        ema.update(model, step)
    for name, p in model.named_parameters():
        torch.testing.assert_close(ema.shadow[name], p.detach(), atol=1e-6, rtol=1e-6)
    # applied() swaps the averages in and restores the model's own weights exactly
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    own = {k: v.clone() for k, v in model.named_parameters()}
    with ema.applied(model):
        for name, p in model.named_parameters():
            assert torch.equal(p, ema.shadow[name])
    for name, p in model.named_parameters():
        assert torch.equal(p, own[name])
    # state dicts round-trip through safetensors
    from safetensors.torch import load, save

    other = EMA(tiny_model(seed=5))
    other.load_state_dict(load(save(ema.state_dict())))
    for name in ema.shadow:
        assert torch.equal(other.shadow[name], ema.shadow[name])
    with pytest.raises(ValueError, match="EMA"):
        other.load_state_dict({})


def _save_pretrained(path, in_channels=3, out_channels=3):
    torch.manual_seed(11)
    unet = UNet2DModel(
        sample_size=SIZE, in_channels=in_channels, out_channels=out_channels, block_out_channels=(16, 32),
        layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8, norm_num_groups=8,
    )  # fmt: skip
    unet.save_pretrained(path, safe_serialization=True)
    return unet


def test_init_from_pretrained(tmp_path):
    pretrained = _save_pretrained(tmp_path / "unet")
    model = tiny_model()
    summary = init_from_pretrained(model, tmp_path / "unet")
    assert summary.adapted == ["conv_in.weight", "conv_out.weight", "conv_out.bias"]
    assert summary.skipped == [] and summary.unused == 0
    src = pretrained.state_dict()
    dst = model.unet.state_dict()
    assert summary.copied == len(dst) - 3
    for name, value in dst.items():
        if name not in summary.adapted:
            assert torch.equal(value, src[name]), name
    assert torch.equal(dst["conv_in.weight"][:, :3], src["conv_in.weight"])
    assert (dst["conv_in.weight"][:, 3:] == 0).all()
    assert torch.equal(dst["conv_out.weight"][:3], src["conv_out.weight"])
    assert torch.equal(dst["conv_out.bias"][:3], src["conv_out.bias"])
    # a pipeline folder with the UNet in unet/ works too
    assert init_from_pretrained(tiny_model(), tmp_path).copied == summary.copied


def test_init_from_pretrained_other_shapes(tmp_path):
    _save_pretrained(tmp_path / "unet")
    model = tiny_model(block_out_channels=(16, 48), attention=(False, True))
    summary = init_from_pretrained(model, tmp_path / "unet")
    assert summary.skipped and summary.copied > 0
    assert "conv_in.bias" not in summary.skipped  # the first level's width still matches


def test_init_from_pretrained_errors(tmp_path):
    with pytest.raises(InputError, match=r"config\.json"):
        init_from_pretrained(tiny_model(), tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"config\.json"):
        init_from_pretrained(tiny_model(), tmp_path / "empty")
    only_config = tmp_path / "only_config"
    only_config.mkdir()
    (only_config / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(InputError, match=r"diffusion_pytorch_model\.safetensors"):
        init_from_pretrained(tiny_model(), only_config)
    other = tmp_path / "other"
    _save_pretrained(other)
    (other / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    with pytest.raises(InputError, match="not a UNet2DModel"):
        init_from_pretrained(tiny_model(), other)
