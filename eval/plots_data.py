"""Rows for the figures of eval.plots: reading records / CSV inputs, mean ± std curves over seeds, and the
paper's names and axis labels of methods and metrics (no matplotlib here).

- `load_rows`: records JSON, tidy rows CSV (`value`) or aggregate CSV (`mean`, `std`, `n`), a measurement
  repeated by several files kept once.
- `series` / `error_band`: curves {label: Curve} with the sample std over seeds (ddof = 1).
- `METHOD_LABELS` / `method_label`, `legend_labeller`: the paper's method names (Zhang, Zhao and Lin, NeurIPS
  2022) for the records' `method` codes; `METRICS` / `axis_label`: what each metric axis shows and what
  measured it (the records' `backend`).
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from eval.common import read_records

# The paper's name of each `method` value of the records (Method.record_label) and of the baselines.
METHOD_LABELS = {
    "pdae": "PDAE", "diffae": "Diff-AE", "ddim": "DDIM", "dpm": "pre-trained DPM",
    "pdae_class": "class-conditional PDAE", "pdae_uniform": "PDAE (λ_t = 1)", "d2c": "D2C",
    "naive": "naive (unconditional data)", "real": "real images", "unrelated": "unrelated pairs",
}
# Legend and title order: the paper's method first, then Diff-AE, then the plain DPM and the baselines.
METHOD_ORDER = ("pdae", "pdae_class", "pdae_uniform", "diffae", "d2c", "ddim", "dpm", "naive", "real")

# What measured each metric's network-based numbers, by the records' `backend` column.
BACKENDS = {
    "standard": {"features": "Inception-v3, torch-fidelity", "distance": "LPIPS-AlexNet distance"},
    "domain": {"features": "domain feature net, torch-fidelity", "distance": "domain feature distance"},
    "pytorch-fid": {"features": "Inception-v3, pytorch-fid", "distance": "LPIPS-AlexNet distance"},
}


@dataclass(frozen=True)
class MetricSpec:
    """Axis label (may name `{features}` / `{distance}`, filled from the records' backend), value range, and
    which direction is better."""

    label: str
    lo: float | None = None
    hi: float | None = None
    better: str = ""


METRICS = {
    "ssim": MetricSpec("SSIM on pixels", -1.0, 1.0, "higher"),
    "mse": MetricSpec("MSE on [0, 1] pixels", 0.0, None, "lower"),
    "lpips": MetricSpec("LPIPS-AlexNet distance", 0.0, None, "lower"),
    "feat_dist": MetricSpec("domain feature distance\n(not LPIPS)", 0.0, 4.0, "lower"),
    "fid": MetricSpec("FID\n({features})", 0.0, None, "lower"),
    "kid": MetricSpec("KID\n({features})", None, None, "lower"),
    "class_accuracy": MetricSpec("class accuracy\n(domain feature-net classifier)", 0.0, 1.0, "higher"),
    "attr_prob": MetricSpec("attribute probability\n(latent classifier, re-encoded edit)", 0.0, 1.0),
    "identity": MetricSpec("identity = 1 − {distance}", None, 1.0, "higher"),
    "gap": MetricSpec("posterior-mean gap, log scale\n(MSE per element, [-1, 1] units)", 0.0, None, "lower"),
    "loss": MetricSpec("training loss", 0.0, None, "lower"),
}
QUALITY_METRICS = ("ssim", "mse", "lpips", "feat_dist")
# How an extra legend column is written (only columns whose value varies among the plotted rows are shown).
EXTRA_FORMATS = {"steps": "T={}", "attribute": "attribute {}", "dataset": "{}", "x_T": "{} x_T", "mode": "{}"}


def load_rows(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Rows of records JSON, tidy rows CSV (`value`) or aggregate CSV (`mean`, `std`, `n`); a measurement
    repeated by several files (equal in every column but `config`) is kept once."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: input file not found")
        if path.suffix == ".csv":
            rows.extend(_csv_rows(path))
        elif path.suffix == ".json":
            rows.extend(read_records(path))
        else:
            raise ValueError(f"{path}: expected a records .json or a .csv file")
    out, seen = [], set()
    for row in rows:
        key = tuple(sorted((k, json.dumps(v, sort_keys=True, default=str)) for k, v in row.items() if k != "config"))
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


def _csv_rows(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as fh:
        raw = list(csv.DictReader(fh))
    if raw and "value" not in raw[0] and "mean" not in raw[0]:
        raise ValueError(f"{path}: neither a tidy rows CSV ('value') nor an aggregate CSV ('mean')")
    return [{k: (v if k == "std" else _cell(v)) for k, v in r.items()} for r in raw]


def _cell(text: str | None) -> Any:
    """CSV cell -> int, float, "-" (empty) or the text."""
    if text is None or text == "":
        return "-"
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def method_label(code: Any) -> str:
    """The paper's name of a records `method` value (the value itself when the table has none)."""
    return METHOD_LABELS.get(str(code), str(code))


def error_band(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, mean - std, mean + std) with the sample std over seeds (ddof = 1); zero width for one value."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("error_band: no values")
    mean = math.fsum(values) / len(values)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, mean - std, mean + std


class Curve(NamedTuple):
    """One line: x values, mean, band (lo, hi) and the number of seeds behind each point."""

    xs: np.ndarray
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    n: np.ndarray


def series(rows: Sequence[Mapping[str, Any]], x: str, label: Callable[[Mapping[str, Any]], str],
           x_value: Callable[[Mapping[str, Any]], float] | None = None) -> dict[str, Curve]:
    """Curves {label: Curve}, sorted by x, from tidy rows (the rows sharing (label, x) are the seeds) or
    aggregate rows (their `mean`, `std` and `n`). `x_value` maps a row to its x (default float(row[x]))."""
    xv = x_value or (lambda r: float(r[x]))
    groups: dict[str, dict[float, list[Mapping[str, Any]]]] = {}
    for r in rows:
        groups.setdefault(label(r), {}).setdefault(xv(r), []).append(r)
    out = {}
    for name, by_x in groups.items():
        xs = sorted(by_x)
        stats = [_band(by_x[v]) for v in xs]
        out[name] = Curve(np.array(xs, dtype=float), *(np.array(col, dtype=float) for col in zip(*stats)))
    return out


def _band(members: Sequence[Mapping[str, Any]]) -> tuple[float, float, float, int]:
    if "value" in members[0] and members[0].get("value") not in ("-", None):
        return (*error_band([float(m["value"]) for m in members]), len(members))
    if len(members) != 1:
        raise ValueError("aggregate rows: several rows for one point (filter by dataset/backend)")
    m = members[0]
    std = float(m["std"]) if m.get("std") not in ("", "-", None) else 0.0
    n = int(m["n"]) if str(m.get("n", "-")).isdigit() else 1
    return float(m["mean"]), float(m["mean"]) - std, float(m["mean"]) + std, n


def _select(rows: Sequence[Mapping[str, Any]], table: str | None = None, **where: Any) -> list[Mapping[str, Any]]:
    return [r for r in rows if (table is None or str(r.get("table")) == table)
            and all(str(r.get(k, "-")) == str(v) for k, v in where.items() if v is not None)]


def _need(rows: Sequence[Mapping[str, Any]], what: str, paths: Sequence[Any]) -> None:
    if not rows:
        raise ValueError(f"no {what} rows in {', '.join(str(p) for p in paths)}")


def _varying(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> list[str]:
    """The columns of `columns` that take more than one value among `rows`."""
    return [c for c in columns if len({str(r.get(c, "-")) for r in rows}) > 1]


def _sorted_methods(codes: Iterable[Any]) -> list[str]:
    return sorted({str(c) for c in codes}, key=_method_rank)


def _method_rank(code: Any) -> tuple[int, str]:
    code = str(code)
    return (METHOD_ORDER.index(code) if code in METHOD_ORDER else len(METHOD_ORDER), code)


def legend_labeller(rows: Sequence[Mapping[str, Any]], extras: Sequence[str] = ()) -> Callable[[Mapping[str, Any]], str]:
    """row -> "PDAE" (+ ", T=10" etc. for the extra columns, and the dataset, that vary among `rows`)."""
    shown = _varying(rows, ["dataset", *extras])

    def label(r: Mapping[str, Any]) -> str:
        parts = [method_label(r.get("method", "-"))]
        parts += [EXTRA_FORMATS.get(c, c + "={}").format(r.get(c, "-")) for c in shown]
        return ", ".join(parts)

    return label


def axis_label(metric: str, rows: Sequence[Mapping[str, Any]] = ()) -> str:
    """The axis label of `metric`: what it is, what measured it (the backend of `rows`), which way is better.

    Raises ValueError if `rows` mix backends (their numbers are not comparable on one axis)."""
    spec = METRICS.get(metric)
    if spec is None:
        return metric
    text = spec.label
    if "{" in text:
        names = sorted({str(r.get("backend", "-")) for r in rows} - {"-", ""})
        if len(names) > 1:
            raise ValueError(f"{metric}: rows from several metric backends ({', '.join(names)}); plot one at a time")
        known = BACKENDS.get(names[0]) if names else None
        fallback = f"{names[0]} backend" if names else "backend not recorded"
        text = text.format(**(known or {"features": fallback, "distance": f"distance ({fallback})"}))
    counts = sorted({int(r["n_samples"]) for r in rows if str(r.get("n_samples", "-")).isdigit()})
    if counts and metric in ("fid", "kid"):
        n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
        head, _, tail = text.partition("\n")
        text = f"{head} of {n} samples" + (f"\n{tail}" if tail else "")
    if spec.better:
        head, _, tail = text.partition("\n")
        text = f"{head}, {spec.better} is better" + (f"\n{tail}" if tail else "")
    return text
