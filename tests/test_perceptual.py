"""LPIPS in plain torch: weight search and loading, metric properties, and a check against an independent
re-computation, all with random weights saved as fake weight files (nothing real is downloaded)."""

from __future__ import annotations

import itertools
import re
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from common.errors import InputError, MissingWeightsError
from renderers import perceptual
from renderers.perceptual import BACKBONE_FILE, CHANNELS, HEADS_FILE, LPIPS, available, find_weights

# (key index, in, out, kernel) of the five convolutions of torchvision's alexnet().features.
CONVS = ((0, 3, 64, 11), (3, 64, 192, 5), (6, 192, 384, 3), (8, 384, 256, 3), (10, 256, 256, 3))


def fake_backbone(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random AlexNet weights with torchvision's checkpoint keys, including a few classifier ones."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for index, cin, cout, k in CONVS:
        # He-scaled so the activations neither vanish nor explode through five layers.
        std = (2 / (cin * k * k)) ** 0.5
        state[f"features.{index}.weight"] = torch.randn(cout, cin, k, k, generator=gen) * std
        state[f"features.{index}.bias"] = torch.randn(cout, generator=gen) * 0.01
    state["classifier.1.weight"] = torch.randn(8, 16, generator=gen)
    state["classifier.1.bias"] = torch.randn(8, generator=gen)
    return state


def fake_heads(seed: int = 1) -> dict[str, torch.Tensor]:
    """Random non-negative heads with lpips's ``alex.pth`` keys (lpips's trained heads are non-negative)."""
    gen = torch.Generator().manual_seed(seed)
    return {
        f"lin{k}.model.1.weight": torch.randn(1, c, 1, 1, generator=gen).abs() for k, c in enumerate(CHANNELS)
    }


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("lpips")
    torch.save(fake_backbone(), folder / BACKBONE_FILE)
    torch.save(fake_heads(), folder / HEADS_FILE)
    return folder


@pytest.fixture
def isolated(monkeypatch, tmp_path) -> Path:
    """No real LPIPS weights can be found: an empty torch hub cache and no lpips package."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(perceptual.ENV_DIR, raising=False)
    monkeypatch.setattr(perceptual, "_lpips_package_dir", lambda: None)
    return tmp_path


@pytest.fixture(scope="module")
def model(weights_dir) -> LPIPS:
    return LPIPS.load(weights_dir / BACKBONE_FILE, weights_dir / HEADS_FILE)


def images(n: int = 2, size: int = 64, seed: int = 2) -> torch.Tensor:
    """[n, 3, size, size] random images in [0.25, 0.75], so that added noise up to 0.25 stays in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    return 0.25 + 0.5 * torch.rand(n, 3, size, size, generator=gen)


def reference_lpips(a: torch.Tensor, b: torch.Tensor, backbone: dict, heads: dict) -> torch.Tensor:
    """LPIPS written out step by step after the lpips package, sharing no code with the module."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def relus(x: torch.Tensor) -> list[torch.Tensor]:
        x = (2 * x - 1 - shift) / scale

        def conv(x, i, stride=1, padding=1):
            return F.conv2d(
                x, backbone[f"features.{i}.weight"], backbone[f"features.{i}.bias"], stride, padding
            )

        r1 = F.relu(conv(x, 0, stride=4, padding=2))
        r2 = F.relu(conv(F.max_pool2d(r1, 3, 2), 3, padding=2))
        r3 = F.relu(conv(F.max_pool2d(r2, 3, 2), 6))
        r4 = F.relu(conv(r3, 8))
        r5 = F.relu(conv(r4, 10))
        return [r1, r2, r3, r4, r5]

    total = torch.zeros(a.shape[0])
    for k, (fa, fb) in enumerate(zip(relus(a), relus(b), strict=True)):
        fa = fa / (torch.sqrt((fa**2).sum(dim=1, keepdim=True)) + 1e-10)
        fb = fb / (torch.sqrt((fb**2).sum(dim=1, keepdim=True)) + 1e-10)
        weighted = F.conv2d((fa - fb) ** 2, heads[f"lin{k}.model.1.weight"])
        total += weighted.mean(dim=(1, 2, 3))
    return total


def test_find_weights_in_env_folder(isolated, weights_dir, monkeypatch):
    assert find_weights() is None and not available()
    monkeypatch.setenv(perceptual.ENV_DIR, str(weights_dir))
    assert find_weights() == (weights_dir / BACKBONE_FILE, weights_dir / HEADS_FILE)
    assert available()


def test_find_weights_in_hub_cache_and_lpips_package(isolated, weights_dir, monkeypatch):
    hub = isolated / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / BACKBONE_FILE).write_bytes((weights_dir / BACKBONE_FILE).read_bytes())
    package = isolated / "site-packages" / "lpips"
    (package / "weights" / "v0.1").mkdir(parents=True)
    (package / "weights" / "v0.1" / HEADS_FILE).write_bytes((weights_dir / HEADS_FILE).read_bytes())
    monkeypatch.setattr(perceptual, "_lpips_package_dir", lambda: package)
    assert find_weights() == (hub / BACKBONE_FILE, package / "weights" / "v0.1" / HEADS_FILE)
    assert isinstance(LPIPS.load(), LPIPS)


def test_load_keeps_features_only_frozen_and_in_eval(model):
    keys = set(model.state_dict())
    assert keys == {k for k in fake_backbone() if k.startswith("features.")} | set(fake_heads())
    assert all(not p.requires_grad for p in model.parameters())
    model.train()
    assert not model.training and not any(m.training for m in model.modules())


def test_identical_images_have_zero_distance(model):
    x = images()
    d = model(x, x.clone())
    assert d.shape == (2,)
    torch.testing.assert_close(d, torch.zeros(2), atol=1e-7, rtol=0)


def test_distance_is_positive_and_symmetric(model):
    a, b = images(seed=2), images(seed=3)
    ab, ba = model(a, b), model(b, a)
    assert (ab > 0).all()
    torch.testing.assert_close(ab, ba, atol=1e-6, rtol=1e-5)


def test_distance_grows_with_noise_amplitude(model):
    x = images(n=1)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(4)).clamp(-2.5, 2.5) / 10
    distances = [model(x, x + amp * noise).item() for amp in (0.1, 0.3, 0.6, 1.0)]
    assert all(a < b for a, b in itertools.pairwise(distances)), distances


def test_gradient_flows_to_the_input(model):
    target = images(seed=2)
    guess = images(seed=3).requires_grad_(True)
    model(guess, target).sum().backward()
    assert guess.grad is not None and torch.isfinite(guess.grad).all() and guess.grad.abs().sum() > 0
    # At the optimum (identical images) the gradient is finite too (no 0/0 in the normalisation).
    same = target.clone().requires_grad_(True)
    model(same, target).sum().backward()
    assert torch.isfinite(same.grad).all()


def test_matches_independent_recomputation(model):
    a, b = images(seed=5), images(seed=6)
    expected = reference_lpips(a, b, fake_backbone(), fake_heads())
    torch.testing.assert_close(model(a, b), expected, atol=1e-5, rtol=1e-5)


def test_safetensors_files_load_the_same(model, weights_dir, tmp_path):
    from safetensors.torch import save_file

    save_file(fake_backbone(), str(tmp_path / "backbone.safetensors"))
    save_file(fake_heads(), str(tmp_path / "heads.safetensors"))
    other = LPIPS.load(tmp_path / "backbone.safetensors", tmp_path / "heads.safetensors")
    a, b = images(seed=7), images(seed=8)
    torch.testing.assert_close(other(a, b), model(a, b), atol=0, rtol=0)


def test_missing_files_name_the_file(isolated, weights_dir, monkeypatch):
    empty = isolated / "empty"
    empty.mkdir()
    monkeypatch.setenv(perceptual.ENV_DIR, str(empty))
    with pytest.raises(InputError, match=re.escape(BACKBONE_FILE)) as err:
        LPIPS.load()
    assert isinstance(err.value, MissingWeightsError)
    assert str(empty) in str(err.value) and "optional" in str(err.value)
    (empty / BACKBONE_FILE).write_bytes((weights_dir / BACKBONE_FILE).read_bytes())
    with pytest.raises(InputError, match=r"alex\.pth"):
        LPIPS.load()
    with pytest.raises(InputError, match=r"nowhere\.pth"):
        LPIPS.load(heads=isolated / "nowhere.pth")


def test_heads_of_wrong_shape_are_refused(isolated, weights_dir):
    heads = fake_heads()
    heads["lin2.model.1.weight"] = torch.ones(1, 128, 1, 1)
    torch.save(heads, isolated / HEADS_FILE)
    with pytest.raises(InputError, match=r"lin2\.model\.1\.weight has shape \[1, 128, 1, 1\]"):
        LPIPS.load(weights_dir / BACKBONE_FILE, isolated / HEADS_FILE)


def test_swapped_or_corrupt_files_are_refused(isolated, weights_dir):
    with pytest.raises(InputError, match=r"no features\.0\.bias"):
        LPIPS.load(weights_dir / HEADS_FILE, weights_dir / HEADS_FILE)
    torn = isolated / BACKBONE_FILE
    torn.write_bytes((weights_dir / BACKBONE_FILE).read_bytes()[:1000])
    with pytest.raises(InputError, match="unreadable"):
        LPIPS.load(torn, weights_dir / HEADS_FILE)


def test_neither_torchvision_nor_lpips_is_imported(model):
    # Checked in this process (a subprocess costs seconds): nothing in the project may import them.
    model(images(seed=9), images(seed=10))
    assert not {"torchvision", "lpips"} & set(sys.modules)
