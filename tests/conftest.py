"""Shared fixtures: the `.test` workflow run once per session (local executor)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def snakemake_env() -> dict[str, str]:
    """Rules call `python -m pdae` / `python -m eval`: put this interpreter's environment first on PATH."""
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    return {**os.environ, "OMP_NUM_THREADS": "1", "PATH": path}


def run_snakemake(*args: str, cwd: Path = REPO, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=snakemake_env())


def copy_test_config(work: Path) -> Path:
    shutil.copytree(REPO / ".test" / "config", work / "config")
    return work


@pytest.fixture(scope="session")
def local_dag_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole `.test` DAG with the local executor, in a copy of .test (the repository stays clean)."""
    work = copy_test_config(tmp_path_factory.mktemp("dag_local"))
    start = time.perf_counter()
    proc = run_snakemake("--snakefile", str(REPO / "Snakefile"), "--directory", str(work), "--cores", "2",
                         "--show-failed-logs")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    (work / "elapsed_s.txt").write_text(f"{time.perf_counter() - start:.1f}\n")
    return work


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for a module of tiny tensors and layers: more threads only add OpenMP/sync overhead
    (seconds per call, float64 sqrt 1000x slower, on a busy 2-core box). Use with
    `pytestmark = pytest.mark.usefixtures("single_thread")`."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
