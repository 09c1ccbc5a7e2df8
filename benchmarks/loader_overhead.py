"""Data-loader overhead of training: how long a step waits for its batch, after warm-up.

    python benchmarks/loader_overhead.py --workers 8 --batch 128 --chunk 16 --batches 3
    python benchmarks/loader_overhead.py --workers 8 --batch 128 --loader-only --batches 20

Builds a Diff-AE-format FFHQ LMDB (256 px PNGs, the layout of the paper configs' `ffhq256.lmdb`; content:
random crops of the two photographs scikit-learn ships, so PNG sizes and decode times are those of
photographs) and reads it with the training loop's own loader (`pdae.training.batch_loader`: persistent
workers, prefetch, the deterministic resumable order of `IndexBatches`), resized to 128 px as
config/train/ffhq128 does. The consumer is the real PDAE training step at the FFHQ128 architecture
(`pdae.bench` preset ffhq128, `pdae.training.train_step` in the default precision): one global batch of
--batch images computed as --batch/--chunk steps of --chunk images (a whole batch of 128 does not fit in
this machine's 24 GiB; on a GPU use --chunk 128). For every batch after --warmup ones it records the wait
for `next(loader)` and the step time; the overhead is wait / (wait + step).

Writes JSON (machine, threads, workers, commit, per-batch times) to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pdae.bench import PRESETS, build_methods  # noqa: E402
from pdae.provenance import code_version, utc_now  # noqa: E402
from pdae.training import (  # noqa: E402
    EMA, IndexBatches, Stepper, adam_optimizer, amp_enabled, batch_loader, channels_last_enabled, resolve_device,
    train_step,
)


def write_photo_lmdb(path: Path, n: int, size: int = 256, seed: int = 0) -> None:
    """n PNGs of random size x size crops (and flips) of scikit-learn's sample photographs, keys as Diff-AE's
    FFHQ LMDB (f"{size}-{i:05d}", plus b"length")."""
    import lmdb
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    env = lmdb.open(str(path), map_size=1 << 32)
    with env.begin(write=True) as txn:
        for i in range(n):
            img = photos[i % len(photos)]
            y, x = rng.integers(0, img.shape[0] - size), rng.integers(0, img.shape[1] - size)
            crop = img[y : y + size, x : x + size][:, :: rng.choice([-1, 1])]
            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(crop)).save(buf, format="PNG")
            txn.put(f"{size}-{i:05d}".encode(), buf.getvalue())
        txn.put(b"length", str(n).encode())
    env.close()


def measure(dataset: torch.utils.data.Dataset, workers: int, batch: int, chunk: int, batches: int, warmup: int,
            device: torch.device) -> dict:
    """Per-batch loader wait and step time of the FFHQ128 PDAE step consuming the loader's batches."""
    pdae = build_methods("ffhq128")["pdae"].to(device).train()
    use_amp = amp_enabled("auto", device, "images")
    nhwc = channels_last_enabled("auto", device, "images", use_amp, 128)
    if nhwc:
        pdae.to(memory_format=torch.channels_last)
    params = pdae.trainable_parameters()
    st = Stepper(pdae, pdae, adam_optimizer(params, lr=1e-4), EMA(pdae, 0.9999), params, use_amp, None, device)
    gen = torch.Generator(device).manual_seed(0)
    loader = iter(batch_loader(dataset, IndexBatches(0, len(dataset), 0, batch, warmup + batches), workers,
                               pin_memory=device.type == "cuda"))
    rows = []
    for k in range(warmup + batches):
        t0 = time.perf_counter()
        x, y = next(loader)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        t1 = time.perf_counter()
        for i in range(0, batch, chunk):
            xc = x[i : i + chunk]
            train_step(st, xc.contiguous(memory_format=torch.channels_last) if nhwc else xc, y[i : i + chunk], gen,
                       1e-4, k * batch // chunk + i // chunk + 1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        rows.append({"batch": k, "warmup": k < warmup, "wait_s": t1 - t0, "step_s": t2 - t1})
        print(f"batch {k}{' (warm-up)' if k < warmup else ''}: waited {t1 - t0:.3f} s, step {t2 - t1:.1f} s", flush=True)
    timed = [r for r in rows if not r["warmup"]]
    wait, step = sum(r["wait_s"] for r in timed), sum(r["step_s"] for r in timed)
    return {"per_batch": rows, "wait_s_mean": wait / len(timed), "step_s_mean": step / len(timed),
            "overhead_share": wait / (wait + step), "precision": "bf16" if use_amp else "fp32", "channels_last": nhwc}


def measure_loader_only(dataset: torch.utils.data.Dataset, workers: int, batch: int, batches: int,
                        warmup: int) -> dict:
    """The loader alone, batches taken back to back: its sustained rate is the fastest step it can feed (on a
    GPU node the step is far shorter than here, so this, not the CPU step, says whether the loader keeps up)."""
    loader = iter(batch_loader(dataset, IndexBatches(0, len(dataset), 0, batch, warmup + batches), workers))
    rows = []
    for k in range(warmup + batches):
        t0 = time.perf_counter()
        next(loader)
        rows.append({"batch": k, "warmup": k < warmup, "wait_s": time.perf_counter() - t0})
        print(f"batch {k}{' (warm-up)' if k < warmup else ''}: {rows[-1]['wait_s']:.3f} s", flush=True)
    timed = [r["wait_s"] for r in rows if not r["warmup"]]
    per_batch = sum(timed) / len(timed)
    return {"per_batch": rows, "loader_s_per_batch": per_batch, "loader_images_per_s": batch / per_batch,
            "step_s_for_5_percent": per_batch * 19}  # wait / (wait + step) <= 5 % if the loader idled


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--chunk", type=int, default=16, help="images per forward/backward (the batch in chunks)")
    ap.add_argument("--batches", type=int, default=3, help="timed batches after warm-up")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--images", type=int, default=1024, help="images in the generated LMDB")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None)
    ap.add_argument("--loader-only", action="store_true",
                    help="no training step: the loader's sustained rate (batches back to back)")
    args = ap.parse_args(argv)
    if args.batch % args.chunk:
        ap.error("--batch must be a multiple of --chunk")
    from pdae.data import build_dataset

    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ffhq256.lmdb"
        write_photo_lmdb(path, args.images)
        dataset = build_dataset({"name": "lmdb", "variant": "ffhq", "path": str(path), "image_size": 128,
                                 "channels": 3, "hflip": True}, split="all")
        if args.loader_only:
            result = measure_loader_only(dataset, args.workers, args.batch, args.batches, args.warmup)
        else:
            result = measure(dataset, args.workers, args.batch, args.chunk, args.batches, args.warmup, device)
    record = {"created": utc_now(), "code_version": code_version(), "torch": torch.__version__,
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "threads": torch.get_num_threads(), "workers": args.workers, "batch": args.batch, "chunk": args.chunk,
              "architecture": "ffhq128 " + json.dumps(PRESETS["ffhq128"]["unet"]), **result}
    if args.loader_only:
        print(f"loader alone: {result['loader_s_per_batch']:.3f} s a batch of {args.batch} "
              f"({result['loader_images_per_s']:.0f} img/s, {args.workers} workers)")
    else:
        print(f"loader overhead: {100 * result['overhead_share']:.2f} % of the step "
              f"(wait {result['wait_s_mean']:.3f} s, step {result['step_s_mean']:.1f} s, {args.workers} workers)")
    kind = "loader_only" if args.loader_only else "loader_overhead"
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / f"{kind}_{record['device'].replace(' ', '_')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
