"""`pdae bench`: the throughput benchmark runs every method through its real loss and writes its record."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pdae.bench import PRESETS, build_methods, run_benchmark

REPO = Path(__file__).resolve().parents[1]


def test_bench_methods_share_one_unet_size_and_pdae_trains_only_its_new_parts():
    methods = build_methods("embedded")
    dpm, pdae, naive, diffae = (methods[k] for k in ("dpm", "pdae", "pdae_naive", "diffae"))
    n_dpm = sum(p.numel() for p in dpm.trainable_parameters())
    n_pdae = sum(p.numel() for p in pdae.trainable_parameters())
    # The frozen prior is held, not trained: PDAE's total includes a DPM-sized U-Net, its trainable set does not.
    assert sum(p.numel() for p in pdae.parameters()) - n_pdae == n_dpm
    assert {id(p) for p in naive.trainable_parameters()} == {id(p) for p in pdae.trainable_parameters()}
    assert sum(p.numel() for p in diffae.trainable_parameters()) > n_dpm  # conditional U-Net + its encoder
    with pytest.raises(ValueError, match="--preset"):
        build_methods("imagenet")


def test_bench_methods_from_a_settings_mapping_follow_its_image_size():
    """A settings mapping (benchmarks/channels_last_cpu.py's 32-px variant of the embedded preset) builds the same
    networks as the named preset, sized by its own data settings."""
    import copy

    from pdae.bench import PRESETS

    settings = copy.deepcopy(PRESETS["embedded"])
    same = build_methods(settings)
    named = build_methods("embedded")
    for k in ("dpm", "pdae", "diffae"):
        assert sum(p.numel() for p in same[k].parameters()) == sum(p.numel() for p in named[k].parameters())
    settings["data"]["image_size"] = 32
    settings["encoder"]["channels"] = [64, 128, 128]  # one more stride-2 conv down to 4x4
    settings["diffae_attention"] = [8]
    settings["diffae_encoder"]["enc_attention_resolutions"] = [8]
    big = build_methods(settings)
    assert big["pdae"].encoder.config["image_size"] == 32 and big["diffae"].model.config["image_size"] == 32
    assert PRESETS["embedded"]["data"]["image_size"] == 16  # the preset itself is untouched


def test_run_benchmark_writes_images_per_second_and_ratios(tmp_path, capsys):
    out = tmp_path / "bench.json"
    record = run_benchmark("embedded", None, steps=1, warmup=0, device="cpu", out=str(out))
    assert record["batch_size"] == PRESETS["embedded"]["batch_size"]
    assert json.loads(out.read_text()) == record
    res = record["results"]
    assert set(res) == {"dpm", "pdae", "pdae_naive", "diffae"}
    for r in res.values():
        assert r["images_per_s"] == pytest.approx(record["batch_size"] / r["seconds_per_step"])
    assert record["pdae_over_diffae"] == pytest.approx(res["pdae"]["images_per_s"] / res["diffae"]["images_per_s"])
    assert "PDAE / Diff-AE throughput ratio" in capsys.readouterr().out


def test_bench_times_the_training_loops_own_step():
    """`pdae bench` calls pdae.training.train_step (the loop's precision, Adam, EMA), not a copy of it."""
    import torch

    from pdae import bench, training
    from pdae.precision import cpu_has_bf16

    assert bench.train_step is training.train_step
    dpm = build_methods("embedded")["dpm"]
    r = bench.time_training_steps(dpm, (1, 16, 16), 4, steps=1, warmup=0, device=torch.device("cpu"))
    assert r["precision"] == ("bf16" if cpu_has_bf16() else "fp32")
    r = bench.time_training_steps(dpm, (1, 16, 16), 4, steps=1, warmup=0, device=torch.device("cpu"), amp="off")
    assert r["precision"] == "fp32"


def test_gpu_check_runs_on_cpu_through_the_shared_training_step(tmp_path: Path) -> None:
    """benchmarks/gpu_check.py end to end on the CPU (embedded preset): numerics pass, throughput recorded."""
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--preset",
                           "embedded", "--steps", "1", "--warmup", "0", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads(out.read_text())
    assert record["passed"] and set(record["checks"]["passed"]) >= {"bf16", "channels_last", "bf16_channels_last"}
    for name in ("pdae", "diffae"):
        assert record["throughput_bf16"]["results"][name]["images_per_s"] > 0
        assert record["throughput_bf16"]["results"][name]["channels_last"] is True


@pytest.mark.skipif(not __import__("pdae.precision").precision.cpu_has_bf16(), reason="CPU without native bf16")
def test_speed_precision_reports_agreement_and_interleaved_rounds(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "speed_precision.py"), "--preset", "embedded",
                           "--rounds", "2", "--train-steps", "1", "--sample-batch", "2", "--steps", "5",
                           "--threads", "1", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads(out.read_text())
    assert len(record["rounds"]) == 2 and set(record["rounds"][0]) == {"fp32", "bf16", "bf16_cl"}
    assert record["summary"]["fp32"]["train_step_s"]["speedup_vs_fp32_median"] == 1.0
    agree = record["agreement_vs_fp32"]["bf16_cl"]
    # bf16 keeps 8 mantissa bits: eps and G differ from fp32 by well under their own size, never by nothing
    assert 0 < agree["eps_max_abs"] < 0.5 * max(1.0, 4 * agree["eps_rms_fp32"])
    assert 0 < agree["G_max_abs"] < 0.5 * max(1.0, 4 * agree["G_rms_fp32"])
    assert agree["ddim5_sample_mean_abs"] < 0.05
    assert out.with_suffix(".md").read_text().count("| bf16_cl |") == 1
