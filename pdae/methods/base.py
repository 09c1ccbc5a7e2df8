"""The method interface shared by the training loop, the samplers and all of `eval/` (docs/protocol.md §9.2).

Every method is an `nn.Module` whose `forward` is its per-sample training loss, so one training loop
(and DistributedDataParallel) drives them all. Sampling code only sees `denoiser(cond)`, which returns
the `(eps_fn, shift_fn)` pair that `pdae.diffusion.sampling` takes: the plain DPM, PDAE and Diff-AE
differ only in those callables.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from pdae.diffusion.schedule import Schedule

EpsFn = Callable[[Tensor, Tensor], Tensor]
ShiftFn = Callable[[Tensor, Tensor], "tuple[Tensor, Tensor]"]


def per_sample_mean(x: Tensor) -> Tensor:
    """Mean over every dimension but the first: [N, ...] -> [N]."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def sample_timesteps(schedule: Schedule, n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """t ~ Uniform{0, ..., T-1} (docs/protocol.md §1.4), drawn from the run's generator."""
    return torch.randint(0, schedule.T, (n,), generator=generator, device=device)


def sample_noise(like: Tensor, generator: torch.Generator) -> Tensor:
    """eps ~ N(0, I) with the shape, dtype and device of `like`."""
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


class Method(nn.Module):
    """Base class: subclasses set `name`, implement `loss`, `components` and (where meaningful) the rest."""

    name: str = "method"
    #: input of `loss`: "images" ([N, C, H, W] in [-1, 1]) or "latents" (normalised z, [N, D])
    input_kind: str = "images"

    def __init__(self) -> None:
        super().__init__()
        self.method_kwargs: dict[str, Any] = {}
        self.schedule: Schedule | None = None

    # Training.
    def loss(self, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:  # [N]
        raise NotImplementedError

    def forward(self, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        return self.loss(x, y, generator)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # Saving: named components, each a module whose state dict is stored under "{name}.".
    def components(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def component_state(self, name: str, module: nn.Module) -> dict[str, Tensor]:
        return module.state_dict()

    def extra_tensors(self) -> dict[str, Tensor]:
        """Non-module tensors stored with the model (e.g. latent statistics)."""
        return {}

    # Sampling and encoding.
    def encode(self, x0: Tensor) -> Tensor:
        raise NotImplementedError(f"{self.name} has no semantic encoder")

    def denoiser(self, cond: Tensor | None = None) -> tuple[EpsFn, ShiftFn | None]:
        raise NotImplementedError(f"{self.name} is not a diffusion decoder")
