"""Training efficiency of PDAE vs Diff-AE (issue 4 item 8) and the loss-weighting ablation (item 9).

REFERENCE.md §4.4 / §5.9: the paper reports throughput (PDAE 81.57 vs Diff-AE 75.41 imgs/s/A100) and that
PDAE needs about 1/3-1/2 of Diff-AE's training images "for loss convergence"; its supporting curve was not
found. We measure instead what can be compared across the two methods (their losses are different
objectives): reconstruction quality with random x_T (z = E(x_0), x_T ~ N(0, I), DDIM; REFERENCE.md §5.1)
of every EMA snapshot (`<model>/snapshots/img{N:09d}/`, written by pdae.training) versus images seen and
wall time, the training loss and images/s from `train_log.jsonl`, and

    images_ratio = images PDAE needs to reach Diff-AE's final quality / Diff-AE's final images seen,

with linear interpolation between snapshots (`images_to_reach`). PDAE's images exclude those of its
pre-trained DPM. The record's `reached` says how to read the value: "yes" (interpolated between snapshots),
"first" (PDAE's first snapshot already reaches the target: an upper bound), "no" (never reached: the lower bound
PDAE's final images / Diff-AE's).

Sub-commands:
    python -m eval efficiency --pdae DIR... --diffae DIR... --out FILE [--steps 20 --num-images 64 ...]
    python -m eval ablation --runs DIR... --out FILE     (PDAE runs with method.weighting snr and uniform)

Records (eval/common.py vocabulary): table `efficiency`: method, images_seen, wall_time_s, metric in
{ssim, mse, lpips, loss, images_per_s}; metric images_ratio / wall_time_ratio with `quality_metric` and
`reached`. Table `ablation`: weighting, metric in {ssim, mse, loss_cv, loss_final}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Sequence

from torch import Tensor

from eval.common import (
    add_backend_args, backend_from_args, data_spec, eval_images, provenance, record, resolve_device, write_records,
)
from eval.reconstruct import ReconSetting, recon_metrics, reconstruct_all

SNAPSHOTS_DIR = "snapshots"
LOG_FILE = "train_log.jsonl"
QUALITY_METRICS = ("ssim", "mse", "lpips")
HIGHER_IS_BETTER = {"ssim": True, "mse": False, "lpips": False}
RECON_NOTE = ("reconstruction with random x_T as Table 1 (eval.reconstruct): z = E(x_0), x_T ~ N(0, I) per image "
              "(eval.common.image_noise(seed)), deterministic DDIM, decoded images clamped to [-1, 1] before the metrics")


# ----------------------------------------------------------------------------------------------
# Pure functions
# ----------------------------------------------------------------------------------------------

def images_to_reach(curve: Sequence[tuple[float, float]], target: float, higher_is_better: bool = True) -> float | None:
    """The first x (images seen, or wall time) at which a quality curve reaches `target`.

    `curve` is [(x, value)] sorted by x (snapshots). Between the last snapshot below the target and the first
    at or beyond it, x is interpolated linearly: x_0 + (target - v_0) / (v_1 - v_0) * (x_1 - x_0). A curve that
    starts at the target returns its first x; one that never reaches it returns None.
    """
    points = sorted((float(x), float(v)) for x, v in curve)
    sign = 1.0 if higher_is_better else -1.0
    for i, (x, v) in enumerate(points):
        if sign * (v - target) >= 0:
            if i == 0:
                return x
            x0, v0 = points[i - 1]
            return x0 + (target - v0) / (v - v0) * (x - x0)
    return None


def reach_ratio(curve_a: Sequence[tuple[float, float]], curve_b: Sequence[tuple[float, float]],
                higher_is_better: bool = True) -> tuple[float, str]:
    """(x_a needed to reach b's final value / b's final x, status).

    status "yes": reached between two snapshots (interpolated); "first": a's first snapshot already reaches it (the
    ratio is an upper bound); "no": never reached, and the ratio is a's final x / b's, a lower bound."""
    if not curve_a or not curve_b:
        raise ValueError("reach_ratio: empty curve")
    b_x, b_v = max(curve_b)
    if b_x <= 0:
        raise ValueError(f"reach_ratio: reference curve ends at x = {b_x}")
    x = images_to_reach(curve_a, b_v, higher_is_better)
    if x is None:
        return max(curve_a)[0] / b_x, "no"
    return x / b_x, "first" if x == min(curve_a)[0] else "yes"


def loss_cv(losses: Sequence[float]) -> float:
    """Loss stability: coefficient of variation (population std / mean) of the last half of the logged losses
    (the later int(n/2) ... n-1 entries; all of them when fewer than 2)."""
    if not losses:
        raise ValueError("loss_cv: no loss values")
    tail = list(losses)[len(losses) // 2:] if len(losses) >= 2 else list(losses)
    mean = math.fsum(tail) / len(tail)
    if mean == 0:
        raise ValueError("loss_cv: mean loss is 0")
    return math.sqrt(math.fsum((v - mean) ** 2 for v in tail) / len(tail)) / abs(mean)


def mean_throughput(log: Sequence[dict[str, Any]], world_size: int = 1) -> float:
    """Images per second per device: the mean of the logged `images_per_s` without the first interval
    (start-up; kept when it is the only one), divided by the number of processes."""
    values = [float(r["images_per_s"]) for r in log]
    if not values:
        raise ValueError("mean_throughput: empty training log")
    values = values[1:] if len(values) > 1 else values
    return math.fsum(values) / len(values) / max(world_size, 1)


# ----------------------------------------------------------------------------------------------
# Model folders
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Snapshot:
    folder: Path
    images_seen: int
    wall_time_s: float


def _metadata(folder: Path) -> dict[str, Any]:
    path = folder / "metadata.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable metadata ({type(exc).__name__})") from None
    for key in ("images_seen", "wall_time_s"):
        if not isinstance(meta.get(key), (int, float)):
            raise ValueError(f"{path}: metadata key {key!r} missing or not a number")
    return meta


def list_snapshots(model_dir: str | Path, include_final: bool = True) -> list[Snapshot]:
    """The EMA snapshots `snapshots/img*/` of a model folder (and the final model), sorted by images seen."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ValueError(f"{model_dir}: model folder not found")
    folders = sorted(p for p in (model_dir / SNAPSHOTS_DIR).glob("img*") if p.is_dir()) \
        if (model_dir / SNAPSHOTS_DIR).is_dir() else []
    if include_final and (model_dir / "metadata.json").is_file():
        folders.append(model_dir)
    snaps: dict[int, Snapshot] = {}
    for folder in folders:
        meta = _metadata(folder)
        snaps.setdefault(int(meta["images_seen"]), Snapshot(folder, int(meta["images_seen"]), float(meta["wall_time_s"])))
    if not snaps:
        raise ValueError(f"{model_dir}: no snapshots ({SNAPSHOTS_DIR}/img*/) and no final model")
    return [snaps[k] for k in sorted(snaps)]


def read_train_log(model_dir: str | Path) -> list[dict[str, Any]]:
    """The lines of `train_log.jsonl` (step, images_seen, loss, lr, images_per_s, wall_time_s)."""
    path = Path(model_dir) / LOG_FILE
    if not path.is_file():
        raise ValueError(f"{path}: training log not found")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{path}:{n}: not JSON") from None
        missing = [k for k in ("images_seen", "loss", "images_per_s", "wall_time_s") if k not in row]
        if missing:
            raise ValueError(f"{path}:{n}: missing {missing[0]!r}")
        out.append(row)
    if not out:
        raise ValueError(f"{path}: empty training log")
    return out


# ----------------------------------------------------------------------------------------------
# Reconstruction quality of one model
# ----------------------------------------------------------------------------------------------

ReconstructFn = Callable[..., Tensor]


def reconstruct_random_xT(method: Any, x0: Tensor, *, steps: int, seed: int, batch_size: int) -> Tensor:
    """Table 1's random-x_T reconstruction through eval.reconstruct: z = E(x_0), x_T = image_noise(i, seed) per
    image, DDIM `steps` (PDAE: eps_theta shifted by G on every step, paper Eq. 6; Diff-AE: eps conditioned on z).
    x0: [N, C, H, W] in [-1, 1] -> [N, C, H, W] on the CPU."""
    setting = ReconSetting("random", int(steps))
    return reconstruct_all(method, x0, [setting], seed=seed, batch_size=batch_size)[setting]


def quality(x0: Tensor, x_rec: Tensor, backend: Any = None, metrics: Sequence[str] = QUALITY_METRICS) -> dict[str, float]:
    """Mean per-image SSIM and MSE (on [0, 1]) and LPIPS (on [-1, 1], via `backend`) of a reconstruction
    (eval.reconstruct.recon_metrics, which clamps x_rec to [-1, 1] first)."""
    if "lpips" in metrics and backend is None:
        raise ValueError("lpips needs a metric backend (--backend/--feature-net)")
    per_image = recon_metrics(x0, x_rec, backend if "lpips" in metrics else None)
    return {m: float(per_image[m].double().mean()) for m in metrics}


def evaluate_model(folder: str | Path, x0: Tensor, *, steps: int, seed: int, batch_size: int, device: Any,
                   backend: Any = None, metrics: Sequence[str] = QUALITY_METRICS,
                   reconstruct: ReconstructFn | None = None) -> tuple[Any, dict[str, float]]:
    """Load one model folder and measure its random-x_T reconstruction of x0 -> (method, {metric: mean})."""
    from pdae.methods import load_method

    method = load_method(folder, device)
    if method.name not in ("pdae", "diffae"):
        raise ValueError(f"{folder}: method {method.name!r} is not an autoencoder (pdae or diffae expected)")
    fn = reconstruct or reconstruct_random_xT
    x_rec = fn(method, x0, steps=steps, seed=seed, batch_size=batch_size)
    return method, quality(x0, x_rec.cpu(), backend, metrics)


def _run_seed(meta: dict[str, Any]) -> Any:
    return meta.get("seed", "-")


def curve_records(model_dir: str | Path, x0: Tensor, *, label: str, steps: int, seed: int, batch_size: int,
                  device: Any, backend: Any, metrics: Sequence[str], extra: dict[str, Any] | None = None,
                  reconstruct: ReconstructFn | None = None) -> tuple[list[dict[str, Any]], dict[str, list[tuple[float, float, float]]]]:
    """Records of every snapshot's quality, and the curves {metric: [(images_seen, wall_time_s, value)]}."""
    rows: list[dict[str, Any]] = []
    curves: dict[str, list[tuple[float, float, float]]] = {m: [] for m in metrics}
    backend_name = getattr(backend, "name", "-")
    for snap in list_snapshots(model_dir):
        method, values = evaluate_model(snap.folder, x0, steps=steps, seed=seed, batch_size=batch_size,
                                        device=device, backend=backend, metrics=metrics, reconstruct=reconstruct)
        prov = provenance(method, label)
        for metric, value in values.items():
            rows.append(record(prov, metric, value, backend_name if metric == "lpips" else "-", table="efficiency",
                               wall_time_s=snap.wall_time_s, steps=steps, **(extra or {})))
            curves[metric].append((snap.images_seen, snap.wall_time_s, value))
    return rows, curves


def log_records(model_dir: str | Path, label: str, prov: dict[str, Any], world_size: int = 1) -> list[dict[str, Any]]:
    """Training loss per log line (images_seen, wall_time_s) and the mean images/s per device."""
    log = read_train_log(model_dir)
    rows = [record({**prov, "images_seen": int(r["images_seen"])}, "loss", float(r["loss"]), table="efficiency",
                   wall_time_s=float(r["wall_time_s"]), steps="-") for r in log]
    rows.append(record({**prov, "images_seen": "-"}, "images_per_s", mean_throughput(log, world_size),
                       table="efficiency", wall_time_s="-", steps="-"))
    return rows


def pair_runs(a: Sequence[tuple[Any, Any]], b: Sequence[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Pair (seed, item) lists by equal seed; when no seed is shared, in order of seed."""
    by_seed = {str(s): item for s, item in b}
    pairs = [(item, by_seed[str(s)]) for s, item in a if str(s) in by_seed]
    if pairs:
        return pairs
    return list(zip([i for _, i in sorted(a, key=lambda p: str(p[0]))], [i for _, i in sorted(b, key=lambda p: str(p[0]))]))


def ratio_records(pdae: dict[str, Any], diffae: dict[str, Any], metrics: Sequence[str], steps: int) -> list[dict[str, Any]]:
    """images_ratio and wall_time_ratio of one PDAE/Diff-AE pair, per quality metric.

    pdae / diffae: {"prov": provenance of the final model, "curves": {metric: [(images, wall_s, value)]}}."""
    rows = []
    for metric in metrics:
        a, b = pdae["curves"][metric], diffae["curves"][metric]
        hib = HIGHER_IS_BETTER[metric]
        for name, idx in (("images_ratio", 0), ("wall_time_ratio", 1)):
            value, status = reach_ratio([(p[idx], p[2]) for p in a], [(p[idx], p[2]) for p in b], hib)
            rows.append(record({**pdae["prov"], "method": "pdae", "images_seen": "-"}, name, value, "-",
                               table="efficiency", wall_time_s="-", steps=steps, quality_metric=metric,
                               reached=status))
    return rows


# ----------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------

def _eval_set(first_model: str | Path, data: str | None, num_images: int) -> Tensor:
    """The first `num_images` held-out images of `data` (default: the data spec in the model's metadata.json)."""
    folder = Path(first_model)
    model = SimpleNamespace(metadata=_metadata(folder), folder=folder)
    x0, _, _ = eval_images(data_spec(model, data), num_images)
    return x0


def efficiency_records(pdae_dirs: Sequence[str | Path], diffae_dirs: Sequence[str | Path], *, steps: int = 20,
                       num_images: int = 64, seed: int = 0, batch_size: int = 64, device: Any = "cpu",
                       backend: Any = None, metrics: Sequence[str] = QUALITY_METRICS, data: str | None = None,
                       reconstruct: ReconstructFn | None = None) -> list[dict[str, Any]]:
    """All efficiency records of PDAE and Diff-AE runs (one folder per seed) on one held-out set."""
    if not pdae_dirs or not diffae_dirs:
        raise ValueError("efficiency needs at least one PDAE and one Diff-AE model folder")
    x0 = _eval_set(pdae_dirs[0], data, num_images)
    rows: list[dict[str, Any]] = []
    runs: dict[str, list[tuple[Any, dict[str, Any]]]] = {"pdae": [], "diffae": []}
    for label, dirs in (("pdae", pdae_dirs), ("diffae", diffae_dirs)):
        for folder in dirs:
            snap_rows, curves = curve_records(folder, x0, label=label, steps=steps, seed=seed, batch_size=batch_size,
                                              device=device, backend=backend, metrics=metrics, reconstruct=reconstruct)
            final_meta = _metadata(Path(folder))
            prov = dict(snap_rows[-1])
            prov = {k: prov[k] for k in ("dataset", "method", "seed", "images_seen", "code_version", "config")}
            prov["config"] = str(folder)
            rows += snap_rows + log_records(folder, label, prov, int(final_meta.get("world_size", 1) or 1))
            runs[label].append((_run_seed(final_meta), {"prov": prov, "curves": curves}))
    for p, d in pair_runs(runs["pdae"], runs["diffae"]):
        rows += ratio_records(p, d, metrics, steps)
    return rows


def snapshot_at(model_dir: str | Path, images: int | None) -> Path:
    """The folder of `model_dir`'s model after exactly `images` training images (a snapshot or the final model);
    None: the final model."""
    if images is None:
        return Path(model_dir)
    snaps = list_snapshots(model_dir)
    for snap in snaps:
        if snap.images_seen == images:
            return snap.folder
    seen = ", ".join(str(s.images_seen) for s in snaps)
    raise ValueError(f"{model_dir}: no snapshot at {images} images (has {seen}); add it to train.snapshot_images")


def ablation_records(run_dirs: Sequence[str | Path], *, steps: int = 20, num_images: int = 64, seed: int = 0,
                     batch_size: int = 64, device: Any = "cpu", data: str | None = None,
                     reconstruct: ReconstructFn | None = None, images: int | None = None) -> list[dict[str, Any]]:
    """Weighting ablation (paper §3.4): for each PDAE run, its `method.weighting` (snr | uniform), the
    reconstruction SSIM / MSE, loss_cv (last half of the log) and loss_final, all at the same budget: after
    `images` training images (a snapshot of a longer run, and the log up to it), else the final models."""
    if not run_dirs:
        raise ValueError("ablation needs PDAE model folders (--runs)")
    x0 = _eval_set(run_dirs[0], data, num_images)
    rows: list[dict[str, Any]] = []
    weightings = set()
    for run in run_dirs:
        folder = snapshot_at(run, images)
        method, values = evaluate_model(folder, x0, steps=steps, seed=seed, batch_size=batch_size, device=device,
                                        metrics=("ssim", "mse"), reconstruct=reconstruct)
        if method.name != "pdae":
            raise ValueError(f"{folder}: the weighting ablation compares PDAE runs, got {method.name!r}")
        weighting = method.method_kwargs.get("weighting", "snr")
        weightings.add(weighting)
        prov = provenance(method)
        cols = {"table": "ablation", "weighting": weighting, "steps": steps}
        rows += [record(prov, k, v, "-", **cols) for k, v in values.items()]
        log = read_train_log(run)
        losses = [float(r["loss"]) for r in log if images is None or int(r["images_seen"]) <= images]
        if not losses:
            raise ValueError(f"{run}: no logged loss up to {images} images")
        rows.append(record(prov, "loss_cv", loss_cv(losses), "-", **cols))
        rows.append(record(prov, "loss_final", losses[-1], "-", **cols))
    return rows


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="records JSON file to write")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps of the reconstructions (default 20)")
    p.add_argument("--num-images", type=int, default=64, help="held-out images evaluated (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-image x_T noise (default 0)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--data", default=None, help="YAML/JSON data spec to evaluate on (default: the model's data)")


def _check_positive(args: argparse.Namespace) -> None:
    for name in ("steps", "num_images", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")


def _run_efficiency(args: argparse.Namespace) -> int:
    _check_positive(args)
    device = resolve_device(args.device)
    metrics = tuple(args.metrics)
    backend = backend_from_args(args, device) if "lpips" in metrics else None
    rows = efficiency_records(args.pdae, args.diffae, steps=args.steps, num_images=args.num_images, seed=args.seed,
                              batch_size=args.batch_size, device=device, backend=backend, metrics=metrics,
                              data=args.data)
    write_records(args.out, rows, notes=[RECON_NOTE, "images_ratio: PDAE images to reach Diff-AE's final quality "
                                         "/ Diff-AE's images (linear interpolation between snapshots)"],
                  num_images=args.num_images, steps=args.steps, seed=args.seed)
    print(args.out)
    return 0


def _run_ablation(args: argparse.Namespace) -> int:
    _check_positive(args)
    if args.images is not None and args.images < 1:
        raise ValueError(f"--images must be >= 1, got {args.images}")
    rows = ablation_records(args.runs, steps=args.steps, num_images=args.num_images, seed=args.seed,
                            batch_size=args.batch_size, device=resolve_device(args.device), data=args.data,
                            images=args.images)
    write_records(args.out, rows, notes=[RECON_NOTE, "loss_cv: population std / mean of the last half of the "
                                         "logged losses"], num_images=args.num_images, steps=args.steps,
                  images="final models" if args.images is None else args.images)
    print(args.out)
    return 0


def register_cli(subparsers: Any) -> None:
    p = subparsers.add_parser("efficiency", help="PDAE vs Diff-AE quality vs images seen / wall time, images ratio",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pdae", nargs="+", required=True, help="PDAE model folders (one per seed) with snapshots/")
    p.add_argument("--diffae", nargs="+", required=True, help="Diff-AE model folders (one per seed) with snapshots/")
    p.add_argument("--metrics", nargs="+", choices=QUALITY_METRICS, default=list(QUALITY_METRICS),
                   help="quality metrics (lpips needs the backend options)")
    _add_common(p)
    add_backend_args(p)
    p.set_defaults(func=_run_efficiency)

    q = subparsers.add_parser("ablation", help="loss-weighting ablation: PDAE snr vs uniform weighting",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("--runs", nargs="+", required=True, help="PDAE model folders (method.weighting snr or uniform)")
    q.add_argument("--images", type=int, default=None,
                   help="compare every run after this many training images (a snapshot or the final model, and the "
                        "log up to it); default: the final models")
    _add_common(q)
    q.set_defaults(func=_run_ablation)
