"""Training runs as the efficiency evaluation and the loss-weighting ablation read them.

A run is a model folder written by pdae.training: the final model, its EMA snapshots `snapshots/img{N:09d}/`
(each a model folder with metadata.json images_seen / wall_time_s) and its training log `train_log.jsonl`.
This module reads them (`list_snapshots`, `read_train_log`, `dpm_images`), summarises the log (`loss_cv`,
`mean_throughput`) and measures one model's reconstruction quality with random x_T, the Table 1 protocol of
eval.reconstruct (`evaluate_model`, per-image values). `eval.efficiency` (sub-command `efficiency`) and
`eval.ablation` (sub-command `ablation`) build their records from it; see eval.efficiency for both.
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

from eval.common import data_spec, eval_images, record
from eval.reconstruct import ReconSetting, recon_metrics, reconstruct_all

SNAPSHOTS_DIR = "snapshots"
LOG_FILE = "train_log.jsonl"
QUALITY_METRICS = ("ssim", "mse", "lpips")   # "lpips" = the backend's distance (feat_dist with the domain backend)
RECON_NOTE = ("reconstruction with random x_T as Table 1 (eval.reconstruct): z = E(x_0), x_T ~ N(0, I) per image "
              "(eval.common.image_noise(seed)), deterministic DDIM, decoded images clamped to [-1, 1] before the metrics")

ReconstructFn = Callable[..., Tensor]


# ----------------------------------------------------------------------------------------------
# The training log
# ----------------------------------------------------------------------------------------------

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


def read_metadata(folder: Path) -> dict[str, Any]:
    """A model folder's metadata.json, which must carry numbers `images_seen` and `wall_time_s`."""
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
    """The EMA snapshots `snapshots/img*/` of a model folder and (include_final) the final model itself, sorted
    by images seen; the final model is the last curve point unless a snapshot has the same images seen."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ValueError(f"{model_dir}: model folder not found")
    folders = sorted(p for p in (model_dir / SNAPSHOTS_DIR).glob("img*") if p.is_dir()) \
        if (model_dir / SNAPSHOTS_DIR).is_dir() else []
    if include_final and (model_dir / "metadata.json").is_file():
        folders.append(model_dir)
    snaps: dict[int, Snapshot] = {}
    for folder in folders:
        meta = read_metadata(folder)
        snaps.setdefault(int(meta["images_seen"]), Snapshot(folder, int(meta["images_seen"]), float(meta["wall_time_s"])))
    if not snaps:
        raise ValueError(f"{model_dir}: no snapshots ({SNAPSHOTS_DIR}/img*/) and no final model")
    return [snaps[k] for k in sorted(snaps)]


def dpm_images(model_dir: str | Path) -> int | str:
    """Images seen by a PDAE model's pre-trained DPM: metadata.json "dpm" (a folder, absolute, relative to the
    working directory, or relative to the model folder) -> that folder's metadata.json images_seen; "-" if any
    of it is missing."""
    model_dir = Path(model_dir)
    try:
        ref = json.loads((model_dir / "metadata.json").read_text()).get("dpm")
    except (OSError, json.JSONDecodeError, AttributeError):
        return "-"
    if not isinstance(ref, str) or not ref:
        return "-"
    for folder in (Path(ref), model_dir / ref):
        try:
            seen = json.loads((folder / "metadata.json").read_text()).get("images_seen")
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        if isinstance(seen, (int, float)) and not isinstance(seen, bool):
            return int(seen)
    return "-"


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


def eval_set(first_model: str | Path, data: str | None, num_images: int) -> Tensor:
    """The first `num_images` held-out images of `data` (default: the data spec in the model's metadata.json)."""
    folder = Path(first_model)
    model = SimpleNamespace(metadata=read_metadata(folder), folder=folder)
    x0, _, _ = eval_images(data_spec(model, data), num_images)
    return x0


# ----------------------------------------------------------------------------------------------
# Reconstruction quality of one model
# ----------------------------------------------------------------------------------------------

def reconstruct_random_xT(method: Any, x0: Tensor, *, steps: int, seed: int, batch_size: int) -> Tensor:
    """Table 1's random-x_T reconstruction through eval.reconstruct: z = E(x_0), x_T = image_noise(i, seed) per
    image, DDIM `steps` (PDAE: eps_theta shifted by G on every step, paper Eq. 6; Diff-AE: eps conditioned on z).
    x0: [N, C, H, W] in [-1, 1] -> [N, C, H, W] on the CPU."""
    setting = ReconSetting("random", int(steps))
    return reconstruct_all(method, x0, [setting], seed=seed, batch_size=batch_size)[setting]


def per_image_quality(x0: Tensor, x_rec: Tensor, backend: Any = None,
                      metrics: Sequence[str] = QUALITY_METRICS) -> dict[str, list[float]]:
    """Per-image SSIM and MSE (on [0, 1]) and the backend's distance (on [-1, 1]: LPIPS-AlexNet, or `feat_dist`
    with the domain backend, asked for as "lpips") of a reconstruction (eval.reconstruct.recon_metrics, which
    clamps x_rec to [-1, 1] first) -> {metric name: [N floats]}."""
    wants_distance = any(m in ("lpips", "feat_dist") for m in metrics)
    if wants_distance and backend is None:
        raise ValueError("lpips needs a metric backend (--backend/--feature-net)")
    per_image = recon_metrics(x0, x_rec, backend if wants_distance else None)
    distance = getattr(backend, "distance_name", "lpips")
    names = [distance if m in ("lpips", "feat_dist") else m for m in metrics]
    return {m: [float(v) for v in per_image[m].double().flatten()] for m in names}


def mean(values: Sequence[float]) -> float:
    """The mean of per-image values (math.fsum), the `value` of a record carrying `values`."""
    if not values:
        raise ValueError("mean: no values")
    return math.fsum(values) / len(values)


def quality(x0: Tensor, x_rec: Tensor, backend: Any = None, metrics: Sequence[str] = QUALITY_METRICS) -> dict[str, float]:
    """Mean per-image quality (`per_image_quality` averaged over the images)."""
    return {m: mean(v) for m, v in per_image_quality(x0, x_rec, backend, metrics).items()}


def evaluate_model(folder: str | Path, x0: Tensor, *, steps: int, seed: int, batch_size: int, device: Any,
                   backend: Any = None, metrics: Sequence[str] = QUALITY_METRICS,
                   reconstruct: ReconstructFn | None = None) -> tuple[Any, dict[str, list[float]]]:
    """Load one model folder and measure its random-x_T reconstruction of x0 (x_T noise from `seed`)
    -> (method, {metric: per-image values})."""
    from pdae.checkpoint import load_method

    method = load_method(folder, device)
    if not method.has_encoder:
        raise ValueError(f"{folder}: method {method.name!r} is not an autoencoder (pdae or diffae expected)")
    fn = reconstruct or reconstruct_random_xT
    x_rec = fn(method, x0, steps=steps, seed=seed, batch_size=batch_size)
    return method, per_image_quality(x0, x_rec.cpu(), backend, metrics)


def image_record(prov: dict[str, Any], metric: str, values: Sequence[float], backend: str = "-",
                 **columns: Any) -> dict[str, Any]:
    """A record whose value is the mean of per-image `values` (carried with units "images")."""
    return record(prov, metric, mean(values), backend, **columns, values=[float(v) for v in values], units="images")


# ----------------------------------------------------------------------------------------------
# Command-line options shared by `efficiency` and `ablation`
# ----------------------------------------------------------------------------------------------

def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="records JSON file to write")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps of the reconstructions (default 20)")
    p.add_argument("--num-images", type=int, default=64, help="held-out images evaluated (default 64)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the per-image x_T noise, the same for every model evaluated (default 0)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--data", default=None, help="YAML/JSON data spec to evaluate on (default: the model's data)")


def check_positive(args: argparse.Namespace) -> None:
    for name in ("steps", "num_images", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
