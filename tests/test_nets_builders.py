"""The shared ADM parts of pdae/nets/unet.py (issue 17 item 4): the networks built from the shipped configs keep
their state-dict keys, shapes and outputs; one attention rule, one skip layout.

Pins were recorded before the encoder half, the skip layout and the attention rule were written once (the
U-Net, the Diff-AE networks and the adapters each had their own). Keys/shapes: sha256 of the sorted
"key:[shape]" lines, built on the meta device. Outputs: the embedded default's networks with every entry
filled from its key (`fill_by_key`), so the pin does not depend on the order of initialisation.
"""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import pytest
import torch
import yaml

from pdae.nets.adapters import AdmUNet, adm_options, adm_unet_kwargs, diffusers_layout
from pdae.nets.cond_unet import DiffAEEncoder, DiffAEUNet
from pdae.nets.encoder import SemanticEncoder
from pdae.nets.gradient_estimator import GradientEstimator
from pdae.nets.unet import UNet, attention_factors, skip_layout

TRAIN_CONFIGS = Path(__file__).resolve().parents[1] / "config" / "train"


def config_nets(dataset: str, name: str):
    """(network, input channels, image size) of one shipped training config, built as `build_method` does."""
    def nets(method: str) -> dict:
        return yaml.safe_load((TRAIN_CONFIGS / dataset / f"{method}.yaml").read_text())["nets"]

    data = yaml.safe_load((TRAIN_CONFIGS / dataset / "dpm.yaml").read_text())["data"]
    size, ch = data["image_size"], data["channels"]
    prior = UNet(in_channels=ch, **nets("dpm")["unet"])
    if name == "dpm":
        return prior, ch, size
    if name == "pdae.estimator":
        return GradientEstimator(prior, **nets("pdae")["estimator"]), ch, size
    if name == "pdae_class.estimator":
        return GradientEstimator(prior, num_classes=10, **nets("pdae_class")["estimator"]), ch, size
    if name == "pdae.encoder":
        kwargs = {"latent_dim": nets("pdae")["estimator"]["latent_dim"], **nets("pdae")["encoder"]}
        return SemanticEncoder(size, ch, **kwargs), ch, size
    return DiffAEUNet(size, ch, **nets("diffae")["model"]), ch, size


def keys_sha(net: torch.nn.Module) -> str:
    listing = "\n".join(f"{k}:{list(v.shape)}" for k, v in sorted(net.state_dict().items()))
    return hashlib.sha256(listing.encode()).hexdigest()[:16]


# (dataset/network, keys, parameters, keys_sha)
KEYS = [
    ("digits16/dpm", 198, 983_457, "c314acd08263a74a"),
    ("digits16/pdae.estimator", 354, 1_879_490, "144a0cd609651ca4"),
    ("digits16/pdae_class.estimator", 353, 1_872_450, "6a88e6318dc09841"),
    ("digits16/pdae.encoder", 10, 206_016, "feafaf0edb73940e"),
    ("digits16/diffae", 294, 2_127_905, "fe8789053c1766e7"),
    ("ffhq128/dpm", 432, 98_618_499, "ef8c31f05b3cab2c"),
    ("ffhq128/pdae.estimator", 744, 177_140_870, "07ba502bea41ba62"),
    ("ffhq128/pdae_class.estimator", 743, 176_883_334, "ea7f0368a22d9085"),
    ("ffhq128/pdae.encoder", 28, 3_914_240, "467160fef6c6ed13"),
    ("ffhq128/diffae", 608, 128_545_155, "ee2247801a56fa78"),
    ("celeba64/dpm", 432, 96_976_259, "e512b590f9e7fb0b"),
    ("celeba64/pdae.estimator", 744, 174_513_286, "c335df100acba80f"),
    ("celeba64/pdae_class.estimator", 743, 174_255_750, "feaf8749bea6cee3"),
    ("celeba64/pdae.encoder", 24, 1_487_104, "905169f87dcd9f31"),
    ("celeba64/diffae", 506, 90_839_235, "3040f437bb53750a"),
]


@pytest.mark.parametrize(("which", "n_keys", "n_params", "sha"), KEYS, ids=[k[0] for k in KEYS])
def test_config_networks_keep_keys_and_shapes(which: str, n_keys: int, n_params: int, sha: str) -> None:
    with torch.device("meta"):
        net, _, _ = config_nets(*which.split("/"))
    assert (len(net.state_dict()), sum(p.numel() for p in net.parameters()), keys_sha(net)) == (n_keys, n_params, sha)


def fill_by_key(net: torch.nn.Module) -> None:
    """Every float entry ~ 0.05 N(0, 1) from a generator seeded by crc32 of its key."""
    sd = net.state_dict()
    for key, value in sd.items():
        g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        sd[key] = torch.randn(value.shape, generator=g) * 0.05
    net.load_state_dict(sd)


# (network, sum, abs sum, first three values) of the embedded default's networks at x ~ N(0, 1) (seed 0), t = 123.
OUTPUTS = [
    ("dpm", -15.777762532234192, 15.777762532234192, [-0.06145625188946724, -0.04152452573180199, -0.04740085452795029]),
    ("pdae.estimator", 21.084729306865484, 28.374605658929795,
     [-0.0007438519969582558, -0.014307252131402493, -0.017570659518241882]),
    ("pdae_class.estimator", 20.95273457141593, 28.242610923480242,
     [-0.0007438519969582558, -0.014307252131402493, -0.017570659518241882]),
    ("pdae.encoder", -1.377346864901483, 5.1144637344405055, [-0.06022687628865242, 0.07007798552513123, -0.09611786901950836]),
    ("diffae", -15.559553299099207, 15.559553299099207, [-0.058234356343746185, -0.04505537077784538, -0.04778023064136505]),
]


@pytest.mark.parametrize(("name", "total", "abs_total", "first"), OUTPUTS, ids=[o[0] for o in OUTPUTS])
def test_embedded_networks_keep_outputs(name: str, total: float, abs_total: float, first: list[float]) -> None:
    net, ch, size = config_nets("digits16", name)
    fill_by_key(net.eval())
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(1, ch, size, size, generator=g), torch.tensor([123])
    with torch.no_grad():
        if name == "dpm":
            out = net(x, t)
        elif name == "pdae.encoder":
            out = net(x)
        elif name == "diffae":
            out = net(x, t, net.encode(x))
        else:
            z = torch.tensor([3]) if name == "pdae_class.estimator" else torch.randn(1, 64, generator=g)
            out = torch.cat(net(x, t, z), dim=1)
    out = out.double()
    assert out.sum().item() == pytest.approx(total, rel=1e-4, abs=1e-4)
    assert out.abs().sum().item() == pytest.approx(abs_total, rel=1e-5)
    torch.testing.assert_close(out.flatten()[:3], torch.tensor(first, dtype=torch.float64), atol=1e-6, rtol=0)


# One attention rule: a value naming no level raises a one-line ValueError naming the config key.


def test_attention_rule_factors_and_resolutions() -> None:
    assert attention_factors((8,), 5, "x", "attention_ds") == (8,)
    assert attention_factors((16,), 5, "x", "attention_resolutions", image_size=128) == (8,)
    assert attention_factors((16, 8), 4, "x", "attention_resolutions", image_size=64) == (4, 8)
    with pytest.raises(ValueError, match=r"x: attention_resolutions \[12\] never reached"):
        attention_factors((12,), 5, "x", "attention_resolutions", image_size=128)
    with pytest.raises(ValueError, match=r"image_size=20 not divisible by 2\^3"):
        attention_factors((), 4, "x", "attention_resolutions", image_size=20)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: UNet(channel_mult=(1, 2), attention_ds=(4,)), r"UNet: attention_ds \[4\] never reached"),
        (lambda: DiffAEUNet(16, base_channels=32, channel_mult=(1, 2), attention_resolutions=(4,)),
         r"DiffAEUNet: attention_resolutions \[4\] never reached"),
        (lambda: DiffAEUNet(16, base_channels=32, channel_mult=(1, 2), attention_resolutions=(8,),
                            enc_channel_mult=(1, 2), enc_attention_resolutions=(4,)),
         r"DiffAEUNet: enc_attention_resolutions \[4\] never reached"),
        (lambda: DiffAEEncoder(16, base_channels=32, channel_mult=(1, 2), attention_resolutions=(3,)),
         r"DiffAEEncoder: attention_resolutions \[3\] never reached"),
        # openai flags: the old path dropped values naming no level (3 -> ds 21, 128 -> ds 0) without a word
        (lambda: adm_unet_kwargs(adm_options("--attention_resolutions 16,3")),
         r"ADM flags: --attention_resolutions \[3\] never reached"),
        (lambda: adm_unet_kwargs(adm_options("--attention_resolutions 128")),
         r"--attention_resolutions \[128\] never reached"),
    ],
)
def test_attention_values_naming_no_level_raise(build, message: str) -> None:
    with torch.device("meta"), pytest.raises(ValueError, match=message) as info:
        build()
    assert "\n" not in str(info.value)


# One skip layout: the U-Net's, Diff-AE's and a diffusers UNet2DModel's are the same function of the levels.


def test_skip_layout_is_shared() -> None:
    assert skip_layout((32, 64), 2) == ((32, 32, 32, 32, 64, 64), (1, 1, 1, 2, 2, 2))
    with torch.device("meta"):
        unet = UNet(base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=2, attention_ds=(2,))
        adm = AdmUNet(base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=2, attention_ds=(2,),
                      resblock_updown=False)
    cfg = {"block_out_channels": [32, 64, 64], "layers_per_block": 2, "in_channels": 3, "out_channels": 3,
           "up_block_types": ["UpBlock2D", "AttnUpBlock2D", "UpBlock2D"], "dropout": 0.1}
    layout = unet.feature_layout()
    assert diffusers_layout(cfg, 128) == layout == adm.feature_layout()
    assert (layout.skip_channels, layout.skip_ds) == skip_layout((32, 64, 64), 2)
    assert len(unet.input_blocks) == len(layout.skip_channels)
