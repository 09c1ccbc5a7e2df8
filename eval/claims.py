"""The paper's claims, tested on the evaluation records with intervals, health and convergence gates.

    python -m eval claims --records FILE... [--out-dir results/tables]
        -> claims.csv / .md / .html (one row per claim and setting) and health.csv / .md / .html (eval.health)

Each row quotes what the paper says (`paper_says`, with its section), the comparison made here, the point
estimate and a 95 % bootstrap interval, the number of seeds, a verdict and the reason for it:

- Intervals (eval.stats): per-image metrics (reconstruction, gap, ablation) use a two-level bootstrap over
  seeds, then images, PAIRED where the two methods saw the same images and noise (same eval seed); FID uses
  each evaluation's bootstrap replicates over samples, combined over seeds. Differences are signed so that
  positive = the claim's direction (the proponent, usually PDAE, is better).
- Verdict from the interval of the signed difference d: "better" claims: reproduced if lo > 0, not reproduced
  if hi <= 0, else inconclusive (the interval contains 0). "On par" claims (non-inferiority with a stated
  margin m): reproduced if lo > -m, not reproduced if hi < -m, else inconclusive. Ratio claims compare the
  interval with the paper's bound.
- Gates, which turn a verdict into "inconclusive" with the reason: fewer than MIN_SEEDS seeds; a model the
  claim uses fails a health check (eval.health); a model that has not converged loses the comparison (a
  not-converged baseline that PDAE beats, or a not-converged PDAE that does not win: "budget-limited").
- Sanity rows (kind "sanity") are true by construction (e.g. PDAE vs DDIM with random x_T, where DDIM's x_T
  carries nothing about the input); they check the pipeline and are no claim of the paper.
"""

# The pieces live in eval.claims_spec (what each claim quotes, bounds, the row layout), eval.claims_images
# (gap, reconstruction and loss-weighting claims on per-image metrics), eval.claims_models (efficiency,
# throughput and FID claims) and eval.claims_render (Markdown and HTML); the verdict rules and intervals are
# eval.verdicts. This module runs them all (`claims`), writes the files and provides `python -m eval claims`;
# every name of that interface is importable from here (__all__).

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from eval import health as health_mod
from eval.claims_images import claim_gap, claim_recon, claim_weighting, recon_distance_metric
from eval.claims_models import claim_efficiency, claim_fewshot, claim_uncond, fid_claim_row
from eval.claims_render import INTRO, render_html, render_markdown
from eval.claims_spec import (
    CLAIM_COLUMNS, CLAIMS, GAP_T_RANGE, IMAGES_RATIO_BOUND, METHOD_NAMES, ON_PAR_MARGIN, Claim, claim_row, missing,
)
from eval.verdicts import (
    LEVEL, MIN_SEEDS, N_BOOT, VERDICTS, Gate, _fmt, _interval_text, by_run_seed, fid_difference, gated, make_gate,
    paired_difference, paired_units, verdict_at_most, verdict_better, verdict_on_par,
)

__all__ = [
    # eval.verdicts: the verdict rules are part of this module's interface
    "LEVEL", "MIN_SEEDS", "N_BOOT", "VERDICTS", "Gate", "_fmt", "_interval_text", "by_run_seed", "fid_difference",
    "gated", "make_gate", "paired_difference", "paired_units", "verdict_at_most", "verdict_better", "verdict_on_par",
    # eval.claims_spec
    "CLAIM_COLUMNS", "CLAIMS", "GAP_T_RANGE", "IMAGES_RATIO_BOUND", "METHOD_NAMES", "ON_PAR_MARGIN", "Claim",
    "claim_row", "missing",
    # eval.claims_images, eval.claims_models
    "claim_gap", "claim_recon", "claim_weighting", "recon_distance_metric", "claim_efficiency", "claim_fewshot",
    "claim_uncond", "fid_claim_row",
    # eval.claims_render
    "INTRO", "render_html", "render_markdown",
    # this module
    "CLAIM_FUNCTIONS", "claims", "write_claims", "register_cli",
]


CLAIM_FUNCTIONS: tuple[Callable[[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]]], list[dict[str, Any]]], ...] = (
    claim_gap, claim_recon, claim_efficiency, claim_uncond, claim_fewshot, claim_weighting,
)


def claims(rows: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(claim rows, health rows) from raw records (with their per-unit `values`)."""
    from eval.tables import tidy

    rows = tidy(rows)
    health = health_mod.health_rows(rows)
    return [c for fn in CLAIM_FUNCTIONS for c in fn(rows, health)], health


def write_claims(rows: Sequence[Mapping[str, Any]], out_dir: str | Path) -> list[Path]:
    """claims.csv / .md / .html and health.csv / .md / .html under out_dir."""
    from eval.tables import _write_text, write_csv

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result, health = claims(rows)
    claims_html, health_html = render_html(result, health)
    return [write_csv(out_dir / "claims.csv", result, CLAIM_COLUMNS),
            _write_text(out_dir / "claims.md", render_markdown(result)),
            _write_text(out_dir / "claims.html", claims_html),
            write_csv(out_dir / "health.csv", health, health_mod.HEALTH_COLUMNS),
            _write_text(out_dir / "health.md", health_mod.render_markdown(health)),
            _write_text(out_dir / "health.html", health_html)]


def _run(args: argparse.Namespace) -> int:
    from eval.tables import load_rows

    for path in write_claims(load_rows(args.records), args.out_dir):
        print(path)
    return 0


def register_cli(subparsers: Any) -> None:
    help_text = ("records -> claims.csv/.md/.html (the paper's claims with intervals and verdicts) and health.csv/.md/.html "
                 "(the health of every model behind them)")
    p = subparsers.add_parser("claims", help=help_text, description=help_text)
    p.add_argument("--records", nargs="+", required=True, help="records JSON files (with per-unit values)")
    p.add_argument("--out-dir", default="results/tables", help="output folder (default results/tables)")
    p.set_defaults(func=_run)
