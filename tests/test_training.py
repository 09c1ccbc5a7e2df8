"""The shared training loop: every method trains and reloads; resume is bitwise exact; failures are clean."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from pdae.config import ConfigError, RunConfig, TrainConfig, from_dict, load_run_config
from pdae.checkpoint import load_method
from pdae.methods import DPM
from pdae.training import (
    DistInfo, IndexBatches, LossMeter, TensorPairs, TrainingError, batch_loader, global_indices, train,
)

REPO = Path(__file__).resolve().parents[1]
DATA = {"name": "digits", "image_size": 8, "channels": 1}
TINY_UNET = {"base_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_ds": [2], "dropout": 0.1}


def tiny_config(**train: object) -> RunConfig:
    cfg = RunConfig(
        data=dict(DATA),
        nets={"unet": dict(TINY_UNET)},
        train=TrainConfig(images=96, batch_size=16, lr=1e-3, ema_decay=0.9, log_every_images=32,
                          resume_every_images=32),
    )
    for key, value in train.items():
        setattr(cfg.train, key, value)
    return cfg


def write_config(path: Path, cfg: RunConfig) -> Path:
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


@pytest.fixture(scope="module")
def dpm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dpm") / "model"
    train("dpm", tiny_config(), out, seed=0, progress=False)
    return out


def test_dpm_folder_layout_and_reload(dpm_dir: Path) -> None:
    assert sorted(p.name for p in dpm_dir.iterdir()) == [
        "config.json", "metadata.json", "model.safetensors", "train_config.json", "train_log.jsonl"]
    meta = json.loads((dpm_dir / "metadata.json").read_text())
    assert meta["images_seen"] == 96 and meta["steps"] == 6 and meta["seed"] == 0
    assert meta["code_version"]
    log = [json.loads(line) for line in (dpm_dir / "train_log.jsonl").read_text().splitlines()]
    assert [r["images_seen"] for r in log] == [32, 64, 96]
    assert all(r["loss"] > 0 and r["images_per_s"] > 0 for r in log)
    assert not dpm_dir.with_name("model.resume").exists()
    method = load_method(dpm_dir)
    assert isinstance(method, DPM)
    # The folder holds the EMA weights, not the raw ones: reloading reproduces them exactly.
    saved = load_file(dpm_dir / "model.safetensors")
    for key, value in method.unet.state_dict().items():
        assert torch.equal(saved[f"unet.{key}"], value)


def test_every_method_trains_on_the_shared_loop(dpm_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config(images=32)
    cfg.nets = {"encoder": {"latent_dim": 16, "channels": [32], "attention_resolutions": []},
                "estimator": {"latent_dim": 16}}
    pdae_dir = train("pdae", cfg, tmp_path / "pdae", dpm_dir=dpm_dir, progress=False).out_dir
    pdae = load_method(pdae_dir)
    # The frozen prior inside PDAE is the DPM's EMA weights, unchanged by PDAE training.
    dpm = load_method(dpm_dir)
    for key, value in dpm.unet.state_dict().items():
        assert torch.equal(pdae.prior.state_dict()[key], value)
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    assert pdae.encode(x).shape == (4, 16)

    cfg.nets = {"estimator": {}}
    train("pdae_class", cfg, tmp_path / "pdae_class", dpm_dir=dpm_dir, progress=False)
    assert load_method(tmp_path / "pdae_class").name == "pdae_class"

    cfg.nets = {"model": {"base_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
                          "attention_resolutions": [], "latent_dim": 16, "enc_channel_mult": [1, 2],
                          "enc_attention_resolutions": []}}
    cfg.diffusion = {"kind": "linear", "T": 1000}
    train("diffae", cfg, tmp_path / "diffae", progress=False)
    assert load_method(tmp_path / "diffae").encode(x).shape == (4, 16)

    cfg.nets = {"net": {"hidden": 32, "num_layers": 3, "time_dim": 16, "time_out": 16}}
    cfg.diffusion = {"kind": "const", "T": 1000, "beta": 0.008}
    latent = load_method(train("latent", cfg, tmp_path / "latent", encoder_dir=pdae_dir, progress=False).out_dir)
    z = torch.stack([pdae.encode(x)]).squeeze(0)
    assert latent.stats.std.min() > 0 and latent.stats.mean.shape == (16,)
    assert torch.isfinite(latent.stats.normalize(z)).all()

    cfg.nets = {"head": {}}
    clf = load_method(train("classifier", cfg, tmp_path / "clf", encoder_dir=pdae_dir, progress=False).out_dir)
    assert clf.predict_logits(z).shape == (4, 10)

    cfg.nets = {"net": {"channels": [16, 32], "feature_dim": 32}}
    feat = load_method(train("feature_net", cfg, tmp_path / "feat", progress=False).out_dir)
    assert feat.net(x).shape == (4, 10)


def test_data_order_depends_only_on_seed_and_position() -> None:
    whole = global_indices(3, 10, 0, 35)
    assert torch.equal(torch.cat([global_indices(3, 10, 0, 12), global_indices(3, 10, 12, 23)]), whole)
    for epoch in range(3):  # each epoch is a permutation
        assert sorted(whole[10 * epoch : 10 * epoch + 10].tolist()) == list(range(10))
    assert not torch.equal(whole[:10], whole[10:20])


def test_index_batches_follow_global_order_and_shard_by_rank() -> None:
    n, batch = 10, 4
    whole = global_indices(3, n, 8, 5 * batch)  # from global sample 8 on, across epoch boundaries
    got = [torch.tensor(b) for b in IndexBatches(3, n, 8, batch, 5)]
    assert torch.equal(torch.cat(got), whole)
    ranks = [list(IndexBatches(3, n, 8, batch, 5, rank=r, world=2)) for r in range(2)]
    for k in range(5):  # rank 0 takes the first half of every global batch, rank 1 the second
        assert ranks[0][k] + ranks[1][k] == got[k].tolist() and len(ranks[0][k]) == batch // 2


def test_persistent_loader_with_workers_gives_the_in_process_batches() -> None:
    from pdae.data import build_dataset

    dataset = build_dataset(dict(DATA), split="train")
    batches = IndexBatches(1, len(dataset), 40, 16, 6)
    ref = list(batch_loader(dataset, batches, num_workers=0))
    loader = batch_loader(dataset, batches, num_workers=2, prefetch_factor=2)
    assert loader.persistent_workers
    for _ in range(2):  # a second pass reuses the same worker processes
        got = list(loader)
        assert len(got) == 6
        for (x, y), (rx, ry) in zip(got, ref):
            assert torch.equal(x, rx) and torch.equal(y, ry) and x.shape == (16, 1, 8, 8)


def test_in_memory_latents_are_fetched_as_one_gather_with_the_same_values() -> None:
    z, y = torch.randn(50, 6), torch.randint(0, 3, (50,))
    pairs = TensorPairs(z, y)
    batches = IndexBatches(2, 50, 30, 16, 4)
    for (zb, yb), idx in zip(batch_loader(pairs, batches, num_workers=0), batches):
        assert torch.equal(zb, torch.stack([pairs[i][0] for i in idx])) and torch.equal(yb, y[idx])


def test_loss_meter_sums_on_device_and_finds_the_first_nonfinite_step() -> None:
    meter = LossMeter(torch.device("cpu"), total=1.5, count=1)
    for step, value in enumerate([0.5, float("nan"), 2.0, float("inf")], start=7):
        meter.add(torch.tensor(value), step)
    assert meter.first_nonfinite(DistInfo()) == 8
    ok = LossMeter(torch.device("cpu"))
    for step, value in enumerate([0.25, 0.5, 0.75], start=1):
        ok.add(torch.tensor(value, dtype=torch.float32), step)
    assert ok.first_nonfinite(DistInfo()) == 0 and ok.mean(DistInfo()) == 0.5 and ok.state() == [1.5, 3]
    ok.reset()
    assert ok.state() == [0.0, 0]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pdae", "train", *args, "--no-progress"]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_kill9_then_rerun_is_bitwise_identical(tmp_path: Path, num_workers: int) -> None:
    """Also with the persistent loader's worker processes: the batches after a resume are the same."""
    cfg = tiny_config(images=320, resume_every_images=16, log_every_images=64, num_workers=num_workers)
    path = write_config(tmp_path / "cfg.yaml", cfg)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = tmp_path / "ref"
    subprocess.run(_cli("dpm", "--config", str(path), "--out", str(ref), "--seed", "5"), check=True, env=env)

    out = tmp_path / "killed"
    state = tmp_path / "killed.resume" / "state.pt"
    proc = subprocess.Popen(_cli("dpm", "--config", str(path), "--out", str(out), "--seed", "5"), env=env)
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # land somewhere in the middle of training
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "a killed run must leave no final artifact"
    resumed_from = torch.load(state, weights_only=True)["images_seen"]
    assert 0 < resumed_from < 320
    subprocess.run(_cli("dpm", "--config", str(path), "--out", str(out), "--seed", "5"), check=True, env=env)
    assert (out / "model.safetensors").read_bytes() == (ref / "model.safetensors").read_bytes()
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["resumed_from_images"] >= resumed_from
    ref_log = [json.loads(x) for x in (ref / "train_log.jsonl").read_text().splitlines()]
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [(r["images_seen"], r["loss"]) for r in log] == [(r["images_seen"], r["loss"]) for r in ref_log]


def _explode_at(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Make the DPM's loss NaN at its `step`-th call (the check runs later, where the loop logs or saves)."""
    calls = {"n": 0}
    original = DPM.loss_from

    def exploding(self, x, y, draws):  # noqa: ANN001
        calls["n"] += 1
        loss = original(self, x, y, draws)
        return loss * float("nan") if calls["n"] == step else loss

    monkeypatch.setattr(DPM, "loss_from", exploding)


def test_non_finite_loss_stops_and_keeps_last_good_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _explode_at(monkeypatch, 5)
    out = tmp_path / "model"
    with pytest.raises(TrainingError, match=r"non-finite loss at step 5 \(64 images seen before it\); the last good resume state"):
        train("dpm", tiny_config(resume_every_images=32), out, progress=False)
    assert not out.exists()
    state = torch.load(tmp_path / "model.resume" / "state.pt", weights_only=True)
    assert state["images_seen"] == 64  # saved after step 4; nothing after the NaN step was saved
    assert not (tmp_path / "model.resume" / "snapshots").exists()


def test_non_finite_loss_before_any_resume_state_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _explode_at(monkeypatch, 2)
    with pytest.raises(TrainingError, match=r"non-finite loss at step 2 .*no resume state was written before it"):
        train("dpm", tiny_config(resume_every_images=160), tmp_path / "model", progress=False)
    assert not (tmp_path / "model.resume" / "state.pt").exists()


@pytest.mark.parametrize(
    ("section", "mutate", "message"),
    [
        ("train", {"imagez": 5}, "config.train.imagez: unknown key"),
        ("train", {"images": "many"}, "config.train.images: expected an integer"),
        ("train", {"lr": [1]}, "config.train.lr: expected a number"),
        ("top", {"trian": {}}, "config.trian: unknown key"),
        ("data", {"name": "digits", "image_sise": 8}, "data.image_sise"),
        ("nets", {"unet": {"base_channel": 32}}, "config.nets.unet"),
    ],
)
def test_bad_config_is_one_line_error_and_leaves_nothing(tmp_path: Path, section: str, mutate: dict, message: str) -> None:
    raw = tiny_config().to_dict()
    if section == "top":
        raw.update(mutate)
    elif section in ("data", "nets"):
        raw[section] = mutate
    else:
        raw[section].update(mutate)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "model"
    proc = subprocess.run(_cli("dpm", "--config", str(path), "--out", str(out)), capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert not out.exists() and not (tmp_path / "model.resume" / "state.pt").exists()


def test_missing_config_and_missing_dpm_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_run_config(tmp_path / "nope.yaml")
    cfg = tiny_config()
    cfg.nets = {}
    with pytest.raises(ValueError, match="needs a trained DPM"):
        train("pdae", cfg, tmp_path / "p", progress=False)
    with pytest.raises(ConfigError, match="x.ema_decay: must be in"):
        from_dict(TrainConfig, {"ema_decay": 1.5}, "x")


@pytest.mark.parametrize("problem", ["missing", "empty", "truncated", "channels", "labels"])
def test_bad_data_is_one_line_error_naming_the_file(tmp_path: Path, problem: str) -> None:
    from PIL import Image

    folder = tmp_path / "images"
    data = {"name": "folder", "path": str(folder), "image_size": 8, "channels": 3}
    if problem != "missing":
        folder.mkdir()
    if problem not in ("missing", "empty"):
        for i in range(4):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(folder / f"img{i}.png")
    culprit = {"missing": "images", "empty": "images", "truncated": "img2.png", "channels": "img1.png",
               "labels": "labels.csv"}[problem]
    if problem == "truncated":
        raw = (folder / "img2.png").read_bytes()
        (folder / "img2.png").write_bytes(raw[: len(raw) // 2])
    elif problem == "channels":
        Image.new("L", (8, 8), 7).save(folder / "img1.png")
    elif problem == "labels":
        (folder / "labels.csv").write_text("file,label\nimg0.png,0\nimg1.png,1\n")
        data["labels"] = str(folder / "labels.csv")
    cfg = tiny_config()
    cfg.data = data
    path = write_config(tmp_path / "cfg.yaml", cfg)
    out = tmp_path / "model"
    proc = subprocess.run(_cli("dpm", "--config", str(path), "--out", str(out)), capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and culprit in lines[0], proc.stderr
    assert not out.exists() and not (tmp_path / "model.resume").exists()


# EMA warm-up: decay_n = min(decay, (1 + n) / (10 + n)) (latent-diffusion's LitEma rule).
def test_ema_decay_warmup_pinned_values() -> None:
    from pdae.training import ema_decay_at

    assert ema_decay_at(0.9999, 1) == pytest.approx(2 / 11)
    assert ema_decay_at(0.9999, 10) == pytest.approx(11 / 20)
    assert ema_decay_at(0.9999, 100) == pytest.approx(101 / 110)
    assert ema_decay_at(0.99, 1000) == 0.99         # 1001/1010 = 0.991 > 0.99: the ceiling wins
    assert ema_decay_at(0.9, 100) == 0.9            # 101/110 = 0.918 > 0.9
    assert ema_decay_at(0.999, 5, warmup=False) == 0.999
    with pytest.raises(ValueError):
        ema_decay_at(0.999, 0)


def test_ema_cannot_export_its_initialisation() -> None:
    """Weight of the initial parameters in the EMA after N updates: prod_n decay_n.

    Without warm-up at the old latent budget (391 steps, decay 0.999) it is 0.999^391 = 0.676; with the
    warm-up it is prod_{n=1}^{391} (1 + n)/(10 + n) = 10! * 392! / (401! * 1) < 1e-9."""
    from pdae.training import EMA, ema_decay_at

    weight_plain = math.prod(ema_decay_at(0.999, n, warmup=False) for n in range(1, 392))
    weight_warm = math.prod(ema_decay_at(0.999, n) for n in range(1, 392))
    assert weight_plain == pytest.approx(0.999 ** 391) and 0.67 < weight_plain < 0.68
    assert weight_warm < 1e-9
    # The class applies it: a parameter stepping from 0 to 1 after init is ~1 in the EMA, not ~0.
    m = DPM.__new__(DPM)
    torch.nn.Module.__init__(m)
    m.w = torch.nn.Parameter(torch.zeros(3))
    ema = EMA(m, 0.999)
    with torch.no_grad():
        m.w.fill_(1.0)
    for n in range(1, 392):
        ema.update(m, n)
    assert torch.allclose(ema.shadow["w"], torch.ones(3), atol=1e-8)
    plain = EMA(m, 0.999, warmup=False)
    plain.shadow["w"].zero_()
    for n in range(1, 392):
        plain.update(m, n)
    assert plain.shadow["w"][0].item() == pytest.approx(1 - 0.999 ** 391, rel=1e-4)


def test_amp_auto_uses_bf16_only_for_image_nets_on_bf16_hardware(dpm_dir: Path) -> None:
    from pdae import precision
    from pdae.training import amp_enabled

    cpu = torch.device("cpu")
    assert amp_enabled("bf16", cpu, "latents") and not amp_enabled("off", cpu, "images")
    assert amp_enabled("auto", cpu, "images") == precision.cpu_has_bf16()
    assert not amp_enabled("auto", cpu, "latents")
    # The precision a model was trained in is part of its provenance.
    meta = json.loads((dpm_dir / "metadata.json").read_text())
    assert meta["precision"] == ("bf16" if precision.cpu_has_bf16() else "fp32")
