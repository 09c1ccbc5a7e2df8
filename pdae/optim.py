"""The optimiser side of training: Adam/AdamW (fused where torch has it), the EMA of the trainable
parameters with its warm-up, and the precision switches of the training step (bf16 autocast, channels_last).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from pdae.config import TrainConfig
from pdae.methods import Method
from pdae.run_control import TrainingError


def ema_decay_at(decay: float, n: int, warmup: bool = True) -> float:
    """Decay of the n-th EMA update (n = 1, 2, ...): min(decay, (1 + n) / (10 + n)) with warm-up, else `decay`.

    The warm-up is latent-diffusion's `LitEma` rule (also Diff-AE's guided-diffusion lineage uses a constant
    decay; the official PDAE and Diff-AE trainers run 0.9999 from step 1, harmless at their 10^5-10^6 steps).
    At a few hundred steps a constant decay exports mostly the random initialisation (its weight after N
    updates is decay^N: 0.999^391 = 0.68); with the warm-up it is prod_n (1 + n)/(10 + n) < 1e-9 at N = 391.
    """
    if n < 1:
        raise ValueError(f"EMA update index starts at 1, got {n}")
    return min(decay, (1.0 + n) / (10.0 + n)) if warmup else decay


# EMA of the trainable parameters (every step; only params with requires_grad, as the official code).
class EMA:
    def __init__(self, method: Method, decay: float, warmup: bool = True) -> None:
        self.decay = decay
        self.warmup = warmup
        self.names = [n for n, p in method.named_parameters() if p.requires_grad]
        params = dict(method.named_parameters())
        self.shadow = {n: params[n].detach().clone().float() for n in self.names}

    @torch.no_grad()
    def update(self, method: Method, count: int) -> None:
        """The count-th update (optimisation steps done, this one included; resume-safe: the loop's step)."""
        params = dict(method.named_parameters())
        decay = ema_decay_at(self.decay, count, self.warmup)
        torch._foreach_lerp_(
            [self.shadow[n] for n in self.names], [params[n].detach().float() for n in self.names], 1.0 - decay
        )

    def state_dict(self) -> dict[str, Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        missing = set(self.names) - set(state)
        if missing:
            raise TrainingError(f"resume state: EMA misses {sorted(missing)[0]}")
        for n in self.names:
            self.shadow[n].copy_(state[n])


def adam_optimizer(
    params: list[nn.Parameter], lr: float, betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.0,
    decoupled: bool = False,
) -> torch.optim.Optimizer:
    """Adam (AdamW if `decoupled`), with the fused kernel (one call for all tensors) where torch has it.

    Same update as the per-tensor loop; on the embedded default's U-Net (198 tensors) the step costs
    2.1 ms instead of 9.3 ms on one CPU thread (measured 2026-11-30), ~3 % of a training step.
    """
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float16, torch.bfloat16)
                for p in params)
    return cls(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused or None)


def amp_enabled(amp: str, device: torch.device, input_kind: str) -> bool:
    """bf16 autocast of the training step: `train.amp` bf16 = on, off = off, auto = on for image networks where
    the device computes bf16 natively (a CUDA GPU with bf16, a CPU with AVX512-BF16 or AMX; pdae.precision),
    off for the small MLPs on latents (latent DPM, classifiers), whose steps gain little.

    The loss is reduced in fp32 and the optimiser and EMA keep fp32 weights. On this project's 2-core CPU (AMX)
    a training step of the embedded U-Nets at batch 32 takes 0.83-0.86x the fp32 time (DPM 93 vs 110 ms, PDAE
    112 vs 135 ms, Diff-AE 136 vs 160 ms; measured 2026-12-03)."""
    from pdae import precision

    if amp == "bf16":
        return True
    if amp == "off":
        return False
    return input_kind == "images" and precision.bf16_available(device)


def channels_last_enabled(setting: str, device: torch.device, input_kind: str, use_amp: bool,
                          image_size: int) -> bool:
    """channels_last (NHWC) image networks: `train.channels_last` on / off, or auto = on CUDA, and on a CPU when
    the step runs in bf16 on images of at least `pdae.precision.CPU_CHANNELS_LAST_MIN_SIZE` px (oneDNN's bf16
    convolutions are fastest in NHWC; below that size NHWC GroupNorm costs more than it gains, see there)."""
    from pdae import precision

    if input_kind != "images" or setting == "off":
        return False
    if setting == "on" or device.type == "cuda":
        return True
    return use_amp and precision.channels_last_pays(device, image_size)


def _make_optimizer(params: list[nn.Parameter], tc: TrainConfig) -> torch.optim.Optimizer:
    return adam_optimizer(params, tc.lr, tuple(tc.betas), tc.weight_decay, decoupled=tc.optimizer == "adamw")


@dataclasses.dataclass
class Stepper:
    """What one optimisation step needs: the module to call (`method`, or its DDP / compiled wrapper), the
    method (for the EMA), the optimiser, the EMA, the trainable parameters and the step's settings."""

    model: nn.Module
    method: Method
    optimizer: torch.optim.Optimizer
    ema: EMA
    params: list[nn.Parameter]
    use_amp: bool
    grad_clip: float | None
    device: torch.device


def train_step(st: Stepper, x: Tensor, y: Tensor, generator: torch.Generator, lr: float, count: int) -> Tensor:
    """One optimisation step of the training loop (also what `pdae bench` times): set the learning rate, draw
    the step's t and noise from `generator` (`Method.draw`, outside any compiled region), forward the
    per-sample loss (bf16 autocast if `use_amp`) and its mean, backward, clip, Adam, then the `count`-th EMA
    update.

    -> this rank's mean loss, a detached fp32 tensor on the device. Nothing here waits for the device: the
    caller checks finiteness where it logs or saves (`LossMeter`), so a non-finite step is never saved."""
    for group in st.optimizer.param_groups:
        group["lr"] = lr
    draws = st.method.draw(x, generator)
    with torch.autocast(st.device.type, dtype=torch.bfloat16, enabled=st.use_amp):
        loss = st.model(x, y, draws).mean()
    st.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if st.grad_clip is not None:
        nn.utils.clip_grad_norm_(st.params, st.grad_clip)
    st.optimizer.step()
    st.ema.update(st.method, count)
    return loss.detach().float()
