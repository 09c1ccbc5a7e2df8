"""A real one-node SLURM cluster runs batch jobs, and a preempted training job resumes instead of restarting.

The cluster comes from `tests/slurm_cluster.py` (started by `.ci/slurm-up.sh` in CI). The training job is
interrupted twice, the two ways a cluster interrupts work: SLURM requeues it (what preemption with
`--requeue` does: same job id, `Restarts=1`), then it is cancelled with `scancel` and submitted again as a
new job (what snakemake `--retries` does). Each run continues from `<out>.resume/state.pt`; the final
weights must be byte-identical to an uninterrupted local run with the same seed.
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
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from tests.slurm_cluster import FINAL_STATES, SlurmCluster, SlurmError, slurm_cluster  # noqa: F401 (fixture)
from tests.test_training import tiny_config, write_config

pytestmark = pytest.mark.slurm

IMAGES, BATCH = 960, 16  # 60 steps: ~10 s of training on one core


def _wait_until(condition: Callable[[], bool], what: str, cluster: SlurmCluster, job: int, log: Path,
                timeout: float = 120) -> None:
    """Poll `condition` while `job` runs; fail with the job's log if it ends or time runs out first."""
    deadline, next_check = time.monotonic() + timeout, 0.0
    while not condition():
        now = time.monotonic()
        if now > next_check:
            state = cluster.job(job)["JobState"]
            if state in FINAL_STATES:
                tail = log.read_text()[-2000:] if log.exists() else "(no log)"
                raise AssertionError(f"job {job} ended {state} while waiting for {what}:\n{tail}")
            next_check = now + 1.0
        if now > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def jobs_to_cancel() -> Iterator[list[int]]:
    """Job ids that must not outlive the test, even when it fails half-way."""
    ids: list[int] = []
    yield ids
    if ids:
        subprocess.run(["scancel", *map(str, ids)], check=False, capture_output=True)


def _images_in(state: Path) -> int:
    """images_seen of a resume state (0 while none is written; the file is replaced atomically)."""
    return int(torch.load(state, weights_only=True)["images_seen"]) if state.exists() else 0


def _safetensors_parts(path: Path) -> tuple[dict, bytes]:
    """(header, tensor bytes) of a .safetensors file. The header is compared as JSON: safetensors writes its
    `__metadata__` map in a per-process hash order, so whole-file bytes differ between processes."""
    blob = path.read_bytes()
    size = struct.unpack("<Q", blob[:8])[0]
    return json.loads(blob[8 : 8 + size]), blob[8 + size :]


def _loss_curve(folder: Path) -> list[tuple[int, float]]:
    return [(r["images_seen"], r["loss"]) for r in map(json.loads, (folder / "train_log.jsonl").read_text().splitlines())]


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


@pytest.fixture
def training_config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "dpm.yaml", tiny_config(images=IMAGES, batch_size=BATCH, resume_every_images=32,
                                                           log_every_images=64))


@pytest.fixture
def reference_run(training_config: Path, tmp_path: Path) -> Iterator[subprocess.Popen]:
    """The uninterrupted run, trained locally (same seed, one thread) while the cluster works."""
    proc = subprocess.Popen(_train_command(training_config, tmp_path / "ref"), stdout=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_preempted_then_cancelled_training_job_resumes_to_identical_weights(
    slurm_cluster: SlurmCluster, tmp_path: Path, training_config: Path, reference_run: subprocess.Popen,
    jobs_to_cancel: list[int],
) -> None:
    out, state = tmp_path / "job", tmp_path / "job.resume" / "state.pt"
    script = tmp_path / "train.sh"
    command = shlex.join(_train_command(training_config, out))
    script.write_text(f"#!/bin/bash\nexport OMP_NUM_THREADS=1\nexec {command}\n")
    submit = ("--requeue", "--open-mode=append", "--cpus-per-task=1", "--job-name=pdae-train", "-o", "train.out",
              str(script))
    job = slurm_cluster.sbatch(*submit, cwd=tmp_path)
    jobs_to_cancel.append(job)
    log = tmp_path / "train.out"

    # 1. Preemption: SLURM requeues the running job once it has written a resume state.
    _wait_until(state.exists, "the first resume state", slurm_cluster, job, log)
    slurm_cluster.scontrol("requeue", str(job))
    slurm_cluster.wait_state(job, {"PENDING"})  # its processes are gone
    first_stop = _images_in(state)
    assert 0 < first_stop < IMAGES // 2 and not out.exists()
    # A requeued job waits ~2 min before it may start again; start it now. But not within the second of the
    # requeue: slurmd revoked the old credential at that second and refuses ("Job credential revoked") a new
    # one with the same timestamp, failing the job.
    time.sleep(2)
    slurm_cluster.scontrol("update", f"JobId={job}", "StartTime=now")

    # 2. The same job, restarted, is cancelled past half of its budget and submitted again as a new job.
    _wait_until(lambda: _images_in(state) >= IMAGES // 2, "the requeued job to pass half of the budget",
                slurm_cluster, job, log)
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
    text = log.read_text()
    assert text.count("DUE TO JOB REQUEUE") == 1 and text.count(f"JOB {job} ON localhost CANCELLED AT") == 2
    assert text.count(f"wrote {out} ({IMAGES} images, {total_steps} steps") == 1
    assert not state.parent.exists()

    # Identical to the uninterrupted run: every tensor byte and the header, and the same loss curve.
    assert reference_run.wait(timeout=300) == 0
    ref = tmp_path / "ref"
    assert _safetensors_parts(out / "model.safetensors") == _safetensors_parts(ref / "model.safetensors")
    assert (out / "train_log.jsonl").read_text().count("\n") == IMAGES // 64
    assert _loss_curve(out) == _loss_curve(ref)
    if slurm_cluster.accounting:
        rows = slurm_cluster.sacct([job, rerun])
        assert [rows[j]["State"] for j in (job, rerun)] == ["CANCELLED by 0", "COMPLETED"]
