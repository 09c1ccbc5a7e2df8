"""The real one-node SLURM cluster the `slurm` tests run on, as a session fixture.

`.ci/slurm-up.sh` installs Debian's `slurm-wlm`, `munge` (and, for accounting, `slurmdbd` and
`mariadb-server`) if missing, starts `munged`, `mariadbd`, `slurmdbd`, `slurmctld` and `slurmd` (node
`localhost`, everything under `$PDAE_SLURM_DIR`, default /tmp/pdae-slurm) and waits until the node is idle; daemons that already answer are reused. `.ci/slurm-down.sh` stops exactly the daemons
one `up` started, by the PIDs it recorded. CI runs `up` before pytest, so here the fixture finds the
cluster running and starts nothing; on a developer machine the fixture starts it on first use and stops
what it started at the end of the session (never earlier: with `scontrol` and a slurm.conf installed but
no `slurmctld`, every snakemake start stalls 10-20 s, see .ci/slurm-down.sh; `down` removes the
config, so scontrol then fails at once). PDAE_SLURM_ACCOUNTING=0 starts it without accounting (no
`sacct`; `SlurmCluster.accounting` is False).

The node carries what profiles/slurm asks for (`node_settings`): partition `debug` (the default) and
every partition the profile names, memory for a few of its largest jobs, 16 CPUs; so `pytest` needs no
PDAE_SLURM_* variables. `.ci/run` exports the same settings (`python -m tests.slurm_cluster`) before it
starts the cluster; variables set by hand still win.

Use from any test module:

    from tests.slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401 (fixture)

    @pytest.mark.slurm
    def test_x(slurm_cluster: SlurmCluster) -> None:
        job_id = slurm_cluster.sbatch("--wrap", "hostname", cwd=tmp_path, wait=True)

The cluster is one process-wide object, so importing the fixture into several modules starts it once.
Without root (or without slurm and apt-get) the fixture skips, unless PDAE_REQUIRE_SLURM=1 (CI), where
it fails.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
UP = REPO / ".ci" / "slurm-up.sh"
DOWN = REPO / ".ci" / "slurm-down.sh"
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
TEST_CONFIG = REPO / ".test" / "config" / "config.yaml"  # the config the slurm workflow test submits
PARTITION = "debug"
CONCURRENT_JOBS = 4  # tests/test_workflow_slurm.py runs the profile with --jobs 4
MIN_CPUS = 16        # slurmd trusts the advertised size (config_overrides); jobs share the real cores
NODE = "localhost"
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
                "DEADLINE"}


class SlurmError(RuntimeError):
    """The cluster could not be started or a SLURM command failed; the message is one line."""


@dataclasses.dataclass
class SlurmCluster:
    """A running one-node cluster: where it lives, what this process started, and small client helpers."""

    slurm_dir: Path
    pids_file: Path                 # the daemons *this process* started ("name pid" lines); empty if reused
    started: list[tuple[str, int]]
    startup_s: float
    accounting: bool                # slurmdbd runs: `sacct` works
    partition: str = PARTITION

    def sbatch(self, *args: str, cwd: Path, wait: bool = False, timeout: float = 300) -> int:
        """Submit with `sbatch --parsable ARGS` from `cwd`; return the job id.

        With `wait`, poll (every 0.1 s, unlike `sbatch --wait`'s growing sleeps) until the job ends and raise
        SlurmError unless it COMPLETED.
        """
        proc = subprocess.run(["sbatch", "--parsable", f"--partition={self.partition}", *args], cwd=cwd,
                              capture_output=True, text=True, timeout=60)
        match = re.match(r"(\d+)", proc.stdout.strip())
        if proc.returncode != 0 or match is None:
            raise SlurmError(f"sbatch {' '.join(args)} failed (rc {proc.returncode}): {proc.stderr.strip()}")
        job_id = int(match.group(1))
        if wait:
            info = self.wait_state(job_id, FINAL_STATES, timeout)
            if info["JobState"] != "COMPLETED":
                raise SlurmError(f"job {job_id} ended {info['JobState']} (exit {info.get('ExitCode')})")
        return job_id

    def job(self, job_id: int) -> dict[str, str]:
        """`scontrol show job -o ID` as a dict (JobState, Restarts, ExitCode, ...); jobs stay visible MinJobAge s."""
        proc = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True,
                              timeout=30)
        if proc.returncode != 0:
            raise SlurmError(f"scontrol show job {job_id}: {proc.stderr.strip()}")
        return dict(re.findall(r"(\w+)=(\S*)", proc.stdout))

    def scontrol(self, *args: str) -> str:
        """Run `scontrol ARGS` (e.g. "requeue", "12"); return stdout, raise SlurmError on failure."""
        proc = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise SlurmError(f"scontrol {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def sacct(self, job_ids: list[int] | None = None, name: str | None = None,
              timeout: float = 30) -> dict[int, dict[str, str]]:
        """Accounting records {job id: {"JobName", "State", "ExitCode", "Comment", "Partition"}} (`sacct -X`).

        Select by `job_ids` or by job `name` (the slurm executor plugin names every job of one snakemake run
        after the run's UUID, printed as "SLURM run ID: ...", and puts `rule_<rule>` in Comment). Waits up to
        `timeout` s until every selected job has a final record: slurmctld reports to slurmdbd asynchronously.
        Needs the cluster's accounting (slurmdbd, PDAE_SLURM_ACCOUNTING=1, the default).
        """
        if not self.accounting:
            raise SlurmError("sacct needs accounting: restart the cluster with PDAE_SLURM_ACCOUNTING=1")
        if (job_ids is None) == (name is None):
            raise ValueError("sacct: give exactly one of job_ids and name")
        fields = ["JobIDRaw", "JobName", "State", "ExitCode", "Comment", "Partition"]
        select = ["-j", ",".join(map(str, job_ids))] if job_ids is not None else ["--name", str(name)]
        deadline = time.monotonic() + timeout
        while True:
            proc = subprocess.run(["sacct", "-X", "-n", "-P", *select, "-o", ",".join(fields)],
                                  capture_output=True, text=True, timeout=30)
            if proc.returncode != 0:
                raise SlurmError(f"sacct: {proc.stderr.strip()}")
            rows = {int(r[0]): dict(zip(fields[1:], r[1:])) for r in
                    (line.split("|") for line in proc.stdout.splitlines() if line.strip())}
            wanted = job_ids if job_ids is not None else list(rows)
            done = all(j in rows and rows[j]["State"].split()[0] in FINAL_STATES for j in wanted)
            if (done and rows) or time.monotonic() > deadline:
                return rows
            time.sleep(0.2)

    def wait_state(self, job_id: int, states: set[str], timeout: float = 120) -> dict[str, str]:
        """Poll until the job's JobState is one of `states` (COMPLETING is its own state: processes still alive)."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.job(job_id)
            if info.get("JobState") in states:
                return info
            if time.monotonic() > deadline:
                raise SlurmError(f"job {job_id} still {info.get('JobState')} after {timeout} s "
                                 f"(wanted {sorted(states)})")
            time.sleep(0.1)


_CLUSTER: SlurmCluster | None = None


def node_settings(profile: Path = PROFILE, config: Path = TEST_CONFIG) -> dict[str, str]:
    """PDAE_SLURM_PARTITIONS / _CPUS / _MEM_MB (.ci/slurm-up.sh) of a node on which `profile` runs unchanged:
    `debug` first, then every slurm_partition of the profile; memory for CONCURRENT_JOBS of the largest mem_mb
    of the profile or the test config's training jobs."""
    data = yaml.safe_load(profile.read_text())
    sections = [data.get("default-resources") or {}, *(data.get("set-resources") or {}).values()]
    named = [str(s["slurm_partition"]) for s in sections if s.get("slurm_partition")]
    partitions = list(dict.fromkeys([PARTITION, *named]))
    mem_mb = [int(s["mem_mb"]) for s in sections if s.get("mem_mb")]
    mem_mb.append(int(yaml.safe_load(config.read_text())["resources"]["train_mem_mb"]))
    return {"PDAE_SLURM_PARTITIONS": " ".join(partitions), "PDAE_SLURM_CPUS": str(max(MIN_CPUS, os.cpu_count() or 1)),
            "PDAE_SLURM_MEM_MB": str(CONCURRENT_JOBS * max(mem_mb))}


def node_env() -> dict[str, str]:
    """node_settings(), overridden by any PDAE_SLURM_* variable already set."""
    return {key: os.environ.get(key, value) for key, value in node_settings().items()}


def unavailable_reason() -> str | None:
    """Why this machine cannot run the cluster, or None."""
    if os.geteuid() != 0:
        return "the one-node SLURM cluster needs root (munged, slurmd, apt-get)"
    if not Path("/usr/sbin/slurmctld").exists() and shutil.which("apt-get") is None:
        return "slurm-wlm is not installed and there is no apt-get to install it"
    return None


def start_cluster(slurm_dir: Path | None = None, timeout: float = 300) -> SlurmCluster:
    """Bring the cluster up (idempotent, once per process) and return it; the node is idle on return."""
    global _CLUSTER
    if _CLUSTER is not None:
        return _CLUSTER
    slurm_dir = Path(slurm_dir or os.environ.get("PDAE_SLURM_DIR", "/tmp/pdae-slurm"))
    pids_file = slurm_dir / f"started.pytest-{os.getpid()}.pids"
    env = {**os.environ, **node_env(), "PDAE_SLURM_DIR": str(slurm_dir), "PDAE_SLURM_PIDS": str(pids_file)}
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", str(UP)], env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or [f"rc {proc.returncode}"]
        raise SlurmError(f"{UP.name} failed: {lines[-1]}")
    lines = pids_file.read_text().splitlines() if pids_file.exists() else []
    started = [(name, int(pid)) for name, pid in (line.split() for line in lines if line.strip())]
    accounting = "accounting_storage/slurmdbd" in (slurm_dir / "slurm.conf").read_text()
    _CLUSTER = SlurmCluster(slurm_dir, pids_file, started, time.perf_counter() - t0, accounting)
    atexit.register(stop_cluster)
    return _CLUSTER


def stop_cluster() -> None:
    """Stop the daemons this process started (none if the cluster was already running); idempotent."""
    global _CLUSTER
    cluster, _CLUSTER = _CLUSTER, None
    if cluster is None:
        return
    if cluster.started:
        env = {**os.environ, "PDAE_SLURM_DIR": str(cluster.slurm_dir), "PDAE_SLURM_PIDS": str(cluster.pids_file)}
        subprocess.run(["bash", str(DOWN)], env=env, capture_output=True, text=True, timeout=120, check=False)
    cluster.pids_file.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """The running cluster; started on first use, stopped (only what was started) at the end of the session."""
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("PDAE_REQUIRE_SLURM") == "1":
            pytest.fail(f"PDAE_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    try:
        cluster = start_cluster()
    except SlurmError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield cluster
    stop_cluster()


if __name__ == "__main__":  # `eval "$(python -m tests.slurm_cluster)"`: the node settings as shell exports (.ci/run)
    print("export " + " ".join(f"{key}={shlex.quote(value)}" for key, value in node_env().items()))
