"""Verdicts from intervals, and the intervals themselves, for eval.claims (pure functions on records).

- `verdict_better`, `verdict_on_par`, `verdict_at_most`: a verdict from the interval [lo, hi] of a signed
  difference (positive = the claim's direction) or of a ratio.
- `Gate` / `gated` / `make_gate`: what turns a verdict into "inconclusive": fewer than MIN_SEEDS seeds, a model
  that fails a health check (eval.health), a model that has not converged and loses the comparison.
- `paired_difference` (per-image metrics, two-level paired bootstrap over seeds and images) and `fid_difference`
  (FID bootstrap replicates over samples, combined over seeds): the signed difference of two methods with its
  interval, pairing records on their evaluation seed (eval.stats).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from eval import health as health_mod
from eval import stats
from eval.health import run_seed
from eval.paper import format_number

MIN_SEEDS = 3
LEVEL = 0.95
N_BOOT = 2000
HIGHER_IS_BETTER = {"ssim": True, "mse": False, "lpips": False, "feat_dist": False, "fid": False, "kid": False}
VERDICTS = ("reproduced", "not reproduced", "inconclusive")


def verdict_better(lo: float, hi: float) -> tuple[str, str]:
    """A 'better' claim on the signed difference's interval [lo, hi] (positive = claim direction)."""
    if lo > 0:
        return "reproduced", "interval above 0"
    if hi <= 0:
        return "not reproduced", "interval at or below 0"
    return "inconclusive", "interval contains 0"


def verdict_on_par(lo: float, hi: float, margin: float) -> tuple[str, str]:
    """Non-inferiority: reproduced if lo > -margin, not reproduced if hi < -margin, else inconclusive."""
    if lo > -margin:
        return "reproduced", f"interval above -{format_number(margin)} (on par or better)"
    if hi < -margin:
        return "not reproduced", f"interval below -{format_number(margin)} (worse beyond the margin)"
    return "inconclusive", f"interval contains -{format_number(margin)}"


def verdict_at_most(lo: float, hi: float, bound: float) -> tuple[str, str]:
    """A 'ratio <= bound' claim."""
    if hi <= bound:
        return "reproduced", f"interval at or below {format_number(bound)}"
    if lo > bound:
        return "not reproduced", f"interval above {format_number(bound)}"
    return "inconclusive", f"interval contains {format_number(bound)}"


@dataclasses.dataclass
class Gate:
    """What can still turn a verdict into 'inconclusive': seeds, health, convergence."""

    n_seeds: int
    unhealthy: list[str] = dataclasses.field(default_factory=list)
    unhealthy_unknown: list[str] = dataclasses.field(default_factory=list)
    proponent_not_converged: list[str] = dataclasses.field(default_factory=list)
    baseline_not_converged: list[str] = dataclasses.field(default_factory=list)
    any_not_converged: list[str] = dataclasses.field(default_factory=list)  # claims about convergence itself


def gated(verdict: str, why: str, gate: Gate) -> tuple[str, str]:
    """Apply the gates to an interval verdict: fewer than MIN_SEEDS seeds, an unhealthy model, or a model that has
    not converged and loses the comparison make it inconclusive; the reason lists every gate that applies."""
    reasons = []
    if gate.n_seeds < MIN_SEEDS:
        reasons.append(f"{gate.n_seeds} seed(s) < {MIN_SEEDS}")
    if gate.unhealthy:
        reasons.append("unhealthy model: " + "; ".join(gate.unhealthy))
    if verdict == "reproduced" and gate.baseline_not_converged:
        reasons.append("budget-limited: the baseline has not converged (" + "; ".join(gate.baseline_not_converged) + ")")
    if verdict == "not reproduced" and gate.proponent_not_converged:
        reasons.append("budget-limited: PDAE has not converged (" + "; ".join(gate.proponent_not_converged) + ")")
    if gate.any_not_converged:
        reasons.append("budget-limited: not converged, so the images to converge are unknown ("
                       + "; ".join(gate.any_not_converged) + ")")
    if reasons:
        return "inconclusive", "; ".join(reasons) + f" (interval alone: {verdict}, {why})"
    notes = [f"health unknown: {u}" for u in gate.unhealthy_unknown]
    if verdict == "inconclusive":  # the interval decides nothing; say too which models could still change it
        notes += [f"not converged: {x}" for x in gate.proponent_not_converged + gate.baseline_not_converged]
    return verdict, "; ".join([why] + notes)


def make_gate(health: Sequence[Mapping[str, Any]], dataset: str, n_seeds: int, models: Sequence[tuple[str, Sequence[str]]],
              proponent: str | None = None, baseline: str | None = None) -> Gate:
    """Gate of a comparison: `models` = (model, health checks) pairs; convergence of proponent / baseline."""
    gate = Gate(n_seeds)
    for model, checks in models:
        ok, reasons = health_mod.status_of(health, dataset, model, checks)
        if ok is False:
            gate.unhealthy += reasons
        elif ok is None:
            gate.unhealthy_unknown += reasons
    for model, target in ((proponent, gate.proponent_not_converged), (baseline, gate.baseline_not_converged)):
        if model is None:
            continue
        ok, reasons = health_mod.status_of(health, dataset, model, ("converged",))
        if ok is False:
            target += reasons
    return gate


def by_run_seed(rows: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Rows keyed by evaluation seed (the first per seed)."""
    out: dict[str, Mapping[str, Any]] = {}
    for r in rows:
        out.setdefault(run_seed(r), r)
    return out


def signed(metric: str, diff: float) -> float:
    """A difference a - b signed so that positive means a is better."""
    return diff if HIGHER_IS_BETTER.get(metric, False) else -diff


def _fmt(x: float) -> str:
    return format_number(float(x))


def paired_units(a_rows: Sequence[Mapping[str, Any]], b_rows: Sequence[Mapping[str, Any]],
                 reuse_b: bool = False) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Per-image values of a and b aligned on the evaluation seed -> (a groups, b groups, seeds).

    reuse_b: b is deterministic and measured on one seed only (DDIM's inferred x_T): its values serve every
    seed of a (same images: the held-out split's first N)."""
    a, b = by_run_seed(a_rows), by_run_seed(b_rows)
    ga, gb, seeds = [], [], []
    for seed, ra in sorted(a.items()):
        rb = b.get(seed) or (next(iter(b.values())) if reuse_b and len(b) == 1 else None)
        if rb is None or not ra.get("values") or not rb.get("values") or len(ra["values"]) != len(rb["values"]):
            continue
        ga.append(np.asarray(ra["values"], float))
        gb.append(np.asarray(rb["values"], float))
        seeds.append(seed)
    return ga, gb, seeds


def paired_difference(metric: str, a_rows: Sequence[Mapping[str, Any]], b_rows: Sequence[Mapping[str, Any]],
                      relative: bool = False, reuse_b: bool = False) -> tuple[tuple[float, float, float] | None, int, str]:
    """Signed paired difference of per-image metrics (a - b, positive = a better) with a two-level CI.

    relative: divide by b's mean (the difference as a fraction of the baseline), used for MSE margins."""
    ga, gb, seeds = paired_units(a_rows, b_rows, reuse_b)
    if not ga:
        return None, 0, "no paired per-image records"
    iv = stats.hierarchical_bootstrap(ga, n_boot=N_BOOT, level=LEVEL, rng=0, paired_with=gb)
    scale = float(np.mean([g.mean() for g in gb])) if relative else 1.0
    scale = scale if scale > 0 else 1.0
    est, lo, hi = (signed(metric, v) / scale for v in (iv.estimate, iv.lo, iv.hi))
    lo, hi = min(lo, hi), max(lo, hi)
    a_mean = float(np.mean([g.mean() for g in ga]))
    b_mean = float(np.mean([g.mean() for g in gb]))
    ev = f"{metric} {_fmt(a_mean)} vs {_fmt(b_mean)} (mean of {len(seeds)} seeds x {ga[0].size} images)"
    return (est, lo, hi), len(seeds), ev


def fid_difference(a_rows: Sequence[Mapping[str, Any]], b_rows: Sequence[Mapping[str, Any]],
                   reuse_b: bool = False, aligned: bool = False) -> tuple[tuple[float, float, float] | None, int, str]:
    """Signed FID difference (b - a: positive = a lower = better) with an interval over samples and seeds.

    aligned: replicate k of a and of b resampled the same sample indices (same eval seed, stream and n: the
    evaluations seed their bootstrap so), which keeps the resampling bias of FID out of the difference."""
    a, b = by_run_seed(a_rows), by_run_seed(b_rows)
    ra_, rb_, ea, eb, seeds = [], [], [], [], []
    for seed, ra in sorted(a.items()):
        rb = b.get(seed) or (next(iter(b.values())) if reuse_b and len(b) == 1 else None)
        if rb is None or not ra.get("values") or not rb.get("values"):
            continue
        ra_.append(np.asarray(ra["values"], float))
        rb_.append(np.asarray(rb["values"], float))
        ea.append(float(ra["value"]))
        eb.append(float(rb["value"]))
        seeds.append(seed)
    if not seeds:
        return None, 0, "no FID records with bootstrap replicates"
    aligned = aligned and all(x.size == y.size for x, y in zip(ra_, rb_)) and all(
        str(a[s].get("n_samples", "-")) == str((b.get(s) or next(iter(b.values()))).get("n_samples", "-")) for s in seeds)
    iv = stats.combine_paired_replicates(rb_, ra_, n_boot=N_BOOT, rng=0, level=LEVEL, estimates_a=eb, estimates_b=ea,
                                         aligned=aligned)
    n = a[seeds[0]].get("n_samples", "-")
    ev = f"FID {_fmt(float(np.mean(ea)))} vs {_fmt(float(np.mean(eb)))} ({len(seeds)} seeds, n = {n} samples each)"
    return (iv.estimate, iv.lo, iv.hi), len(seeds), ev


def _interval_text(iv: tuple[float, float, float] | None) -> str:
    if iv is None:
        return "-"
    return f"{_fmt(iv[0])} [{_fmt(iv[1])}, {_fmt(iv[2])}]"
