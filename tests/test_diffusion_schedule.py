"""Schedules, respacing and Gaussian identities of pdae.diffusion against docs/protocol.md §1.1-1.6."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pdae.diffusion import gaussian as g
from pdae.diffusion.schedule import (
    Schedule,
    const_betas,
    cosine_betas,
    linear_betas,
    respace_timesteps,
)


# Tiny tensors: one intra-op thread (tests/conftest.py `single_thread`).
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def sch() -> Schedule:
    return Schedule.from_name("linear")


# Schedules (docs/protocol.md §1.1).


def test_linear_betas_match_numpy_linspace() -> None:
    betas = linear_betas()
    assert betas.dtype == torch.float64 and betas.shape == (1000,)
    np.testing.assert_array_equal(betas.numpy(), np.linspace(1e-4, 0.02, 1000, dtype=np.float64))


def test_cosine_betas_match_independent_numpy() -> None:
    T, s = 1000, 0.008
    u = np.arange(T + 1, dtype=np.float64) / T
    f = np.cos((u + s) / (1 + s) * np.pi / 2) ** 2
    expected = np.minimum(1 - f[1:] / f[:-1], 0.999)
    betas = cosine_betas(T)
    assert betas.dtype == torch.float64
    np.testing.assert_allclose(betas.numpy(), expected, rtol=1e-12, atol=0)
    assert betas[-1].item() == 0.999  # the last beta is clipped
    sch = Schedule.from_name("cosine", T=T)
    # alpha_bar_t = f((t+1)/T) / f(0) wherever no clipping happened.
    np.testing.assert_allclose(sch.alpha_bar.numpy()[:-1], (f[1:] / f[0])[:-1], rtol=1e-10)


def test_const_schedule_latent_dpm_alpha_bar_end() -> None:
    sch = Schedule.from_name("const")
    assert torch.equal(sch.betas, const_betas(1000, 0.008))
    assert sch.alpha_bar[-1].item() == pytest.approx(0.992**1000, rel=1e-10)
    assert f"{sch.alpha_bar[-1].item():.1e}" == "3.2e-04"  # docs/protocol.md §1.1


def test_schedule_tables(sch: Schedule) -> None:
    betas = np.linspace(1e-4, 0.02, 1000)
    alpha_bar = np.cumprod(1 - betas)
    prev = np.append(1.0, alpha_bar[:-1])
    for name in ("alphas", "alpha_bar", "alpha_bar_prev", "alpha_bar_next", "posterior_variance"):
        assert getattr(sch, name).dtype == torch.float64
    assert sch.T == 1000
    np.testing.assert_allclose(sch.alphas.numpy(), 1 - betas, rtol=1e-15)
    np.testing.assert_allclose(sch.alpha_bar.numpy(), alpha_bar, rtol=1e-13)
    np.testing.assert_allclose(sch.alpha_bar_prev.numpy(), prev, rtol=1e-13)
    assert sch.alpha_bar_prev[0].item() == 1.0 and sch.alpha_bar_next[-1].item() == 0.0
    np.testing.assert_allclose(sch.alpha_bar_next.numpy()[:-1], alpha_bar[1:], rtol=1e-13)
    post = betas * (1 - prev) / (1 - alpha_bar)
    np.testing.assert_allclose(sch.posterior_variance.numpy(), post, rtol=1e-12)
    assert sch.posterior_variance[0].item() == 0.0
    clipped = sch.posterior_log_variance_clipped.numpy()
    assert clipped[0] == clipped[1] == pytest.approx(math.log(post[1]), rel=1e-12)
    np.testing.assert_allclose(clipped[1:], np.log(post[1:]), rtol=1e-12)


def test_schedule_dict_round_trip_through_json() -> None:
    for sch in (
        Schedule.from_name("linear"),
        Schedule.from_name("cosine", T=50, s=0.01),
        Schedule.from_name("const", T=20, beta=0.01),
        Schedule(torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)),
    ):
        back = Schedule.from_dict(json.loads(json.dumps(sch.to_dict())))
        assert torch.equal(back.betas, sch.betas) and back.kind == sch.kind
    assert Schedule.from_name("const").to_dict() == {"kind": "const", "T": 1000, "beta": 0.008}


def test_schedule_bad_input_messages() -> None:
    with pytest.raises(ValueError, match="'sigmoid'"):
        Schedule.from_name("sigmoid")
    with pytest.raises(ValueError, match="'beta'"):
        Schedule.from_name("linear", beta=0.1)
    with pytest.raises(ValueError, match="'betas'"):
        Schedule.from_dict({"kind": "custom"})
    with pytest.raises(ValueError, match="'kind'"):
        Schedule.from_dict({"T": 10})
    with pytest.raises(ValueError, match="open interval"):
        Schedule(torch.tensor([0.1, 1.5]))
    with pytest.raises(ValueError, match="T must be"):
        linear_betas(1)


# PDAE coefficients (docs/protocol.md §1.3-1.4).


def test_shift_coef_reference_values(sch: Schedule) -> None:
    coef = g.shift_coef(sch)
    assert coef.shape == (1000,) and coef[0].item() == 0.0
    expected = {10: "-0.0405", 100: "-0.318", 200: "-0.580", 500: "-0.955", 999: "-0.990"}
    for t, value in expected.items():
        digits = len(value.split(".")[1])
        assert f"{coef[t].item():.{digits}f}" == value, t


def test_pdae_loss_weight_reference_values(sch: Schedule) -> None:
    w = g.pdae_loss_weight(sch)
    expected = {0: "2.5e-04", 10: "4.0e-03"}
    for t, value in expected.items():
        assert f"{w[t].item():.1e}" == value, t
    # The official formula gives 0.58046 at t=300 (docs/protocol.md §1.4), hence four digits there.
    for t, value in {100: "0.130", 300: "0.5805", 475: "0.7225", 700: "0.604", 999: "0.364"}.items():
        digits = len(value.split(".")[1])
        assert f"{w[t].item():.{digits}f}" == value, t
    assert int(w.argmax()) == 475
    # gamma is a parameter: gamma = 0 gives 1/(1+SNR) = 1 - alpha_bar.
    torch.testing.assert_close(g.pdae_loss_weight(sch, gamma=0.0), 1 - sch.alpha_bar, rtol=1e-12, atol=0)


def test_ddim_shift_coef_against_shift_coef(sch: Schedule) -> None:
    ddim = g.ddim_shift_coef(sch)
    torch.testing.assert_close(ddim, -(1 - sch.alpha_bar).sqrt(), rtol=0, atol=0)
    ratio = g.shift_coef(sch) / ddim
    assert f"{ratio[1].item():.2f}" == "0.45" and f"{ratio[100].item():.2f}" == "0.98"  # docs/protocol.md §1.5


def test_shift_in_eps_is_posterior_variance_mean_shift(sch: Schedule) -> None:
    gen = torch.Generator().manual_seed(0)
    t = torch.arange(1000)
    x_t, eps, grad = (torch.randn(1000, 3, 4, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    shifted = g.eps_mean(sch, x_t, t, eps + g.extract(g.shift_coef(sch), t, eps.shape) * grad)
    expected = g.eps_mean(sch, x_t, t, eps) + g.posterior_variance(sch, t, x_t.shape, dtype=torch.float64) * grad
    assert (shifted - expected).abs().max().item() < 1e-10
    torch.testing.assert_close(g.shift_eps(sch, t, eps, grad), eps + g.extract(g.shift_coef(sch), t, eps.shape) * grad)


# Gaussian identities (docs/protocol.md §1.2).


def test_x0_eps_round_trips(sch: Schedule) -> None:
    gen = torch.Generator().manual_seed(1)
    t = torch.randint(0, 1000, (64,), generator=gen)
    x0, noise = (torch.randn(64, 16, generator=gen, dtype=torch.float64) for _ in range(2))
    x_t = g.q_sample(sch, x0, t, noise)
    torch.testing.assert_close(g.x0_from_eps(sch, x_t, t, noise), x0, rtol=0, atol=1e-9)
    torch.testing.assert_close(g.eps_from_x0(sch, x_t, t, x0), noise, rtol=0, atol=1e-9)


def test_q_sample_moments(sch: Schedule) -> None:
    gen = torch.Generator().manual_seed(2)
    x0 = torch.full((200_000, 1), 0.7, dtype=torch.float64)
    t = torch.full((200_000,), 300)
    x_t = g.q_sample(sch, x0, t, torch.randn(x0.shape, generator=gen, dtype=torch.float64))
    ab = sch.alpha_bar[300].item()
    assert x_t.mean().item() == pytest.approx(math.sqrt(ab) * 0.7, abs=5e-3)
    assert x_t.var().item() == pytest.approx(1 - ab, rel=1e-2)


def test_posterior_mean_and_variance_by_gaussian_conditioning(sch: Schedule) -> None:
    # q(x_{t-1}|x_t,x_0) is proportional to N(x_t; sqrt(a_t) x_{t-1}, b_t) N(x_{t-1}; sqrt(ab_{t-1}) x_0, 1-ab_{t-1}).
    gen = torch.Generator().manual_seed(3)
    t = torch.arange(1, 1000)
    x0, x_t = (torch.randn(999, 2, generator=gen, dtype=torch.float64) for _ in range(2))
    a, b = sch.alphas[t, None], sch.betas[t, None]
    v_prev = 1 - sch.alpha_bar_prev[t, None]
    precision = a / b + 1 / v_prev
    mean = (a.sqrt() / b * x_t + sch.alpha_bar_prev[t, None].sqrt() / v_prev * x0) / precision
    torch.testing.assert_close(g.posterior_mean(sch, x0, x_t, t), mean, rtol=1e-9, atol=1e-12)
    var = g.posterior_variance(sch, t, x_t.shape, dtype=torch.float64)
    torch.testing.assert_close(var, 1 / precision, rtol=1e-9, atol=0)


def test_eps_mean_is_posterior_mean_of_predicted_x0(sch: Schedule) -> None:
    gen = torch.Generator().manual_seed(4)
    t = torch.randint(0, 1000, (32,), generator=gen)
    x_t, eps = (torch.randn(32, 3, 2, 2, generator=gen, dtype=torch.float64) for _ in range(2))
    expected = g.posterior_mean(sch, g.x0_from_eps(sch, x_t, t, eps), x_t, t)
    torch.testing.assert_close(g.eps_mean(sch, x_t, t, eps), expected, rtol=1e-9, atol=1e-9)


def test_snr_and_extract_shapes_and_dtypes(sch: Schedule) -> None:
    torch.testing.assert_close(g.snr(sch), sch.alpha_bar / (1 - sch.alpha_bar))
    t = torch.tensor([0, 999])
    assert g.extract(sch.alpha_bar, t, (2, 3, 4, 5)).shape == (2, 1, 1, 1)
    assert g.extract(sch.alpha_bar, t, (2, 7)).shape == (2, 1)
    x32 = torch.ones(2, 7)
    out = g.q_sample(sch, x32, t, torch.zeros(2, 7))
    assert out.dtype == torch.float32
    assert out[:, 0].tolist() == pytest.approx(sch.alpha_bar[t].sqrt().tolist(), rel=1e-7)
    with pytest.raises(ValueError, match="integer tensor"):
        g.extract(sch.alpha_bar, t.float(), (2, 7))
    with pytest.raises(ValueError, match="batch shape"):
        g.extract(sch.alpha_bar, t, (3, 7))


# Respacing (docs/protocol.md §1.6).

PAPER_STRIDES = {10: 100, 20: 50, 50: 20, 100: 10, 200: 5, 500: 2, 1000: 1}


@pytest.mark.parametrize("steps,stride", sorted(PAPER_STRIDES.items()))
def test_respace_paper_golden(steps: int, stride: int) -> None:
    taus = respace_timesteps(1000, steps, "paper")
    assert taus == list(range(0, 1000, stride))
    assert len(taus) == steps and taus[0] == 0 and taus[-1] == 1000 - stride


def test_respace_paper_literal_lists() -> None:
    assert respace_timesteps(1000, 10) == [0, 100, 200, 300, 400, 500, 600, 700, 800, 900]
    assert respace_timesteps(1000, 100)[-3:] == [970, 980, 990]


@pytest.mark.parametrize("steps", [10, 20, 50, 100])
def test_respace_current_golden(steps: int) -> None:
    # floor(k * 999 / N) = k * 1000 / N - 1 for k = 1..N when N divides 1000.
    taus = respace_timesteps(1000, steps, "current")
    assert taus == [0] + [k * 1000 // steps - 1 for k in range(1, steps + 1)]
    assert len(taus) == steps + 1 and taus[-1] == 999


def test_respace_current_literal_lists() -> None:
    assert respace_timesteps(1000, 10, "current") == [0, 99, 199, 299, 399, 499, 599, 699, 799, 899, 999]
    assert respace_timesteps(1000, 100, "current")[:4] == [0, 9, 19, 29]
    taus = respace_timesteps(1000, 1000, "current")
    assert taus == list(range(1000)) and len(taus) - 1 == 999  # ddim1000 runs 999 steps


def test_respace_errors() -> None:
    with pytest.raises(ValueError, match="exactly 999"):
        respace_timesteps(1000, 999, "paper")
    with pytest.raises(ValueError, match="'new'"):
        respace_timesteps(1000, 10, "new")
    with pytest.raises(ValueError, match="positive"):
        respace_timesteps(1000, 0, "current")
    with pytest.raises(ValueError, match="1001"):
        respace_timesteps(1000, 1001, "current")
