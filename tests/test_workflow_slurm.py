"""The `.test` workflow through the real one-node SLURM cluster (`--executor slurm`, profiles/slurm)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import REPO, copy_test_config, run_snakemake
from tests.slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401 - fixture

# A sub-DAG with every kind of job (DPM, feature net, PDAE and Diff-AE training, evaluations on them):
TARGETS = [
    "results/digits/pdae/seed0/eval/recon.json",
    "results/digits/ddim/seed0/eval/recon.json",
    "results/digits/gap/seed0.json",
]
MODELS = ["results/digits/dpm/model", "results/digits/feature_net/model", "results/digits/pdae/seed0/model",
          "results/digits/diffae/seed0/model"]


def _values(path: Path) -> list[tuple]:
    rows = json.loads(path.read_text())["rows"]
    return [(r["method"], r.get("metric"), r.get("x_T", "-"), r.get("steps", "-"), r.get("t", "-"), r["value"])
            for r in rows]


@pytest.mark.slurm
def test_dag_runs_as_slurm_jobs_and_matches_the_local_run(
    slurm_cluster: SlurmCluster, local_dag_run: Path, tmp_path: Path  # noqa: F811
) -> None:
    work = copy_test_config(tmp_path / "dag_slurm")
    common = ["--snakefile", str(REPO / "Snakefile"), "--directory", str(work)]
    dry = run_snakemake(*common, "-n", *TARGETS)
    # The dry run prints its job-stats table (rule, count) more than once: read it as a mapping.
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", dry.stdout, flags=re.M))
    counts.pop("total", None)
    expected = sorted(rule for rule, n in counts.items() for _ in range(int(n)))
    assert expected, dry.stdout[-2000:]

    status = "sacct" if slurm_cluster.accounting else "squeue"
    proc = run_snakemake(
        *common, "--workflow-profile", "none", "--profile", str(REPO / "profiles" / "slurm"), "--jobs", "4",
        "--slurm-init-seconds-before-status-checks", "1", "--latency-wait", "5", "--slurm-status-command", status,
        *TARGETS, timeout=1200,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]

    # Every rule of the sub-DAG ran as its own SLURM job (the plugin names jobs after the run id and puts
    # `rule_<name>` in the comment), and every job completed.
    run_id = re.search(r"SLURM run ID: (\S+)", out).group(1)
    jobs = slurm_cluster.sacct(name=run_id) if slurm_cluster.accounting else {}
    if slurm_cluster.accounting:
        assert all(j["State"] == "COMPLETED" for j in jobs.values()), jobs
        ran = sorted(re.match(r"rule_(.+?)(_wildcards_|$)", j["Comment"]).group(1) for j in jobs.values())
        assert ran == expected

    # Outputs equal the local run's: model weights byte for byte, evaluation records value for value.
    for model in MODELS:
        assert (work / model / "model.safetensors").read_bytes() == (
            local_dag_run / model / "model.safetensors").read_bytes(), model
    for target in TARGETS:
        assert _values(work / target) == _values(local_dag_run / target), target
