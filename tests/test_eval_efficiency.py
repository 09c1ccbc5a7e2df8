"""eval.efficiency: images to a common quality level, ratios, plateau rule and loss stability pinned by hand;
snapshot folders -> records (per-image values, paired x_T noise)."""

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


def test_quality_level_takes_the_worse_final_value() -> None:
    assert efficiency.quality_level(0.8, 0.6, True, 0.95) == pytest.approx(0.57)      # 0.95 x the lower SSIM
    assert efficiency.quality_level(0.6, 0.8, True, 1.0) == pytest.approx(0.6)
    assert efficiency.quality_level(0.01, 0.02, False, 0.95) == pytest.approx(0.021)  # 1.05 x the higher MSE
    assert efficiency.quality_level(-0.2, 0.5, True, 0.9) == pytest.approx(-0.22)     # a worse level, also < 0
    assert "0.95 x the lower final ssim" in efficiency.level_rule("ssim", 0.95)
    assert "1.05 x the higher final mse" in efficiency.level_rule("mse", 0.95)


def test_reach_level_between_snapshots_first_and_never() -> None:
    curve = [(100, 0.5), (200, 0.7), (400, 0.9)]
    assert efficiency.reach_level(curve, 0.8, True) == (pytest.approx(300), "yes")     # interpolated
    assert efficiency.reach_level(curve, 0.4, True) == (100, "first")                 # upper bound
    assert efficiency.reach_level(curve, 0.95, True) == (400, "no")                   # lower bound: final images
    mse = [(100, 0.04), (300, 0.01)]
    assert efficiency.reach_level(mse, 0.025, False) == (pytest.approx(200), "yes")
    assert efficiency.ratio_bound("yes", "yes") == "exact"
    assert efficiency.ratio_bound("first", "yes") == "upper" and efficiency.ratio_bound("yes", "no") == "upper"
    assert efficiency.ratio_bound("yes", "first") == "lower" and efficiency.ratio_bound("no", "yes") == "lower"
    assert efficiency.ratio_bound("first", "first") == "none" and efficiency.ratio_bound("no", "no") == "none"


def test_plateau_rule() -> None:
    rules = efficiency.Rules()
    flat = [(100, 0.5), (600, 0.795), (800, 0.80), (1000, 0.805)]
    change, window = efficiency.plateau_change(flat, 0.25, True)
    assert window == (800, 1000) and change == pytest.approx(0.005)                    # nearest 750: 800
    assert efficiency.converged(change, efficiency.plateau_tolerance("ssim", 0.805, rules)[0]) == "yes"
    rising = [(100, 0.3), (700, 0.6), (1000, 0.7)]
    change, window = efficiency.plateau_change(rising, 0.25, True)
    assert window == (700, 1000) and change == pytest.approx(0.1)
    assert efficiency.converged(change, 0.01) == "no"
    worse = efficiency.plateau_change([(100, 0.9), (1000, 0.8)], 0.25, True)            # got worse: not improving
    assert worse[0] == pytest.approx(-0.1) and efficiency.converged(worse[0], 0.01) == "yes"
    assert efficiency.plateau_change([(1000, 0.7)], 0.25, True) is None
    assert efficiency.converged(None, 0.01) == "unknown"
    # MSE (lower is better): improvement = earlier - final; tolerance 5 % of the final MSE.
    change, _ = efficiency.plateau_change([(100, 0.04), (750, 0.0104), (1000, 0.01)], 0.25, False)
    tol, rule = efficiency.plateau_tolerance("mse", 0.01, rules)
    assert change == pytest.approx(0.0004) and tol == pytest.approx(0.0005) and "final mse" in rule
    assert efficiency.converged(change, tol) == "yes"
    assert efficiency.converged(efficiency.plateau_change([(750, 0.02), (1000, 0.01)], 0.25, False)[0], tol) == "no"
    with pytest.raises(ValueError, match="--level-fraction"):
        efficiency.Rules(level_fraction=0).check()


def test_convergence_records_one_point_is_unknown() -> None:
    run = {"prov": {"dataset": "d", "method": "pdae", "seed": 0, "images_seen": 500, "code_version": "t",
                    "config": "x"}, "eval_seed": 3,
           "curves": {"ssim": [(500, 5.0, 0.7)], "mse": [(100, 1.0, 0.04), (400, 4.0, 0.011), (500, 5.0, 0.01)]}}
    rows = {r["quality_metric"]: r for r in efficiency.convergence_records(run, "pdae", ("ssim", "mse"), 2,
                                                                           efficiency.Rules())}
    assert rows["ssim"]["converged"] == "unknown" and rows["ssim"]["window_images"] == "-"
    assert rows["mse"]["window_images"] == [400, 500] and rows["mse"]["value"] == pytest.approx(0.001)
    assert rows["mse"]["converged"] == "no" and rows["mse"]["tolerance"] == pytest.approx(0.0005)
    assert {r["table"] for r in rows.values()} == {"convergence"} and rows["mse"]["eval_seed"] == 3


def test_loss_cv_and_throughput() -> None:
    # Last half of [9, 9, 1, 3]: [1, 3] -> population std 1, mean 2.
    assert efficiency.loss_cv([9, 9, 1, 3]) == pytest.approx(0.5)
    assert efficiency.loss_cv([2.0, 4.0, 1.0, 3.0, 5.0]) == pytest.approx(math.sqrt(8 / 3) / 3)  # [1, 3, 5]
    assert efficiency.loss_cv([5.0]) == 0.0
    log = [{"images_per_s": 10}, {"images_per_s": 100}, {"images_per_s": 200}]
    assert efficiency.mean_throughput(log) == 150 and efficiency.mean_throughput(log, world_size=2) == 75
    assert efficiency.mean_throughput(log[:1]) == 10


# ---------------------------------------------------------------------------------------------- model folders

def save(method, folder: Path, images: int, wall: float, seed: int, dpm: str | None = None) -> None:
    tensors, config = export_method(method)
    meta = {"seed": seed, "images_seen": images, "wall_time_s": wall, "code_version": "test", "data": dict(DATA),
            "world_size": 1, "dpm": dpm}
    save_model_folder(folder, tensors, config, meta)


def write_log(folder: Path, losses: list[float], images_per_s: float = 100.0) -> None:
    lines = [{"step": i + 1, "images_seen": 32 * (i + 1), "loss": v, "lr": 1e-4, "images_per_s": images_per_s + i,
              "wall_time_s": 0.5 * (i + 1)} for i, v in enumerate(losses)]
    (folder / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def make_run(root: Path, name: str, snapshots: list[int], wall_per_image: float, seed: int,
             losses: list[float], weighting: str = "snr", dpm_dir: str | None = None) -> Path:
    """A model folder (the last snapshot is the final model) with snapshots/img{N:09d}/ and a log; `dpm_dir`: the
    metadata's pre-trained DPM folder."""
    torch.manual_seed(seed)
    if name == "pdae":
        dpm = build_method("dpm", {"unet": UNET}, {}, LINEAR, INFO)
        method = build_method("pdae", PDAE_NETS, {"weighting": weighting}, {}, INFO, prior=dpm)
    else:
        method = build_method("diffae", DIFFAE_NETS, {}, LINEAR, INFO)
    folder = root / f"{name}-{weighting}-seed{seed}"
    save(method, folder, snapshots[-1], snapshots[-1] * wall_per_image, seed, dpm_dir)
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
    (root / "dpm").mkdir()
    (root / "dpm" / "metadata.json").write_text(json.dumps({"images_seen": 12345, "wall_time_s": 1.0}))
    return {
        "pdae": make_run(root, "pdae", [100, 300, 500], 0.1, 0, [4.0, 2.0, 1.0, 3.0],
                         dpm_dir=str(root / "dpm")),
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


def test_dpm_images_from_metadata(runs: dict[str, Path], tmp_path: Path) -> None:
    assert efficiency.dpm_images(runs["pdae"]) == 12345                  # absolute "dpm" folder
    assert efficiency.dpm_images(runs["uniform"]) == "-"                 # "dpm": null
    model = tmp_path / "model"
    (model / "prior").mkdir(parents=True)
    (model / "prior" / "metadata.json").write_text(json.dumps({"images_seen": 640}))
    (model / "metadata.json").write_text(json.dumps({"dpm": "prior"}))  # relative to the model folder
    assert efficiency.dpm_images(model) == 640
    (model / "metadata.json").write_text(json.dumps({"dpm": str(tmp_path / "missing")}))
    assert efficiency.dpm_images(model) == "-"
    assert efficiency.dpm_images(tmp_path / "nothing") == "-"


def test_efficiency_records_images_to_level(runs: dict[str, Path]) -> None:
    seeds = []

    def recording_stub(method, x0, *, steps, seed, batch_size):
        seeds.append((method.name, seed))
        return stub_reconstruct(method, x0, steps=steps, seed=seed, batch_size=batch_size)

    rows = efficiency.efficiency_records([runs["pdae"]], [runs["diffae"]], steps=2, num_images=6, batch_size=4,
                                         seed=7, metrics=("ssim", "mse"), reconstruct=recording_stub)
    # Every model and snapshot is reconstructed with the same x_T noise seed.
    assert set(seeds) == {("pdae", 7), ("diffae", 7)} and len(seeds) == 5
    assert {r["table"] for r in rows} == {"efficiency", "convergence"}
    curve = [r for r in rows if r["metric"] in ("ssim", "mse")]
    assert len(curve) == 10 and {r["eval_seed"] for r in curve} == {7} and {r["units"] for r in curve} == {"images"}
    for r in curve:
        assert len(r["values"]) == 6 and r["value"] == pytest.approx(sum(r["values"]) / 6, rel=1e-12)
    mse = {(r["method"], r["images_seen"]): r["value"] for r in curve if r["metric"] == "mse"}
    # MSE = c a^2 with a = k / images (stub): the ratio of two snapshots is the ratio of a^2.
    assert mse[("pdae", 100)] / mse[("pdae", 300)] == pytest.approx(9.0)
    wall = {(r["method"], r["images_seen"]): r["wall_time_s"] for r in curve if r["metric"] == "ssim"}
    assert wall[("pdae", 300)] == pytest.approx(30) and wall[("diffae", 400)] == pytest.approx(80)

    # Level: 1.05 x the higher final MSE = Diff-AE's (a = 1/8), in units of c.
    level = 1.05 * (1 / 8) ** 2
    pdae_needed = 300 + (level - (1 / 6) ** 2) / ((1 / 10) ** 2 - (1 / 6) ** 2) * 200
    diffae_needed = 400 + (level - (1 / 4) ** 2) / ((1 / 8) ** 2 - (1 / 4) ** 2) * 400
    c = mse[("pdae", 500)] / (1 / 10) ** 2
    to_level = {(r["method"], r["quality_metric"]): r for r in rows if r["metric"] == "images_to_level"}
    assert set(to_level) == {(m, q) for m in ("pdae", "diffae") for q in ("ssim", "mse")}
    p, d = to_level[("pdae", "mse")], to_level[("diffae", "mse")]
    assert p["level"] == pytest.approx(level * c) and d["level"] == p["level"] and "1.05" in p["level_rule"]
    assert p["value"] == pytest.approx(pdae_needed) and d["value"] == pytest.approx(diffae_needed)
    assert p["wall_time_s"] == pytest.approx(pdae_needed * 0.1) and d["wall_time_s"] == pytest.approx(diffae_needed * 0.2)
    assert p["reached"] == d["reached"] == "yes" and p["images_seen"] == "-"
    assert p["dpm_images"] == 12345 and "dpm_images" not in d
    ratios = {(r["metric"], r["quality_metric"]): r for r in rows if r["metric"].endswith("_ratio")}
    r = ratios[("images_ratio", "mse")]
    assert r["value"] == pytest.approx(pdae_needed / diffae_needed) and r["method"] == "pdae"
    assert (r["bound"], r["reached"], r["reached_pdae"], r["reached_diffae"]) == ("exact", "yes", "yes", "yes")
    assert ratios[("wall_time_ratio", "mse")]["value"] == pytest.approx(pdae_needed * 0.1 / (diffae_needed * 0.2))
    s = ratios[("images_ratio", "ssim")]
    assert s["value"] == pytest.approx(to_level[("pdae", "ssim")]["value"] / to_level[("diffae", "ssim")]["value"])
    assert to_level[("pdae", "ssim")]["level"] == pytest.approx(
        0.95 * min(r["value"] for r in curve if r["metric"] == "ssim" and r["images_seen"] in (500, 800)))

    conv = {(r["method"], r["quality_metric"]): r for r in rows if r["metric"] == "plateau_change"}
    # PDAE: the point nearest 375 images is 300; Diff-AE: only 400 before 800. Both still improve (MSE falls).
    assert conv[("pdae", "mse")]["window_images"] == [300, 500] and conv[("diffae", "mse")]["window_images"] == [400, 800]
    assert conv[("pdae", "mse")]["value"] == pytest.approx(mse[("pdae", 300)] - mse[("pdae", 500)])
    assert conv[("pdae", "mse")]["tolerance"] == pytest.approx(0.05 * mse[("pdae", 500)])
    assert {r["converged"] for r in conv.values()} == {"no"} and len(conv) == 4

    losses = [(r["method"], r["images_seen"], r["value"]) for r in rows if r["metric"] == "loss"]
    assert losses[:2] == [("pdae", 32, 4.0), ("pdae", 64, 2.0)] and len(losses) == 8
    ips = {r["method"]: r["value"] for r in rows if r["metric"] == "images_per_s"}
    assert ips == {"pdae": pytest.approx(102.0), "diffae": pytest.approx(102.0)}  # mean of 101, 102, 103
    assert {r["dataset"] for r in rows} == {"digits"} and {r["seed"] for r in rows} == {0}


def test_real_reconstruction_is_deterministic_and_batch_invariant(runs: dict[str, Path]) -> None:
    from pdae.checkpoint import load_method

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
    paired = [r for r in rows if r["metric"] in ("ssim", "mse")]
    assert len(paired) == 4 and {r["units"] for r in paired} == {"images"} and {r["eval_seed"] for r in paired} == {0}
    for r in paired:
        assert len(r["values"]) == 4 and r["value"] == pytest.approx(sum(r["values"]) / 4, rel=1e-12)
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
    written = read_records(out)
    assert {r["metric"] for r in written} >= {"ssim", "mse", "loss", "images_per_s", "images_to_level",
                                              "images_ratio", "wall_time_ratio", "plateau_change"}
    out2 = tmp_path / "eff2.json"
    args = parser.parse_args(["efficiency", "--pdae", str(runs["uniform"]), "--diffae", str(runs["diffae"]), "--out",
                              str(out2), "--steps", "2", "--num-images", "2", "--metrics", "ssim",
                              "--level-fraction", "0.9", "--plateau-window", "0.5", "--plateau-tol-ssim", "1"])
    assert args.func(args) == 0
    written = read_records(out2)
    assert {r["level_rule"] for r in written if r["metric"] == "images_to_level"} == {
        efficiency.level_rule("ssim", 0.9)}
    assert {r["converged"] for r in written if r["metric"] == "plateau_change"} == {"yes"}  # tolerance 1
    args = parser.parse_args(["efficiency", "--pdae", str(runs["pdae"]), "--diffae", str(runs["diffae"]), "--out",
                              str(out), "--steps", "2", "--level-fraction", "1.5"])
    with pytest.raises(ValueError, match="--level-fraction must be in"):
        args.func(args)
    args = parser.parse_args(["efficiency", "--pdae", str(runs["pdae"]), "--diffae", str(runs["diffae"]), "--out",
                              str(out), "--steps", "0"])
    with pytest.raises(ValueError, match="--steps must be >= 1"):
        args.func(args)
