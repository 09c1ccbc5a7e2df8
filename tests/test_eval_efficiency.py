"""eval.efficiency: images_to_reach / ratios / loss stability pinned by hand; snapshot folders -> records."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch

from eval import efficiency
from eval.common import read_records
from pdae.checkpoint import save_model_folder
from pdae.methods import build_method, export_method

DATA = {"name": "digits", "image_size": 8, "channels": 1}
INFO = {"image_size": 8, "channels": 1, "num_classes": 10, "num_attributes": 0}
UNET = {"base_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_ds": [], "dropout": 0.0}
PDAE_NETS = {"encoder": {"latent_dim": 8, "channels": [32], "attention_resolutions": []}, "estimator": {"latent_dim": 8}}
DIFFAE_NETS = {"model": {"base_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [],
                         "latent_dim": 8, "enc_channel_mult": [1, 2], "enc_attention_resolutions": []}}
LINEAR = {"kind": "linear", "T": 1000}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny convolutions run fastest (and least disturbed by a busy machine) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------- pure functions

def test_images_to_reach_interpolates_between_snapshots() -> None:
    curve = [(100, 0.5), (200, 0.7), (400, 0.9)]
    assert efficiency.images_to_reach(curve, 0.8) == pytest.approx(300)
    assert efficiency.images_to_reach(curve, 0.7) == 200
    assert efficiency.images_to_reach(curve, 0.3) == 100          # already there at the first snapshot
    assert efficiency.images_to_reach(curve, 0.95) is None        # never reached
    assert efficiency.images_to_reach(list(reversed(curve)), 0.6) == pytest.approx(150)  # order does not matter
    mse = [(100, 0.04), (300, 0.01)]
    assert efficiency.images_to_reach(mse, 0.025, higher_is_better=False) == pytest.approx(200)
    assert efficiency.images_to_reach(mse, 0.001, higher_is_better=False) is None


def test_reach_ratio_and_lower_bound() -> None:
    pdae = [(100, 0.5), (200, 0.8)]
    diffae = [(100, 0.3), (400, 0.65)]
    assert efficiency.reach_ratio(pdae, diffae) == (pytest.approx(150 / 400), "yes")
    assert efficiency.reach_ratio(diffae, pdae) == (pytest.approx(400 / 200), "no")  # never reached: lower bound
    assert efficiency.reach_ratio([(300, 0.9)], diffae) == (pytest.approx(300 / 400), "first")  # upper bound


def test_loss_cv_and_throughput() -> None:
    # Last half of [9, 9, 1, 3]: [1, 3] -> population std 1, mean 2.
    assert efficiency.loss_cv([9, 9, 1, 3]) == pytest.approx(0.5)
    assert efficiency.loss_cv([2.0, 4.0, 1.0, 3.0, 5.0]) == pytest.approx(math.sqrt(8 / 3) / 3)  # [1, 3, 5]
    assert efficiency.loss_cv([5.0]) == 0.0
    log = [{"images_per_s": 10}, {"images_per_s": 100}, {"images_per_s": 200}]
    assert efficiency.mean_throughput(log) == 150 and efficiency.mean_throughput(log, world_size=2) == 75
    assert efficiency.mean_throughput(log[:1]) == 10


# ---------------------------------------------------------------------------------------------- model folders

def save(method, folder: Path, images: int, wall: float, seed: int) -> None:
    tensors, config = export_method(method)
    meta = {"seed": seed, "images_seen": images, "wall_time_s": wall, "code_version": "test", "data": dict(DATA),
            "world_size": 1}
    save_model_folder(folder, tensors, config, meta)


def write_log(folder: Path, losses: list[float], images_per_s: float = 100.0) -> None:
    lines = [{"step": i + 1, "images_seen": 32 * (i + 1), "loss": v, "lr": 1e-4, "images_per_s": images_per_s + i,
              "wall_time_s": 0.5 * (i + 1)} for i, v in enumerate(losses)]
    (folder / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def make_run(root: Path, name: str, snapshots: list[int], wall_per_image: float, seed: int,
             losses: list[float], weighting: str = "snr") -> Path:
    """A model folder (the last snapshot is the final model) with snapshots/img{N:09d}/ and a log."""
    torch.manual_seed(seed)
    if name == "pdae":
        dpm = build_method("dpm", {"unet": UNET}, {}, LINEAR, INFO)
        method = build_method("pdae", PDAE_NETS, {"weighting": weighting}, {}, INFO, prior=dpm)
    else:
        method = build_method("diffae", DIFFAE_NETS, {}, LINEAR, INFO)
    folder = root / f"{name}-{weighting}-seed{seed}"
    save(method, folder, snapshots[-1], snapshots[-1] * wall_per_image, seed)
    for n in snapshots[:-1]:
        save(method, folder / "snapshots" / f"img{n:09d}", n, n * wall_per_image, seed)
    write_log(folder, losses)
    return folder


def stub_reconstruct(method, x0: torch.Tensor, *, steps: int, seed: int, batch_size: int) -> torch.Tensor:
    """x0 * (1 - a) with a = k / images_seen (k = 50 PDAE, 100 Diff-AE): the MSE on [0, 1] is a^2 E[x0^2] / 4."""
    a = (50 if method.name == "pdae" else 100) / method.metadata["images_seen"]
    return x0 * (1 - a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {
        "pdae": make_run(root, "pdae", [100, 300, 500], 0.1, 0, [4.0, 2.0, 1.0, 3.0]),
        "diffae": make_run(root, "diffae", [400, 800], 0.2, 0, [8.0, 6.0, 5.0, 7.0]),
        "uniform": make_run(root, "pdae", [100, 200], 0.1, 0, [1.0, 1.0, 2.0, 4.0], weighting="uniform"),
    }


def test_list_snapshots_and_log(runs: dict[str, Path], tmp_path: Path) -> None:
    snaps = efficiency.list_snapshots(runs["pdae"])
    assert [s.images_seen for s in snaps] == [100, 300, 500]
    assert [s.wall_time_s for s in snaps] == pytest.approx([10, 30, 50])
    assert snaps[-1].folder == runs["pdae"]
    assert [r["loss"] for r in efficiency.read_train_log(runs["pdae"])] == [4.0, 2.0, 1.0, 3.0]
    with pytest.raises(ValueError, match="model folder not found"):
        efficiency.list_snapshots(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train_log.jsonl").write_text('{"images_seen": 1}\n')
    with pytest.raises(ValueError, match="train_log.jsonl:1: missing 'loss'"):
        efficiency.read_train_log(tmp_path / "bad")


def test_efficiency_records_pin_the_ratio(runs: dict[str, Path]) -> None:
    rows = efficiency.efficiency_records([runs["pdae"]], [runs["diffae"]], steps=2, num_images=6, batch_size=4,
                                         metrics=("ssim", "mse"), reconstruct=stub_reconstruct)
    assert {r["table"] for r in rows} == {"efficiency"}
    mse = {(r["method"], r["images_seen"]): r["value"] for r in rows if r["metric"] == "mse"}
    # MSE = a^2 * E[x0^2] / 4: the ratio of two snapshots is the ratio of a^2.
    assert mse[("pdae", 100)] / mse[("pdae", 300)] == pytest.approx(9.0)
    assert mse[("diffae", 800)] / mse[("pdae", 500)] == pytest.approx((100 / 800) ** 2 / (50 / 500) ** 2)
    wall = {(r["method"], r["images_seen"]): r["wall_time_s"] for r in rows if r["metric"] == "ssim"}
    assert wall[("pdae", 300)] == pytest.approx(30) and wall[("diffae", 400)] == pytest.approx(80)
    # Diff-AE's final a = 1/8 lies between PDAE's a = 1/6 (300 images) and 1/10 (500 images).
    v0, v1, target = (1 / 6) ** 2, (1 / 10) ** 2, (1 / 8) ** 2
    needed = 300 + (target - v0) / (v1 - v0) * 200
    ratios = {(r["metric"], r["quality_metric"]): r for r in rows if r["metric"].endswith("_ratio")}
    assert ratios[("images_ratio", "mse")]["value"] == pytest.approx(needed / 800)
    assert ratios[("wall_time_ratio", "mse")]["value"] == pytest.approx(needed * 0.1 / (800 * 0.2))
    assert ratios[("images_ratio", "mse")]["reached"] == "yes" and ratios[("images_ratio", "ssim")]["reached"] == "yes"
    assert 0.5 < ratios[("images_ratio", "ssim")]["value"] < 500 / 800
    losses = [(r["method"], r["images_seen"], r["value"]) for r in rows if r["metric"] == "loss"]
    assert losses[:2] == [("pdae", 32, 4.0), ("pdae", 64, 2.0)] and len(losses) == 8
    ips = {r["method"]: r["value"] for r in rows if r["metric"] == "images_per_s"}
    assert ips == {"pdae": pytest.approx(102.0), "diffae": pytest.approx(102.0)}  # mean of 101, 102, 103
    assert {r["dataset"] for r in rows} == {"digits"} and {r["seed"] for r in rows} == {0}


def test_real_reconstruction_is_deterministic_and_batch_invariant(runs: dict[str, Path]) -> None:
    from pdae.methods import load_method

    method = load_method(runs["pdae"])
    x0 = torch.rand(3, 1, 8, 8) * 2 - 1
    a = efficiency.reconstruct_random_xT(method, x0, steps=2, seed=5, batch_size=3)
    b = efficiency.reconstruct_random_xT(method, x0, steps=2, seed=5, batch_size=1)
    assert torch.allclose(a, b, atol=1e-5) and a.shape == x0.shape
    assert not torch.allclose(a, efficiency.reconstruct_random_xT(method, x0, steps=2, seed=6, batch_size=3))
    q = efficiency.quality(x0, x0, metrics=("ssim", "mse"))
    assert q == {"ssim": pytest.approx(1.0), "mse": 0.0}
    with pytest.raises(ValueError, match="lpips needs"):
        efficiency.quality(x0, x0, metrics=("lpips",))


def test_ablation_and_cli(runs: dict[str, Path], tmp_path: Path) -> None:
    rows = efficiency.ablation_records([runs["pdae"], runs["uniform"]], steps=2, num_images=4,
                                       reconstruct=stub_reconstruct)
    by = {(r["weighting"], r["metric"]): r["value"] for r in rows}
    assert by[("snr", "loss_cv")] == pytest.approx(0.5) and by[("snr", "loss_final")] == 3.0
    assert by[("uniform", "loss_cv")] == pytest.approx(1 / 3) and by[("uniform", "loss_final")] == 4.0
    assert by[("snr", "mse")] / by[("uniform", "mse")] == pytest.approx((50 / 500) ** 2 / (50 / 200) ** 2)
    assert {r["table"] for r in rows} == {"ablation"}
    # At a common budget of 100 images: both runs' snapshots at 100 images, and their logs up to 100 images
    # (log lines at 32, 64, 96, 128 images: the first three losses).
    rows = efficiency.ablation_records([runs["pdae"], runs["uniform"]], steps=2, num_images=4,
                                       reconstruct=stub_reconstruct, images=100)
    by = {(r["weighting"], r["metric"]): r["value"] for r in rows}
    assert {(r["weighting"], r["images_seen"]) for r in rows} == {("snr", 100), ("uniform", 100)}
    assert by[("snr", "loss_final")] == 1.0 and by[("uniform", "loss_final")] == 2.0
    assert by[("snr", "loss_cv")] == pytest.approx(1 / 3)  # last half of [4, 2, 1]: [2, 1]
    assert by[("snr", "mse")] == pytest.approx(by[("uniform", "mse")])  # same images seen: same stub error
    with pytest.raises(ValueError, match="no snapshot at 200 images"):
        efficiency.ablation_records([runs["pdae"], runs["uniform"]], steps=2, num_images=4,
                                    reconstruct=stub_reconstruct, images=200)

    parser = argparse.ArgumentParser()
    efficiency.register_cli(parser.add_subparsers())
    out = tmp_path / "ablation.json"
    args = parser.parse_args(["ablation", "--runs", str(runs["pdae"]), str(runs["uniform"]), "--out", str(out),
                              "--steps", "2", "--num-images", "3", "--device", "cpu"])
    assert args.func(args) == 0
    written = read_records(out)
    assert {(r["weighting"], r["metric"]) for r in written} == {
        (w, m) for w in ("snr", "uniform") for m in ("ssim", "mse", "loss_cv", "loss_final")}
    out = tmp_path / "eff.json"
    args = parser.parse_args(["efficiency", "--pdae", str(runs["uniform"]), "--diffae", str(runs["diffae"]), "--out",
                              str(out), "--steps", "2", "--num-images", "2", "--metrics", "ssim", "mse"])
    assert args.func(args) == 0
    assert {r["metric"] for r in read_records(out)} >= {"ssim", "mse", "loss", "images_per_s", "images_ratio"}
    args = parser.parse_args(["efficiency", "--pdae", str(runs["pdae"]), "--diffae", str(runs["diffae"]), "--out",
                              str(out), "--steps", "0"])
    with pytest.raises(ValueError, match="--steps must be >= 1"):
        args.func(args)
