"""PDAE: a frozen pre-trained DPM, a semantic encoder E(x0) -> z and a gradient estimator G(x_t, z, t).

Zhang, Zhao and Lin, NeurIPS 2022. The encoder and G learn to fill the posterior-mean gap:
training minimises lambda_t * || eps - (eps_theta(x_t, t) + shift_coef_t * G(x_t, z, t)) ||^2
(paper Eq. 7 and Eq. 10, docs/protocol.md §1.3-1.4); sampling shifts DDIM by -sqrt(1 - alpha_bar) * G
(paper Eq. 6, docs/protocol.md §1.5). The class-conditional variant feeds a label instead of z (paper §4.6,
docs/protocol.md §5.8).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pdae.diffusion.gaussian import extract, pdae_loss_weight, q_sample, shift_coef
from pdae.diffusion.schedule import Schedule
from pdae.methods.base import Method, per_sample_mean

WEIGHTINGS = ("snr", "uniform")


class PDAE(Method):
    """`weighting="snr"` is the paper's lambda_t = SNR^gamma / (1 + SNR); "uniform" is the lambda_t = 1 ablation."""

    name = "pdae"
    is_diffusion = True
    has_encoder = True
    conditioning = "z"
    has_shift = True

    def __init__(
        self,
        encoder: nn.Module | None,
        estimator: nn.Module,
        schedule: Schedule,
        gamma: float = 0.1,
        weighting: str = "snr",
    ) -> None:
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise ValueError(f"method.weighting: expected one of {WEIGHTINGS}, got {weighting!r}")
        self.encoder = encoder
        self.estimator = estimator
        self.schedule = schedule
        self.method_kwargs = {"gamma": gamma, "weighting": weighting}
        weight = pdae_loss_weight(schedule, gamma) if weighting == "snr" else torch.ones(schedule.T, dtype=torch.float64)
        self.register_buffer("loss_weight", weight.float(), persistent=False)
        self.register_buffer("shift_coef", shift_coef(schedule).float(), persistent=False)

    @property
    def prior(self) -> nn.Module:
        return self.estimator.prior

    @property
    def latent_dim(self) -> int | None:
        return int(self.encoder.config["latent_dim"]) if self.encoder is not None else None

    @property
    def semantic_encoder(self) -> nn.Module | None:
        return self.encoder

    @property
    def conditional_on_label(self) -> bool:
        return self.encoder is None

    def condition(self, x: Tensor, y: Tensor) -> Tensor:
        return y if self.conditional_on_label else self.encoder(x)

    def loss_from(self, x: Tensor, y: Tensor, draws: dict[str, Tensor]) -> Tensor:
        t, noise = draws["t"], draws["noise"]
        x_t = q_sample(self.schedule, x, t, noise)
        eps, g = self.estimator(x_t, t, self.condition(x, y))
        eps_hat = eps + extract(self.shift_coef, t, x.shape) * g
        return extract(self.loss_weight, t, (x.shape[0],)) * per_sample_mean((noise - eps_hat).float() ** 2)

    @classmethod
    def from_components(cls, parts, schedule, options):
        return cls(parts["encoder"], parts["estimator"], schedule, **options)  # the prior: parts["estimator"].prior

    def components(self) -> dict[str, nn.Module]:
        parts = {"prior": self.prior, "estimator": self.estimator}
        if self.encoder is not None:
            parts["encoder"] = self.encoder
        return parts

    def component_state(self, name: str, module: nn.Module) -> dict[str, Tensor]:
        return module.new_state_dict() if name == "estimator" else module.state_dict()

    def encode(self, x0: Tensor) -> Tensor:
        if self.encoder is None:
            raise NotImplementedError("the class-conditional PDAE has no encoder; condition on labels")
        return self.encoder(x0)

    def denoiser(self, cond: Tensor | None = None):
        est = self.estimator
        eps_fn = lambda x_t, t: est.prior_eps(est.features(x_t, t))  # noqa: E731
        if cond is None:
            return eps_fn, None
        return eps_fn, (lambda x_t, t: est(x_t, t, cond))


class ClassConditionalPDAE(PDAE):
    """G conditioned on a class label instead of z (the truncation-like effect, paper §4.6)."""

    name = "pdae_class"
    has_encoder = False
    conditioning = "label"
    # Sampled per class (paper §4.6); without a label it would be its frozen prior, the DPM.
    condition_optional = False

    def __init__(self, estimator: nn.Module, schedule: Schedule, gamma: float = 0.1, weighting: str = "snr") -> None:
        super().__init__(None, estimator, schedule, gamma, weighting)

    @classmethod
    def from_components(cls, parts, schedule, options):
        return cls(parts["estimator"], schedule, **options)

    @property
    def num_classes(self) -> int:
        return int(self.estimator.config["num_classes"])
