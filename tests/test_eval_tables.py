"""eval.paper / eval.tables: aggregation numbers, the paper column, renderings and every claim verdict."""

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


def test_cli_tables_and_claims(tmp_path: Path) -> None:
    records = write_records(tmp_path / "r.json", recon("pdae", "inferred", "ssim", [0.995, 0.993]))
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    tables.register_cli(sub)
    for command in ("tables", "claims"):
        args = parser.parse_args([command, "--records", str(records), "--out-dir", str(tmp_path / "t")])
        assert args.func(args) == 0
    claims_md = (tmp_path / "t" / "claims.md").read_text()
    assert "| PDAE inferred-x_T reconstruction near exact (SSIM >= 0.99) | digits | reproduced |" in claims_md
    with pytest.raises(ValueError, match="not found"):
        tables.load_rows([tmp_path / "missing.json"])


# ---------------------------------------------------------------------------------------------- claims

def verdicts(rows: list[dict], name: str) -> list[str]:
    return [c["verdict"] for c in tables.claims(rows) if c["claim"].startswith(name)]


def gap_rows(pdae: dict[int, list[float]], dpm: dict[int, list[float]]) -> list[dict]:
    out = []
    for method, curve in (("pdae", pdae), ("dpm", dpm)):
        for t, values in curve.items():
            out += [rec("gap", "gap", v, s, method=method, t=t, noise="gaussian") for s, v in enumerate(values)]
    return out


def test_claim_gap_branches_and_reduction() -> None:
    dpm = {10: [1.0, 1.0], 450: [2.0, 2.0], 600: [4.0, 4.0], 900: [8.0, 8.0]}
    pdae = {10: [0.9, 0.9], 450: [1.0, 1.2], 600: [2.0, 2.4], 900: [7.0, 7.0]}
    claims = [c for c in tables.claims(gap_rows(pdae, dpm)) if c["claim"].startswith("gap")]
    assert [c["verdict"] for c in claims] == ["reproduced", "reproduced"]
    # per seed: mean(1 - 1/2, 1 - 2/4) = 50 %, mean(1 - 1.2/2, 1 - 2.4/4) = 40 % -> 45 ± 7.071 %
    assert "45 ± 7.071 % (n=2 seeds)" in claims[0]["evidence"] and "at 4/4 t" in claims[0]["evidence"]
    # PDAE above DPM at t = 10 only: the every-t claim fails, the t >= 50 one holds.
    worse_small_t = {**pdae, 10: [1.1, 1.1]}
    assert verdicts(gap_rows(worse_small_t, dpm), "gap") == ["not reproduced", "reproduced"]
    # Reduction below 30 %.
    small = {t: [0.9 * v for v in vals] for t, vals in dpm.items()}
    assert verdicts(gap_rows(small, dpm), "gap") == ["reproduced", "not reproduced"]
    assert verdicts([], "gap") == ["not measurable here", "not measurable here"]


def test_gap_reduction_pairs_on_the_evaluation_seed() -> None:
    # As the workflow writes them: the DPM (trained once, seed 0) is measured in every seed's gap job, on that
    # job's noise; its rows carry seed 0 and the job's eval_seed. Reductions pair PDAE seed s with the DPM
    # measured on eval seed s: mean(1 - 1/2, 1 - 2/4) = 50 %, mean(1 - 1.5/2.5, 1 - 2/5) = 50 %.
    dpm = {450: [2.0, 2.5], 600: [4.0, 5.0]}
    pdae = {450: [1.0, 1.5], 600: [2.0, 2.0]}
    rows = gap_rows(pdae, dpm)
    for r in rows:
        r["eval_seed"] = r["seed"]
        if r["method"] == "dpm":
            r["seed"] = 0
    evidence = next(c for c in tables.claims(rows) if c["claim"].startswith("gap"))["evidence"]
    assert "50 ± 0 % (n=2 seeds)" in evidence, evidence
    # eval_seed is not a group key: the DPM's two measurements aggregate into one row (n = 2).
    dpm_agg = [r for r in tables.aggregate(rows) if r["method"] == "dpm"]
    assert [r["n"] for r in dpm_agg] == [2, 2]


def test_scaled_t_range() -> None:
    assert tables.scaled_t_range(1000) == (400, 700)
    assert tables.scaled_t_range(200) == (80, 140)


def test_claim_recon_near_exact() -> None:
    name = "PDAE inferred-x_T reconstruction near exact"
    assert verdicts(recon("pdae", "inferred", "ssim", [0.991, 0.993]), name) == ["reproduced"]
    assert verdicts(recon("pdae", "inferred", "ssim", [0.95, 0.99]), name) == ["not reproduced"]
    assert verdicts(recon("pdae", "random", "ssim", [0.99]), name) == ["not measurable here"]
    # T = 100 preferred; else the largest T measured, said in the detail.
    rows = recon("pdae", "inferred", "ssim", [0.999], steps=20) + recon("pdae", "inferred", "ssim", [0.9], steps=50)
    claim = next(c for c in tables.claims(rows) if c["claim"].startswith(name))
    assert claim["verdict"] == "not reproduced" and "T=50 (T=100 not measured)" in claim["detail"]


def test_claim_recon_random_beats_ddim_and_on_par() -> None:
    beats, on_par = "PDAE random-x_T reconstruction beats DDIM", "PDAE random-x_T reconstruction on par"
    rows = (recon("pdae", "random", "ssim", [0.60, 0.62]) + recon("pdae", "random", "mse", [0.010, 0.012])
            + recon("ddim", "random", "ssim", [0.30, 0.32]) + recon("ddim", "random", "mse", [0.05, 0.05])
            + recon("diffae", "random", "ssim", [0.63, 0.63]) + recon("diffae", "random", "mse", [0.0105, 0.0105]))
    assert verdicts(rows, beats) == ["reproduced"]
    # ssim: 0.61 vs 0.63 is within 5 % of 0.63; mse: 0.011 vs 0.0105 within 5 % (0.000525) -> on par.
    assert verdicts(rows, on_par) == ["reproduced"]
    worse = [dict(r, value=r["value"] * 0.8) if r["method"] == "pdae" and r["metric"] == "ssim" else r for r in rows]
    assert verdicts(worse, on_par) == ["not reproduced"]
    assert verdicts(recon("pdae", "random", "ssim", [0.6]), beats) == ["not measurable here"]
    swapped = [dict(r, method={"pdae": "ddim", "ddim": "pdae"}.get(r["method"], r["method"])) for r in rows]
    assert verdicts(swapped, beats) == ["not reproduced"]


def test_on_par_uses_pooled_std() -> None:
    a, b = tables.Stat(0.5, 0.1, 3), tables.Stat(0.6, 0.1, 3)   # 0.1 apart, pooled std 0.1 -> on par
    assert tables.on_par_or_better("ssim", a, b)
    assert not tables.on_par_or_better("ssim", tables.Stat(0.5, None, 1), tables.Stat(0.6, None, 1))
    assert tables.on_par_or_better("mse", tables.Stat(0.01, None, 1), tables.Stat(0.02, None, 1))


def ratio_rows(values: list[float], reached: str = "yes") -> list[dict]:
    return [rec("efficiency", "images_ratio", v, s, images_seen="-", quality_metric="ssim", reached=reached)
            for s, v in enumerate(values)]


def test_claim_images_ratio() -> None:
    name = "PDAE needs <="
    assert verdicts(ratio_rows([0.4, 0.5]), name) == ["reproduced"]
    claim = next(c for c in tables.claims(ratio_rows([1.5, 2.5])) if c["claim"].startswith(name))
    assert claim["verdict"] == "not reproduced" and "ratio 2 ± 0.7071 (n=2)" in claim["evidence"]
    unreached = next(c for c in tables.claims(ratio_rows([0.3], "no")) if c["claim"].startswith(name))
    assert unreached["verdict"] == "not reproduced" and "> 0.3" in unreached["evidence"]
    assert verdicts([], name) == ["not measurable here"]


def fewshot(method: str, scenario: str, klass: str, values: list[float], dataset: str = "digits") -> list[dict]:
    return [rec("fewshot", "fid", v, s, method=method, scenario=scenario, **{"class": klass, "dataset": dataset})
            for s, v in enumerate(values)]


def test_claim_fewshot() -> None:
    name = "few-shot FID of PDAE below naive"
    rows = fewshot("pdae", "binary", "3", [10, 12]) + fewshot("naive", "binary", "3", [20, 20])
    assert verdicts(rows, name) == ["reproduced"]
    assert verdicts(rows + fewshot("pdae", "pu", "3", [30]) + fewshot("naive", "pu", "3", [20]), name) == ["not reproduced"]
    # Non-Blond: the paper's own naive FID (1.12) is below PDAE's: excluded from the verdict, listed.
    celeba = (fewshot("pdae", "binary", "Male", [11], "celeba64") + fewshot("naive", "binary", "Male", [25], "celeba64")
              + fewshot("pdae", "binary", "Non-Blond", [8], "celeba64")
              + fewshot("naive", "binary", "Non-Blond", [1], "celeba64"))
    claim = next(c for c in tables.claims(celeba) if c["claim"] == name)
    assert claim["verdict"] == "reproduced" and "Non-Blond" in claim["detail"]
    assert verdicts(fewshot("pdae", "binary", "3", [1]), name) == ["not measurable here"]


def test_claim_uncond() -> None:
    name = "unconditional FID of PDAE <= DDIM"
    rows = [rec("uncond", "fid", v, 0, method=m, steps=t) for m, t, v in
            [("pdae", 10, 20), ("ddim", 10, 30), ("pdae", 20, 15), ("ddim", 20, 15)]]
    assert verdicts(rows, name) == ["reproduced"]
    rows.append(rec("uncond", "fid", 9, 0, method="ddim", steps=50))
    rows.append(rec("uncond", "fid", 10, 0, method="pdae", steps=50))
    assert verdicts(rows, name) == ["not reproduced"]
    assert verdicts([], name) == ["not measurable here"]


def test_claim_weighting() -> None:
    name = "loss weighting beats"

    def ab(weighting: str, ssim: float, mse: float, cv: float) -> list[dict]:
        return [rec("ablation", m, v, 0, weighting=weighting) for m, v in (("ssim", ssim), ("mse", mse), ("loss_cv", cv))]

    assert verdicts(ab("snr", 0.8, 0.01, 0.5) + ab("uniform", 0.7, 0.02, 0.1), name) == ["reproduced"]
    assert verdicts(ab("snr", 0.8, 0.03, 0.1) + ab("uniform", 0.7, 0.02, 0.5), name) == ["not reproduced"]
    assert verdicts(ab("snr", 0.8, 0.01, 0.5), name) == ["not measurable here"]


def test_recon_claims_prefer_encode_steps_equal_to_decode_steps() -> None:
    name = "PDAE inferred-x_T reconstruction near exact"
    rows = (recon("pdae", "inferred", "ssim", [0.95], encode_steps=10)
            + recon("pdae", "inferred", "ssim", [0.995], encode_steps=100))
    claim = next(c for c in tables.claims(rows) if c["claim"].startswith(name))
    assert claim["verdict"] == "reproduced" and "encoded with 100 steps" in claim["detail"]


def test_images_ratio_bounds_are_named() -> None:
    claim = next(c for c in tables.claims(ratio_rows([0.25], "first")) if c["claim"].startswith("PDAE needs"))
    assert claim["verdict"] == "reproduced" and "ratio <= 0.25 (n=1) (reached by PDAE's first snapshot" in claim["evidence"]


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
