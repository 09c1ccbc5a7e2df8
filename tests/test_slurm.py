"""A real one-node SLURM cluster runs batch jobs, and a preempted training job resumes instead of restarting.

The cluster comes from `tests/slurm_cluster.py` (started by `.ci/slurm-up.sh` in CI). The training job is
interrupted twice, the two ways a cluster interrupts work: SLURM requeues it (what preemption with
`--requeue` does: same job id, `Restarts=1`), then it is cancelled with `scancel` and submitted again as a
new job (what snakemake `--retries` does). Each run continues from `<out>.resume/state.pt`; the final
model must be byte-identical to an uninterrupted local run with the same seed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.slurm_cluster import SlurmCluster, SlurmError, slurm_cluster  # noqa: F401 (fixture)
from tests.test_training import tiny_config, write_config

pytestmark = pytest.mark.slurm

IMAGES, BATCH = 960, 16  # 60 steps: ~10 s of training on one core


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def _images_in(state: Path) -> int:
    """images_seen of a resume state (0 while none is written; the file is replaced atomically)."""
    return int(torch.load(state, weights_only=True)["images_seen"]) if state.exists() else 0


def _safetensors_parts(path: Path) -> tuple[dict, bytes]:
    """(header, tensor bytes) of a .safetensors file. The header is compared as JSON: safetensors writes its
    `__metadata__` map in a per-process hash order, so whole-file bytes differ between processes."""
    blob = path.read_bytes()
    size = struct.unpack("<Q", blob[:8])[0]
    return json.loads(blob[8 : 8 + size]), blob[8 + size :]


def _train_command(config: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "pdae", "train", "dpm", "--config", str(config), "--out", str(out),
            "--seed", "7", "--no-progress"]


def test_batch_jobs_run_and_report_their_exit_status(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    ok = slurm_cluster.sbatch("-o", "ok.out", "--wrap",
                              "echo job=$SLURM_JOB_ID partition=$SLURM_JOB_PARTITION cpus=$SLURM_CPUS_ON_NODE",
                              cwd=tmp_path, wait=True)
    assert (tmp_path / "ok.out").read_text().split() == [f"job={ok}", "partition=debug", "cpus=1"]
    assert slurm_cluster.job(ok)["JobState"] == "COMPLETED"
    with pytest.raises(SlurmError, match=r"job \d+ ended FAILED \(exit 3:0\)") as failure:
        slurm_cluster.sbatch("-o", "bad.out", "--wrap", "exit 3", cwd=tmp_path, wait=True)
    bad = int(re.search(r"job (\d+)", str(failure.value)).group(1))
    info = slurm_cluster.job(bad)
    assert (info["JobState"], info["ExitCode"]) == ("FAILED", "3:0")
    if slurm_cluster.accounting:
        rows = slurm_cluster.sacct([ok, bad])
        assert {j: (r["State"], r["ExitCode"]) for j, r in rows.items()} == {ok: ("COMPLETED", "0:0"),
                                                                             bad: ("FAILED", "3:0")}


def test_preempted_then_cancelled_training_job_resumes_to_identical_weights(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "dpm.yaml", tiny_config(images=IMAGES, batch_size=BATCH, resume_every_images=32,
                                                             log_every_images=64))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # The uninterrupted reference trains locally while the cluster works.
    reference = subprocess.Popen(_train_command(config, tmp_path / "ref"), env=env, stdout=subprocess.DEVNULL)

    out, state = tmp_path / "job", tmp_path / "job.resume" / "state.pt"
    script = tmp_path / "train.sh"
    script.write_text(f"#!/bin/bash\nexport OMP_NUM_THREADS=1\nexec {shlex.join(_train_command(config, out))}\n")
    submit = ("--requeue", "--open-mode=append", "--cpus-per-task=1", "--job-name=pdae-train", "-o", "train.out",
              str(script))
    job = slurm_cluster.sbatch(*submit, cwd=tmp_path)

    # 1. Preemption: SLURM requeues the running job once it has written a resume state.
    _wait_until(state.exists, "the first resume state")
    slurm_cluster.scontrol("requeue", str(job))
    slurm_cluster.wait_state(job, {"PENDING"})  # its processes are gone
    first_stop = _images_in(state)
    assert 0 < first_stop < IMAGES // 2 and not out.exists()
    slurm_cluster.scontrol("update", f"JobId={job}", "StartTime=now")  # a requeued job otherwise waits ~2 min

    # 2. The same job, restarted, is cancelled past half of its budget and submitted again as a new job.
    _wait_until(lambda: _images_in(state) >= IMAGES // 2, "the requeued job to pass half of the budget")
    subprocess.run(["scancel", str(job)], check=True)
    info = slurm_cluster.wait_state(job, {"CANCELLED"})  # COMPLETING until its processes are gone
    assert info["Restarts"] == "1"
    second_stop = _images_in(state)
    assert first_stop < second_stop < IMAGES and not out.exists()
    rerun = slurm_cluster.sbatch(*submit, cwd=tmp_path, wait=True)
    assert slurm_cluster.job(rerun)["JobState"] == "COMPLETED"

    # The last job started from the state the cancelled one left, and ran only the remaining steps.
    meta = json.loads((out / "metadata.json").read_text())
    total_steps = IMAGES // BATCH
    assert (meta["images_seen"], meta["steps"], meta["resumed_from_images"]) == (IMAGES, total_steps, second_stop)
    steps_run_by_last_job = meta["steps"] - meta["resumed_from_images"] // BATCH
    assert 0 < steps_run_by_last_job <= total_steps // 2 < total_steps
    log = (tmp_path / "train.out").read_text()
    assert log.count("DUE TO JOB REQUEUE") == 1 and log.count(f"JOB {job} ON localhost CANCELLED AT") == 2
    assert log.count(f"wrote {out} ({IMAGES} images, {total_steps} steps") == 1
    assert not state.parent.exists()

    # Identical to the uninterrupted run: every tensor byte and the header, and the same loss curve.
    assert reference.wait(timeout=300) == 0
    ref = tmp_path / "ref"
    assert _safetensors_parts(out / "model.safetensors") == _safetensors_parts(ref / "model.safetensors")
    assert (out / "train_log.jsonl").read_text().count("\n") == IMAGES // 64
    curve = [(r["images_seen"], r["loss"]) for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())]
    ref_curve = [(r["images_seen"], r["loss"]) for r in map(json.loads, (ref / "train_log.jsonl").read_text().splitlines())]
    assert curve == ref_curve
    if slurm_cluster.accounting:
        rows = slurm_cluster.sacct([job, rerun])
        assert [rows[j]["State"] for j in (job, rerun)] == ["CANCELLED by 0", "COMPLETED"]
