"""GPU check: bf16 autocast and channels_last against fp32 (optionally torch.compile), then training images/s.

Run through `benchmarks/gpu_check.sh` on a machine with a CUDA GPU. Two parts:

1. Correctness, on one fixed input at the preset's architecture (default FFHQ128, docs/protocol.md §2.1-2.3):
   eps_theta(x_t, t) of the frozen prior U-Net, G(x_t, z, t) of PDAE's gradient estimator (z = E(x0)),
   the Diff-AE eps and PDAE's training loss, each computed in strict fp32 (TF32 off) and again under
   bf16 autocast, with channels_last weights and input, and (with --compile) through torch.compile. The
   relative L2 error ||a - a_fp32|| / ||a_fp32|| must stay under BOUNDS. The networks' zero-initialised
   output convolutions (which make eps and G identically 0 at initialisation) are re-drawn first.
2. Throughput: `pdae.bench.run_benchmark` (the `pdae bench` protocol: random images through the training
   loop's own `pdae.training.train_step` in fp32) and the same step the way `pdae train` runs on CUDA (bf16
   autocast, channels_last; optionally compiled), for PDAE and Diff-AE. The paper reports 81.57 (PDAE) vs
   75.41 (Diff-AE) images/s per A100 at 128 px (paper §4.1).
3. Data path (--loader): `benchmarks/loader_overhead.py` on the GPU: the FFHQ128 PDAE step at batch 128 fed
   by the training loader with 8 workers from a generated 256 px LMDB; the loader's share of step time.

Everything goes to one JSON file (default benchmarks/results/gpu_check_<date>.json). Exit status 0 when
all checks pass, 1 when one fails, 0 with a message (nothing written) when the device is CUDA and there
is none. `--device cpu --preset embedded` runs the same code on the CPU (a smoke test of this script).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO, REPO / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from pdae.bench import PRESETS, build_methods, run_benchmark, time_training_steps  # noqa: E402
from pdae.methods import DiffAE  # noqa: E402
from pdae.methods.pdae import PDAE  # noqa: E402

# Largest accepted relative L2 error against strict fp32, per variant. bf16 keeps 8 mantissa bits (unit
# roundoff 2^-9 = 2e-3); through ~100 layers the error of a random-weight U-Net grows to about 1e-2.
BOUNDS = {"bf16": 5e-2, "channels_last": 1e-4, "bf16_channels_last": 5e-2, "compile": 1e-3}
PROBE_T = (0, 100, 500, 999)  # one x_t per timestep: nearly clean to pure noise


def relative_error(a: Tensor, ref: Tensor) -> float:
    """||a - ref||_2 / ||ref||_2 over all elements, in float64 (0 when both are 0)."""
    a, ref = a.detach().double().cpu(), ref.detach().double().cpu()
    den = ref.norm().item()
    num = (a - ref).norm().item()
    return num / den if den > 0 else (0.0 if num == 0 else math.inf)


def redraw_zero_weights(module: nn.Module, generator: torch.Generator) -> int:
    """Give every all-zero weight (zero_module'd output convs) N(0, 1/fan_in) values; returns how many."""
    count = 0
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() > 1 and not p.any():
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=generator) / math.sqrt(fan_in))
                count += 1
    return count


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """TF32 off for matmuls and convolutions (the fp32 reference), restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def make_probe(preset: str, device: torch.device) -> dict[str, Tensor]:
    """Fixed inputs: x0 in [-1, 1], noise, t = PROBE_T and x_t = q_sample(x0, t, noise). [N, C, H, W]."""
    data = PRESETS[preset]["data"]
    g = torch.Generator().manual_seed(1234)
    shape = (len(PROBE_T), data["channels"], data["image_size"], data["image_size"])
    x0 = torch.rand(shape, generator=g) * 2 - 1
    noise = torch.randn(shape, generator=g)
    return {"x0": x0.to(device), "noise": noise.to(device), "t": torch.tensor(PROBE_T, device=device)}


def network_outputs(pdae: PDAE, diffae: DiffAE, probe: dict[str, Tensor], channels_last: bool,
                    wrap: Callable[[nn.Module], nn.Module] = lambda m: m) -> dict[str, Tensor]:
    """eps_theta, G, Diff-AE eps and the PDAE loss for the probe, as fp32 contiguous tensors (eval mode)."""
    from pdae.diffusion.gaussian import q_sample

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x0 = probe["x0"].contiguous(memory_format=fmt)
    x_t = q_sample(pdae.schedule, probe["x0"], probe["t"], probe["noise"]).contiguous(memory_format=fmt)
    t = probe["t"]
    y = torch.zeros(len(t), dtype=torch.long, device=t.device)
    with torch.no_grad():
        z = wrap(pdae.encoder)(x0)
        eps, g = wrap(pdae.estimator)(x_t, t, z)
        diffae_eps = wrap(diffae.model)(x_t, t, diffae.model.encode(x0))
        gen = torch.Generator(t.device).manual_seed(7)
        loss = pdae.loss(x0, y, gen)
    out = {"eps": eps, "G": g, "z": z, "diffae_eps": diffae_eps, "pdae_loss": loss}
    return {k: v.float().contiguous() for k, v in out.items()}


def set_memory_format(modules: list[nn.Module], channels_last: bool) -> None:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for m in modules:
        m.to(memory_format=fmt)


def check_numerics(preset: str, device: torch.device, compile_check: bool) -> dict[str, Any]:
    """Relative errors of every variant against strict fp32, and whether each is within BOUNDS."""
    torch.manual_seed(0)
    methods = build_methods(preset)
    pdae, diffae = methods["pdae"], methods["diffae"]
    g = torch.Generator().manual_seed(0)
    redrawn = redraw_zero_weights(pdae, g) + redraw_zero_weights(diffae, g)
    for m in (pdae, diffae):
        m.to(device).eval()
    probe = make_probe(preset, device)
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731

    variants: dict[str, dict[str, Tensor]] = {}
    with strict_fp32():
        ref = network_outputs(pdae, diffae, probe, channels_last=False)
        with autocast():
            variants["bf16"] = network_outputs(pdae, diffae, probe, channels_last=False)
        set_memory_format([pdae, diffae], True)
        variants["channels_last"] = network_outputs(pdae, diffae, probe, channels_last=True)
        with autocast():
            variants["bf16_channels_last"] = network_outputs(pdae, diffae, probe, channels_last=True)
        set_memory_format([pdae, diffae], False)
        if compile_check:
            torch._dynamo.reset()
            variants["compile"] = network_outputs(pdae, diffae, probe, channels_last=False, wrap=torch.compile)

    errors = {v: {k: relative_error(out[k], ref[k]) for k in ref} for v, out in variants.items()}
    passed = {v: all(e <= BOUNDS[v] for e in errs.values()) for v, errs in errors.items()}
    scale = {k: ref[k].double().norm().item() / math.sqrt(ref[k].numel()) for k in ref}
    del methods, pdae, diffae
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"probe_t": list(PROBE_T), "redrawn_zero_weights": redrawn, "fp32_rms": scale, "relative_error": errors,
            "bounds": {v: BOUNDS[v] for v in variants}, "passed": passed}


def amp_throughput(preset: str, batch_size: int, steps: int, warmup: int, device: torch.device,
                   compile_model: bool) -> dict[str, Any]:
    methods = build_methods(preset)
    data = PRESETS[preset]["data"]
    shape = (data["channels"], data["image_size"], data["image_size"])
    results = {}
    for name in ("pdae", "diffae"):
        results[name] = time_training_steps(methods[name], shape, batch_size, steps, warmup, device, amp="bf16",
                                            channels_last="on", compile_model=compile_model)
        methods[name].to("cpu")
        if device.type == "cuda":
            torch.cuda.empty_cache()
        r = results[name]
        print(f"{name:11s} {r['images_per_s']:9.1f} images/s  ({1000 * r['seconds_per_step']:.1f} ms/step) "
              f"bf16 autocast + channels_last{' + compile' if compile_model else ''}", flush=True)
    ratio = results["pdae"]["images_per_s"] / results["diffae"]["images_per_s"]
    print(f"PDAE / Diff-AE throughput ratio (bf16): {ratio:.3f}")
    return {"amp": "bf16", "channels_last": True, "compile": compile_model, "results": results,
            "pdae_over_diffae": ratio}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu (cpu: a smoke test of this script)")
    p.add_argument("--preset", default="ffhq128", choices=sorted(PRESETS), help="network sizes")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=20, help="timed training steps per method")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="also check and time torch.compile (minutes)")
    p.add_argument("--out", default=None, help="JSON file (default benchmarks/results/gpu_check_<date>.json)")
    p.add_argument("--loader", action="store_true", help="also measure the data loader's share of a batch-128 step")
    args = p.parse_args(argv)

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device available (torch.cuda.is_available() is False); nothing checked or written")
        return 0
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / f"gpu_check_{datetime.date.today()}.json"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"gpu_check: {name}, torch {torch.__version__} (CUDA {torch.version.cuda}), preset {args.preset}",
          flush=True)

    t0 = time.perf_counter()
    checks = check_numerics(args.preset, device, args.compile)
    for variant, errs in checks["relative_error"].items():
        worst = max(errs, key=errs.get)
        verdict = "ok" if checks["passed"][variant] else "FAILED"
        print(f"check {variant:19s} {verdict:6s} worst relative error {errs[worst]:.2e} ({worst}; "
              f"bound {BOUNDS[variant]:.0e})", flush=True)
    print(f"checks took {time.perf_counter() - t0:.1f} s", flush=True)

    fp32 = run_benchmark(args.preset, args.batch_size, args.steps, args.warmup, str(device), None)
    amp = amp_throughput(args.preset, args.batch_size, args.steps, args.warmup, device, args.compile)
    loader = None
    if args.loader:
        import tempfile

        from loader_overhead import measure, write_photo_lmdb
        from pdae.data import build_dataset

        with tempfile.TemporaryDirectory() as tmp:
            write_photo_lmdb(Path(tmp) / "ffhq256.lmdb", 1024)
            ds = build_dataset({"name": "lmdb", "variant": "ffhq", "path": str(Path(tmp) / "ffhq256.lmdb"),
                                "image_size": 128, "channels": 3}, split="all")
            loader = measure(ds, 8, 128, 128, 5, 2, device)
        print(f"loader: {100 * loader['overhead_share']:.2f} % of a batch-128 step (8 workers)", flush=True)
    record = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device_name": name, "torch": torch.__version__, "cuda": torch.version.cuda,
        "code_version": fp32["code_version"], "preset": args.preset, "batch_size": args.batch_size,
        "steps": args.steps, "warmup": args.warmup, "checks": checks, "throughput_fp32": fp32,
        "throughput_bf16": amp, "loader": loader, "passed": all(checks["passed"].values()),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"gpu_check: {'all checks passed' if record['passed'] else 'a check FAILED'}; wrote {out}")
    return 0 if record["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
