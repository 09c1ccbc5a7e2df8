"""Noise schedules and DDIM timestep respacing for the discrete DDPM of Ho et al. (2020).

docs/protocol.md §1.1 (schedules, the tables derived from them) and §1.6 (the two "ddimN" respacing
conventions). Every table is float64 on the CPU; `pdae.diffusion.gaussian` casts what it reads to the
dtype and device of the tensors it works on.

Notation: `T` number of diffusion steps, `t` in {0, ..., T-1} (t = 0 is the first noisy step);
`betas` -> beta_t; `alphas` -> alpha_t = 1 - beta_t; `alpha_bar` -> alpha_bar_t = prod_{s<=t} alpha_s;
`alpha_bar_prev` -> alpha_bar_{t-1} (alpha_bar_{-1} := 1); `alpha_bar_next` -> alpha_bar_{t+1} (0 after the
end); `posterior_variance` -> beta-tilde_t.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "CONVENTIONS",
    "SCHEDULE_KINDS",
    "Schedule",
    "const_betas",
    "cosine_betas",
    "linear_betas",
    "respace_timesteps",
]

# Respacing conventions of docs/protocol.md §1.6: `paper` (guided-diffusion strides, paper-time PDAE code
# and Diff-AE), `current` (official PDAE code since 2023-02-26, linspace rule).
CONVENTIONS = ("paper", "current")

# Named schedules and the keyword parameters each one takes, with their defaults (docs/protocol.md §1.1).
SCHEDULE_KINDS: dict[str, dict[str, float]] = {
    "linear": {"start": 1.0e-4, "end": 0.02},
    "cosine": {"s": 0.008, "max_beta": 0.999},
    "const": {"beta": 0.008},
}


def _check_T(T: int) -> None:
    if isinstance(T, bool) or not isinstance(T, int) or T < 2:
        raise ValueError(f"number of diffusion steps T must be an integer >= 2, got {T!r}")


# Linear schedule of Ho et al. (2020) (numpy linspace, as in guided-diffusion and official PDAE code,
# diffusion/gaussian_diffusion.py).
def linear_betas(T: int = 1000, start: float = 1.0e-4, end: float = 0.02) -> Tensor:
    """beta_t = linspace(start, end, T); the schedule of every pre-trained DPM used here.

    Returns:
        float64 tensor [T].
    """
    _check_T(T)
    return torch.from_numpy(np.linspace(start, end, T, dtype=np.float64))


# Cosine schedule of Nichol & Dhariwal (2021), docs/protocol.md §1.1.
def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """beta_i = min(1 - f((i+1)/T) / f(i/T), max_beta) with f(u) = cos^2((u + s)/(1 + s) * pi/2).

    Returns:
        float64 tensor [T].
    """
    _check_T(T)

    def f(u: float) -> float:
        return math.cos((u + s) / (1.0 + s) * math.pi / 2.0) ** 2

    betas = [min(1.0 - f((i + 1) / T) / f(i / T), max_beta) for i in range(T)]
    return torch.tensor(betas, dtype=torch.float64)


# Constant schedule of the latent DPM (beta = 0.008 in PDAE and Diff-AE: official PDAE code,
# diffusion/gaussian_diffusion.py `latent_diffusion_config`; official Diff-AE code, templates_latent.py).
def const_betas(T: int, beta: float) -> Tensor:
    """beta_t = beta for every t.

    Returns:
        float64 tensor [T].
    """
    _check_T(T)
    return torch.full((T,), float(beta), dtype=torch.float64)


_BETA_FNS = {"linear": linear_betas, "cosine": cosine_betas, "const": const_betas}


# The tables of a discrete diffusion process, docs/protocol.md §1.1-1.2.
@dataclass(frozen=True, eq=False, repr=False)
class Schedule:
    """A beta schedule and every float64 table derived from it (CPU tensors, shape [T]).

    Build it with `Schedule(betas)` or `Schedule.from_name("linear")`. `kind` and `params` only record
    how it was made, so that `to_dict()` writes a short, exact description for config.json; a schedule
    made from raw betas has kind "custom" and serialises its betas.
    """

    betas: Tensor  # [T] float64
    kind: str = "custom"
    params: tuple[tuple[str, float], ...] = ()
    T: int = field(init=False)
    alphas: Tensor = field(init=False)  # [T] alpha_t = 1 - beta_t
    alpha_bar: Tensor = field(init=False)  # [T] prod_{s<=t} alpha_s
    alpha_bar_prev: Tensor = field(init=False)  # [T] alpha_bar_{t-1}, alpha_bar_{-1} = 1
    alpha_bar_next: Tensor = field(init=False)  # [T] alpha_bar_{t+1}, trailing 0
    posterior_variance: Tensor = field(init=False)  # [T] beta-tilde_t
    posterior_log_variance_clipped: Tensor = field(init=False)  # [T] log beta-tilde, entry 0 := entry 1

    def __post_init__(self) -> None:
        betas = torch.as_tensor(self.betas).detach().to(device="cpu", dtype=torch.float64).clone()
        if betas.ndim != 1 or betas.numel() < 2:
            raise ValueError(f"betas must be a 1-D sequence of length >= 2, got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must all lie in the open interval (0, 1)")

        # Tables of docs/protocol.md §1.1.
        alphas = 1.0 - betas
        alpha_bar = torch.cumprod(alphas, dim=0)
        one, zero = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
        alpha_bar_prev = torch.cat([one, alpha_bar[:-1]])
        alpha_bar_next = torch.cat([alpha_bar[1:], zero])

        # Posterior q(x_{t-1} | x_t, x_0) variance, DDPM Eq. 7.
        posterior_variance = betas * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
        posterior_log_variance_clipped = torch.log(
            torch.cat([posterior_variance[1:2], posterior_variance[1:]])
        )

        for name, value in (
            ("betas", betas),
            ("T", int(betas.numel())),
            ("alphas", alphas),
            ("alpha_bar", alpha_bar),
            ("alpha_bar_prev", alpha_bar_prev),
            ("alpha_bar_next", alpha_bar_next),
            ("posterior_variance", posterior_variance),
            ("posterior_log_variance_clipped", posterior_log_variance_clipped),
        ):
            object.__setattr__(self, name, value)

    @classmethod
    def from_name(cls, kind: str, T: int = 1000, **kw: float) -> Schedule:
        """Named schedule: "linear" (start, end), "cosine" (s, max_beta), "const" (beta, default 0.008)."""
        if kind not in SCHEDULE_KINDS:
            raise ValueError(f"unknown schedule kind {kind!r}; expected one of {sorted(SCHEDULE_KINDS)}")
        defaults = SCHEDULE_KINDS[kind]
        for key in kw:
            if key not in defaults:
                raise ValueError(f"unknown parameter {key!r} for schedule {kind!r}; expected {sorted(defaults)}")
        params = {key: float(kw.get(key, value)) for key, value in defaults.items()}
        betas = _BETA_FNS[kind](T, **params)
        return cls(betas, kind=kind, params=tuple(params.items()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description; `Schedule.from_dict(s.to_dict())` rebuilds identical betas."""
        if self.kind == "custom":
            return {"kind": "custom", "betas": self.betas.tolist()}
        return {"kind": self.kind, "T": self.T, **dict(self.params)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Schedule:
        """Inverse of `to_dict`; unknown or missing keys raise ValueError naming them."""
        if not isinstance(d, dict) or "kind" not in d:
            raise ValueError("schedule config must be a mapping with a 'kind' key")
        kind = d["kind"]
        if kind == "custom":
            extra = sorted(set(d) - {"kind", "betas"})
            if extra:
                raise ValueError(f"unknown key {extra[0]!r} in custom schedule config")
            if "betas" not in d:
                raise ValueError("custom schedule config is missing key 'betas'")
            return cls(torch.tensor(d["betas"], dtype=torch.float64))
        kw = {key: value for key, value in d.items() if key not in ("kind", "T")}
        T = d.get("T", 1000)
        return cls.from_name(kind, T, **kw)

    def __repr__(self) -> str:
        if self.kind == "custom":
            return f"Schedule(kind='custom', T={self.T})"
        params = ", ".join(f"{key}={value!r}" for key, value in self.params)
        return f"Schedule(kind={self.kind!r}, T={self.T}, {params})"


# Timestep respacing "ddimN", docs/protocol.md §1.6 (both conventions).
def respace_timesteps(T: int, steps: int, convention: str = "paper") -> list[int]:
    """The kept original timesteps tau (sorted ascending) for "ddim<steps>".

    `paper`: guided-diffusion `space_timesteps`: the smallest integer stride s in [1, T) with
    len(range(0, T, s)) == steps; tau = [0, s, 2s, ...], `steps` points, `steps` DDIM steps.
    `current`: sorted(set(int(v) for v in linspace(0, T-1, steps+1))); up to steps+1 points, the DDIM
    loop takes len(tau) - 1 steps (ddim100 -> 101 points; ddim1000 with T=1000 -> 1000 points, 999 steps).

    Raises:
        ValueError: unknown convention, or no respacing with `steps` steps exists.
    """
    _check_T(T)
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown respacing convention {convention!r}; expected one of {list(CONVENTIONS)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"number of DDIM steps must be a positive integer, got {steps!r}")
    if convention == "paper":
        for stride in range(1, T):
            if len(range(0, T, stride)) == steps:
                return list(range(0, T, stride))
        raise ValueError(f"cannot take exactly {steps} DDIM steps out of T={T} with an integer stride")
    if steps > T:
        raise ValueError(f"cannot take {steps} DDIM steps out of T={T} diffusion steps")
    return sorted({int(v) for v in np.linspace(0, T - 1, steps + 1)})
