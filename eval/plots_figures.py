"""Metric figures of eval.plots: mean ± std curves and bars over seeds from records / CSV rows, some with the
NPZ grids of the same evaluation above them.

- `figure_gap`: posterior-mean gap versus t, log y (paper Fig. 1, Fig. 5 right).
- `figure_manipulation`: grids, then attribute probability and identity versus edit strength (§4.5, Fig. 8).
- `figure_truncation`: grids, then FID and class accuracy versus the scale of G (§4.6, Fig. 9).
- `figure_efficiency`: quality versus images seen and wall time; each method's loss on its own axes (§4.1).
- `figure_fewshot`: FID bars per scenario and class (§4.7, Table 3).
- `figure_uncond`: FID versus DDIM steps, with the real-image floor (§4.8, Table 2).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from eval.plots_data import (  # noqa: E402
    QUALITY_METRICS, _band, _need, _select, _sorted_methods, axis_label, legend_labeller, load_rows, method_label,
    series,
)
from eval.plots_grids import _grid_figure, load_grid  # noqa: E402
from eval.plots_style import (  # noqa: E402
    BAND_NOTE, FONT, LABEL_FONT, LOSS_LABELS, METHOD_COLORS, TITLE_FONT, _metric_axes, _seeds_text, draw_series,
    new_figure, set_suptitle, title_height,
)


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
    title = title or "Attribute manipulation along the latent classifier's direction (paper §4.5, Fig. 8)" + (
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
