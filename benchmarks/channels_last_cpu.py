"""NCHW vs channels_last (NHWC) for bf16 image networks on a CPU, per image size, in one run with interleaved rounds.

    python benchmarks/channels_last_cpu.py --threads 1 --rounds 3

Behind `pdae.precision.CPU_CHANNELS_LAST_MIN_SIZE`: the size from which `train.channels_last: auto` and the
`--precision auto` samplers put bf16 image networks in NHWC on a CPU. For each size, the DPM U-Net and the
Diff-AE conditional U-Net (same weights in both layouts) are timed under bf16 autocast:

  forward   one network call at t = 500 on a batch of --forward-batch images (what DDIM sampling repeats),
            inference mode; seconds per image
  train     the training loop's own step (`pdae.training.train_step`: forward, backward, fused Adam, EMA) at
            batch --train-batch; seconds per step

Sizes: 16 and 32 px with the embedded default's networks (config/train/digits16: base 32, channel_mult
[1, 1, 2]; at 32 px the PDAE encoder gets one more stride-2 conv and Diff-AE's attention moves to 8x8 so the
same layers exist), 64 px with the paper-scale CelebA64 networks (`pdae bench --preset celeba64`).
Layouts alternate within each round (NCHW, NHWC, NCHW, ...) so drifts of the machine hit both alike; the
summary is the median over rounds of the per-round ratio NCHW time / NHWC time (> 1: NHWC faster).

Writes JSON (machine, threads, commit, every round) and a Markdown table next to it.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from speed_precision import cpu_name  # noqa: E402

import pdae.bench as bench  # noqa: E402
from pdae import precision  # noqa: E402
from pdae.provenance import code_version, utc_now  # noqa: E402

LAYOUTS = {"nchw": "off", "nhwc": "on"}  # name -> train.channels_last


def settings_at(size: int) -> dict[str, Any]:
    """`pdae.bench` preset settings for `size` px (a copy; see the module docstring)."""
    if size == 64:
        return copy.deepcopy(bench.PRESETS["celeba64"])
    if size not in (16, 32):
        raise ValueError(f"--sizes: 16, 32 or 64, got {size}")
    p = copy.deepcopy(bench.PRESETS["embedded"])
    p["data"]["image_size"] = size
    if size == 32:
        p["encoder"]["channels"] = [64, 128, 128]
        p["diffae_attention"] = [8]
        p["diffae_encoder"]["enc_attention_resolutions"] = [8]
    return p


def build_at(size: int) -> dict[str, Any]:
    """The DPM and Diff-AE methods at `size` px, and the data settings."""
    settings = settings_at(size)
    methods = bench.build_methods(settings)
    return {"dpm": methods["dpm"], "diffae": methods["diffae"], "data": settings["data"]}


def time_forward(method: Any, x: torch.Tensor, z: torch.Tensor | None, layout: str, repeats: int) -> float:
    """Median seconds per image of one bf16 network call in `layout` (after one warm-up call)."""
    nhwc = layout == "nhwc"
    method.eval().to(memory_format=torch.channels_last if nhwc else torch.contiguous_format)
    x = x.contiguous(memory_format=torch.channels_last) if nhwc else x.contiguous()
    eps_fn = method.denoiser(z)[0] if z is not None else method.denoiser()[0]
    t = torch.full((x.shape[0],), 500)
    times = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            eps_fn(x, t)
            if i:
                times.append(time.perf_counter() - t0)
    method.to(memory_format=torch.contiguous_format)
    return statistics.median(times) / x.shape[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--forward-batch", type=int, nargs="+", default=[256, 64, 16],
                    help="forward batch per size (one value: all sizes)")
    ap.add_argument("--train-batch", type=int, nargs="+", default=[32, 32, 8], help="training batch per size")
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "channels_last_cpu.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not precision.cpu_has_bf16():
        print("error: this CPU has no native bf16 (AVX512-BF16/AMX): nothing to compare", file=sys.stderr)
        return 2

    def per_size(values: list[int], i: int) -> int:
        return values[i] if len(values) > 1 else values[0]

    cpu = torch.device("cpu")
    results: dict[str, Any] = {}
    for i, size in enumerate(args.sizes):
        built = build_at(size)
        shape = (built["data"]["channels"], size, size)
        fb, tb = per_size(args.forward_batch, i), per_size(args.train_batch, i)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(fb, *shape, generator=g)
        z = torch.randn(fb, built["diffae"].latent_dim, generator=g)
        rounds = []
        for r in range(args.rounds):
            row: dict[str, dict[str, float]] = {}
            for net in ("dpm", "diffae"):
                m = built[net]
                for layout, setting in LAYOUTS.items():
                    fwd = time_forward(m, x, z if net == "diffae" else None, layout, repeats=2)
                    m.train()
                    step = bench.time_training_steps(m, shape, tb, args.train_steps, 1, cpu, amp="bf16",
                                                     channels_last=setting)["seconds_per_step"]
                    m.to(memory_format=torch.contiguous_format)
                    row[f"{net}_{layout}"] = {"forward_s_per_image": fwd, "train_step_s": step}
                    print(f"{size:3d} px round {r} {net:6s} {layout}: forward {fwd * 1e3:.3f} ms/img, "
                          f"step {step:.3f} s", flush=True)
            rounds.append(row)
        summary = {}
        for net in ("dpm", "diffae"):
            summary[net] = {key: statistics.median(rd[f"{net}_nchw"][key] / rd[f"{net}_nhwc"][key] for rd in rounds)
                            for key in ("forward_s_per_image", "train_step_s")}
        results[str(size)] = {"forward_batch": fb, "train_batch": tb, "rounds": rounds,
                              "nchw_over_nhwc_median": summary}
    record = {"created": utc_now(), "code_version": code_version(), "machine": cpu_name(), "torch": torch.__version__,
              "threads": args.threads, "rounds": args.rounds, "load_average_1min": os.getloadavg()[0],
              "cpu_channels_last_min_size": precision.CPU_CHANNELS_LAST_MIN_SIZE, "sizes": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    lines = [f"# NCHW vs channels_last for bf16 networks on a CPU ({args.threads} thread(s), {record['machine']})", "",
             f"{record['created']}, commit {record['code_version']}, torch {torch.__version__}; {args.rounds} "
             "interleaved rounds. Ratio = NCHW time / NHWC time, median over rounds (> 1: NHWC faster).", "",
             "| size | network | forward batch | forward NCHW/NHWC | train batch | train step NCHW/NHWC |",
             "|---|---|---|---|---|---|"]
    for size, res in results.items():
        for net, ratios in res["nchw_over_nhwc_median"].items():
            lines.append(f"| {size} px | {net} | {res['forward_batch']} | {ratios['forward_s_per_image']:.2f} | "
                         f"{res['train_batch']} | {ratios['train_step_s']:.2f} |")
    lines += ["", f"Default rule (`pdae.precision.CPU_CHANNELS_LAST_MIN_SIZE` = "
              f"{precision.CPU_CHANNELS_LAST_MIN_SIZE}): NHWC on a CPU from that size, NCHW below it; always NHWC "
              "on CUDA. 1-min load average at the end: " + f"{record['load_average_1min']:.1f}."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
