"""`pdae bench`: the throughput benchmark runs every method through its real loss and writes its record."""

from __future__ import annotations

import json

import pytest

from pdae.bench import PRESETS, build_methods, run_benchmark


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
