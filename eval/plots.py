"""PNG figures from files only: records JSON, tidy/aggregate CSV (eval.tables) and NPZ grids.

Nothing here runs a model (docs/protocol.md §9.1): every function takes input file paths and an output
path, renders with matplotlib's Agg backend and writes one PNG atomically.

    python -m eval plots --kind gap --inputs results/.../gap.json --out results/plots/gap.png

Kinds: gap (curves over t, log y, bands over seeds; docs/protocol.md §5.2), recon / denoise / g / interpolation /
samples (NPZ grids; §5.1, §5.3, appendix C.6, §5.4, §5.7), manipulation (grids + attr_prob and identity vs
strength), truncation (FID and class accuracy vs scale, §5.8), efficiency (metric vs images seen and vs wall
time, §5.9), fewshot (FID bars vs naive, §5.6), uncond (FID vs DDIM steps, §5.7).

Inputs: records (`.json`) or tidy `<table>_rows.csv` (one row per seed: bands are mean ± sample std over
seeds, ddof = 1, zero width for one seed), or aggregate `<table>.csv` (its `mean` and `std`). NPZ grids hold
`grid` [rows, cols, C, H, W] in [-1, 1] and optional `row_labels`, `col_labels` (numpy string arrays).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from eval.tables import load_rows as _load_records, mean_std  # noqa: E402

DPI = 120
METHOD_COLORS = {"pdae": "tab:red", "diffae": "tab:blue", "dpm": "tab:gray", "ddim": "tab:gray", "naive": "tab:olive",
                 "d2c": "tab:green", "pdae_class": "tab:red"}
METRIC_LABELS = {
    "ssim": "SSIM (higher is better)", "mse": "MSE on [0, 1] images (lower is better)",
    "lpips": "LPIPS-AlexNet distance (lower is better)",
    "feat_dist": "domain feature distance (lower is better; not LPIPS)",
    "loss": "training loss (each method's objective)",
    "fid": "FID (lower is better)", "class_accuracy": "class accuracy (fraction)", "attr_prob": "attribute probability",
    "identity": "identity similarity", "gap": "posterior-mean gap (MSE per element, [-1, 1] units)",
    "kid": "KID (lower is better)",
}


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------

def load_rows(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Rows from records JSON, tidy rows CSV (`value`) or aggregate CSV (`mean`, `std`, `n`)."""
    import csv

    from eval.tables import parse_cell

    rows: list[dict[str, Any]] = []
    for path in paths:
        path = Path(path)
        if path.suffix == ".csv":
            if not path.is_file():
                raise ValueError(f"{path}: input file not found")
            with open(path, newline="") as fh:
                raw = list(csv.DictReader(fh))
            if raw and "value" not in raw[0] and "mean" not in raw[0]:
                raise ValueError(f"{path}: neither a tidy rows CSV ('value') nor an aggregate CSV ('mean')")
            for r in raw:
                row = {k: parse_cell(v) for k, v in r.items()}
                row["std"] = r.get("std", "")  # keep blank std as blank
                rows.append(row)
        elif path.suffix == ".json":
            rows.extend(_load_records([path]))
        else:
            raise ValueError(f"{path}: expected a records .json or a .csv file")
    return rows


def error_band(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, mean - std, mean + std) with the sample std over seeds (ddof = 1); zero width for one value."""
    mean, std = mean_std([float(v) for v in values])
    std = std or 0.0
    return mean, mean - std, mean + std


def series(rows: Sequence[Mapping[str, Any]], x: str, label: Callable[[Mapping[str, Any]], str],
           x_value: Callable[[Mapping[str, Any]], float] | None = None) -> dict[str, tuple[np.ndarray, ...]]:
    """Curves {label: (xs, mean, lo, hi)}, sorted by x, from tidy rows (bands over seeds) or aggregate rows.

    `x_value` maps a row to its x (default: float(row[x])). For tidy rows, the rows sharing (label, x) are the
    seeds; for aggregate rows, `mean` and `std` are used as given."""
    xv = x_value or (lambda r: float(r[x]))
    groups: dict[str, dict[float, list[Mapping[str, Any]]]] = {}
    for r in rows:
        groups.setdefault(label(r), {}).setdefault(xv(r), []).append(r)
    out = {}
    for name, by_x in groups.items():
        xs = sorted(by_x)
        stats = [_band(by_x[v]) for v in xs]
        out[name] = (np.array(xs), *(np.array(col) for col in zip(*stats)))
    return out


def _band(members: Sequence[Mapping[str, Any]]) -> tuple[float, float, float]:
    if "value" in members[0] and members[0].get("value") not in ("-", None):
        return error_band([float(m["value"]) for m in members])
    if len(members) != 1:
        raise ValueError("aggregate rows: several rows for one point (filter by dataset/backend)")
    m = members[0]
    std = float(m["std"]) if m.get("std") not in ("", "-", None) else 0.0
    return float(m["mean"]), float(m["mean"]) - std, float(m["mean"]) + std


def _select(rows: Sequence[Mapping[str, Any]], table: str | None = None, **where: Any) -> list[Mapping[str, Any]]:
    out = []
    for r in rows:
        if table is not None and str(r.get("table")) != table:
            continue
        if all(str(r.get(k, "-")) == str(v) for k, v in where.items() if v is not None):
            out.append(r)
    return out


def _need(rows: Sequence[Mapping[str, Any]], what: str, paths: Sequence[Any]) -> None:
    if not rows:
        raise ValueError(f"no {what} rows in {', '.join(str(p) for p in paths)}")


def _label(r: Mapping[str, Any], several_datasets: bool, *cols: str) -> str:
    parts = [str(r.get(c, "-")) for c in cols if str(r.get(c, "-")) != "-"]
    if several_datasets:
        parts.insert(0, str(r.get("dataset", "-")))
    return " / ".join(parts) or "-"


def _several(rows: Sequence[Mapping[str, Any]], column: str = "dataset") -> bool:
    return len({str(r.get(column, "-")) for r in rows}) > 1


# ----------------------------------------------------------------------------------------------
# Drawing helpers
# ----------------------------------------------------------------------------------------------

def save_png(fig: Any, out: str | Path) -> Path:
    """Write `fig` as PNG via a temporary file and close it."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"{out}: plots are written as .png")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=DPI, format="png")
    plt.close(fig)
    os.replace(tmp, out)
    return out


def _color(name: str) -> str | None:
    """The method's colour when the label names exactly one method (else matplotlib's cycle)."""
    found = {METHOD_COLORS[p] for p in name.split(" / ") if p in METHOD_COLORS}
    return found.pop() if len(found) == 1 else None


def draw_series(ax: Any, curves: Mapping[str, tuple[np.ndarray, ...]], log_y: bool = False, marker: str = "o") -> None:
    """Lines with shaded mean ± std bands (clipped positive on a log axis)."""
    colors = {name: _color(name) for name in curves}
    if None in colors.values() or len(set(colors.values())) < len(colors):
        colors = dict.fromkeys(curves)  # method colours only when they tell every curve apart
    for name, (xs, mean, lo, hi) in sorted(curves.items()):
        color = colors[name]
        if log_y:
            floor = np.where(mean > 0, mean * 1e-3, np.nan)
            lo = np.maximum(lo, floor)
        (line,) = ax.plot(xs, mean, marker=marker if len(xs) <= 30 else None, ms=3, label=name, color=color)
        if np.any(hi > lo):
            ax.fill_between(xs, lo, hi, alpha=0.25, color=line.get_color(), linewidth=0)
    if log_y:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3, which="both" if log_y else "major")
    ax.legend(fontsize=8)


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


def load_grid(path: str | Path) -> tuple[np.ndarray, list[str], list[str]]:
    """(grid, row_labels, col_labels) of an NPZ grid file."""
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
    rows, cols = grid.shape[:2]
    row_labels = [str(s) for s in data["row_labels"]] if "row_labels" in data else [""] * rows
    col_labels = [str(s) for s in data["col_labels"]] if "col_labels" in data else [""] * cols
    if len(row_labels) != rows or len(col_labels) != cols:
        raise ValueError(f"{path}: {len(row_labels)} row / {len(col_labels)} column labels for a {rows}x{cols} grid")
    return grid, row_labels, col_labels


def _draw_grid(ax: Any, path: str | Path, normalize: str = "clip", title: str | None = None) -> None:
    grid, row_labels, col_labels = load_grid(path)
    pad = 2
    mosaic = grid_mosaic(grid, normalize, pad)
    h, w = grid.shape[-2:]
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_xticks([j * (w + pad) + w / 2 - 0.5 for j in range(grid.shape[1])])
    ax.set_xticklabels(col_labels, fontsize=8, rotation=0 if max(map(len, col_labels), default=0) < 8 else 45)
    ax.xaxis.tick_top()
    ax.set_yticks([i * (h + pad) + h / 2 - 0.5 for i in range(grid.shape[0])])
    ax.set_yticklabels(row_labels, fontsize=8)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10, pad=18)


def _grid_figsize(paths: Sequence[str | Path]) -> tuple[float, float]:
    width, height = 4.0, 0.0
    for p in paths:
        grid, _, _ = load_grid(p)
        rows, cols, _, h, w = grid.shape
        width = max(width, min(16.0, 1.6 + 0.9 * cols * max(w, 16) / 32))
        height += min(12.0, 0.9 + 0.9 * rows * max(h, 16) / 32)
    return width, max(height, 2.5)


# ----------------------------------------------------------------------------------------------
# Plots (each: input paths, output path -> PNG path)
# ----------------------------------------------------------------------------------------------

def plot_grid(inputs: Sequence[str | Path], out: str | Path, title: str = "", normalize: str = "clip") -> Path:
    """One panel per NPZ grid file, stacked vertically, with row/column labels."""
    if not inputs:
        raise ValueError("plot_grid: no NPZ inputs")
    fig, axes = plt.subplots(len(inputs), 1, figsize=_grid_figsize(inputs), squeeze=False)
    for ax, path in zip(axes[:, 0], inputs):
        _draw_grid(ax, path, normalize, Path(path).stem if len(inputs) > 1 else None)
    fig.suptitle(title or Path(inputs[0]).stem, fontsize=11)
    fig.tight_layout()
    return save_png(fig, out)


def plot_recon_grid(inputs: Sequence[str | Path], out: str | Path, title: str = "") -> Path:
    """Reconstruction grids (rows: input and each method / x_T mode; paper §4.3, Table 1)."""
    return plot_grid(inputs, out, title or "Autoencoding reconstructions")


def plot_denoise(inputs: Sequence[str | Path], out: str | Path, title: str = "") -> Path:
    """Denoise in one step: x̂_0 from x_t with ε_θ vs ε_θ + shift (columns: t; paper §4.2, Fig. 5 left)."""
    return plot_grid(inputs, out, title or "Denoising in one step: x̂₀ from x_t (columns: t)")


def plot_g(inputs: Sequence[str | Path], out: str | Path, title: str = "", normalize: str = "clip") -> Path:
    """The learned mean shift G at several t (appendix C.6). eval.gap already divides each G panel by its max |G|
    into [-1, 1], so the default "clip" shows 0 as grey; "symmetric" rescales raw G arrays per picture."""
    return plot_grid(inputs, out, title or "Mean shift G(x_t, z, t) (grey = 0, per-panel scale)", normalize)


def plot_interpolation(inputs: Sequence[str | Path], out: str | Path, title: str = "") -> Path:
    """Interpolation rows (columns: λ; paper §4.4, Fig. 7)."""
    return plot_grid(inputs, out, title or "Interpolation (columns: λ)")


def plot_samples(inputs: Sequence[str | Path], out: str | Path, title: str = "") -> Path:
    """Unconditional samples (paper §4.8)."""
    return plot_grid(inputs, out, title or "Unconditional samples")


def _split_inputs(inputs: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    grids = [Path(p) for p in inputs if Path(p).suffix == ".npz"]
    return grids, [Path(p) for p in inputs if Path(p).suffix != ".npz"]


def plot_gap(inputs: Sequence[str | Path], out: str | Path, title: str = "", dataset: str | None = None) -> Path:
    """Posterior-mean gap vs t, log y, one line per method, mean ± std bands over seeds (docs/protocol.md §5.2)."""
    rows = _select(load_rows(inputs), "gap", dataset=dataset, metric="gap")
    _need(rows, "gap", inputs)
    several = _several(rows)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    draw_series(ax, series(rows, "t", lambda r: _label(r, several, "method")), log_y=True, marker="")
    ax.set_xlabel("timestep t (of T)")
    ax.set_ylabel(METRIC_LABELS["gap"])
    ax.set_title(title or "Posterior-mean gap: DPM vs PDAE (Gaussian noise)")
    fig.tight_layout()
    return save_png(fig, out)


def _metric_panels(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], x: str, xlabel: str,
                   label_cols: Sequence[str], title: str, out: str | Path, log_x: bool = False) -> Path:
    several = _several(rows)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        sub = [r for r in rows if r.get("metric") == metric]
        draw_series(ax, series(sub, x, lambda r: _label(r, several, *label_cols)))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        if log_x:
            ax.set_xscale("log")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_png(fig, out)


def plot_manipulation(inputs: Sequence[str | Path], out: str | Path, title: str = "") -> Path:
    """Attribute manipulation: NPZ grids (if given) above the attribute probability and the identity metric
    versus edit strength s (records), one line per method / attribute, bands over seeds."""
    grids, tables = _split_inputs(inputs)
    rows = _select(load_rows(tables), "manipulation") if tables else []
    if not grids and not rows:
        raise ValueError(f"no manipulation grids or rows in {', '.join(map(str, inputs))}")
    metrics = [m for m in ("attr_prob", "identity") if any(r.get("metric") == m for r in rows)]
    n_panels = len(grids) + (1 if metrics else 0)
    heights = [_grid_figsize([g])[1] for g in grids] + ([4.0] if metrics else [])
    fig = plt.figure(figsize=(max(10.0, 5.0 * len(metrics)), sum(heights)))
    spec = fig.add_gridspec(n_panels, max(len(metrics), 1), height_ratios=heights)
    for i, g in enumerate(grids):
        _draw_grid(fig.add_subplot(spec[i, :]), g, title=g.stem)
    several = _several(rows)
    for j, metric in enumerate(metrics):
        ax = fig.add_subplot(spec[len(grids), j])
        sub = [r for r in rows if r.get("metric") == metric]
        draw_series(ax, series(sub, "strength", lambda r: _label(r, several, "method", "attribute")))
        ax.set_xlabel("edit strength s (along the classifier direction)")
        ax.set_ylabel(METRIC_LABELS[metric])
    fig.suptitle(title or "Attribute manipulation", fontsize=11)
    fig.tight_layout()
    return save_png(fig, out)


def plot_truncation(inputs: Sequence[str | Path], out: str | Path, title: str = "") -> Path:
    """Truncation-like effect: FID and class accuracy versus the scale of G (paper §4.6, Fig. 9); NPZ grids of
    samples (if given) are drawn above."""
    grids, tables = _split_inputs(inputs)
    rows = _select(load_rows(tables), "truncation") if tables else []
    metrics = [m for m in ("fid", "class_accuracy") if any(r.get("metric") == m for r in rows)]
    if not metrics:
        if grids:
            return plot_grid(grids, out, title or "Truncation-like effect (columns: scale)")
        raise ValueError(f"no truncation rows in {', '.join(map(str, inputs))}")
    if grids:
        heights = [_grid_figsize([g])[1] for g in grids] + [4.0]
        fig = plt.figure(figsize=(max(10.0, 5.0 * len(metrics)), sum(heights)))
        spec = fig.add_gridspec(len(grids) + 1, len(metrics), height_ratios=heights)
        for i, g in enumerate(grids):
            _draw_grid(fig.add_subplot(spec[i, :]), g, title=g.stem)
        axes = [fig.add_subplot(spec[len(grids), j]) for j in range(len(metrics))]
    else:
        fig, ax_arr = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
        axes = list(ax_arr[0])
    several = _several(rows)
    for ax, metric in zip(axes, metrics):
        sub = [r for r in rows if r.get("metric") == metric]
        draw_series(ax, series(sub, "scale", lambda r: _label(r, several, "method", "steps")))
        ax.set_xlabel("scale of G (0 = unconditional prior)")
        ax.set_ylabel(METRIC_LABELS[metric])
    fig.suptitle(title or "Truncation-like effect of the class-conditional mean shift", fontsize=11)
    fig.tight_layout()
    return save_png(fig, out)


def plot_efficiency(inputs: Sequence[str | Path], out: str | Path, title: str = "",
                    metrics: Sequence[str] | None = None) -> Path:
    """Training efficiency: each metric vs images seen (left) and vs wall time (right), one line per method,
    mean ± std bands over seeds; the wall-time x of a snapshot is its mean over seeds."""
    rows = [r for r in _select(load_rows(inputs), "efficiency") if _numeric(r.get("images_seen")) is not None]
    _need(rows, "efficiency", inputs)
    present = [m for m in ("ssim", "mse", "lpips", "feat_dist", "loss") if any(r.get("metric") == m for r in rows)]
    metrics = [m for m in (metrics or present) if m in present]
    if not metrics:
        raise ValueError("plot_efficiency: none of the requested metrics in the inputs")
    several = _several(rows)
    fig, axes = plt.subplots(len(metrics), 2, figsize=(11, 3.4 * len(metrics)), squeeze=False)
    for (ax_img, ax_wall), metric in zip(axes, metrics):
        sub = [r for r in rows if r.get("metric") == metric]
        label = lambda r: _label(r, several, "method")  # noqa: E731
        draw_series(ax_img, series(sub, "images_seen", label), marker="o" if metric != "loss" else "")
        wall = _mean_wall_time(sub, label)
        draw_series(ax_wall, series(sub, "images_seen", label, x_value=lambda r: wall[(label(r), float(r["images_seen"]))]),
                    marker="o" if metric != "loss" else "")
        ax_img.set_xlabel("training images seen")
        ax_wall.set_xlabel("wall-clock training time (s)")
        for ax in (ax_img, ax_wall):
            ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    fig.suptitle(title or "Training efficiency: PDAE vs Diff-AE (random-x_T reconstruction)", fontsize=11)
    fig.tight_layout()
    return save_png(fig, out)


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


def plot_fewshot(inputs: Sequence[str | Path], out: str | Path, title: str = "") -> Path:
    """Few-shot FID bars per (scenario, class), one bar per method (naive included), error bars = std."""
    rows = _select(load_rows(inputs), "fewshot", metric="fid")
    _need(rows, "fewshot fid", inputs)
    groups = sorted({(str(r.get("scenario")), str(r.get("class"))) for r in rows})
    methods = [m for m in ("pdae", "diffae", "d2c", "naive") if any(r.get("method") == m for r in rows)]
    methods += sorted({str(r.get("method")) for r in rows} - set(methods))
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(groups) * len(methods) / 2 + 2), 4.5))
    for k, method in enumerate(methods):
        means, errs = [], []
        for scenario, klass in groups:
            sub = [r for r in rows if r.get("method") == method and str(r.get("scenario")) == scenario
                   and str(r.get("class")) == klass]
            if sub:
                m, _, hi = _band(sub)
                means.append(m)
                errs.append(hi - m)
            else:
                means.append(np.nan)
                errs.append(0.0)
        xs = np.arange(len(groups)) + (k - (len(methods) - 1) / 2) * width
        ax.bar(xs, means, width, yerr=errs, capsize=3, label=method, color=METHOD_COLORS.get(method))
    ax.set_xticks(np.arange(len(groups)))
    ax.set_xticklabels([f"{s}\n{c}" for s, c in groups])
    ax.set_ylabel(METRIC_LABELS["fid"])
    ax.set_xlabel("scenario / class")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "Few-shot conditional generation (FID vs the class subset)")
    fig.tight_layout()
    return save_png(fig, out)


def plot_uncond(inputs: Sequence[str | Path], out: str | Path, title: str = "") -> Path:
    """Unconditional FID vs DDIM steps T, one line per method, bands over seeds (paper §4.8, Table 2)."""
    all_fid = _select(load_rows(inputs), "uncond", metric="fid")
    rows = [r for r in all_fid if r.get("method") != "real"]
    _need(rows, "uncond fid", inputs)
    several = _several(rows)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    draw_series(ax, series(rows, "steps", lambda r: _label(r, several, "method")))
    real = [float(r["value"]) for r in all_fid if r.get("method") == "real"]
    if real:  # FID of real images at the same n: the floor a perfect sampler would reach
        ax.axhline(sum(real) / len(real), color="0.4", linestyle=":", label="real images (floor at the same n)")
        ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("DDIM steps T (log scale)")
    ax.set_ylabel(METRIC_LABELS["fid"])
    ax.set_title(title or "Unconditional sampling via the latent DPM")
    fig.tight_layout()
    return save_png(fig, out)


PLOTS: dict[str, Callable[..., Path]] = {
    "gap": plot_gap, "recon": plot_recon_grid, "denoise": plot_denoise, "g": plot_g,
    "interpolation": plot_interpolation, "manipulation": plot_manipulation, "truncation": plot_truncation,
    "efficiency": plot_efficiency, "samples": plot_samples, "fewshot": plot_fewshot, "uncond": plot_uncond,
}


def _run(args: argparse.Namespace) -> int:
    kwargs: dict[str, Any] = {"title": args.title or ""}
    if args.kind == "gap" and args.dataset:
        kwargs["dataset"] = args.dataset
    if args.kind == "efficiency" and args.metrics:
        kwargs["metrics"] = args.metrics
    print(PLOTS[args.kind](args.inputs, args.out, **kwargs))
    return 0


def register_cli(subparsers: Any) -> None:
    p = subparsers.add_parser("plots", help="render a PNG from records / CSV / NPZ files",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", required=True, choices=sorted(PLOTS))
    p.add_argument("--inputs", nargs="+", required=True, help="records .json, tables .csv, or NPZ grids")
    p.add_argument("--out", required=True, help="output .png")
    p.add_argument("--title", default=None, help="figure title (default per kind)")
    p.add_argument("--dataset", default=None, help="gap: plot only this dataset")
    p.add_argument("--metrics", nargs="+", default=None, help="efficiency: metrics to plot (default all present)")
    p.set_defaults(func=_run)
