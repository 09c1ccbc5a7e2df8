"""eval.paper / eval.tables / eval.tables_html: aggregation numbers, the paper column, renderings (byte-equal to the
hand-written version before pandas on fixed records), intervals, the paper's layouts of Tables 1-3 and the claims
page with verdict colours."""

from __future__ import annotations

import argparse
import csv
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from eval import claims, paper, tables, tables_html
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
    assert names == ["paper.csv", "recon.csv", "recon.html", "recon.md", "recon.tex", "recon_rows.csv"]
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


# ---------------------------------------------------------------------------------------------- same outputs as before

GOLDEN = Path(__file__).parent / "fixtures" / "tables"


def test_outputs_equal_the_hand_written_version_byte_for_byte(tmp_path: Path) -> None:
    """fixtures/tables/golden holds what eval/tables.py wrote at bd85277 (hand-written CSV parsing, statistics,
    Markdown and LaTeX, before pandas) from fixtures/tables/records.json: records of the `.test` DAG (digits,
    seeds 1 and 2 scaled copies of seed 0, one code version changed), a deduplicated few-shot naive baseline,
    efficiency rows with images_seen as a key and wall time averaged, and an FFHQ128 model with the paper's
    Table 1 numbers and notes. Every CSV, Markdown and LaTeX file must be the same bytes."""
    written = {p.name for p in tables.write_tables(tables.load_rows([GOLDEN / "records.json"]), tmp_path)}
    golden = sorted(p.name for p in (GOLDEN / "golden").iterdir())
    assert len(golden) == 21 and set(golden) <= written
    for name in golden:
        assert (tmp_path / name).read_bytes() == (GOLDEN / "golden" / name).read_bytes(), name
    # The tidy CSV is an input too: read back, it aggregates to the same table.
    again = tables.aggregate(tables.tidy(tables.load_rows([tmp_path / "recon_rows.csv"])))
    assert [r["mean"] for r in again] == [r["mean"] for r in tables.aggregate(
        [r for r in tables.tidy(tables.load_rows([GOLDEN / "records.json"])) if r["table"] == "recon"])]


def test_load_rows_rejects_csv_without_numeric_values(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("table,metric,value\nrecon,ssim,\n")
    with pytest.raises(ValueError, match="non-numeric value '-'"):
        tables.load_rows([tmp_path / "bad.csv"])
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="no 'value' column"):
        tables.load_rows([tmp_path / "other.csv"])
    (tmp_path / "ok.csv").write_text("table,metric,value,steps,note\nrecon,ssim,0.5,100,\n")
    assert tables.load_rows([tmp_path / "ok.csv"]) == [
        {"table": "recon", "metric": "ssim", "value": 0.5, "steps": 100, "note": "-"}]


# ---------------------------------------------------------------------------------------------- HTML

def _table1_rows() -> list[dict]:
    """PDAE, Diff-AE and DDIM on an FFHQ128 model (lmdb data), DDIM T = 10 and 100, two seeds, standard backend."""
    rows = []
    for method, x_T, ssim in (("pdae", "random", 0.70), ("pdae", "inferred", 0.99), ("diffae", "random", 0.68),
                              ("ddim", "inferred", 0.92)):
        for steps in (10, 100):
            for metric, v in (("ssim", ssim), ("lpips", 0.09), ("mse", 0.005)):
                rows += recon(method, x_T, metric, [v, v + 0.01], steps=steps, backend="standard")
    for r in rows:
        r["dataset"], r["config"] = "lmdb", f"results/ffhq128/{r['method']}/seed{r['seed']}/model"
    return rows


def test_table1_in_the_papers_layout_with_the_papers_number_beside_ours() -> None:
    agg = tables.aggregate([r for r in tables.tidy(_table1_rows())])
    long = pd.DataFrame(agg).assign(ours=[tables.format_mean_std(r["mean"], r["std"]) for r in agg])
    wide = tables_html.wide("recon", long)
    assert list(wide.index) == [("ffhq128", "PDAE", "random"), ("ffhq128", "PDAE", "inferred"),
                                ("ffhq128", "Diff-AE", "random"), ("ffhq128", "DDIM", "inferred")]  # the paper's order
    assert list(wide.columns[:6]) == [("T = 10", "SSIM", "ours"), ("T = 10", "SSIM", "paper"),
                                      ("T = 10", "LPIPS", "ours"), ("T = 10", "LPIPS", "paper"),
                                      ("T = 10", "MSE", "ours"), ("T = 10", "MSE", "paper")]
    pdae_random = wide.loc[("ffhq128", "PDAE", "random")]
    assert pdae_random[("T = 100", "SSIM", "ours")] == "0.705 ± 0.007071"
    assert pdae_random[("T = 100", "SSIM", "paper")] == "0.696"           # paper Table 1, PDAE, random x_T
    assert pdae_random[("T = 100", "MSE", "paper")] == "0.005"
    assert wide.loc[("ffhq128", "DDIM", "inferred"), ("T = 100", "LPIPS", "paper")] == "0.063"
    assert pdae_random[("T = 10", "SSIM", "paper")] == ""                 # the paper has T = 100 only
    page = tables_html.render_html("recon", agg)
    assert page.count("<table") == 2 and "T_recon_wide" in page and "T_recon_paper" not in page  # no reference table
    assert "Table 1 (paper §4.3)" in page and "<details>" in page and "code version" in page


def test_tables_2_and_3_without_paper_quantities_show_the_papers_table_for_reference() -> None:
    uncond = [rec("uncond", "fid", 10.0 + s + t / 100, seed=s, method=m, steps=t, backend="domain")
              for m in ("ddim", "pdae") for t in (5, 10) for s in range(2)]
    agg = tables.aggregate(tables.tidy(uncond))
    page = tables_html.render_html("uncond", agg)
    ours = tables_html.wide("uncond", pd.DataFrame(agg).assign(
        ours=[tables.format_mean_std(r["mean"], r["std"]) for r in agg]))
    assert list(ours.columns) == ["T = 5", "T = 10"] and list(ours.index) == [("digits", "PDAE"), ("digits", "DDIM")]
    assert ours.loc[("digits", "PDAE"), "T = 10"] == "10.6 ± 0.7071"
    assert "T_uncond_paper" in page and "20.16" in page and "7.31 *" in page  # FFHQ128 PDAE T=10; starred bedroom
    fewshot = [rec("fewshot", "fid", 1.0 + s, seed=s, method=m, scenario="binary", **{"class": c})
               for m in ("naive", "diffae", "pdae") for c in ("0-4", "5-9") for s in range(2)]
    agg = tables.aggregate(tables.tidy(fewshot))
    wide = tables_html.wide("fewshot", pd.DataFrame(agg).assign(ours="x"))
    assert list(wide.columns) == ["PDAE", "Diff-AE", "naive"] and len(wide) == 2
    assert "Non-Blond" in tables_html.render_html("fewshot", agg)  # the paper's Table 3 classes, for reference


def test_two_backends_become_a_row_key_of_the_wide_table() -> None:
    rows = [rec("uncond", "fid", v, seed=0, method="pdae", steps=10, backend=b) for v, b in ((1.0, "domain"), (2.0, "standard"))]
    agg = tables.aggregate(rows)
    wide = tables_html.wide("uncond", pd.DataFrame(agg).assign(ours=[str(r["mean"]) for r in agg]))
    assert list(wide.index) == [("digits", "PDAE", "domain"), ("digits", "PDAE", "standard")]
    assert list(wide["T = 10"]) == ["1.0", "2.0"]


def test_claims_page_colours_verdicts_and_puts_claims_before_sanity_rows() -> None:
    def claim(name: str, verdict: str, kind: str = "claim") -> dict:
        return {"kind": kind, "claim": name, "dataset": "digits", "setting": "T=10", "comparison": "-",
                "estimate": 0.1, "ci_low": 0.05, "ci_high": 0.2, "n_seeds": 3, "verdict": verdict, "reason": "r",
                "evidence": "e", "paper_says": "p", "source": "paper §4.8, Table 2"}

    rows = [claim("sanity first in the input", "passed", "sanity"), claim("a", "reproduced"),
            claim("b", "not reproduced"), claim("c", "inconclusive")]
    health = [{"dataset": "digits", "model": "pdae autoencoder", "seed": 0, "check": "z_used", "value": 0.1,
               "threshold": "> 0.05", "status": "unhealthy", "detail": "-"}]
    page, health_page = claims.render_html(rows, health)
    body = page[page.index("<tbody>"):]
    assert body.index(">a<") < body.index(">b<") < body.index(">c<") < body.index("sanity first in the input")
    verdict_colours = {row: colour for (row, col), colour in _cell_colours(page, "claims").items() if col == 3}
    assert verdict_colours == {0: "#c8e6c9", 1: "#ffcdd2", 2: "#ffe0a3", 3: "#c8e6c9"}  # green, red, amber, green
    assert "[0.05, 0.2]" in page and "Reasons and evidence" in page
    assert _cell_colours(health_page, "health") == {(0, 6): "#ffcdd2"}  # the status column, unhealthy: red


def _cell_colours(page: str, table: str) -> dict[tuple[int, int], str]:
    """(row, column) -> background colour, from the CSS that pandas' Styler writes (cells sharing a style share a rule)."""
    out = {}
    for selectors, colour in re.findall(r"([^{}]+)\{\s*background-color: (#\w+);\s*\}", page):
        for row, col in re.findall(rf"#T_{table}_row(\d+)_col(\d+)", selectors):
            out[(int(row), int(col))] = colour
    return out


def test_golden_records_with_protocol_fields_name_the_protocol_and_keep_the_numbers(tmp_path: Path) -> None:
    """The golden records carrying the protocol fields that reconstruct / uncond / fewshot now write (issue 13):
    the same rows and numbers as the golden CSVs (protocol columns are added, nothing is split or merged), and
    Tables 1-3 name their protocol under the Markdown, LaTeX and HTML tables (a shared value) or in a column."""
    from eval.reconstruct import step_rule

    protocol = {
        # The FFHQ128 model's rows: the paper's Table 1 setting (all CelebA-HQ images), so its numbers still match.
        "recon": lambda r: {**({"eval_data": "digits8", "split": "test"} if r["dataset"] == "digits" else
                               {"eval_data": "celebahq128", "split": "all"}), "n_images": 64, "step_rule": step_rule(r)},
        "uncond": lambda r: {"eval_data": "digits8", "ref_images": 20, "ref_split": "train",
                             "ref_selection": "random (seed 0)", "clip_latent": True if r["method"] in ("pdae", "diffae") else "-",
                             "step_rule": "latent T -> decode T" if r["method"] in ("pdae", "diffae") else "-"},
        "fewshot": lambda r: {"attribute": "Male", "eval_data": "digits8", "split": "train", "ref_images": 30},
    }
    rows = [{**r, **protocol[r["table"]](r)} if r["table"] in protocol else r
            for r in tables.load_rows([GOLDEN / "records.json"])]
    tables.write_tables(rows, tmp_path)
    for table in protocol:
        old = pd.read_csv(GOLDEN / "golden" / f"{table}.csv", keep_default_na=False)
        new = pd.read_csv(tmp_path / f"{table}.csv", keep_default_na=False)
        assert set(new.columns) - set(old.columns) <= set(tables.PROTOCOL_COLUMNS) | {"attribute"}, table
        pd.testing.assert_frame_equal(new[list(old.columns)], old, check_dtype=False)
        md, tex = (tmp_path / f"{table}.md").read_text(), (tmp_path / f"{table}.tex").read_text()
        html = (tmp_path / f"{table}.html").read_text()
        assert "protocol: " in md and "protocol: " in tex and "protocol: " in html and "backend(s): " in md, table
        if table != "recon":
            assert "protocol: eval_data = digits8" in md and "protocol: eval\\_data = digits8" in tex, table
    recon_md = (tmp_path / "recon.md").read_text()
    assert "protocol: n_images = 64; backend(s): " in recon_md  # data, split and step rule differ between rows
    assert {"eval_data", "split", "step_rule"} <= {c.strip() for c in recon_md.splitlines()[2].split("|")}
    assert "| celebahq128 | all |" in recon_md and "| digits8 | test |" in recon_md
    assert "ref_selection = random (seed 0); step_rule = latent T -> decode T; clip_latent = True;" in (
        tmp_path / "uncond.md").read_text()
    assert "attribute = Male" not in (tmp_path / "fewshot.md").read_text()  # a key: shown as a column
    assert "attribute" in (tmp_path / "fewshot.md").read_text().splitlines()[2]
