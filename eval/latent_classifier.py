"""The latent classifier p(class | z) and acceptance sampling of the few-shot evaluation (eval.fewshot).

D2C protocol (Sinha et al. 2021; PDAE paper §4.7, Table 3; docs/protocol.md §5.6): a logistic model on the
semantic latents z, normalised with the latent DPM's dataset statistics, gives p(class | z), fitted by
cross-entropy (labelled images of both classes) or by the non-negative PU risk (Kiryo et al. 2017: labelled
images of one class against unlabelled ones, with a known class prior); draws of the latent DPM kept with that
probability are distributed as p(z | class). Training is full batch from zero (deterministic). eval.fewshot
re-exports every public name here.

Notation: z -> raw semantic latents [N, D]; y -> 0/1 targets [N] (1 = labelled positive); p -> p(class | z) [N].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


RISKS = ("logistic", "nnpu")
DEFAULT_L2 = 1e-2          # lambda / 2 ||w||^2 added to the mean risk (normalised z)
DEFAULT_LBFGS_ITER = 200   # binary: L-BFGS iterations (convex; reaches the optimum)
DEFAULT_PU_STEPS = 500     # nnPU: full-batch Adam steps
DEFAULT_PU_LR = 0.05
DRAW_BATCH = 256           # latent draws per acceptance round (fixed: results do not depend on --batch-size)


# ------------------------------------------------------------------------------------------------
# The latent classifier p(class | z).


@dataclass(frozen=True)
class LogisticClassifier:
    """p(class | z) = sigmoid(w . (z - mean) / std + b).

    Attributes: mean, std [D] (normalisation of raw z), weight [D], bias [] (float64).
    """

    mean: Tensor
    std: Tensor
    weight: Tensor
    bias: Tensor

    def logits(self, z: Tensor) -> Tensor:
        """Raw z [N, D] -> logits [N] (float64, on z's device)."""
        u = (z.double() - self.mean.to(z.device)) / self.std.to(z.device)
        return u @ self.weight.to(z.device) + self.bias.to(z.device)

    def prob(self, z: Tensor) -> Tensor:
        """Raw z [N, D] -> p(class | z) [N]."""
        return torch.sigmoid(self.logits(z))

    def complement(self) -> LogisticClassifier:
        """The classifier of the other class: 1 - sigmoid(g) = sigmoid(-g)."""
        return LogisticClassifier(self.mean, self.std, -self.weight, -self.bias)


# Non-negative PU risk (Kiryo et al. 2017, eq. 4 / Algorithm 1) with the logistic loss l(g, +-1) = softplus(-+g).
def nnpu_risk(g_pos: Tensor, g_unl: Tensor, prior: float) -> tuple[Tensor, Tensor]:
    """(positive part pi R_p^+, negative part R_u^- - pi R_p^-) of the unbiased PU risk; nnPU = pos + max(0, neg).

    :param g_pos: logits of the labelled positives [P]; :param g_unl: logits of the unlabelled [U].
    """
    positive = prior * F.softplus(-g_pos).mean()
    negative = F.softplus(g_unl).mean() - prior * F.softplus(g_pos).mean()
    return positive, negative


def train_latent_classifier(
    z: Tensor,
    y: Tensor,
    *,
    risk: str = "logistic",
    class_prior: float | None = None,
    mean: Tensor | None = None,
    std: Tensor | None = None,
    l2: float = DEFAULT_L2,
    steps: int | None = None,
    lr: float = DEFAULT_PU_LR,
) -> LogisticClassifier:
    """Fit p(class | z) on latents z [N, D] with targets y [N] in {0, 1}, deterministically (zero init, full batch).

    risk "logistic": y = class labels; mean cross-entropy + l2/2 ||w||^2 by L-BFGS (`steps` iterations, default
    DEFAULT_LBFGS_ITER). risk "nnpu": y = 1 for labelled positives, 0 for unlabelled; the nnPU risk with
    `class_prior` pi plus l2/2 ||w||^2 by Adam (`steps`, default DEFAULT_PU_STEPS, `lr`); on a step where the
    negative part is below 0, Kiryo's rule descends on -(negative part) instead. z is normalised with (mean, std)
    (default: z's own statistics; pass the latent DPM's dataset statistics).
    """
    if risk not in RISKS:
        raise ValueError(f"risk must be one of {RISKS}, got {risk!r}")
    if z.ndim != 2 or y.shape != (z.shape[0],):
        raise ValueError(f"train_latent_classifier: z [N, D] and y [N] expected, "
                         f"got {tuple(z.shape)}, {tuple(y.shape)}")
    y = y.double().cpu()
    if not bool(((y == 0) | (y == 1)).all()) or int(y.sum()) in (0, len(y)):
        raise ValueError("train_latent_classifier: y must be 0/1 with both values present")
    z = z.double().cpu()
    mean = z.mean(0) if mean is None else mean.double().cpu()
    std = z.std(0).clamp_min(1e-8) if std is None else std.double().cpu()
    u = (z - mean) / std
    weight = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        if risk == "logistic":
            opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=steps or DEFAULT_LBFGS_ITER, tolerance_grad=1e-9,
                                    tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

            def closure() -> Tensor:
                opt.zero_grad()
                loss = F.binary_cross_entropy_with_logits(u @ weight + bias, y) + 0.5 * l2 * weight.pow(2).sum()
                loss.backward()
                return loss

            opt.step(closure)
        else:
            if class_prior is None or not 0.0 < class_prior < 1.0:
                raise ValueError(f"nnPU needs a class prior in (0, 1), got {class_prior!r}")
            pos, unl = u[y == 1], u[y == 0]
            opt = torch.optim.Adam([weight, bias], lr=lr)
            for _ in range(steps or DEFAULT_PU_STEPS):
                opt.zero_grad()
                positive, negative = nnpu_risk(pos @ weight + bias, unl @ weight + bias, class_prior)
                objective = positive + negative if negative.item() >= 0.0 else -negative
                (objective + 0.5 * l2 * weight.pow(2).sum()).backward()
                opt.step()
    return LogisticClassifier(mean, std, weight.detach(), bias.detach())


# ------------------------------------------------------------------------------------------------
# Acceptance sampling (D2C; paper §4.7): accepted draws are distributed as p(z | class).


@dataclass(frozen=True)
class AcceptanceResult:
    """samples: the first n accepted draws [n, ...] (draw order); draws / accepted: totals over all rounds."""

    samples: Tensor
    draws: int
    accepted: int

    @property
    def rate(self) -> float:
        return self.accepted / self.draws


def acceptance_sample(
    draw_fn: Callable[[int], Tensor],
    prob_fn: Callable[[Tensor], Tensor],
    n: int,
    generator: torch.Generator,
    max_draws: int,
    batch_size: int = DRAW_BATCH,
) -> AcceptanceResult:
    """Draw x ~ p(x) in rounds of `batch_size` (`draw_fn(k) -> [k, ...]`) and keep each with probability
    `prob_fn(x) -> [k]` in [0, 1] (u < p, u ~ U[0, 1) from `generator`), until n are kept.

    If p(c | x) = p(x | c) p(c) / p(x), the kept draws are i.i.d. from p(x | c) and the acceptance rate
    estimates p(c). Raises a one-line ValueError if fewer than n are kept within `max_draws` draws.
    """
    if n < 1 or max_draws < 1 or batch_size < 1:
        raise ValueError(f"acceptance_sample: n, max_draws, batch_size must be >= 1, "
                         f"got {n}, {max_draws}, {batch_size}")
    kept: list[Tensor] = []
    draws = accepted = 0
    while accepted < n:
        if draws >= max_draws:
            raise ValueError(
                f"acceptance sampling: only {accepted} of {n} samples accepted after {draws} draws (rate "
                f"{accepted / draws:.2g}); the classifier rarely accepts this class; raise --max-draws or check it"
            )
        k = min(batch_size, max_draws - draws)
        x = draw_fn(k)
        p = prob_fn(x).detach().double().cpu().reshape(-1)
        if p.shape[0] != x.shape[0]:
            raise ValueError(f"prob_fn returned {p.shape[0]} probabilities for {x.shape[0]} draws")
        u = torch.rand(k, generator=generator, dtype=torch.float64, device=generator.device).cpu()
        keep = u < p
        kept.append(x[keep.to(x.device)])
        draws += k
        accepted += int(keep.sum())
    return AcceptanceResult(torch.cat(kept)[:n], draws, accepted)
