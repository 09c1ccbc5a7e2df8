"""DistributedDataParallel: `torchrun --nproc_per_node 2` (gloo, CPU) trains PDAE like one process does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.test_training import tiny_config

TORCHRUN = shutil.which("torchrun", path=os.path.dirname(sys.executable))


def _pdae_config(path: Path) -> Path:
    cfg = tiny_config(images=1280, batch_size=32, log_every_images=128, resume_every_images=640, lr=1e-3)
    cfg.nets = {"encoder": {"latent_dim": 16, "channels": [32], "attention_resolutions": []},
                "estimator": {"latent_dim": 16}}
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


def _losses(folder: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (folder / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not installed next to the interpreter")
def test_two_process_pdae_matches_single_process_within_noise(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    dpm_cfg = tmp_path / "dpm.yaml"
    dpm_cfg.write_text(yaml.safe_dump(tiny_config(images=640, batch_size=32).to_dict()))
    base = [sys.executable, "-m", "pdae", "train"]
    subprocess.run([*base, "dpm", "--config", str(dpm_cfg), "--out", str(tmp_path / "dpm"), "--no-progress"],
                   check=True, env=env)
    cfg = _pdae_config(tmp_path / "pdae.yaml")
    args = ["pdae", "--config", str(cfg), "--dpm", str(tmp_path / "dpm"), "--no-progress"]

    for seed in (0, 1):
        subprocess.run([*base, *args, "--out", str(tmp_path / f"single{seed}"), "--seed", str(seed)], check=True, env=env)
    ddp = subprocess.run(
        [TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "pdae", "train", *args,
         "--out", str(tmp_path / "ddp"), "--seed", "0"],
        env=env, capture_output=True, text=True,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    meta = json.loads((tmp_path / "ddp" / "metadata.json").read_text())
    assert meta["world_size"] == 2 and meta["images_seen"] == 1280 and meta["steps"] == 40
    # Only rank 0 writes: one final folder, no leftover staging/resume folders.
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".ddp", "ddp"))) == ["ddp"]

    single, other, dist = _losses(tmp_path / "single0"), _losses(tmp_path / "single1"), _losses(tmp_path / "ddp")
    assert len(single) == len(dist) == 10
    # Both learn: the last logged losses are well below the first.
    assert dist[-1] < 0.7 * dist[0] and single[-1] < 0.7 * single[0]
    # Same global batch: the DDP curve differs from the single-process curve no more than two
    # single-process runs with different seeds differ from each other (the sampling noise).
    def gap(a: list[float], b: list[float]) -> float:
        return sum(abs(x - y) for x, y in zip(a, b)) / len(a)

    noise = gap(single, other)
    assert gap(dist, single) <= 2.0 * noise + 0.02 * (sum(single) / len(single))
