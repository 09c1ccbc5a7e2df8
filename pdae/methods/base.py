"""The method interface shared by the training loop, the samplers and all of `eval/` (docs/protocol.md §9.2).

Every method is an `nn.Module` whose `forward` is its per-sample training loss, so one training loop
(and DistributedDataParallel) drives them all. Sampling code only sees `denoiser(cond)`, which returns
the `(eps_fn, shift_fn)` pair that `pdae.diffusion.sampling` takes: the plain DPM, PDAE and Diff-AE
differ only in those callables.

Evaluations ask a method what it can do through a few capabilities instead of switching on its `name`:
`is_diffusion`, `has_encoder`, `semantic_encoder`, `latent_dim`, `conditioning` / `condition_optional` /
`needs_condition`, `has_shift`, `num_classes`, `record_label`, `denoiser(cond)` and `predict_eps(x_t, t, cond)`
(the eps estimates of the posterior-mean gap: eps and eps_hat).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor, nn

from pdae.diffusion.gaussian import shift_eps
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


class EpsPrediction(NamedTuple):
    """The eps estimates of a diffusion model at (x_t, t) under a condition, from one network pass.

    eps:     the network's own eps prediction: eps_theta(x_t, t) of the plain DPM and of PDAE's frozen prior,
             Diff-AE's conditional eps(x_t, t, z).
    shift:   PDAE's learned mean shift G(x_t, cond, t); None for a model without one (or PDAE without a condition).
    eps_hat: the estimate the training loss fits: eps + shift_coef_t * G (PDAE paper Eq. 7), else `eps`. The
             posterior-mean gap (paper Fig. 1/5) is measured on it.
    """

    eps: Tensor
    shift: Tensor | None
    eps_hat: Tensor


class Method(nn.Module):
    """Base class: subclasses set `name`, implement `loss`, `components` and (where meaningful) the rest.

    The class attributes after `input_kind` are capabilities, for code that must not switch on method names
    (`eval/`); their defaults describe a model that is not a diffusion model (e.g. a classifier).
    """

    name: str = "method"
    #: input of `loss`: "images" ([N, C, H, W] in [-1, 1]) or "latents" (normalised z, [N, D])
    input_kind: str = "images"
    #: a diffusion model of `input_kind` data: it has a `schedule` and implements `denoiser` (so `predict_eps`)
    is_diffusion: bool = False
    #: `encode(x0)` gives a semantic latent z (PDAE, Diff-AE)
    has_encoder: bool = False
    #: the dimension of the semantic latent z that the method encodes to or models; None where it has none
    latent_dim: int | None = None
    #: what `denoiser(cond)` takes: "none" (no condition: the plain DPM, the latent DPM), "z" (the semantic
    #: latent [N, D] of `encode`: PDAE, Diff-AE) or "label" (int64 class labels [N]: the class-conditional PDAE)
    conditioning: str = "none"
    #: `denoiser()` without a condition is a supported use (PDAE: its frozen prior alone)
    condition_optional: bool = True
    #: the condition acts only through a learned mean shift G of a frozen prior (PDAE, paper Eq. 6), the
    #: `shift_fn` of `denoiser(cond)`, which samplers may scale, switch off for the last steps, or mix
    has_shift: bool = False
    #: the number of class labels the method is conditioned on (class-conditional PDAE) or classifies images
    #: into (the feature net); None elsewhere
    num_classes: int | None = None

    @property
    def record_label(self) -> str:
        """The `method` column of the reconstruction and unconditional-sampling records (paper Tables 1-2):
        the method's name, except that the plain DPM's rows are labelled "ddim" (DDIM sampling of it)."""
        return self.name

    @property
    def needs_condition(self) -> bool:
        """`denoiser` must be given a condition (Diff-AE's z, the class-conditional PDAE's labels)."""
        return self.conditioning != "none" and not self.condition_optional

    @property
    def semantic_encoder(self) -> nn.Module | None:
        """The network `encode` runs (PDAE's encoder, Diff-AE's half U-Net), e.g. for a linear probe; None without one."""
        return None

    def __init__(self) -> None:
        super().__init__()
        self.method_kwargs: dict[str, Any] = {}
        self.schedule: Schedule | None = None

    # Training. The loss is split in two so that torch.compile sees no seeded random call: `draw` takes the
    # step's random numbers from the run's generator (outside the compiled region), `loss_from` is the
    # deterministic rest (dropout aside). `loss(x, y, generator)` is the two in a row.
    def draw(self, x: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """The step's random draws: t ~ U{0..T-1} then eps ~ N(0, I) for a diffusion method (in that order,
        from `generator`), nothing otherwise."""
        if not self.is_diffusion:
            return {}
        return {"t": sample_timesteps(self.schedule, x.shape[0], generator, x.device), "noise": sample_noise(x, generator)}

    def loss_from(self, x: Tensor, y: Tensor, draws: dict[str, Tensor]) -> Tensor:  # [N]
        """The per-sample training loss given the step's `draw`."""
        raise NotImplementedError

    def loss(self, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:  # [N]
        return self.loss_from(x, y, self.draw(x, generator))

    def forward(self, x: Tensor, y: Tensor, draws: "dict[str, Tensor] | torch.Generator") -> Tensor:
        """`loss_from(x, y, draws)`; a generator in place of `draws` draws them first (= `loss`)."""
        if isinstance(draws, torch.Generator):
            draws = self.draw(x, draws)
        return self.loss_from(x, y, draws)

    # Construction (`pdae.methods.registry`): from the networks `build_method` makes from a config, or from the
    # components a model folder stores (`components()` of the saved method), with the same call.
    @classmethod
    def from_components(cls, parts: dict[str, nn.Module], schedule: Schedule | None, options: dict[str, Any]) -> Method:
        """The method from its components (name -> module, as `components()` names them; a folder may hold more
        than the constructor takes), its diffusion schedule (None without one) and its keyword `options`
        (`method_kwargs`)."""
        raise NotImplementedError(f"{cls.__name__} does not say how to assemble it from its components")

    @classmethod
    def check_data(cls, data_info: dict[str, Any], options: dict[str, Any]) -> None:
        """Refuse training data the method cannot learn from (ValueError), before any network is built.
        `data_info`: `image_size`, `channels`, `num_classes`, `num_attributes`."""

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

    def predict_eps(self, x_t: Tensor, t: Tensor, cond: Tensor | None = None) -> EpsPrediction:
        """The eps estimates at (x_t, t) under `cond` (None: no condition), from the callables of `denoiser`:
        without a shift eps = eps_hat = eps_fn(x_t, t); with one (eps, G) = shift_fn(x_t, t), one network pass,
        and eps_hat = eps + shift_coef_t * G (`pdae.diffusion.gaussian.shift_eps`; the training form of PDAE
        paper Eq. 7, not DDIM's -sqrt(1 - alpha_bar_t) of Eq. 6). x_t: [N, ...], t: [N] int64."""
        eps_fn, shift_fn = self.denoiser(cond) if cond is not None else self.denoiser()
        if shift_fn is None:
            eps = eps_fn(x_t, t)
            return EpsPrediction(eps, None, eps)
        eps, shift = shift_fn(x_t, t)
        return EpsPrediction(eps, shift, shift_eps(self.schedule, t, eps, shift))
