"""pdae.nets: parameter counts (docs/protocol.md §2.6), the frozen-prior contract, G == 0 at init,
layer formulas, configs and one-line errors. Parity with the official code: test_nets_parity.py."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pdae.nets.encoder import SemanticEncoder
from pdae.nets.gradient_estimator import GradientEstimator, ResBlockShift
from pdae.nets.layers import AttentionBlock, ResBlock, timestep_embedding
from pdae.nets.prior import FrozenPrior, PriorFeatures
from pdae.nets.unet import UNet

META = torch.device("meta")
SMALL = dict(base_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_ds=(2,), num_heads=2)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def randomize(module: torch.nn.Module, seed: int = 0) -> None:
    """Overwrite every parameter (zero-init convs included) with small random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def randomize_new_parts(estimator: GradientEstimator, seed: int = 0) -> None:
    """Randomize the trainable parts only (the prior keeps its weights)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in estimator.new_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


@pytest.fixture()
def small_prior() -> UNet:
    torch.manual_seed(0)
    return UNet(**SMALL).eval()


def inputs(n: int = 2, size: int = 8, channels: int = 3, latent: int = 16, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x_t = torch.randn(n, channels, size, size, generator=g)
    t = torch.tensor([17, 640][:n])
    z = torch.randn(n, latent, generator=g)
    return x_t, t, z


# Parameter counts (docs/protocol.md §2.6, measured on the official classes).


def test_parameter_counts_128px() -> None:
    with META:
        prior = UNet()
        estimator = GradientEstimator(prior, latent_dim=512)
    assert n_params(prior) == 98_618_499
    assert len(prior.state_dict()) == 432
    assert n_params(estimator.label_emb) == 262_656
    assert n_params(estimator.shift_middle_block) == 12_596_224
    assert n_params(estimator.shift_output_blocks) == 65_659_776
    assert n_params(estimator.shift_out) == 3_715
    assert sum(p.numel() for p in estimator.new_parameters()) == 78_522_371
    assert len(prior.state_dict()) + len(estimator.new_state_dict()) == 744
    with META:
        encoder = SemanticEncoder(128)
    assert n_params(encoder) == 3_914_240
    # PDAE trainable total = encoder + new parts (docs/protocol.md §2.6)
    assert n_params(encoder) + 78_522_371 == 82_436_611


def test_parameter_counts_64px_and_mnist() -> None:
    with META:
        prior64 = UNet(attention_ds=(4,))
        estimator64 = GradientEstimator(prior64)
        mnist = UNet(in_channels=1, base_channels=64, channel_mult=(1, 2, 2, 4), attention_ds=(), dropout=0.0)
        estimator_mnist = GradientEstimator(mnist)
        encoder64 = SemanticEncoder(64, channels=(64, 128, 128, 128))
    assert n_params(prior64) == 96_976_259
    assert sum(p.numel() for p in estimator64.new_parameters()) == 77_537_027
    assert n_params(mnist) == 19_404_161
    assert sum(p.numel() for p in estimator_mnist.new_parameters()) == 16_079_233
    assert n_params(encoder64) == 1_487_104


def test_attention_ds_are_downsample_factors() -> None:
    # Diff-AE's attn resolution 16 at 128 px is ds 8; ds 16 builds attention at 8x8: 100 differing keys.
    with META:
        keys8 = set(UNet(attention_ds=(8,)).state_dict())
        keys16 = set(UNet(attention_ds=(16,)).state_dict())
    assert len(keys8 ^ keys16) == 100


# Layers.


def test_timestep_embedding_golden() -> None:
    emb = timestep_embedding(torch.tensor([0, 1, 500]), 4)
    # freqs = 10000^(-k/2), k = 0, 1 -> (1, 0.01); [cos, sin] order
    expected = torch.tensor(
        [
            [1.0, 1.0, 0.0, 0.0],
            [math.cos(1.0), math.cos(0.01), math.sin(1.0), math.sin(0.01)],
            [math.cos(500.0), math.cos(5.0), math.sin(500.0), math.sin(5.0)],
        ]
    )
    torch.testing.assert_close(emb, expected, atol=1e-5, rtol=0)
    assert timestep_embedding(torch.tensor([3]), 5)[0, -1] == 0.0  # odd width: zero pad


def test_resblock_adagn_formula() -> None:
    torch.manual_seed(0)
    block = ResBlock(32, 16, dropout=0.0, out_channels=64).eval()
    randomize(block)
    x, emb = torch.randn(2, 32, 4, 4), torch.randn(2, 16)
    # independent computation of GN(h)(1+s)+b, then SiLU, conv, plus the 1x1 skip
    h = block.in_layers(x)
    scale, shift = block.emb_layers(emb).chunk(2, dim=1)
    h = torch.nn.functional.group_norm(h, 32, block.out_layers[0].weight, block.out_layers[0].bias)
    h = h * (1 + scale[..., None, None]) + shift[..., None, None]
    h = block.out_layers[3](torch.nn.functional.silu(h))
    torch.testing.assert_close(block(x, emb), block.skip_connection(x) + h)


def test_resblock_up_down_resample_without_conv() -> None:
    down = ResBlock(32, 8, down=True)
    up = ResBlock(32, 8, up=True)
    x, emb = torch.randn(1, 32, 8, 8), torch.randn(1, 8)
    assert down(x, emb).shape == (1, 32, 4, 4) and up(x, emb).shape == (1, 32, 16, 16)
    # at init (zero out conv) the block is its identity skip after resampling
    torch.testing.assert_close(down(x, emb), torch.nn.functional.avg_pool2d(x, 2))
    torch.testing.assert_close(up(x, emb), x.repeat_interleave(2, 2).repeat_interleave(2, 3))
    assert not any("upd" in k or "op" in k for k in down.state_dict())


def test_resblock_shift_double_adagn() -> None:
    torch.manual_seed(0)
    shifted = ResBlockShift(32, 16, dropout=0.0).eval()
    randomize(shifted)
    plain = ResBlock(32, 16, dropout=0.0).eval()
    plain.load_state_dict({k: v for k, v in shifted.state_dict().items() if "emb_z" not in k})
    x, emb, emb_z = torch.randn(2, 32, 4, 4), torch.randn(2, 16), torch.randn(2, 16)
    # h = (1 + z_s) * (GN(h)(1 + t_s) + t_b) + z_b  (official PDAE code, model/module.py `ResBlockShift`)
    h_t = plain.modulate(plain.in_layers(x), emb, None)
    z_s, z_b = shifted.emb_z_layers(emb_z)[..., None, None].chunk(2, dim=1)
    h = shifted.out_layers[1:]((1 + z_s) * h_t + z_b)
    torch.testing.assert_close(shifted(x, emb, emb_z), x + h)
    # a zero z path reduces to the plain ResBlock
    with torch.no_grad():
        shifted.emb_z_layers[1].weight.zero_()
        shifted.emb_z_layers[1].bias.zero_()
    torch.testing.assert_close(shifted(x, emb, emb_z), plain(x, emb))


def test_attention_orders_differ_only_with_several_heads() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 64, 4, 4)
    for heads, same in ((1, True), (2, False)):
        legacy = AttentionBlock(64, heads)
        randomize(legacy)
        new = AttentionBlock(64, heads, use_new_attention_order=True)
        new.load_state_dict(legacy.state_dict())
        assert torch.allclose(legacy(x), new(x), atol=1e-6) == same
    assert AttentionBlock(64, num_heads=1, num_head_channels=16).num_heads == 4


# Frozen-prior contract.


def test_split_run_equals_forward(small_prior: UNet) -> None:
    randomize(small_prior)
    x_t, t, _ = inputs()
    with torch.no_grad():
        feats = small_prior.encode_features(x_t, t)
        assert torch.equal(small_prior.decode_features(feats), small_prior(x_t, t))
    layout = small_prior.feature_layout()
    assert isinstance(small_prior, FrozenPrior) and isinstance(feats, PriorFeatures)
    assert feats.h is feats.skips[-1]
    assert [s.shape[1] for s in feats.skips] == list(layout.skip_channels) == [32, 32, 32, 64]
    assert [8 // s.shape[-1] for s in feats.skips] == list(layout.skip_ds) == [1, 1, 2, 2]
    assert feats.emb.shape == (2, layout.emb_dim) and layout.emb_dim == 128
    assert layout.middle_channels == 64
    json.dumps(layout.to_dict())


def test_learn_sigma_output_and_eps_channels() -> None:
    prior = UNet(**SMALL, learn_sigma=True).eval()
    randomize(prior)
    estimator = GradientEstimator(prior, latent_dim=16)
    x_t, t, z = inputs()
    out = prior(x_t, t)
    eps, g = estimator(x_t, t, z)
    assert out.shape == (2, 6, 8, 8) and eps.shape == g.shape == (2, 3, 8, 8)
    assert torch.equal(eps, out[:, :3].detach())


def test_gradient_estimator_is_zero_at_init_and_shares_the_prior(small_prior: UNet) -> None:
    randomize(small_prior)
    estimator = GradientEstimator(small_prior, latent_dim=16)
    assert estimator.prior is small_prior  # held, not copied
    x_t, t, z = inputs()
    eps, g = estimator(x_t, t, z)
    assert torch.count_nonzero(g) == 0
    with torch.no_grad():
        assert torch.equal(eps, small_prior(x_t, t))


def test_no_gradient_reaches_the_prior(small_prior: UNet) -> None:
    estimator = GradientEstimator(small_prior, latent_dim=16)
    randomize_new_parts(estimator)
    estimator.train()
    x_t, t, z = inputs()
    feats = estimator.features(x_t, t)
    eps = estimator.prior_eps(feats)
    for tensor in [feats.h, feats.emb, eps, *feats.skips]:
        assert tensor.grad_fn is None and not tensor.requires_grad
    g = estimator.shift(feats, z)
    assert g.abs().sum() > 0
    (g**2).sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in small_prior.parameters())
    new = dict(estimator.new_named_parameters())
    assert all(p.requires_grad for p in new.values())
    assert new["shift_out.2.weight"].grad.abs().sum() > 0
    assert all(p.grad.abs().sum() > 0 for p in new.values())


def test_prior_stays_in_eval_mode() -> None:
    prior = UNet(**SMALL, dropout=0.5)
    randomize(prior)
    estimator = GradientEstimator(prior, latent_dim=16, dropout=0.0).train()
    assert not any(m.training for m in prior.modules())
    assert all(m.training for m in estimator.shift_output_blocks.modules())
    x_t, t, z = inputs()
    assert torch.equal(estimator(x_t, t, z)[0], estimator(x_t, t, z)[0])  # no dropout in eps
    prior.train()  # even if someone flips it directly, the estimator's train() restores eval
    estimator.train()
    assert not prior.training


def test_new_state_dict_round_trip(small_prior: UNet) -> None:
    a = GradientEstimator(small_prior, latent_dim=16)
    randomize(a)
    b = GradientEstimator(UNet(**SMALL), latent_dim=16)
    keys = set(a.new_state_dict())
    assert keys and all(k.startswith(("label_emb.", "shift_")) for k in keys)
    b.load_new_state_dict({**a.new_state_dict(), **small_prior.state_dict()})  # prior keys ignored
    for k, v in a.new_state_dict().items():
        assert torch.equal(v, b.new_state_dict()[k])
    partial = dict(a.new_state_dict())
    partial.pop("shift_out.2.bias")
    with pytest.raises(ValueError, match="missing"):
        b.load_new_state_dict(partial)
    bad = dict(a.new_state_dict(), **{"label_emb.bias": torch.zeros(3)})
    with pytest.raises(ValueError, match="label_emb.bias has shape"):
        b.load_new_state_dict(bad)


def test_class_conditional_gradient_estimator(small_prior: UNet) -> None:
    estimator = GradientEstimator(small_prior, num_classes=10)
    assert isinstance(estimator.label_emb, torch.nn.Embedding)
    assert n_params(estimator.label_emb) == 10 * 128
    randomize_new_parts(estimator)
    estimator.eval()
    x_t, t, _ = inputs()
    g1 = estimator(x_t, t, torch.tensor([1, 2]))[1]
    g2 = estimator(x_t, t, torch.tensor([3, 2]))[1]
    assert not torch.allclose(g1[0], g2[0]) and torch.allclose(g1[1], g2[1])


def test_class_conditional_prior_needs_labels() -> None:
    prior = UNet(**SMALL, num_classes=4)
    x_t, t, _ = inputs()
    assert prior(x_t, t, torch.tensor([0, 3])).shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="needs labels"):
        prior(x_t, t)


# Encoder.


@pytest.mark.parametrize(
    ("size", "channels", "attention", "n_attn"),
    [(16, (32, 64), (), 0), (32, (32, 64, 64), (16,), 1), (64, (64, 128, 128, 128), (16,), 1)],
)
def test_encoder_sizes(size: int, channels: tuple, attention: tuple, n_attn: int) -> None:
    encoder = SemanticEncoder(size, latent_dim=8, channels=channels, attention_resolutions=attention)
    z = encoder(torch.randn(2, 3, size, size))
    assert z.shape == (2, 8)
    assert sum(isinstance(m, AttentionBlock) for m in encoder.modules()) == n_attn
    assert n_params(encoder.encoder[-1]) == channels[-1] * 16 * 8 + 8  # flatten 4x4 -> linear
    assert SemanticEncoder(**encoder.config).config == json.loads(json.dumps(encoder.config))


def test_encoder_errors() -> None:
    with pytest.raises(ValueError, match="needs 3 channel entries"):
        SemanticEncoder(32)
    with pytest.raises(ValueError, match="not divisible by 32"):
        SemanticEncoder(16, channels=(16, 32), attention_resolutions=())
    with pytest.raises(ValueError, match="attention_resolutions"):
        SemanticEncoder(16, channels=(32, 32))
    with pytest.raises(ValueError, match="power of two"):
        SemanticEncoder(48, channels=(32, 32, 32))
    with pytest.raises(ValueError, match="expected input"):
        SemanticEncoder(16, channels=(32, 32), attention_resolutions=())(torch.randn(1, 3, 32, 32))


# Configs.

OFFICIAL_128 = {
    "model": "FFHQDenoiseFn",
    "dims": 2,
    "input_channel": 3,
    "base_channel": 128,
    "channel_multiplier": [1, 1, 2, 3, 4],
    "num_residual_blocks_of_a_block": 2,
    "attention_resolutions": [8],
    "num_heads": 1,
    "head_channel": -1,
    "use_new_attention_order": False,
    "dropout": 0.1,
}


def test_configs_round_trip() -> None:
    with META:
        prior = UNet.from_official_config(OFFICIAL_128)
        rebuilt = UNet(**json.loads(json.dumps(prior.config)))
        estimator = GradientEstimator(prior, latent_dim=512)
    assert prior.config == rebuilt.config == UNet().config
    assert n_params(rebuilt) == 98_618_499
    assert estimator.config == {"latent_dim": 512, "num_classes": None, "dropout": 0.1}
    json.dumps(estimator.config)
    with META:
        sigma = UNet.from_official_config({**OFFICIAL_128, "learn_sigma": True, "num_class": None})
    assert sigma.config["learn_sigma"] and sigma.out[2].out_channels == 6


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"base_channel": None}, "missing key"),
        ({"dims": 3}, "dims=3"),
        ({"attention_resolutions": "8"}, "attention_resolutions must be a list"),
        ({"attention_resolutions": [64]}, r"attention_ds \[64\] never reached"),
        ({"base_channel": 48}, "not divisible by 32"),
        ({"num_heads": 3, "attention_resolutions": [1]}, "not divisible by num_heads=3"),
    ],
)
def test_official_config_errors_are_one_line(change: dict, message: str) -> None:
    cfg = {**OFFICIAL_128, **change}
    cfg = {k: v for k, v in cfg.items() if v is not None}
    with META, pytest.raises(ValueError, match=message) as info:
        UNet.from_official_config(cfg)
    assert "\n" not in str(info.value)


def test_gradient_estimator_needs_a_frozen_prior() -> None:
    with pytest.raises(TypeError, match="FrozenPrior"):
        GradientEstimator(torch.nn.Linear(2, 2))  # type: ignore[arg-type]
