"""Records -> tables (tidy CSV, seed aggregates, Markdown, LaTeX) and the paper's claims with verdicts.

Sub-commands (DESIGN.md §6, issue 4 item 10):

    python -m eval tables --records FILE... [--out-dir results/tables]
        for each `table` found: <table>_rows.csv (tidy, every measurement, with the dataset slug and the
        paper's number), <table>.csv (aggregate over seeds), <table>.md and <table>.tex; plus paper.csv.
    python -m eval claims --records FILE... [--out-dir results/tables]
        claims.csv and claims.md: each claim of the paper, its evidence (mean ± std, n seeds) and a verdict.

Aggregation: rows are grouped by every column except `seed`, `eval_seed`, `value`, `code_version`, `config`
and the per-run measurements `images_seen` / `wall_time_s` (reported as their means). In tables whose x-axis is
images seen (`efficiency`), `images_seen` is a group column. Per group: mean, std (ddof = 1, blank for
n = 1), n, the seeds, images_seen (mean), the code version(s), the backend (a group column: numbers from
different metric backends are never averaged together). The paper's number (eval.paper) sits in `paper`.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from eval import paper as paper_mod
from eval.common import read_records
from eval.paper import format_number

# Columns never grouped on; the first five are dropped from the aggregate, the last two averaged.
NON_KEY_COLUMNS = ("seed", "eval_seed", "value", "code_version", "config", "images_seen", "wall_time_s")
AVERAGED_COLUMNS = ("images_seen", "wall_time_s")
# Tables where a normally averaged column is the x-axis and therefore a group column.
X_COLUMNS: dict[str, tuple[str, ...]] = {"efficiency": ("images_seen",)}
DERIVED_COLUMNS = ("paper", "paper_note", "data_source")
LEADING = ("table", "dataset", "method")
TRAILING = ("metric", "backend")
STAT_COLUMNS = ("mean", "std", "n", "seeds")
VERDICTS = ("reproduced", "not reproduced", "not measurable here")


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------

def load_rows(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Records from JSON records files (eval.common.write_records) or tidy CSV files (`value` column)."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: records file not found")
        if path.suffix == ".csv":
            rows.extend(_read_csv_rows(path))
        else:
            rows.extend(read_records(path))
    for i, row in enumerate(rows):
        if "table" not in row or "metric" not in row or "value" not in row:
            raise ValueError(f"record {i}: missing 'table', 'metric' or 'value' column")
    return rows


def _read_csv_rows(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and "value" not in rows[0]:
        raise ValueError(f"{path}: not a tidy rows CSV (no 'value' column)")
    out = []
    for row in rows:
        row = {k: parse_cell(v) for k, v in row.items()}
        try:
            row["value"] = float(row["value"])
        except (TypeError, ValueError):
            raise ValueError(f"{path}: non-numeric value {row['value']!r}") from None
        out.append(row)
    return out


def parse_cell(text: str | None) -> Any:
    """CSV cell -> int, float, "-" (empty) or the text."""
    if text is None or text == "":
        return "-"
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


# ----------------------------------------------------------------------------------------------
# Tidy rows and aggregation (pure functions)
# ----------------------------------------------------------------------------------------------

def tidy(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Copies of `rows` with `dataset` resolved to the paper slug (eval.paper.dataset_slug; the original name
    kept in `data_source` where it changed) and the paper's number in `paper` / `paper_note`.

    A measurement that several records files repeat (equal in every column but `config`, e.g. the few-shot
    naive baseline, which both autoencoders' files carry) is kept once."""
    out = []
    seen: set[tuple] = set()
    for row in rows:
        key = tuple(sorted((k, str(v)) for k, v in row.items() if k != "config"))
        if key in seen:
            continue
        seen.add(key)
        new = dict(row)
        slug = paper_mod.dataset_slug(row)
        if slug != row.get("dataset", "-"):
            new["data_source"] = row.get("dataset", "-")
            new["dataset"] = slug
        new["paper"], new["paper_note"] = paper_mod.paper_value(new)
        out.append(new)
    return out


def columns_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """All columns in a readable order: table, dataset, method, the rest as first seen, metric, backend."""
    seen: list[str] = []
    for row in rows:
        for c in row:
            if c not in seen:
                seen.append(c)
    lead = [c for c in LEADING if c in seen]
    trail = [c for c in TRAILING if c in seen]
    tail = [c for c in ("value", "seed", "eval_seed", "images_seen", "wall_time_s", "code_version", "config",
                        *DERIVED_COLUMNS) if c in seen]
    middle = [c for c in seen if c not in lead + trail + tail]
    return lead + middle + trail + tail


def key_columns(rows: Sequence[Mapping[str, Any]], table: str) -> list[str]:
    """The group-by columns of `table`: every column except NON_KEY_COLUMNS (bar the table's x columns)."""
    x_cols = [c for c in X_COLUMNS.get(table, ()) if any(c in r for r in rows)]
    keys = [c for c in columns_of(rows) if c not in NON_KEY_COLUMNS and c not in ("paper", "paper_note")]
    lead = sum(c in LEADING for c in keys)
    return keys[:lead] + x_cols + keys[lead:]  # the x-axis right after table, dataset, method


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof = 1; None for a single value)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_std: no values")
    mean = math.fsum(values) / n
    if n == 1:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def _canon(value: Any) -> str:
    """Group-key text: 100, 100.0 and "100" are the same key."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and re.fullmatch(r"-?\d+\.0+", value):
        return value.split(".")[0]
    return "-" if value is None else str(value)


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _sort_key(value: Any) -> tuple:
    num = _numeric(value)
    return (0, num, "") if num is not None else (1, 0.0, str(value))


def aggregate(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Aggregate tidy rows of ONE table over seeds (see the module docstring for the columns).

    -> rows: key columns, mean, std ("" for n = 1), n, seeds ("0;1;2"), images_seen / wall_time_s (means,
    where present and not a key), code_version ("a;b" if several), paper, paper_note."""
    if not rows:
        return []
    tables = {str(r.get("table")) for r in rows}
    if len(tables) != 1:
        raise ValueError(f"aggregate: one table at a time, got {sorted(tables)}")
    table = tables.pop()
    keys = key_columns(rows, table)
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(_canon(row.get(c, "-")) for c in keys), []).append(row)
    out = []
    for members in groups.values():
        first = members[0]
        agg: dict[str, Any] = {c: first.get(c, "-") for c in keys}
        mean, std = mean_std([float(m["value"]) for m in members])
        agg.update(mean=mean, std="" if std is None else std, n=len(members),
                   seeds=";".join(sorted({_canon(m.get("seed", "-")) for m in members}, key=_sort_key)))
        for col in AVERAGED_COLUMNS:
            if col in keys or not any(col in m for m in members):
                continue
            nums = [v for v in (_numeric(m.get(col)) for m in members) if v is not None]
            agg[col] = math.fsum(nums) / len(nums) if nums else "-"
        agg["code_version"] = ";".join(sorted({str(m.get("code_version", "-")) for m in members}))
        agg["paper"], agg["paper_note"] = paper_mod.paper_value(first)
        out.append(agg)
    out.sort(key=lambda r: tuple(_sort_key(r[c]) for c in keys))
    return out


def split_tables(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows grouped by their `table` column (order of first appearance)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(str(row["table"]), []).append(dict(row))
    return out


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------

def format_mean_std(mean: float, std: float | str | None) -> str:
    """"mean ± std" (just "mean" when std is blank)."""
    if std in (None, ""):
        return format_number(float(mean))
    return f"{format_number(float(mean))} ± {format_number(float(std))}"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return format_number(value)
    return str(value)


def display_columns(agg_rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Columns shown in Markdown/LaTeX: the key columns that are not "-" everywhere (`table` dropped)."""
    if not agg_rows:
        return []
    skip = {"table", "mean", "std", "n", "seeds", "code_version", "paper", "paper_note"}
    if str(agg_rows[0].get("table")) not in X_COLUMNS:  # images seen / wall time shown where they are the x-axis
        skip.update(AVERAGED_COLUMNS)
    cols = [c for c in agg_rows[0] if c not in skip]
    return [c for c in cols if any(_cell(r.get(c, "-")) not in ("-", "") for r in agg_rows)]


def _rendered(agg_rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, body cells, footnotes) shared by the Markdown and LaTeX renderings."""
    cols = display_columns(agg_rows)
    has_paper = any(r.get("paper") for r in agg_rows)
    header = cols + ["mean ± std", "n"] + (["paper"] if has_paper else [])
    notes: list[str] = []
    body = []
    for r in agg_rows:
        line = [_cell(r.get(c, "-")) for c in cols] + [format_mean_std(r["mean"], r["std"]), str(r["n"])]
        if has_paper:
            text = str(r.get("paper") or "")
            note = str(r.get("paper_note") or "")
            if text and note:
                if note not in notes:
                    notes.append(note)
                text = f"{text} [{notes.index(note) + 1}]"
            line.append(text)
        body.append(line)
    return header, body, notes


def _provenance_line(agg_rows: Sequence[Mapping[str, Any]]) -> str:
    versions = sorted({v for r in agg_rows for v in str(r.get("code_version", "-")).split(";")})
    backends = sorted({str(r.get("backend", "-")) for r in agg_rows})
    return f"backend(s): {', '.join(backends)}; code version(s): {', '.join(versions)}; std over seeds (ddof=1)"


def render_markdown(table: str, agg_rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table with "mean ± std", n and (where the paper has the quantity) the paper's number."""
    header, body, notes = _rendered(agg_rows)
    lines = [f"## {table}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
    lines += ["", _provenance_line(agg_rows)]
    if notes:
        lines += ["", "Paper notes:"] + [f"[{i}] {n}" for i, n in enumerate(notes, 1)]
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def render_latex(table: str, agg_rows: Sequence[Mapping[str, Any]]) -> str:
    """A booktabs `tabular` with the same content as the Markdown (± as $\\pm$)."""
    header, body, notes = _rendered(agg_rows)

    def tex(cell: str) -> str:
        return latex_escape(cell).replace("±", r"$\pm$")

    lines = [f"% {table}: {latex_escape(_provenance_line(agg_rows))}",
             r"\begin{tabular}{" + "l" * (len(header) - 2 - ("paper" in header)) + "r" * (2 + ("paper" in header)) + "}",
             r"\toprule", " & ".join(tex(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(tex(c) for c in row) + r" \\" for row in body]
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [f"% [{i}] {latex_escape(n)}" for i, n in enumerate(notes, 1)]
    return "\n".join(lines) + "\n"


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """CSV with the union of the rows' columns ("-" where a row lacks one); floats in full precision."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = list(columns) if columns is not None else columns_of(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for row in rows:
        writer.writerow([_csv_cell(row.get(c, "-")) for c in cols])
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(buf.getvalue())
    tmp.replace(path)
    return path


def _csv_cell(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def _write_text(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def write_tables(rows: Sequence[Mapping[str, Any]], out_dir: str | Path) -> list[Path]:
    """Write <table>_rows.csv, <table>.csv, <table>.md, <table>.tex per table, and paper.csv."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for table, members in split_tables(tidy(rows)).items():
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", table):
            raise ValueError(f"table name {table!r} is not usable as a file name")
        agg = aggregate(members)
        written.append(write_csv(out_dir / f"{table}_rows.csv", members))
        written.append(write_csv(out_dir / f"{table}.csv", agg, list(agg[0].keys())))
        written.append(_write_text(out_dir / f"{table}.md", render_markdown(table, agg)))
        written.append(_write_text(out_dir / f"{table}.tex", render_latex(table, agg)))
    written.append(write_csv(out_dir / "paper.csv", paper_mod.as_rows()))
    return written


# ----------------------------------------------------------------------------------------------
# Claims
# ----------------------------------------------------------------------------------------------

# Thresholds of the verdicts (documented in claims.md).
NEAR_EXACT_SSIM = 0.99      # Table 1: PDAE 0.993, Diff-AE 0.991 with inferred x_T; 0.99 is the lower, rounded down
ON_PAR_RELATIVE = 0.05      # "on par": |PDAE - Diff-AE| <= max(1 pooled std, 5% of |Diff-AE|), or PDAE better
IMAGES_RATIO_MAX = 0.5      # "PDAE needs <= 1/2 of Diff-AE's training images" (paper: 1/3-1/2)
GAP_MIN_REDUCTION = 0.30    # issue 4 acceptance: >= 30% lower gap for t in 400-700 (paper gives no number)
GAP_T_RANGE = (400, 700)    # on a T = 1000 grid; scaled to the schedule's T
GAP_T_MIN = 50              # issue 4 acceptance: every t >= 50 (very small t: both gaps ~ 0)
RECON_STEPS = 100           # Table 1: DDIM T = 100
HIGHER_IS_BETTER = {"ssim": True, "mse": False, "lpips": False, "fid": False, "kid": False, "loss_cv": False,
                    "accuracy": True, "class_accuracy": True}


@dataclasses.dataclass(frozen=True)
class Stat:
    """An aggregated number: mean, std over seeds (None for n = 1), n."""

    mean: float
    std: float | None
    n: int

    def __str__(self) -> str:
        return f"{format_mean_std(self.mean, self.std)} (n={self.n})"


def _stat(agg_row: Mapping[str, Any]) -> Stat:
    std = agg_row.get("std")
    return Stat(float(agg_row["mean"]), None if std in ("", None) else float(std), int(agg_row["n"]))


def pooled_std(a: Stat, b: Stat) -> float:
    """sqrt((s_a^2 + s_b^2) / 2), a missing std counting as 0."""
    return math.sqrt(((a.std or 0.0) ** 2 + (b.std or 0.0) ** 2) / 2)


def better(metric: str, a: float, b: float) -> bool:
    """Whether value a is strictly better than b for `metric` (higher SSIM, lower MSE/LPIPS/FID...)."""
    return a > b if HIGHER_IS_BETTER.get(metric, False) else a < b


def on_par_or_better(metric: str, a: Stat, b: Stat, rel: float = ON_PAR_RELATIVE) -> bool:
    """PDAE (a) is better than, or within max(1 pooled std, rel * |b|) of, the baseline (b)."""
    return better(metric, a.mean, b.mean) or abs(a.mean - b.mean) <= max(pooled_std(a, b), rel * abs(b.mean))


def scaled_t_range(T: int, t_range: tuple[int, int] = GAP_T_RANGE) -> tuple[float, float]:
    """The paper's t range (on T = 1000) scaled to a schedule of T steps."""
    return t_range[0] * T / 1000, t_range[1] * T / 1000


def _claim(claim: str, source: str, dataset: str, evidence: str, verdict: str, detail: str = "") -> dict[str, str]:
    assert verdict in VERDICTS
    return {"claim": claim, "source": source, "dataset": dataset, "evidence": evidence, "verdict": verdict,
            "detail": detail}


def _missing(claim: str, source: str, what: str) -> dict[str, str]:
    return _claim(claim, source, "-", f"no {what} records", "not measurable here")


def _select(agg: Sequence[Mapping[str, Any]], **where: Any) -> list[Mapping[str, Any]]:
    return [r for r in agg if all(_canon(r.get(k, "-")) == _canon(v) for k, v in where.items())]


def _datasets(agg: Sequence[Mapping[str, Any]]) -> list[str]:
    return sorted({str(r.get("dataset", "-")) for r in agg})


def _by(rows: Iterable[Mapping[str, Any]], column: str) -> dict[str, Mapping[str, Any]]:
    """Rows keyed by one column (the first row per value, rows sorted by backend for determinism)."""
    out: dict[str, Mapping[str, Any]] = {}
    for r in sorted(rows, key=lambda r: str(r.get("backend", "-"))):
        out.setdefault(_canon(r.get(column, "-")), r)
    return out


def claim_gap(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """gap(PDAE) < gap(DPM) at every t (paper §4.2, Fig. 5 right), plus issue 4's acceptance: every t >= 50
    and a mean reduction 1 - gap_PDAE/gap_DPM >= 30% over t in 400-700 (scaled to T = max t + 1, at least
    1000 unless the records carry `T`), the reduction computed per seed and given as mean ± std over seeds."""
    name, name2, src = "gap(PDAE) < gap(DPM) at every t", "gap(PDAE) < gap(DPM) for t >= 50, >= 30% lower for t in 400-700", "§4.2 Fig. 5; issue 4"
    gap_rows = [r for r in rows if r.get("table") == "gap" and r.get("metric") == "gap"]
    if not gap_rows:
        return [_missing(name, src, "gap"), _missing(name2, src, "gap")]
    agg = aggregate(gap_rows)
    out = []
    for ds in _datasets(agg):
        pdae = _by(_select(agg, dataset=ds, method="pdae"), "t")
        dpm = _by(_select(agg, dataset=ds, method="dpm"), "t")
        ts = sorted((int(float(t)) for t in set(pdae) & set(dpm)))
        if not ts:
            out += [_claim(name, src, ds, "no t with both PDAE and DPM", "not measurable here")]
            continue
        lower = [t for t in ts if _stat(pdae[str(t)]).mean < _stat(dpm[str(t)]).mean]
        worst = max(ts, key=lambda t: _stat(pdae[str(t)]).mean / max(_stat(dpm[str(t)]).mean, 1e-300))
        T = _schedule_T(gap_rows, ts)
        lo, hi = scaled_t_range(T)
        reduction = _gap_reduction_per_seed([r for r in gap_rows if r.get("dataset") == ds], lo, hi)
        red_text = (f"mean reduction for t in [{lo:g}, {hi:g}]: {format_mean_std(*_pct(reduction))} % "
                    f"(n={len(reduction)} seeds)") if reduction else f"no t in [{lo:g}, {hi:g}]"
        ev = (f"PDAE < DPM at {len(lower)}/{len(ts)} t; worst t={worst}: PDAE {_stat(pdae[str(worst)])} vs "
              f"DPM {_stat(dpm[str(worst)])}; {red_text}")
        out.append(_claim(name, src, ds, ev, "reproduced" if len(lower) == len(ts) else "not reproduced",
                          f"T={T}; Gaussian noise (the official code used uniform noise, REFERENCE.md §5.2)"))
        ts50 = [t for t in ts if t >= GAP_T_MIN]
        lower50 = [t for t in ts50 if t in lower]
        if not reduction or not ts50:
            out.append(_claim(name2, src, ds, red_text, "not measurable here"))
            continue
        mean_red = _pct(reduction)[0] / 100
        ok = len(lower50) == len(ts50) and mean_red >= GAP_MIN_REDUCTION
        ev2 = f"PDAE < DPM at {len(lower50)}/{len(ts50)} t >= {GAP_T_MIN}; {red_text}"
        out.append(_claim(name2, src, ds, ev2, "reproduced" if ok else "not reproduced",
                          f"threshold {GAP_MIN_REDUCTION:.0%} (issue 4); the paper states no number"))
    return out


def _pct(values: Sequence[float]) -> tuple[float, float | None]:
    mean, std = mean_std([100 * v for v in values])
    return mean, std


def _schedule_T(rows: Sequence[Mapping[str, Any]], ts: Sequence[int]) -> int:
    for r in rows:
        if _numeric(r.get("T")) is not None:
            return int(float(r["T"]))
    return max(1000, max(ts) + 1)


def _gap_reduction_per_seed(rows: Sequence[Mapping[str, Any]], lo: float, hi: float) -> list[float]:
    """Per evaluation: mean over t in [lo, hi] of 1 - gap_PDAE(t) / gap_DPM(t).

    Rows pair on `eval_seed` (the job's noise seed: the DPM, trained once with seed 0, is measured in every
    seed's job on the same noise as that seed's PDAE), falling back to `seed` for records without it."""
    by_seed: dict[str, dict[str, dict[int, float]]] = {}
    for r in rows:
        t = int(float(r["t"]))
        if lo <= t <= hi:
            run = r.get("eval_seed") if _canon(r.get("eval_seed", "-")) not in ("-", "", "nan") else r.get("seed")
            by_seed.setdefault(_canon(run), {}).setdefault(str(r["method"]), {})[t] = float(r["value"])
    out = []
    for per in by_seed.values():
        p, d = per.get("pdae", {}), per.get("dpm", {})
        common = sorted(set(p) & set(d))
        if common:
            out.append(math.fsum(1 - p[t] / d[t] for t in common if d[t] > 0) / len(common))
    return out


def _recon_rows(rows: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """Aggregated DDIM reconstruction rows at T = 100 (else the largest T measured) and a note."""
    recon = [r for r in rows if r.get("table") == "recon" and str(r.get("sampler", "ddim")) == "ddim"]
    if not recon:
        return [], ""
    steps = sorted({int(float(r["steps"])) for r in recon if _numeric(r.get("steps")) is not None})
    chosen = RECON_STEPS if RECON_STEPS in steps else (steps[-1] if steps else None)
    note = f"DDIM T={chosen}" + ("" if chosen == RECON_STEPS else f" (T={RECON_STEPS} not measured)")
    agg = [r for r in aggregate(recon) if _canon(r.get("steps")) == _canon(chosen)]
    # Several encoding step counts for one inferred-x_T quantity: keep encode_steps = T (Diff-AE's protocol).
    by_quantity: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in agg:
        by_quantity.setdefault(tuple(_canon(r.get(c, "-")) for c in ("dataset", "method", "x_T", "metric", "backend")),
                               []).append(r)
    kept = []
    for rows_q in by_quantity.values():
        same = [r for r in rows_q if _canon(r.get("encode_steps", "-")) in ("-", _canon(chosen))]
        kept.append((same or rows_q)[0])
    if any(len(v) > 1 for v in by_quantity.values()):
        note += f"; inferred x_T encoded with {chosen} steps where several encode_steps were measured"
    return kept, note


def claim_recon_inferred(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Inferred-x_T reconstruction is near exact: PDAE SSIM >= 0.99 (Table 1: 0.993) at DDIM T = 100."""
    name, src = f"PDAE inferred-x_T reconstruction near exact (SSIM >= {NEAR_EXACT_SSIM})", "§4.3 Table 1"
    agg, note = _recon_rows(rows)
    out = []
    for ds in _datasets(agg) or ["-"]:
        ssim = _select(agg, dataset=ds, method="pdae", x_T="inferred", metric="ssim")
        if not ssim:
            out.append(_claim(name, src, ds, "no PDAE inferred-x_T SSIM records", "not measurable here"))
            continue
        s = _stat(ssim[0])
        extra = "; ".join(f"{m} {_stat(r[0])}" for m in ("mse", "lpips")
                          if (r := _select(agg, dataset=ds, method="pdae", x_T="inferred", metric=m)))
        ev = f"SSIM {s}" + (f"; {extra}" if extra else "")
        out.append(_claim(name, src, ds, ev, "reproduced" if s.mean >= NEAR_EXACT_SSIM else "not reproduced",
                          f"{note}; threshold {NEAR_EXACT_SSIM} (Table 1: PDAE 0.993, Diff-AE 0.991)"))
    return out


def _compare_metrics(agg: Sequence[Mapping[str, Any]], ds: str, a: dict[str, str], b: dict[str, str],
                     test: Callable[[str, Stat, Stat], bool]) -> tuple[list[str], list[bool]]:
    lines, oks = [], []
    for metric in ("ssim", "lpips", "mse"):
        ra = _select(agg, dataset=ds, metric=metric, **a)
        rb = _select(agg, dataset=ds, metric=metric, **b)
        if ra and rb:
            sa, sb = _stat(ra[0]), _stat(rb[0])
            ok = test(metric, sa, sb)
            oks.append(ok)
            lines.append(f"{metric}: {sa} vs {sb} ({'ok' if ok else 'no'})")
    return lines, oks


def claim_recon_random(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """PDAE random-x_T reconstruction beats DDIM (same x_T mode: random; and with inferred x_T both, as in
    Table 1 where the DDIM row is DDIM-inverted) and is on par with Diff-AE (random x_T; on par: better,
    or within max(1 pooled std, 5% of Diff-AE's value)), on every metric measured among SSIM, LPIPS, MSE."""
    src = "§4.3 Table 1"
    claims = (
        ("PDAE random-x_T reconstruction beats DDIM (random x_T)", {"method": "pdae", "x_T": "random"},
         {"method": "ddim", "x_T": "random"}, lambda m, a, b: better(m, a.mean, b.mean), "strictly better"),
        ("PDAE inferred-x_T reconstruction beats DDIM (inferred x_T)", {"method": "pdae", "x_T": "inferred"},
         {"method": "ddim", "x_T": "inferred"}, lambda m, a, b: better(m, a.mean, b.mean), "strictly better"),
        ("PDAE random-x_T reconstruction on par with Diff-AE", {"method": "pdae", "x_T": "random"},
         {"method": "diffae", "x_T": "random"}, on_par_or_better,
         f"on par = better or within max(1 pooled std, {ON_PAR_RELATIVE:.0%} of Diff-AE)"),
    )
    agg, note = _recon_rows(rows)
    out = []
    for name, a, b, test, rule in claims:
        for ds in _datasets(agg) or ["-"]:
            lines, oks = _compare_metrics(agg, ds, a, b, test)
            if not oks:
                out.append(_claim(name, src, ds, f"no paired {a['method']}/{b['method']} records", "not measurable here"))
                continue
            out.append(_claim(name, src, ds, "; ".join(lines), "reproduced" if all(oks) else "not reproduced",
                              f"{note}; PDAE first; {rule}; every metric measured must hold"))
    return out


RATIO_BOUND = {"no": "> ", "first": "<= "}
RATIO_NOTE = {"no": " (PDAE never reached Diff-AE's final quality: lower bound)",
              "first": " (reached by PDAE's first snapshot: upper bound)"}


def claim_images_ratio(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """PDAE needs <= 1/2 of Diff-AE's training images (paper: 1/3-1/2, §4.1): the efficiency records'
    `images_ratio` (PDAE images to reach Diff-AE's final quality / Diff-AE's images; eval.efficiency)."""
    name, src = f"PDAE needs <= {IMAGES_RATIO_MAX:g} of Diff-AE's training images", "§4.1"
    ratio = [r for r in rows if r.get("table") == "efficiency" and r.get("metric") == "images_ratio"]
    if not ratio:
        return [_missing(name, src, "efficiency images_ratio")]
    agg = aggregate(ratio)
    out = []
    for ds in _datasets(agg):
        members = _select(agg, dataset=ds)
        quality = sorted({str(r.get("quality_metric", "-")) for r in members})
        primary = "ssim" if "ssim" in quality else quality[0]
        parts, ok = [], True
        for q in [primary] + [q for q in quality if q != primary]:
            for r in _select(members, quality_metric=q) if q != "-" else members:
                s = _stat(r)
                status = str(r.get("reached", "yes"))
                hit = status != "no"
                parts.append(f"{q}: ratio {RATIO_BOUND.get(status, '')}{s}" + RATIO_NOTE.get(status, ""))
                if q == primary:
                    ok = ok and hit and s.mean <= IMAGES_RATIO_MAX
        out.append(_claim(name, src, ds, "; ".join(parts), "reproduced" if ok else "not reproduced",
                          f"verdict on {primary}; measured ratio reported whatever its sign; "
                          "PDAE's images exclude the pre-trained DPM's"))
    return out


def claim_fewshot(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Few-shot FID of PDAE below the naive baseline (§4.7, Table 3), for every (scenario, class) measured
    except those where the paper's own naive FID is lower than PDAE's (Non-Blond: 1.12), which are listed."""
    name, src = "few-shot FID of PDAE below naive", "§4.7 Table 3"
    fs = [r for r in rows if r.get("table") == "fewshot" and r.get("metric") == "fid"]
    if not fs:
        return [_missing(name, src, "fewshot fid")]
    agg = aggregate(fs)
    out = []
    for ds in _datasets(agg):
        lines, oks, excluded = [], [], []
        pairs = sorted({(str(r.get("scenario")), str(r.get("class"))) for r in _select(agg, dataset=ds)})
        for scenario, klass in pairs:
            p = _select(agg, dataset=ds, scenario=scenario, **{"class": klass}, method="pdae")
            n = _select(agg, dataset=ds, scenario=scenario, **{"class": klass}, method="naive")
            if not (p and n):
                continue
            sp, sn = _stat(p[0]), _stat(n[0])
            label = f"{scenario}/{klass}: PDAE {sp} vs naive {sn}"
            pp = paper_mod.paper_entry({**p[0], "method": "pdae"})
            pn = paper_mod.paper_entry({**n[0], "method": "naive"})
            if pp is not None and pn is not None and not pp.value < pn.value:  # type: ignore[operator]
                excluded.append(label)
                continue
            oks.append(sp.mean < sn.mean)
            lines.append(label)
        if not oks:
            out.append(_claim(name, src, ds, "no PDAE/naive pair", "not measurable here"))
            continue
        detail = "excluded (paper's naive is lower): " + "; ".join(excluded) if excluded else ""
        out.append(_claim(name, src, ds, f"below at {sum(oks)}/{len(oks)}: " + "; ".join(lines),
                          "reproduced" if all(oks) else "not reproduced", detail))
    return out


def claim_uncond(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Unconditional FID of PDAE <= DDIM at every T measured (§4.8, Table 2)."""
    name, src = "unconditional FID of PDAE <= DDIM at every T", "§4.8 Table 2"
    un = [r for r in rows if r.get("table") == "uncond" and r.get("metric") == "fid"]
    if not un:
        return [_missing(name, src, "uncond fid")]
    agg = aggregate(un)
    out = []
    for ds in _datasets(agg):
        p = _by(_select(agg, dataset=ds, method="pdae"), "steps")
        d = _by(_select(agg, dataset=ds, method="ddim"), "steps")
        steps = sorted(set(p) & set(d), key=_sort_key)
        if not steps:
            out.append(_claim(name, src, ds, "no T with both PDAE and DDIM", "not measurable here"))
            continue
        oks = [_stat(p[s]).mean <= _stat(d[s]).mean for s in steps]
        ev = "; ".join(f"T={s}: PDAE {_stat(p[s])} vs DDIM {_stat(d[s])}" for s in steps)
        out.append(_claim(name, src, ds, ev, "reproduced" if all(oks) else "not reproduced",
                          f"backend {p[steps[0]].get('backend', '-')}"))
    return out


def claim_weighting(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The paper's weighting (lambda_t = SNR^gamma/(1+SNR), §3.4) beats lambda_t = 1: verdict on the
    reconstruction (SSIM higher and MSE lower); the loss stability (loss_cv) is reported beside it but is
    not part of the verdict, since the two runs optimise differently weighted losses."""
    name, src = "loss weighting beats lambda_t = 1", "§3.4"
    ab = [r for r in rows if r.get("table") == "ablation"]
    if not ab:
        return [_missing(name, src, "ablation")]
    agg = aggregate(ab)
    out = []
    for ds in _datasets(agg):
        lines, oks = [], []
        for metric in ("ssim", "mse", "loss_cv"):
            s = _select(agg, dataset=ds, weighting="snr", metric=metric)
            u = _select(agg, dataset=ds, weighting="uniform", metric=metric)
            if s and u:
                ss, su = _stat(s[0]), _stat(u[0])
                lines.append(f"{metric}: snr {ss} vs uniform {su}")
                if metric != "loss_cv":
                    oks.append(better(metric, ss.mean, su.mean))
        if not oks:
            out.append(_claim(name, src, ds, "; ".join(lines) or "no paired snr/uniform records", "not measurable here"))
            continue
        out.append(_claim(name, src, ds, "; ".join(lines), "reproduced" if all(oks) else "not reproduced",
                          "verdict: SSIM and MSE of reconstructions; loss_cv (last half of training) for information"))
    return out


CLAIMS: tuple[Callable[[Sequence[Mapping[str, Any]]], list[dict[str, str]]], ...] = (
    claim_gap, claim_recon_inferred, claim_recon_random, claim_images_ratio, claim_fewshot, claim_uncond,
    claim_weighting,
)


def claims(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Every claim's rows (claim, source, dataset, evidence, verdict, detail) from tidy records."""
    rows = tidy(rows)
    return [c for fn in CLAIMS for c in fn(rows)]


CLAIMS_INTRO = f"""# Claims of the paper: evidence and verdicts

Evidence: mean ± std over seeds (ddof = 1) and n. Verdicts: reproduced / not reproduced / not measurable
here (records missing). Thresholds: near-exact reconstruction SSIM >= {NEAR_EXACT_SSIM} at DDIM T = {RECON_STEPS};
"on par" = better or within max(1 pooled std, {ON_PAR_RELATIVE:.0%}); images ratio <= {IMAGES_RATIO_MAX:g};
gap reduction >= {GAP_MIN_REDUCTION:.0%} for t in {GAP_T_RANGE[0]}-{GAP_T_RANGE[1]} (scaled to T).
"""


def render_claims_markdown(claim_rows: Sequence[Mapping[str, str]]) -> str:
    cols = ("claim", "dataset", "verdict", "evidence", "detail", "source")
    lines = [CLAIMS_INTRO, "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]).replace("|", "\\|") for c in cols) + " |" for r in claim_rows]
    return "\n".join(lines) + "\n"


def write_claims(rows: Sequence[Mapping[str, Any]], out_dir: str | Path) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = claims(rows)
    return [write_csv(out_dir / "claims.csv", result, ("claim", "source", "dataset", "evidence", "verdict", "detail")),
            _write_text(out_dir / "claims.md", render_claims_markdown(result))]


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------

def _run_tables(args: argparse.Namespace) -> int:
    for path in write_tables(load_rows(args.records), args.out_dir):
        print(path)
    return 0


def _run_claims(args: argparse.Namespace) -> int:
    for path in write_claims(load_rows(args.records), args.out_dir):
        print(path)
    return 0


def register_cli(subparsers: Any) -> None:
    for name, func, help_text in (
        ("tables", _run_tables, "records -> tidy CSV, seed aggregates, Markdown and LaTeX per table"),
        ("claims", _run_claims, "records -> claims.csv/.md: the paper's claims with evidence and verdicts"),
    ):
        p = subparsers.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--records", nargs="+", required=True, help="records JSON files (or tidy *_rows.csv)")
        p.add_argument("--out-dir", default="results/tables", help="output folder (default results/tables)")
        p.set_defaults(func=func)
