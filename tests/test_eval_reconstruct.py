"""eval.reconstruct: Table 1 settings, inversion round trips, the latent-dim column, metrics, the per-image
`values` of every record, the unrelated-pair floor, the distance's metric name per backend and the CLI.

Analytic stand-ins: for Gaussian data x0 ~ N(0, s^2 I) the exact eps is sqrt(1 - ab) x_t / (ab s^2 + 1 - ab), so
DDIM inversion followed by DDIM decoding must (nearly) return x0, while a random x_T gives an unrelated sample.
A random-init PDAE has G == 0, so every reconstruction equals the plain-DDIM one of its prior.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from eval import cli, common
from eval.backends import MetricBackend, domain_backend
from eval.reconstruct import (
    ReconSetting,
    infer_x_T,
    latent_dim_of,
    recon_metrics,
    recon_records,
    recon_settings,
    reconstruct_all,
    unrelated_metrics,
    unrelated_partners,
    unrelated_records,
    unrelated_shift,
)
from eval.sample import sidecar_path
from pdae.diffusion.schedule import Schedule
from pdae.methods import Method
from tests.test_eval_sample import LATENT_DIM, save_models, tiny_models

# The workflow's held-out digits (16x16, real UCI digits shipped with scikit-learn).
DIGITS16 = {"name": "digits", "image_size": 16, "channels": 1, "test_fraction": 0.1, "seed": 0}


def eval_main(argv: list[str]) -> int:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "COMMAND_MODULES", ("eval.reconstruct",))
        return cli.main(argv)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models():
    return tiny_models()


class GaussianDPM(Method):
    """Plain DPM with the exact eps of data N(0, s^2 I)."""

    name = "dpm"
    is_diffusion = True

    def __init__(self, s: float = 0.3) -> None:
        super().__init__()
        self.schedule = Schedule.from_name("linear", 1000)
        self.s = s

    def denoiser(self, cond=None):
        ab = self.schedule.alpha_bar.float()

        def eps_fn(x_t, t):
            a = ab[t].reshape(-1, 1, 1, 1)
            return (1 - a).sqrt() * x_t / (a * self.s**2 + 1 - a)

        return eps_fn, None


def test_settings_and_latent_dims(models):
    settings = recon_settings([10, 100], ["random", "inferred"], None, True, 1000)
    assert settings == [
        ReconSetting("random", 10, "ddim", None), ReconSetting("random", 100, "ddim", None),
        ReconSetting("inferred", 10, "ddim", 10), ReconSetting("inferred", 100, "ddim", 100),
        ReconSetting("random", 1000, "ddpm", None)]
    assert [s.encode_steps for s in recon_settings([10, 20], ["inferred"], 50, False, 1000)] == [50, 50]
    shape = (1, 8, 8)
    assert latent_dim_of(models["pdae"], "random", shape) == LATENT_DIM
    assert latent_dim_of(models["pdae"], "inferred", shape) == LATENT_DIM + 64
    assert latent_dim_of(models["dpm"], "inferred", shape) == 64
    assert latent_dim_of(models["dpm"], "random", shape) == 0
    # The paper's Table 1 numbers for 128x128 RGB with z of 512: 49,152 and 49,664.
    pdae_stub = type("M", (), {"name": "pdae", "latent_dim": 512})()
    assert latent_dim_of(pdae_stub, "inferred", (3, 128, 128)) == 49_664
    with pytest.raises(ValueError, match="--x-T"):
        recon_settings([10], ["sampled"], None, False, 1000)


def test_several_encode_step_rules_give_one_setting_each_without_duplicates():
    # "same" (Diff-AE's inv<T>) and 100 (a fixed count, as the official PDAE script's ddim1000) at T = 10, 100.
    settings = recon_settings([10, 100], ["random", "inferred"], ["same", "100"], False, 1000)
    assert [(s.x_T, s.steps, s.encode_steps) for s in settings] == [
        ("random", 10, None), ("random", 100, None),
        ("inferred", 10, 10), ("inferred", 10, 100), ("inferred", 100, 100)]
    assert [s.label for s in settings][3] == "DDIM T=10 inferred x_T enc=100"
    for bad in (["0"], ["ten"], ["-5"]):
        with pytest.raises(ValueError, match="--encode-steps"):
            recon_settings([10], ["inferred"], bad, False, 1000)


def test_inferred_x_T_reconstructs_and_random_x_T_does_not():
    dpm = GaussianDPM(0.3)
    x0 = 0.3 * torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    settings = recon_settings([10, 100], ["random", "inferred"], None, False, 1000)
    recs = reconstruct_all(dpm, x0, settings, seed=0)
    err = {(s.x_T, s.steps): float((recs[s] - x0).pow(2).mean()) for s in settings}
    power = float(x0.pow(2).mean())
    # Inversion + decoding is exact up to the DDIM discretisation error, which shrinks with the steps.
    assert err["inferred", 100] < 0.01 * power and err["inferred", 100] < 0.5 * err["inferred", 10]
    assert min(err["random", 10], err["random", 100]) > 0.5 * power  # an independent sample: error ~ 2 s^2
    # For data N(0, s^2 I) the probability-flow map is x_T = x0 / s: the DDIM inversion follows it closely.
    x_T_inv = infer_x_T(dpm, x0, None, 100)
    assert float(torch.nn.functional.cosine_similarity(x_T_inv.flatten(), x0.flatten(), dim=0)) > 0.98
    assert float(x_T_inv.std()) == pytest.approx(1.0, abs=0.15)  # inverted Gaussian data looks like N(0, I)


def test_pdae_with_zero_shift_reconstructs_like_its_prior_and_batching_is_invisible(models):
    x0 = common.image_noise((1, 8, 8), range(5), 9).clamp(-1, 1)
    settings = recon_settings([5], ["random", "inferred"], 10, False, 50)
    pdae = reconstruct_all(models["pdae"], x0, settings, seed=2, batch_size=5)
    ddim = reconstruct_all(models["dpm"], x0, settings, seed=2, batch_size=2)
    for s in settings:
        torch.testing.assert_close(pdae[s], ddim[s], atol=1e-5, rtol=0)
    # z is encoded from x0 once and the shift changes the result once G != 0.
    shifted = tiny_models()["pdae"]
    from tests.test_eval_sample import perturb_shift

    perturb_shift(shifted)
    moved = reconstruct_all(shifted, x0, settings, seed=2)
    assert all(float((moved[s] - ddim[s]).abs().max()) > 1e-4 for s in settings)


class MeanAbsDistance(nn.Module):
    """A standard-like distance net: mean |a - b| per image (stands in for LPIPS-AlexNet)."""

    def forward(self, a, b):
        return (a - b).abs().mean(dim=(1, 2, 3))


def standard_like_backend() -> MetricBackend:
    return MetricBackend("standard", MeanAbsDistance(), "inception-v3-compat", distance_name="lpips")


def assert_per_image(row, n):
    """`values` holds n per-image floats whose mean is `value`; units "images"."""
    assert row["units"] == "images" and len(row["values"]) == n
    assert np.mean(row["values"]) == pytest.approx(row["value"], rel=1e-12, abs=1e-15)


def test_recon_metrics_identity_and_closed_form_mse(models):
    backend = domain_backend(models["feature_net"].net)
    x0 = common.image_noise((1, 8, 8), range(3), 1).clamp(-0.9, 0.9)
    same = recon_metrics(x0, x0, backend)
    # The domain backend's distance is the domain feature distance, never labelled "lpips".
    assert list(same) == ["ssim", "feat_dist", "mse"]
    torch.testing.assert_close(same["ssim"], torch.ones(3, dtype=torch.float64))
    assert float(same["mse"].abs().max()) == 0 and float(same["feat_dist"].abs().max()) < 1e-6
    shifted = recon_metrics(x0, x0 + 0.1, backend)
    torch.testing.assert_close(shifted["mse"], torch.full((3,), 0.05**2, dtype=torch.float64))  # (0.1/2)^2 on [0,1]
    assert bool((shifted["feat_dist"] > 0).all()) and bool((shifted["ssim"] < 1).all())
    over = recon_metrics(x0, x0 * 0 + 1.5, None)  # clamped to 1 before the metrics
    assert list(over) == ["ssim", "mse"]
    torch.testing.assert_close(over["mse"], ((1 - x0) / 2).pow(2).mean(dim=(1, 2, 3)).double())
    # A standard (LPIPS-AlexNet-like) backend reports "lpips".
    std = recon_metrics(x0, x0 + 0.1, standard_like_backend())
    assert list(std) == ["ssim", "lpips", "mse"]
    torch.testing.assert_close(std["lpips"], torch.full((3,), 0.1, dtype=torch.float64), rtol=1e-6, atol=0)


def test_recon_records_vocabulary_and_per_image_values(models):
    s1, s2 = ReconSetting("inferred", 10, "ddim", 20), ReconSetting("random", 50, "ddpm", None)
    per = {s1: {"ssim": torch.tensor([0.5, 1.0]), "lpips": torch.tensor([0.1, 0.3]), "mse": torch.tensor([1e-3, 3e-3])},
           s2: {"ssim": torch.tensor([0.2, 0.4]), "mse": torch.tensor([0.1, 0.3])}}
    rows = recon_records(models["dpm"], per, (1, 8, 8), "standard")
    key = [(r["method"], r["x_T"], r["steps"], r["sampler"], r["encode_steps"], r["latent_dim"], r["metric"])
           for r in rows]
    assert key == [("ddim", "inferred", 10, "ddim", 20, 64, "ssim"), ("ddim", "inferred", 10, "ddim", 20, 64, "lpips"),
                   ("ddim", "inferred", 10, "ddim", 20, 64, "mse"), ("ddim", "random", 50, "ddpm", "-", 0, "ssim"),
                   ("ddim", "random", 50, "ddpm", "-", 0, "mse")]
    assert [r["value"] for r in rows] == pytest.approx([0.75, 0.2, 2e-3, 0.3, 0.2])
    assert all(r["table"] == "recon" and r["backend"] == "standard" for r in rows)
    for r in rows:
        assert_per_image(r, 2)
    assert rows[1]["values"] == pytest.approx([0.1, 0.3]) and rows[4]["values"] == pytest.approx([0.1, 0.3])
    # The domain backend's distance keeps its own name, in Table 1's column position.
    dom = recon_records(models["dpm"], {s1: {"ssim": torch.ones(2), "mse": torch.zeros(2),
                                             "feat_dist": torch.tensor([1.5, 2.5])}}, (1, 8, 8), "domain")
    assert [r["metric"] for r in dom] == ["ssim", "feat_dist", "mse"] and dom[1]["value"] == pytest.approx(2.0)


def test_paper_lpips_only_beside_real_lpips():
    from eval import paper

    row = {"table": "recon", "dataset": "ffhq128", "method": "pdae", "steps": 100, "sampler": "ddim",
           "x_T": "inferred", "metric": "lpips", "backend": "standard"}
    assert paper.paper_value(row)[0] == "0.008"  # Table 1, PDAE inferred x_T
    assert paper.paper_value({**row, "metric": "feat_dist", "backend": "domain"}) == ("", "")
    # Files written before "feat_dist" existed labelled the domain distance "lpips": no paper number either.
    assert paper.paper_value({**row, "backend": "domain"}) == ("", "")
    assert paper.paper_value({**row, "metric": "ssim", "backend": "domain"})[0] == "0.993"
    assert paper.paper_value({**row, "method": "unrelated", "steps": "-", "sampler": "-", "x_T": "-"}) == ("", "")


def test_unrelated_floor_is_a_derangement_and_far_worse_than_a_perfect_reconstruction():
    for n in range(2, 12):
        k = unrelated_shift(n)
        partners = (np.arange(n) + k) % n
        assert k == n // 2 and not np.any(partners == np.arange(n)) and sorted(partners) == list(range(n))
    with pytest.raises(ValueError, match="at least 2 images"):
        unrelated_shift(1)
    x0, _, _ = common.eval_images(DIGITS16, 32)  # real held-out digits
    torch.testing.assert_close(unrelated_partners(x0, 16)[3], x0[19])
    perfect = recon_metrics(x0, x0, None)
    torch.testing.assert_close(perfect["ssim"], torch.ones(32, dtype=torch.float64))
    assert float(perfect["mse"].abs().max()) == 0
    k, floor = unrelated_metrics(x0, None)
    assert k == 16
    # Unrelated digits: SSIM about 0.41 (zero-padded borders keep it well above 0), MSE about 0.085 on [0, 1].
    assert 0.2 < float(floor["ssim"].mean()) < 0.6 and float(floor["ssim"].max()) < 0.9
    assert float(floor["mse"].mean()) > 0.03 and bool((floor["mse"] > 0).all())


def test_unrelated_records_columns(models):
    backend = domain_backend(models["feature_net"].net)
    x0 = common.image_noise((1, 8, 8), range(4), 3).clamp(-1, 1)
    k, per = unrelated_metrics(x0, backend)
    rows = unrelated_records(models["pdae"], per, k, backend.name, eval_seed=7)
    assert [r["metric"] for r in rows] == ["ssim", "feat_dist", "mse"]
    for r in rows:
        assert (r["method"], r["x_T"], r["steps"], r["sampler"], r["encode_steps"], r["latent_dim"]) == (
            "unrelated", "-", "-", "-", "-", "-")
        assert r["pair_shift"] == 2 and r["eval_seed"] == 7 and r["seed"] == 0 and r["backend"] == "domain"
        assert_per_image(r, 4)


def test_reconstruct_cli_records_and_grid(models, tmp_path):
    folders = save_models({k: models[k] for k in ("dpm", "pdae", "feature_net")}, tmp_path / "m")
    backend = ["--backend", "domain", "--feature-net", str(folders["feature_net"]), "--device", "cpu"]
    out, arrays = tmp_path / "recon_pdae.json", tmp_path / "recon_pdae.npz"
    assert eval_main(["reconstruct", "--model", str(folders["pdae"]), "--steps", "2", "5", "--ddpm",
                      "--num-images", "3", "--grid-images", "2", "--out", str(out), "--arrays", str(arrays),
                      *backend]) == 0
    rows = common.read_records(out)
    assert len(rows) == (2 * 2 + 1) * 3 + 3  # + the unrelated-pair floor (on by default)
    model_rows = [r for r in rows if r["method"] == "pdae"]
    assert {(r["x_T"], r["steps"], r["sampler"], r["encode_steps"]) for r in model_rows} == {
        ("random", 2, "ddim", "-"), ("random", 5, "ddim", "-"), ("inferred", 2, "ddim", 2),
        ("inferred", 5, "ddim", 5), ("random", 50, "ddpm", "-")}
    assert {r["metric"] for r in rows} == {"ssim", "feat_dist", "mse"}  # domain backend: never "lpips"
    floor = [r for r in rows if r["method"] == "unrelated"]
    assert [r["metric"] for r in floor] == ["ssim", "feat_dist", "mse"]
    assert all(r["steps"] == "-" and r["x_T"] == "-" and r["pair_shift"] == 1 for r in floor)
    for r in rows:
        assert_per_image(r, 3)
    meta = json.loads(out.read_text())["meta"]
    assert meta["encode_steps_rule"] == "same as decode steps" and meta["num_images"] == 3
    assert meta["pair_shift"] == 1 and meta["distance_metric"] == "feat_dist" and len(meta["image_indices"]) == 3
    x0, _, _ = common.eval_images(dict(models["pdae"].metadata["data"]), 3)
    with np.load(arrays) as data:
        assert data["grid"].shape == (6, 2, 1, 8, 8) and data["row_labels"][0] == "original"
        np.testing.assert_array_equal(data["grid"][0], x0[:2].numpy())
        assert data["per_image_ssim"].shape == (5, 3)
        ssim_means = {r["x_T"] + str(r["steps"]) + r["sampler"]: r["value"] for r in rows if r["metric"] == "ssim"}
        assert data["per_image_ssim"][2].mean() == pytest.approx(ssim_means["inferred2ddim"])
    assert json.loads(sidecar_path(arrays).read_text())["method"] == "pdae"

    out_dpm = tmp_path / "recon_ddim.json"
    assert eval_main(["reconstruct", "--model", str(folders["dpm"]), "--steps", "5", "--x-T", "inferred",
                      "--encode-steps", "10", "--ddpm", "--num-images", "2", "--out", str(out_dpm), *backend]) == 0
    rows = common.read_records(out_dpm)
    assert {(r["method"], r["x_T"], r["encode_steps"], r["latent_dim"]) for r in rows if r["method"] != "unrelated"} \
        == {("ddim", "inferred", 10, 64)}

    # Two protocols in one run: encode with the decode steps and with a fixed count; rows keyed by encode_steps.
    out_two = tmp_path / "recon_two.json"
    assert eval_main(["reconstruct", "--model", str(folders["pdae"]), "--steps", "5", "--x-T", "inferred",
                      "--encode-steps", "same", "10", "--num-images", "2", "--out", str(out_two), *backend]) == 0
    rows = common.read_records(out_two)
    assert {r["encode_steps"] for r in rows} == {"-", 5, 10} and len(rows) == 2 * 3 + 3  # "-": the floor rows
    assert json.loads(out_two.read_text())["meta"]["encode_steps_rule"] == "same as decode steps 10"


def test_reconstruct_cli_per_image_values_are_paired_across_methods(models, tmp_path):
    # The random-init PDAE has G == 0, so with the same seed (the same x_T for image i) its random-x_T
    # reconstruction equals its prior's image by image: the per-image values line up across the two files.
    folders = save_models({k: models[k] for k in ("dpm", "pdae", "feature_net")}, tmp_path / "m")
    common_args = ["--steps", "5", "--x-T", "random", "--num-images", "4", "--feature-net",
                   str(folders["feature_net"]), "--device", "cpu"]
    files = {}
    for name, seed in (("pdae", 3), ("dpm", 3), ("dpm_other_seed", 4)):
        files[name] = tmp_path / f"{name}.json"
        model = folders["pdae" if name == "pdae" else "dpm"]
        assert eval_main(["reconstruct", "--model", str(model), "--seed", str(seed), "--out", str(files[name]),
                          *common_args]) == 0
    by = {name: {(r["method"] != "unrelated", r["metric"]): r for r in common.read_records(path)}
          for name, path in files.items()}
    metas = {name: json.loads(path.read_text())["meta"] for name, path in files.items()}
    assert metas["pdae"]["image_indices"] == metas["dpm"]["image_indices"]
    for metric in ("ssim", "feat_dist", "mse"):
        pdae, ddim = by["pdae"][True, metric], by["dpm"][True, metric]
        assert (pdae["method"], ddim["method"], pdae["eval_seed"], ddim["eval_seed"]) == ("pdae", "ddim", 3, 3)
        np.testing.assert_allclose(pdae["values"], ddim["values"], rtol=1e-4, atol=1e-6)
        assert not np.allclose(by["dpm_other_seed"][True, metric]["values"], ddim["values"])  # other x_T
        # The floor does not depend on the model or the seed.
        assert by["pdae"][False, metric]["values"] == by["dpm_other_seed"][False, metric]["values"]
    # --no-unrelated-floor drops the floor rows.
    off = tmp_path / "off.json"
    assert eval_main(["reconstruct", "--model", str(folders["dpm"]), "--no-unrelated-floor", "--out", str(off),
                      *common_args]) == 0
    assert {r["method"] for r in common.read_records(off)} == {"ddim"}


def test_reconstruct_cli_errors_are_one_line(models, tmp_path, capsys):
    folders = save_models({"latent": models["latent"]}, tmp_path / "m")
    assert eval_main(["reconstruct", "--model", str(folders["latent"]), "--out", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "pdae, diffae or dpm" in err and "\n" not in err
