"""eval.gap: the posterior-mean gap (closed form, perfect eps), the PDAE shift with the training coefficient,
denoising in one step, the shift pictures, the per-image gap values (paired: one x_t per image and t for every
method) and the CLIs.

Analytic stand-ins: for data concentrated at a constant c the exact eps is (x_t - sqrt(ab) c) / sqrt(1 - ab), so a
DPM predicting it has gap 0 and recovers c in one step; a prior that predicts eps = 0 plus a G chosen so that
eps + shift_coef_t G is that exact eps (the training coefficient, not DDIM's sqrt(1 - ab)) must close the gap.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from eval import cli, common
from eval.gap import (
    default_timesteps,
    denoise_one_step,
    gap_eps_coef,
    gap_model,
    measure_gap,
    measure_gap_per_image,
    normalise_panels,
    pdae_gap_models,
    posterior_mean_gap,
    prior_gap_model,
    scale_timesteps,
    select_indices,
    shift_pictures,
)
from eval.sample import sidecar_path
from pdae.diffusion.schedule import Schedule
from pdae.methods import Method
from tests.test_eval_sample import perturb_shift, save_models, tiny_models

LINEAR = Schedule.from_name("linear", 1000)
C = 0.4  # the point-mass data value


def eval_main(argv: list[str]) -> int:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "COMMAND_MODULES", ("eval.gap",))
        return cli.main(argv)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def exact_eps(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """eps of data concentrated at C, for the linear schedule."""
    ab = LINEAR.alpha_bar.float()[t].reshape(-1, 1, 1, 1)
    return (x_t - ab.sqrt() * C) / (1 - ab).sqrt()


class StubPDAE(Method):
    """A PDAE (its capabilities): prior eps = 0, G = exact_eps / shift_coef_t (shift_coef from the schedule, in
    numpy)."""

    name = "pdae"
    is_diffusion, has_encoder, conditioning, has_shift = True, True, "z", True

    def __init__(self) -> None:
        super().__init__()
        self.schedule = LINEAR
        a, ab = LINEAR.alphas.numpy(), LINEAR.alpha_bar.numpy()
        ab_prev = np.concatenate([[1.0], ab[:-1]])
        coef = -np.sqrt(a) * (1 - ab_prev) / np.sqrt(1 - ab)
        self.coef = torch.from_numpy(np.where(coef == 0, np.inf, coef)).float()  # G = 0 where shift_coef_t = 0
        self.estimator = lambda x_t, t, z: (torch.zeros_like(x_t),
                                            exact_eps(x_t, t) / self.coef[t].reshape(-1, 1, 1, 1))

    def encode(self, x0: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x0.shape[0], 2)

    def denoiser(self, cond=None):
        eps_fn = lambda x_t, t: self.estimator(x_t, t, None)[0]  # noqa: E731
        return eps_fn, (None if cond is None else (lambda x_t, t: self.estimator(x_t, t, cond)))


class StubDPM(Method):
    name = "dpm"
    is_diffusion = True

    def __init__(self, eps_fn) -> None:
        super().__init__()
        self.schedule = LINEAR
        self.eps_fn = eps_fn

    def denoiser(self, cond=None):
        return self.eps_fn, None


def test_gap_of_the_true_noise_is_zero_and_an_eps_error_gives_the_closed_form():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, 5, 5, generator=g) * 2 - 1
    noise, err = torch.randn(x0.shape, generator=g), torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    assert float(posterior_mean_gap(LINEAR, x0, t, noise, noise).max()) < 1e-28
    eps = noise + err
    gap = posterior_mean_gap(LINEAR, x0, t, noise, eps)
    err = eps.double() - noise.double()  # the error actually made (float32 rounding of the sum)
    # Independent: mu(x0_hat(eps)) = (x_t - beta/sqrt(1-ab) eps)/sqrt(alpha), so the gap is coef^2 mean(e^2) with
    # coef = beta / (sqrt(alpha) sqrt(1 - ab)), from the betas in numpy float64.
    betas = np.linspace(1e-4, 0.02, 1000)
    ab = np.cumprod(1 - betas)
    coef = betas / (np.sqrt(1 - betas) * np.sqrt(1 - ab))
    expected = coef[t.numpy()] ** 2 * err.double().pow(2).flatten(1).mean(1).numpy()
    np.testing.assert_allclose(gap.numpy(), expected, rtol=1e-9)
    np.testing.assert_allclose(gap_eps_coef(LINEAR).numpy(), coef, rtol=1e-12)
    assert coef[0] == pytest.approx(np.sqrt(1e-4 / (1 - 1e-4)))  # t = 0: 1 - ab_0 = beta_0
    with pytest.raises(ValueError, match="one shape"):
        posterior_mean_gap(LINEAR, x0, t, noise, noise[:, :1])


def test_measure_gap_perfect_dpm_zero_blind_dpm_closed_form_and_pdae_uses_training_coefficient():
    x0 = torch.full((6, 1, 4, 4), C)
    ts = [0, 1, 100, 500, 999]
    models = {
        "perfect": gap_model(StubDPM(exact_eps)),
        "blind": gap_model(StubDPM(lambda x_t, t: torch.zeros_like(x_t))),
        "pdae": gap_model(StubPDAE()),
    }
    gaps = measure_gap(models, x0, ts, seed=3, batch_size=4)
    assert float(gaps["perfect"].abs().max()) < 1e-12
    from eval.gap import gap_noise

    coef = gap_eps_coef(LINEAR)
    blind = [float(coef[t] ** 2 * gap_noise(tuple(x0.shape), t, 3).double().pow(2).mean()) for t in ts]
    np.testing.assert_allclose(gaps["blind"].numpy(), blind, rtol=1e-5)
    # shift_coef_0 = 0, so G cannot act at t = 0; elsewhere eps + shift_coef G is exact.
    assert float(gaps["pdae"][1:].abs().max()) < 1e-9 and float(gaps["pdae"][0]) == pytest.approx(blind[0], rel=1e-5)
    # Batch size and seed: batching is invisible, another seed draws other noise.
    again = measure_gap({"blind": models["blind"]}, x0, ts, seed=3, batch_size=6)["blind"]
    np.testing.assert_allclose(again.numpy(), gaps["blind"].numpy(), rtol=1e-6)
    other = measure_gap({"blind": models["blind"]}, x0, ts, seed=4)["blind"]
    assert not np.allclose(other.numpy(), gaps["blind"].numpy())


class SpyDPM(StubDPM):
    """A StubDPM that records every x_t it is given."""

    def __init__(self, eps_fn, schedule=LINEAR) -> None:
        super().__init__(eps_fn)
        self.schedule = schedule
        self.seen: list[torch.Tensor] = []

    def denoiser(self, cond=None):
        def eps(x_t, t):
            self.seen.append(x_t.clone())
            return self.eps_fn(x_t, t)

        return eps, None


def test_per_image_gap_is_paired_and_its_mean_is_the_gap():
    g = torch.Generator().manual_seed(5)
    x0 = torch.rand(5, 1, 4, 4, generator=g) * 2 - 1
    ts = [1, 100, 700]
    spies = {"blind": SpyDPM(lambda x_t, t: torch.zeros_like(x_t)), "perfect": SpyDPM(exact_eps),
             "half": SpyDPM(lambda x_t, t: 0.5 * x_t)}
    models = {label: gap_model(spy) for label, spy in spies.items()}
    per = measure_gap_per_image(models, x0, ts, seed=2, batch_size=2)
    assert all(v.shape == (3, 5) and v.dtype == torch.float64 for v in per.values())
    # Every model saw the very same x_t, batch by batch (paired comparison).
    first = spies["blind"].seen
    assert len(first) == len(ts) * 3  # 3 batches of <= 2 images per t
    for spy in spies.values():
        assert all(torch.equal(a, b) for a, b in zip(spy.seen, first, strict=True))
    # The mean over images is measure_gap's value, whatever the batch size.
    means = measure_gap(models, x0, ts, seed=2, batch_size=3)
    for label in models:
        np.testing.assert_allclose(per[label].mean(dim=1).numpy(), means[label].numpy(), rtol=1e-6)
    # Image i of the blind DPM: coef_t^2 * mean over its elements of noise_i^2 (closed form, per image).
    from eval.gap import gap_noise

    coef = gap_eps_coef(LINEAR)
    for j, t in enumerate(ts):
        expected = coef[t] ** 2 * gap_noise(tuple(x0.shape), t, 2).double().pow(2).flatten(1).mean(1)
        np.testing.assert_allclose(per["blind"][j].numpy(), expected.numpy(), rtol=1e-5)
    # Models whose schedules differ cannot share x_t.
    other = SpyDPM(exact_eps, Schedule.from_name("linear", 500))
    with pytest.raises(ValueError, match="different noise schedules"):
        measure_gap_per_image({"a": models["blind"], "b": gap_model(other)}, x0, ts, seed=2)


def test_real_pdae_gap_equals_its_prior_while_G_is_zero():
    models = tiny_models()
    x0 = common.image_noise((1, 8, 8), range(3), 0).clamp(-1, 1)
    ts = [0, 10, 30, 49]
    pdae = models["pdae"]
    gaps = measure_gap({"dpm": prior_gap_model(pdae), "dpm_folder": gap_model(models["dpm"]), "pdae": gap_model(pdae),
                        "diffae": gap_model(models["diffae"])}, x0, ts, seed=0)
    np.testing.assert_allclose(gaps["pdae"].numpy(), gaps["dpm"].numpy(), rtol=1e-6)
    np.testing.assert_allclose(gaps["dpm_folder"].numpy(), gaps["dpm"].numpy(), rtol=1e-6)
    assert bool((gaps["diffae"] > 0).all())
    # The shared pass: the same numbers with one estimator call per (t, batch).
    calls = []
    hook = pdae.estimator.register_forward_hook(lambda *a: calls.append(1))
    shared = measure_gap(pdae_gap_models(pdae), x0, ts, seed=0, batch_size=2)
    hook.remove()
    assert len(calls) == len(ts) * 2
    np.testing.assert_allclose(shared["dpm"].numpy(), gaps["dpm"].numpy(), rtol=1e-5)
    np.testing.assert_allclose(shared["pdae"].numpy(), gaps["pdae"].numpy(), rtol=1e-5)
    perturb_shift(pdae)
    moved = measure_gap({"pdae": gap_model(pdae)}, x0, ts, seed=0)["pdae"]
    assert moved[0] == pytest.approx(float(gaps["dpm"][0]), rel=1e-6)  # shift_coef_0 = 0
    assert not np.allclose(moved[1:].numpy(), gaps["dpm"][1:].numpy())


def test_timestep_helpers_and_image_selection():
    ts = default_timesteps(1000)
    assert ts[:6] == [0, 1, 2, 5, 10, 20] and ts[-2:] == [990, 999] and len(ts) == 104
    assert default_timesteps(50, 25) == [0, 1, 2, 5, 25, 49]
    assert scale_timesteps([400, 500, 800], 1000) == [400, 500, 800]
    assert scale_timesteps([400, 500, 800], 50) == [20, 25, 40]
    idx = select_indices(10, 8, "replace", 0)
    assert len(idx) == 8 and len(set(idx.tolist())) < 8  # with replacement: repeats at n = 8 of 10
    np.testing.assert_array_equal(idx, select_indices(10, 8, "replace", 0))
    np.testing.assert_array_equal(select_indices(10, 20, "first", 0), np.arange(10))
    with pytest.raises(ValueError, match="--sampling"):
        select_indices(10, 2, "shuffle", 0)


def test_denoise_one_step_and_shift_pictures_on_stubs():
    x0 = torch.full((2, 1, 4, 4), C)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    ts = [400, 600, 800]
    res = denoise_one_step(StubPDAE(), x0, ts, noise)
    # The stub prior predicts eps = 0: x0_hat = x_t / sqrt(ab); the shifted eps is exact: x0_hat = C.
    ab = LINEAR.alpha_bar.float()[ts].reshape(1, 3, 1, 1, 1)
    torch.testing.assert_close(res["x0_dpm"], res["x_t"] / ab.sqrt())
    torch.testing.assert_close(res["x0_pdae"], torch.full_like(res["x0_pdae"], C), atol=1e-5, rtol=0)
    torch.testing.assert_close(res["x_t"][:, 1], ab[0, 1].sqrt() * x0 + (1 - ab[0, 1]).sqrt() * noise)
    pics = shift_pictures(StubPDAE(), x0, ts, noise)
    assert pics["shift"].shape == (2, 3, 1, 4, 4)
    scaled, scale = normalise_panels(pics["shift"])
    assert float(scaled.abs().amax(dim=(2, 3, 4)).min()) == pytest.approx(1.0)
    torch.testing.assert_close(scaled * scale[..., None, None, None], pics["shift"])


def test_gap_and_figure_clis(tmp_path, capsys):
    models = tiny_models()
    perturb_shift(models["pdae"])
    folders = save_models({k: models[k] for k in ("dpm", "pdae", "diffae")}, tmp_path / "m")
    out = tmp_path / "gap.json"
    assert eval_main(["gap", "--pdae", str(folders["pdae"]), "--diffae", str(folders["diffae"]), "--timesteps",
                      "0", "10", "49", "--num-images", "5", "--device", "cpu", "--out", str(out)]) == 0
    rows = common.read_records(out)
    assert [(r["method"], r["t"]) for r in rows] == [(m, t) for m in ("dpm", "pdae", "diffae") for t in (0, 10, 49)]
    assert all(r["table"] == "gap" and r["noise"] == "gaussian" and r["metric"] == "gap" for r in rows)
    for r in rows:  # per-image gaps behind every value
        assert r["units"] == "images" and len(r["values"]) == 5
        assert np.mean(r["values"]) == pytest.approx(r["value"], rel=1e-12)
    by = {(r["method"], r["t"]): r["values"] for r in rows}
    # Paired per image: at t = 0 shift_coef_0 = 0, so PDAE's gap equals its prior's image by image; at t > 0 G acts.
    np.testing.assert_allclose(by["pdae", 0], by["dpm", 0], rtol=1e-6)
    assert not np.allclose(by["pdae", 10], by["dpm", 10])
    meta = json.loads(out.read_text())["meta"]
    assert "rand_like" in meta["notes"] and meta["sampling"] == "replace" and len(meta["image_indices"]) == 5
    # --dpm given explicitly: the same network as the PDAE's frozen prior, hence the same gap.
    out2 = tmp_path / "gap2.json"
    assert eval_main(["gap", "--pdae", str(folders["pdae"]), "--dpm", str(folders["dpm"]), "--timesteps", "0", "10",
                      "49", "--num-images", "5", "--device", "cpu", "--out", str(out2)]) == 0
    dpm_rows = [r["value"] for r in common.read_records(out2) if r["method"] == "dpm"]
    assert dpm_rows == pytest.approx([r["value"] for r in rows if r["method"] == "dpm"], rel=1e-6)

    grid = tmp_path / "one_step.npz"
    assert eval_main(["denoise-one-step", "--pdae", str(folders["pdae"]), "--image-index", "0", "2", "--device",
                      "cpu", "--out", str(grid)]) == 0
    with np.load(grid) as data:
        assert data["grid"].shape == (6, 5, 1, 8, 8)
        assert list(data["col_labels"]) == [f"t={t}" for t in (20, 25, 30, 35, 40)]
        assert data["row_labels"][2].endswith("eps_theta + shift") and data["mse"].shape == (2, 2, 5)
        assert data["grid"].min() >= -1 and data["grid"].max() <= 1
    assert json.loads(sidecar_path(grid).read_text())["figure"] == "denoise_one_step"
    pics = tmp_path / "shift.npz"
    assert eval_main(["shift-pictures", "--pdae", str(folders["pdae"]), "--image-index", "1", "--device", "cpu",
                      "--out", str(pics)]) == 0
    with np.load(pics) as data:
        assert data["grid"].shape == (2, 6, 1, 8, 8) and data["shift"].shape == (1, 6, 1, 8, 8)

    assert eval_main(["gap", "--pdae", str(folders["dpm"]), "--out", str(tmp_path / "x.json"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "expected a pdae model" in err and "\n" not in err
