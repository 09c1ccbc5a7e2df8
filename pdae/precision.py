"""Numeric precision of network evaluation: bf16 autocast where the hardware has it, fp32 elsewhere.

`--precision auto` (sampling for FID) runs the networks under bf16 autocast on a CUDA device with bf16 or a
CPU with native bf16 instructions (AVX512-BF16 or AMX-BF16), else fp32; `bf16` forces it, `fp32` turns it
off. Only the networks run in bf16: the callers cast their outputs to fp32, and the diffusion arithmetic
(schedules, DDIM updates), metrics and feature extractors stay fp32. On this project's 2-core CPU (AMX) the
embedded U-Net's forward pass at batch 250 took 0.69-0.77 ms per image in bf16 (channels_last) vs 1.15-1.18 ms
in fp32 (1.5-1.7x, measured 2026-12-03); at that size NCHW is faster still (see CPU_CHANNELS_LAST_MIN_SIZE).
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

PRECISIONS = ("auto", "bf16", "fp32")
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# Smallest image side at which bf16 image networks run channels_last (NHWC) on a CPU. Measured on this project's
# 2-core CPU (AMX), one thread, bf16, 3 interleaved rounds (benchmarks/channels_last_cpu.py ->
# benchmarks/results/channels_last_cpu.md): at 16 px NCHW is faster (the embedded U-Nets' forward 1.15-1.22x,
# training step 1.02-1.03x: PyTorch's CPU GroupNorm is several times slower on NHWC inputs and the convolutions
# are too small to gain); from 32 px NHWC is faster (forward 1.14-1.16x at 32 px and 1.35-1.40x at 64 px,
# training step 1.02-1.03x at 32 px and 1.07-1.22x at 64 px).
CPU_CHANNELS_LAST_MIN_SIZE = 32


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this CPU advertises native bf16 arithmetic (Linux /proc/cpuinfo flags)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return any(f in flags for f in _CPU_BF16_FLAGS)


def bf16_available(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_bf16()
    return False


def resolve(precision: str, device: torch.device) -> str:
    """'bf16' or 'fp32' for `precision` (auto | bf16 | fp32) on `device`."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if bf16_available(device) else "fp32"
    return precision


def channels_last_pays(device: torch.device, image_size: int) -> bool:
    """Whether bf16 image networks of side `image_size` run channels_last (NHWC) on `device`: always on CUDA
    (cuDNN's bf16 convolutions want NHWC), on a CPU from CPU_CHANNELS_LAST_MIN_SIZE px (see there)."""
    return device.type == "cuda" or image_size >= CPU_CHANNELS_LAST_MIN_SIZE


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[str]:
    """Run the block's network calls under bf16 autocast when `precision` resolves to bf16; yields the choice."""
    chosen = resolve(precision, device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=chosen == "bf16"):
        yield chosen


@contextlib.contextmanager
def memory_format(module: torch.nn.Module, device: torch.device, precision: str, image_size: int) -> Iterator[bool]:
    """The block runs `module` with channels_last (NHWC) weights when `precision` resolves to bf16 and NHWC pays
    at `image_size` (`channels_last_pays`), restored to the default layout after; yields whether it did. Values
    are unchanged: only the storage order of 4-D weights moves."""
    nhwc = resolve(precision, device) == "bf16" and channels_last_pays(device, image_size)
    if nhwc:
        _set_format(module, torch.channels_last)
    try:
        yield nhwc
    finally:
        if nhwc:
            _set_format(module, torch.contiguous_format)


def _set_format(module: torch.nn.Module, fmt: torch.memory_format) -> None:
    # Outside inference mode even when called inside it: parameters made there could never train again.
    with torch.inference_mode(False):
        module.to(memory_format=fmt)


def _to_fp32(out: Any) -> Any:
    if isinstance(out, tuple):
        return tuple(o.float() for o in out)
    return out.float()


def wrap(fn: Callable[..., Any] | None, device: torch.device, precision: str) -> Callable[..., Any] | None:
    """`fn(x_t, t)` (an eps_fn, or a shift_fn returning (eps, G)) run under `autocast` with image inputs in
    channels_last where `channels_last_pays` (pair with `memory_format`), outputs cast to fp32; `fn` itself
    when the precision resolves to fp32 (or fn is None)."""
    if fn is None or resolve(precision, device) == "fp32":
        return fn

    def wrapped(x_t: torch.Tensor, t: torch.Tensor) -> Any:
        if x_t.dim() == 4 and channels_last_pays(device, x_t.shape[-1]):
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        with autocast(device, "bf16"):
            return _to_fp32(fn(x_t, t))

    return wrapped
