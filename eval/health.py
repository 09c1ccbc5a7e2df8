"""Model health: is each trained model fit to carry a verdict? (checks on evaluation records, no new sampling).

A comparison is only as good as the weakest model behind it. Before a claim trusts a number, each model it
uses must pass these checks, computed from the records the evaluations already write:

- ``latent``: a latent DPM (one per autoencoder seed) samples normalised z with per-dimension std within
  ``LATENT_STD_TOL`` of 1 (the real normalised z have std 1 by construction) and per-dimension |mean| at
  most ``LATENT_MEAN_MAX``. An EMA that exports its random initialisation gives std >> 1.
  Records: ``uncond`` rows ``latent_std`` / ``latent_mean_abs`` at the largest step count.
- ``samples``: an image decoder (the pre-trained DPM, and each autoencoder through its latent DPM) produces
  samples that the domain classifier recognises about as often as real images: confident fraction of the
  samples / confident fraction of real images >= ``CONFIDENT_RATIO_MIN``. Records: ``uncond`` rows
  ``confident`` (method ``real`` for the real images) at the largest step count.
- ``z_used``: an autoencoder uses its z: its random-x_T reconstructions are closer to their inputs than two
  unrelated held-out images are to each other, by more than ``Z_USE_MARGIN`` SSIM (lower end of the 95 %
  bootstrap interval over images of the paired difference). Records: ``recon`` rows with x_T ``random`` at
  the largest DDIM step count and the ``unrelated`` floor rows of the same evaluation seed.
- ``converged``: an autoencoder's quality (SSIM with random x_T over its training snapshots) changed by at most
  the stated tolerance over the last quarter of its budget. Records: ``convergence`` rows (eval.efficiency).

Each check gives one row per (dataset, model, seed): status ``healthy`` / ``unhealthy`` (``converged`` / ``not
converged`` for the convergence check) / ``unknown`` (no records). `status_of` summarises the checks a claim needs into (ok, reasons) for eval.claims.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from eval import stats
from eval.paper import format_number

LATENT_STD_TOL = 0.20       # |std(sampled normalised z) - 1| <= 20 %
LATENT_MEAN_MAX = 0.25      # mean over dimensions of |mean(sampled normalised z)|
CONFIDENT_RATIO_MIN = 0.5   # samples recognised at least half as often as real images
Z_USE_MARGIN = 0.05         # SSIM above the unrelated-pair floor (lower CI bound of the paired difference)
N_BOOT = 2000
HEALTH_COLUMNS = ("dataset", "model", "seed", "check", "value", "threshold", "status", "detail")
STATUSES = ("healthy", "unhealthy", "converged", "not converged", "unknown")
FAILED = ("unhealthy", "not converged")


def _canon(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def select(rows: Iterable[Mapping[str, Any]], **where: Any) -> list[Mapping[str, Any]]:
    """Rows whose columns equal `where` (compared as text; a missing column reads "-")."""
    return [r for r in rows if all(_canon(r.get(k, "-")) == _canon(v) for k, v in where.items())]


def run_seed(row: Mapping[str, Any]) -> str:
    """The evaluation seed of a record (eval_seed, else the model seed): rows pair on it."""
    eval_seed = row.get("eval_seed", "-")
    return _canon(eval_seed if _canon(eval_seed) not in ("-", "", "nan") else row.get("seed", "-"))


def numeric_steps(rows: Iterable[Mapping[str, Any]]) -> list[int]:
    out = set()
    for r in rows:
        try:
            out.add(int(float(r.get("steps"))))
        except (TypeError, ValueError):
            pass
    return sorted(out)


def at_largest_steps(rows: Sequence[Mapping[str, Any]]) -> tuple[int | str, list[Mapping[str, Any]]]:
    """(largest numeric step count T among `rows`, the rows at T); ("-", []) without numeric steps."""
    steps = numeric_steps(rows)
    if not steps:
        return "-", []
    return steps[-1], [r for r in rows if numeric_steps([r]) == steps[-1:]]


def _row(dataset: str, model: str, seed: str, check: str, value: float | None, threshold: str, ok: bool | None,
         detail: str) -> dict[str, Any]:
    good, bad = ("converged", "not converged") if check == "converged" else ("healthy", "unhealthy")
    status = "unknown" if ok is None else (good if ok else bad)
    return {"dataset": dataset, "model": model, "seed": seed, "check": check,
            "value": "-" if value is None or not math.isfinite(value) else value, "threshold": threshold,
            "status": status, "detail": detail}


def _datasets(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return sorted({str(r.get("dataset", "-")) for r in rows})


def latent_checks(rows: Sequence[Mapping[str, Any]], dataset: str) -> list[dict[str, Any]]:
    """One ``latent`` row per autoencoder seed with latent-moment records."""
    un = select(rows, table="uncond", dataset=dataset)
    out = []
    for method in ("pdae", "diffae"):
        mine = [r for r in un if r.get("method") == method and r.get("metric") in ("latent_std", "latent_mean_abs")]
        for seed in sorted({_canon(r.get("seed")) for r in mine}):
            T, top_rows = at_largest_steps(select(mine, seed=seed))
            std = [float(r["value"]) for r in select(top_rows, metric="latent_std")]
            mean = [float(r["value"]) for r in select(top_rows, metric="latent_mean_abs")]
            if not std:
                continue
            s, m = float(np.mean(std)), float(np.mean(mean)) if mean else 0.0
            ok = abs(s - 1.0) <= LATENT_STD_TOL and m <= LATENT_MEAN_MAX
            out.append(_row(dataset, f"{method} latent DPM", seed, "latent", s,
                            f"|std - 1| <= {LATENT_STD_TOL:g}, |mean| <= {LATENT_MEAN_MAX:g}", ok,
                            f"sampled normalised z at T={T}: std {format_number(s)}, "
                            f"|mean| {format_number(m)} (real: 1, 0)"))
    return out


def sample_checks(rows: Sequence[Mapping[str, Any]], dataset: str) -> list[dict[str, Any]]:
    """One ``samples`` row per decoder (the DPM as `ddim`, each autoencoder seed) with `confident` records."""
    conf = select(rows, table="uncond", dataset=dataset, metric="confident")
    real = [float(r["value"]) for r in select(conf, method="real")]
    if not real:
        return []
    real_mean = float(np.mean(real))
    out = []
    for method in ("ddim", "pdae", "diffae"):
        mine = select(conf, method=method)
        seeds = sorted({_canon(r.get("seed")) for r in mine})
        for seed in seeds:
            T, top_rows = at_largest_steps(select(mine, seed=seed))
            vals = [float(r["value"]) for r in top_rows]
            ratio = float(np.mean(vals)) / real_mean if real_mean > 0 else float("nan")
            ok = ratio >= CONFIDENT_RATIO_MIN if math.isfinite(ratio) else None
            label = "pre-trained DPM" if method == "ddim" else f"{method} decoder (via its latent DPM)"
            out.append(_row(dataset, label, seed, "samples", ratio, f">= {CONFIDENT_RATIO_MIN:g} of real", ok,
                            f"confident fraction at T={T}: samples "
                            f"{format_number(float(np.mean(vals)))} vs real {format_number(real_mean)} "
                            f"(n evals {len(vals)})"))
    return out


def z_use_checks(rows: Sequence[Mapping[str, Any]], dataset: str) -> list[dict[str, Any]]:
    """One ``z_used`` row per autoencoder seed: random-x_T SSIM minus the unrelated-pair floor, per image."""
    recon = select(rows, table="recon", dataset=dataset, metric="ssim")
    floor = {run_seed(r): r for r in select(recon, method="unrelated") if r.get("values")}
    out = []
    for method in ("pdae", "diffae"):
        T, top_rows = at_largest_steps(
            [r for r in select(recon, method=method, x_T="random") if str(r.get("sampler", "ddim")) == "ddim"])
        for r in top_rows:
            f = floor.get(run_seed(r))
            if f is None or not r.get("values") or len(f["values"]) != len(r["values"]):
                out.append(_row(dataset, f"{method} autoencoder", _canon(r.get("seed")), "z_used", None,
                                f"SSIM - floor > {Z_USE_MARGIN:g}", None, "no paired unrelated-pair floor"))
                continue
            diff = np.asarray(r["values"], float) - np.asarray(f["values"], float)
            ci = stats.bootstrap_mean_ci(diff, n_boot=N_BOOT, rng=0)
            ok = ci.lo > Z_USE_MARGIN
            out.append(_row(dataset, f"{method} autoencoder", _canon(r.get("seed")), "z_used", ci.estimate,
                            f"SSIM - floor > {Z_USE_MARGIN:g} (95% CI lower end)", ok,
                            f"random x_T, DDIM T={T}: SSIM {format_number(float(r['value']))} vs unrelated "
                            f"pairs {format_number(float(f['value']))}; difference CI [{format_number(ci.lo)}, "
                            f"{format_number(ci.hi)}] over {diff.size} images"))
    return out


def convergence_checks(rows: Sequence[Mapping[str, Any]], dataset: str) -> list[dict[str, Any]]:
    """One ``converged`` row per autoencoder seed from the plateau records (SSIM)."""
    conv = select(rows, table="convergence", dataset=dataset, metric="plateau_change")
    out = []
    for r in conv:
        if _canon(r.get("quality_metric", "ssim")) != "ssim":
            continue
        state = str(r.get("converged", "unknown"))
        ok = {"yes": True, "no": False}.get(state)
        out.append(_row(dataset, f"{r.get('method')} autoencoder", _canon(r.get("seed")), "converged",
                        float(r["value"]), f"SSIM change over the last quarter <= {r.get('tolerance', '-')}", ok,
                        f"SSIM change {format_number(float(r['value']))} between images "
                        f"{r.get('window_images', '-')}"))
    return out


CHECKS = (latent_checks, sample_checks, z_use_checks, convergence_checks)


def health_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every health row (HEALTH_COLUMNS) of every dataset in the records."""
    return [h for ds in _datasets(rows) for check in CHECKS for h in check(rows, ds)]


# Which health rows a model name in a claim refers to.
MODEL_PREFIX = {
    "ddim": ("pre-trained DPM",),
    "dpm": ("pre-trained DPM",),
    "pdae": ("pdae autoencoder",),
    "diffae": ("diffae autoencoder",),
    "pdae_samples": ("pdae decoder", "pdae latent DPM"),
    "diffae_samples": ("diffae decoder", "diffae latent DPM"),
}


def status_of(health: Sequence[Mapping[str, Any]], dataset: str, model: str,
              checks: Sequence[str] = ("latent", "samples", "z_used")) -> tuple[bool | None, list[str]]:
    """(ok, reasons) of one model over all its seeds for the listed checks.

    ok is False if any seed fails any check, None if no check has records, else True."""
    prefixes = MODEL_PREFIX.get(model, (model,))
    mine = [h for h in health if h["dataset"] == dataset and h["check"] in checks
            and any(str(h["model"]).startswith(p) for p in prefixes)]
    known = [h for h in mine if h["status"] != "unknown"]
    bad = [h for h in known if h["status"] in FAILED]
    if bad:
        return False, [f"{h['model']} seed {h['seed']} fails {h['check']} ({h['detail']})" for h in bad]
    if not known:
        return None, [f"no {'/'.join(checks)} health records for {model}"]
    return True, []


def render_markdown(health: Sequence[Mapping[str, Any]]) -> str:
    head = ("# Model health\n\nEvery trained model behind a verdict, checked on the records (eval/health.py): "
            f"latent DPM moments (|std - 1| <= {LATENT_STD_TOL:g}), decoder samples recognised by the domain "
            f"classifier (>= {CONFIDENT_RATIO_MIN:g} of real), z used (random-x_T SSIM > unrelated-pair floor + "
            f"{Z_USE_MARGIN:g}), converged (plateau of SSIM over the last quarter of training). A claim that "
            "uses an unhealthy model is inconclusive.\n\n")
    lines = ["| " + " | ".join(HEALTH_COLUMNS) + " |", "|" + "---|" * len(HEALTH_COLUMNS)]
    for h in health:
        cells = [format_number(h[c]) if isinstance(h[c], float) else str(h[c]) for c in HEALTH_COLUMNS]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return head + "\n".join(lines) + "\n"
