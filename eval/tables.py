"""Records -> tables (tidy CSV, seed aggregates, Markdown, LaTeX) and the paper's claims with verdicts.

Sub-commands (docs/protocol.md §9.3, issue 4 item 10):

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

Intervals: a record may carry `values`, the per-unit data behind its `value` (`units` "images": per-image
scores whose mean is `value`; "bootstrap": bootstrap replicates of a statistic such as FID over the generated
samples). Where a group's records have them, the aggregate gets `ci_low` / `ci_high`, a 95 % bootstrap
interval over seeds and units (eval.stats). The per-unit data stay in the JSON records; CSVs never carry them.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from eval import paper as paper_mod
from eval.common import read_records
from eval.paper import format_number

# Columns never grouped on; the first five are dropped from the aggregate, the last two averaged.
NON_KEY_COLUMNS = ("seed", "eval_seed", "value", "code_version", "config", "images_seen", "wall_time_s")
# Per-unit data and per-seed numbers of a measurement's definition: never group keys, never in the CSVs.
UNIT_COLUMNS = ("values", "units")
PER_SEED_COLUMNS = ("level", "tolerance", "dpm_images", "window_images")
AVERAGED_COLUMNS = ("images_seen", "wall_time_s")
# Tables where a normally averaged column is the x-axis and therefore a group column.
X_COLUMNS: dict[str, tuple[str, ...]] = {"efficiency": ("images_seen",)}
DERIVED_COLUMNS = ("paper", "paper_note", "data_source")
LEADING = ("table", "dataset", "method")
TRAILING = ("metric", "backend")
STAT_COLUMNS = ("mean", "std", "n", "seeds", "ci_low", "ci_high")
CI_LEVEL = 0.95
CI_BOOT = 1000


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
    skip = (*NON_KEY_COLUMNS, *UNIT_COLUMNS, *PER_SEED_COLUMNS, "paper", "paper_note")
    keys = [c for c in columns_of(rows) if c not in skip]
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
        agg["ci_low"], agg["ci_high"] = interval(members)
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


def interval(members: Sequence[Mapping[str, Any]]) -> tuple[float | str, float | str]:
    """95 % bootstrap interval of a group's mean from its records' per-unit `values` ("", "" without them).

    units "images": two-level bootstrap (seeds, then images); "bootstrap": each seed's replicates combined
    over seeds (eval.stats)."""
    from eval import stats

    with_values = [m for m in members if m.get("values")]
    if not with_values or len(with_values) != len(members):
        return "", ""
    groups = [[float(v) for v in m["values"]] for m in with_values]
    if str(with_values[0].get("units", "images")) == "bootstrap":
        iv = stats.combine_replicates(groups, n_boot=CI_BOOT, rng=0, level=CI_LEVEL,
                                      estimates=[float(m["value"]) for m in with_values])
    else:
        iv = stats.hierarchical_bootstrap(groups, n_boot=CI_BOOT, level=CI_LEVEL, rng=0)
    return iv.lo, iv.hi


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
    skip = {"table", "mean", "std", "n", "seeds", "ci_low", "ci_high", "code_version", "paper", "paper_note"}
    if str(agg_rows[0].get("table")) not in X_COLUMNS:  # images seen / wall time shown where they are the x-axis
        skip.update(AVERAGED_COLUMNS)
    cols = [c for c in agg_rows[0] if c not in skip]
    return [c for c in cols if any(_cell(r.get(c, "-")) not in ("-", "") for r in agg_rows)]


def _rendered(agg_rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, body cells, footnotes) shared by the Markdown and LaTeX renderings."""
    cols = display_columns(agg_rows)
    has_paper = any(r.get("paper") for r in agg_rows)
    has_ci = any(r.get("ci_low") not in (None, "") for r in agg_rows)
    header = cols + ["mean ± std", "n"] + (["95% CI"] if has_ci else []) + (["paper"] if has_paper else [])
    notes: list[str] = []
    body = []
    for r in agg_rows:
        line = [_cell(r.get(c, "-")) for c in cols] + [format_mean_std(r["mean"], r["std"]), str(r["n"])]
        if has_ci:
            line.append(f"[{_cell(r['ci_low'])}, {_cell(r['ci_high'])}]" if r.get("ci_low") not in (None, "") else "-")
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
    return f"backend(s): {', '.join(backends)}; code version(s): {', '.join(versions)}; std over seeds (ddof=1); 95% CI: bootstrap over seeds and images or samples"


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
        written.append(write_csv(out_dir / f"{table}_rows.csv",
                                 [{k: v for k, v in m.items() if k not in UNIT_COLUMNS} for m in members]))
        written.append(write_csv(out_dir / f"{table}.csv", agg, list(agg[0].keys())))
        written.append(_write_text(out_dir / f"{table}.md", render_markdown(table, agg)))
        written.append(_write_text(out_dir / f"{table}.tex", render_latex(table, agg)))
    written.append(write_csv(out_dir / "paper.csv", paper_mod.as_rows()))
    return written


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------

def _run_tables(args: argparse.Namespace) -> int:
    for path in write_tables(load_rows(args.records), args.out_dir):
        print(path)
    return 0


def register_cli(subparsers: Any) -> None:
    help_text = "records -> tidy CSV, seed aggregates (with bootstrap intervals), Markdown and LaTeX per table"
    p = subparsers.add_parser("tables", help=help_text, description=help_text)
    p.add_argument("--records", nargs="+", required=True, help="records JSON files (or tidy *_rows.csv)")
    p.add_argument("--out-dir", default="results/tables", help="output folder (default results/tables)")
    p.set_defaults(func=_run_tables)
