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
from pathlib import Path
from typing import Any, Sequence

from torch import Tensor

from eval.ablation import ablation_records, add_ablation_parser, snapshot_at
from eval.common import add_backend_args, backend_from_args, provenance, record, resolve_device, write_records
from eval.train_runs import (
    LOG_FILE, QUALITY_METRICS, RECON_NOTE, SNAPSHOTS_DIR, ReconstructFn, Snapshot, add_common_args, check_positive,
    dpm_images, eval_set, evaluate_model, image_record, list_snapshots, loss_cv, mean, mean_throughput,
    per_image_quality, quality, read_metadata, read_train_log, reconstruct_random_xT,
)

# Names of eval.train_runs and eval.ablation that were defined here first: still importable from here.
__all__ = [
    "BOUND_AS_REACHED", "HIGHER_IS_BETTER", "LOG_FILE", "PLATEAU_METRICS", "QUALITY_METRICS", "RATIO_BOUND",
    "RECON_NOTE", "SNAPSHOTS_DIR", "Curves", "ReconstructFn", "Rules", "Snapshot", "ablation_records", "converged",
    "convergence_records", "curve_records", "dpm_images", "efficiency_records", "evaluate_model", "final_value",
    "image_record", "images_to_reach", "level_records", "level_rule", "list_snapshots", "log_records", "loss_cv",
    "mean", "mean_throughput", "pair_runs", "per_image_quality", "plateau_change", "plateau_tolerance", "quality",
    "quality_level", "ratio_bound", "reach_level", "read_train_log", "reconstruct_random_xT", "register_cli",
    "snapshot_at",
]

HIGHER_IS_BETTER = {"ssim": True, "mse": False, "lpips": False, "feat_dist": False}
# Metrics with a plateau tolerance (lpips has none: no convergence record).
PLATEAU_METRICS = ("ssim", "mse")
RATIO_BOUND = {("yes", "yes"): "exact", ("first", "yes"): "upper", ("first", "no"): "upper",
               ("yes", "first"): "lower", ("no", "first"): "lower", ("no", "yes"): "lower", ("yes", "no"): "upper"}
BOUND_AS_REACHED = {"exact": "yes", "upper": "first", "lower": "no", "none": "unknown"}


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


# ----------------------------------------------------------------------------------------------
# Curves of one model folder (eval.train_runs reads and measures it)
# ----------------------------------------------------------------------------------------------

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

def _model_run(folder: str | Path, label: str, x0: Tensor, **kw: Any) -> tuple[list[dict[str, Any]], Any, dict[str, Any]]:
    """Curve and log records of one model folder -> (rows, its training seed, run summary for the derived records)."""
    snap_rows, curves = curve_records(folder, x0, label=label, **kw)
    final_meta = read_metadata(Path(folder))
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
    x0 = eval_set(pdae_dirs[0], data, num_images)
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


def _rules(args: argparse.Namespace) -> Rules:
    return Rules(args.level_fraction, args.plateau_window, args.plateau_tol_ssim, args.plateau_tol_mse_rel).check()


def _run_efficiency(args: argparse.Namespace) -> int:
    check_positive(args)
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
    add_common_args(p)
    add_backend_args(p)
    p.set_defaults(func=_run_efficiency)

    add_ablation_parser(subparsers, __doc__)
