"""eval.sample: latent DDIM, decoding with the shift / stop fraction, per-sample noise, and the uncond CLI.

Analytic stand-ins pin the math: a latent DPM whose eps is exact for a point-mass distribution returns that point
(denormalised, clamped iff clip_latent); a random-init PDAE has G == 0 (zero-initialised output), so it must decode
exactly like its frozen prior, and with a non-zero G exactly like the prior once the stop fraction is 1.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from eval import common
from eval import cli
from eval.sample import (
    decode,
    latent_health,
    latent_noise,
    real_sample_indices,
    sample_latents,
    sample_unconditional,
    sidecar_path,
)
from pdae.checkpoint import save_model_folder
from pdae.diffusion.sampling import ddim_sample
from pdae.diffusion.schedule import Schedule
from pdae.methods import Method, build_method, export_method
from pdae.methods.latent import LatentDPM, LatentStats

DATA = {"name": "digits", "image_size": 8, "channels": 1}
INFO = {"image_size": 8, "channels": 1, "num_classes": 10, "num_attributes": 0}
TINY_UNET = {"base_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_ds": [2], "dropout": 0.0}
SHORT_T = {"kind": "linear", "T": 50}  # short chains keep DDPM and the CLIs fast; "paper" ddim: 2, 5, 10, 50 steps
LATENT_DIM = 16


def tiny_models(seed: int = 0) -> dict[str, Any]:
    """Random-init dpm, pdae (G == 0), diffae, latent DPM (clip_latent) and feature net on 8x8 digits, T = 50."""
    torch.manual_seed(seed)
    dpm = build_method("dpm", {"unet": dict(TINY_UNET)}, {}, dict(SHORT_T), INFO)
    pdae = build_method("pdae", {"encoder": {"latent_dim": LATENT_DIM, "channels": [32], "attention_resolutions": []},
                                 "estimator": {"latent_dim": LATENT_DIM}}, {}, {}, INFO, prior=dpm)
    diffae = build_method("diffae", {"model": {"base_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
                                               "attention_resolutions": [], "latent_dim": LATENT_DIM,
                                               "enc_channel_mult": [1, 2], "enc_attention_resolutions": []}},
                          {}, dict(SHORT_T), INFO)
    latent = build_method("latent", {"net": {"hidden": 32, "num_layers": 3, "time_dim": 16, "time_out": 16}},
                          {"clip_latent": True}, {"kind": "const", "T": 50, "beta": 0.05}, INFO, encoder=pdae)
    feat = build_method("feature_net", {"net": {"channels": [16, 32], "feature_dim": 16}}, {}, {}, INFO)
    models = {"dpm": dpm, "pdae": pdae, "diffae": diffae, "latent": latent, "feature_net": feat}
    for m in models.values():
        m.eval().requires_grad_(False)
        m.metadata = {"data": dict(DATA), "seed": seed, "images_seen": 0, "code_version": "test"}
    return models


def save_models(models: dict[str, Any], folder: Path) -> dict[str, Path]:
    """Write each model as a model folder (the format `pdae.checkpoint.load_method` reads)."""
    out = {}
    for name, method in models.items():
        tensors, config = export_method(method)
        out[name] = save_model_folder(folder / name, tensors, config, method.metadata)
    return out


def perturb_shift(pdae: Any, scale: float = 0.05, seed: int = 1) -> None:
    """Give the zero-initialised output conv of G random weights, so G != 0."""
    g = torch.Generator().manual_seed(seed)
    conv = pdae.estimator.shift_out[-1]
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * scale)


def eval_main(argv: list[str]) -> int:
    """`python -m eval` restricted to this module's commands (other evaluation modules may be absent)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "COMMAND_MODULES", ("eval.sample",))
        return cli.main(argv)


@pytest.fixture(autouse=True)
def _one_thread():
    """The tiny nets are far faster on one thread than on two contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    return tiny_models()


class PointMassLatent(Method):
    """A latent DPM whose eps is exact for normalised data concentrated at `m`: eps = (z_t - sqrt(ab) m)/sqrt(1-ab).

    It also records the largest |z_t| it is called with.
    """

    name = "latent"
    input_kind = "latents"
    is_diffusion = True

    def __init__(self, m: float, clip_latent: bool, dim: int = 4) -> None:
        super().__init__()
        self.schedule = Schedule.from_name("const", 100, beta=0.02)
        self.stats = LatentStats(dim)
        self.stats.mean.copy_(torch.arange(dim, dtype=torch.float32))
        self.stats.std.fill_(2.0)
        self.method_kwargs = {"clip_latent": clip_latent}
        self.latent_dim = dim
        self.m = m
        self.max_input = 0.0

    # the latent DPM's public statistics interface, as `LatentDPM` has it
    latent_statistics = LatentDPM.latent_statistics
    denormalize = LatentDPM.denormalize

    def denoiser(self, cond: Any = None):
        ab = self.schedule.alpha_bar.float()

        def eps_fn(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            self.max_input = max(self.max_input, float(z_t.abs().max()))
            a = ab[t].reshape(-1, 1)
            return (z_t - a.sqrt() * self.m) / (1 - a).sqrt()

        return eps_fn, None


@pytest.mark.parametrize("m, clip, expected_norm", [(0.5, True, 0.5), (1.5, True, 1.0), (1.5, False, 1.5)])
def test_sample_latents_point_mass_is_denormalised_and_clamped_iff_clip_latent(m, clip, expected_norm):
    latent = PointMassLatent(m, clip)
    z = sample_latents(latent, 6, 10, torch.Generator().manual_seed(0))
    expected = expected_norm * 2.0 + torch.arange(4.0)  # denormalise: z * std + mean
    torch.testing.assert_close(z, expected.expand(6, 4), atol=1e-5, rtol=0)


def test_sample_latents_clamps_z_T_only_with_clip_latent():
    z_T = torch.full((3, 4), 3.0)
    clipped, free = PointMassLatent(0.0, True), PointMassLatent(0.0, False)
    sample_latents(clipped, 3, 5, z_T=z_T)
    sample_latents(free, 3, 5, z_T=z_T)
    assert clipped.max_input == pytest.approx(1.0) and free.max_input == pytest.approx(3.0)


def test_sample_latents_of_a_real_latent_dpm_is_ddim_then_denormalise(models):
    latent = models["latent"]
    with torch.no_grad():
        latent.stats.mean.copy_(torch.linspace(-1, 1, LATENT_DIM))
        latent.stats.std.copy_(torch.linspace(0.5, 2, LATENT_DIM))
    z_T = latent_noise(5, LATENT_DIM, seed=3) * 2  # some entries beyond [-1, 1]
    z = sample_latents(latent, 5, 10, z_T=z_T)
    eps_fn, _ = latent.denoiser()
    with torch.no_grad():
        ref = ddim_sample(eps_fn, z_T.clamp(-1, 1), latent.schedule, 10, clip_x0=True)
    torch.testing.assert_close(z, ref * latent.stats.std + latent.stats.mean)
    # Batch size does not change the result.
    torch.testing.assert_close(sample_latents(latent, 5, 10, z_T=z_T, batch_size=2), z)


def test_sample_latents_errors_are_one_line(models):
    with pytest.raises(ValueError, match="latent DPM"):
        sample_latents(models["dpm"], 2, 5, torch.Generator())
    with pytest.raises(ValueError, match="generator or z_T"):
        sample_latents(models["latent"], 2, 5)
    with pytest.raises(ValueError, match=r"z_T must be \[n, 16\] = \[2, 16\]"):
        sample_latents(models["latent"], 2, 5, z_T=torch.zeros(2, 3))


def test_decode_zero_shift_equals_prior_and_stop_fraction_one_switches_the_shift_off(models):
    dpm, pdae = models["dpm"], models["pdae"]
    x_T = common.image_noise((1, 8, 8), range(4), seed=0)
    z = torch.randn(4, LATENT_DIM, generator=torch.Generator().manual_seed(0))
    prior = decode(dpm, None, x_T, 10)
    torch.testing.assert_close(decode(pdae, z, x_T, 10), prior, atol=0, rtol=0)  # G == 0 at initialisation
    shifted = tiny_models()["pdae"]
    perturb_shift(shifted)
    on = decode(shifted, z, x_T, 10)
    assert (on - prior).abs().max() > 1e-3
    torch.testing.assert_close(decode(shifted, z, x_T, 10, stop_fraction=1.0), prior, atol=0, rtol=0)
    part = decode(shifted, z, x_T, 10, stop_fraction=0.3)
    assert 0 < (part - prior).abs().max() and (part - on).abs().max() > 0
    torch.testing.assert_close(decode(shifted, z, x_T, 10, stop_fraction=0.3, batch_size=3), part, atol=1e-5, rtol=0)


def test_decode_paper_convention_stays_in_range_and_ddpm_noise_is_per_sample(models):
    pdae = models["pdae"]
    x_T = common.image_noise((1, 8, 8), range(4), seed=1)
    z = torch.zeros(4, LATENT_DIM)
    out = decode(pdae, z, x_T, 5)
    assert out.abs().max() <= 1.0 and out.dtype == torch.float32 and out.device.type == "cpu"

    def gens():
        return [torch.Generator().manual_seed(100 + i) for i in range(4)]

    a = decode(pdae, z, x_T, 0, sampler="ddpm", generator=gens(), batch_size=4)
    b = decode(pdae, z, x_T, 0, sampler="ddpm", generator=gens(), batch_size=1)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    c = decode(pdae, z, x_T, 0, sampler="ddpm", generator=[torch.Generator().manual_seed(7) for _ in range(4)])
    assert (a - c).abs().max() > 1e-2


def test_decode_checks_its_condition(models):
    x_T = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match="plain DPM takes no condition"):
        decode(models["dpm"], torch.zeros(2, LATENT_DIM), x_T, 5)
    with pytest.raises(ValueError, match="diffae needs a condition"):
        decode(models["diffae"], None, x_T, 5)
    with pytest.raises(ValueError, match="not an image decoder"):
        decode(models["latent"], None, x_T, 5)
    with pytest.raises(ValueError, match="3 rows but x_T has 2"):
        decode(models["pdae"], torch.zeros(3, LATENT_DIM), x_T, 5)


def test_sample_unconditional_sample_i_does_not_depend_on_n(models):
    a = sample_unconditional(models["pdae"], models["latent"], 3, 5, seed=4)
    b = sample_unconditional(models["pdae"], models["latent"], 2, 5, seed=4)
    torch.testing.assert_close(a[:2], b, atol=1e-5, rtol=0)
    c = sample_unconditional(models["dpm"], None, 2, 5, seed=4)
    torch.testing.assert_close(c, decode(models["dpm"], None, common.image_noise((1, 8, 8), range(2), 4), 5))


def test_ref_stats_and_uncond_cli_write_records_and_arrays(models, tmp_path):
    folders = save_models(models, tmp_path / "models")
    backend = ["--backend", "domain", "--feature-net", str(folders["feature_net"]), "--device", "cpu"]
    stats = tmp_path / "ref.npz"
    assert eval_main(["ref-stats", "--model", str(folders["dpm"]), "--num-images", "24", "--out", str(stats),
                      *backend]) == 0
    out = tmp_path / "uncond_pdae.json"
    arrays = tmp_path / "uncond_pdae.npz"
    assert eval_main(["uncond", "--autoencoder", str(folders["pdae"]), "--latent", str(folders["latent"]),
                      "--steps", "2", "5", "--num-samples", "8", "--ref-stats", str(stats), "--out", str(out),
                      "--arrays", str(arrays), "--grid-samples", "3", *backend]) == 0
    rows = common.read_records(out)
    per_step = ("fid", "kid", "latent_std", "latent_mean_abs", "confident")
    assert [(r["method"], r["steps"], r["metric"]) for r in rows] == [
        ("pdae", s, m) for s in (2, 5) for m in per_step]
    assert all(0.0 <= r["value"] <= 1.0 for r in rows if r["metric"] == "confident")
    assert all(r["table"] == "uncond" and math.isfinite(r["value"]) for r in rows)
    assert all(r["backend"] == ("-" if r["metric"].startswith("latent") else "domain") for r in rows)
    assert all(r["value"] >= -1e-6 for r in rows if r["metric"] == "fid")
    for r in rows:
        if r["metric"] != "confident":
            assert r["n_samples"] == 8
        if r["metric"] == "fid":  # 200 bootstrap replicates by default, centred near the full-set value
            assert r["units"] == "bootstrap" and len(r["values"]) == 200
            assert all(math.isfinite(v) for v in r["values"])
            assert np.median(r["values"]) == pytest.approx(r["value"], rel=0.3)
        else:
            assert "values" not in r
        if r["metric"] == "kid":
            assert r["kid_subset"] == 4  # min(1000, n // 2) < n = 8
        if r["metric"] == "latent_std":
            assert r["value"] > 0
    meta = json.loads(out.read_text())["meta"]
    assert meta["stop_fraction"] == 0.3 and meta["clip_latent"] is True
    with np.load(arrays) as data:
        assert data["grid"].shape == (2, 3, 1, 8, 8) and list(data["row_labels"]) == ["pdae T=2", "pdae T=5"]
        # The stored samples are the ones sample_unconditional makes for this seed.
        again = sample_unconditional(models["pdae"], models["latent"], 3, 5, seed=0)
        np.testing.assert_allclose(data["grid"][1], again.clamp(-1, 1).numpy(), atol=1e-5)
    assert json.loads(sidecar_path(arrays).read_text())["table"] == "uncond"

    out_dpm = tmp_path / "uncond_ddim.json"
    assert eval_main(["uncond", "--dpm", str(folders["dpm"]), "--steps", "5", "--num-samples", "8",
                      "--bootstrap", "20", "--ref-stats", str(stats), "--out", str(out_dpm), *backend]) == 0
    rows = common.read_records(out_dpm)
    assert [(r["method"], r["steps"], r["metric"]) for r in rows] == [
        ("real", "-", "confident"), ("real", "-", "fid"), ("real", "-", "kid"),
        ("ddim", 5, "fid"), ("ddim", 5, "kid"), ("ddim", 5, "confident")]
    real_fid, ddim_fid = rows[1], rows[3]
    assert real_fid["n_samples"] == 8 and len(real_fid["values"]) == 20 and rows[2]["kid_subset"] == 4
    assert 0 <= real_fid["value"] < ddim_fid["value"]  # real training images beat an untrained DPM
    assert "overlap the reference" in json.loads(out_dpm.read_text())["meta"]["notes"]


def test_real_sample_indices_are_distinct_seeded_and_capped():
    a = real_sample_indices(100, 10, seed=3)
    assert len(set(a.tolist())) == 10 and list(a) == sorted(a) and a.max() < 100
    assert np.array_equal(a, real_sample_indices(100, 10, seed=3))
    assert not np.array_equal(a, real_sample_indices(100, 10, seed=4))
    assert np.array_equal(real_sample_indices(7, 10, seed=0), np.arange(7))  # capped at the split size


class GaussianLatent(PointMassLatent):
    """A latent DPM whose eps is exact for standard-normal normalised data: eps = sqrt(1 - ab) z_t."""

    def denoiser(self, cond: Any = None):
        ab = self.schedule.alpha_bar.float()

        def eps_fn(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return (1 - ab[t].reshape(-1, 1)).sqrt() * z_t

        return eps_fn, None


def test_latent_health_of_standard_normal_latents():
    latent = GaussianLatent(0.0, clip_latent=False, dim=8)
    z_n = torch.randn(4000, 8, generator=torch.Generator().manual_seed(0))
    healthy = latent_health(latent, latent.stats.denormalize(z_n))
    assert healthy["latent_std"] == pytest.approx(1.0, abs=0.03) and healthy["latent_mean_abs"] < 0.05
    broken = latent_health(latent, latent.stats.denormalize(3 * z_n + 0.5))  # e.g. an untrained latent DPM
    assert broken["latent_std"] == pytest.approx(3.0, rel=0.03)
    assert broken["latent_mean_abs"] == pytest.approx(0.5, abs=0.1)
    # Through latent DDIM: the exact N(0, I) model keeps z_T's spread (up to DDIM's discretisation).
    z = sample_latents(latent, 2000, 50, torch.Generator().manual_seed(1))
    sampled = latent_health(latent, z)
    assert sampled["latent_std"] == pytest.approx(1.0, abs=0.05) and sampled["latent_mean_abs"] < 0.05


def test_uncond_cli_errors_are_one_line(models, tmp_path, capsys):
    folders = save_models({"dpm": models["dpm"]}, tmp_path / "m")
    assert eval_main(["uncond", "--autoencoder", str(folders["dpm"]), "--ref-stats", "x.npz", "--out",
                      str(tmp_path / "o.json"), "--backend", "standard"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "--latent" in err and "\n" not in err


def test_confident_fraction_counts_samples_above_threshold() -> None:
    from eval.sample import confident_fraction

    class Fixed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):  # logits from the first pixel: p(class 0) = sigmoid(2 * 10 * x00)
            v = x[:, 0, 0, 0] * 10
            return torch.stack([v, -v], dim=1)

    x = torch.zeros(4, 1, 2, 2)
    x[:, 0, 0, 0] = torch.tensor([0.0, 0.05, 0.2, -0.5])  # p_max = 0.5, 0.73, 0.98, 1.0
    assert confident_fraction(Fixed(), x, threshold=0.9) == 0.5
    assert confident_fraction(Fixed(), x, threshold=0.5) == 1.0


@pytest.mark.parametrize("argv, flag", [
    (["ref-stats", "--selection", "last"], "--selection"),
    (["ref-stats", "--selection", "random", "--selection-seed", "x"], "--selection-seed"),
    (["ref-stats", "--data", "missing.yaml", "--selection", "random", "--selection-seed", "-1"], "--selection-seed"),
    (["reconstruct", "--model", "m", "--split", "val"], "--split"),
    (["uncond", "--dpm", "m", "--clip-latent", "yes"], "--clip-latent"),
    (["fewshot", "--autoencoder", "a", "--latent", "l", "--scenario", "binary", "--clip-latent", "1"],
     "--clip-latent"),
])
def test_bad_protocol_option_is_a_one_line_error_naming_the_flag(argv, flag, tmp_path, capsys):
    """Issue 13's protocol options: a bad value is one `error:` line naming the flag, exit status 2, no output."""
    out = tmp_path / "out.json"
    try:
        code = cli.main([*argv, "--out", str(out), "--device", "cpu"])
    except SystemExit as exc:  # argparse rejects the value before any command runs
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and flag in err and len(err.splitlines()) == 1, err
    assert "Traceback" not in err and not out.exists()
