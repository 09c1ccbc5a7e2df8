"""Tables as HTML report items (pandas Styler): the paper's layouts of Tables 1-3 with its numbers beside ours, every
row with its provenance, and the verdict colours of the claims (eval.claims). Each file is an HTML fragment: a report
item on its own, and the report's landing page (workflow/report/workflow.rst) includes the claims and Tables 1, 2.
"""

from __future__ import annotations

import html
from typing import Any, Mapping, Sequence

import pandas as pd

from eval import paper as paper_mod
from eval.tables import _cell, _provenance, _shown, format_mean_std

TITLES = {"recon": "Table 1 (paper §4.3): autoencoding reconstruction", "uncond": "Table 2 (paper §4.8): unconditional"
          " FID", "fewshot": "Table 3 (paper §4.7): few-shot conditional generation FID", "gap": "Posterior-mean gap "
          "(paper §4.2, Fig. 1 and 5)", "interpolation": "Interpolation (paper §4.4, Fig. 7)", "manipulation":
          "Attribute manipulation (paper §4.5, Fig. 8)", "truncation": "Truncation-like effect (paper §4.6, Fig. 9)",
          "efficiency": "Training efficiency (paper §4.1)", "ablation": "Loss weighting (paper §3.4)",
          "probe": "Linear probe of z (beyond the paper)"}
# The paper's layouts: table -> (row keys, column keys, metrics in the paper's order); T = DDIM steps.
WIDE = {"recon": (["dataset", "method", "x_T"], ["T"], ["ssim", "lpips", "feat_dist", "mse"]),
        "uncond": (["dataset", "method"], ["T"], ["fid"]), "fewshot": (["dataset", "scenario", "class"], ["method"], ["fid"])}
PAPER_NAMES = {"pdae": "PDAE", "diffae": "Diff-AE", "ddim": "DDIM", "d2c": "D2C", "real": "real images", "unrelated":
               "unrelated pairs", "ssim": "SSIM", "lpips": "LPIPS", "mse": "MSE", "feat_dist": "feat_dist (domain)"}
METHOD_ORDER = ("pdae", "diffae", "ddim", "d2c", "naive")
VERDICT_COLOURS = {**dict.fromkeys(("reproduced", "passed", "healthy", "converged"), "#c8e6c9"), "inconclusive": "#ffe0a3",
                   **dict.fromkeys(("not reproduced", "failed", "unhealthy", "not converged"), "#ffcdd2")}


def styled_html(df: pd.DataFrame, name: str, caption: str = "", colour: str | None = None, index: bool = False) -> str:
    """A pandas Styler table: cells as text, the `colour` column shaded by VERDICT_COLOURS, ids fixed by `name`."""
    css = [("", "border-collapse: collapse; margin: 6px 0 14px"), ("caption", "text-align: left; font-weight: bold"),
           ("th", "border: 1px solid #bbb; padding: 3px 7px; background: #eef1f5; text-align: left"),
           ("td", "border: 1px solid #ccc; padding: 3px 7px; vertical-align: top; max-width: 32em"
                  + ("; white-space: nowrap" if index else ""))]
    style = df.style.set_uuid(name).set_table_styles([{"selector": s, "props": p} for s, p in css])
    style = style.format(na_rep="").set_caption(caption)
    style = style if index else style.hide(axis="index")
    if colour in df:
        style = style.apply(lambda col: [f"background-color: {VERDICT_COLOURS.get(v, '#e0e0e0')}" for v in col],
                            subset=[colour])
    return style.to_html()


def html_page(title: str, intro: str, *parts: str) -> str:
    """An HTML fragment: a report item on its own, and the landing page (workflow/report/workflow.rst) includes it."""
    return (f'<meta charset="utf-8">\n<div class="pdae-table" style="font: 13px/1.4 sans-serif">\n<h3>'
            f"{html.escape(title)}</h3>\n<p>{html.escape(intro)}</p>\n" + "\n".join(parts) + "\n</div>\n")


def wide(table: str, long: pd.DataFrame) -> pd.DataFrame:
    """The paper's layout of `table` (WIDE) from long rows with `ours` and `paper` text: a row per row key, a column
    per column key and metric, our number beside the paper's where it has one (methods and metrics as the paper)."""
    rows, cols, metrics = WIDE[table]
    long = long[long["metric"].isin(metrics)].copy()
    if "T" in cols:
        sampler = long.get("sampler", pd.Series("-", index=long.index))
        long["T"] = [("no sampling" if str(s) == "-" else f"T = {_cell(s)}") + (" (DDPM)" if p == "ddpm" else "")
                     for s, p in zip(long["steps"], sampler)]
    cols = cols + (["metric"] if len(metrics) > 1 else [])
    keys = long.columns[:list(long.columns).index("mean")] if "mean" in long else long.columns  # not the statistics
    other = [c for c in keys if c not in {*rows, *cols, "steps", "sampler"}]
    rows = rows + [c for c in other if long.groupby(rows + cols, sort=False)[c].nunique().max() > 1]  # e.g. two backends
    for c in rows + cols:
        order = {"metric": metrics, "method": [*METHOD_ORDER, *long[c]], "x_T": ["random", "inferred", *long[c]]}.get(
            c, long[c])  # the paper's order, then first appearance
        long[c] = pd.Categorical(long[c].map(lambda v: PAPER_NAMES.get(str(v), _cell(v))), categories=list(
            dict.fromkeys(PAPER_NAMES.get(str(v), _cell(v)) for v in order if v in set(long[c]))))
    values = ["ours", "paper"] if (long["paper"] != "").any() else ["ours"]
    out = long.pivot_table(index=rows, columns=cols, values=values, aggfunc="first", observed=True)
    return out.reorder_levels([*range(1, out.columns.nlevels), 0], axis=1).sort_index(
        axis=1, level=list(range(out.columns.nlevels - 1)), sort_remaining=False) if len(values) > 1 else out["ours"]


def render_html(table: str, agg_rows: Sequence[Mapping[str, Any]]) -> str:
    """The table for the report: the paper's layout first where the paper has one (and the paper's own table for
    reference when none of our rows is a quantity of the paper), then every row with its provenance."""
    agg, shown, notes = _shown(agg_rows)
    shown["seeds"], shown["code version"] = agg["seeds"], agg["code_version"]
    parts, matched = [], (agg["paper"] != "").any()
    starred = lambda df: df["paper"] + df["paper_note"].str.contains("uncertain").map({True: " *", False: ""})  # noqa: E731
    if table in WIDE:
        ours = agg.assign(ours=[format_mean_std(m, s) for m, s in zip(agg["mean"], agg["std"])], paper=starred(agg))
        parts.append(styled_html(wide(table, ours), f"{table}_wide", "This run: mean ± s.d. over seeds" + (
            ", the paper's number beside ours (* uncertain placement in the paper)" if matched else ""), index=True))
        if not matched:
            ref = pd.DataFrame(paper_mod.as_rows(e for e in paper_mod.entries(table) if e.steps != "-" or table != "recon"))
            parts.append(styled_html(wide(table, ref.assign(ours=starred(ref), paper="")), f"{table}_paper",
                                     f"The paper's {TITLES[table].split(' (')[0]} on its datasets, for reference (not "
                                     "comparable with this run's numbers; * uncertain placement)", index=True))
    rows_html = styled_html(shown, f"{table}_rows") + "".join(
        f"<p>[{i}] {html.escape(n)}</p>" for i, n in enumerate(notes, 1))
    parts.append(f"<details><summary>Every row with its provenance</summary>{rows_html}</details>" if parts else rows_html)
    return html_page(TITLES.get(table, table), _provenance(agg), *parts)
