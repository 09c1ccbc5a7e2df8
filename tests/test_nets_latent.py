"""Latent DPM MLP (pdae/nets/latent_mlp.py, docs/protocol.md §2.4), classifier nets (pdae/nets/classifier.py, §2.5).

tests/fixtures/diffae_keys/latent_mlp.json was generated from the official Diff-AE `MLPSkipNet` (phizaz/diffae
@00c57d3, identical to PDAE's): the 10-layer key names and shapes, and eps of a small config for RNG-free
parameter values (the fixture's `fill` description, reimplemented in `official_fill`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_model, save_model

from eval.metrics import feature_map_distance
from pdae.nets.classifier import FeatureNet, LinearHead
from pdae.nets.latent_mlp import LatentMLP, diffae_latent_state_dict

FIXTURE = Path(__file__).parent / "fixtures" / "diffae_keys" / "latent_mlp.json"


# Tiny tensors: one intra-op thread (tests/conftest.py `single_thread`).
pytestmark = pytest.mark.usefixtures("single_thread")


def official_fill(keys: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """RNG-free parameter values keyed by official names (the fixture's `fill` description)."""
    out = {}
    for k_idx, key in enumerate(sorted(keys)):
        shape = keys[key]
        n = math.prod(shape)
        v = torch.sin(0.7 * torch.arange(n, dtype=torch.float64) + 0.31 * k_idx).float().reshape(shape)
        if len(shape) >= 2:
            out[key] = v / math.sqrt(n / shape[0])
        elif key.endswith("weight"):
            out[key] = 1.0 + 0.1 * v
        else:
            out[key] = 0.1 * v
    for key in list(out):
        if ".cond_layers.1." in key:
            out[key] = out[key.replace(".cond_layers.1.", ".linear_emb.")]
    return out


def shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


# Latent MLP.


def test_parameter_counts_and_official_keys() -> None:
    fixture = json.loads(FIXTURE.read_text())
    with torch.device("meta"):
        mlp10 = LatentMLP()
        mlp20 = LatentMLP(num_layers=20)
    assert sum(p.numel() for p in mlp10.parameters()) == 54_109_696 == fixture["num_params"]
    assert sum(p.numel() for p in mlp20.parameters()) == 117_106_176
    assert shapes(mlp10) == fixture["keys"]
    assert len(fixture["keys"]) == 78


def test_small_config_reproduces_official_outputs() -> None:
    small = json.loads(FIXTURE.read_text())["small"]
    mlp = LatentMLP(latent_dim=8, hidden=16, num_layers=4, time_dim=8, time_out=8).eval()
    mlp.load_state_dict(official_fill(small["keys"]))
    z_t = torch.sin(0.41 * torch.arange(24, dtype=torch.float64) + 0.5).float().reshape(3, 8)
    with torch.no_grad():
        eps = mlp(z_t, torch.tensor(small["inputs"]["t"]))
    torch.testing.assert_close(eps, torch.tensor(small["eps"]), atol=1e-5, rtol=1e-5)


def test_skip_concat_structure() -> None:
    with torch.device("meta"):
        mlp = LatentMLP()
    assert [layer.linear.in_features for layer in mlp.layers] == [512] + [2048 + 512] * 9
    assert [layer.linear.out_features for layer in mlp.layers] == [2048] * 9 + [512]
    assert [layer.conditioned for layer in mlp.layers] == [True] * 9 + [False]
    # At run time every layer after the first sees z_t in its last latent_dim input columns.
    small = LatentMLP(latent_dim=4, hidden=8, num_layers=3, time_dim=4, time_out=6)
    z_t = torch.randn(5, 4)
    seen = []
    for layer in small.layers:
        layer.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    small(z_t, torch.arange(5))
    assert [tuple(x.shape) for x in seen] == [(5, 4), (5, 12), (5, 12)]
    assert torch.equal(seen[0], z_t) and torch.equal(seen[1][:, 8:], z_t) and torch.equal(seen[2][:, 8:], z_t)


def test_kaiming_normal_init_of_silu_layers() -> None:
    torch.manual_seed(0)
    mlp = LatentMLP(latent_dim=64, hidden=512, num_layers=3, time_dim=16, time_out=64)
    hidden = mlp.layers[1]
    # Kaiming normal, fan-in, ReLU gain: std sqrt(2 / fan_in).
    for linear in (hidden.linear, hidden.linear_emb):
        fan_in = linear.in_features
        assert linear.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_in), rel=0.03)
    last = mlp.layers[-1].linear  # PyTorch default (kaiming_uniform a=sqrt(5)): std 1 / sqrt(3 fan_in)
    assert last.weight.std().item() == pytest.approx(1.0 / math.sqrt(3.0 * last.in_features), rel=0.03)


def test_time_enters_only_through_the_scale() -> None:
    torch.manual_seed(1)
    mlp = LatentMLP(latent_dim=8, hidden=16, num_layers=4, time_dim=8, time_out=8).eval()
    z_t = torch.randn(2, 8).repeat(2, 1)
    t = torch.tensor([0, 10, 500, 999])
    with torch.no_grad():
        eps = mlp(z_t, t)
        assert (eps[0] - eps[2]).abs().max() > 1e-3
        # Scale-only time conditioning x * (1 + s(t)): with s == 0 the output cannot depend on t.
        for layer in mlp.layers[:-1]:
            layer.linear_emb.weight.zero_()
            layer.linear_emb.bias.zero_()
        eps = mlp(z_t, t)
    torch.testing.assert_close(eps[:2], eps[2:], atol=0, rtol=0)


def test_shared_cond_linear_and_safetensors_round_trip(tmp_path: Path) -> None:
    mlp = LatentMLP(latent_dim=8, hidden=16, num_layers=3, time_dim=8, time_out=8)
    layer = mlp.layers[0]
    assert layer.linear_emb.weight is layer.cond_layers[1].weight
    # `save_file(state_dict)` refuses shared tensors; `save_model`/`load_model` handle them.
    save_model(mlp, str(tmp_path / "m.safetensors"))
    other = LatentMLP(**json.loads(json.dumps(mlp.config)))
    missing, unexpected = load_model(other, str(tmp_path / "m.safetensors"))
    assert not missing and not unexpected
    for key, value in mlp.state_dict().items():
        assert torch.equal(value, other.state_dict()[key]), key


def test_diffae_latent_state_dict() -> None:
    sd = {"latent_net.time_embed.0.weight": torch.ones(1), "encoder.out.3.bias": torch.zeros(1)}
    assert diffae_latent_state_dict(sd) == {"time_embed.0.weight": torch.ones(1)}
    with pytest.raises(ValueError, match="no 'latent_net"):
        diffae_latent_state_dict({"encoder.out.3.bias": torch.zeros(1)})


def test_latent_mlp_bad_inputs() -> None:
    with pytest.raises(ValueError, match="num_layers must be >= 2"):
        LatentMLP(num_layers=1)
    mlp = LatentMLP(latent_dim=8, hidden=16, num_layers=2, time_dim=8, time_out=8)
    with pytest.raises(ValueError, match=r"z_t must be \[N, 8\]"):
        mlp(torch.zeros(2, 7), torch.tensor([1, 2]))


# Linear attribute head.


def test_linear_head() -> None:
    head = LinearHead(512, 40)
    assert sum(p.numel() for p in head.parameters()) == 20_520
    head.load_state_dict(torch.nn.Linear(512, 40).state_dict())  # PDAE `ema_classifier` layout
    assert head.config == {"latent_dim": 512, "num_outputs": 40}
    d = head.direction(3)
    assert d.norm().item() == pytest.approx(1.0, abs=1e-6)
    cosine = torch.nn.functional.cosine_similarity(d, head.weight[3], dim=0)
    assert cosine.item() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match=r"z must be \[N, 512\]"):
        head(torch.zeros(2, 40))
    with pytest.raises(ValueError, match="index 40"):
        head.direction(40)


# FeatureNet (domain FID features and LPIPS-style distance).


def test_feature_net_shapes_and_consistency() -> None:
    torch.manual_seed(2)
    net = FeatureNet(16, 3, 10).eval()
    assert sum(p.numel() for p in net.parameters()) == 305_706
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    maps = net.feature_maps(x)
    assert [tuple(m.shape) for m in maps] == [(4, 32, 16, 16), (4, 64, 8, 8), (4, 128, 4, 4)]
    feats = net.features(x)
    assert feats.shape == (4, 128)
    logits = net(x)
    assert logits.shape == (4, 10)
    torch.testing.assert_close(logits, net.classifier(feats))
    torch.testing.assert_close(feats, net.embed(maps[-1].mean(dim=(2, 3))))
    # GroupNorm, no BatchNorm: an image's features do not depend on the rest of the batch.
    torch.testing.assert_close(net.features(x[1:2]), feats[1:2], atol=1e-5, rtol=1e-5)
    assert FeatureNet(**json.loads(json.dumps(net.config))).config == net.config


def test_feature_net_distance() -> None:
    # The distance is metric code (eval.metrics, issue 17: no metrics in nets/) on the net's stage maps.
    def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return feature_map_distance(net.feature_maps(a), net.feature_maps(b))

    torch.manual_seed(3)
    net = FeatureNet(8, 1, 10, channels=(16, 32), feature_dim=32).eval()
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    y = torch.rand(3, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        assert torch.equal(distance(x, x), torch.zeros(3))
        d_xy, d_yx = distance(x, y), distance(y, x)
    assert (d_xy > 0).all()
    torch.testing.assert_close(d_xy, d_yx)


def test_feature_map_distance_values() -> None:
    # Unit-normalised over channels, squared difference summed over channels, mean over positions,
    # summed over layers.
    a = torch.zeros(1, 2, 3, 3)
    a[:, 0] = 1.0
    b = torch.zeros(1, 2, 3, 3)
    b[:, 1] = 5.0
    assert feature_map_distance([a, a], [b, b]).item() == pytest.approx(2.0)  # |e0 - e1|^2 = 2 per layer, mean over layers
    assert feature_map_distance([a], [3 * a]).item() == pytest.approx(0.0, abs=1e-12)  # scale invariant
    half = a.clone()
    half[..., 0, :] = b[..., 0, :]  # one row of 3 differs: mean 2 * 3/9
    assert feature_map_distance([a], [half]).item() == pytest.approx(2.0 / 3.0)
    with pytest.raises(ValueError, match="layer 0 shapes differ"):
        feature_map_distance([a], [a[..., :2]])


def test_feature_net_bad_inputs() -> None:
    with pytest.raises(ValueError, match="not divisible by 2"):
        FeatureNet(10, 3, 10)
    with pytest.raises(ValueError, match="multiples of 8"):
        FeatureNet(16, 3, 10, channels=(12, 24))
    net = FeatureNet(16, 3, 10)
    with pytest.raises(ValueError, match=r"x must be \[N, 3, 16, 16\]"):
        net(torch.zeros(2, 1, 16, 16))
