"""profiles/slurm on a paper config: the real `sbatch` command line of every job, captured with stub SLURM tools.

Snakemake runs `config/paper/ffhq128.yaml` with `--profile profiles/slurm` and the SLURM executor plugin, but
`sbatch`, `squeue`, `sacct`, `scontrol`, `sacctmgr`, `sshare` and `sinfo` on PATH are one stub (below): `sbatch`
records its arguments, creates the outputs of the job it was given (so the DAG goes on) and prints a job id; the
status commands report every job COMPLETED. `python` on PATH is the same stub too: it records the commands of
the jobs that run on the submitting node (the `localrules`) and fails them, as they would fail on empty inputs.
No job does any work: what is checked is what each job asks the cluster for.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, copy_test_config, snakemake_env
from tests.slurm_cluster import node_env

PAPER_CONFIG = "config/paper/ffhq128.yaml"
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
LOCAL_RULES = {"make_tables", "make_claims", "plot_figure"}
MULTI_GPU_RULES = {"train_dpm", "train_autoencoder", "train_pdae_class"}  # torchrun, resources.train_gpus GPUs
SLURM_TOOLS = ("sbatch", "squeue", "sacct", "scontrol", "sacctmgr", "sshare", "sinfo", "python")

STUB = r'''#!{python}
"""Stub of {tools}: see tests/test_slurm_profile.py."""
import json, os, re, shlex, sys
from pathlib import Path

state = Path(os.environ["PDAE_STUB_DIR"])
name, args = Path(sys.argv[0]).name, sys.argv[1:]
with open(state / "calls.jsonl", "a") as fh:
    fh.write(json.dumps([name, args]) + "\n")
ids = state / "job_ids.txt"
if name == "sbatch":
    wrap = next(a for a in args if a.startswith("--wrap="))
    key = re.search(r"--target-jobs '([^']+)'", wrap).group(1)
    workdir = Path(args[args.index("-D") + 1])
    for out in json.loads((state / "outputs.json").read_text())[key]:
        path = workdir / out
        if path.suffix:  # this workflow's directory() outputs are the suffix-less model folders
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        else:
            path.mkdir(parents=True, exist_ok=True)
    job_id = 1000 + (len(ids.read_text().split()) if ids.exists() else 0)
    with open(ids, "a") as fh:
        fh.write(f"{{job_id}}\n")
    print(job_id)
elif name in ("squeue", "sacct") and "--name" in args:  # the plugin's job status query
    for job_id in ids.read_text().split() if ids.exists() else []:
        print(f"{{job_id}}|COMPLETED")
elif name == "sacct":  # the plugin's account guess
    print("none")
elif name == "scontrol":
    print("MinJobAge = 600 sec")
elif name == "python":  # a job on the submitting node
    sys.exit(1)
'''


@dataclass
class Job:
    rule: str
    key: str              # "rule:wildcard=value,..." as `--target-jobs` names the job
    outputs: list[str]    # with its benchmark file (Snakemake checks it after the job like an output)
    shell: str
    resources: dict[str, str]


def parse_dry_run(text: str) -> list[Job]:
    """The jobs of `snakemake -n -p` output (blocks "rule NAME:" with indented "key: value" lines)."""
    jobs = []
    for block in text.split("\n\n"):
        head = re.search(r"^(?:local)?rule (\w+):$", block, flags=re.M)
        if head is None or head.group(1) == "all":
            continue
        fields = dict(re.findall(r"^    (\w+): (.*)$", block, flags=re.M))
        wildcards = fields.get("wildcards", "").split(", ") if fields.get("wildcards") else []
        shell = re.search(r"^Shell command: (.*)$", block, flags=re.M)
        outputs = fields["output"].split(", ") + ([fields["benchmark"]] if "benchmark" in fields else [])
        resources = dict(r.split("=", 1) for r in fields.get("resources", "").split(", ") if "=" in r)
        jobs.append(Job(head.group(1), f"{head.group(1)}:{','.join(wildcards)}", outputs, shell.group(1) if shell else "",
                        resources))
    return jobs


@dataclass
class Submission:
    rule: str
    partition: str
    runtime_min: int
    mem_mb: int
    nodes: int | None
    cpus: int | None
    gpus: int
    argv: list[str]


def _option(argv: list[str], short: str, long: str | None = None) -> str | None:
    """Value of `short VALUE` or `long=VALUE` in an sbatch argument list."""
    if short in argv:
        return argv[argv.index(short) + 1]
    return next((a.split("=", 1)[1] for a in argv if long and a.startswith(long + "=")), None)


def parse_sbatch(argv: list[str]) -> Submission:
    rule = re.match(r"rule_(\w+?)(_wildcards_|$)", _option(argv, "--comment")).group(1)
    assert not any(a.startswith(("--cpus-per-gpu", "--gres")) for a in argv), argv  # the profile does not use them
    nodes, cpus, gpus = _option(argv, "-N", "--nodes"), _option(argv, "-c", "--cpus-per-task"), _option(argv, "-G", "--gpus")
    return Submission(rule, _option(argv, "-p"), int(_option(argv, "-t")), int(_option(argv, "--mem")),
                      int(nodes) if nodes else None, int(cpus) if cpus else None, int(gpus or 0), argv)


def snakemake(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={**snakemake_env(), **(env or {})})


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The paper config through profiles/slurm with the stubs: dry-run jobs, sbatch lines, local commands, log."""
    work = tmp_path_factory.mktemp("slurm_profile")
    shutil.copytree(REPO / "config", work / "config")
    config = yaml.safe_load((work / PAPER_CONFIG).read_text())
    (work / config["dataset_settings"]["ffhq128"]["data_path"]).mkdir(parents=True)  # the LMDB the config names
    recon_spec = config["dataset_settings"]["ffhq128"].get("recon_data", {}).get("spec")
    if recon_spec:  # Table 1's CelebA-HQ LMDB, named by its data spec
        (work / yaml.safe_load((work / recon_spec).read_text())["data"]["path"]).mkdir(parents=True, exist_ok=True)
    common = ["--snakefile", str(REPO / "Snakefile"), "--directory", str(work), "--configfile", str(work / PAPER_CONFIG),
              "--workflow-profile", "none"]
    # Planned for a 64-core node (the DAG's threads are capped at --cores): the shell commands a job would run.
    dry = snakemake(*common, "-n", "-p", "--cores", "64")
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    jobs = parse_dry_run(dry.stdout)

    stubs = work / "stubs"
    stubs.mkdir()
    (stubs / "outputs.json").write_text(json.dumps({j.key: j.outputs for j in jobs}))
    script = stubs / "slurm_stub.py"
    script.write_text(STUB.format(python=sys.executable, tools=", ".join(SLURM_TOOLS)))
    script.chmod(0o755)
    for tool in SLURM_TOOLS:
        (stubs / tool).symlink_to(script)
    env_path = f"{stubs}{os.pathsep}{os.environ['PATH']}"
    run = snakemake(*common, "--profile", str(PROFILE), "--keep-going", "--latency-wait", "1",
                    "--slurm-init-seconds-before-status-checks", "1", env={"PDAE_STUB_DIR": str(stubs), "PATH": env_path})
    calls = [json.loads(line) for line in (stubs / "calls.jsonl").read_text().splitlines()]
    return {"jobs": jobs, "config": config, "log": run.stdout + run.stderr,
            "sbatch": [parse_sbatch(args) for name, args in calls if name == "sbatch"],
            "local": [args for name, args in calls if name == "python"]}


def _profile() -> dict:
    return yaml.safe_load(PROFILE.read_text())


def runtime_cap() -> int:
    """The profile's longest runtime: its cap (the training rules ask for it)."""
    return max(int(r["runtime"]) for r in _profile()["set-resources"].values())


def test_profile_caps_runtime_and_retries_cover_the_longest_training() -> None:
    profile, cap = _profile(), runtime_cap()
    assert cap <= 2880  # 2 days: the MaxTime of many university GPU partitions
    longest = max(yaml.safe_load(p.read_text())["resources"]["train_runtime_min"]
                  for p in (REPO / "config" / "paper").glob("*.yaml"))
    # A training ended by the cap is resubmitted and resumes: the attempts must add up to its runtime.
    assert (1 + profile["retries"]) * cap >= longest
    assert profile["slurm-requeue"] is True
    # cpus_per_task in default-resources would override every rule's threads (the plugin prefers it).
    assert "cpus_per_task" not in profile["default-resources"]
    assert profile["default-resources"]["nodes"] == 1


def test_every_job_of_the_paper_config_is_submitted_once_except_the_local_rules(paper_run: dict) -> None:
    remote = sorted(j.rule for j in paper_run["jobs"] if j.rule not in LOCAL_RULES)
    assert sorted(s.rule for s in paper_run["sbatch"]) == remote
    assert len(remote) == 22 and not {s.rule for s in paper_run["sbatch"]} & LOCAL_RULES
    # The local rules ran here instead (snakemake says "localrule"; their commands reached the local `python`).
    log = paper_run["log"]
    assert {rule for rule in LOCAL_RULES if re.search(rf"^localrule {rule}:$", log, flags=re.M)} == LOCAL_RULES
    ran_here = {args[2] for args in paper_run["local"] if args[:2] == ["-m", "eval"]}
    assert ran_here == {"tables", "claims", "plots"}
    failed = set(re.findall(r"^Error in rule (\w+):", log, flags=re.M))
    assert failed == LOCAL_RULES  # the stub fails them; every cluster job "completed"


def test_training_jobs_ask_for_one_node_their_gpus_and_cpus_matching_them(paper_run: dict) -> None:
    resources, cap = paper_run["config"]["resources"], runtime_cap()
    training = [s for s in paper_run["sbatch"] if s.rule.startswith("train_")]
    assert {s.rule for s in training} == {"train_dpm", "train_autoencoder", "train_pdae_class", "train_latent",
                                          "train_classifier"}
    for s in training:
        gpus = resources["train_gpus"] if s.rule in MULTI_GPU_RULES else 1
        assert (s.nodes, s.gpus, s.partition) == (1, gpus, "gpu"), s.argv
        assert s.cpus == gpus * resources["train_threads"], s.argv  # train_threads CPUs per GPU process
        assert s.runtime_min <= cap and s.mem_mb == resources["train_mem_mb"], s.argv
    assert max(s.gpus for s in training) == 4 and max(s.cpus for s in training) == 32


def test_jobs_that_run_on_cuda_ask_for_a_gpu_and_cpus_for_it(paper_run: dict) -> None:
    assert paper_run["config"]["device"] == "cuda"
    by_rule = {}
    for s in paper_run["sbatch"]:
        by_rule.setdefault(s.rule, []).append(s)
    on_cuda = {j.rule for j in paper_run["jobs"] if "--device cuda" in j.shell}
    assert on_cuda == {s.rule for s in paper_run["sbatch"]}  # every cluster job runs on the GPU
    for rule in on_cuda - MULTI_GPU_RULES:
        for s in by_rule[rule]:
            assert (s.nodes, s.gpus, s.cpus, s.partition) == (1, 1, paper_run["config"]["resources"]["train_threads"],
                                                              "gpu"), s.argv
            assert 0 < s.runtime_min <= runtime_cap(), s.argv


def test_multi_gpu_jobs_launch_one_process_per_gpu_with_their_share_of_the_cpus(paper_run: dict) -> None:
    threads = paper_run["config"]["resources"]["train_threads"]
    for job in paper_run["jobs"]:
        if job.rule in MULTI_GPU_RULES:
            assert "torchrun --standalone --nproc_per_node 4 -m pdae train" in job.shell, job.shell
            assert "--no-progress" not in job.shell  # progress lines go to the job's log
            # The job's 4 x train_threads CPUs shared by its 4 processes.
            assert re.search(r"OMP_NUM_THREADS=(\d+)", job.shell).group(1) == str(threads), job.shell



def test_the_test_cluster_carries_the_profiles_partitions_and_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    """`pytest` on a machine with slurm-wlm needs no PDAE_SLURM_* variables: tests/slurm_cluster.py derives them."""
    for key in ("PDAE_SLURM_PARTITIONS", "PDAE_SLURM_CPUS", "PDAE_SLURM_MEM_MB"):
        monkeypatch.delenv(key, raising=False)
    env, profile = node_env(), _profile()
    sections = [profile["default-resources"], *profile["set-resources"].values()]
    partitions = env["PDAE_SLURM_PARTITIONS"].split()
    assert partitions[0] == "debug" and len(partitions) == len(set(partitions))
    assert set(partitions) == {"debug"} | {s["slurm_partition"] for s in sections if "slurm_partition" in s}
    assert int(env["PDAE_SLURM_MEM_MB"]) >= max(int(s["mem_mb"]) for s in sections if "mem_mb" in s)
    assert int(env["PDAE_SLURM_CPUS"]) >= 16
    # CI exports the same settings (`python -m tests.slurm_cluster`) instead of its own list.
    exports = subprocess.run([sys.executable, "-m", "tests.slurm_cluster"], cwd=REPO, capture_output=True, text=True,
                             env={k: v for k, v in os.environ.items() if not k.startswith("PDAE_SLURM_")}, check=True)
    assert exports.stdout.strip() == "export " + " ".join(
        f"{k}='{v}'" if " " in v else f"{k}={v}" for k, v in env.items())
    ci = (REPO / ".ci" / "run").read_text()
    assert 'eval "$(python -m tests.slurm_cluster)"' in ci and "PDAE_SLURM_PARTITIONS=" not in ci
    monkeypatch.setenv("PDAE_SLURM_PARTITIONS", "debug other")  # set by hand: wins
    assert node_env()["PDAE_SLURM_PARTITIONS"] == "debug other"


def _dry_run(work: Path, *args: str) -> subprocess.CompletedProcess:
    return snakemake("--snakefile", str(REPO / "Snakefile"), "--directory", str(work), "--workflow-profile", "none",
                     "-n", "-p", "--cores", "64", *args)


def test_a_cpu_config_asks_for_no_gpu_and_runs_one_process_per_job(tmp_path: Path) -> None:
    work = copy_test_config(tmp_path / "cpu")
    dry = _dry_run(work)
    assert dry.returncode == 0, dry.stderr[-3000:]
    jobs = [j for j in parse_dry_run(dry.stdout) if j.shell]
    assert yaml.safe_load((work / "config" / "config.yaml").read_text())["device"] == "cpu" and len(jobs) > 30
    assert [j.rule for j in jobs if j.resources.get("gpu", "0") != "0"] == []
    assert [j.rule for j in jobs if "torchrun" in j.shell or "--device cuda" in j.shell] == []
    assert {re.search(r"OMP_NUM_THREADS=(\d+)", j.shell).group(1) for j in jobs if j.rule.startswith("train_")} == {"1"}


def test_a_cuda_config_without_training_gpus_is_refused_in_one_line(tmp_path: Path) -> None:
    work = copy_test_config(tmp_path / "cuda0")
    config = work / "config" / "config.yaml"
    config.write_text(config.read_text().replace("device: cpu", "device: cuda"))
    dry = _dry_run(work)
    assert dry.returncode != 0
    assert "config: device cuda needs resources.train_gpus >= 1 (the GPUs of a training job)" in dry.stdout + dry.stderr
