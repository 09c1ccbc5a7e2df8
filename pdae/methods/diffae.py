"""Diff-AE (Preechakul et al., CVPR 2022): a semantic encoder and a z-conditioned DPM trained from scratch.

Loss: the simple eps-MSE of the conditional DPM, the encoder trained through it (docs/protocol.md §2.3;
phizaz/diffae issue #66).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pdae.diffusion.gaussian import q_sample
from pdae.diffusion.schedule import Schedule
from pdae.methods.base import Method, per_sample_mean


class DiffAE(Method):
    name = "diffae"
    is_diffusion = True
    has_encoder = True
    conditioning = "z"
    condition_optional = False  # its z-conditioned DPM has no unconditional mode

    def __init__(self, model: nn.Module, schedule: Schedule) -> None:
        super().__init__()
        self.model = model
        self.schedule = schedule

    def loss_from(self, x: Tensor, y: Tensor, draws: dict[str, Tensor]) -> Tensor:
        t, noise = draws["t"], draws["noise"]
        eps = self.model(q_sample(self.schedule, x, t, noise), t, self.model.encode(x))
        return per_sample_mean((noise - eps).float() ** 2)

    @property
    def latent_dim(self) -> int:
        return int(self.model.config["latent_dim"])

    @property
    def semantic_encoder(self) -> nn.Module:
        return self.model.encoder

    @classmethod
    def from_components(cls, parts, schedule, options):
        return cls(parts["model"], schedule, **options)  # an imported folder's latent statistics are not Diff-AE's

    def components(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def encode(self, x0: Tensor) -> Tensor:
        return self.model.encode(x0)

    def denoiser(self, cond: Tensor | None = None):
        if cond is None:
            raise ValueError("Diff-AE decodes only with a semantic latent z")
        return (lambda x_t, t: self.model(x_t, t, cond)), None
