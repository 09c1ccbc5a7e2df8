"""A hostile user's corpus (issue 14): bad inputs and faults against `pdae train` and `pdae import`.

Every corpus case runs the real command line in its own process and must end with exit status != 0, exactly one
line on stderr naming the file or config key at fault, no traceback, nothing that looks like a result, and its
workspace exactly as before: every input file byte-identical (SHA-256 before/after) and nothing created
(no output folder, lock file, staging folder or temporary file). The cases run in processes forked from one
interpreter that has imported torch and pdae (tests/cli_forkserver.py: same `python -m pdae` code path,
0.1 s instead of 1.5 s a case); PDAE_ROBUST_EXEC=1 runs each in a fresh `python -m pdae` instead.

Faults: two runs on one output (the second is refused at once, naming the holder's PID and host), SIGINT and
SIGTERM (stop at a step boundary with a resume state; the rerun is bitwise equal), disk full (a small tmpfs
in a private mount namespace, `unshare -rm`; where that is not allowed, RLIMIT_FSIZE with SIGXFSZ ignored,
so that writes fail with EFBIG instead), and `kill -9` at random moments and during snapshot writes, each
rerun to weights, logs and snapshots bitwise equal to an uninterrupted run. By default 3 random kills and 1
during a snapshot write; PDAE_ROBUST_KILLS=20 PDAE_ROBUST_SNAPSHOT_KILLS=3 runs the full count (marked slow).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
FRESH_PROCESSES = os.environ.get("PDAE_ROBUST_EXEC") == "1"
KILLS = int(os.environ.get("PDAE_ROBUST_KILLS", "3"))
SNAPSHOT_KILLS = int(os.environ.get("PDAE_ROBUST_SNAPSHOT_KILLS", "1"))

UNET = {"base_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_ds": [2], "num_heads": 1,
        "dropout": 0.0}
BASE = {
    "data": {"name": "digits", "image_size": 8, "channels": 1},
    "nets": {"unet": UNET},
    "train": {"images": 64, "batch_size": 16, "lr": 1.0e-3, "ema_decay": 0.9, "log_every_images": 32,
              "resume_every_images": 32},
}
PDAE_NETS = {"encoder": {"latent_dim": 16, "channels": [32], "attention_resolutions": []}, "estimator": {"latent_dim": 16}}
DIFFAE_NETS = {"model": {"base_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [],
                         "latent_dim": 16, "enc_channel_mult": [1, 2], "enc_attention_resolutions": []}}


# ---------------------------------------------------------------------------------------------------
# Running the command line.


@dataclasses.dataclass
class Result:
    rc: int
    out: str
    err: str


class Proc:
    """A command running in the background (a forked child of the fork server, or a fresh interpreter)."""

    def __init__(self, pid: int, poll: Callable[[], int | None], wait: Callable[[float], int], out: Path, err: Path,
                 argv: list[str]) -> None:
        self.pid, self._poll, self._wait, self._out, self._err, self.argv = pid, poll, wait, out, err, argv

    def poll(self) -> int | None:
        return self._poll()

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float = 300) -> Result:
        rc = self._wait(timeout)
        read = lambda path: path.read_text() if path.exists() else ""  # noqa: E731 - killed before it opened them
        return Result(rc, read(self._out), read(self._err))


class Runner:
    """`run` a `pdae` command to its end, or `spawn` it in the background."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="pdae-robustness-"))
        self.count = 0
        self.server: subprocess.Popen | None = None
        if not FRESH_PROCESSES:
            self.server = subprocess.Popen([sys.executable, str(Path(__file__).with_name("cli_forkserver.py"))],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV, cwd=REPO)
            assert json.loads(self.server.stdout.readline()) == {"ready": True}

    def _ask(self, req: dict) -> dict:
        self.server.stdin.write(json.dumps(req) + "\n")
        self.server.stdin.flush()
        return json.loads(self.server.stdout.readline())

    def spawn(self, argv: list[str], cwd: Path) -> Proc:
        self.count += 1
        out, err = self.tmp / f"{self.count}.out", self.tmp / f"{self.count}.err"
        if self.server is None:
            with open(out, "w") as fo, open(err, "w") as fe:
                popen = subprocess.Popen(pdae_cmd(*argv), cwd=cwd, env=ENV, stdout=fo, stderr=fe)
            return Proc(popen.pid, popen.poll, lambda t: popen.wait(timeout=t), out, err, argv)
        pid = self._ask({"op": "spawn", "argv": argv, "cwd": str(cwd), "stdout": str(out), "stderr": str(err)})["pid"]

        def wait(timeout: float) -> int:
            reply = self._ask({"op": "wait", "pid": pid, "timeout": timeout})
            assert not reply["timed_out"], f"pdae {' '.join(argv)} ran past {timeout} s"
            return reply["rc"]

        return Proc(pid, lambda: self._ask({"op": "poll", "pid": pid})["rc"], wait, out, err, argv)

    def run(self, argv: list[str], cwd: Path, timeout: float = 300) -> Result:
        return self.spawn(argv, cwd).wait(timeout)

    def close(self) -> None:
        if self.server is not None:
            self.server.stdin.write(json.dumps({"op": "exit"}) + "\n")
            self.server.stdin.flush()
            self.server.wait(timeout=30)
            self.server.stdin.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def runner() -> Any:
    r = Runner()
    yield r
    r.close()


@pytest.fixture(scope="module")
def cli(runner: Runner) -> Callable[..., Result]:
    return runner.run


def pdae_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pdae", *args]


# ---------------------------------------------------------------------------------------------------
# Workspace checks: every file's hash, every folder, before and after.


def tree(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in filenames:
            path = os.path.join(dirpath, f)
            out[os.path.relpath(path, root)] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return out


def one_error_line(res: Result) -> str:
    assert res.rc != 0, f"exit 0 for a bad input; stdout {res.out!r}"
    assert "Traceback" not in res.err, res.err
    lines = res.err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {res.err!r}"
    assert "wrote" not in res.out
    return lines[0]


def leftovers(root: Path) -> list[str]:
    """Lock files, staging folders and temporary files anywhere under `root`."""
    bad = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            if name.endswith((".lock", ".pdae-staging")) or ".tmp" in name or ".old-" in name:
                bad.append(os.path.relpath(os.path.join(dirpath, name), root))
    return bad


# ---------------------------------------------------------------------------------------------------
# Inputs shared by the cases (built once).


def write_yaml(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def deep_merge(base: dict, patch: dict) -> dict:
    """`base` with `patch`: the train and data sections are updated key by key, other sections replaced."""
    out = json.loads(json.dumps(base))
    for key, value in patch.items():
        if key in ("train", "data") and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained tiny DPM folder, a resume state of another seed, an official PDAE DPM folder."""
    from pdae.config import from_dict, RunConfig
    from pdae.training import train
    from tests.test_importers import write_pdae_dpm

    root = tmp_path_factory.mktemp("assets")
    cfg = from_dict(RunConfig, BASE, "config")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the commands run (OMP_NUM_THREADS=1): two busy cores oversubscribed are 20x slower
    try:
        train("dpm", cfg, root / "dpm", seed=0, progress=False)
        train("dpm", cfg, root / "seed1" / "model", seed=1, progress=False, stop_after_images=32)
    finally:
        torch.set_num_threads(threads)
    assert (root / "seed1" / "model.resume" / "state.pt").is_file()
    write_pdae_dpm(root / "official")
    return root


# ---------------------------------------------------------------------------------------------------
# The corpus. A case builds its workspace and returns the command; `expect` are substrings of the one error
# line (the file and/or the key at fault).


@dataclasses.dataclass
class Case:
    id: str
    setup: Callable[[Path, Path], list[str]]  # (workspace, assets) -> argv
    expect: tuple[str, ...]


CASES: list[Case] = []


def case(id: str, *expect: str) -> Callable:
    def register(setup: Callable[[Path, Path], list[str]]) -> Callable:
        CASES.append(Case(id, setup, expect))
        return setup
    return register


def train_config_case(id: str, patch: dict, *expect: str, method: str = "dpm", extra: tuple[str, ...] = (),
                      inputs: bool = True) -> None:
    """`pdae train <method> --config cfg.yaml` with BASE patched; the line names cfg.yaml and the key. With
    `inputs`, the --dpm/--encoder a method needs are named (never read: the config fails first)."""
    needs = {"pdae": ("--dpm", "dpm"), "latent": ("--encoder", "enc"), "classifier": ("--encoder", "enc")}

    def setup(ws: Path, assets: Path) -> list[str]:
        write_yaml(ws / "cfg.yaml", deep_merge(BASE, patch))
        given = needs.get(method, ()) if inputs else ()
        return ["train", method, "--config", "cfg.yaml", "--out", "model", "--no-progress", *given, *extra]

    CASES.append(Case(id, setup, ("cfg.yaml", *expect)))


def raw_config_case(id: str, name: str, text: str | bytes, *expect: str) -> None:
    def setup(ws: Path, assets: Path) -> list[str]:
        (ws / name).write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["train", "dpm", "--config", name, "--out", "model", "--no-progress"]

    CASES.append(Case(id, setup, (name, *expect)))


# The config file itself.
raw_config_case("yaml-syntax", "cfg.yaml", "train: [1, 2\n", "not valid YAML")
raw_config_case("yaml-duplicate-section", "cfg.yaml", yaml.safe_dump(BASE) + "train: {images: 32}\n", "duplicate key 'train'")
raw_config_case("yaml-duplicate-key", "cfg.yaml",
                yaml.safe_dump({k: v for k, v in BASE.items() if k != "train"}) + "train: {images: 64, lr: 0.001, lr: 0.1}\n",
                "duplicate key 'lr'")
raw_config_case("yaml-python-tag", "cfg.yaml", "data: !!python/object/apply:os.system ['touch PWNED']\n", "not valid YAML")
raw_config_case("yaml-not-utf8", "cfg.yaml", yaml.safe_dump(BASE).encode() + b"# caf\xe9\n", "not UTF-8")
raw_config_case("yaml-a-list", "cfg.yaml", "- 1\n- 2\n", "config: expected a mapping")
raw_config_case("json-duplicate-key", "cfg.json", '{"train": {"images": 64}, "train": {"images": 32}}', "duplicate key 'train'")
raw_config_case("json-syntax", "cfg.json", '{"train": ', "not valid YAML/JSON")
raw_config_case("yaml-empty-data", "cfg.yaml", yaml.safe_dump({**BASE, "data": {}}), "data.name")


@case("config-missing", "nope.yaml", "not found")
def _(ws: Path, assets: Path) -> list[str]:
    return ["train", "dpm", "--config", "nope.yaml", "--out", "model"]


@case("config-is-a-folder", "cfgdir", "not found")
def _(ws: Path, assets: Path) -> list[str]:
    (ws / "cfgdir").mkdir()
    return ["train", "dpm", "--config", "cfgdir", "--out", "model"]


# Unknown keys, every section.
train_config_case("unknown-top-level", {"trian": {}}, "config.trian: unknown key")
train_config_case("unknown-train-key", {"train": {"lr_decay": 0.5}}, "config.train.lr_decay: unknown key")
train_config_case("unknown-data-key", {"data": {"colour": True}}, "data.colour: unknown key")
train_config_case("unknown-nets-component", {"nets": {"unet2": {}}}, "config.nets.unet2")
train_config_case("unknown-unet-argument", {"nets": {"unet": {**UNET, "depth": 3}}}, "config.nets.unet.depth: unknown key")
train_config_case("unknown-method-key-dpm", {"method": {"gamma": 0.1}}, "config.method.gamma: unknown key for DPM")
train_config_case("unknown-method-key-diffae", {"nets": DIFFAE_NETS, "method": {"weighting": "snr"}},
                  "config.method.weighting: unknown key for DiffAE", method="diffae")
train_config_case("unknown-method-key-pdae", {"nets": PDAE_NETS, "method": {"gama": 0.1}},
                  "config.method.gama: unknown key for PDAE", method="pdae")
train_config_case("unknown-method-key-feature-net", {"nets": {"net": {"channels": [16, 32]}}, "method": {"x": 1}},
                  "config.method.x: unknown key for FeatureNetMethod", method="feature-net")
train_config_case("unknown-diffusion-key", {"diffusion": {"kind": "linear", "T": 1000, "betaz": 0.1}},
                  "config.diffusion", "betaz")

# Types.
train_config_case("gamma-is-a-string", {"nets": PDAE_NETS, "method": {"gamma": "0.1"}},
                  "config.method.gamma: expected a number, got str", method="pdae")
train_config_case("lr-is-a-string", {"train": {"lr": "1e-3"}}, "config.train.lr: expected a number")
train_config_case("images-is-a-string", {"train": {"images": "many"}}, "config.train.images: expected an integer")
train_config_case("ema-warmup-is-a-string", {"train": {"ema_warmup": "yes"}}, "config.train.ema_warmup: expected true/false")
train_config_case("image-size-is-a-string", {"data": {"name": "digits", "image_size": "8"}}, "data.image_size")
train_config_case("base-channels-is-a-string", {"nets": {"unet": {**UNET, "base_channels": "32"}}},
                  "config.nets.unet.base_channels: expected an integer")
train_config_case("clip-latent-is-a-string", {"nets": {}, "method": {"clip_latent": "no"}},
                  "config.method.clip_latent: expected true/false", method="latent")
train_config_case("targets-is-a-number", {"nets": {}, "method": {"targets": 3}},
                  "config.method.targets: expected a string", method="classifier")
train_config_case("pdae-without-dpm", {"nets": PDAE_NETS}, "method pdae needs a trained DPM (--dpm DIR)", method="pdae",
                  inputs=False)
train_config_case("latent-without-encoder", {"nets": {}}, "method latent needs a trained autoencoder", method="latent",
                  inputs=False)
train_config_case("lr-is-nan", {"train": {"lr": float("nan")}}, "config.train.lr: expected a finite number")

# Ranges.
train_config_case("images-zero", {"train": {"images": 0}}, "config.train.images: must be positive")
train_config_case("batch-negative", {"train": {"batch_size": -1}}, "config.train.batch_size: must be positive")
train_config_case("lr-negative", {"train": {"lr": -1.0e-3}}, "config.train.lr: must be positive")
train_config_case("lr-zero", {"train": {"lr": 0}}, "config.train.lr: must be positive")
train_config_case("warmup-negative", {"train": {"warmup_images": -5}}, "config.train.warmup_images: must be >= 0")
train_config_case("grad-clip-negative", {"train": {"grad_clip": -1.0}}, "config.train.grad_clip: must be >= 0")
train_config_case("log-every-zero", {"train": {"log_every_images": 0}}, "config.train.log_every_images: must be positive")
train_config_case("resume-every-zero", {"train": {"resume_every_images": 0}}, "config.train.resume_every_images: must be positive")
train_config_case("ema-decay-above-one", {"train": {"ema_decay": 1.5}}, "config.train.ema_decay")
train_config_case("optimizer-unknown", {"train": {"optimizer": "sgd"}}, "config.train.optimizer")
train_config_case("amp-unknown", {"train": {"amp": "fp16"}}, "config.train.amp")
train_config_case("channels-last-unknown", {"train": {"channels_last": "maybe"}}, "config.train.channels_last")
train_config_case("betas-one-number", {"train": {"betas": [0.9]}}, "config.train.betas")
train_config_case("betas-above-one", {"train": {"betas": [0.9, 1.5]}}, "config.train.betas")
train_config_case("weight-decay-negative", {"train": {"weight_decay": -0.1}}, "config.train.weight_decay")
train_config_case("workers-negative", {"train": {"num_workers": -1}}, "config.train.num_workers")
train_config_case("snapshot-zero", {"train": {"snapshot_images": [0]}}, "config.train.snapshot_images")
train_config_case("snapshot-past-budget", {"train": {"snapshot_images": [1000]}}, "config.train.snapshot_images")
train_config_case("images-override-zero", {}, "config.train.images: must be positive", extra=("--images", "0"))
train_config_case("data-name-unknown", {"data": {"name": "mnist"}}, "data.name")
train_config_case("data-channels-two", {"data": {"name": "digits", "channels": 2}}, "data.channels")
train_config_case("base-channels-negative", {"nets": {"unet": {**UNET, "base_channels": -4}}},
                  "config.nets.unet.base_channels: must be a positive integer")
train_config_case("channel-mult-zero", {"nets": {"unet": {**UNET, "channel_mult": [1, 0]}}}, "config.nets.unet.channel_mult[1]")
train_config_case("dropout-above-one", {"nets": {"unet": {**UNET, "dropout": 1.5}}}, "config.nets.unet.dropout")
train_config_case("fixed-argument-in-config", {"nets": {"unet": {**UNET, "in_channels": 3}}},
                  "config.nets.unet.in_channels: set from the data")
train_config_case("unet-deeper-than-image", {"nets": {"unet": {**UNET, "channel_mult": [1, 1, 2, 2, 2], "attention_ds": [2]}}},
                  "config.nets.unet.channel_mult: 5 levels", "multiple of 16")
train_config_case("diffae-deeper-than-image", {"nets": {"model": {**DIFFAE_NETS["model"], "enc_channel_mult": [1, 2, 2, 2, 2]}}},
                  "config.nets.model.enc_channel_mult", method="diffae")
train_config_case("pdae-encoder-depth-mismatch", {"nets": {**PDAE_NETS, "encoder": {"latent_dim": 16, "channels": [32, 32, 32]}}},
                  "config.nets.encoder.channels: 3 stride-2 convs", method="pdae")
train_config_case("feature-net-deeper-than-image", {"nets": {"net": {"channels": [8, 8, 8, 8, 8]}}},
                  "config.nets.net.channels: 5 levels", method="feature-net")
train_config_case("diffusion-kind-unknown", {"diffusion": {"kind": "sigmoid", "T": 1000}}, "config.diffusion", "sigmoid")
train_config_case("diffusion-T-negative", {"diffusion": {"kind": "linear", "T": -1}}, "config.diffusion", "T")


# Checked once the data or the weights are read (before any training step).
@case("batch-larger-than-dataset", "config.train.batch_size: 16", "training set (8 images)")
def _(ws: Path, assets: Path) -> list[str]:
    write_yaml(ws / "cfg.yaml", deep_merge(BASE, {"data": {"num_images": 8}}))
    return ["train", "dpm", "--config", "cfg.yaml", "--out", "model", "--no-progress"]


@case("absurd-network-size", "config.nets", "parameters", "GiB")
def _(ws: Path, assets: Path) -> list[str]:
    write_yaml(ws / "cfg.yaml", deep_merge(BASE, {"nets": {"unet": {**UNET, "base_channels": 2_000_000}}}))
    return ["train", "dpm", "--config", "cfg.yaml", "--out", "model", "--no-progress"]


@case("labels-csv-not-utf8", "labels.csv", "not UTF-8")
def _(ws: Path, assets: Path) -> list[str]:
    from PIL import Image

    (ws / "imgs").mkdir()
    for i in range(4):
        Image.new("L", (8, 8), color=i * 60).save(ws / "imgs" / f"{i}.png")
    (ws / "labels.csv").write_bytes(b"file,label\n" + b"".join(f"{i}.png,caf".encode() + b"\xe9\n" for i in range(4)))
    cfg = deep_merge(BASE, {"data": {"name": "folder", "path": "imgs", "labels": "labels.csv", "image_size": 8,
                                     "channels": 1}, "train": {"batch_size": 2, "images": 4}})
    write_yaml(ws / "cfg.yaml", cfg)
    return ["train", "dpm", "--config", "cfg.yaml", "--out", "model", "--no-progress"]


@case("data-folder-missing", "no-such-folder")
def _(ws: Path, assets: Path) -> list[str]:
    write_yaml(ws / "cfg.yaml", deep_merge(BASE, {"data": {"name": "folder", "path": "imgs", "image_size": 8, "channels": 1}}))
    return ["train", "dpm", "--config", "cfg.yaml", "--data", "no-such-folder", "--out", "model", "--no-progress"]


# Output and resume paths: never touch what is not ours.
def base_train(ws: Path, *extra: str, out: str = "model") -> list[str]:
    write_yaml(ws / "cfg.yaml", BASE)
    return ["train", "dpm", "--config", "cfg.yaml", "--out", out, "--no-progress", *extra]


def user_folder(path: Path) -> None:
    path.mkdir(parents=True)
    (path / "thesis.tex").write_text("my work\n")
    (path / "data.csv").write_text("1,2,3\n")


@case("out-is-a-user-folder", "model", "output folder exists")
def _(ws: Path, assets: Path) -> list[str]:
    user_folder(ws / "model")
    return base_train(ws)


@case("out-is-a-file", "model", "output file exists")
def _(ws: Path, assets: Path) -> list[str]:
    (ws / "model").write_text("not a folder\n")
    return base_train(ws)


@case("out-parent-is-a-file", "notes.txt", "cannot create the folder")
def _(ws: Path, assets: Path) -> list[str]:
    (ws / "notes.txt").write_text("a file\n")
    return base_train(ws, out="notes.txt/model")


@case("resume-dir-is-a-user-folder", "mine", "--resume-dir is not a resume folder", "thesis.tex")
def _(ws: Path, assets: Path) -> list[str]:
    user_folder(ws / "mine")
    return base_train(ws, "--resume-dir", "mine")


@case("resume-dir-is-a-file", "state.txt", "--resume-dir exists and is not a folder")
def _(ws: Path, assets: Path) -> list[str]:
    (ws / "state.txt").write_text("x\n")
    return base_train(ws, "--resume-dir", "state.txt")


@case("resume-dir-contains-out", "--resume-dir run", "overlap")
def _(ws: Path, assets: Path) -> list[str]:
    return base_train(ws, "--resume-dir", "run", out="run/model")


@case("resume-dir-is-out", "--resume-dir model", "overlap")
def _(ws: Path, assets: Path) -> list[str]:
    return base_train(ws, "--resume-dir", "model")


@case("resume-state-garbage", "state.pt", "unreadable resume state")
def _(ws: Path, assets: Path) -> list[str]:
    (ws / "model.resume").mkdir()
    (ws / "model.resume" / "state.pt").write_bytes(os.urandom(4096))
    return base_train(ws)


@case("resume-state-other-seed", "state.pt", "different config/seed")
def _(ws: Path, assets: Path) -> list[str]:
    shutil.copytree(assets / "seed1" / "model.resume", ws / "model.resume")
    return base_train(ws)


@case("resume-state-memory-bomb", "state.pt", "declares a 1099511627776-byte bytearray")
def _(ws: Path, assets: Path) -> list[str]:
    (ws / "model.resume").mkdir()
    with open(ws / "model.resume" / "state.pt", "wb") as fh:
        pickle.dump(Bomb(), fh, protocol=2)
    return base_train(ws)


def pdae_train(ws: Path, dpm: str) -> list[str]:
    write_yaml(ws / "cfg.yaml", deep_merge(BASE, {"nets": PDAE_NETS}))
    return ["train", "pdae", "--config", "cfg.yaml", "--dpm", dpm, "--out", "model", "--no-progress"]


def dpm_copy(ws: Path, assets: Path, edit: Callable[[dict], None] | None = None) -> str:
    shutil.copytree(assets / "dpm", ws / "dpm")
    if edit is not None:
        config = json.loads((ws / "dpm" / "config.json").read_text())
        edit(config)
        (ws / "dpm" / "config.json").write_text(json.dumps(config))
    return "dpm"


@case("dpm-missing", "no-dpm", "not a model folder")
def _(ws: Path, assets: Path) -> list[str]:
    return pdae_train(ws, "no-dpm")


@case("dpm-is-a-user-folder", "mine", "not a model folder")
def _(ws: Path, assets: Path) -> list[str]:
    user_folder(ws / "mine")
    return pdae_train(ws, "mine")


def _unet_kwargs(config: dict) -> dict:
    return config["components"]["unet"]["kwargs"]


@case("dpm-config-negative-channels", "config.json", "components.unet", "negative")
def _(ws: Path, assets: Path) -> list[str]:
    return pdae_train(ws, dpm_copy(ws, assets, lambda c: _unet_kwargs(c).update(base_channels=-32)))


@case("dpm-config-absurd-channels", "model.safetensors", "does not fit UNet")
def _(ws: Path, assets: Path) -> list[str]:
    return pdae_train(ws, dpm_copy(ws, assets, lambda c: _unet_kwargs(c).update(base_channels=4_000_000)))


@case("dpm-config-deeper-than-image", "config.json", "components.unet.kwargs.channel_mult", "multiple of 16")
def _(ws: Path, assets: Path) -> list[str]:
    return pdae_train(ws, dpm_copy(ws, assets, lambda c: _unet_kwargs(c).update(channel_mult=[1, 2, 2, 2, 2])))


@case("dpm-config-not-json", "config.json", "not valid JSON")
def _(ws: Path, assets: Path) -> list[str]:
    dpm = dpm_copy(ws, assets)
    (ws / dpm / "config.json").write_text("{ not json")
    return pdae_train(ws, dpm)


@case("dpm-weights-truncated", "model.safetensors", "truncated or corrupt")
def _(ws: Path, assets: Path) -> list[str]:
    dpm = dpm_copy(ws, assets)
    data = (ws / dpm / "model.safetensors").read_bytes()
    (ws / dpm / "model.safetensors").write_bytes(data[: len(data) // 2])
    return pdae_train(ws, dpm)


@case("encoder-missing", "no-encoder", "not a model folder")
def _(ws: Path, assets: Path) -> list[str]:
    write_yaml(ws / "cfg.yaml", deep_merge(BASE, {"nets": {}}))
    return ["train", "latent", "--config", "cfg.yaml", "--encoder", "no-encoder", "--out", "model", "--no-progress"]


# Imports: --force replaces only our folders, only once the new one is complete; sources never run code.
class Bomb:
    def __reduce__(self) -> tuple:
        return bytearray, (1 << 40,)  # 1 TiB of zeros if allocated


class Payload:
    def __reduce__(self) -> tuple:
        return os.system, ("touch PWNED",)


def our_folder(path: Path) -> None:
    from pdae.checkpoint import save_model_folder

    config = {"format": "pdae-bench/1", "method": "dpm", "components": {"unet": {"class": "UNet", "kwargs": {}}},
              "diffusion": None, "method_kwargs": {}}
    save_model_folder(path, {"unet.w": torch.arange(4.0)}, config, {"note": "the user's earlier import"})


def imp(kind: str, src: str, out: str = "out", *extra: str) -> list[str]:
    return ["import", kind, src, "--out", out, *extra]


@case("import-force-missing-source-keeps-user-folder", "mine", "not a model folder written by pdae")
def _(ws: Path, assets: Path) -> list[str]:
    user_folder(ws / "mine")
    return imp("adm", "missing.pt", "mine", "--force")


@case("import-force-missing-source-keeps-our-folder", "missing", "expected the official folder")
def _(ws: Path, assets: Path) -> list[str]:
    our_folder(ws / "out")
    return imp("pdae-dpm", "missing", "out", "--force")


@case("import-force-malicious-diffusers-keeps-our-folder", "diffusion_pytorch_model.bin", "os.system")
def _(ws: Path, assets: Path) -> list[str]:
    our_folder(ws / "out")
    src = ws / "evil-pipeline"
    (src / "unet").mkdir(parents=True)
    (src / "scheduler").mkdir()
    (src / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"],
                                                      "scheduler": ["diffusers", "DDPMScheduler"]}))
    (src / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", "sample_size": 8,
                                                          "block_out_channels": [32, 32]}))
    (src / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDPMScheduler"}))
    torch.save({"conv_in.weight": torch.zeros(1), "x": Payload()}, src / "unet" / "diffusion_pytorch_model.bin")
    return imp("diffusers", "evil-pipeline", "out", "--force")


@case("import-force-malicious-adm-keeps-our-folder", "evil.pt", "os.system")
def _(ws: Path, assets: Path) -> list[str]:
    our_folder(ws / "out")
    torch.save({"input_blocks.0.0.weight": torch.zeros(1), "x": Payload()}, ws / "evil.pt")
    return imp("adm", "evil.pt", "out", "--force", "--flags", "--image_size 64 --num_channels 32 --num_res_blocks 1")


@case("import-code-payload", "checkpoint.pt", "os.system")
def _(ws: Path, assets: Path) -> list[str]:
    shutil.copytree(assets / "official" / "pre-trained-dpms" / "tiny", ws / "src")
    sd = torch.load(ws / "src" / "checkpoint.pt", weights_only=True)
    torch.save({**sd, "hook": Payload()}, ws / "src" / "checkpoint.pt")
    return imp("pdae-dpm", "src")


@case("import-bytearray-bomb-zip", "last.ckpt", "declares a 1099511627776-byte bytearray")
def _(ws: Path, assets: Path) -> list[str]:
    torch.save({"state_dict": {"ema_model.x": torch.zeros(1)}, "pad": Bomb()}, ws / "last.ckpt")
    return imp("diffae-ddim", "last.ckpt")


@case("import-bytearray-bomb-legacy", "last.ckpt", "declares a 1099511627776-byte bytearray")
def _(ws: Path, assets: Path) -> list[str]:
    torch.save({"state_dict": {}, "pad": Bomb()}, ws / "last.ckpt", _use_new_zipfile_serialization=False)
    return imp("diffae-autoencoder", "last.ckpt")


@case("import-bytearray-bomb-raw-pickle", "last.ckpt", "declares")
def _(ws: Path, assets: Path) -> list[str]:
    with open(ws / "last.ckpt", "wb") as fh:
        pickle.dump(Bomb(), fh, protocol=2)
    return imp("diffae-latent", "last.ckpt")


@case("import-storage-size-bomb", "last.ckpt", "declares a storage of 1099511627776 elements")
def _(ws: Path, assets: Path) -> list[str]:
    class Storages(pickle.Pickler):
        def persistent_id(self, obj: Any) -> Any:
            return ("storage", torch.FloatStorage, "0", "cpu", 1 << 40) if obj == "STORAGE" else None

    with open(ws / "last.ckpt", "wb") as fh:  # torch's legacy layout: magic, protocol, sys_info, object, keys
        for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True,
                                                       "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            pickle.dump(header, fh, protocol=2)
        Storages(fh, protocol=2).dump({"state_dict": {"ema_model.w": "STORAGE"}})
        pickle.dump(["0"], fh, protocol=2)
    return imp("diffae-ddim", "last.ckpt")


@case("import-bytes8-length-bomb", "last.ckpt", "declares a 1099511627776-byte string")
def _(ws: Path, assets: Path) -> list[str]:
    (ws / "last.ckpt").write_bytes(b"\x80\x04\x8e" + (1 << 40).to_bytes(8, "little") + b"abc")
    return imp("diffae-ddim", "last.ckpt")


@case("import-truncated-checkpoint", "checkpoint.pt", "truncated or corrupt")
def _(ws: Path, assets: Path) -> list[str]:
    shutil.copytree(assets / "official" / "pre-trained-dpms" / "tiny", ws / "src")
    data = (ws / "src" / "checkpoint.pt").read_bytes()
    (ws / "src" / "checkpoint.pt").write_bytes(data[: len(data) // 3])
    return imp("pdae-dpm", "src")


@case("import-torchscript", "last.ckpt", "it is a TorchScript archive")
def _(ws: Path, assets: Path) -> list[str]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; such archives still exist
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(ws / "last.ckpt"))
    return imp("diffae-ddim", "last.ckpt")


@case("import-config-yml-not-yaml", "config.yml", "not valid YAML")
def _(ws: Path, assets: Path) -> list[str]:
    shutil.copytree(assets / "official" / "pre-trained-dpms" / "tiny", ws / "src")
    (ws / "src" / "config.yml").write_text("denoise_fn_config: [unclosed\n")
    return imp("pdae-dpm", "src")


@case("import-config-json-not-utf8", "over.json", "not UTF-8")
def _(ws: Path, assets: Path) -> list[str]:
    torch.save({"state_dict": {}}, ws / "last.ckpt")
    (ws / "over.json").write_bytes(b'{"unet": {"base_channels": "\xe9"}}')
    return imp("diffae-ddim", "last.ckpt", "out", "--config-json", "over.json")


@case("import-out-is-a-user-folder", "mine", "not a model folder written by pdae")
def _(ws: Path, assets: Path) -> list[str]:
    shutil.copytree(assets / "official" / "pre-trained-dpms" / "tiny", ws / "src")
    user_folder(ws / "mine")
    return imp("pdae-dpm", "src", "mine")


@case("import-out-is-a-user-folder-with-our-config", "mine", "not a model folder written by pdae", "thesis.tex")
def _(ws: Path, assets: Path) -> list[str]:
    shutil.copytree(assets / "official" / "pre-trained-dpms" / "tiny", ws / "src")
    our_folder(ws / "mine")
    (ws / "mine" / "thesis.tex").write_text("the user put this here\n")
    return imp("pdae-dpm", "src", "mine", "--force")


@case("import-out-is-a-file", "out", "exists and is not a folder")
def _(ws: Path, assets: Path) -> list[str]:
    shutil.copytree(assets / "official" / "pre-trained-dpms" / "tiny", ws / "src")
    (ws / "out").write_text("a file\n")
    return imp("pdae-dpm", "src", "out", "--force")


@case("import-out-exists-without-force", "out", "already exists", "--force")
def _(ws: Path, assets: Path) -> list[str]:
    shutil.copytree(assets / "official" / "pre-trained-dpms" / "tiny", ws / "src")
    our_folder(ws / "out")
    return imp("pdae-dpm", "src", "out")


@case("import-out-locked-by-another-run", "out", "another run is writing it", "pid 4242 on host elsewhere")
def _(ws: Path, assets: Path) -> list[str]:
    # A lock held by another live process, with its record; the command must refuse at once. (Not held by
    # this test's process: reading the file for the checksums would release a POSIX lock held here.)
    shutil.copytree(assets / "official" / "pre-trained-dpms" / "tiny", ws / "src")
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(ws / "out.lock")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    HOLDERS.append(holder)
    return imp("pdae-dpm", "src", "out")


LOCK_HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
os.write(fd, b"pdae-lock pid=4242 host=elsewhere since=2026-01-01T00:00:00Z\\n")
fcntl.lockf(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""
HOLDERS: list[subprocess.Popen] = []


@case("bench-out-is-a-user-file", "notes.json", "not a `pdae bench` record")
def _(ws: Path, assets: Path) -> list[str]:
    (ws / "notes.json").write_text('{"mine": true}\n')
    return ["bench", "--steps", "1", "--warmup", "0", "--device", "cpu", "--out", "notes.json"]


def test_corpus_has_at_least_60_cases() -> None:
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(case: Case, cli: Any, assets: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    try:
        argv = case.setup(ws, assets)
        before = tree(ws)
        res = cli(argv, ws, timeout=120)
        line = one_error_line(res)
        for needle in case.expect:
            assert needle in line, f"{needle!r} not in {line!r}"
        assert tree(ws) == before, "the workspace changed: a file was modified, created or removed"
    finally:
        while HOLDERS:
            holder = HOLDERS.pop()
            holder.stdin.close()
            holder.wait(timeout=30)


# ---------------------------------------------------------------------------------------------------
# Faults during a run: a second writer, signals, a full disk, kill -9.

RUN = deep_merge(BASE, {"train": {"images": 192, "resume_every_images": 16, "log_every_images": 32,
                                  "snapshot_images": [64, 112, 160]}})
SNAPSHOTS = [f"img{n:09d}" for n in RUN["train"]["snapshot_images"]]


def final_artifacts(out: Path) -> dict[str, Any]:
    """What must be bitwise equal between runs: every tensor file and config (metadata holds times), the log's
    step, images seen, loss and learning rate."""
    files = {}
    for path in sorted(out.rglob("*")):
        if path.is_file() and path.name in ("model.safetensors", "config.json", "train_config.json"):
            files[str(path.relative_to(out))] = hashlib.sha256(path.read_bytes()).hexdigest()
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    return {"files": files, "log": [(r["step"], r["images_seen"], r["loss"], r["lr"]) for r in log]}


TRAIN_RUN = ["train", "dpm", "--config", "run.yaml", "--out", "model", "--no-progress", "--seed", "3"]


def fresh_run(ws: Path) -> Result:
    """The run in a new interpreter (`python -m pdae`), whatever runs the interrupted ones."""
    p = subprocess.run(pdae_cmd(*TRAIN_RUN), cwd=ws, env=ENV, capture_output=True, text=True, timeout=300)
    return Result(p.returncode, p.stdout, p.stderr)


def wait_for(predicate: Callable[[], bool], proc: Proc | None = None, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        assert proc is None or proc.poll() is None, f"the run ended first: {proc.wait()}"
        time.sleep(0.01)


def images_saved(state: Path) -> int:
    try:
        return int(torch.load(state, weights_only=True)["images_seen"])
    except Exception:  # noqa: BLE001 - not there yet
        return -1


def assert_final_folders_clean(ws: Path, out: str = "model") -> None:
    """The resume folder holds only what training writes there (no temporary or partial entry, complete
    snapshots only) and the output, if there, is a complete model folder. (After a kill -9 the lock file and
    the staging folder beside the output remain, by design, until the next run on it removes them.)"""
    from pdae.fsutil import check_resume_folder, is_model_folder

    check_resume_folder(ws / f"{out}.resume")
    assert not (ws / out).exists() or is_model_folder(ws / out)


def assert_nothing_temporary(ws: Path, out: str = "model") -> None:
    assert leftovers(ws) == []
    assert_final_folders_clean(ws, out)


def finish_and_compare(ws: Path, reference: dict[str, Any], runner: Runner) -> None:
    """Rerun to the end (the reference ran in a new interpreter, this in the runner's kind of process)."""
    res = runner.run(TRAIN_RUN, ws)
    assert res.rc == 0, res.err
    assert final_artifacts(ws / "model") == {k: v for k, v in reference.items() if k != "seconds"}
    assert_nothing_temporary(ws)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The uninterrupted run everything else must reproduce."""
    ws = tmp_path_factory.mktemp("reference")
    write_yaml(ws / "run.yaml", RUN)
    t0 = time.monotonic()
    res = fresh_run(ws)
    assert res.rc == 0, res.err
    assert "wrote model" in res.out
    return {**final_artifacts(ws / "model"), "seconds": time.monotonic() - t0}


def test_reference_run_layout(reference: dict[str, Any]) -> None:
    assert sorted(k for k in reference["files"] if k.startswith("snapshots")) == [
        f"snapshots/{name}/{f}" for name in SNAPSHOTS for f in ("config.json", "model.safetensors")]
    assert [r[1] for r in reference["log"]] == list(range(32, 193, 32))


def test_one_writer_sigterm_sigint_then_rerun_is_bitwise_equal(reference: dict[str, Any], runner: Runner,
                                                               tmp_path: Path) -> None:
    """A second run on a busy output is refused at once (naming the holder's PID and host); SIGTERM and then
    SIGINT stop the run at a step boundary with a resume state and one line; the rerun equals the reference."""
    write_yaml(tmp_path / "run.yaml", RUN)
    state = tmp_path / "model.resume" / "state.pt"
    first = runner.spawn(TRAIN_RUN, tmp_path)
    wait_for(lambda: images_saved(state) > 0, first)
    t0 = time.monotonic()
    line = one_error_line(runner.run(TRAIN_RUN, tmp_path))
    assert f"pid {first.pid} on host " in line and "model: another run is writing it" in line
    assert first.poll() is None and time.monotonic() - t0 < reference["seconds"], "refused while the first runs"

    first.send_signal(signal.SIGTERM)
    res = first.wait()
    assert res.rc == 128 + signal.SIGTERM, res.err
    assert res.err.strip().count("\n") == 0 and "interrupted: stopped by SIGTERM after step" in res.err
    assert "Traceback" not in res.err and "model.resume" in res.err
    step = int(res.err.split("after step ")[1].split()[0])
    assert images_saved(state) == 16 * step > 0  # saved at the boundary it names
    assert not (tmp_path / "model").exists()
    assert_nothing_temporary(tmp_path)

    second = runner.spawn(TRAIN_RUN, tmp_path)
    wait_for(lambda: images_saved(state) > 16 * step, second)
    second.send_signal(signal.SIGINT)
    res = second.wait()
    assert res.rc == 130, res.err
    assert res.err.strip().count("\n") == 0 and "interrupted: stopped by SIGINT after step" in res.err
    step2 = int(res.err.split("after step ")[1].split()[0])
    assert images_saved(state) == 16 * step2 > 16 * step
    assert_nothing_temporary(tmp_path)
    finish_and_compare(tmp_path, reference, runner)
    assert json.loads((tmp_path / "model" / "metadata.json").read_text())["resumed_from_images"] == 16 * step2


@pytest.mark.slow
def test_kill9_at_random_moments_then_rerun_is_bitwise_equal(reference: dict[str, Any], runner: Runner,
                                                            tmp_path: Path) -> None:
    """KILLS (default 3, PDAE_ROBUST_KILLS=20) kill -9 at random moments of training, chained (each rerun is
    killed again) until the count is reached; after each kill no temporary file is in a final folder, and each
    chain ends with an uninterrupted rerun bitwise equal to the reference."""
    rng = random.Random(int(os.environ.get("PDAE_ROBUST_SEED", "14")))
    ws = tmp_path / "chain"
    kills = 0
    while kills < KILLS:
        shutil.rmtree(ws, ignore_errors=True)
        ws.mkdir()
        write_yaml(ws / "run.yaml", RUN)
        state = ws / "model.resume" / "state.pt"
        while kills < KILLS:
            before = images_saved(state)
            proc = runner.spawn(TRAIN_RUN, ws)
            # Once this process trains (a newer state), kill it at a random moment of the next ~0.8 s.
            deadline = time.monotonic() + 120
            while images_saved(state) <= before and proc.poll() is None:
                assert time.monotonic() < deadline, "no progress"
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.8))
            if proc.poll() is not None:  # it finished first
                assert proc.wait().rc == 0
                break
            proc.kill()
            rc = proc.wait().rc
            if rc == 0:  # it finished between the poll and the kill
                break
            assert rc == -signal.SIGKILL
            kills += 1
            assert_final_folders_clean(ws)
            if (ws / "model").exists():
                break  # killed after the final rename: the result is complete
        if (ws / "model").exists():
            assert final_artifacts(ws / "model") == {k: v for k, v in reference.items() if k != "seconds"}
        else:
            finish_and_compare(ws, reference, runner)


def _kill_during(ws: Path, proc: Proc, name_part: str, timeout: float = 120) -> bool:
    """SIGKILL `proc` as soon as a staging entry containing `name_part` appears in its staging folder; True if
    the entry was still there after the kill (the write was cut short)."""
    staging = ws / ".model.pdae-staging"
    deadline = time.monotonic() + timeout

    def ours() -> bool:  # the folder is this process's (a killed run's leftovers are removed first)
        try:
            return f"(pid {proc.pid})" in (staging / ".pdae-staging").read_text()
        except OSError:
            return False

    while time.monotonic() < deadline and proc.poll() is None and not ours():
        time.sleep(0.001)
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            names = os.listdir(staging)
        except FileNotFoundError:
            names = []
        if any(name_part in n for n in names):
            proc.kill()
            proc.wait()
            return any(name_part in n for n in os.listdir(staging))
        time.sleep(0.0002)
    proc.kill()
    proc.wait()
    return False


@pytest.mark.slow
def test_kill9_during_snapshot_writes_leaves_no_temporary_file(reference: dict[str, Any], runner: Runner,
                                                              tmp_path: Path) -> None:
    """SNAPSHOT_KILLS (default 1, PDAE_ROBUST_SNAPSHOT_KILLS=3) kill -9 while a snapshot is being written (its
    folder is in the staging area): none reaches a final folder half-written, and the rerun is bitwise equal."""
    write_yaml(tmp_path / "run.yaml", RUN)
    hits, tries = 0, 0
    snapshots = SNAPSHOTS
    while hits < SNAPSHOT_KILLS:
        tries += 1
        assert tries <= 10 * SNAPSHOT_KILLS, "could not catch a snapshot write"
        done = {p.name for p in (tmp_path / "model.resume" / "snapshots").glob("img*")}
        todo = [name for name in snapshots if name not in done]
        if not todo:  # every snapshot written: start over
            shutil.rmtree(tmp_path / "model.resume")
            continue
        if _kill_during(tmp_path, runner.spawn(TRAIN_RUN, tmp_path), todo[0]):
            hits += 1
            assert not (tmp_path / "model.resume" / "snapshots" / todo[0]).exists()  # cut: not in the final folder
            assert_final_folders_clean(tmp_path)
    assert not (tmp_path / "model").exists()
    finish_and_compare(tmp_path, reference, runner)


# Disk full: a 2 MiB tmpfs mounted in a private mount namespace (no root needed where user namespaces are
# allowed); elsewhere RLIMIT_FSIZE makes every write past 1 MiB fail with EFBIG (SIGXFSZ ignored).

_DISK_FULL_DRIVER = r"""
import json, os, subprocess, sys
from pathlib import Path
ws, argv = Path(sys.argv[1]), json.loads(sys.argv[2])
if os.environ.get("SETUP_OUR_FOLDER"):
    import torch
    from pdae.checkpoint import save_model_folder
    save_model_folder(ws / "out", {"unet.w": torch.arange(4.0)}, {"format": "pdae-bench/1", "method": "dpm",
        "components": {"unet": {"class": "UNet", "kwargs": {}}}, "diffusion": None, "method_kwargs": {}}, {})
before = {str(p.relative_to(ws)): p.read_bytes() for p in ws.rglob("*") if p.is_file()}
p = subprocess.run([sys.executable, "-m", "pdae", *argv], cwd=ws, capture_output=True, text=True)
after = {str(p.relative_to(ws)): p.read_bytes() for p in ws.rglob("*") if p.is_file()}
entries = sorted(str(q.relative_to(ws)) for q in ws.rglob("*"))
print(json.dumps({"rc": p.returncode, "out": p.stdout, "err": p.stderr, "entries": entries,
                  "kept": all(after.get(k) == v for k, v in before.items())}))
"""


def _small_filesystem_available() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt || exit 1"],
                           capture_output=True)
    return probe.returncode == 0


def _run_with_full_disk(ws: Path, argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    driver = [sys.executable, "-c", _DISK_FULL_DRIVER, str(ws), json.dumps(argv)]
    if _small_filesystem_available():
        # Inputs outside the tmpfs (read only), outputs in it.
        script = f'mount -t tmpfs -o size=2m tmpfs "{ws}" && exec "$@"'
        proc = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", *driver], env=env, capture_output=True,
                              text=True, timeout=300)
    else:
        import resource

        def limit() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

        proc = subprocess.run(driver, env=env, capture_output=True, text=True, timeout=300, preexec_fn=limit)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_disk_full_during_training_is_one_line_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_yaml(inputs / "run.yaml", RUN)
    (tmp_path / "ws").mkdir()
    res = _run_with_full_disk(tmp_path / "ws", ["train", "dpm", "--config", str(inputs / "run.yaml"), "--out", "model",
                                                "--no-progress"], ENV)
    line = one_error_line(Result(res["rc"], res["out"], res["err"]))
    assert line.startswith("error: cannot write ") and "model.resume/state.pt" in line
    assert "No space left on device" in line or "File too large" in line
    # Nothing temporary and no final folder; the resume folder holds only our files.
    assert not any(e.endswith((".lock", ".pdae-staging")) or ".tmp" in e for e in res["entries"]), res["entries"]
    assert "model" not in res["entries"]
    assert set(res["entries"]) <= {"model.resume", "model.resume/train_log.jsonl", "model.resume/state.pt"}


def test_disk_full_during_import_keeps_the_old_folder(tmp_path: Path, assets: Path) -> None:
    src = assets / "official" / "pre-trained-dpms" / "tiny"
    (tmp_path / "ws").mkdir()
    res = _run_with_full_disk(tmp_path / "ws", ["import", "pdae-dpm", str(src), "--out", "out", "--force"],
                              {**ENV, "SETUP_OUR_FOLDER": "1"})
    line = one_error_line(Result(res["rc"], res["out"], res["err"]))
    assert line.startswith("error: cannot write out/model.safetensors")
    assert "No space left on device" in line or "File too large" in line
    assert res["kept"], "the existing model folder changed"
    assert res["entries"] == ["out", "out/config.json", "out/metadata.json", "out/model.safetensors"]


# ---------------------------------------------------------------------------------------------------
# The pieces, directly.


def test_lock_dies_with_its_process_not_with_its_forked_children(tmp_path: Path) -> None:
    """A run killed by kill -9 whose DataLoader workers live on a little must not keep its output locked:
    the lock is a POSIX lock (per process), not a flock (shared with forked children)."""
    from pdae.fsutil import OutputError, OutputLock

    ready = tmp_path / "ready"
    pid = os.fork()
    if pid == 0:  # the run: take the lock, fork a long-lived "worker", then die by SIGKILL
        try:
            lock = OutputLock(tmp_path / "out").__enter__()  # noqa: F841 - held until the kill
            if os.fork() == 0:
                time.sleep(5)
                os._exit(0)
            ready.write_text("x")
            time.sleep(60)
        finally:
            os._exit(1)
    wait_for(ready.exists)
    with pytest.raises(OutputError, match=rf"another run is writing it \(pid {pid} on host "):
        OutputLock(tmp_path / "out").__enter__()
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    with OutputLock(tmp_path / "out") as lock:  # at once, although the "worker" still runs
        # (read through the lock's own descriptor: closing any other one of this file would drop a POSIX lock)
        assert os.pread(lock.fd, 200, 0).decode().startswith(f"pdae-lock pid={os.getpid()} ")
        with pytest.raises(OutputError, match="another run in this process"):
            OutputLock(tmp_path / "out").__enter__()
    assert lock.fd is None and not (tmp_path / "out.lock").exists()


def test_swap_in_replaces_a_folder_whole(tmp_path: Path) -> None:
    from pdae.fsutil import swap_in

    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "a").write_text("old")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "b").write_text("new")
    swap_in(tmp_path / "new", tmp_path / "old")
    assert sorted(os.listdir(tmp_path)) == ["old"] and os.listdir(tmp_path / "old") == ["b"]


def test_ownership_rules(tmp_path: Path) -> None:
    from pdae.fsutil import OutputError, check_replaceable, check_resume_folder, is_model_folder

    our_folder(tmp_path / "ours")
    assert is_model_folder(tmp_path / "ours")
    check_replaceable(tmp_path / "ours", force=True)
    with pytest.raises(OutputError, match="pass --force"):
        check_replaceable(tmp_path / "ours", force=False)
    (tmp_path / "ours" / "config.json").write_text(json.dumps({"format": "someone-else/1"}))
    assert not is_model_folder(tmp_path / "ours")  # a config.json of another program: not ours
    with pytest.raises(OutputError, match="not a model folder written by pdae"):
        check_replaceable(tmp_path / "ours", force=True)
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty", force=False)
    check_resume_folder(tmp_path / "empty")
    (tmp_path / "empty" / "state.pt").write_bytes(b"")
    (tmp_path / "empty" / "snapshots" / ".img000000064.tmp-abc").mkdir(parents=True)  # an old version's leftover
    check_resume_folder(tmp_path / "empty")
    (tmp_path / "empty" / "snapshots" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="snapshots/notes.txt"):
        check_resume_folder(tmp_path / "empty")


def test_write_failure_names_the_file_and_the_reason(tmp_path: Path) -> None:
    import errno

    from pdae.fsutil import WriteError, write_failure, writing

    err = write_failure(tmp_path / "m" / "state.pt", OSError(errno.ENOSPC, "No space left on device"))
    assert str(err) == f"cannot write {tmp_path / 'm' / 'state.pt'}: No space left on device" and err.errno == errno.ENOSPC
    err = write_failure(tmp_path / "w", RuntimeError("SafetensorError: IoError(Os { code: 28, kind: StorageFull })"))
    assert "No space left on device" in str(err)
    tmp = tmp_path / "partial"
    with pytest.raises(WriteError, match="cannot write .*final: disk"):
        with writing(tmp_path / "final", cleanup=[tmp]):
            tmp.write_bytes(b"half")
            raise OSError("disk")
    assert not tmp.exists()
