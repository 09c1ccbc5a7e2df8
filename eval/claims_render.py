"""The claims as a report: claims.md (a Markdown table under INTRO, the verdict rules in words) and the claims
and health pages in HTML (pandas Styler via eval.tables_html, verdicts and statuses coloured). The rows
themselves come from eval.claims.claims; the health table's own Markdown is eval.health.render_markdown.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from eval import health as health_mod
from eval.claims_spec import ON_PAR_MARGIN
from eval.paper import format_number
from eval.verdicts import LEVEL, MIN_SEEDS


INTRO = f"""# Claims of the paper: evidence and verdicts

Each row tests one statement of the paper (`paper_says`, with its section) on this run's records.
`estimate [ci_low, ci_high]` is the signed difference (positive = the paper's direction) with a {LEVEL:.0%}
bootstrap interval over seeds and images (paired where both methods saw the same images and noise) or over
seeds and generated samples (FID). Verdicts: **reproduced** (the interval is on the paper's side),
**not reproduced** (on the other side), **inconclusive** (the interval straddles the bound, fewer than
{MIN_SEEDS} seeds, a model fails a health check, or the model that loses has not converged: "budget-limited").
"On par" = non-inferior within a margin: SSIM {ON_PAR_MARGIN['ssim']:g} absolute, MSE {ON_PAR_MARGIN['mse']:.0%}
of the baseline. Sanity rows are true by construction and check the pipeline. Model health: health.md.
"""


def _cell(value: Any) -> str:
    text = format_number(value) if isinstance(value, float) and math.isfinite(value) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    cols = ("claim", "dataset", "setting", "verdict", "estimate", "ci_low", "ci_high", "n_seeds", "reason",
            "evidence", "paper_says", "source")
    lines = [INTRO, "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    ordered = [r for r in rows if r["kind"] == "claim"] + [r for r in rows if r["kind"] != "claim"]
    lines += ["| " + " | ".join(_cell(r[c]) for c in cols) + " |" for r in ordered]
    return "\n".join(lines) + "\n"


def render_html(rows: Sequence[Mapping[str, Any]], health: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """(claims page, health page) for the report: claims first, then sanity rows; verdicts and statuses coloured
    (reproduced / healthy green, not reproduced / unhealthy red, inconclusive amber, unknown grey)."""
    import pandas as pd

    from eval.tables_html import html_page, styled_html

    def interval(r: Mapping[str, Any]) -> str:
        return "" if r["ci_low"] in ("", "-") else f"[{_cell(r['ci_low'])}, {_cell(r['ci_high'])}]"

    ordered = [r for r in rows if r["kind"] == "claim"] + [r for r in rows if r["kind"] != "claim"]
    table = pd.DataFrame([{"claim": r["claim"] + ("" if r["kind"] == "claim" else f" ({r['kind']})"),
                           "dataset": r["dataset"], "setting": r["setting"], "verdict": r["verdict"],
                           "estimate": _cell(r["estimate"]), "95% CI": interval(r), "seeds": r["n_seeds"],
                           "the paper says": r["paper_says"], "source": r["source"], "reason": r["reason"],
                           "evidence": r["evidence"]} for r in ordered])
    why = ["claim", "dataset", "setting", "verdict", "reason", "evidence"]
    intro = " ".join(INTRO.split("\n")[2:]).replace("**", "").replace("`", "").replace("health.md", "the Model health table")
    checks = pd.DataFrame([{c: _cell(h[c]) for c in health_mod.HEALTH_COLUMNS} for h in health])
    return (html_page("Claims of the paper: evidence and verdicts", intro,
                      styled_html(table.drop(columns=why[4:]), "claims", colour="verdict"),
                      "<details><summary>Reasons and evidence</summary>"
                      + styled_html(table[why], "claims_why", colour="verdict") + "</details>"),
            html_page("Model health", "Every trained model behind a verdict: latent DPM moments, decoder samples, "
                      "z used, convergence. A claim that uses an unhealthy model is inconclusive.",
                      styled_html(checks, "health", colour="status")))
