"""Figures from files only: records JSON, tidy / aggregate CSV (eval.tables) and NPZ grids.

Nothing here runs a model. Every figure has a builder `figure_<kind>(inputs, ...) -> Figure` (FIGURES) that
returns the matplotlib Figure, so tests read its titles, axis labels and legends; `plot(kind, inputs, out)`
builds one and saves it with `save_png`:

    python -m eval plots --kind gap --inputs results/digits/gap/seed0.json ... --out results/plots/gap_digits.png

Kinds, with the part of the paper (Zhang, Zhao and Lin, NeurIPS 2022) each one regenerates:

    gap            posterior-mean gap versus t, log y, one line per method (Fig. 1, Fig. 5 right)
    recon          reconstruction grids, one panel per method (§4.3, Table 1)
    denoise        x̂_0 from x_t in one step: the DPM's ε_θ versus PDAE's ε_θ + shift (§4.2, Fig. 5 left)
    g              the learned mean shift G(x_t, z, t) (appendix C.6)
    interpolation  one panel per method, columns λ (§4.4, Fig. 7)
    manipulation   one panel per method, then attribute probability and identity versus strength (§4.5, Fig. 8)
    truncation     samples per scale, then FID and class accuracy versus the scale of G (§4.6, Fig. 9)
    efficiency     quality versus images seen and wall time; each method's training loss on its own axes (§4.1)
    samples        unconditional samples, one panel per method (§4.8, Table 2)
    fewshot        FID bars per scenario and class (§4.7, Table 3)
    uncond         FID versus DDIM steps (§4.8, Table 2)

Conventions:
- Methods carry the paper's names (`METHOD_LABELS`, keyed by the records' `method` column, which is
  `Method.record_label`: "ddim" for the plain DPM's sampling rows, "dpm" for its ε_θ in the gap); grid panels
  take the method from the NPZ's provenance sidecar (`<file>.npz.json`, eval.sample.write_arrays).
- Every metric axis says what measured it (`METRICS`): the feature network of FID / KID and the distance
  behind identity come from the records' `backend` column ("standard": Inception-v3 / LPIPS-AlexNet;
  "domain": the feature net trained in the workflow); SSIM and MSE are on pixels.
- Bands are mean ± sample std over seeds (ddof = 1; zero width for one seed), clipped to the metric's range
  (SSIM ≤ 1, distances and FID ≥ 0, probabilities in [0, 1]); legends say over how many seeds.
- Two different training objectives never share an axis: each method's loss has its own panel.
- Layout is matplotlib's constrained layout and figures are saved uncropped, so every label lies inside the
  saved picture; column labels that would collide are set vertical.

Inputs: records (`.json`), tidy `<table>_rows.csv` (one row per seed) or aggregate `<table>.csv` (`mean`,
`std`, `n`). A measurement repeated by several records files (equal in every column but `config`, e.g. the
few-shot naive baseline, which both autoencoders' files carry) counts once. NPZ grids hold `grid`
[rows, cols, C, H, W] in [-1, 1] and optional `row_labels`, `col_labels` (numpy string arrays).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.font_manager import FontProperties  # noqa: E402
from matplotlib.textpath import text_to_path  # noqa: E402

from eval.common import read_records  # noqa: E402

DPI = 120
FONT = 8  # tick labels, legends
LABEL_FONT = 9  # axis labels
TITLE_FONT = 10  # panel titles
SUPTITLE_FONT = 11

# The paper's name of each `method` value of the records (Method.record_label) and of the baselines.
METHOD_LABELS = {
    "pdae": "PDAE", "diffae": "Diff-AE", "ddim": "DDIM", "dpm": "pre-trained DPM",
    "pdae_class": "class-conditional PDAE", "pdae_uniform": "PDAE (λ_t = 1)", "d2c": "D2C",
    "naive": "naive (unconditional data)", "real": "real images", "unrelated": "unrelated pairs",
}
# Legend and title order: the paper's method first, then Diff-AE, then the plain DPM and the baselines.
METHOD_ORDER = ("pdae", "pdae_class", "pdae_uniform", "diffae", "d2c", "ddim", "dpm", "naive", "real")
METHOD_COLORS = {"pdae": "tab:red", "pdae_class": "tab:red", "pdae_uniform": "tab:orange", "diffae": "tab:blue",
                 "ddim": "tab:gray", "dpm": "tab:gray", "naive": "tab:olive", "d2c": "tab:green"}
# Each method's training objective (the y label of its loss panel; the objectives differ, so never one axis).
LOSS_LABELS = {
    "pdae": "PDAE loss: λ_t-weighted MSE of ε\nand ε_θ + shift·G (Eq. 10)",
    "pdae_uniform": "PDAE loss, λ_t = 1: MSE of ε\nand ε_θ + shift·G",
    "diffae": "Diff-AE loss: MSE of ε\nand ε(x_t, t, z)",
}

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
BAND_NOTE = "bands: mean ± s.d. over seeds, clipped to the metric's range"


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------
# Drawing helpers
# ----------------------------------------------------------------------------------------------

def new_figure(width: float, height: float) -> Figure:
    """A figure with constrained layout (labels are kept inside it)."""
    fig = plt.figure(figsize=(width, height), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.06, h_pad=0.06)
    return fig


def save_png(fig: Figure, out: str | Path) -> Path:
    """Write `fig` as PNG (uncropped, via a temporary file) and close it."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        plt.close(fig)
        raise ValueError(f"{out}: plots are written as .png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fit_column_labels(fig)
    tmp = out.with_name(f".{out.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=DPI, format="png")
    plt.close(fig)
    os.replace(tmp, out)
    return out


def _seeds_text(n: np.ndarray) -> str:
    lo, hi = int(np.min(n)), int(np.max(n))
    count = str(lo) if lo == hi else f"{lo}–{hi}"
    return f"{count} seed" + ("" if hi == 1 else "s")


def draw_series(ax: Any, curves: Mapping[str, Curve], metric: str, colors: Mapping[str, str | None] | None = None,
                log_y: bool = False, marker: str = "o") -> None:
    """Lines with shaded mean ± std bands clipped to the metric's range (and positive on a log axis); the
    legend names each curve with its number of seeds."""
    spec = METRICS.get(metric, MetricSpec(metric))
    colors = dict(colors or {})
    chosen = [colors.get(name) for name in curves]
    if None in chosen or len(set(chosen)) < len(chosen):
        colors = {}  # method colours only when they tell every curve apart
    for name, c in curves.items():
        lo, hi = c.lo, c.hi
        if spec.lo is not None:
            lo = np.maximum(lo, spec.lo)
        if spec.hi is not None:
            hi = np.minimum(hi, spec.hi)
        if log_y:
            lo = np.maximum(lo, np.where(c.mean > 0, c.mean * 1e-3, np.nan))
        (line,) = ax.plot(c.xs, c.mean, marker=marker if len(c.xs) <= 30 else None, ms=3,
                          label=f"{name} ({_seeds_text(c.n)})", color=colors.get(name))
        if np.any(hi > lo):
            ax.fill_between(c.xs, lo, hi, alpha=0.25, color=line.get_color(), linewidth=0)
    if log_y:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3, which="both" if log_y else "major")
    ax.tick_params(labelsize=FONT)
    ax.legend(fontsize=FONT)


def _metric_axes(ax: Any, rows: Sequence[Mapping[str, Any]], metric: str, x: str, xlabel: str,
                 extras: Sequence[str] = (), log_x: bool = False, log_y: bool = False, marker: str = "o",
                 x_value: Callable[[Mapping[str, Any]], float] | None = None) -> None:
    """One metric of `rows` versus `x` on `ax`, one line per method (and varying extras)."""
    sub = sorted((r for r in rows if r.get("metric") == metric), key=lambda r: _method_rank(r.get("method")))
    label = legend_labeller(sub, extras)
    colors = {label(r): METHOD_COLORS.get(str(r.get("method"))) for r in sub}
    draw_series(ax, series(sub, x, label, x_value), metric, colors, log_y=log_y, marker=marker)
    ax.set_xlabel(xlabel, fontsize=LABEL_FONT)
    ax.set_ylabel(axis_label(metric, sub), fontsize=LABEL_FONT)
    if log_x:
        ax.set_xscale("log")


# ----------------------------------------------------------------------------------------------
# Grids (NPZ)
# ----------------------------------------------------------------------------------------------

class Grid(NamedTuple):
    """An NPZ grid: pictures [rows, cols, C, H, W] in [-1, 1], labels, and the provenance of its sidecar."""

    images: np.ndarray
    row_labels: list[str]
    col_labels: list[str]
    meta: dict[str, Any]
    path: Path


def grid_mosaic(grid: np.ndarray, normalize: str = "clip", pad: int = 2) -> np.ndarray:
    """[rows, cols, C, H, W] in [-1, 1] -> one image [rows*(H+pad)-pad, cols*(W+pad)-pad, 3] in [0, 1].

    normalize: "clip" maps [-1, 1] to [0, 1] and clips; "symmetric" scales each picture by its max |value|
    (0 -> grey; for G, which has no fixed range)."""
    if grid.ndim != 5:
        raise ValueError(f"grid must be [rows, cols, C, H, W], got shape {grid.shape}")
    rows, cols, c, h, w = grid.shape
    if c not in (1, 3):
        raise ValueError(f"grid must have 1 or 3 channels, got {c}")
    g = grid.astype(np.float64)
    if normalize == "symmetric":
        scale = np.abs(g).reshape(rows, cols, -1).max(axis=2)[..., None, None, None]
        g = 0.5 + 0.5 * g / np.where(scale > 0, scale, 1.0)
    elif normalize == "clip":
        g = np.clip((g + 1) / 2, 0, 1)
    else:
        raise ValueError(f"normalize must be 'clip' or 'symmetric', got {normalize!r}")
    if c == 1:
        g = np.repeat(g, 3, axis=2)
    out = np.ones((rows * (h + pad) - pad, cols * (w + pad) - pad, 3))
    for i in range(rows):
        for j in range(cols):
            out[i * (h + pad): i * (h + pad) + h, j * (w + pad): j * (w + pad) + w] = g[i, j].transpose(1, 2, 0)
    return out


def load_grid(path: str | Path) -> Grid:
    """The grid, its labels and its provenance (the `<file>.npz.json` sidecar; {} without one)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: grid file not found")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable NPZ ({type(exc).__name__})") from None
    if "grid" not in data:
        raise ValueError(f"{path}: no 'grid' array (has {', '.join(data.files) or 'nothing'})")
    grid = data["grid"]
    if grid.ndim != 5:
        raise ValueError(f"{path}: grid must be [rows, cols, C, H, W], got shape {grid.shape}")
    rows, cols = grid.shape[:2]
    row_labels = [str(s) for s in data["row_labels"]] if "row_labels" in data else [""] * rows
    col_labels = [str(s) for s in data["col_labels"]] if "col_labels" in data else [""] * cols
    if len(row_labels) != rows or len(col_labels) != cols:
        raise ValueError(f"{path}: {len(row_labels)} row / {len(col_labels)} column labels for a {rows}x{cols} grid")
    sidecar = path.with_name(path.name + ".json")
    meta: dict[str, Any] = {}
    if sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, json.JSONDecodeError):
            meta = {}
    return Grid(grid, row_labels, col_labels, meta if isinstance(meta, dict) else {}, path)


def grid_method(grid: Grid) -> str | None:
    """The records `method` of a grid: its sidecar's, else a method folder in its path (results/<d>/<m>/...)."""
    if grid.meta.get("method"):
        return str(grid.meta["method"])
    for part in reversed(grid.path.parts[:-1]):
        if part in METHOD_LABELS:
            return part
    return None


def panel_title(grid: Grid) -> str:
    """"PDAE, seed 0" (plus the edited attribute): the method's paper name, from the grid's provenance."""
    method = grid_method(grid)
    if method is None:
        return grid.path.stem
    parts = [method_label(method)]
    if grid.meta.get("attribute") not in (None, "-", ""):
        parts.append(f"attribute {grid.meta['attribute']}")
    if str(grid.meta.get("seed", "-")) != "-":
        parts.append(f"seed {grid.meta['seed']}")
    return ", ".join(parts)


# Plain-text pieces of the NPZ labels (eval.gap, eval.edit, eval.sample) and how the figures print them.
LABEL_TEXT = (("eps_theta + shift", "ε_θ + shift·G (PDAE)"), ("eps_theta", "ε_θ (pre-trained DPM)"),
              ("G (scaled)", "G, scaled to ±1"), ("z_lerp", "Lerp(z)"), ("g_lerp", "Lerp(G)"), ("lam=", "λ="))
# Shared column prefixes (factored out of the tick labels into the column axis label).
COLUMN_PREFIXES = {"t": "timestep t", "sample": "sample", "image": "held-out image", "lam": "λ",
                   "s": "edit strength s", "scale": "scale of G"}


def pretty_label(text: str, method: str | None = None) -> str:
    """An NPZ row label as printed: the method's code name dropped where the panel title names it, the
    code spellings of LABEL_TEXT replaced."""
    if method and text.startswith(method + " "):
        text = text[len(method) + 1:]
    for old, new in LABEL_TEXT:
        text = text.replace(old, new)
    return text


def factor_columns(labels: Sequence[str]) -> tuple[str, list[str]]:
    """("timestep t", ["400", "500"]) for ["t=400", "t=500"]: the column axis label of a prefix every label
    shares (COLUMN_PREFIXES) and the rest; ("", the labels as printed) if they share none."""
    parts = [re.fullmatch(r"([A-Za-z_]+)(=| )(\S+)", s) for s in labels]
    if len(labels) > 1 and all(parts) and len({(p.group(1), p.group(2)) for p in parts}) == 1:
        prefix = parts[0].group(1)
        return COLUMN_PREFIXES.get(prefix, prefix), [p.group(3) for p in parts]
    return "", [pretty_label(s) for s in labels]


def _text_width_in(text: str, size: float = FONT) -> float:
    """A label's width in inches, as matplotlib's default font sets it (the widest line)."""
    prop = FontProperties(size=size)
    return max((text_to_path.get_text_width_height_descent(line, prop, ismath=False)[0] / 72
                for line in text.split("\n") if line), default=0.0)


# Largest picture (inches), total width of a panel's pictures, and total height of a figure's pictures.
MAX_CELL, MAX_GRID_WIDTH, MAX_GRID_HEIGHT = 1.2, 12.0, 26.0


def _cell_in(grid: Grid, rows_in_figure: int | None = None) -> float:
    """Inches per picture: 0.5 to 1.2 by resolution, within the panel's width and the figure's height budget."""
    rows, cols, _, h, w = grid.images.shape
    cap = max(0.3, MAX_GRID_HEIGHT / (rows_in_figure or rows))
    return min(MAX_CELL, max(0.5, 0.9 * max(h, w) / 32), MAX_GRID_WIDTH / cols, cap)


def _grid_size(grid: Grid, cell: float) -> tuple[float, float]:
    """(width, height) in inches of one grid panel with its labels, `cell` inches per picture."""
    rows, cols = grid.images.shape[:2]
    method = grid_method(grid)
    row_w = max((_text_width_in(pretty_label(s, method)) for s in grid.row_labels), default=0.0)
    prefix, cols_text = factor_columns(grid.col_labels)
    col_w = max((_text_width_in(s) for s in cols_text), default=0.0)
    col_h = col_w if col_w > 0.9 * cell else FONT * 1.6 / 72  # vertical labels when they would collide
    top = 0.35 + col_h + (0.22 if prefix else 0.0)
    return row_w + cols * cell + 0.4, top + rows * cell + 0.1


def draw_grid(ax: Any, grid: Grid, normalize: str = "clip", title: str | None = None,
              cell: float | None = None) -> None:
    """The mosaic with row labels on the left, column labels on top (a shared prefix as the column axis
    label, vertical when they would collide) and the panel title above."""
    pad = 2
    rows, cols, _, h, w = grid.images.shape
    ax.imshow(grid_mosaic(grid.images, normalize, pad), interpolation="nearest")
    method = grid_method(grid)
    prefix, cols_text = factor_columns(grid.col_labels)
    ax.set_xticks([j * (w + pad) + w / 2 - 0.5 for j in range(cols)])
    vertical = max((_text_width_in(s) for s in cols_text), default=0.0) > 0.9 * (cell or _cell_in(grid))
    ax.set_xticklabels(cols_text, fontsize=FONT, rotation=90 if vertical else 0)
    ax.xaxis.tick_top()
    if prefix:
        ax.xaxis.set_label_position("top")
        ax.set_xlabel(prefix, fontsize=FONT)
    ax.set_yticks([i * (h + pad) + h / 2 - 0.5 for i in range(rows)])
    ax.set_yticklabels([pretty_label(s, method) for s in grid.row_labels], fontsize=FONT)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(panel_title(grid) if title is None else title, fontsize=TITLE_FONT)
    ax._pdae_grid = True  # noqa: SLF001 - marks the axes fit_column_labels may adjust


def fit_column_labels(fig: Figure) -> None:
    """Set the column labels of grid panels vertical where they still collide after layout."""
    axes = [ax for ax in _all_axes(fig) if getattr(ax, "_pdae_grid", False)]
    if not axes:
        return
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    changed = False
    for ax in axes:
        boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
        if any(a.x1 + 1 > b.x0 for a, b in zip(boxes, boxes[1:])):
            for t in ax.get_xticklabels():
                t.set_rotation(90)
            changed = True
    if changed:
        fig.canvas.draw()


def _all_axes(fig: Any) -> list[Any]:
    axes = list(fig.axes)
    for sub in fig.subfigs:
        axes += [ax for ax in _all_axes(sub) if ax not in axes]
    return axes


def wrap_title(text: str, width: float) -> str:
    """`text` with each line wrapped (at spaces) to fit a figure `width` inches wide."""
    out = []
    for line in text.split("\n"):
        current = ""
        for word in line.split(" "):
            trial = f"{current} {word}" if current else word
            if current and _text_width_in(trial, SUPTITLE_FONT) > width - 0.3:
                out.append(current)
                current = word
            else:
                current = trial
        out.append(current)
    return "\n".join(out)


def title_height(text: str, width: float) -> float:
    """Inches the wrapped figure title takes."""
    return 0.15 + (1 + wrap_title(text, width).count("\n")) * SUPTITLE_FONT * 1.35 / 72


def set_suptitle(fig: Figure, text: str) -> None:
    """The figure title, each line wrapped to the figure's width."""
    fig.suptitle(wrap_title(text, fig.get_figwidth()), fontsize=SUPTITLE_FONT)


def _grid_figure(grids: Sequence[Grid], title: str, normalize: str = "clip", extra_height: float = 0.0,
                 extra_width: float = 0.0) -> tuple[Figure, Any]:
    """A figure with one grid panel per NPZ file stacked vertically (in a subfigure when `extra_height` leaves
    room below for metric panels). -> (figure, the subfigure or figure holding metric panels, or None)."""
    total_rows = sum(g.images.shape[0] for g in grids)
    cells = [_cell_in(g, total_rows) for g in grids]
    sizes = [_grid_size(g, c) for g, c in zip(grids, cells)]
    width = max([max(w for w, _ in sizes), extra_width, 5.5])
    grid_h = sum(h for _, h in sizes) + title_height(title, width)
    fig = new_figure(width, grid_h + extra_height)
    set_suptitle(fig, title)
    holder, below = fig, None
    if extra_height:
        holder, below = fig.subfigures(2, 1, height_ratios=[grid_h, extra_height])
    axes = holder.subplots(len(grids), 1, squeeze=False, height_ratios=[h for _, h in sizes])[:, 0]
    for ax, g, c in zip(axes, grids, cells):
        draw_grid(ax, g, normalize, cell=c)
    return fig, below


def _grids(inputs: Sequence[str | Path]) -> list[Grid]:
    if not inputs:
        raise ValueError("no NPZ grid inputs")
    return [load_grid(p) for p in inputs]


# ----------------------------------------------------------------------------------------------
# Figures (each builder: input paths -> Figure; plot_<kind>: input paths, output path -> PNG path)
# ----------------------------------------------------------------------------------------------

def figure_grid(inputs: Sequence[str | Path], title: str = "", normalize: str = "clip") -> Figure:
    """One panel per NPZ grid, titled with its method's paper name, stacked vertically."""
    grids = _grids(inputs)
    return _grid_figure(grids, title or "Figure grids", normalize)[0]


def figure_recon(inputs: Sequence[str | Path], title: str = "") -> Figure:
    """Reconstruction grids: the held-out inputs and each x_T mode's decoding, one panel per method
    (paper §4.3, Table 1)."""
    return figure_grid(inputs, title or "Autoencoding reconstructions of held-out images (paper §4.3, Table 1)")


def figure_denoise(inputs: Sequence[str | Path], title: str = "") -> Figure:
    """x̂_0 from x_t in one step with the pre-trained DPM's ε_θ and with PDAE's ε_θ + shift (§4.2, Fig. 5 left)."""
    return figure_grid(inputs, title or "Denoising in one step (paper Fig. 5 left): x̂₀ from x_t\n"
                                        "with the pre-trained DPM's ε_θ and with PDAE's ε_θ + shift·G")


def figure_g(inputs: Sequence[str | Path], title: str = "", normalize: str = "clip") -> Figure:
    """The learned mean shift G at several t (appendix C.6). eval.gap already divides each G panel by its max
    |G| into [-1, 1], so the default "clip" shows 0 as grey; "symmetric" rescales raw G arrays per picture."""
    return figure_grid(inputs, title or "PDAE's mean shift G(x_t, z, t) (paper appendix C.6)\n"
                                        "grey = 0; each picture scaled by its max |G|", normalize)


def figure_interpolation(inputs: Sequence[str | Path], title: str = "") -> Figure:
    """Interpolation between two held-out images, one panel per method, columns λ (paper §4.4, Fig. 7)."""
    return figure_grid(inputs, title or "Interpolation between held-out images (paper §4.4, Fig. 7)")


def figure_samples(inputs: Sequence[str | Path], title: str = "") -> Figure:
    """Unconditional samples, one panel per method, one row per DDIM step count (paper §4.8, Table 2)."""
    return figure_grid(inputs, title or "Unconditional samples (paper §4.8, Table 2)")


def _split_inputs(inputs: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    grids = [Path(p) for p in inputs if Path(p).suffix == ".npz"]
    return grids, [Path(p) for p in inputs if Path(p).suffix != ".npz"]


def _methods_text(rows: Sequence[Mapping[str, Any]]) -> str:
    names = [method_label(m) for m in _sorted_methods(r.get("method") for r in rows)]
    return ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else "".join(names)


def figure_gap(inputs: Sequence[str | Path], title: str = "", dataset: str | None = None) -> Figure:
    """Posterior-mean gap versus t (log y), one line per method, mean ± std bands over seeds (Fig. 1, Fig. 5 right)."""
    rows = _select(load_rows(inputs), "gap", dataset=dataset, metric="gap")
    _need(rows, "gap", inputs)
    fig = new_figure(7.5, 5.0)
    ax = fig.subplots()
    _metric_axes(ax, rows, "gap", "t", "timestep t (linear scale)", log_y=True, marker="")
    set_suptitle(fig, title or f"Posterior-mean gap over t: {_methods_text(rows)}\n"
                          f"(Gaussian noise; paper Fig. 1, Fig. 5 right; {BAND_NOTE})")
    return fig


def figure_manipulation(inputs: Sequence[str | Path], title: str = "") -> Figure:
    """Attribute manipulation: one grid per method (if given) above the attribute probability and the identity
    versus the edit strength s, one line per method, bands over seeds (paper §4.5, Fig. 8)."""
    grid_paths, tables = _split_inputs(inputs)
    rows = _select(load_rows(tables), "manipulation") if tables else []
    if not grid_paths and not rows:
        raise ValueError(f"no manipulation grids or rows in {', '.join(map(str, inputs))}")
    metrics = [m for m in ("attr_prob", "identity") if any(r.get("metric") == m for r in rows)]
    title = title or f"Attribute manipulation along the latent classifier's direction (paper §4.5, Fig. 8)" + (
        f"\n{BAND_NOTE}" if metrics else "")
    return _grids_and_metrics(grid_paths, rows, metrics, title, "strength",
                              "edit strength s (along the classifier direction)", ("attribute",))


def figure_truncation(inputs: Sequence[str | Path], title: str = "") -> Figure:
    """Truncation-like effect: class-conditional samples per scale (if given) above FID and class accuracy
    versus the scale of G (paper §4.6, Fig. 9)."""
    grid_paths, tables = _split_inputs(inputs)
    rows = _select(load_rows(tables), "truncation") if tables else []
    metrics = [m for m in ("fid", "class_accuracy") if any(r.get("metric") == m for r in rows)]
    if not grid_paths and not metrics:
        raise ValueError(f"no truncation grids or rows in {', '.join(map(str, inputs))}")
    title = title or "Truncation-like effect of scaling the class-conditional mean shift G\n(paper §4.6, Fig. 9" + (
        f"; {BAND_NOTE})" if metrics else ")")
    return _grids_and_metrics(grid_paths, rows, metrics, title, "scale", "scale of G (0 = the pre-trained DPM)",
                              ("steps",))


def _grids_and_metrics(grid_paths: Sequence[Path], rows: Sequence[Mapping[str, Any]], metrics: Sequence[str],
                       title: str, x: str, xlabel: str, extras: Sequence[str]) -> Figure:
    metric_h = 4.0 if metrics else 0.0
    metric_w = 5.2 * len(metrics)
    if grid_paths:
        fig, below = _grid_figure([load_grid(g) for g in grid_paths], title, extra_height=metric_h,
                                  extra_width=metric_w)
    else:
        fig = new_figure(max(metric_w, 5.2), metric_h + title_height(title, max(metric_w, 5.2)))
        set_suptitle(fig, title)
        below = fig
    if metrics:
        for ax, metric in zip(below.subplots(1, len(metrics), squeeze=False)[0], metrics):
            _metric_axes(ax, rows, metric, x, xlabel, extras)
    return fig


def figure_efficiency(inputs: Sequence[str | Path], title: str = "", metrics: Sequence[str] | None = None) -> Figure:
    """Training efficiency (paper §4.1): each reconstruction-quality metric versus images seen (left) and wall
    time (right), one line per method, bands over seeds (the wall-time x of a snapshot is its mean over seeds);
    below, each method's training loss on its own axes (the objectives differ)."""
    rows = [r for r in _select(load_rows(inputs), "efficiency") if _numeric(r.get("images_seen")) is not None]
    _need(rows, "efficiency", inputs)
    present = [m for m in (*QUALITY_METRICS, "loss") if any(r.get("metric") == m for r in rows)]
    chosen = [m for m in (metrics or present) if m in present]
    if not chosen:
        raise ValueError("efficiency: none of the requested metrics in the inputs")
    quality = [m for m in chosen if m != "loss"]
    loss_rows = [r for r in rows if r.get("metric") == "loss"] if "loss" in chosen else []
    loss_methods = _sorted_methods(r.get("method") for r in loss_rows)
    n_loss_rows = math.ceil(len(loss_methods) / 2)
    top_h, loss_h = 3.6 * len(quality), 3.4 * n_loss_rows
    title = title or (f"Training efficiency: {_methods_text(rows)} (paper §4.1); random-x_T reconstruction "
                      f"of training snapshots\n{BAND_NOTE}")
    fig = new_figure(11.5, top_h + loss_h + title_height(title, 11.5))
    set_suptitle(fig, title)
    parts = fig.subfigures(2, 1, height_ratios=[top_h, loss_h]) if quality and loss_methods else [fig]
    if quality:
        for (ax_img, ax_wall), metric in zip(parts[0].subplots(len(quality), 2, squeeze=False), quality):
            sub = [r for r in rows if r.get("metric") == metric]
            _metric_axes(ax_img, sub, metric, "images_seen", "training images seen")
            label = legend_labeller(sub)
            wall = _mean_wall_time(sub, label)
            _metric_axes(ax_wall, sub, metric, "images_seen", "wall-clock training time (s)",
                         x_value=lambda r, label=label, wall=wall: wall[(label(r), float(r["images_seen"]))])
    if loss_methods:
        holder = parts[-1]
        axes = holder.subplots(n_loss_rows, 2 if len(loss_methods) > 1 else 1, squeeze=False).ravel()
        for ax, method in zip(axes, loss_methods):
            sub = [r for r in loss_rows if str(r.get("method")) == method]
            label = legend_labeller(sub)
            draw_series(ax, series(sub, "images_seen", label), "loss",
                        {label(r): METHOD_COLORS.get(method) for r in sub}, marker="")
            ax.set_title(f"{method_label(method)}: its own training objective", fontsize=TITLE_FONT)
            ax.set_xlabel("training images seen", fontsize=LABEL_FONT)
            ax.set_ylabel(LOSS_LABELS.get(method, f"{method_label(method)} training loss"), fontsize=LABEL_FONT)
        for ax in axes[len(loss_methods):]:
            ax.set_visible(False)
    return fig


def _numeric(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _mean_wall_time(rows: Sequence[Mapping[str, Any]], label: Callable[[Mapping[str, Any]], str]) -> dict[tuple[str, float], float]:
    acc: dict[tuple[str, float], list[float]] = {}
    for r in rows:
        w = _numeric(r.get("wall_time_s"))
        if w is None:
            raise ValueError("efficiency rows without wall_time_s")
        acc.setdefault((label(r), float(r["images_seen"])), []).append(w)
    return {k: sum(v) / len(v) for k, v in acc.items()}


def figure_fewshot(inputs: Sequence[str | Path], title: str = "") -> Figure:
    """Few-shot FID bars per (scenario, class), one bar per method (the naive baseline included), error bars =
    std over seeds, clipped at 0 (paper §4.7, Table 3)."""
    rows = _select(load_rows(inputs), "fewshot", metric="fid")
    _need(rows, "fewshot fid", inputs)
    groups = sorted({(str(r.get("scenario")), str(r.get("class"))) for r in rows})
    methods = _sorted_methods(r.get("method") for r in rows)
    width = 0.8 / len(methods)
    fig = new_figure(max(6.5, 0.5 * len(groups) * len(methods) + 3.0), 4.8)
    ax = fig.subplots()
    for k, method in enumerate(methods):
        means, lows, highs, seeds = [], [], [], []
        for scenario, klass in groups:
            sub = [r for r in rows if r.get("method") == method and str(r.get("scenario")) == scenario
                   and str(r.get("class")) == klass]
            if sub:
                m, lo, hi, n = _band(sub)
                means.append(m)
                lows.append(m - max(lo, 0.0))
                highs.append(hi - m)
                seeds.append(n)
            else:
                means.append(np.nan)
                lows.append(0.0)
                highs.append(0.0)
        xs = np.arange(len(groups)) + (k - (len(methods) - 1) / 2) * width
        ax.bar(xs, means, width, yerr=[lows, highs], capsize=3, color=METHOD_COLORS.get(method),
               label=f"{method_label(method)} ({_seeds_text(np.array(seeds or [0]))})")
    ax.set_xticks(np.arange(len(groups)))
    ax.set_xticklabels([f"{'PU' if s == 'pu' else s}\nclass {c}" for s, c in groups], fontsize=FONT)
    ax.set_ylabel(axis_label("fid", rows), fontsize=LABEL_FONT)
    ax.set_xlabel("scenario and class", fontsize=LABEL_FONT)
    ax.tick_params(labelsize=FONT)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=FONT)
    set_suptitle(fig, title or "Few-shot conditional generation: FID against the class's images\n"
                          "(paper §4.7, Table 3; error bars: s.d. over seeds)")
    return fig


def figure_uncond(inputs: Sequence[str | Path], title: str = "") -> Figure:
    """Unconditional FID versus DDIM steps T, one line per method, bands over seeds, and the FID of real
    images at the same n (the floor a perfect sampler would reach) (paper §4.8, Table 2)."""
    all_fid = _select(load_rows(inputs), "uncond", metric="fid")
    rows = [r for r in all_fid if r.get("method") != "real"]
    _need(rows, "uncond fid", inputs)
    fig = new_figure(7.0, 4.8)
    ax = fig.subplots()
    _metric_axes(ax, rows, "fid", "steps", "DDIM steps T (log scale)", log_x=True)
    steps = sorted({float(r["steps"]) for r in rows})
    ax.set_xticks(steps, [f"{v:g}" for v in steps])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    real = [float(r["value"]) for r in all_fid if r.get("method") == "real"]
    if real:
        ax.axhline(sum(real) / len(real), color="0.4", linestyle=":", label="real images (floor at the same n)")
        ax.legend(fontsize=FONT)
    ax.set_ylabel(axis_label("fid", all_fid), fontsize=LABEL_FONT)
    set_suptitle(fig, title or f"Unconditional sampling: {_methods_text(rows)} (paper §4.8, Table 2)\n{BAND_NOTE}")
    return fig


FIGURES: dict[str, Callable[..., Figure]] = {
    "gap": figure_gap, "recon": figure_recon, "denoise": figure_denoise, "g": figure_g,
    "interpolation": figure_interpolation, "manipulation": figure_manipulation, "truncation": figure_truncation,
    "efficiency": figure_efficiency, "samples": figure_samples, "fewshot": figure_fewshot, "uncond": figure_uncond,
}


def plot(kind: str, inputs: Sequence[str | Path], out: str | Path, **options: Any) -> Path:
    """Build the `kind` figure from `inputs` and write it to `out` (PNG)."""
    if Path(out).suffix.lower() != ".png":
        raise ValueError(f"{out}: plots are written as .png")
    return save_png(FIGURES[kind](inputs, **options), out)


def plot_grid(inputs: Sequence[str | Path], out: str | Path, title: str = "", normalize: str = "clip") -> Path:
    """Write any NPZ grids as one figure (one panel per file)."""
    if Path(out).suffix.lower() != ".png":
        raise ValueError(f"{out}: plots are written as .png")
    return save_png(figure_grid(inputs, title, normalize), out)


def _run(args: argparse.Namespace) -> int:
    kwargs: dict[str, Any] = {"title": args.title or ""}
    if args.kind == "gap" and args.dataset:
        kwargs["dataset"] = args.dataset
    if args.kind == "efficiency" and args.metrics:
        kwargs["metrics"] = args.metrics
    print(plot(args.kind, args.inputs, args.out, **kwargs))
    return 0


def register_cli(subparsers: Any) -> None:
    p = subparsers.add_parser("plots", help="render a PNG from records / CSV / NPZ files",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", required=True, choices=sorted(FIGURES))
    p.add_argument("--inputs", nargs="+", required=True, help="records .json, tables .csv, or NPZ grids")
    p.add_argument("--out", required=True, help="output .png")
    p.add_argument("--title", default=None, help="figure title (default per kind)")
    p.add_argument("--dataset", default=None, help="gap: plot only this dataset")
    p.add_argument("--metrics", nargs="+", default=None, help="efficiency: metrics to plot (default all present)")
    p.set_defaults(func=_run)
