"""DDIM encoding and decoding of images under a method's eps / shift, side by side (PDAE paper Eq. 6-8).

    infer_x_T(method, x0, z, steps, ...)           x0 -> x_T   DDIM inversion (encoding, PDAE Eq. 8)
    decode(method, z, x_T, steps, ...)             x_T -> x0   DDIM (or ancestral DDPM) sampling (PDAE Eq. 6)

Both ask the method only for its capabilities (`conditioning`, `needs_condition`, `has_encoder`,
`denoiser(cond)`, `schedule`), never for its name: the plain DPM (no condition), PDAE (eps_theta plus the mean
shift G(x_t, z, t), which `decode` may scale or switch off for the last steps), the class-conditional PDAE
(int64 labels) and Diff-AE (its conditional eps). The schedule arithmetic is `pdae.diffusion.sampling`'s
(`ddim_invert`, `ddim_sample`, `ddpm_sample`; docs/protocol.md §1.5-1.7); networks may run under bf16 autocast
(`pdae.precision`), the DDIM arithmetic stays fp32.

`eval.reconstruct.infer_x_T` and `eval.sample.decode` / `model_device` remain importable from their old modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from eval import common
from pdae import precision as precision_mod
from pdae.diffusion.sampling import ddim_invert, ddim_sample, ddpm_sample
from pdae.progress import batch_starts

__all__ = ["check_steps", "decode", "infer_x_T", "model_device"]


def model_device(method: torch.nn.Module) -> torch.device:
    """The device of a method's parameters (CPU for a parameter-free module)."""
    for p in method.parameters():
        return p.device
    for b in method.buffers():
        return b.device
    return torch.device("cpu")


def check_steps(steps: int) -> None:
    """A DDIM step count: a positive int (ValueError otherwise)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")


# DDIM encoding (PDAE Eq. 8).
def infer_x_T(
    method: Any, x0: Tensor, z: Tensor | None, steps: int, *, convention: str = "paper", batch_size: int = 64,
    precision: str = "fp32",
) -> Tensor:
    """Inferred x_T [N, C, H, W] (CPU) of images x0 [N, C, H, W] in [-1, 1] by DDIM inversion.

    PDAE: eps_theta with the shift G(x_t, z, t) on every step; Diff-AE: eps(x_t, t, z); plain DPM (z None): eps.
    `precision` as in `decode`; the reconstruction tables encode in fp32 (inversion error is what
    they measure).
    """
    device = model_device(method)
    if method.conditioning == "none" and z is not None:
        raise ValueError("infer_x_T: a plain DPM takes no z")
    if method.has_encoder and z is None:
        raise ValueError(f"infer_x_T: method {method.name} needs z = encode(x0)")
    out = []
    with torch.inference_mode(), precision_mod.memory_format(method, device, precision, x0.shape[-1]):
        for i in batch_starts(x0.shape[0], batch_size, f"{method.name} DDIM inversion, {steps} steps", "images"):
            cond = z[i : i + batch_size].to(device) if z is not None else None
            eps_fn, shift_fn = method.denoiser(cond) if cond is not None else method.denoiser()
            eps_fn = precision_mod.wrap(eps_fn, device, precision)
            shift_fn = precision_mod.wrap(shift_fn, device, precision)
            x = x0[i : i + batch_size].to(device=device, dtype=torch.float32)
            out.append(ddim_invert(eps_fn, x, method.schedule, steps, convention=convention, shift_fn=shift_fn).cpu())
    return torch.cat(out)


# Image decoding of any method (docs/protocol.md §1.5-1.7): DDIM (or DDPM) from x_T under the method's eps / shift.
def decode(
    method: Any,
    z: Tensor | None,
    x_T: Tensor,
    steps: int,
    stop_fraction: float = 0.0,
    *,
    convention: str = "paper",
    shift_scale: float = 1.0,
    sampler: str = "ddim",
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    batch_size: int = 64,
    precision: str = "fp32",
) -> Tensor:
    """Decode x_T ([N, C, H, W]) under condition z with `method` ("dpm", "pdae", "pdae_class" or "diffae").

    - dpm: plain DDIM (z must be None); pdae: eps_theta and the shift G(x_t, z, t) (paper Eq. 6), the shift off
      for the last int(stop_fraction * N) steps; pdae with z None: the frozen prior alone; pdae_class: z holds
      int64 labels [N] and `shift_scale` scales G (truncation-like effect, §5.8); diffae: its conditional eps.
    - sampler "ddim": deterministic, x0_hat clamped to [-1, 1] each step (official); `steps` = "ddim<steps>".
      sampler "ddpm": ancestral over all T steps (`steps` ignored), noise from `generator` (one, or one per sample
      so a sample does not depend on the batch), no clipping (official PDAE code,
      `representation_learning_ddpm_sample`).
    - precision (pdae.precision): "fp32" (default), or "bf16" / "auto" to run the networks under bf16 autocast
      (their outputs cast back to fp32; the DDIM/DDPM arithmetic stays fp32).

    Returns:
        images  # [N, C, H, W] float32 on the CPU ("paper" DDIM: in [-1, 1]; "current"/DDPM may overshoot)
    """
    name = getattr(method, "name", None)
    if not common.is_image_decoder(method):
        raise ValueError(f"decode: method {name!r} is not an image decoder (dpm, pdae, pdae_class, diffae)")
    if sampler not in ("ddim", "ddpm"):
        raise ValueError(f"decode: sampler must be ddim or ddpm, got {sampler!r}")
    if sampler == "ddim":
        check_steps(steps)
    if method.conditioning == "none" and z is not None:
        raise ValueError("decode: a plain DPM takes no condition z (pass z=None)")
    if method.needs_condition and z is None:
        raise ValueError(f"decode: method {name} needs a condition z")
    if z is not None and z.shape[0] != x_T.shape[0]:
        raise ValueError(f"decode: z has {z.shape[0]} rows but x_T has {x_T.shape[0]}")
    if sampler == "ddpm" and generator is not None and not isinstance(generator, torch.Generator):
        if len(generator) != x_T.shape[0]:
            raise ValueError(f"decode: {len(generator)} generators for {x_T.shape[0]} samples")
    device = model_device(method)
    out = []
    with torch.inference_mode(), precision_mod.memory_format(method, device, precision, x_T.shape[-1]):
        desc = f"{name} {sampler}" + (f", {steps} steps" if sampler == "ddim" else "")
        for i in batch_starts(x_T.shape[0], batch_size, desc, "images"):
            sl = slice(i, i + batch_size)
            cond = z[sl].to(device) if z is not None else None
            eps_fn, shift_fn = method.denoiser(cond) if cond is not None else method.denoiser()
            eps_fn = precision_mod.wrap(eps_fn, device, precision)
            shift_fn = precision_mod.wrap(shift_fn, device, precision)
            x = x_T[sl].to(device=device, dtype=torch.float32)
            if sampler == "ddim":
                x0 = ddim_sample(eps_fn, x, method.schedule, steps, convention=convention, shift_fn=shift_fn,
                                 stop_fraction=stop_fraction, shift_scale=shift_scale)
            else:
                gen = generator if generator is None or isinstance(generator, torch.Generator) else generator[sl]
                x0 = ddpm_sample(eps_fn, x, method.schedule, shift_fn=shift_fn, stop_fraction=stop_fraction,
                                 shift_scale=shift_scale, generator=gen)
            out.append(x0.float().cpu())
    return torch.cat(out)

