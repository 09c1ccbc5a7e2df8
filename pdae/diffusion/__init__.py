"""Diffusion math of PDAE (Zhang et al., NeurIPS 2022): schedules, Gaussian identities, samplers.

See docs/protocol.md §1.
"""

from pdae.diffusion.gaussian import (
    ddim_shift_coef,
    ddim_shift_eps,
    eps_from_x0,
    eps_mean,
    extract,
    pdae_loss_weight,
    posterior_mean,
    posterior_variance,
    q_sample,
    shift_coef,
    shift_eps,
    snr,
    x0_from_eps,
)
from pdae.diffusion.sampling import (
    EpsFn,
    ShiftFn,
    ddim_invert,
    ddim_plan,
    ddim_sample,
    ddim_step,
    ddpm_sample,
    lerp,
    mix_shift_fns,
    slerp,
)
from pdae.diffusion.schedule import (
    Schedule,
    const_betas,
    cosine_betas,
    linear_betas,
    respace_timesteps,
)

__all__ = [
    "EpsFn",
    "Schedule",
    "ShiftFn",
    "const_betas",
    "cosine_betas",
    "ddim_invert",
    "ddim_plan",
    "ddim_sample",
    "ddim_shift_coef",
    "ddim_shift_eps",
    "ddim_step",
    "ddpm_sample",
    "eps_from_x0",
    "eps_mean",
    "extract",
    "lerp",
    "linear_betas",
    "mix_shift_fns",
    "pdae_loss_weight",
    "posterior_mean",
    "posterior_variance",
    "q_sample",
    "respace_timesteps",
    "shift_coef",
    "shift_eps",
    "slerp",
    "snr",
    "x0_from_eps",
]
