"""eval.plots: every plot function writes a real PNG from hand-made files; the error-band math."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pytest

from eval import plots, tables
from eval.common import write_records

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def rec(table: str, metric: str, value: float, seed: int = 0, **cols: object) -> dict:
    row = {"dataset": "digits", "method": "pdae", "seed": seed, "images_seen": 1000, "code_version": "v",
           "config": f"results/digits/seed{seed}", "table": table, **cols}
    return {**row, "backend": cols.get("backend", "-"), "metric": metric, "value": float(value)}


def assert_png(path: Path, min_bytes: int = 5000) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 200 and height > 150


def grid_file(path: Path, rows: int = 2, cols: int = 4, channels: int = 3, size: int = 8, scale: float = 1.0) -> Path:
    g = np.random.default_rng(0).uniform(-1, 1, (rows, cols, channels, size, size)).astype(np.float32) * scale
    np.savez(path, grid=g, row_labels=np.array([f"row{i}" for i in range(rows)]),
             col_labels=np.array([f"t={100 * j}" for j in range(cols)]))
    return path


# ---------------------------------------------------------------------------------------------- math

def test_error_band_is_mean_plus_minus_sample_std() -> None:
    assert plots.error_band([1.0, 2.0, 3.0]) == (2.0, 1.0, 3.0)
    assert plots.error_band([5.0]) == (5.0, 5.0, 5.0)
    mean, lo, hi = plots.error_band([0.0, 1.0])
    assert mean == 0.5 and hi - mean == pytest.approx(math.sqrt(0.5))


def test_series_from_tidy_rows_matches_aggregate_csv(tmp_path: Path) -> None:
    rows = [rec("gap", "gap", v, s, method=m, t=t) for m, base in (("pdae", 1.0), ("dpm", 2.0))
            for t in (100, 200) for s, v in enumerate((base * t, base * t + 10, base * t + 20))]
    tidy_curves = plots.series(rows, "t", lambda r: r["method"])
    xs, mean, lo, hi = tidy_curves["pdae"]
    assert xs.tolist() == [100, 200] and mean.tolist() == [110, 210]
    assert (hi - mean).tolist() == pytest.approx([10, 10]) and (mean - lo).tolist() == pytest.approx([10, 10])
    # The same numbers through eval.tables' aggregate CSV.
    tables.write_tables(rows, tmp_path)
    agg_curves = plots.series(plots.load_rows([tmp_path / "gap.csv"]), "t", lambda r: r["method"])
    for name in ("pdae", "dpm"):
        for a, b in zip(tidy_curves[name], agg_curves[name]):
            assert np.allclose(a, b)


def test_grid_mosaic_layout_and_normalisation() -> None:
    grid = np.zeros((2, 3, 1, 4, 5))
    grid[1, 2] = 1.0
    grid[0, 0, 0, 0, 0] = -1.0
    mosaic = plots.grid_mosaic(grid, pad=2)
    assert mosaic.shape == (2 * 6 - 2, 3 * 7 - 2, 3)
    assert mosaic[0, 0].tolist() == [0, 0, 0] and mosaic[1, 1].tolist() == [0.5] * 3
    assert np.all(mosaic[6:10, 14:19] == 1.0) and np.all(mosaic[4:6, :] == 1.0)  # white padding rows
    g = np.zeros((1, 1, 1, 2, 2))
    g[0, 0, 0] = [[-4.0, 0.0], [2.0, 4.0]]
    sym = plots.grid_mosaic(g, "symmetric")[..., 0]
    assert sym.tolist() == [[0.0, 0.5], [0.75, 1.0]]
    with pytest.raises(ValueError, match="rows, cols"):
        plots.grid_mosaic(np.zeros((2, 3, 4)))


# ---------------------------------------------------------------------------------------------- plots

def test_plot_gap(tmp_path: Path) -> None:
    rows = [rec("gap", "gap", (1.0 if m == "dpm" else 0.5) * math.exp(-t / 300) * (1 + 0.1 * s), s, method=m, t=t)
            for m in ("dpm", "pdae") for t in range(0, 1000, 50) for s in range(3)]
    path = write_records(tmp_path / "gap.json", rows)
    assert_png(plots.plot_gap([path], tmp_path / "gap.png"))
    with pytest.raises(ValueError, match="no gap rows"):
        plots.plot_gap([write_records(tmp_path / "other.json", [rec("recon", "ssim", 1)])], tmp_path / "x.png")
    with pytest.raises(ValueError, match=".png"):
        plots.plot_gap([path], tmp_path / "gap.svg")


@pytest.mark.parametrize("fn", [plots.plot_recon_grid, plots.plot_denoise, plots.plot_interpolation,
                                plots.plot_samples, plots.plot_g])
def test_grid_plots(tmp_path: Path, fn) -> None:
    rgb = grid_file(tmp_path / "rgb.npz", scale=3.0 if fn is plots.plot_g else 1.0)
    grey = grid_file(tmp_path / "grey.npz", rows=3, cols=11, channels=1, size=16)
    assert_png(fn([rgb, grey], tmp_path / "grid.png"))


def test_grid_file_errors(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="no 'grid' array"):
        plots.plot_grid([tmp_path / "bad.npz"], tmp_path / "x.png")
    np.savez(tmp_path / "labels.npz", grid=np.zeros((2, 2, 1, 4, 4)), row_labels=np.array(["a"]))
    with pytest.raises(ValueError, match="row / 2 column labels"):
        plots.plot_grid([tmp_path / "labels.npz"], tmp_path / "x.png")


def test_plot_manipulation(tmp_path: Path) -> None:
    rows = [rec("manipulation", metric, v + 0.02 * s, s, method=m, attribute="Smiling", strength=st)
            for m in ("pdae", "diffae") for s in range(2) for st in (-1.0, -0.5, 0.0, 0.5, 1.0)
            for metric, v in (("attr_prob", 0.5 + 0.4 * st), ("identity", 1 - 0.2 * abs(st)))]
    path = write_records(tmp_path / "manip.json", rows)
    assert_png(plots.plot_manipulation([grid_file(tmp_path / "m.npz"), path], tmp_path / "m.png"))
    assert_png(plots.plot_manipulation([path], tmp_path / "m2.png"))


def test_plot_truncation(tmp_path: Path) -> None:
    rows = [rec("truncation", metric, v, s, method="pdae_class", scale=sc, steps=100)
            for s in range(2) for sc in (0.0, 0.5, 1.0, 2.0, 3.0)
            for metric, v in (("fid", 30 - 5 * sc + s), ("class_accuracy", 0.1 + 0.25 * sc - 0.01 * s))]
    path = write_records(tmp_path / "trunc.json", rows)
    assert_png(plots.plot_truncation([path], tmp_path / "t.png"))
    assert_png(plots.plot_truncation([grid_file(tmp_path / "t.npz"), path], tmp_path / "t2.png"))


def test_plot_efficiency(tmp_path: Path) -> None:
    rows = []
    for m, speed in (("pdae", 2.0), ("diffae", 1.0)):
        for s in range(2):
            for n in (100, 200, 400, 800):
                rows.append(rec("efficiency", "ssim", 1 - 50 / (speed * n) + 0.01 * s, s, method=m, images_seen=n,
                                wall_time_s=n / (10 * speed) + s))
                rows.append(rec("efficiency", "loss", 1 / n, s, method=m, images_seen=n, wall_time_s=n / 10))
            rows.append(rec("efficiency", "images_per_s", 80, s, method=m, images_seen="-", wall_time_s="-"))
    path = write_records(tmp_path / "eff.json", rows)
    assert_png(plots.plot_efficiency([path], tmp_path / "e.png"))
    tables.write_tables(rows, tmp_path / "tables")  # also from the aggregate CSV
    assert_png(plots.plot_efficiency([tmp_path / "tables" / "efficiency.csv"], tmp_path / "e2.png", metrics=["ssim"]))


def test_distance_metrics_have_their_own_labels_and_feat_dist_is_plotted(tmp_path: Path, monkeypatch) -> None:
    # "lpips" is LPIPS-AlexNet only; the domain backend's distance is "feat_dist", labelled as what it is.
    assert "LPIPS" in plots.METRIC_LABELS["lpips"]
    assert plots.METRIC_LABELS["feat_dist"].startswith("domain feature distance")
    assert "not LPIPS" in plots.METRIC_LABELS["feat_dist"]
    rows = [rec("efficiency", "feat_dist", 1.0 / n + s, s, method=m, images_seen=n, wall_time_s=n / 10,
                backend="domain") for m in ("pdae", "diffae") for s in range(2) for n in (100, 200, 400)]
    labels: list[str] = []
    original = plots.plt.Axes.set_ylabel
    monkeypatch.setattr(plots.plt.Axes, "set_ylabel", lambda ax, text, *a, **k: (labels.append(text),
                                                                                 original(ax, text, *a, **k))[1])
    assert_png(plots.plot_efficiency([write_records(tmp_path / "eff.json", rows)], tmp_path / "f.png"))
    assert labels and set(labels) == {plots.METRIC_LABELS["feat_dist"]}


def test_plot_fewshot_and_uncond(tmp_path: Path) -> None:
    rows = [rec("fewshot", "fid", v + s, s, method=m, scenario=sc, **{"class": c})
            for sc in ("binary", "pu") for c in ("3", "8") for s in range(2)
            for m, v in (("pdae", 10.0), ("diffae", 12.0), ("naive", 25.0))]
    assert_png(plots.plot_fewshot([write_records(tmp_path / "fs.json", rows)], tmp_path / "fs.png"))
    rows = [rec("uncond", "fid", 40 / math.sqrt(t) * (1.2 if m == "ddim" else 1.0) + s, s, method=m, steps=t)
            for m in ("ddim", "diffae", "pdae") for t in (10, 20, 50, 100) for s in range(2)]
    assert_png(plots.plot_uncond([write_records(tmp_path / "u.json", rows)], tmp_path / "u.png"))


def test_cli(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    plots.register_cli(parser.add_subparsers())
    grid = grid_file(tmp_path / "g.npz")
    args = parser.parse_args(["plots", "--kind", "recon", "--inputs", str(grid), "--out", str(tmp_path / "r.png")])
    assert args.func(args) == 0
    assert_png(tmp_path / "r.png")
