"""The Snakemake workflow: lint, configs, the whole `.test` DAG end to end, rerun behaviour, the HTML report."""

from __future__ import annotations

import base64
import csv
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_snakemake

REPO = Path(__file__).resolve().parents[1]
PAPER = sorted(p for p in (REPO / "config" / "paper").glob("*.yaml") if not p.stem.endswith("_published"))


def snakemake(*args: str, cwd: Path = REPO, timeout: int = 600) -> subprocess.CompletedProcess:
    return run_snakemake(*args, cwd=cwd, timeout=timeout)


def test_lint_reports_nothing() -> None:
    proc = snakemake("--lint")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Lints for" not in out, out[-3000:]


@pytest.mark.parametrize("config", PAPER, ids=[p.stem for p in PAPER])
def test_paper_config_dry_run_with_placeholder_data(config: Path, tmp_path: Path) -> None:
    cfg = yaml.safe_load(config.read_text())
    (slug,) = cfg["datasets"]
    missing = snakemake("-n", "--configfile", str(config))
    assert missing.returncode != 0
    assert f"dataset_settings.{slug}.data_path: dataset {cfg['dataset_settings'][slug]['data_path']} not found" in (
        missing.stdout + missing.stderr)

    placeholder = tmp_path / f"{slug}.lmdb"
    placeholder.mkdir()
    cfg["dataset_settings"][slug]["data_path"] = str(placeholder)
    recon_data = cfg["dataset_settings"][slug].get("recon_data")
    if recon_data:  # Table 1 on another dataset (ffhq128: all CelebA-HQ): its spec, pointed at a placeholder
        spec = yaml.safe_load((REPO / recon_data["spec"]).read_text())
        (tmp_path / "recon.lmdb").mkdir()
        spec["data"]["path"] = str(tmp_path / "recon.lmdb")
        (tmp_path / "recon.yaml").write_text(yaml.safe_dump(spec))
        recon_data["spec"] = str(tmp_path / "recon.yaml")
    patched = tmp_path / "config.yaml"
    patched.write_text(yaml.safe_dump(cfg))
    proc = snakemake("-n", "-p", "--configfile", str(patched))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert re.search(r"train_dpm\s+1", proc.stdout) and "make_claims" in proc.stdout
    # The paper's protocol: pytorch-fid, a random 50k reference (seed 0), PDAE's latent clamp, ddim1000 encoding.
    commands = proc.stdout
    assert "--fid-backend pytorch-fid" in commands and "--selection random --selection-seed 0" in commands
    assert "--clip-latent on" in commands and "--encode-steps same 1000" in commands
    if recon_data:
        assert f"--data {recon_data['spec']} --split all" in commands
    attrs = cfg["dataset_settings"][slug]["fewshot"].get("attributes")
    if attrs and "fewshot" in cfg["dataset_settings"][slug]["evaluations"]:  # celeba64: D2C's Male and Blond_Hair
        assert re.search(rf"evaluate_fewshot_attribute\s+{4 * len(attrs)}\b", commands)


def test_wrong_config_fails_before_any_job_naming_the_key(tmp_path: Path) -> None:
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["eval"]["recon"]["num_imagez"] = 3
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    proc = snakemake("-n", "--configfile", str(bad))
    assert proc.returncode != 0 and "num_imagez" in proc.stderr + proc.stdout

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["seeds"] = ["zero"]
    bad.write_text(yaml.safe_dump(cfg))
    proc = snakemake("-n", "--configfile", str(bad))
    assert proc.returncode != 0 and "'zero' is not of type 'integer'" in proc.stderr + proc.stdout


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def test_run(local_dag_run: Path) -> Path:
    return local_dag_run


def test_whole_dag_writes_every_table_and_figure(test_run: Path) -> None:
    tables = test_run / "results" / "tables"
    for name in ("recon", "gap", "uncond", "fewshot", "truncation", "manipulation", "interpolation", "probe",
                 "efficiency", "ablation", "claims", "health"):
        for ext in ("csv", "md"):
            f = tables / f"{name}.{ext}"
            assert f.is_file() and f.stat().st_size > 0, f
    # The .test config has one seed: every claim of the paper is measured, with an interval, and inconclusive
    # because a verdict needs >= 3 seeds; the sanity rows are judged.
    with open(tables / "claims.csv", newline="") as fh:
        claims = list(csv.DictReader(fh))
    measured = {c["claim"] for c in claims if c["kind"] == "claim" and c["ci_low"] not in ("", "-")}
    assert {"posterior-mean gap filled", "random-x_T reconstruction on par with Diff-AE",
            "inferred-x_T reconstruction better than DDIM", "unconditional FID: PDAE below DDIM",
            "few-shot FID: PDAE below Diff-AE", "loss weighting beats lambda_t = 1"} <= measured, measured
    for c in claims:
        if c["kind"] == "claim":
            assert c["verdict"] == "inconclusive" and ("1 seed(s) < 3" in c["reason"] or c["ci_low"] in ("", "-")), c
        else:
            assert c["verdict"] in ("passed", "failed"), c
    with open(tables / "health.csv", newline="") as fh:
        checks = {(h["check"], h["status"]) for h in csv.DictReader(fh)}
    assert {c for c, _ in checks} >= {"latent", "samples", "z_used", "converged"}, checks
    plots = sorted(p.name for p in (test_run / "results" / "plots").glob("*.png"))
    assert len(plots) == 11, plots
    for p in (test_run / "results" / "plots").glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 2000
    recon = (tables / "recon_rows.csv").read_text()
    assert "code_version" in recon and "domain" in recon and "images_seen" in recon


def test_rerun_does_nothing_and_deleting_a_model_reruns_only_dependents(test_run: Path) -> None:
    again = snakemake("--snakefile", str(REPO / "Snakefile"), "--directory", str(test_run), "-n")
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout[-2000:]

    shutil.rmtree(test_run / "results" / "digits" / "diffae" / "seed0" / "latent")
    dry = snakemake("--snakefile", str(REPO / "Snakefile"), "--directory", str(test_run), "-n")
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", dry.stdout + dry.stderr, flags=re.M))
    assert jobs.get("train_latent") == "1"
    for untouched in ("train_dpm", "train_autoencoder", "train_feature_net", "evaluate_reconstruction", "evaluate_gap"):
        assert untouched not in jobs, (untouched, jobs)
    assert "evaluate_unconditional" in jobs and "evaluate_fewshot" in jobs and "make_tables" in jobs
    rerun = snakemake("--snakefile", str(REPO / "Snakefile"), "--directory", str(test_run), "--cores", "2")
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-3000:]
    assert (test_run / "results" / "digits" / "diffae" / "seed0" / "latent" / "model.safetensors").is_file()


@pytest.mark.skipif(_chromium() is None and not os.environ.get("CI"), reason="chromium not installed (CI installs it)")
def test_report_renders_in_headless_chromium(test_run: Path, tmp_path: Path) -> None:
    report = test_run / "results" / "report.html"
    proc = snakemake("--snakefile", str(REPO / "Snakefile"), "--directory", str(test_run), "--report", str(report))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    html = report.read_text(errors="replace")
    assert not re.search(r"<script[^>]+src=[\"']https?://", html), "report must be self-contained"
    chromium = _chromium()
    assert chromium, "chromium is required (apt-get install chromium)"
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900", "--virtual-time-budget=15000"]
    shot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={shot}", f"file://{report}"], capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 20_000, "the report did not render"
    dom = subprocess.run([*flags, "--dump-dom", f"file://{report}"], capture_output=True, text=True, timeout=120).stdout
    for needle in ("claims.csv", "recon.csv", "gap_digits.png", "efficiency_digits.png", "Tables", "Figures"):
        assert needle in dom, needle
    # The landing page, as Chromium rendered it (script text excluded): words, then the claims and Tables 1 and 2.
    page = _RenderedTables.parse(dom)
    text = " ".join(page.text)
    assert "trained" in text and "on the digits dataset" in text and "with 1 seed (0)" in text, text[:2000]
    assert "[" + "'digits'" + "]" not in text and "domain backend" in text
    claims = page.tables["T_claims"]
    assert claims[0][:4] == ["claim", "dataset", "setting", "verdict"]
    assert {"posterior-mean gap filled", "unconditional FID: PDAE below DDIM"} <= {row[0] for row in claims[1:]}
    assert {row[3] for row in claims[1:] if "(sanity)" not in row[0]} == {"inconclusive"}  # one seed
    table1 = page.tables["T_recon_wide"]
    assert {"SSIM", "MSE", "T = 5", "PDAE", "Diff-AE", "DDIM", "random", "inferred"} <= {c for row in table1 for c in row}
    numbers = [c for row in table1 for c in row if re.fullmatch(r"-?[0-9.]+(e-?[0-9]+)?( ± [0-9.e-]+)?", c)]
    assert len(numbers) >= 3 * 2 * 3, table1  # SSIM, feature distance, MSE of every method and x_T at T = 5 and 10
    assert "0.696" in {c for row in page.tables["T_recon_paper"] for c in row}  # the paper's PDAE, random x_T SSIM
    table2 = page.tables["T_uncond_wide"]
    assert {"T = 5", "T = 10", "PDAE", "Diff-AE", "DDIM"} <= {c for row in table2 for c in row}
    assert "20.16" in {c for row in page.tables["T_uncond_paper"] for c in row}  # FFHQ128 PDAE, T = 10
    # Every table is an HTML item of the report too; the claims item renders as a table of text on its own.
    items = {m.group(1): m.group(2) for m in re.finditer(r'"(results/tables/[a-z_]+\.html)": \{.*?"data_uri": '
                                                         r'"data:text/html;charset=utf8;filename=[^;]+;base64,([^"]+)"', html)}
    tables = {"recon", "gap", "uncond", "fewshot", "truncation", "manipulation", "interpolation", "probe",
              "efficiency", "ablation", "claims", "health"}
    assert set(items) == {f"results/tables/{t}.html" for t in tables}, sorted(items)
    claims_item = tmp_path / "claims.html"
    claims_item.write_bytes(base64.b64decode(items["results/tables/claims.html"]))
    item_dom = subprocess.run([*flags, "--dump-dom", f"file://{claims_item}"], capture_output=True, text=True,
                              timeout=120).stdout
    assert _RenderedTables.parse(item_dom).tables["T_claims"] == claims


class _RenderedTables(HTMLParser):
    """The visible text of a DOM dump and the cell texts of every <table id=...>, row by row (scripts skipped)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.text: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._skip = False

    @classmethod
    def parse(cls, dom: str) -> "_RenderedTables":
        parser = cls()
        parser.feed(dom)
        return parser

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("script", "style"):
            self._skip = True
        elif tag == "table":
            self._table = dict(attrs).get("id") or f"table{len(self.tables)}"
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = False
        elif tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.text.append(" ".join(data.split()))
            if self._cell is not None:
                self._cell.append(data)
