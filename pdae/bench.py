"""Training throughput (images/s) of the DPM, PDAE and Diff-AE at one U-Net size (`pdae bench`).

Each method trains with its own published encoder design (PDAE: stacked strided convs, docs/protocol.md §2.2;
Diff-AE: the half-U-Net encoder) and the same U-Net hyper-parameters, through the same `Method.loss` the
training loop uses: forward, backward and an Adam step on the trainable parameters. The paper measured
PDAE 81.57 vs Diff-AE 75.41 images/s per A100 at 128 px (paper §4.1). `pdae_naive` is the
same PDAE computed the naive way (a second pass through the frozen encoder half for G, with autograd
recording the frozen branch) to show what sharing the features and dropping the graph buys.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pdae.diffusion.gaussian import extract, q_sample
from pdae.methods import PDAE, Method, build_method
from pdae.methods.base import per_sample_mean
from pdae.training import EMA, Stepper, adam_optimizer, amp_enabled, channels_last_enabled, resolve_device, train_step

# Network sizes per preset: the embedded default (digits, 16x16, 1 channel) and the paper's FFHQ128.
PRESETS: dict[str, dict[str, Any]] = {
    "embedded": {
        "data": {"image_size": 16, "channels": 1},
        "batch_size": 32,  # config/train/digits16/*.yaml
        "unet": {"base_channels": 32, "channel_mult": [1, 1, 2], "num_res_blocks": 1, "attention_ds": [4],
                 "dropout": 0.0},
        "encoder": {"latent_dim": 64, "channels": [64, 128], "attention_resolutions": []},
        "diffae_encoder": {"enc_channel_mult": [1, 2, 2], "enc_attention_resolutions": [4]},
        "diffae_attention": [4],
    },
    "celeba64": {  # config/train/celeba64/{dpm,pdae,diffae}.yaml; batch 16 as the speed comparison of README
        "data": {"image_size": 64, "channels": 3},
        "batch_size": 16,
        "unet": {"base_channels": 128, "channel_mult": [1, 1, 2, 3, 4], "num_res_blocks": 2, "attention_ds": [4],
                 "num_heads": 1, "dropout": 0.1},
        "encoder": {"latent_dim": 512, "channels": [64, 128, 128, 128]},
        "diffae_model": {"base_channels": 64, "channel_mult": [1, 2, 4, 8], "num_res_blocks": 2,
                         "attention_resolutions": [16], "num_heads": 1, "dropout": 0.1, "latent_dim": 512,
                         "enc_channel_mult": [1, 2, 4, 8, 8], "enc_attention_resolutions": [16], "embed_channels": 512},
    },
    "ffhq128": {
        "data": {"image_size": 128, "channels": 3},
        "batch_size": 64,  # per GPU (the paper's global batch 128 on two GPUs)
        "unet": {"base_channels": 128, "channel_mult": [1, 1, 2, 3, 4], "num_res_blocks": 2, "attention_ds": [8],
                 "dropout": 0.1},
        "encoder": {"latent_dim": 512},
        "diffae_encoder": {"enc_channel_mult": [1, 1, 2, 3, 4, 4], "enc_attention_resolutions": [16]},
        "diffae_attention": [16],
    },
}


class NaivePDAE(PDAE):
    """PDAE without the shared pass: eps_theta and G each run the frozen encoder half, with autograd on."""

    def loss_from(self, x, y, draws):  # noqa: ANN001, ANN201 - same signature as Method.loss_from
        t, noise = draws["t"], draws["noise"]
        x_t = q_sample(self.schedule, x, t, noise)
        prior = self.prior
        eps = prior.predict_eps(prior.encode_features(x_t, t))
        g = self.estimator.shift(prior.encode_features(x_t, t), self.encoder(x))
        eps_hat = eps + extract(self.shift_coef, t, x.shape) * g
        return extract(self.loss_weight, t, (x.shape[0],)) * per_sample_mean((noise - eps_hat).float() ** 2)


def build_methods(preset: str | Mapping[str, Any]) -> dict[str, Method]:
    """DPM, PDAE (shared features), naive PDAE and Diff-AE at the preset's U-Net size (`preset`: a name in
    PRESETS, or a settings mapping of the same form)."""
    if isinstance(preset, Mapping):
        p = preset
    elif preset in PRESETS:
        p = PRESETS[preset]
    else:
        raise ValueError(f"--preset: expected one of {sorted(PRESETS)}, got {preset!r}")
    info = {**p["data"], "num_classes": 0, "num_attributes": 0}
    torch.manual_seed(0)
    dpm = build_method("dpm", {"unet": p["unet"]}, {}, {}, info)
    pdae_nets = {"encoder": p["encoder"], "estimator": {"latent_dim": p["encoder"]["latent_dim"]}}
    pdae = build_method("pdae", pdae_nets, {}, {}, info, prior=build_method("dpm", {"unet": p["unet"]}, {}, {}, info))
    naive = NaivePDAE(pdae.encoder, pdae.estimator, pdae.schedule)
    unet = p["unet"]
    model = p.get("diffae_model") or {
        "base_channels": unet["base_channels"], "channel_mult": unet["channel_mult"],
        "num_res_blocks": unet["num_res_blocks"], "attention_resolutions": p["diffae_attention"],
        "dropout": unet["dropout"], "latent_dim": p["encoder"]["latent_dim"], **p["diffae_encoder"]}
    diffae = build_method("diffae", {"model": model}, {}, {}, info)
    return {"dpm": dpm, "pdae": pdae, "pdae_naive": naive, "diffae": diffae}


def time_training_steps(
    method: Method, image_shape: tuple[int, int, int], batch_size: int, steps: int, warmup: int, device: torch.device,
    amp: str = "auto", channels_last: str = "auto", compile_model: bool = False,
) -> dict[str, float]:
    """Mean seconds per training step on random images of `image_shape` (C, H, W): the training loop's own
    `pdae.training.train_step` (forward in the loop's precision and memory format, backward, fused Adam, EMA
    update with warm-up)."""
    method.to(device).train()
    params = method.trainable_parameters()
    use_amp = amp_enabled(amp, device, method.input_kind)
    nhwc = channels_last_enabled(channels_last, device, method.input_kind, use_amp, image_shape[-1])
    method.to(memory_format=torch.channels_last if nhwc else torch.contiguous_format)
    model = torch.compile(method) if compile_model else method
    stepper = Stepper(model, method, adam_optimizer(params, lr=1e-4), EMA(method, 0.9999), params, use_amp, None,
                      device)
    gen = torch.Generator(device).manual_seed(0)
    x = torch.rand(batch_size, *image_shape, generator=gen, device=device) * 2 - 1
    if nhwc:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.zeros(batch_size, dtype=torch.long, device=device)
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        train_step(stepper, x, y, gen, 1e-4, i + 1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    sec = sum(times) / len(times)
    return {
        "seconds_per_step": sec,
        "images_per_s": batch_size / sec,
        "precision": "bf16" if use_amp else "fp32",
        "channels_last": nhwc,
        "compile": compile_model,
        "trainable_params": sum(q.numel() for q in params),
        "total_params": sum(q.numel() for q in method.parameters()),
    }


def run_benchmark(preset: str, batch_size: int | None, steps: int, warmup: int, device: str, out: str | None,
                  amp: str = "auto") -> dict:
    """Print (and optionally write) images/s per method and the PDAE / Diff-AE ratio, measured in one run.

    batch_size None: the preset's training batch.
    """
    from pdae.provenance import code_version, utc_now

    dev = resolve_device(device)
    methods = build_methods(preset)
    batch_size = int(PRESETS[preset]["batch_size"] if batch_size is None else batch_size)
    data = PRESETS[preset]["data"]
    shape = (data["channels"], data["image_size"], data["image_size"])
    results = {}
    for name, method in methods.items():
        results[name] = time_training_steps(method, shape, batch_size, steps, warmup, dev, amp)
        r = results[name]
        print(f"{name:11s} {r['images_per_s']:9.1f} images/s  ({1000 * r['seconds_per_step']:.1f} ms/step, {r['precision']}, "
              f"{r['trainable_params']:,} trainable of {r['total_params']:,} params)", flush=True)
    ratio = results["pdae"]["images_per_s"] / results["diffae"]["images_per_s"]
    naive = results["pdae"]["images_per_s"] / results["pdae_naive"]["images_per_s"]
    print(f"PDAE / Diff-AE throughput ratio: {ratio:.3f} (paper, A100 128 px: {81.57 / 75.41:.3f}); "
          f"shared-pass PDAE / naive PDAE: {naive:.3f}")
    record = {
        "preset": preset, "batch_size": batch_size, "steps": steps, "warmup": warmup, "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "torch": torch.__version__, "code_version": code_version(),
        "created": utc_now(), "results": results, "pdae_over_diffae": ratio, "pdae_over_naive": naive,
    }
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(record, indent=2) + "\n")
    return record
