"""pdae.precision: bf16 autocast for sampling only where the hardware has it; outputs back in fp32."""

from __future__ import annotations

import pytest
import torch

from pdae import precision
from pdae.methods import build_method

CPU = torch.device("cpu")


def test_resolve_and_refuse_unknown() -> None:
    assert precision.resolve("fp32", CPU) == "fp32"
    assert precision.resolve("bf16", CPU) == "bf16"
    assert precision.resolve("auto", CPU) == ("bf16" if precision.cpu_has_bf16() else "fp32")
    with pytest.raises(ValueError, match="--precision"):
        precision.resolve("fp16", CPU)


def test_wrap_is_identity_in_fp32_and_casts_back_in_bf16() -> None:
    fn = lambda x, t: (x @ x.transpose(-1, -2), x)  # noqa: E731 - a matmul runs in bf16 under autocast
    assert precision.wrap(fn, CPU, "fp32") is fn
    assert precision.wrap(None, CPU, "bf16") is None
    x = torch.randn(2, 8, 8)
    out = precision.wrap(fn, CPU, "bf16")(x, None)
    assert all(o.dtype == torch.float32 for o in out)
    assert not torch.equal(out[0], fn(x, None)[0])  # really computed in bf16 ...
    assert torch.allclose(out[0], fn(x, None)[0], rtol=0.02, atol=0.1)  # ... to bf16 accuracy


def test_bf16_ddim_sample_agrees_with_fp32() -> None:
    """A 20-step DDIM sample of a small U-Net in bf16 stays within bf16 error of the fp32 sample."""
    from eval.sample import decode

    info = {"image_size": 8, "channels": 1, "num_classes": 0, "num_attributes": 0}
    torch.manual_seed(0)
    dpm = build_method("dpm", {"unet": {"base_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
                                        "attention_ds": [2], "dropout": 0.0}}, {}, {}, info).eval()
    with torch.no_grad():  # ADM zero-initialises its output layers: give them weights, as training would
        for p in dpm.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    x_T = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    fp32 = decode(dpm, None, x_T, 20)
    bf16 = decode(dpm, None, x_T, 20, precision="bf16")
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    err = (bf16 - fp32).abs()
    assert 0 < err.max() < 0.5 and err.mean() < 0.01, (err.max(), err.mean())  # measured: 0.17, 0.0016


def test_memory_format_is_nhwc_inside_bf16_only_and_keeps_weights_trainable() -> None:
    conv = torch.nn.Conv2d(3, 8, 3)
    before = conv.weight.detach().clone()
    cpu = torch.device("cpu")
    with torch.inference_mode(), precision.memory_format(conv, cpu, "bf16", 32) as nhwc:
        assert nhwc and conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert conv.weight.is_contiguous() and torch.equal(conv.weight, before)
    with precision.memory_format(conv, cpu, "fp32", 32) as nhwc:
        assert not nhwc and conv.weight.is_contiguous()
    # parameters converted inside inference mode are still ordinary tensors: training works afterwards
    conv(torch.randn(1, 3, 5, 5)).sum().backward()
    assert conv.weight.grad is not None


def test_channels_last_only_where_it_pays_cpu_from_32_px_cuda_always() -> None:
    """NHWC on a CPU from CPU_CHANNELS_LAST_MIN_SIZE px only (16-px NHWC GroupNorm costs more than the
    convolutions gain), always on CUDA; training's `auto` and evaluation's bf16 path follow the same rule."""
    from pdae.optim import channels_last_enabled

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert precision.CPU_CHANNELS_LAST_MIN_SIZE == 32
    assert [precision.channels_last_pays(cpu, s) for s in (8, 16, 31, 32, 64, 128)] == [False] * 3 + [True] * 3
    assert precision.channels_last_pays(cuda, 16)
    conv = torch.nn.Conv2d(1, 8, 3)
    with precision.memory_format(conv, cpu, "bf16", 16) as nhwc:
        assert not nhwc and conv.weight.is_contiguous()
    seen = []
    fn = precision.wrap(lambda x, t: seen.append(x.is_contiguous()) or x, cpu, "bf16")
    fn(torch.randn(2, 8, 16, 16), None)
    fn(torch.randn(2, 8, 32, 32), None)
    assert seen == [True, False]  # 16 px stays NCHW, 32 px goes NHWC
    assert not channels_last_enabled("auto", cpu, "images", True, 16)
    assert channels_last_enabled("auto", cpu, "images", True, 32)
    assert not channels_last_enabled("auto", cpu, "images", False, 64)  # fp32 on a CPU: NCHW
    assert channels_last_enabled("auto", cuda, "images", False, 16)
    assert channels_last_enabled("on", cpu, "images", False, 16) and not channels_last_enabled("off", cuda, "images", True, 64)
    assert not channels_last_enabled("on", cpu, "latents", True, 64)
