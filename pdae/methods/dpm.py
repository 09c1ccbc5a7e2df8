"""The plain (unconditional) DPM: the "pre-trained" model of PDAE, trained with the simple eps loss.

Ho et al. 2020, L_simple (unweighted eps-MSE, as official PDAE code `regular_train_one_batch`; docs/protocol.md §1.4).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pdae.diffusion.gaussian import q_sample
from pdae.diffusion.schedule import Schedule
from pdae.methods.base import Method, per_sample_mean


class DPM(Method):
    name = "dpm"
    is_diffusion = True
    record_label = "ddim"  # its reconstruction / sampling rows are DDIM's (paper Tables 1-2)

    def __init__(self, unet: nn.Module, schedule: Schedule) -> None:
        super().__init__()
        self.unet = unet
        self.schedule = schedule

    def loss_from(self, x: Tensor, y: Tensor, draws: dict[str, Tensor]) -> Tensor:
        t, noise = draws["t"], draws["noise"]
        eps = self.unet.eps_from_output(self.unet(q_sample(self.schedule, x, t, noise), t))
        return per_sample_mean((noise - eps).float() ** 2)

    @classmethod
    def from_components(cls, parts, schedule, options):
        return cls(parts["unet"], schedule, **options)

    def components(self) -> dict[str, nn.Module]:
        return {"unet": self.unet}

    def denoiser(self, cond: Tensor | None = None):
        return (lambda x_t, t: self.unet.eps_from_output(self.unet(x_t, t))), None
