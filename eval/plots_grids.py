"""Picture grids of eval.plots: NPZ grids (`grid` [rows, cols, C, H, W] in [-1, 1], optional `row_labels`,
`col_labels`, and the provenance sidecar `<file>.npz.json` of eval.sample.write_arrays), drawn one panel per
file, and the figure builders that show only grids.

- `load_grid` / `Grid`, `grid_mosaic` (one image with padding; "clip" or per-picture "symmetric" scaling),
  `grid_method` / `panel_title` (the method's paper name from the sidecar or the results path).
- `pretty_label` / `factor_columns`: the NPZ labels as printed, a prefix every column shares moved to the
  column axis label; `draw_grid` / `_grid_figure`: panels sized to their labels, stacked vertically.
- Builders: `figure_grid`, `figure_recon` (§4.3, Table 1), `figure_denoise` (§4.2, Fig. 5 left), `figure_g`
  (appendix C.6), `figure_interpolation` (§4.4, Fig. 7), `figure_samples` (§4.8, Table 2).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from eval.plots_data import METHOD_LABELS, method_label  # noqa: E402
from eval.plots_style import FONT, TITLE_FONT, _text_width_in, new_figure, set_suptitle, title_height  # noqa: E402


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
