"""Parity of pdae.nets with the official PDAE networks (ckczzj/PDAE @4f9c29a; docs/protocol.md §2.1-2.3, §3.2).

The fixtures in tests/fixtures/parity were produced by running the official `UNet`, `ShiftUNet` and
encoder classes (small configs, float32, eval mode) with every parameter set to `fill_value(key, shape)`
below; they hold the official key lists and shapes, the inputs and the outputs (numbers only).
Here we rebuild our networks, fill them the same way through the official key names and compare.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from pdae.nets.encoder import SemanticEncoder
from pdae.nets.gradient_estimator import GradientEstimator
from pdae.nets.unet import UNet

FIXTURES = Path(__file__).parent / "fixtures" / "parity"
ATOL = 1e-5


def fill_value(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Deterministic float64 tensor from a key name and shape (the fixture generator uses the same).

    u_i = frac(sin(12.9898 i + 0.0787 s + 1) * 43758.5453) with s = crc32(key) mod 100003, mapped to a
    unit-variance uniform v; weights of rank >= 2 are v / sqrt(fan_in), 1-D weights (norms) 1 + 0.1 v,
    biases 0.1 v.
    """
    n = math.prod(shape)
    seed = zlib.crc32(key.encode()) % 100003
    i = torch.arange(n, dtype=torch.float64)
    u = torch.frac(torch.sin(i * 12.9898 + seed * 0.0787 + 1.0) * 43758.5453).abs()
    v = (2.0 * u - 1.0) * math.sqrt(3.0)
    if len(shape) >= 2:
        v = v / math.sqrt(math.prod(shape[1:]))
    elif key.endswith("weight"):
        v = 1.0 + 0.1 * v
    else:
        v = 0.1 * v
    return v.reshape(shape)


def filled(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Official-named state dict: every entry `fill_value(key, shape)` in float32."""
    return {k: fill_value(k, tuple(s)).float() for k, s in shapes.items()}


def shapes_of(state: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in state.items()}


@pytest.fixture(scope="module")
def small_keys() -> dict:
    return json.loads((FIXTURES / "official_keys_small.json").read_text())


def fixture_config(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["config"])


@pytest.mark.parametrize("name", ["legacy", "neworder_sigma"])
def test_unet_and_gradient_estimator_match_official(name: str, small_keys: dict) -> None:
    official = small_keys[name]
    data = load_file(str(FIXTURES / f"{name}.safetensors"))
    assert fixture_config(FIXTURES / f"{name}.safetensors") == official["config"]

    prior = UNet.from_official_config(official["config"])
    estimator = GradientEstimator(prior, latent_dim=official["latent_dim"])

    # Keys: the UNet equals the official UNet; prior (un-namespaced) + new parts equal the ShiftUNet.
    assert list(prior.state_dict()) == list(official["unet"])
    assert shapes_of(prior.state_dict()) == official["unet"]
    ours = {k.removeprefix("prior."): v for k, v in estimator.state_dict().items()}
    assert shapes_of(ours) == official["shift_unet"]

    # Fill through the official names and load.
    state = filled(official["shift_unet"])
    prior.load_state_dict({k: state[k] for k in official["unet"]}, strict=True)
    estimator.load_new_state_dict(state)
    estimator.eval()

    with torch.no_grad():
        out = prior(data["x_t"], data["t"])
        eps, g = estimator(data["x_t"], data["t"], data["z"])
    assert out.shape == data["eps"].shape
    torch.testing.assert_close(out, data["eps"], atol=ATOL, rtol=0)
    eps_channels = official["config"]["input_channel"]
    torch.testing.assert_close(eps, data["eps"][:, :eps_channels], atol=ATOL, rtol=0)
    torch.testing.assert_close(g, data["G"], atol=ATOL, rtol=0)
    assert data["G"].abs().mean() > 0.1  # the check is not vacuous


def test_class_conditional_unet_matches_official(small_keys: dict) -> None:
    official = small_keys["classcond"]
    data = load_file(str(FIXTURES / "classcond.safetensors"))
    prior = UNet.from_official_config(official["config"])
    assert shapes_of(prior.state_dict()) == official["unet"]
    prior.load_state_dict(filled(official["unet"]), strict=True)
    prior.eval()
    with torch.no_grad():
        out = prior(data["x_t"], data["t"], data["y"])
    torch.testing.assert_close(out, data["eps"], atol=ATOL, rtol=0)


def test_128px_keys_match_official() -> None:
    official = json.loads((FIXTURES / "official_keys_128.json").read_text())
    with torch.device("meta"):
        prior = UNet.from_official_config(official["config"])
        estimator = GradientEstimator(prior, latent_dim=official["latent_dim"])
    assert len(official["unet"]) == 432
    assert list(prior.state_dict()) == list(official["unet"])
    assert shapes_of(prior.state_dict()) == official["unet"]
    assert shapes_of(estimator.new_state_dict()) == official["shift_unet_new"]
    assert len(official["unet"]) + len(official["shift_unet_new"]) == 744


def test_encoder_keys_and_outputs_match_official() -> None:
    official = json.loads((FIXTURES / "official_keys_encoder.json").read_text())
    with torch.device("meta"):
        enc128 = SemanticEncoder(128)
    assert list(enc128.state_dict()) == list(official["128"])
    assert shapes_of(enc128.state_dict()) == official["128"]

    enc64 = SemanticEncoder(64, channels=(64, 128, 128, 128))
    assert shapes_of(enc64.state_dict()) == official["64"]
    enc64.load_state_dict(filled(official["64"]), strict=True)
    x0 = fill_value("input", (2, 3, 64, 64)).float()
    with torch.no_grad():
        z = enc64(x0)
    torch.testing.assert_close(z, load_file(str(FIXTURES / "encoder64.safetensors"))["z"], atol=ATOL, rtol=0)
