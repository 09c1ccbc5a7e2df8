"""Training efficiency of PDAE vs Diff-AE and the loss-weighting ablation.

Paper §4.1: PDAE needs about 1/3-1/2 of the training images (batches) Diff-AE needs to converge, and pairs Diff-AE
trained on 130M images with PDAE trained on 64M (PDAE's count excludes its pre-trained DPM); it also reports
throughput (PDAE 81.57 vs Diff-AE 75.41 images/s per A100). Losses of the two methods are different objectives,
so we measure what both share: reconstruction quality with random x_T (z = E(x_0), x_T ~ N(0, I) per image,
deterministic DDIM; the Table 1 protocol of eval.reconstruct) of every EMA snapshot (`<model>/snapshots/
img{N:09d}/`, written by pdae.training) and of the final model, versus images seen and wall time.

Training efficiency as the paper defines it (images needed to converge), per seed and quality metric:

    level  = a quality that both methods reach: the worse of the two final values, moved by (1 - f) * |that value|
             towards "worse" (f = --level-fraction, default 0.95: SSIM level = 0.95 x the lower final SSIM,
             MSE level = 1.05 x the higher final MSE);
    images_to_level = the first images seen at which a method's curve reaches the level, linearly interpolated
             between snapshots (`images_to_reach`); `reached` = "yes" (interpolated), "first" (its first snapshot
             already reaches it: an upper bound), "no" (never: its final images, a lower bound);
    images_ratio    = PDAE's images_to_level / Diff-AE's (wall_time_ratio: the same with interpolated wall time).

Convergence (plateau rule), per model and metric (ssim, mse): plateau_change = quality(final) - quality(the
curve point closest to (1 - --plateau-window) x final images), signed so that positive = still improving;
converged = "yes" if plateau_change <= tolerance (SSIM: --plateau-tol-ssim absolute, default 0.01; MSE:
--plateau-tol-mse-rel x the final MSE, default 0.05), "no" otherwise, "unknown" with fewer than 2 curve points.

Sub-commands:
    python -m eval efficiency --pdae DIR... --diffae DIR... --out FILE [--steps 20 --num-images 64 ...]
    python -m eval ablation --runs SNR_DIR UNIFORM_DIR --out FILE [--images N]   (PDAE, method.weighting)

Every model is evaluated on the same held-out images with the same per-image x_T noise (`--seed`, recorded as
`eval_seed`), so PDAE and Diff-AE, and all snapshots, are paired image by image.

Records (eval.common vocabulary; provenance columns dataset, method, seed, images_seen, code_version, config):
    table efficiency, metric ssim | mse | lpips or feat_dist (the backend's distance): one per snapshot (the curve); columns wall_time_s, steps,
        eval_seed, values (per-image scores, mean = value), units "images".
    table efficiency, metric loss (one per log line, with wall_time_s) and images_per_s (mean per device).
    table efficiency, metric images_to_level, method pdae | diffae, images_seen "-": value = images needed;
        columns quality_metric, level, level_rule, reached ("yes" | "first" | "no"), wall_time_s (interpolated
        wall time to the level), steps, eval_seed; PDAE also dpm_images (its pre-trained DPM's images seen, "-"
        if unknown).
    table efficiency, metric images_ratio | wall_time_ratio, method pdae: columns quality_metric, level,
        level_rule, reached_pdae, reached_diffae, bound ("exact" | "upper" | "lower" | "none": which side of the
        true ratio the value lies on; PDAE "first" -> upper, Diff-AE "first" -> lower), reached (the bound in the
        older vocabulary: "yes" exact, "first" upper, "no" lower, "unknown" none), steps, eval_seed.
    table convergence, metric plateau_change, method pdae | diffae: columns quality_metric, window_images
        ([from, to] images, "-" if unknown), tolerance (absolute), tolerance_rule, converged
        ("yes" | "no" | "unknown"), steps, eval_seed.
    table ablation: weighting, metric ssim | mse (with values / units "images" / eval_seed, the same images and
        noise for every run), loss_cv, loss_final.
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
QUALITY_METRICS = ("ssim", "mse", "lpips")   # "lpips" = the backend's distance (feat_dist with the domain backend)
HIGHER_IS_BETTER = {"ssim": True, "mse": False, "lpips": False, "feat_dist": False}
# Metrics with a plateau tolerance (lpips has none: no convergence record).
PLATEAU_METRICS = ("ssim", "mse")
RATIO_BOUND = {("yes", "yes"): "exact", ("first", "yes"): "upper", ("first", "no"): "upper",
               ("yes", "first"): "lower", ("no", "first"): "lower", ("no", "yes"): "lower", ("yes", "no"): "upper"}
BOUND_AS_REACHED = {"exact": "yes", "upper": "first", "lower": "no", "none": "unknown"}
RECON_NOTE = ("reconstruction with random x_T as Table 1 (eval.reconstruct): z = E(x_0), x_T ~ N(0, I) per image "
              "(eval.common.image_noise(seed)), deterministic DDIM, decoded images clamped to [-1, 1] before the metrics")


@dataclasses.dataclass(frozen=True)
class Rules:
    """The efficiency level and plateau rules (module docstring): level fraction f, plateau window (a fraction of
    the final images), SSIM tolerance (absolute) and MSE tolerance (relative to the final MSE)."""

    level_fraction: float = 0.95
    plateau_window: float = 0.25
    tol_ssim: float = 0.01
    tol_mse_rel: float = 0.05

    def check(self) -> "Rules":
        if not 0 < self.level_fraction <= 1:
            raise ValueError(f"--level-fraction must be in (0, 1], got {self.level_fraction}")
        if not 0 < self.plateau_window <= 1:
            raise ValueError(f"--plateau-window must be in (0, 1], got {self.plateau_window}")
        if self.tol_ssim < 0 or self.tol_mse_rel < 0:
            raise ValueError("--plateau-tol-ssim and --plateau-tol-mse-rel must be >= 0")
        return self


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


def final_value(curve: Sequence[tuple[float, float]]) -> float:
    """The value of the curve's last point (largest x): the final model's quality."""
    if not curve:
        raise ValueError("final_value: empty curve")
    return float(max((float(x), float(v)) for x, v in curve)[1])


def quality_level(final_a: float, final_b: float, higher_is_better: bool, fraction: float = 0.95) -> float:
    """The level both methods reach: the worse final value moved by (1 - fraction) * |worse| towards worse.

    Higher is better (SSIM): min(a, b) - (1 - f) |min| (= f x min for a positive SSIM); lower is better (MSE):
    max(a, b) + (1 - f) |max| (= (2 - f) x max). Every curve ending at a or b reaches it."""
    worse = min(final_a, final_b) if higher_is_better else max(final_a, final_b)
    margin = (1.0 - fraction) * abs(worse)
    return worse - margin if higher_is_better else worse + margin


def level_rule(metric: str, fraction: float) -> str:
    """Human-readable text of `quality_level` for one metric."""
    if HIGHER_IS_BETTER[metric]:
        return f"{fraction:g} x the lower final {metric} of PDAE and Diff-AE (same seed)"
    return f"{2 - fraction:g} x the higher final {metric} of PDAE and Diff-AE (same seed)"


def reach_level(curve: Sequence[tuple[float, float]], level: float, higher_is_better: bool) -> tuple[float, str]:
    """(x needed to reach `level`, reached): "yes" interpolated between snapshots; "first" the first snapshot
    already reaches it (x is an upper bound); "no" never reached (x = the final x, a lower bound)."""
    if not curve:
        raise ValueError("reach_level: empty curve")
    x = images_to_reach(curve, level, higher_is_better)
    if x is None:
        return max(float(p[0]) for p in curve), "no"
    return x, "first" if x == min(float(p[0]) for p in curve) else "yes"


def ratio_bound(reached_pdae: str, reached_diffae: str) -> str:
    """Which side of the true PDAE / Diff-AE ratio a ratio of two `reach_level` values lies on:
    "exact", "upper", "lower" or "none" (both numerator and denominator are bounds in the same direction)."""
    return RATIO_BOUND.get((reached_pdae, reached_diffae), "none")


def plateau_change(curve: Sequence[tuple[float, float]], window: float,
                   higher_is_better: bool) -> tuple[float, tuple[float, float]] | None:
    """(quality(final) - quality(earlier), (earlier x, final x)), signed so that positive = improving.

    `earlier` is the curve point (other than the last) whose x is closest to (1 - window) x the final x (ties:
    the earlier point). None with fewer than 2 points."""
    points = sorted((float(x), float(v)) for x, v in curve)
    if len(points) < 2:
        return None
    x_end, v_end = points[-1]
    target = (1.0 - window) * x_end
    x_from, v_from = min(points[:-1], key=lambda p: (abs(p[0] - target), p[0]))
    change = v_end - v_from if higher_is_better else v_from - v_end
    return change, (x_from, x_end)


def plateau_tolerance(metric: str, final: float, rules: Rules) -> tuple[float, str]:
    """(absolute tolerance, its rule) of the plateau rule: SSIM absolute, MSE relative to the final MSE."""
    if metric == "ssim":
        return rules.tol_ssim, f"{rules.tol_ssim:g} absolute"
    if metric == "mse":
        return rules.tol_mse_rel * abs(final), f"{rules.tol_mse_rel:g} x the final mse"
    raise ValueError(f"plateau_tolerance: no tolerance for {metric!r}")


def converged(change: float | None, tolerance: float) -> str:
    """"yes" if the improvement over the window is <= tolerance, "no" if larger, "unknown" without a window."""
    if change is None:
        return "unknown"
    return "yes" if change <= tolerance else "no"


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
        meta = _metadata(folder)
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


def _run_seed(meta: dict[str, Any]) -> Any:
    return meta.get("seed", "-")


Curves = dict[str, list[tuple[float, float, float]]]


def curve_records(model_dir: str | Path, x0: Tensor, *, label: str, steps: int, seed: int, batch_size: int,
                  device: Any, backend: Any, metrics: Sequence[str], extra: dict[str, Any] | None = None,
                  reconstruct: ReconstructFn | None = None) -> tuple[list[dict[str, Any]], Curves]:
    """Records of every curve point's quality (snapshots and the final model, with per-image `values`), and the
    curves {metric: [(images_seen, wall_time_s, value)]}."""
    rows: list[dict[str, Any]] = []
    curves: Curves = {}
    backend_name = getattr(backend, "name", "-")
    for snap in list_snapshots(model_dir):
        method, per_image = evaluate_model(snap.folder, x0, steps=steps, seed=seed, batch_size=batch_size,
                                           device=device, backend=backend, metrics=metrics, reconstruct=reconstruct)
        prov = provenance(method, label, eval_seed=seed)
        for metric, values in per_image.items():
            distance = metric in ("lpips", "feat_dist")
            row = image_record(prov, metric, values, backend_name if distance else "-", table="efficiency",
                               wall_time_s=snap.wall_time_s, steps=steps, **(extra or {}))
            rows.append(row)
            curves.setdefault(metric, []).append((snap.images_seen, snap.wall_time_s, row["value"]))
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


# ----------------------------------------------------------------------------------------------
# Derived records: images to a common level, ratios, convergence
# ----------------------------------------------------------------------------------------------

def _axis(curve: Sequence[tuple[float, float, float]], idx: int) -> list[tuple[float, float]]:
    """[(x, value)] of a curve [(images, wall_s, value)] with x = images (idx 0) or wall time (idx 1)."""
    return [(p[idx], p[2]) for p in curve]


def level_records(pdae: dict[str, Any], diffae: dict[str, Any], metrics: Sequence[str], steps: int,
                  rules: Rules) -> list[dict[str, Any]]:
    """images_to_level of both methods and images_ratio / wall_time_ratio of one PDAE / Diff-AE pair (same seed),
    per quality metric. pdae / diffae: {"prov", "curves", "eval_seed"[, "dpm_images"]} (efficiency_records)."""
    rows = []
    measured = [m for m in pdae["curves"] if m in diffae["curves"]]  # "lpips" was measured as the backend's name
    for metric in measured:
        hib = HIGHER_IS_BETTER[metric]
        level = quality_level(final_value(_axis(pdae["curves"][metric], 0)),
                              final_value(_axis(diffae["curves"][metric], 0)), hib, rules.level_fraction)
        cols = dict(table="efficiency", steps=steps, eval_seed=pdae["eval_seed"], quality_metric=metric,
                    level=level, level_rule=level_rule(metric, rules.level_fraction))
        reach = {}
        for label, run in (("pdae", pdae), ("diffae", diffae)):
            images, status = reach_level(_axis(run["curves"][metric], 0), level, hib)
            wall, _ = reach_level(_axis(run["curves"][metric], 1), level, hib)
            reach[label] = (images, wall, status)
            more = {"dpm_images": run.get("dpm_images", "-")} if label == "pdae" else {}
            rows.append(record({**run["prov"], "method": label, "images_seen": "-"}, "images_to_level", images, "-",
                               **cols, reached=status, wall_time_s=wall, **more))
        bound = ratio_bound(reach["pdae"][2], reach["diffae"][2])
        for name, idx in (("images_ratio", 0), ("wall_time_ratio", 1)):
            if reach["diffae"][idx] <= 0:
                raise ValueError(f"{name}: Diff-AE reaches the {metric} level at x = {reach['diffae'][idx]}")
            rows.append(record({**pdae["prov"], "method": "pdae", "images_seen": "-"}, name,
                               reach["pdae"][idx] / reach["diffae"][idx], "-", **cols, wall_time_s="-",
                               reached_pdae=reach["pdae"][2], reached_diffae=reach["diffae"][2], bound=bound,
                               reached=BOUND_AS_REACHED[bound]))
    return rows


def convergence_records(run: dict[str, Any], label: str, metrics: Sequence[str], steps: int,
                        rules: Rules) -> list[dict[str, Any]]:
    """plateau_change / converged of one model per metric with a tolerance (PLATEAU_METRICS)."""
    rows = []
    for metric in (m for m in run["curves"] if m in PLATEAU_METRICS):
        curve = _axis(run["curves"][metric], 0)
        found = plateau_change(curve, rules.plateau_window, HIGHER_IS_BETTER[metric])
        tol, tol_rule = plateau_tolerance(metric, final_value(curve), rules)
        change, window = (None, "-") if found is None else (found[0], [int(found[1][0]), int(found[1][1])])
        rows.append(record({**run["prov"], "method": label}, "plateau_change", 0.0 if change is None else change,
                           "-", table="convergence", steps=steps, eval_seed=run["eval_seed"], quality_metric=metric,
                           window_images=window, tolerance=tol, tolerance_rule=tol_rule,
                           converged=converged(change, tol)))
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


def _model_run(folder: str | Path, label: str, x0: Tensor, **kw: Any) -> tuple[list[dict[str, Any]], Any, dict[str, Any]]:
    """Curve and log records of one model folder -> (rows, its training seed, run summary for the derived records)."""
    snap_rows, curves = curve_records(folder, x0, label=label, **kw)
    final_meta = _metadata(Path(folder))
    prov = {k: snap_rows[-1][k] for k in ("dataset", "method", "seed", "images_seen", "code_version")}
    prov["config"] = str(folder)
    rows = snap_rows + log_records(folder, label, prov, int(final_meta.get("world_size", 1) or 1))
    run = {"prov": prov, "curves": curves, "eval_seed": kw["seed"]}
    if label == "pdae":
        run["dpm_images"] = dpm_images(folder)
    return rows, _run_seed(final_meta), run


def efficiency_records(pdae_dirs: Sequence[str | Path], diffae_dirs: Sequence[str | Path], *, steps: int = 20,
                       num_images: int = 64, seed: int = 0, batch_size: int = 64, device: Any = "cpu",
                       backend: Any = None, metrics: Sequence[str] = QUALITY_METRICS, data: str | None = None,
                       reconstruct: ReconstructFn | None = None, rules: Rules = Rules()) -> list[dict[str, Any]]:
    """All efficiency and convergence records of PDAE and Diff-AE runs (one folder per seed), every model on the
    same held-out images with the same x_T noise (`seed`); PDAE and Diff-AE are paired by training seed."""
    if not pdae_dirs or not diffae_dirs:
        raise ValueError("efficiency needs at least one PDAE and one Diff-AE model folder")
    rules.check()
    x0 = _eval_set(pdae_dirs[0], data, num_images)
    kw = dict(steps=steps, seed=seed, batch_size=batch_size, device=device, backend=backend, metrics=metrics,
              reconstruct=reconstruct)
    rows: list[dict[str, Any]] = []
    runs: dict[str, list[tuple[Any, dict[str, Any]]]] = {"pdae": [], "diffae": []}
    for label, dirs in (("pdae", pdae_dirs), ("diffae", diffae_dirs)):
        for folder in dirs:
            model_rows, run_seed, run = _model_run(folder, label, x0, **kw)
            rows += model_rows + convergence_records(run, label, metrics, steps, rules)
            runs[label].append((run_seed, run))
    for p, d in pair_runs(runs["pdae"], runs["diffae"]):
        rows += level_records(p, d, metrics, steps, rules)
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
    reconstruction SSIM / MSE (per-image `values`: the same images and x_T noise for every run, so the runs pair
    image by image), loss_cv (last half of the log) and loss_final, all at the same budget: after `images`
    training images (a snapshot of a longer run, and the log up to it), else the final models."""
    if not run_dirs:
        raise ValueError("ablation needs PDAE model folders (--runs)")
    x0 = _eval_set(run_dirs[0], data, num_images)
    rows: list[dict[str, Any]] = []
    for run in run_dirs:
        folder = snapshot_at(run, images)
        method, per_image = evaluate_model(folder, x0, steps=steps, seed=seed, batch_size=batch_size, device=device,
                                           metrics=("ssim", "mse"), reconstruct=reconstruct)
        if not method.has_shift:  # an autoencoder (evaluate_model) with G over a frozen prior: PDAE
            raise ValueError(f"{folder}: the weighting ablation compares PDAE runs, got {method.name!r}")
        prov = provenance(method)
        cols = {"table": "ablation", "weighting": method.method_kwargs.get("weighting", "snr"), "steps": steps}
        rows += [image_record(prov, k, v, "-", **cols, eval_seed=seed) for k, v in per_image.items()]
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
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the per-image x_T noise, the same for every model evaluated (default 0)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--data", default=None, help="YAML/JSON data spec to evaluate on (default: the model's data)")


def _check_positive(args: argparse.Namespace) -> None:
    for name in ("steps", "num_images", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")


def _rules(args: argparse.Namespace) -> Rules:
    return Rules(args.level_fraction, args.plateau_window, args.plateau_tol_ssim, args.plateau_tol_mse_rel).check()


def _run_efficiency(args: argparse.Namespace) -> int:
    _check_positive(args)
    rules = _rules(args)
    device = resolve_device(args.device)
    metrics = tuple(args.metrics)
    backend = backend_from_args(args, device) if any(m in ("lpips", "feat_dist") for m in metrics) else None
    rows = efficiency_records(args.pdae, args.diffae, steps=args.steps, num_images=args.num_images, seed=args.seed,
                              batch_size=args.batch_size, device=device, backend=backend, metrics=metrics,
                              data=args.data, rules=rules)
    notes = [RECON_NOTE,
             "images_to_level: images a method needs to reach a quality level both reach (level_rule), linearly "
             "interpolated between snapshots; images_ratio = PDAE's / Diff-AE's (paper §4.1: 1/3-1/2); PDAE's "
             "images exclude its pre-trained DPM's (dpm_images)",
             "plateau_change: quality(final) - quality(point nearest (1 - plateau_window) x final images), positive "
             "= still improving; converged if <= tolerance"]
    write_records(args.out, rows, notes=notes, num_images=args.num_images, steps=args.steps, seed=args.seed,
                  **dataclasses.asdict(rules))
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
                  seed=args.seed, images="final models" if args.images is None else args.images)
    print(args.out)
    return 0


def register_cli(subparsers: Any) -> None:
    p = subparsers.add_parser("efficiency", help="PDAE vs Diff-AE: quality vs images seen / wall time, images to a "
                              "common quality level and their ratio, convergence",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pdae", nargs="+", required=True, help="PDAE model folders (one per seed) with snapshots/")
    p.add_argument("--diffae", nargs="+", required=True, help="Diff-AE model folders (one per seed) with snapshots/")
    p.add_argument("--metrics", nargs="+", choices=QUALITY_METRICS, default=list(QUALITY_METRICS),
                   help="quality metrics (lpips needs the backend options)")
    p.add_argument("--level-fraction", type=float, default=Rules.level_fraction,
                   help="quality level both methods must reach: this fraction of the lower final SSIM "
                        "(MSE: (2 - f) x the higher final MSE) of the seed's PDAE and Diff-AE (default 0.95)")
    p.add_argument("--plateau-window", type=float, default=Rules.plateau_window,
                   help="convergence window: the last fraction of the final images (default 0.25)")
    p.add_argument("--plateau-tol-ssim", type=float, default=Rules.tol_ssim,
                   help="converged if SSIM improved by at most this over the window (default 0.01)")
    p.add_argument("--plateau-tol-mse-rel", type=float, default=Rules.tol_mse_rel,
                   help="converged if MSE improved by at most this fraction of the final MSE (default 0.05)")
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
