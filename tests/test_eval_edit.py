"""Editing evaluations (eval/edit.py): interpolation endpoints reproduce the reconstructions and the middle
frames are the documented mixtures; the manipulation step moves a linear head's logit by exactly
s sqrt(D) ||w||; truncation at scale 0 is the frozen DPM; the three CLIs write their tables and grids."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from eval import cli
from eval.common import read_records
from eval.edit import (
    class_accuracy,
    consecutive_distances,
    edit_latent,
    endpoint_mse,
    interpolation_frames,
    target_probability,
    truncation_labels,
)
from eval.sample import decode
from pdae.checkpoint import save_model_folder
from pdae.diffusion.sampling import ddim_invert, ddim_sample, slerp
from pdae.methods import LatentClassifier, build_method, export_method
from pdae.nets.classifier import LinearHead

SPEC = {"name": "digits", "image_size": 8, "channels": 1}
INFO = {"image_size": 8, "channels": 1, "num_classes": 10, "num_attributes": 0}
UNET = {"base_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_ds": [2]}
LATENT_DIM = 8


def _nonzero_shift(method: torch.nn.Module, seed: int) -> None:
    """G is zero and independent of z at initialisation (zero-init output convs); perturb every new parameter so
    the shift matters and depends non-linearly on z."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in method.estimator.new_named_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    dpm = build_method("dpm", {"unet": UNET}, {}, {"kind": "linear", "T": 1000}, INFO)
    pdae = build_method("pdae", {"encoder": {"latent_dim": LATENT_DIM, "channels": [32], "attention_resolutions": []},
                                 "estimator": {"latent_dim": LATENT_DIM}}, {}, {}, INFO, prior=dpm)
    _nonzero_shift(pdae, 1)
    diffae = build_method("diffae", {"model": {"base_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
                                               "attention_resolutions": [], "latent_dim": LATENT_DIM,
                                               "enc_channel_mult": [1, 2], "enc_attention_resolutions": []}},
                          {}, {"kind": "linear", "T": 1000}, INFO)
    pdae_class = build_method("pdae_class", {"estimator": {}}, {}, {}, INFO, prior=dpm)
    _nonzero_shift(pdae_class, 2)
    classifier = build_method("classifier", {"head": {}}, {"targets": "labels"}, {}, INFO, encoder=pdae)
    classifier.stats.mean.normal_(generator=torch.Generator().manual_seed(3))
    classifier.stats.std.uniform_(0.5, 2.0, generator=torch.Generator().manual_seed(4))
    feature_net = build_method("feature_net", {"net": {"channels": [16, 32], "feature_dim": 16}}, {}, {}, INFO)
    return {m.name: m.eval().requires_grad_(False) for m in (dpm, pdae, diffae, pdae_class, classifier, feature_net)}


def _x0(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# Interpolation.
def test_pdae_interpolation_endpoints_and_middle_frames(models: dict) -> None:
    pdae = models["pdae"]
    x_a, x_b = _x0(2, 0), _x0(2, 1)
    out = interpolation_frames(pdae, x_a, x_b, [0.0, 0.5, 1.0], steps=4, encode_steps=4)
    assert out["z_lerp"].shape == out["g_lerp"].shape == (2, 3, 1, 8, 8)
    # Endpoints are the plain reconstructions, bit for bit, in both modes.
    for mode in ("z_lerp", "g_lerp"):
        assert torch.equal(out[mode][:, 0], out["recon_a"]) and torch.equal(out[mode][:, -1], out["recon_b"])
        assert endpoint_mse(out[mode], out["recon_a"], out["recon_b"]) == (0.0, 0.0)
    # Independent recomputation of lam = 0.5.
    sch = pdae.schedule
    with torch.no_grad():
        z_a, z_b = pdae.encode(x_a), pdae.encode(x_b)
        xT_a = ddim_invert(*pdae.denoiser(z_a)[:1], x_a, sch, 4, shift_fn=pdae.denoiser(z_a)[1])
        xT_b = ddim_invert(*pdae.denoiser(z_b)[:1], x_b, sch, 4, shift_fn=pdae.denoiser(z_b)[1])
        x_T = slerp(xT_a, xT_b, 0.5)
        eps_fn, shift_mid = pdae.denoiser(0.5 * z_a + 0.5 * z_b)
        mid_z = ddim_sample(eps_fn, x_T, sch, 4, shift_fn=shift_mid)
        shift_a, shift_b = pdae.denoiser(z_a)[1], pdae.denoiser(z_b)[1]

        def mean_of_g(x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            eps, g_a = shift_a(x_t, t)
            return eps, 0.5 * g_a + 0.5 * shift_b(x_t, t)[1]

        mid_g = ddim_sample(eps_fn, x_T, sch, 4, shift_fn=mean_of_g)
    torch.testing.assert_close(out["z_lerp"][:, 1], mid_z, atol=1e-5, rtol=0)
    torch.testing.assert_close(out["g_lerp"][:, 1], mid_g, atol=1e-5, rtol=0)
    assert (out["z_lerp"][:, 1] - out["g_lerp"][:, 1]).abs().max() > 1e-4  # G is not linear in z


def test_diffae_interpolation_has_only_z_lerp_and_exact_endpoints(models: dict) -> None:
    out = interpolation_frames(models["diffae"], _x0(1, 2), _x0(1, 3), [0.0, 1.0], steps=3, encode_steps=3)
    assert "g_lerp" not in out
    assert torch.equal(out["z_lerp"][:, 0], out["recon_a"]) and torch.equal(out["z_lerp"][:, 1], out["recon_b"])


def test_consecutive_distances_of_a_linear_ramp() -> None:
    base = torch.zeros(2, 1, 1, 2, 2)
    frames = torch.cat([base + 0.2 * k for k in range(4)], dim=1)  # [2, 4, 1, 2, 2]: steps of 0.2 per frame
    mse = lambda a, b: (a - b).pow(2).mean(dim=(1, 2, 3))  # noqa: E731
    torch.testing.assert_close(consecutive_distances(frames, mse), torch.full((3,), 0.04, dtype=torch.float64))


# Manipulation.
def test_edit_moves_the_linear_logit_by_s_sqrt_d_norm_w() -> None:
    d, g = 6, torch.Generator().manual_seed(0)
    clf = LatentClassifier(LinearHead(d, 3), d, targets="attributes")
    with torch.no_grad():
        clf.head.weight.copy_(torch.randn(3, d, generator=g))
        clf.stats.mean.copy_(torch.randn(d, generator=g))
        clf.stats.std.copy_(torch.rand(d, generator=g) + 0.5)
    z = torch.randn(5, d, generator=g)
    for s in (-0.3, 0.1, 0.3):
        z_edit = edit_latent(z, clf.edit_direction(1), s, clf)
        delta = clf.predict_logits(z_edit) - clf.predict_logits(z)
        expected = s * math.sqrt(d) * clf.head.weight[1].norm()
        torch.testing.assert_close(delta[:, 1], expected.expand(5), atol=1e-5, rtol=0)
        # In raw space the step is s sqrt(D) std * direction.
        torch.testing.assert_close(z_edit - z, (s * math.sqrt(d) * clf.stats.std * clf.head.direction(1)).expand(5, d),
                                   atol=1e-5, rtol=0)
    same = clf.stats.denormalize(clf.stats.normalize(z))
    assert torch.equal(edit_latent(z, clf.edit_direction(0), 0.0, clf), same)
    # sigmoid for attributes, softmax for labels.
    logits = clf.predict_logits(z).double()
    torch.testing.assert_close(target_probability(clf, z, 2), torch.sigmoid(logits[:, 2]))
    clf.method_kwargs["targets"] = "labels"
    torch.testing.assert_close(target_probability(clf, z, 2), torch.softmax(logits, 1)[:, 2])
    with pytest.raises(ValueError, match="edit_latent"):
        edit_latent(z, torch.ones(d + 1), 0.1, clf)


# Truncation.
def test_truncation_scale_zero_is_the_frozen_dpm(models: dict) -> None:
    pc, dpm = models["pdae_class"], models["dpm"]
    labels = truncation_labels(10, 1)
    assert labels.tolist() == list(range(10))
    assert truncation_labels(2, 3).tolist() == [0, 0, 0, 1, 1, 1]
    x_T = torch.randn(10, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    s0 = decode(pc, labels, x_T, 4, shift_scale=0.0)
    assert torch.equal(s0, decode(dpm, None, x_T, 4))
    assert (decode(pc, labels, x_T, 4, shift_scale=2.0) - s0).abs().max() > 1e-3
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 0.0]])
    assert class_accuracy(logits, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)


# CLIs.
@pytest.fixture(scope="module")
def folders(models: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("edit_models")
    out = {}
    for name in ("pdae", "diffae", "pdae_class", "classifier", "feature_net"):
        tensors, config = export_method(models[name])
        out[name] = save_model_folder(root / name, tensors, config, {"data": SPEC, "seed": 0, "images_seen": 96})
    return out


def test_clis_write_tables_and_grids(folders: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("eval.edit",))  # independent of the other eval modules
    common = ["--device", "cpu", "--feature-net", str(folders["feature_net"]), "--steps", "3"]

    out, arrays = tmp_path / "interp.json", tmp_path / "interp.npz"
    assert cli.main(["interpolate", "--autoencoder", str(folders["pdae"]), "--num-pairs", "1", "--encode-steps", "3",
                     "--lams", "0", "0.5", "1", "--out", str(out), "--arrays", str(arrays), *common]) == 0
    rows = read_records(out)
    modes = ("z_lerp", "g_lerp")
    assert {(r["mode"], r["metric"], r["lam"]) for r in rows} == (
        {(m, "endpoint_mse", lam) for m in modes for lam in (0.0, 1.0)}
        | {(m, "smoothness", lam) for m in modes for lam in (0.5, 1.0)})
    assert all(r["value"] == 0.0 for r in rows if r["metric"] == "endpoint_mse")
    assert all(r["table"] == "interpolation" and r["method"] == "pdae" for r in rows)
    with np.load(arrays) as npz:
        assert npz["grid"].shape == (2, 5, 1, 8, 8) and list(npz["col_labels"])[0] == "input a"
    assert json.loads(Path(str(arrays) + ".json").read_text())["table"] == "interpolation"

    out, arrays = tmp_path / "manip.json", tmp_path / "manip.npz"
    assert cli.main(["manipulate", "--autoencoder", str(folders["pdae"]), "--classifier", str(folders["classifier"]),
                     "--attribute", "3", "--strengths", "-0.5", "0.5", "--num-images", "3", "--encode-steps", "3",
                     "--out", str(out), "--arrays", str(arrays), *common]) == 0
    rows = read_records(out)
    assert sorted({r["strength"] for r in rows}) == [-0.5, 0.0, 0.5]
    assert {r["metric"] for r in rows} == {"attr_prob", "identity"}
    assert all(0.0 <= r["value"] <= 1.0 for r in rows if r["metric"] == "attr_prob")
    with np.load(arrays) as npz:
        assert npz["grid"].shape == (3, 4, 1, 8, 8)
        assert list(npz["col_labels"]) == ["input", "s=-0.5", "recon", "s=+0.5"]
    assert cli.main(["manipulate", "--autoencoder", str(folders["pdae"]), "--classifier", str(folders["classifier"]),
                     "--attribute", "Smiling", "--out", str(out), *common]) == 2

    out, arrays = tmp_path / "trunc.json", tmp_path / "trunc.npz"
    assert cli.main(["truncation", "--model", str(folders["pdae_class"]), "--scales", "0", "1", "--num-samples", "2",
                     "--num-ref-images", "40", "--grid-per-class", "1", "--out", str(out), "--arrays", str(arrays),
                     *common]) == 0
    rows = read_records(out)
    assert {(r["scale"], r["metric"]) for r in rows} == {(s, m) for s in (0.0, 1.0) for m in ("fid", "class_accuracy")}
    assert all(r["method"] == "pdae_class" and r["steps"] == 3 for r in rows)
    with np.load(arrays) as npz:
        assert npz["grid"].shape == (2, 10, 1, 8, 8) and list(npz["row_labels"]) == ["s=0", "s=1"]
    assert cli.main(["truncation", "--model", str(folders["pdae"]), "--out", str(out), *common]) == 2
