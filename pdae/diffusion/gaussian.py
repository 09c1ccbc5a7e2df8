"""Gaussian identities of the discrete DDPM (Ho et al., 2020) and the PDAE mean shift (Zhang et al., 2022).

Pure functions of (schedule, tensors), docs/protocol.md §1.2-1.5. Notation (diffusers style):

    sch                 -> the `Schedule` (beta_t, alpha_t, alpha_bar_t, ... as float64 [T] tables)
    t                   -> LongTensor [N] of original timestep indices in {0, ..., T-1}
    x0, x_t             -> x_0 (data) and x_t (noisy sample), any shape [N, ...] ([N, C, H, W] or [N, D])
    eps                 -> epsilon (true noise) or epsilon_theta(x_t, t) (predicted noise)
    grad                -> G_psi(x_t, z, t), PDAE's gradient estimator output (same shape as x_t)
    shift_coef          -> -sqrt(alpha_t) (1 - alpha_bar_{t-1}) / sqrt(1 - alpha_bar_t)  (training, DDPM)
    ddim_shift_coef     -> -sqrt(1 - alpha_bar_t)                                     (DDIM, paper Eq. 6)

Coefficients are computed in float64 from the schedule, then cast to the dtype of the tensor they
multiply and moved to the device of `t`; the arithmetic on the tensors runs in their own dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pdae.diffusion.schedule import Schedule

__all__ = [
    "ddim_shift_coef",
    "ddim_shift_eps",
    "eps_from_x0",
    "eps_mean",
    "extract",
    "pdae_loss_weight",
    "posterior_mean",
    "posterior_variance",
    "q_sample",
    "shift_coef",
    "shift_eps",
    "snr",
    "x0_from_eps",
]

# PDAE loss-weight exponent, paper Eq. 10 (hard-coded `gamma = 0.1` in official PDAE code, gaussian_diffusion.py).
PDAE_GAMMA = 0.1


# Per-sample coefficient lookup (guided-diffusion `_extract_into_tensor`).
def extract(arr: Tensor, t: Tensor, shape: Sequence[int], *, dtype: torch.dtype | None = None) -> Tensor:
    """arr[t] reshaped to [N, 1, ..., 1] so that it broadcasts against a tensor of `shape`.

    Args:
        arr: [T] table (float64 schedule entry).
        t: [N] integer timesteps; the result lives on t's device.
        shape: shape [N, ...] of the tensor the result multiplies.
        dtype: cast of the result (done on the table before indexing); default: arr's dtype.
    Returns:
        [N, 1, ..., 1] with len(shape) dimensions.
    """
    if t.ndim != 1 or t.dtype.is_floating_point or t.dtype == torch.bool:
        raise ValueError(f"t must be a 1-D integer tensor of timesteps, got dtype {t.dtype} shape {tuple(t.shape)}")
    if len(shape) == 0 or t.shape[0] != shape[0]:
        raise ValueError(f"t has {t.shape[0]} entries but the batch shape is {tuple(shape)}")
    table = arr.to(dtype=dtype or arr.dtype).to(device=t.device)
    return table.index_select(0, t).reshape([t.shape[0]] + [1] * (len(shape) - 1))


# Forward process q(x_t | x_0), DDPM Eq. 4.
def q_sample(sch: Schedule, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps.  x0, noise: [N, ...] -> [N, ...]."""
    a = extract(sch.alpha_bar.sqrt(), t, x0.shape, dtype=x0.dtype)
    b = extract((1.0 - sch.alpha_bar).sqrt(), t, x0.shape, dtype=x0.dtype)
    return a * x0 + b * noise


# Posterior mean of q(x_{t-1} | x_t, x_0), DDPM Eq. 7.
def posterior_mean(sch: Schedule, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
    """mu~_t = beta_t sqrt(alpha_bar_{t-1}) / (1 - alpha_bar_t) x_0
    + (1 - alpha_bar_{t-1}) sqrt(alpha_t) / (1 - alpha_bar_t) x_t.

    x0, x_t: [N, ...] -> [N, ...].
    """
    coef_x0 = sch.betas * sch.alpha_bar_prev.sqrt() / (1.0 - sch.alpha_bar)
    coef_xt = (1.0 - sch.alpha_bar_prev) * sch.alphas.sqrt() / (1.0 - sch.alpha_bar)
    return (
        extract(coef_x0, t, x_t.shape, dtype=x_t.dtype) * x0
        + extract(coef_xt, t, x_t.shape, dtype=x_t.dtype) * x_t
    )


# Posterior variance beta-tilde_t, DDPM Eq. 7 (PDAE's "fixed small" Sigma, docs/protocol.md §1.3).
def posterior_variance(
    sch: Schedule, t: Tensor, shape: Sequence[int], *, dtype: torch.dtype = torch.float32
) -> Tensor:
    """beta-tilde_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t), as [N, 1, ..., 1] on t's device."""
    return extract(sch.posterior_variance, t, shape, dtype=dtype)


# x_0 prediction from an eps prediction, docs/protocol.md §1.2.
def x0_from_eps(sch: Schedule, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """x^_0 = sqrt(1/alpha_bar_t) x_t - sqrt(1/alpha_bar_t - 1) eps.  [N, ...] -> [N, ...]."""
    a = extract((1.0 / sch.alpha_bar).sqrt(), t, x_t.shape, dtype=x_t.dtype)
    b = extract((1.0 / sch.alpha_bar - 1.0).sqrt(), t, x_t.shape, dtype=x_t.dtype)
    return a * x_t - b * eps


# eps implied by an x_0 prediction (inverse of x0_from_eps), docs/protocol.md §1.5 step 2.
def eps_from_x0(sch: Schedule, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
    """eps = (sqrt(1/alpha_bar_t) x_t - x_0) / sqrt(1/alpha_bar_t - 1).  [N, ...] -> [N, ...]."""
    a = extract((1.0 / sch.alpha_bar).sqrt(), t, x_t.shape, dtype=x_t.dtype)
    b = extract((1.0 / sch.alpha_bar - 1.0).sqrt(), t, x_t.shape, dtype=x_t.dtype)
    return (a * x_t - x0) / b


# eps-parameterised reverse mean mu_theta, DDPM Eq. 11.
def eps_mean(sch: Schedule, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """mu_theta = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t).  [N, ...] -> [N, ...]."""
    a = extract(1.0 / sch.alphas.sqrt(), t, x_t.shape, dtype=x_t.dtype)
    b = extract(sch.betas / ((1.0 - sch.alpha_bar).sqrt() * sch.alphas.sqrt()), t, x_t.shape, dtype=x_t.dtype)
    return a * x_t - b * eps


# Signal-to-noise ratio, paper §3.4 (Eq. 10).
def snr(sch: Schedule) -> Tensor:
    """SNR(t) = alpha_bar_t / (1 - alpha_bar_t); float64 [T]."""
    return sch.alpha_bar / (1.0 - sch.alpha_bar)


# PDAE shift coefficient: paper Eq. 7 with Sigma = beta-tilde; official PDAE code, gaussian_diffusion.py `shift_coef`.
def shift_coef(sch: Schedule) -> Tensor:
    """shift_coef_t = -sqrt(alpha_t) (1 - alpha_bar_{t-1}) / sqrt(1 - alpha_bar_t); float64 [T], zero at t=0.

    With eps^ = eps_theta + shift_coef_t G, mu_theta(eps^) = mu_theta(eps_theta) + beta-tilde_t G
    (the classifier-guidance mean shift, paper Eq. 5).
    """
    return -sch.alphas.sqrt() * (1.0 - sch.alpha_bar_prev) / (1.0 - sch.alpha_bar).sqrt()


# DDIM shift coefficient, paper Eq. 6 (score-conditioning trick; official PDAE code, diffusion/ddim.py).
def ddim_shift_coef(sch: Schedule) -> Tensor:
    """ddim_shift_coef_t = -sqrt(1 - alpha_bar_t); float64 [T]."""
    return -(1.0 - sch.alpha_bar).sqrt()


# PDAE loss weight, paper Eq. 10.
def pdae_loss_weight(sch: Schedule, gamma: float = PDAE_GAMMA) -> Tensor:
    """lambda_t = (1/(1+SNR))^(1-gamma) (SNR/(1+SNR))^gamma = SNR^gamma / (1 + SNR); float64 [T]."""
    s = snr(sch)
    return s**gamma / (1.0 + s)


# Combined PDAE noise prediction for training and DDPM sampling, docs/protocol.md §1.3 and §1.7.
def shift_eps(sch: Schedule, t: Tensor, eps: Tensor, grad: Tensor, scale: float = 1.0) -> Tensor:
    """eps^ = eps_theta + scale * shift_coef_t * G.  eps, grad: [N, ...] -> [N, ...]."""
    return eps + extract(shift_coef(sch) * scale, t, eps.shape, dtype=eps.dtype) * grad


# Combined PDAE noise prediction for DDIM sampling and encoding, paper Eq. 6 (docs/protocol.md §1.5).
def ddim_shift_eps(sch: Schedule, t: Tensor, eps: Tensor, grad: Tensor, scale: float = 1.0) -> Tensor:
    """eps^ = eps_theta - scale * sqrt(1 - alpha_bar_t) * G.  eps, grad: [N, ...] -> [N, ...]."""
    return eps - extract((1.0 - sch.alpha_bar).sqrt() * scale, t, eps.shape, dtype=eps.dtype) * grad
