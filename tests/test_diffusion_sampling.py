"""DDIM / DDPM samplers of pdae.diffusion.sampling against docs/protocol.md §1.5-1.7 and §5.4."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor

from pdae.diffusion import gaussian as g
from pdae.diffusion.sampling import (
    ddim_invert,
    ddim_plan,
    ddim_sample,
    ddpm_sample,
    lerp,
    mix_shift_fns,
    slerp,
)
from pdae.diffusion.schedule import Schedule, respace_timesteps

CONVENTIONS = ("paper", "current")


# Tiny tensors: one intra-op thread (tests/conftest.py `single_thread`).
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def sch() -> Schedule:
    return Schedule.from_name("linear")


def point_mass_eps(sch: Schedule, x0_star: Tensor):
    """Exact eps for data concentrated at x0_star (one point per sample): (x_t - sqrt(ab) x0*) / sqrt(1 - ab)."""

    def eps_fn(x: Tensor, t: Tensor) -> Tensor:
        ab = g.extract(sch.alpha_bar, t, x.shape, dtype=x.dtype)
        return (x - ab.sqrt() * x0_star) / (1 - ab).sqrt()

    return eps_fn


def gaussian_eps(sch: Schedule, std: float):
    """Exact eps for data ~ N(0, std^2 I): sqrt(1 - ab) x_t / (ab std^2 + 1 - ab)."""

    def eps_fn(x: Tensor, t: Tensor) -> Tensor:
        ab = g.extract(sch.alpha_bar, t, x.shape, dtype=x.dtype)
        return (1 - ab).sqrt() * x / (ab * std**2 + 1 - ab)

    return eps_fn


def toy_eps(x: Tensor, t: Tensor) -> Tensor:
    """A nonlinear, t-dependent eps that drives x0_hat outside [-1, 1], so clipping matters."""
    return torch.tanh(1.5 * x) - 0.3 + 1e-3 * t.to(x.dtype).reshape([-1] + [1] * (x.ndim - 1))


def toy_grad(x: Tensor, t: Tensor) -> Tensor:
    return torch.cos(x) * 0.5


# An independent NumPy re-implementation of the official DDIM loops (official PDAE code, diffusion/ddim.py):
# respaced betas rebuilt from alpha_bar, then the DDIM class's tables and loop indices, as the official code does it.
def reference_ddim(x: np.ndarray, sch: Schedule, steps: int, convention: str, invert: bool,
                   shift: bool, stop_fraction: float = 0.0) -> tuple[np.ndarray, list[int]]:
    alpha_bar = sch.alpha_bar.numpy()
    if convention == "paper":
        stride = next(s for s in range(1, 1000) if len(range(0, 1000, s)) == steps)
        use = list(range(0, 1000, stride))
    else:
        use = sorted({int(v) for v in np.linspace(0, 999, steps + 1)})
    betas, last = [], 1.0
    for tau in use:
        betas.append(1 - alpha_bar[tau] / last)
        last = alpha_bar[tau]
    ac = np.cumprod(1 - np.array(betas))
    ac_prev, ac_next = np.append(1.0, ac[:-1]), np.append(ac[1:], 0.0)
    n = len(use) if convention == "paper" else len(use) - 1
    order = list(range(n)) if invert else (list(reversed(range(n))) if convention == "paper"
                                           else list(reversed(range(1, n + 1))))
    stop_step = int(stop_fraction * n)
    called = []
    for i in order:
        tau = use[i]
        called.append(tau)
        tt = torch.full((x.shape[0],), tau)
        xt = torch.from_numpy(x)
        eps = toy_eps(xt, tt).numpy()
        on = i >= stop_step if convention == "paper" else i - 1 >= stop_step
        if shift and (invert or on):
            eps = eps - math.sqrt(1 - ac[i]) * toy_grad(xt, tt).numpy()
        x0 = np.clip(np.sqrt(1 / ac[i]) * x - np.sqrt(1 / ac[i] - 1) * eps, -1, 1)
        eps = (np.sqrt(1 / ac[i]) * x - x0) / np.sqrt(1 / ac[i] - 1)
        target = ac_next[i] if invert else ac_prev[i]
        x = np.sqrt(target) * x0 + np.sqrt(1 - target) * eps
    return x, called


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("steps", [10, 20])
def test_ddim_matches_official_loop_reimplementation(sch: Schedule, convention: str, steps: int) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 4, 4, generator=gen, dtype=torch.float64) * 1.5
    shift_fn = lambda x_t, t: (toy_eps(x_t, t), toy_grad(x_t, t))  # noqa: E731
    for invert in (False, True):
        for shift in (False, True):
            expected, taus = reference_ddim(x.numpy(), sch, steps, convention, invert, shift, stop_fraction=0.3)
            seen: list[int] = []
            kw = dict(convention=convention, shift_fn=shift_fn if shift else None,
                      callback=lambda d, seen=seen: seen.append(int(d["t"][0])))
            if invert:
                got = ddim_invert(toy_eps, x, sch, steps, **kw)
            else:
                got = ddim_sample(toy_eps, x, sch, steps, stop_fraction=0.3, **kw)
            assert seen == taus
            np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-10)


def test_ddim_plan_endpoints(sch: Schedule) -> None:
    ab = sch.alpha_bar
    paper = ddim_plan(sch, 100, "paper", invert=False)
    assert len(paper) == 100 and paper[0] == (990, ab[980].item()) and paper[-1] == (0, 1.0)
    paper_inv = ddim_plan(sch, 100, "paper", invert=True)
    assert paper_inv[0] == (0, ab[10].item()) and paper_inv[-1] == (990, 0.0)
    cur = ddim_plan(sch, 100, "current", invert=False)
    assert len(cur) == 100 and cur[0] == (999, ab[989].item()) and cur[-1] == (9, ab[0].item())
    cur_inv = ddim_plan(sch, 100, "current", invert=True)
    assert cur_inv[0] == (0, ab[9].item()) and cur_inv[-1] == (989, ab[999].item())
    assert len(ddim_plan(sch, 1000, "current", invert=False)) == 999


# Round trips with an analytic eps (docs/protocol.md §1.5).


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("shape", [(4, 3, 8, 8), (5, 16)])
def test_invert_then_sample_recovers_point_mass(sch: Schedule, convention: str, shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(1)
    x0 = torch.rand(shape, generator=gen, dtype=torch.float64) * 1.8 - 0.9
    eps_fn = point_mass_eps(sch, x0)
    x_T = ddim_invert(eps_fn, x0, sch, 50, convention=convention)
    # The noise direction e = (x - sqrt(ab) x0) / sqrt(1 - ab) is constant along the exact ODE.
    ab0 = sch.alpha_bar[0].item()
    e0 = x0 * (1 - math.sqrt(ab0)) / math.sqrt(1 - ab0)
    ab_end = 0.0 if convention == "paper" else sch.alpha_bar[999].item()
    torch.testing.assert_close(x_T, math.sqrt(ab_end) * x0 + math.sqrt(1 - ab_end) * e0, rtol=0, atol=1e-10)
    torch.testing.assert_close(ddim_sample(eps_fn, x_T, sch, 50, convention=convention), x0, rtol=0, atol=1e-10)


def test_current_convention_round_trip_is_exact_off_the_data_point(sch: Schedule) -> None:
    # "current" ends sampling at x_{tau_0}, so any start (not only x0*) is recovered exactly.
    gen = torch.Generator().manual_seed(2)
    x0_star = torch.randn(6, 10, generator=gen, dtype=torch.float64)
    start = x0_star + 0.5 * torch.randn(6, 10, generator=gen, dtype=torch.float64)
    eps_fn = point_mass_eps(sch, x0_star)
    x_T = ddim_invert(eps_fn, start, sch, 20, convention="current", clip_x0=False)
    back = ddim_sample(eps_fn, x_T, sch, 20, convention="current", clip_x0=False)
    torch.testing.assert_close(back, start, rtol=0, atol=1e-10)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_invert_then_sample_gaussian_data_converges_with_steps(sch: Schedule, convention: str) -> None:
    gen = torch.Generator().manual_seed(3)
    x0 = 0.5 * torch.randn(256, 8, generator=gen, dtype=torch.float64)
    eps_fn = gaussian_eps(sch, 0.5)
    errors = []
    for steps in (10, 100, 1000):
        x_T = ddim_invert(eps_fn, x0, sch, steps, convention=convention, clip_x0=False)
        back = ddim_sample(eps_fn, x_T, sch, steps, convention=convention, clip_x0=False)
        errors.append((back - x0).abs().max().item())
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.02
    assert x_T.std().item() == pytest.approx(1.0, abs=0.01)  # inferred x_T of Gaussian data is ~ N(0, I)


# The PDAE shift in the samplers.


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_zero_gradient_reproduces_plain_ddim_bit_for_bit(sch: Schedule, convention: str) -> None:
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 8, 8, generator=gen)
    zero_shift = lambda x_t, t: (toy_eps(x_t, t), torch.zeros_like(x_t))  # noqa: E731
    plain = ddim_sample(toy_eps, x, sch, 20, convention=convention)
    assert torch.equal(ddim_sample(toy_eps, x, sch, 20, convention=convention, shift_fn=zero_shift), plain)
    inv = ddim_invert(toy_eps, x.clamp(-1, 1), sch, 20, convention=convention)
    assert torch.equal(
        ddim_invert(toy_eps, x.clamp(-1, 1), sch, 20, convention=convention, shift_fn=zero_shift), inv
    )


def test_zero_gradient_reproduces_plain_ddpm_bit_for_bit(sch: Schedule) -> None:
    x = torch.randn(2, 5, generator=torch.Generator().manual_seed(5))
    zero_shift = lambda x_t, t: (toy_eps(x_t, t), torch.zeros_like(x_t))  # noqa: E731
    plain = ddpm_sample(toy_eps, x, sch, generator=torch.Generator().manual_seed(6))
    shifted = ddpm_sample(toy_eps, x, sch, shift_fn=zero_shift, generator=torch.Generator().manual_seed(6))
    assert torch.equal(plain, shifted)


class CallCounter:
    def __init__(self) -> None:
        self.eps_t: list[int] = []
        self.shift_t: list[int] = []

    def eps_fn(self, x: Tensor, t: Tensor) -> Tensor:
        self.eps_t.append(int(t[0]))
        return torch.zeros_like(x)

    def shift_fn(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        self.shift_t.append(int(t[0]))
        return torch.zeros_like(x), torch.ones_like(x)


@pytest.mark.parametrize(
    "convention,steps,stop,expected_off",
    [("paper", 10, 0.3, 3), ("paper", 100, 0.3, 30), ("current", 100, 0.3, 30), ("current", 1000, 0.3, 299),
     ("paper", 50, 0.0, 0), ("current", 10, 1.0, 10)],
)
def test_stop_fraction_switches_shift_off_for_last_steps(
    sch: Schedule, convention: str, steps: int, stop: float, expected_off: int
) -> None:
    calls = CallCounter()
    ddim_sample(calls.eps_fn, torch.zeros(1, 2), sch, steps, convention=convention,
                shift_fn=calls.shift_fn, stop_fraction=stop)
    n = len(ddim_plan(sch, steps, convention, invert=False))
    assert len(calls.eps_t) == expected_off and len(calls.shift_t) == n - expected_off
    assert all(s > e for s in calls.shift_t for e in calls.eps_t)  # the shift-free steps are the lowest t
    calls_inv = CallCounter()
    ddim_invert(calls_inv.eps_fn, torch.zeros(1, 2), sch, steps, convention=convention, shift_fn=calls_inv.shift_fn)
    assert calls_inv.eps_t == [] and len(calls_inv.shift_t) == n


def test_ddpm_stop_fraction_call_counts(sch: Schedule) -> None:
    calls = CallCounter()
    ddpm_sample(calls.eps_fn, torch.zeros(1, 2), sch, shift_fn=calls.shift_fn, stop_fraction=0.3,
                generator=torch.Generator().manual_seed(0))
    assert calls.eps_t == list(range(299, -1, -1)) and calls.shift_t == list(range(999, 299, -1))


def test_ddim_shift_uses_sqrt_one_minus_alpha_bar_and_scale(sch: Schedule) -> None:
    grad = torch.full((1, 1), 0.2, dtype=torch.float64)
    shift_fn = lambda x_t, t: (toy_eps(x_t, t), grad.expand_as(x_t))  # noqa: E731

    def folded(x_t: Tensor, t: Tensor) -> Tensor:
        return toy_eps(x_t, t) - 2.5 * (1 - sch.alpha_bar[t]).sqrt().reshape(-1, 1) * 0.2

    x = torch.tensor([[0.3], [-0.4]], dtype=torch.float64)
    got = ddim_sample(toy_eps, x, sch, 10, shift_fn=shift_fn, shift_scale=2.5, clip_x0=False)
    torch.testing.assert_close(got, ddim_sample(folded, x, sch, 10, clip_x0=False), rtol=0, atol=1e-12)


def test_ddpm_shift_is_posterior_variance_mean_shift(sch: Schedule) -> None:
    # With a constant G the sampler must use eps + scale * shift_coef_t * G, i.e. mean + scale * beta~_t * G.
    grad_value = 0.3
    shift_fn = lambda x_t, t: (toy_eps(x_t, t), torch.full_like(x_t, grad_value))  # noqa: E731
    coef = g.shift_coef(sch)

    def folded(x_t: Tensor, t: Tensor) -> Tensor:
        return toy_eps(x_t, t) + 0.5 * coef[t].reshape(-1, 1) * grad_value

    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    got = ddpm_sample(toy_eps, x, sch, shift_fn=shift_fn, shift_scale=0.5, generator=torch.Generator().manual_seed(8))
    want = ddpm_sample(folded, x, sch, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


# DDPM (docs/protocol.md §1.7).


def test_ddpm_converges_to_point_mass(sch: Schedule) -> None:
    gen = torch.Generator().manual_seed(9)
    x0 = torch.rand(4, 3, 4, 4, generator=gen) * 2 - 1
    x_T = torch.randn(4, 3, 4, 4, generator=gen)
    out = ddpm_sample(point_mass_eps(sch, x0), x_T, sch, generator=gen)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-5)


def test_ddpm_gaussian_data_variance_and_per_sample_generators(sch: Schedule) -> None:
    x_T = torch.randn(4000, 1, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    out = ddpm_sample(gaussian_eps(sch, 0.5), x_T, sch, generator=torch.Generator().manual_seed(11))
    assert out.std().item() == pytest.approx(0.5, rel=0.05) and abs(out.mean().item()) < 0.03
    # One generator per sample: a sample's noise does not depend on the rest of the batch.
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    eps_fn = gaussian_eps(sch, 0.5)
    pair = ddpm_sample(eps_fn, x_T[:2], sch, generator=gens([1, 2]))
    single = ddpm_sample(eps_fn, x_T[1:2], sch, generator=gens([2]))
    torch.testing.assert_close(pair[1:2], single, rtol=0, atol=1e-12)


# Interpolation helpers (docs/protocol.md §1.5 trajectory interpolation, §5.4).


def test_slerp_endpoints_and_norm() -> None:
    gen = torch.Generator().manual_seed(12)
    a, b = torch.randn(3, 3, 8, 8, generator=gen), torch.randn(3, 3, 8, 8, generator=gen)
    torch.testing.assert_close(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, b, 1.0), b)
    # Orthogonal vectors of equal norm keep their norm along the arc; lerp shrinks it by 1/sqrt(2) at 0.5.
    u = torch.tensor([[3.0, 0.0, 0.0]])
    v = torch.tensor([[0.0, 3.0, 0.0]])
    for lam in (0.1, 0.25, 0.5, 0.9):
        mid = slerp(u, v, lam)
        assert mid.norm().item() == pytest.approx(3.0, rel=1e-6)
        angle = lam * math.pi / 2
        torch.testing.assert_close(mid, torch.tensor([[3 * math.cos(angle), 3 * math.sin(angle), 0.0]]))
    assert lerp(u, v, 0.5).norm().item() == pytest.approx(3.0 / math.sqrt(2), rel=1e-6)
    # Per-sample lambda and the parallel fallback (sin(theta) = 0 -> lerp).
    lam = torch.tensor([0.0, 0.5, 1.0])
    out = slerp(a, b, lam)
    torch.testing.assert_close(out[0], a[0])
    torch.testing.assert_close(out[2], b[2])
    torch.testing.assert_close(slerp(a, 2 * a, 0.5), 1.5 * a)


def test_mix_shift_fns_endpoints() -> None:
    f1 = lambda x, t: (x + 1.0, torch.sin(x))  # noqa: E731
    f2 = lambda x, t: (x - 1.0, torch.cos(x))  # noqa: E731
    x, t = torch.randn(2, 4, generator=torch.Generator().manual_seed(13)), torch.tensor([5, 5])
    for lam, expected in ((0.0, torch.sin(x)), (1.0, torch.cos(x)), (0.25, 0.75 * torch.sin(x) + 0.25 * torch.cos(x))):
        eps, grad = mix_shift_fns(f1, f2, lam)(x, t)
        assert torch.equal(eps, x + 1.0)
        torch.testing.assert_close(grad, expected, rtol=0, atol=1e-7)
    assert torch.equal(mix_shift_fns(f1, f2, 0.0)(x, t)[1], torch.sin(x))
    assert torch.equal(mix_shift_fns(f1, f2, 1.0)(x, t)[1], torch.cos(x))


# Batching, dtype and errors.


def test_dtype_preserved_and_t_passed_as_long(sch: Schedule) -> None:
    seen = []

    def eps_fn(x: Tensor, t: Tensor) -> Tensor:
        seen.append((t.dtype, t.shape, t.device))
        return torch.zeros_like(x)

    for dtype in (torch.float32, torch.float64):
        out = ddim_sample(eps_fn, torch.randn(3, 2, dtype=dtype), sch, 10)
        assert out.dtype == dtype and out.shape == (3, 2)
    assert set(seen) == {(torch.long, torch.Size([3]), torch.device("cpu"))}


def test_sampler_bad_input_messages(sch: Schedule) -> None:
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="stop_fraction"):
        ddim_sample(toy_eps, x, sch, 10, stop_fraction=1.5)
    with pytest.raises(ValueError, match="convention"):
        ddim_sample(toy_eps, x, sch, 10, convention="new")
    with pytest.raises(ValueError, match="shift_fn must return"):
        ddim_sample(toy_eps, x, sch, 10, shift_fn=lambda x_t, t: x_t)
    with pytest.raises(ValueError, match="eps_fn returned shape"):
        ddim_sample(lambda x_t, t: x_t[:, :1], x, sch, 10)
    with pytest.raises(ValueError, match="per-sample generators"):
        ddpm_sample(toy_eps, x, sch, generator=[torch.Generator()])
    assert respace_timesteps(sch.T, 10) == [tau for tau, _ in reversed(ddim_plan(sch, 10, "paper", False))]
