"""DDIM sampling, DDIM inversion and DDPM ancestral sampling, with PDAE's mean shift (Zhang et al., 2022).

One sampler family with one signature (docs/protocol.md §1.5-1.7). The plain DPM, PDAE and Diff-AE only differ
in the callables they hand over:

    eps_fn(x_t, t) -> eps                 plain or conditional eps prediction (DPM, Diff-AE, latent DPM)
    shift_fn(x_t, t) -> (eps, grad)       PDAE: eps_theta and G_psi(x_t, z, t) from one shared network pass

Notation (diffusers style):

    x_T, x0             -> x_T (noise / inferred latent) and x_0 (data), [N, ...] (images [N, C, H, W], latents [N, D])
    t                   -> LongTensor [N] of ORIGINAL timesteps in {0, ..., T-1}, on x's device
    tau                 -> respaced timesteps tau_0 < tau_1 < ... (`respace_timesteps`, docs/protocol.md §1.6)
    i                   -> respaced index; k -> index of the step in execution order (0 = first step run)
    eps_hat             -> eps_theta - shift_scale sqrt(1 - alpha_bar_tau) G         (DDIM, paper Eq. 6)
                           eps_theta + shift_scale shift_coef_t G                    (DDPM, docs/protocol.md §1.7)
    x0_hat, eps_tilde   -> x_0 predicted from eps_hat (clamped to [-1, 1] if clip_x0) and the eps re-derived from it
    stop_fraction       -> official `stop_percent`: no shift for the last int(stop_fraction * N) steps run
    eta                 -> 0 (deterministic DDIM) throughout

`convention` selects the DDIM loop of docs/protocol.md §1.6: "paper" (guided-diffusion/Diff-AE and PDAE at paper
time) or "current" (official PDAE code since 2023-02-26). Callbacks receive a dict with keys "i" (k),
"t" (LongTensor [N]), "x" (the state after the step), "x0" (x0_hat of the step) and "shift" (bool).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from pdae.diffusion.gaussian import ddim_shift_eps, eps_from_x0, eps_mean, shift_eps, x0_from_eps
from pdae.diffusion.schedule import Schedule, respace_timesteps

__all__ = [
    "Callback",
    "EpsFn",
    "ShiftFn",
    "ddim_invert",
    "ddim_plan",
    "ddim_sample",
    "ddim_step",
    "ddpm_sample",
    "lerp",
    "mix_shift_fns",
    "slerp",
]

EpsFn = Callable[[Tensor, Tensor], Tensor]
ShiftFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
Callback = Callable[[dict[str, Any]], None]


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")


def _full_t(x: Tensor, timestep: int) -> Tensor:
    return torch.full((x.shape[0],), timestep, dtype=torch.long, device=x.device)


def _shifted_steps(num_steps: int, stop_fraction: float) -> int:
    """How many of `num_steps` steps (counted from the first one run) use the shift (docs/protocol.md §1.5)."""
    return num_steps - int(stop_fraction * num_steps)


# The noise prediction of one step: plain eps_fn, or PDAE's eps_theta combined with G.
def _predict_eps(
    sch: Schedule,
    eps_fn: EpsFn,
    shift_fn: ShiftFn | None,
    x: Tensor,
    t: Tensor,
    use_shift: bool,
    shift_scale: float,
    ddim: bool,
) -> Tensor:
    if shift_fn is None or not use_shift:
        eps = eps_fn(x, t)
        if eps.shape != x.shape:
            raise ValueError(f"eps_fn returned shape {tuple(eps.shape)} for input shape {tuple(x.shape)}")
        return eps.to(x.dtype)
    out = shift_fn(x, t)
    if not isinstance(out, tuple) or len(out) != 2:
        raise ValueError("shift_fn must return a tuple (eps_theta, G)")
    eps, grad = out
    if eps.shape != x.shape or grad.shape != x.shape:
        raise ValueError(
            f"shift_fn returned shapes {tuple(eps.shape)}, {tuple(grad.shape)} for input shape {tuple(x.shape)}"
        )
    eps, grad = eps.to(x.dtype), grad.to(x.dtype)
    if ddim:
        return ddim_shift_eps(sch, t, eps, grad, shift_scale)
    return shift_eps(sch, t, eps, grad, shift_scale)


# The DDIM step order of docs/protocol.md §1.6, for both conventions and both directions.
def ddim_plan(sch: Schedule, steps: int, convention: str, invert: bool) -> list[tuple[int, float]]:
    """(tau, alpha_bar_target) for every DDIM step, in execution order.

    The network is evaluated at x_tau; the step moves x to the noise level alpha_bar_target.
    paper sampling:   i = N-1 ... 0, target alpha_bar_{tau_{i-1}}, and 1 at i = 0 (output = x0_hat);
    paper inversion:  i = 0 ... N-1 from the data taken as x at tau_0, target alpha_bar_{tau_{i+1}}, 0 at the end;
    current sampling: i = N ... 1, target alpha_bar_{tau_{i-1}} (output = x at tau_0, N = len(tau) - 1);
    current inversion: i = 0 ... N-1, target alpha_bar_{tau_{i+1}} (ends at tau_N = T-1).
    """
    taus = respace_timesteps(sch.T, steps, convention)
    ab = [float(sch.alpha_bar[tau]) for tau in taus]
    if convention == "paper":
        if invert:
            return [(taus[i], ab[i + 1] if i + 1 < len(taus) else 0.0) for i in range(len(taus))]
        return [(taus[i], ab[i - 1] if i > 0 else 1.0) for i in reversed(range(len(taus)))]
    if invert:
        return [(taus[i], ab[i + 1]) for i in range(len(taus) - 1)]
    return [(taus[i], ab[i - 1]) for i in reversed(range(1, len(taus)))]


# One deterministic DDIM update (eta = 0), docs/protocol.md §1.5 steps 2-3; also the inversion step (paper Eq. 8).
def ddim_step(
    sch: Schedule, x: Tensor, t: Tensor, eps: Tensor, alpha_bar_target: float, clip_x0: bool = True
) -> tuple[Tensor, Tensor]:
    """x_target = sqrt(alpha_bar_target) x0_hat + sqrt(1 - alpha_bar_target) eps_tilde.

    x0_hat = x0_from_eps(x, t, eps), clamped to [-1, 1] if clip_x0, in which case eps_tilde is re-derived from
    the clamped x0_hat (otherwise eps_tilde = eps). x, eps: [N, ...]; t: [N] original timesteps.

    Returns:
        (x_target, x0_hat), both [N, ...].
    """
    x0_hat = x0_from_eps(sch, x, t, eps)
    if clip_x0:
        x0_hat = x0_hat.clamp(-1.0, 1.0)
        eps = eps_from_x0(sch, x, t, x0_hat)
    x_target = math.sqrt(alpha_bar_target) * x0_hat + math.sqrt(1.0 - alpha_bar_target) * eps
    return x_target, x0_hat


def _ddim_loop(
    eps_fn: EpsFn,
    x: Tensor,
    sch: Schedule,
    plan: list[tuple[int, float]],
    shift_fn: ShiftFn | None,
    shifted_steps: int,
    shift_scale: float,
    clip_x0: bool,
    callback: Callback | None,
) -> Tensor:
    for k, (tau, alpha_bar_target) in enumerate(plan):
        t = _full_t(x, tau)
        use_shift = shift_fn is not None and k < shifted_steps
        eps = _predict_eps(sch, eps_fn, shift_fn, x, t, use_shift, shift_scale, ddim=True)
        x, x0_hat = ddim_step(sch, x, t, eps, alpha_bar_target, clip_x0)
        if callback is not None:
            callback({"i": k, "t": t, "x": x, "x0": x0_hat, "shift": use_shift})
    return x


# DDIM sampling (Song et al., 2021) with PDAE's shift (paper Eq. 6), docs/protocol.md §1.5-1.6.
def ddim_sample(
    eps_fn: EpsFn,
    x_T: Tensor,
    schedule: Schedule,
    steps: int,
    *,
    convention: str = "paper",
    shift_fn: ShiftFn | None = None,
    stop_fraction: float = 0.0,
    shift_scale: float = 1.0,
    clip_x0: bool = True,
    callback: Callback | None = None,
) -> Tensor:
    """Deterministic DDIM from x_T ([N, ...]) to x_0 ([N, ...]) in "ddim<steps>" respacing.

    With `shift_fn`, steps use eps_hat = eps_theta - shift_scale sqrt(1 - alpha_bar_tau) G (paper Eq. 6) and call
    `shift_fn` only; the last int(stop_fraction * N) steps (lowest t) call `eps_fn` instead. N is the number of
    steps actually run (`len(ddim_plan(...))`: `steps` for "paper", len(tau) - 1 for "current").
    """
    _check_fraction("stop_fraction", stop_fraction)
    plan = ddim_plan(schedule, steps, convention, invert=False)
    shifted = _shifted_steps(len(plan), stop_fraction)
    return _ddim_loop(eps_fn, x_T, schedule, plan, shift_fn, shifted, shift_scale, clip_x0, callback)


# DDIM inversion ("encoding", PDAE paper Eq. 8), docs/protocol.md §1.5-1.6.
def ddim_invert(
    eps_fn: EpsFn,
    x0: Tensor,
    schedule: Schedule,
    steps: int,
    *,
    convention: str = "paper",
    shift_fn: ShiftFn | None = None,
    shift_scale: float = 1.0,
    clip_x0: bool = True,
    callback: Callback | None = None,
) -> Tensor:
    """Run the DDIM ODE forward from data x0 ([N, ...]) to the inferred x_T ([N, ...]).

    With `shift_fn`, every step uses the shifted eps_hat (the official encoder has no stop fraction).
    """
    plan = ddim_plan(schedule, steps, convention, invert=True)
    return _ddim_loop(eps_fn, x0, schedule, plan, shift_fn, len(plan), shift_scale, clip_x0, callback)


def _noise_like(x: Tensor, generator: torch.Generator | Sequence[torch.Generator] | None) -> Tensor:
    """Standard normal noise shaped like x, drawn on each generator's own device, returned on x's device."""
    if generator is None:
        return torch.randn(x.shape, device=x.device, dtype=x.dtype)
    if isinstance(generator, torch.Generator):
        return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
    if len(generator) != x.shape[0]:
        raise ValueError(f"got {len(generator)} per-sample generators for a batch of {x.shape[0]}")
    return torch.stack(
        [torch.randn(x.shape[1:], generator=g, device=g.device, dtype=x.dtype).to(x.device) for g in generator]
    )


# Ancestral DDPM sampling (Ho et al., 2020) with PDAE's shift, docs/protocol.md §1.7.
def ddpm_sample(
    eps_fn: EpsFn,
    x_T: Tensor,
    schedule: Schedule,
    *,
    shift_fn: ShiftFn | None = None,
    stop_fraction: float = 0.0,
    shift_scale: float = 1.0,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Stochastic sampling over all T steps, t = T-1 ... 0, from x_T ([N, ...]) to x_0 ([N, ...]).

    x_{t-1} = mu_theta(x_t, eps_hat) + exp(0.5 posterior_log_variance_clipped_t) z ("fixed small" variance),
    no noise at t = 0, no clipping; eps_hat = eps_theta + shift_scale shift_coef_t G (= mean shift by
    beta-tilde_t G) while the shift is on (not for the last int(stop_fraction * T) steps). `generator` is one
    generator or one per sample (then the noise of a sample does not depend on the batch); noise is drawn on
    the generator's device and moved to x's, so a CPU generator gives the same samples on any device.
    """
    _check_fraction("stop_fraction", stop_fraction)
    shifted = _shifted_steps(schedule.T, stop_fraction)
    sigma = (0.5 * schedule.posterior_log_variance_clipped).exp()
    x = x_T
    for k, tau in enumerate(reversed(range(schedule.T))):
        t = _full_t(x, tau)
        use_shift = shift_fn is not None and k < shifted
        eps = _predict_eps(schedule, eps_fn, shift_fn, x, t, use_shift, shift_scale, ddim=False)
        mean = eps_mean(schedule, x, t, eps)
        x0_hat = x0_from_eps(schedule, x, t, eps) if callback is not None else None
        x = mean + float(sigma[tau]) * _noise_like(x, generator) if tau > 0 else mean
        if callback is not None:
            callback({"i": k, "t": t, "x": x, "x0": x0_hat, "shift": use_shift})
    return x


def _per_sample(lam: float | Tensor, ref: Tensor) -> float | Tensor:
    """A scalar, or a [N] tensor reshaped to [N, 1, ..., 1] against ref [N, ...]."""
    if isinstance(lam, Tensor) and lam.ndim == 1:
        return lam.to(device=ref.device, dtype=ref.dtype).reshape([-1] + [1] * (ref.ndim - 1))
    return lam


# Linear interpolation (Lerp of PDAE paper §4.4, Fig. 7).
def lerp(a: Tensor, b: Tensor, lam: float | Tensor) -> Tensor:
    """(1 - lam) a + lam b; lam a float or a [N] tensor (per sample). a, b: [N, ...]."""
    w = _per_sample(lam, a)
    return (1.0 - w) * a + w * b


# Spherical interpolation (Shoemake 1985), per sample, PDAE paper §4.4 (docs/protocol.md §5.4).
def slerp(a: Tensor, b: Tensor, lam: float | Tensor) -> Tensor:
    """sin((1-lam) theta)/sin(theta) a + sin(lam theta)/sin(theta) b, theta = arccos(<a, b>/(|a| |b|)).

    theta is computed per sample on the flattened vectors (in float64). Where sin(theta) is ~0 (parallel or
    anti-parallel samples) the result falls back to `lerp`. a, b: [N, ...]; lam a float or a [N] tensor.
    """
    if a.shape != b.shape:
        raise ValueError(f"slerp needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    a64, b64 = a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()
    cos = (a64 * b64).sum(1) / (a64.norm(dim=1) * b64.norm(dim=1))
    theta = torch.arccos(cos.clamp(-1.0, 1.0))  # [N]
    lam64 = torch.as_tensor(lam, dtype=torch.float64, device=a.device).expand_as(theta)
    sin = torch.sin(theta)
    safe = sin.abs() > 1e-7
    denom = torch.where(safe, sin, torch.ones_like(sin))
    wa = torch.where(safe, torch.sin((1.0 - lam64) * theta) / denom, 1.0 - lam64)
    wb = torch.where(safe, torch.sin(lam64 * theta) / denom, lam64)
    shape = [-1] + [1] * (a.ndim - 1)
    return wa.to(a.dtype).reshape(shape) * a + wb.to(a.dtype).reshape(shape) * b


# Trajectory interpolation of PDAE paper §4.4, Fig. 7 row 2 (official PDAE code, diffusion/ddim.py
# `shift_ddim_trajectory_interpolation`).
def mix_shift_fns(shift_fn_1: ShiftFn, shift_fn_2: ShiftFn, lam: float | Tensor) -> ShiftFn:
    """ShiftFn giving eps_theta of the first and G = (1 - lam) G_1 + lam G_2; lam a float or a [N] tensor."""

    def mixed(x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        eps, grad_1 = shift_fn_1(x_t, t)
        _, grad_2 = shift_fn_2(x_t, t)
        return eps, lerp(grad_1, grad_2, lam)

    return mixed
