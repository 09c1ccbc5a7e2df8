"""Records -> tables (pandas): tidy CSV, seed aggregates, Markdown, LaTeX and HTML, the paper's numbers beside ours.

    python -m eval tables --records FILE... [--out-dir results/tables]
        per `table`: <table>_rows.csv (every measurement, dataset slug, the paper's number), <table>.csv (aggregate
        over seeds), <table>.md, <table>.tex and <table>.html (eval.tables_html); paper.csv.

Rows are grouped by every column but `seed`, `eval_seed`, `value`, `code_version`, `config` and the per-run
`images_seen` / `wall_time_s` (averaged; `images_seen` is a group column of `efficiency`, its x-axis). Per group:
mean, std (ddof = 1, blank for n = 1), n, seeds, code version(s), the backend (a group column: backends are never
averaged together) and the paper's number (eval.paper). Records with per-unit `values` ("images": per-image scores;
"bootstrap": replicates of a statistic such as FID) give `ci_low` / `ci_high`, a 95 % bootstrap interval over seeds
and units (eval.stats); CSVs never carry the per-unit data. The paper's claims are eval.claims.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd
import tabulate

from eval import paper as paper_mod
from eval.common import read_records
from eval.paper import format_number

NON_KEY_COLUMNS = ("seed", "eval_seed", "value", "code_version", "config", "images_seen", "wall_time_s")
UNIT_COLUMNS = ("values", "units")  # per-unit data: never group keys, never in the CSVs
PER_SEED_COLUMNS = ("level", "tolerance", "dpm_images", "window_images")  # per-seed numbers of a definition
AVERAGED_COLUMNS = ("images_seen", "wall_time_s")
X_COLUMNS: dict[str, tuple[str, ...]] = {"efficiency": ("images_seen",)}  # averaged columns that are the x-axis
# What was evaluated and how (Tables 1-3): group keys like any column (never averaged across), but a value shared
# by every row where the column applies (cells "-" do not count) is named once under the Markdown/LaTeX/HTML table
# ("protocol: ...") instead of in a column. eval_data / split: the images evaluated (Table 1) or the FID reference's
# data (Tables 2, 3); n_images: Table 1's image count (Tables 2-3 carry `n_samples` per row); ref_images /
# ref_split / ref_selection: the FID reference set; step_rule: DDIM steps of encoding and decoding ("encode T ->
# decode T" is Diff-AE's protocol, "encode 1000 -> decode T" the official PDAE script's); the FID implementation
# is the `backend` column, named in the footer too ("pytorch-fid", "standard", "domain").
PROTOCOL_COLUMNS = ("eval_data", "split", "n_images", "ref_images", "ref_split", "ref_selection", "step_rule",
                    "clip_latent")
DERIVED_COLUMNS = ("paper", "paper_note", "data_source")
LEADING, TRAILING = ("table", "dataset", "method"), ("metric", "backend")
CI_LEVEL, CI_BOOT = 0.95, 1000


def load_rows(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Records from JSON records files (eval.common.write_records) or tidy CSV files (`value` column)."""
    rows: list[dict[str, Any]] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise ValueError(f"{path}: records file not found")
        if path.suffix != ".csv":
            rows.extend(read_records(path))
            continue
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        if len(df) and "value" not in df:
            raise ValueError(f"{path}: not a tidy rows CSV (no 'value' column)")
        for row in df.apply(lambda col: col.map(parse_cell)).to_dict("records"):
            if _numeric(row["value"]) is None:
                raise ValueError(f"{path}: non-numeric value {row['value']!r}")
            rows.append({**row, "value": float(row["value"])})
    for i, row in enumerate(rows):
        if "table" not in row or "metric" not in row or "value" not in row:
            raise ValueError(f"record {i}: missing 'table', 'metric' or 'value' column")
    return rows


def parse_cell(text: str | None) -> Any:
    """CSV cell -> int, float, "-" (empty) or the text."""
    if text is None or text == "":
        return "-"
    return int(text) if re.fullmatch(r"-?\d+", text) else text if _numeric(text) is None else float(text)


def tidy(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Copies of `rows` with `dataset` resolved to the paper slug (eval.paper.dataset_slug; the original name kept
    in `data_source` where it changed) and the paper's number in `paper` / `paper_note`. A measurement that several
    records files repeat (equal but for `config`, e.g. the few-shot naive baseline) is kept once."""
    out, seen = [], set()
    for row in rows:
        key = tuple(sorted((k, str(v)) for k, v in row.items() if k != "config"))
        if key not in seen:
            seen.add(key)
            new, slug = dict(row), paper_mod.dataset_slug(row)
            if slug != row.get("dataset", "-"):
                new["data_source"], new["dataset"] = row.get("dataset", "-"), slug
            new["paper"], new["paper_note"] = paper_mod.paper_value(new)
            out.append(new)
    return out


def columns_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """All columns in a readable order: table, dataset, method, the rest as first seen, metric, backend."""
    seen = list(pd.DataFrame(list(rows)).columns)
    lead, trail = [c for c in LEADING if c in seen], [c for c in TRAILING if c in seen]
    tail = [c for c in ("value", "seed", "eval_seed", *AVERAGED_COLUMNS, "code_version", "config", *DERIVED_COLUMNS)
            if c in seen]
    return lead + [c for c in seen if c not in lead + trail + tail] + trail + tail


def key_columns(rows: Sequence[Mapping[str, Any]], table: str) -> list[str]:
    """The group-by columns: every column but NON_KEY_COLUMNS, the table's x columns after table, dataset, method."""
    skip = (*NON_KEY_COLUMNS, *UNIT_COLUMNS, *PER_SEED_COLUMNS, "paper", "paper_note")
    keys = [c for c in columns_of(rows) if c not in skip]
    lead = sum(c in LEADING for c in keys)
    return keys[:lead] + [c for c in X_COLUMNS.get(table, ()) if any(c in r for r in rows)] + keys[lead:]


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof = 1; None for a single value), exactly rounded (math.fsum)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std: no values")
    mean = math.fsum(values) / len(values)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return mean, std


def _canon(value: Any) -> str:
    """Group-key text: 100, 100.0 and "100" are the same key."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and re.fullmatch(r"-?\d+\.0+", value):
        return value.split(".")[0]
    return "-" if value is None else str(value)


def _numeric(value: Any) -> float | None:
    try:
        return None if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None


def _sort_key(value: Any) -> tuple:
    num = _numeric(value)
    return (0, num, "") if num is not None else (1, 0.0, str(value))


def _mean_of_numbers(values: pd.Series) -> float | str:
    nums = [v for v in map(_numeric, values) if v is not None]
    return math.fsum(nums) / len(nums) if nums else "-"


def aggregate(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Tidy rows of ONE table -> one row per group: key columns, mean, std, n, seeds ("0;1;2"), ci_low, ci_high,
    images_seen / wall_time_s (means, where present and not keys), code_version ("a;b"), paper, paper_note; sorted
    by the key columns (numbers numerically)."""
    if not rows:
        return []
    if len(tables := {str(r.get("table")) for r in rows}) != 1:
        raise ValueError(f"aggregate: one table at a time, got {sorted(tables)}")
    keys = key_columns(rows, tables.pop())
    cols = list(dict.fromkeys([*columns_of(rows), "seed", "code_version"]))
    df = pd.DataFrame([{c: r.get(c, "-") for c in cols} for r in rows], columns=cols, dtype=object)
    groups = df.assign(_row=range(len(df))).groupby([df[c].map(_canon).rename(f"_{c}") for c in keys], sort=False)
    stats = groups.agg(
        mean=("value", lambda v: mean_std(v)[0]), std=("value", lambda v: "" if len(v) < 2 else mean_std(v)[1]),
        n=("value", "size"), seeds=("seed", lambda s: ";".join(sorted(set(map(_canon, s)), key=_sort_key))),
        ci=("_row", lambda i: interval([rows[j] for j in i])),
        **{c: (c, _mean_of_numbers) for c in AVERAGED_COLUMNS if c not in keys and any(c in r for r in rows)},
        code_version=("code_version", lambda v: ";".join(sorted(set(map(str, v)))))).reset_index(drop=True)
    first = df.loc[groups.head(1).index]
    out = first[keys].reset_index(drop=True).join(stats)
    ci = out.pop("ci")
    out.insert(len(keys) + 4, "ci_low", [c[0] for c in ci])
    out.insert(len(keys) + 5, "ci_high", [c[1] for c in ci])
    out["paper"], out["paper_note"] = zip(*map(paper_mod.paper_value, first.to_dict("records")))
    return out.iloc[sorted(out.index, key=lambda i: [_sort_key(out.at[i, c]) for c in keys])].to_dict("records")


def interval(members: Sequence[Mapping[str, Any]]) -> tuple[float | str, float | str]:
    """95 % bootstrap interval of a group's mean from its records' per-unit `values` ("", "" without them):
    units "images": two-level bootstrap (seeds, then images); "bootstrap": each seed's replicates combined."""
    from eval import stats

    if not members or not all(m.get("values") for m in members):
        return "", ""
    groups = [[float(v) for v in m["values"]] for m in members]
    if str(members[0].get("units", "images")) == "bootstrap":
        iv = stats.combine_replicates(groups, n_boot=CI_BOOT, rng=0, level=CI_LEVEL,
                                      estimates=[float(m["value"]) for m in members])
    else:
        iv = stats.hierarchical_bootstrap(groups, n_boot=CI_BOOT, level=CI_LEVEL, rng=0)
    return iv.lo, iv.hi


def format_mean_std(mean: float, std: float | str | None) -> str:
    """"mean ± std" (just "mean" when std is blank)."""
    return format_number(float(mean)) + ("" if std in (None, "") else f" ± {format_number(float(std))}")


def _cell(value: Any) -> str:
    return format_number(value) if isinstance(value, float) else str(value)


def _shown(agg_rows: Sequence[Mapping[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(aggregate, displayed cells, paper footnotes) for Markdown, LaTeX and HTML: the key columns that are not "-"
    everywhere (`table` dropped), mean ± std, n, the 95% CI and the paper's number with its footnote where present."""
    agg = pd.DataFrame(list(agg_rows), dtype=object)
    skip = {"table", "mean", "std", "n", "seeds", "ci_low", "ci_high", "code_version", "paper", "paper_note",
            *(() if agg["table"].iat[0] in X_COLUMNS else AVERAGED_COLUMNS)}
    text = agg.apply(lambda col: col.map(_cell))
    constant = {c for c in PROTOCOL_COLUMNS if c in text and _shared(text[c]) is not None}
    shown = text[[c for c in agg if c not in skip | constant and not text[c].isin(["-", ""]).all()]].copy()
    shown["mean ± std"] = [format_mean_std(m, s) for m, s in zip(agg["mean"], agg["std"])]
    shown["n"] = text["n"]
    if (agg["ci_low"] != "").any():
        shown["95% CI"] = [f"[{lo}, {hi}]" if lo else "-" for lo, hi in zip(text["ci_low"], text["ci_high"])]
    notes = list(dict.fromkeys(n for p, n in zip(agg["paper"], agg["paper_note"]) if p and n))
    if (agg["paper"] != "").any():
        shown["paper"] = [f"{p} [{notes.index(n) + 1}]" if p and n else p for p, n in zip(agg["paper"], agg["paper_note"])]
    return agg, shown, notes


def _shared(cells: pd.Series) -> str | None:
    """The one value of a protocol column over the rows it applies to (cells "-" or "" do not), else None."""
    values = set(cells.map(_cell)) - {"-", ""}
    return values.pop() if len(values) == 1 else None


def _protocol(agg: pd.DataFrame) -> str:
    """"protocol: eval_data = ...; split = ...; " for the protocol columns one value fills (see PROTOCOL_COLUMNS)."""
    parts = [f"{c} = {value}" for c in PROTOCOL_COLUMNS if c in agg and (value := _shared(agg[c])) is not None]
    return f"protocol: {'; '.join(parts)}; " if parts else ""


def _provenance(agg: pd.DataFrame) -> str:
    return _protocol(agg) + (f"backend(s): {', '.join(sorted(set(map(str, agg.get('backend', ['-'])))))}; code version(s): "
            f"{', '.join(sorted({v for cv in agg['code_version'] for v in str(cv).split(';')}))}; std over seeds "
            "(ddof=1); 95% CI: bootstrap over seeds and images or samples")


_ROW = tabulate.DataRow("| ", " | ", " |")
_MARKDOWN = tabulate.TableFormat(None, lambda widths, _: "|" + "---|" * len(widths), None, None, _ROW, _ROW, 0, None)


def render_markdown(table: str, agg_rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table with "mean ± std", n and (where the paper has the quantity) the paper's number."""
    agg, shown, notes = _shown(agg_rows)
    text = shown.apply(lambda col: col.str.replace("|", "\\|")).to_markdown(
        index=False, tablefmt=_MARKDOWN, stralign=None, numalign=None, disable_numparse=True)
    notes_text = "".join(f"\n[{i}] {n}" for i, n in enumerate(notes, 1))
    return f"## {table}\n\n{text}\n\n{_provenance(agg)}" + (f"\n\nPaper notes:{notes_text}" if notes else "") + "\n"


def latex_escape(text: str) -> str:
    special = {"\\": r"\textbackslash{}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(special.get(ch, "\\" + ch if ch in "&%$#_{}" else ch) for ch in text)


def render_latex(table: str, agg_rows: Sequence[Mapping[str, Any]]) -> str:
    """A booktabs `tabular` (Styler.to_latex) with the same content as the Markdown (± as $\\pm$)."""
    agg, shown, notes = _shown(agg_rows)
    tex = shown.apply(lambda col: col.map(lambda c: latex_escape(c).replace("±", r"$\pm$")))
    tex.columns = [latex_escape(c).replace("±", r"$\pm$") for c in shown.columns]
    right = 2 + ("paper" in shown)
    body = tex.style.hide(axis="index").to_latex(column_format="l" * (len(tex.columns) - right) + "r" * right,
                                                 hrules=True)
    return (f"% {table}: {latex_escape(_provenance(agg))}\n{body}"
            + "".join(f"% [{i}] {latex_escape(n)}\n" for i, n in enumerate(notes, 1)))


def _write_text(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    return tmp.replace(path) or path


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """CSV with the union of the rows' columns ("-" where a row lacks one); floats in full precision."""
    cols = list(columns) if columns is not None else columns_of(rows)
    cell = lambda v: repr(float(v)) if isinstance(v, float) else json.dumps(v) if isinstance(v, (list, tuple, dict)) \
        else str(v)  # noqa: E731
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame([[cell(r.get(c, "-")) for c in cols] for r in rows], columns=cols, dtype=object)
    return _write_text(Path(path), df.to_csv(index=False, lineterminator="\n"))


def write_tables(rows: Sequence[Mapping[str, Any]], out_dir: str | Path) -> list[Path]:
    """Write <table>_rows.csv, <table>.csv, <table>.md, <table>.tex, <table>.html per table, and paper.csv."""
    from eval.tables_html import render_html

    out_dir, written, tidied = Path(out_dir), [], tidy(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    for table in dict.fromkeys(str(r["table"]) for r in tidied):
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", table):
            raise ValueError(f"table name {table!r} is not usable as a file name")
        members = [r for r in tidied if str(r["table"]) == table]
        agg = aggregate(members)
        written += [write_csv(out_dir / f"{table}_rows.csv", [{k: v for k, v in m.items() if k not in UNIT_COLUMNS}
                                                             for m in members]),
                    write_csv(out_dir / f"{table}.csv", agg, list(agg[0]))]
        written += [_write_text(out_dir / f"{table}.{ext}", render(table, agg))
                    for ext, render in (("md", render_markdown), ("tex", render_latex), ("html", render_html))]
    return [*written, write_csv(out_dir / "paper.csv", paper_mod.as_rows())]


def register_cli(subparsers: Any) -> None:
    help_text = "records -> tidy CSV, seed aggregates (with bootstrap intervals), Markdown, LaTeX and HTML per table"
    p = subparsers.add_parser("tables", help=help_text, description=help_text)
    p.add_argument("--records", nargs="+", required=True, help="records JSON files (or tidy *_rows.csv)")
    p.add_argument("--out-dir", default="results/tables", help="output folder (default results/tables)")
    p.set_defaults(func=lambda args: print(*write_tables(load_rows(args.records), args.out_dir), sep="\n") or 0)
