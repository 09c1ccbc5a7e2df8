"""Speed of the default precision path against fp32, in one run with interleaved rounds, and its agreement.

    python benchmarks/speed_precision.py --preset celeba64 --threads 1 --rounds 3

Three variants of the same networks and weights (`pdae.bench` preset; celeba64 = the paper-scale CelebA64
U-Net, PDAE encoder and gradient estimator of config/train/celeba64):

  fp32      NCHW, fp32: the training step and samplers as they were before bf16 (the official code's path)
  bf16      bf16 autocast, NCHW
  bf16_cl   bf16 autocast with channels_last weights and inputs: what `pdae train` (train.amp / channels_last
            auto) and `--precision auto` sampling use on a CUDA GPU, and on a CPU with AVX512-BF16/AMX from 32 px
            (pdae.precision.CPU_CHANNELS_LAST_MIN_SIZE; below that the samplers of this variant run NCHW too)

Timed per round, variants interleaved (fp32, bf16, bf16_cl, fp32, ...) so drifts of the machine hit all alike:

  train     the PDAE training step `pdae.training.train_step` (the loop's own), batch --batch-size
  sample    shifted DDIM (paper Eq. 6) with --steps steps of --sample-batch images, `eval.sample.decode`
  encode    DDIM inversion (paper Eq. 8) with the shift, --steps steps, `eval.reconstruct.infer_x_T`

Agreement with fp32 (the networks' all-zero output layers are re-drawn first so eps and G are not identically
zero): max abs error of eps_theta and G on fixed (x_t, t), and of a --steps-step DDIM sample in [-1, 1].

Writes JSON (machine, threads, precision, commit, every round) and a Markdown summary next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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

from gpu_check import redraw_zero_weights  # noqa: E402

from eval.reconstruct import infer_x_T  # noqa: E402
from eval.sample import decode  # noqa: E402
from pdae import precision  # noqa: E402
from pdae.bench import PRESETS, build_methods, time_training_steps  # noqa: E402
from pdae.diffusion.gaussian import q_sample  # noqa: E402
from pdae.provenance import code_version, utc_now  # noqa: E402

VARIANTS = {  # name: (train.amp, train.channels_last, sampling --precision)
    "fp32": ("off", "off", "fp32"),
    "bf16": ("bf16", "off", "bf16"),
    "bf16_cl": ("bf16", "on", "bf16"),
}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def time_sampling(pdae: Any, x_T: torch.Tensor, z: torch.Tensor, steps: int, variant: str) -> tuple[float, float]:
    """Seconds for a shifted DDIM decode and a DDIM inversion of the batch under `variant`."""
    _, channels_last, prec = VARIANTS[variant]
    if channels_last == "off" and prec == "bf16":  # autocast without NHWC: bypass the NHWC part of the wrappers
        return _time_nchw_bf16(pdae, x_T, z, steps)
    t0 = time.perf_counter()
    decode(pdae, z, x_T, steps, batch_size=len(x_T), precision=prec)
    t1 = time.perf_counter()
    infer_x_T(pdae, x_T.clamp(-1, 1), z, steps, batch_size=len(x_T), precision=prec)
    return t1 - t0, time.perf_counter() - t1


def _time_nchw_bf16(pdae: Any, x_T: torch.Tensor, z: torch.Tensor, steps: int) -> tuple[float, float]:
    from pdae.diffusion.sampling import ddim_invert, ddim_sample

    eps_fn, shift_fn = pdae.denoiser(z)

    def autocast_only(fn):  # noqa: ANN001, ANN202
        def wrapped(x_t, t):  # noqa: ANN001, ANN202
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = fn(x_t, t)
            return tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()
        return wrapped

    with torch.inference_mode():
        t0 = time.perf_counter()
        ddim_sample(autocast_only(eps_fn), x_T, pdae.schedule, steps, shift_fn=autocast_only(shift_fn))
        t1 = time.perf_counter()
        ddim_invert(autocast_only(eps_fn), x_T.clamp(-1, 1), pdae.schedule, steps, shift_fn=autocast_only(shift_fn))
    return t1 - t0, time.perf_counter() - t1


def agreement(pdae: Any, x0: torch.Tensor, x_T: torch.Tensor, z: torch.Tensor, steps: int) -> dict[str, dict[str, float]]:
    """Max abs error against fp32 of eps_theta, G (at t = 50, 500, 950) and a `steps`-step DDIM sample."""
    n = len(x0)
    t = torch.tensor([50, 500, 950] * n)[:n]
    x_t = q_sample(pdae.schedule, x0, t, torch.randn(x0.shape, generator=torch.Generator().manual_seed(3)))
    _, shift_fn = pdae.denoiser(z)
    out = {}
    with torch.inference_mode():
        ref_eps, ref_g = shift_fn(x_t, t)
        ref_sample = decode(pdae, z, x_T, steps, batch_size=n, precision="fp32")
        for prec in ("bf16",):
            with precision.memory_format(pdae, torch.device("cpu"), prec, x_t.shape[-1]):
                eps, g = precision.wrap(shift_fn, torch.device("cpu"), prec)(x_t, t)
            sample = decode(pdae, z, x_T, steps, batch_size=n, precision=prec)
            out["bf16_cl"] = {
                "eps_max_abs": float((eps - ref_eps).abs().max()), "eps_rms_fp32": float(ref_eps.pow(2).mean().sqrt()),
                "G_max_abs": float((g - ref_g).abs().max()), "G_rms_fp32": float(ref_g.pow(2).mean().sqrt()),
                f"ddim{steps}_sample_max_abs": float((sample - ref_sample).abs().max()),
                f"ddim{steps}_sample_mean_abs": float((sample - ref_sample).abs().mean()),
            }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="celeba64", choices=sorted(PRESETS))
    ap.add_argument("--batch-size", type=int, default=None, help="training batch (default: the preset's)")
    ap.add_argument("--sample-batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps of sampling and encoding")
    ap.add_argument("--train-steps", type=int, default=2, help="timed training steps per variant and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="JSON (default benchmarks/results/speed_precision_<preset>.json)")
    args = ap.parse_args(argv)
    if not precision.cpu_has_bf16():
        print("speed_precision: this CPU has no native bf16 (AVX512-BF16/AMX); the default path is fp32 here")
        return 0
    torch.set_num_threads(args.threads)
    dev = torch.device("cpu")
    methods = build_methods(args.preset)
    pdae = methods["pdae"]
    g = torch.Generator().manual_seed(0)
    redraw_zero_weights(pdae, g)
    data = PRESETS[args.preset]["data"]
    shape = (data["channels"], data["image_size"], data["image_size"])
    batch = args.batch_size or PRESETS[args.preset]["batch_size"]
    x0 = torch.rand(args.sample_batch, *shape, generator=g) * 2 - 1
    x_T = torch.randn(args.sample_batch, *shape, generator=g)
    pdae.eval()
    with torch.inference_mode():
        z = pdae.encode(x0)
    agree = agreement(pdae, x0, x_T, z, args.steps)
    print(json.dumps(agree, indent=1), flush=True)

    load_before = os.getloadavg()
    rounds: list[dict[str, dict[str, float]]] = []
    for r in range(args.rounds):
        row: dict[str, dict[str, float]] = {}
        for variant, (amp, cl, _) in VARIANTS.items():
            pdae.train()
            tr = time_training_steps(pdae, shape, batch, args.train_steps, 1, dev, amp, cl)
            pdae.eval()
            pdae.to(memory_format=torch.contiguous_format)
            s, e = time_sampling(pdae, x_T, z, args.steps, variant)
            row[variant] = {"train_step_s": tr["seconds_per_step"], "sample_s": s, "encode_s": e}
            print(f"round {r} {variant:8s} train {tr['seconds_per_step']:.2f} s/step  sample {s:.2f} s  encode {e:.2f} s",
                  flush=True)
        rounds.append(row)

    summary = {}
    for variant in VARIANTS:
        summary[variant] = {}
        for key in ("train_step_s", "sample_s", "encode_s"):
            ratios = [rd["fp32"][key] / rd[variant][key] for rd in rounds]
            summary[variant][key] = {"median_s": statistics.median(rd[variant][key] for rd in rounds),
                                     "speedup_vs_fp32_per_round": ratios,
                                     "speedup_vs_fp32_median": statistics.median(ratios)}
    record = {
        "created": utc_now(), "code_version": code_version(), "machine": cpu_name(), "torch": torch.__version__,
        "threads": args.threads, "preset": args.preset, "train_batch": batch, "sample_batch": args.sample_batch,
        "ddim_steps": args.steps, "load_average_1min": [load_before[0], os.getloadavg()[0]], "rounds": rounds, "summary": summary, "agreement_vs_fp32": agree,
        "params": {k: sum(p.numel() for p in m.parameters()) for k, m in (("dpm", methods["dpm"]), ("pdae", pdae))},
        "trainable_params_pdae": sum(p.numel() for p in pdae.trainable_parameters()),
    }
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / f"speed_precision_{args.preset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    lines = [f"# Speed of bf16 / channels_last vs fp32 ({args.preset}, {args.threads} thread(s), {record['machine']})", "",
             f"{record['created']}, commit {record['code_version']}, torch {torch.__version__}; {args.rounds} interleaved "
             f"rounds; training batch {batch}, sampling/encoding batch {args.sample_batch} with {args.steps} DDIM steps.", "",
             "| variant | train step s | speed-up | DDIM sample s | speed-up | DDIM encode s | speed-up |",
             "|---|---|---|---|---|---|---|"]
    for variant, ss in summary.items():
        cells = []
        for key in ("train_step_s", "sample_s", "encode_s"):
            cells += [f"{ss[key]['median_s']:.2f}", f"{ss[key]['speedup_vs_fp32_median']:.2f}x"]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines += ["", "Medians over rounds; speed-up = fp32 time / variant time within a round. 1-min load average "
              f"before/after: {load_before[0]:.1f} / {os.getloadavg()[0]:.1f} (other jobs on the machine add noise).", "",
              "Agreement of bf16_cl with fp32: " + ", ".join(f"{k} {v:.3g}" for k, v in agree["bf16_cl"].items())]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
