"""eval.paper / eval.tables: aggregation numbers, the paper column, renderings, intervals from per-unit values."""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import pytest

from eval import paper, tables
from eval.common import write_records

PROV = {"dataset": "digits", "code_version": "abc123", "config": "-", "images_seen": 1000}


def rec(table: str, metric: str, value: float, seed: int = 0, **cols: object) -> dict:
    row = {**PROV, "seed": seed, "config": f"results/x/seed{seed}/model", "table": table, **cols}
    row.setdefault("method", "pdae")
    row.setdefault("backend", "-")
    return {**row, "metric": metric, "value": float(value)}


def recon(method: str, x_T: str, metric: str, values: list[float], steps: int = 100, **cols: object) -> list[dict]:
    return [rec("recon", metric, v, seed=s, method=method, steps=steps, sampler="ddim", x_T=x_T, **cols)
            for s, v in enumerate(values)]


# ---------------------------------------------------------------------------------------------- aggregation

def test_mean_std_is_sample_std() -> None:
    assert tables.mean_std([1.0, 2.0, 3.0, 6.0]) == (3.0, math.sqrt(14 / 3))
    assert tables.mean_std([0.5]) == (0.5, None)
    with pytest.raises(ValueError):
        tables.mean_std([])


def test_aggregate_groups_over_seeds_and_keeps_provenance() -> None:
    rows = recon("pdae", "random", "ssim", [0.69, 0.70, 0.71]) + recon("pdae", "inferred", "ssim", [0.95])
    rows[1]["images_seen"], rows[1]["code_version"] = 3000, "def456"
    agg = tables.aggregate(tables.tidy(rows))
    assert [r["x_T"] for r in agg] == ["inferred", "random"]  # sorted by key
    inferred, random_ = agg
    assert inferred["mean"] == 0.95 and inferred["std"] == "" and inferred["n"] == 1 and inferred["seeds"] == "0"
    assert random_["mean"] == pytest.approx(0.70) and random_["std"] == pytest.approx(0.01)
    assert random_["n"] == 3 and random_["seeds"] == "0;1;2"
    assert random_["images_seen"] == pytest.approx(5000 / 3)
    assert random_["code_version"] == "abc123;def456"
    assert random_["backend"] == "-" and "seed" not in random_ and "config" not in random_ and "value" not in random_


def test_aggregate_never_mixes_backends_and_canonicalises_keys() -> None:
    rows = [rec("recon", "lpips", 0.1, 0, steps=100, backend="domain"),
            rec("recon", "lpips", 0.3, 1, steps=100.0, backend="domain"),
            rec("recon", "lpips", 0.9, 0, steps="100", backend="standard")]
    agg = tables.aggregate(rows)
    assert [(r["backend"], r["n"]) for r in agg] == [("domain", 2), ("standard", 1)]
    assert agg[0]["mean"] == pytest.approx(0.2)


def test_efficiency_groups_on_images_seen_and_averages_wall_time() -> None:
    rows = [rec("efficiency", "ssim", v, s, images_seen=n, wall_time_s=w)
            for s, (n, v, w) in enumerate([(100, 0.5, 10.0), (100, 0.7, 14.0)])]
    rows += [rec("efficiency", "ssim", 0.9, 0, images_seen=200, wall_time_s=30.0)]
    agg = tables.aggregate(rows)
    assert [(r["images_seen"], r["n"]) for r in agg] == [(100, 2), (200, 1)]
    assert agg[0]["wall_time_s"] == 12.0 and agg[0]["mean"] == pytest.approx(0.6)


def test_aggregate_refuses_mixed_tables() -> None:
    with pytest.raises(ValueError, match="one table"):
        tables.aggregate([rec("recon", "ssim", 1), rec("gap", "gap", 1)])


# ---------------------------------------------------------------------------------------------- paper column

def test_paper_numbers_are_keyed_by_the_record_vocabulary() -> None:
    # Table 1: FFHQ128 model (lmdb data, slug from the results path), evaluated on CelebA-HQ.
    base = {"table": "recon", "dataset": "lmdb", "config": "results/ffhq128/pdae/seed0/model", "method": "pdae",
            "steps": 100, "sampler": "ddim", "x_T": "random", "metric": "ssim"}
    assert paper.dataset_slug(base) == "ffhq128"
    assert paper.paper_value(base)[0] == "0.696"
    assert paper.paper_value({**base, "eval_dataset": "celebahq128"})[0] == "0.696"
    assert paper.paper_value({**base, "eval_data": "/data/celebahq128/spec.yaml"})[0] == "0.696"
    assert paper.paper_value({**base, "eval_dataset": "ffhq128"}) == ("", "")      # not the paper's eval set
    assert paper.paper_value({**base, "sampler": "ddpm", "steps": 1000}) == ("", "")
    assert paper.paper_value({**base, "steps": 20}) == ("", "")
    assert paper.paper_value({**base, "x_T": "inferred", "metric": "mse"})[0] == "5.48e-5"
    assert paper.paper_value({**base, "method": "ddim", "x_T": "inferred", "metric": "lpips"})[0] == "0.063"
    assert paper.paper_value({**base, "dataset": "digits", "config": "results/digits/pdae"}) == ("", "")
    # Table 2: * entries carry the uncertainty note.
    t2 = {"table": "uncond", "dataset": "bedroom128", "method": "ddim", "steps": 50, "metric": "fid"}
    value, note = paper.paper_value(t2)
    assert value == "7.31" and "uncertain" in note
    value, note = paper.paper_value({**t2, "steps": 10.0})
    assert value == "14.07" and "uncertain" not in note
    # Table 3: class names match loosely.
    t3 = {"table": "fewshot", "dataset": "celeba64", "scenario": "PU", "class": "non_blond", "method": "naive",
          "metric": "fid"}
    assert paper.paper_value(t3)[0] == "1.12"
    assert paper.paper_value({**t3, "scenario": "binary", "class": "Blond", "method": "pdae"})[1].count("uncertain") == 1
    # Efficiency: throughput and the 1/3-1/2 ratio (any dataset).
    assert paper.paper_value({"table": "efficiency", "dataset": "ffhq128", "method": "diffae",
                              "metric": "images_per_s"})[0] == "75.41"
    assert paper.paper_value({"table": "efficiency", "dataset": "digits", "method": "pdae", "steps": 20,
                              "metric": "images_ratio"})[0] == "0.3333-0.5"


def test_paper_tables_are_complete() -> None:
    assert len(paper.entries("recon")) == 30 and len(paper.entries("uncond")) == 48
    assert len(paper.entries("fewshot")) == 32
    assert sum("uncertain" in e.note for e in paper.entries("uncond")) == 10
    assert [e.value for e in paper.entries("uncond", dataset="ffhq128", method="pdae")] == [20.16, 17.18, 12.81, 10.31]
    naive = {e.value for e in paper.entries("fewshot", method="naive")}
    assert naive == {25.70, 14.16, 24.78, 1.12}


# ---------------------------------------------------------------------------------------------- files

def test_write_tables_renders_mean_std_and_paper(tmp_path: Path) -> None:
    rows = recon("pdae", "random", "ssim", [0.69, 0.70, 0.71]) + recon("ddim", "random", "ssim", [0.2])
    for r in rows:
        r["dataset"], r["config"] = "lmdb", f"results/ffhq128/{r['method']}/seed{r['seed']}/model"
    records = write_records(tmp_path / "recon.json", rows)
    out = tmp_path / "tables"
    names = sorted(p.name for p in tables.write_tables(tables.load_rows([records]), out))
    assert names == ["paper.csv", "recon.csv", "recon.md", "recon.tex", "recon_rows.csv"]
    md = (out / "recon.md").read_text()
    assert "| dataset | method | steps | sampler | x_T | metric | data_source | mean ± std | n | paper |" in md
    assert "| ffhq128 | pdae | 100 | ddim | random | ssim | lmdb | 0.7 ± 0.01 | 3 | 0.696 [1] |" in md
    assert "| ffhq128 | ddim | 100 | ddim | random | ssim | lmdb | 0.2 | 1 |  |" in md
    assert "[1] CelebA-HQ 30k, FFHQ128 model" in md and "backend(s): -" in md
    tex = (out / "recon.tex").read_text()
    assert r"0.7 $\pm$ 0.01" in tex and r"\begin{tabular}" in tex and "x\\_T" in tex
    with open(out / "recon.csv", newline="") as fh:
        agg = list(csv.DictReader(fh))
    assert agg[1]["std"] != "" and float(agg[1]["std"]) == pytest.approx(0.01) and agg[0]["std"] == ""
    assert agg[1]["paper"] == "0.696" and agg[1]["dataset"] == "ffhq128" and agg[1]["data_source"] == "lmdb"
    # The tidy CSV reads back to the same aggregate.
    again = tables.aggregate(tables.tidy(tables.load_rows([out / "recon_rows.csv"])))
    assert [r["mean"] for r in again] == pytest.approx([0.2, 0.70])


def test_cli_tables(tmp_path: Path) -> None:
    records = write_records(tmp_path / "r.json", recon("pdae", "inferred", "ssim", [0.995, 0.993]))
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    tables.register_cli(sub)
    args = parser.parse_args(["tables", "--records", str(records), "--out-dir", str(tmp_path / "t")])
    assert args.func(args) == 0
    assert "| digits | pdae | 100 | ddim | inferred | ssim | 0.994 ± 0.001414 | 2 |" in \
        (tmp_path / "t" / "recon.md").read_text()
    with pytest.raises(ValueError, match="not found"):
        tables.load_rows([tmp_path / "missing.json"])


def test_efficiency_markdown_shows_images_seen_and_wall_time() -> None:
    rows = [rec("efficiency", "ssim", 0.5, 0, images_seen=100, wall_time_s=10.0),
            rec("efficiency", "ssim", 0.7, 1, images_seen=100, wall_time_s=14.0)]
    md = tables.render_markdown("efficiency", tables.aggregate(rows))
    assert "| dataset | method | images_seen | metric | wall_time_s | mean ± std | n |" in md
    assert "| digits | pdae | 100 | ssim | 12 | 0.6 ± 0.1414 | 2 |" in md


def test_repeated_measurement_from_two_files_counts_once() -> None:
    from eval.tables import aggregate, tidy

    base = {"table": "fewshot", "dataset": "digits", "method": "naive", "scenario": "binary", "class": "0-4",
            "seed": 0, "images_seen": "-", "code_version": "x", "backend": "domain", "metric": "fid", "value": 1.5}
    rows = tidy([{**base, "config": "results/digits/pdae/seed0/model"},
                 {**base, "config": "results/digits/diffae/seed0/model"},
                 {**base, "seed": 1, "value": 2.5, "config": "results/digits/pdae/seed1/model"}])
    assert len(rows) == 2
    (agg,) = aggregate(rows)
    assert agg["n"] == 2 and agg["mean"] == 2.0


def test_interval_from_per_image_values_and_csv_without_them(tmp_path: Path) -> None:
    """ci_low / ci_high come from the records' per-image values (two-level bootstrap); CSVs never carry them."""
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for s in range(3):
        v = rng.normal(0.5, 0.1, size=400)
        rows.append(rec("recon", "ssim", float(v.mean()), seed=s, method="pdae", steps=100, sampler="ddim",
                        x_T="random", values=v.tolist(), units="images"))
    (agg,) = tables.aggregate(tables.tidy(rows))
    assert agg["n"] == 3 and agg["ci_low"] < agg["mean"] < agg["ci_high"]
    # Three seeds of the same distribution: the interval is about the closed form over 1200 images.
    assert agg["ci_high"] - agg["ci_low"] == pytest.approx(2 * 1.96 * 0.1 / math.sqrt(1200), rel=0.5)
    tables.write_tables(rows, tmp_path)
    text = (tmp_path / "recon_rows.csv").read_text()
    assert "values" not in text.splitlines()[0] and "units" not in text.splitlines()[0]
    assert "95% CI" in (tmp_path / "recon.md").read_text()


def test_interval_from_bootstrap_replicates() -> None:
    rows = [rec("uncond", "fid", 10.0 + s, seed=s, method="pdae", steps=10, values=[9.0 + s, 10.0 + s, 11.0 + s],
                units="bootstrap") for s in range(3)]
    (agg,) = tables.aggregate(tables.tidy(rows))
    assert 9.0 <= agg["ci_low"] < agg["mean"] == 11.0 < agg["ci_high"] <= 13.0
