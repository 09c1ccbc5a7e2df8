"""Shared styling and output of the eval.plots figures: fonts, method colours, figure creation and PNG saving,
wrapped titles, and the line-with-band drawing every metric panel uses.

- `new_figure` (constrained layout, so every label lies inside the figure) and `save_png` (uncropped, via a
  temporary file; column labels of grid panels that still collide are set vertical by `fit_column_labels`).
- `wrap_title`, `title_height`, `set_suptitle`: figure titles wrapped to the figure's width.
- `draw_series`: mean lines with mean ± std bands clipped to the metric's range, legends with the seed count;
  `_metric_axes`: one metric of the rows versus x, one line per method.
- Two different training objectives never share an axis: `LOSS_LABELS` names each method's own loss.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.font_manager import FontProperties  # noqa: E402
from matplotlib.textpath import text_to_path  # noqa: E402

from eval.plots_data import (  # noqa: E402
    METRICS, Curve, MetricSpec, _method_rank, axis_label, legend_labeller, series,
)

DPI = 120
FONT = 8  # tick labels, legends
LABEL_FONT = 9  # axis labels
TITLE_FONT = 10  # panel titles
SUPTITLE_FONT = 11

# Each method's line and bar colour (draw_series uses them only where they tell every curve apart).
METHOD_COLORS = {"pdae": "tab:red", "pdae_class": "tab:red", "pdae_uniform": "tab:orange", "diffae": "tab:blue",
                 "ddim": "tab:gray", "dpm": "tab:gray", "naive": "tab:olive", "d2c": "tab:green"}
# Each method's training objective (the y label of its loss panel; the objectives differ, so never one axis).
LOSS_LABELS = {
    "pdae": "PDAE loss: λ_t-weighted MSE of ε\nand ε_θ + shift·G (Eq. 10)",
    "pdae_uniform": "PDAE loss, λ_t = 1: MSE of ε\nand ε_θ + shift·G",
    "diffae": "Diff-AE loss: MSE of ε\nand ε(x_t, t, z)",
}
BAND_NOTE = "bands: mean ± s.d. over seeds, clipped to the metric's range"


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


def _text_width_in(text: str, size: float = FONT) -> float:
    """A label's width in inches, as matplotlib's default font sets it (the widest line)."""
    prop = FontProperties(size=size)
    return max((text_to_path.get_text_width_height_descent(line, prop, ismath=False)[0] / 72
                for line in text.split("\n") if line), default=0.0)


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
