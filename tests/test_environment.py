"""The jobs' conda environment (workflow/envs/pdae.yaml) and the users' one (environment.yml) against pyproject.toml.

Snakemake builds a rule's environment from its own copy of the file under .snakemake/conda/, so the jobs'
file must install nothing by path; the jobs import the project from the workflow's folder (PYTHONPATH, set by
workflow/rules/common.smk), which the last test checks with a Python that cannot see the installed project.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO, copy_test_config, snakemake_env

JOB_ENV = REPO / "workflow" / "envs" / "pdae.yaml"
USER_ENV = REPO / "environment.yml"
CONDA_TO_PYPI = {"python-lmdb": "lmdb"}  # conda-forge names that differ from the PyPI project names
TOOLS = {"python", "pip"}                # the interpreter and installer, not project dependencies
WORKFLOW_MANAGER = {"snakemake", "snakemake-executor-plugin-slurm"}  # run where snakemake is started, not in jobs
PATH_INSTALL = re.compile(r"^(-e|--editable|-r|\.|/|~|file:|git\+|\S+ @ )")


def declared(extra: str | None = None) -> dict[str, str]:
    """pyproject.toml's [project] dependencies (or those of an optional `extra`): {canonical name: specifier}."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return {canonicalize_name(r.name): str(r.specifier) for r in map(Requirement, deps)}


def env_entries(path: Path) -> tuple[list[str], list[str]]:
    """(conda entries, pip entries) of a conda environment file."""
    deps = yaml.safe_load(path.read_text())["dependencies"]
    pip = next((d["pip"] for d in deps if isinstance(d, dict)), [])
    return [d for d in deps if isinstance(d, str)], pip


def env_requirements(path: Path) -> dict[str, str]:
    """{canonical PyPI name: specifier} of an environment file's packages (tools and path installs left out)."""
    conda, pip = env_entries(path)
    out = {}
    for entry in conda + pip:
        if re.split(r"[=<>!~\s\[]", entry, maxsplit=1)[0] in TOOLS or PATH_INSTALL.match(entry):
            continue
        req = Requirement(entry)
        out[canonicalize_name(CONDA_TO_PYPI.get(req.name, req.name))] = str(req.specifier)
    return out


def test_job_environment_installs_nothing_by_path() -> None:
    conda, pip = env_entries(JOB_ENV)
    assert pip, "the pip section holds the PyPI-only packages (torch, lpips, torch-fidelity)"
    assert [e for e in conda + pip if PATH_INSTALL.match(e)] == []
    assert {canonicalize_name(e.split("=")[0]) for e in conda} >= TOOLS


def test_job_environment_is_exactly_the_declared_runtime_dependencies() -> None:
    expected = {name: spec for name, spec in declared().items() if name not in WORKFLOW_MANAGER}
    assert env_requirements(JOB_ENV) == expected


def test_user_environment_installs_the_project_from_its_folder_with_the_same_pins() -> None:
    conda, pip = env_entries(USER_ENV)
    assert [e for e in conda + pip if PATH_INSTALL.match(e)] == ["-e ."]  # resolved against the repository root
    assert env_requirements(USER_ENV) == {**declared(), **declared("test")}  # with the test extra: `pytest` works


def test_the_tested_versions_satisfy_the_pins_and_torch_floor_is_the_tested_release() -> None:
    for name, spec in declared().items():
        version = importlib.metadata.version(name)
        assert Requirement(f"{name}{spec}").specifier.contains(version, prereleases=True), (name, spec, version)
    torch_floor = next(s.version for s in Requirement("torch" + declared()["torch"]).specifier if s.operator == ">=")
    tested = importlib.metadata.version("torch").split("+")[0]
    assert tested.split(".")[:2] == torch_floor.split(".")[:2]


def test_every_rule_uses_the_job_environment() -> None:
    rules = REPO / "workflow" / "rules"
    env = re.search(r'^ENV = "([^"]+)"', (rules / "common.smk").read_text(), flags=re.M).group(1)
    assert (rules / env).resolve() == JOB_ENV
    for smk in rules.glob("*.smk"):
        text = smk.read_text()
        assert text.count("    conda:\n        ENV\n") == text.count("\nrule "), smk.name


def test_jobs_import_the_project_from_the_workflow_folder_and_log_progress(tmp_path: Path) -> None:
    """A job's `python` sees the dependencies but not the installed project (as in a built job environment):
    `pdae` comes from the workflow folder on PYTHONPATH. Its log shows the training's progress lines."""
    site = sysconfig.get_paths()["purelib"]
    stubs = tmp_path / "bin"
    stubs.mkdir()
    python = stubs / "python"
    python.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")  # -S: no .pth, so no editable install
    python.chmod(0o755)
    env = {**snakemake_env(), "PATH": f"{stubs}{os.pathsep}{snakemake_env()['PATH']}", "PYTHONPATH": site,
           "PDAE_PROGRESS_SECONDS": "0"}
    control = subprocess.run([str(python), "-c", "import pdae"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert control.returncode != 0 and "No module named 'pdae'" in control.stderr

    work = copy_test_config(tmp_path / "work")
    target = "results/digits/feature_net/model"
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
                           str(work), "--cores", "1", target], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert (work / target / "model.safetensors").is_file()
    log = (work / "logs" / "digits" / "train_feature_net.log").read_text()
    steps = [int(n) for n in re.findall(r"^\[train feature_net\] (\d+)/16 steps", log, flags=re.M)]
    assert steps == list(range(1, 17)), log[-2000:]
