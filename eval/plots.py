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

# The figures are built in eval.plots_data (rows, curves, names and axis labels), eval.plots_style (fonts,
# colours, figure creation, PNG output, line-with-band panels), eval.plots_grids (NPZ grids and the builders
# that show only grids) and eval.plots_figures (the metric figures); this module registers them by kind,
# writes them (`plot`, `plot_grid`) and provides the `python -m eval plots` sub-command. Every name of that
# interface is importable from here (__all__).

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from eval.plots_data import (  # noqa: E402
    BACKENDS, EXTRA_FORMATS, METHOD_LABELS, METHOD_ORDER, METRICS, QUALITY_METRICS, Curve, MetricSpec, axis_label,
    error_band, legend_labeller, load_rows, method_label, series,
)
from eval.plots_figures import (  # noqa: E402
    figure_efficiency, figure_fewshot, figure_gap, figure_manipulation, figure_truncation, figure_uncond,
)
from eval.plots_grids import (  # noqa: E402
    COLUMN_PREFIXES, LABEL_TEXT, MAX_CELL, MAX_GRID_HEIGHT, MAX_GRID_WIDTH, Grid, draw_grid, factor_columns,
    figure_denoise, figure_g, figure_grid, figure_interpolation, figure_recon, figure_samples, grid_method,
    grid_mosaic, load_grid, panel_title, pretty_label,
)
from eval.plots_style import (  # noqa: E402
    BAND_NOTE, DPI, FONT, LABEL_FONT, LOSS_LABELS, METHOD_COLORS, SUPTITLE_FONT, TITLE_FONT, draw_series,
    fit_column_labels, new_figure, save_png, set_suptitle, title_height, wrap_title,
)

__all__ = [
    # eval.plots_data
    "BACKENDS", "EXTRA_FORMATS", "METHOD_LABELS", "METHOD_ORDER", "METRICS", "QUALITY_METRICS", "Curve",
    "MetricSpec", "axis_label", "error_band", "legend_labeller", "load_rows", "method_label", "series",
    # eval.plots_style (plt: the Agg pyplot the figures are made with)
    "BAND_NOTE", "DPI", "FONT", "LABEL_FONT", "LOSS_LABELS", "METHOD_COLORS", "SUPTITLE_FONT", "TITLE_FONT",
    "draw_series", "fit_column_labels", "new_figure", "plt", "save_png", "set_suptitle", "title_height",
    "wrap_title",
    # eval.plots_grids
    "COLUMN_PREFIXES", "LABEL_TEXT", "MAX_CELL", "MAX_GRID_HEIGHT", "MAX_GRID_WIDTH", "Grid", "draw_grid",
    "factor_columns", "figure_denoise", "figure_g", "figure_grid", "figure_interpolation", "figure_recon",
    "figure_samples", "grid_method", "grid_mosaic", "load_grid", "panel_title", "pretty_label",
    # eval.plots_figures
    "figure_efficiency", "figure_fewshot", "figure_gap", "figure_manipulation", "figure_truncation",
    "figure_uncond",
    # this module
    "FIGURES", "plot", "plot_grid", "register_cli",
]


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
