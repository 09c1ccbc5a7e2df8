"""Evaluate, don't train (dataset_settings.<d>.published): small checkpoints in every official layout, built
here (PDAE DPM, PDAE autoencoder, PDAE latent DPM folder; Diff-AE autoencoder + latent `last.ckpt` with pickled
Lightning objects), imported by the workflow and evaluated end to end with no training job; the published paper
configs list exactly import and evaluation jobs, and name a missing download in one line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import REPO, run_snakemake

PUBLISHED = sorted((REPO / "config" / "paper").glob("*_published.yaml"))
TRAINING_RULES = ("train_dpm", "train_autoencoder", "train_pdae_class", "train_latent", "train_classifier",
                  "train_feature_net", "import_prior")
EVALUATIONS = ("compute_ref_stats", "evaluate_reconstruction", "evaluate_gap", "render_denoise_arrays",
               "evaluate_unconditional", "evaluate_fewshot", "evaluate_fewshot_attribute", "evaluate_interpolation",
               "evaluate_probe")


def job_counts(text: str) -> dict[str, int]:
    """rule -> jobs, from the job table Snakemake prints (dry run or run)."""
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", text, flags=re.M) if rule != "total"}


SIZE = 32  # LPIPS-AlexNet needs images of at least 32 px


def write_official_tree(root: Path) -> dict[str, str]:
    """The official downloads, small (32 px): PDAE's pre-trained-dpms/ and trained-models/ folders, Diff-AE's
    Lightning checkpoints/ (with pickled AttributeDict / ModelCheckpoint objects); layouts as in
    tests/test_importers.py, at this size."""
    from pdae.nets.cond_unet import DiffAEUNet
    from pdae.nets.encoder import SemanticEncoder
    from pdae.nets.gradient_estimator import GradientEstimator
    from pdae.nets.latent_mlp import LatentMLP
    from pdae.nets.unet import UNet
    from tests.test_importers import (TINY_DIFFAE, TINY_HP, TINY_LATENT, TINY_OFFICIAL, diffae_official_keys,
                                      lightning_save, randomized)
    from tests.test_importers_pdae_latent import write_pdae_latent

    torch.manual_seed(0)
    # PDAE: the pre-trained DPM (ema_denoise_fn) and the autoencoder (encoder + ShiftUNet = DPM + shift parts).
    dpm = root / "pre-trained-dpms" / "tiny"
    dpm.mkdir(parents=True)
    prior = randomized(UNet.from_official_config(TINY_OFFICIAL), 0)
    torch.save({"step": 7, "ema_denoise_fn": prior.state_dict()}, dpm / "checkpoint.pt")
    (dpm / "config.yml").write_text(yaml.safe_dump({"denoise_fn_config": TINY_OFFICIAL,
                                                    "diffusion_config": {"timesteps": 1000, "betas_type": "linear"}}))
    encoder = randomized(SemanticEncoder(SIZE, latent_dim=16, channels=(32, 64, 64), attention_resolutions=(SIZE // 2,),
                                         num_heads=4), 4)
    estimator = randomized(GradientEstimator(prior, latent_dim=16, dropout=0.0), 5)
    shift_unet = {**prior.state_dict(), **estimator.new_state_dict()}
    ae = root / "trained-models" / "autoencoder" / "tiny"
    ae.mkdir(parents=True)
    torch.save({"step": 3, "encoder": encoder.state_dict(), "ema_encoder": encoder.state_dict(),
                "decoder": shift_unet, "ema_decoder": shift_unet}, ae / "checkpoint.pt")
    (ae / "config.yml").write_text(yaml.safe_dump({
        "train_dataset_config": {"name": "TINY", "image_size": SIZE, "latent_dim": 16},
        "diffusion_config": {"timesteps": 1000, "betas_type": "linear"},
        "trained_ddpm_config": "./pre-trained-dpms/tiny/config.yml",
        "encoder_config": {"model": "TinyEncoder", "latent_dim": 16},
        "decoder_config": {"model": "TinyDecoder", "latent_dim": 16}}))
    write_pdae_latent(root)  # trained-models/latent_denoise_fn/tiny + trained-models/latents/tiny.pt (16-d z)
    # Diff-AE: one autoencoder + latent DPM last.ckpt (model.*, ema_model.*, ema_model.latent_net.*, conds stats).
    hp = {**TINY_HP, "img_size": SIZE, "net_attn": [SIZE // 2]}
    model = randomized(DiffAEUNet(**{**TINY_DIFFAE, "image_size": SIZE, "attention_resolutions": [SIZE // 2],
                                     "enc_attention_resolutions": [SIZE // 2]}), 6)
    net = randomized(LatentMLP(**TINY_LATENT), 7)
    sd = {f"ema_model.{k}": v for k, v in diffae_official_keys(model).items()}
    sd.update({f"model.{k}": torch.zeros_like(v) for k, v in diffae_official_keys(model).items()})
    sd.update({f"ema_model.latent_net.{k}": v for k, v in net.state_dict().items()})
    sd["conds_mean"], sd["conds_std"] = torch.randn(1, 16), torch.rand(1, 16) + 0.5
    ckpt = root / "checkpoints" / "tiny_autoenc" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    with pytest.MonkeyPatch.context() as mp:  # Lightning's classes, pickled by name, without Lightning installed
        lightning_save(mp, ckpt, sd, hp)
    return {"dpm": "pre-trained-dpms/tiny", "pdae": "trained-models/autoencoder/tiny",
            "pdae_latent": "trained-models/latent_denoise_fn/tiny", "latents": "trained-models/latents/tiny.pt",
            "diffae": str(ckpt.relative_to(root))}


def tiny_published_config(root: Path, paths: dict[str, str]) -> dict:
    """A published config over the tiny tree: shapes at 32 px (LPIPS-AlexNet needs >= 32 px; the tiny nets are
    convolutional), the standard backend on local weight files."""
    import torchvision

    from eval import fid_inception
    from eval.backends import ALEXNET_FILE
    from tests.test_fid_pytorch_fid import random_pytorch_fid_state_dict

    (root / "weights").mkdir()
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), root / "weights" / ALEXNET_FILE)
    torch.save(random_pytorch_fid_state_dict(), root / "weights" / fid_inception.WEIGHTS_FILE)
    (root / "config").mkdir()
    (root / "config" / "data.yaml").write_text(yaml.safe_dump({"data": {"name": "shapes", "image_size": 32,
                                                                        "channels": 3}}))
    return {
        "datasets": ["shapes"], "seeds": [0], "ablation_seeds": [0], "metric_backend": "standard",
        "standard_weights": {"alexnet": f"weights/{ALEXNET_FILE}", "inception": None},
        "fid_backend": "pytorch-fid", "fid_weights": f"weights/{fid_inception.WEIGHTS_FILE}", "device": "cpu",
        "resources": {"train_threads": 1, "train_gpus": 0, "train_runtime_min": 10, "train_mem_mb": 2000},
        "dataset_settings": {"shapes": {
            "train_configs": str(REPO / "config" / "train" / "shapes16"), "data_path": None,
            "data_spec": "config/data.yaml", "prior": {"kind": "native", "path": None},
            "published": {
                "dpm": {"kind": "pdae-dpm", "path": paths["dpm"]},
                "pdae": {"kind": "pdae-autoencoder", "path": paths["pdae"], "dpm_config": paths["dpm"]},
                "pdae_latent": {"kind": "pdae-latent", "path": paths["pdae_latent"], "latents": paths["latents"]},
                "diffae": {"kind": "diffae-autoencoder", "path": paths["diffae"], "preset": "auto"},
                "diffae_latent": {"kind": "diffae-latent", "path": paths["diffae"], "preset": "auto"},
            },
            "fewshot": {"positive_classes": None, "class_names": None, "attribute": "is_circle"},
            "manipulation_attribute": "is_large",
            # fewshot's class references are every training image of a class: minutes of Inception on a CPU.
            "evaluations": ["recon", "gap", "uncond", "interpolation", "probe", "manipulation", "efficiency"],
        }},
        "eval": {
            "ref_images": 24, "ref_selection": "random", "ref_seed": 1,
            "recon": {"steps": [3], "num_images": 4, "ddpm": False},
            "gap": {"t_stride": 250, "num_images": 4},
            "uncond": {"steps": [3], "num_samples": 6, "stop_fraction": 0.3,
                       "clip_latent": {"pdae": "on", "diffae": "model"}},
            "fewshot": {"num_labelled": 20, "num_unlabelled": 100, "num_samples": 8, "steps": 3},
            "interpolation": {"num_pairs": 1, "steps": 3, "encode_steps": 3},
            "manipulation": {"num_images": 2, "steps": 3, "encode_steps": 3, "strengths": [0.3]},
            "truncation": {"num_samples": 2, "steps": 3, "scales": [1.0]},
            "probe": {"num_train": 100, "num_test": 40},
            "efficiency": {"steps": 3, "num_images": 4},
        },
    }


@pytest.fixture(scope="module")
def published_run(tmp_path_factory) -> tuple[Path, str]:
    work = tmp_path_factory.mktemp("published")
    cfg = tiny_published_config(work, write_official_tree(work))
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    dry = run_snakemake("--snakefile", str(REPO / "Snakefile"), "--directory", str(work), "-n")
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-4000:]
    proc = run_snakemake("--snakefile", str(REPO / "Snakefile"), "--directory", str(work), "--cores", "2",
                         "--show-failed-logs")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    return work, dry.stdout + dry.stderr


def test_evaluate_only_dag_imports_evaluates_and_trains_nothing(published_run):
    work, planned = published_run
    jobs = job_counts(planned)
    assert jobs.get("import_published") == 5, jobs                  # dpm, both autoencoders, both latent DPMs
    assert not set(jobs) & set(TRAINING_RULES), jobs
    # Only evaluations whose models are published: no ablation, truncation, manipulation (classifiers), efficiency.
    assert set(jobs) - {"import_published", "make_tables", "make_claims", "plot_figure", "all"} <= set(EVALUATIONS)
    for left_out in ("evaluate_ablation", "evaluate_truncation", "evaluate_manipulation", "evaluate_efficiency"):
        assert left_out not in jobs
    results = work / "results"
    for part in ("dpm/model", "pdae/seed0/model", "diffae/seed0/model", "pdae/seed0/latent", "diffae/seed0/latent"):
        assert (results / "shapes" / part / "config.json").is_file(), part
    tables = results / "tables"
    for name in ("recon", "uncond", "gap", "interpolation", "probe", "claims"):
        assert (tables / f"{name}.csv").stat().st_size > 0, name
    assert not (tables / "ablation.csv").exists() and not (tables / "efficiency.csv").exists()
    # The protocol reached the tables: the reference draw and the latent clamp of each autoencoder.
    uncond = (tables / "uncond_rows.csv").read_text()
    assert "random (seed 1)" in uncond and "pytorch-fid" in uncond
    import csv

    with open(tables / "uncond_rows.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    clip = {(r["method"], r["clip_latent"]) for r in rows if r["metric"] == "fid"}
    assert {("pdae", "True"), ("diffae", "False"), ("ddim", "-")} <= clip, clip
    recon = (tables / "recon.md").read_text()
    assert "protocol: eval_data = shapes32; split = test;" in recon
    # Imported, not trained: the model folders say where they came from.
    meta = yaml.safe_load((results / "shapes" / "pdae" / "seed0" / "model" / "metadata.json").read_text())
    assert meta["source"]["importer"] == "pdae-autoencoder"


def test_rerun_does_nothing(published_run):
    work, _ = published_run
    again = run_snakemake("--snakefile", str(REPO / "Snakefile"), "--directory", str(work), "-n")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


def placeholder_work(cfg: dict, tmp_path: Path) -> Path:
    """A work folder with a placeholder for every download and dataset of a published paper config (pdae-* an
    empty folder, diffae-* an empty file), its config as config/config.yaml."""
    (slug,) = cfg["datasets"]
    settings = cfg["dataset_settings"][slug]
    work = tmp_path / "work"
    (work / "config").mkdir(parents=True)
    for entry in settings["published"].values():
        p = work / entry["path"]
        if entry["kind"].startswith("pdae-"):
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"")
        if entry.get("latents"):
            (work / entry["latents"]).parent.mkdir(parents=True, exist_ok=True)
            (work / entry["latents"]).write_bytes(b"")
    specs = [settings["data_spec"]] + ([settings["recon_data"]["spec"]] if settings.get("recon_data") else [])
    for spec in specs:
        (work / spec).parent.mkdir(parents=True, exist_ok=True)
        text = (REPO / spec).read_text()
        (work / spec).write_text(text)
        (work / yaml.safe_load(text)["data"]["path"]).mkdir(parents=True, exist_ok=True)
    settings["train_configs"] = str(REPO / settings["train_configs"])
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    return work


@pytest.mark.parametrize("config", PUBLISHED, ids=[p.stem for p in PUBLISHED])
def test_published_paper_config_lists_import_and_evaluation_jobs_only(config: Path, tmp_path: Path) -> None:
    cfg = yaml.safe_load(config.read_text())
    (slug,) = cfg["datasets"]
    settings = cfg["dataset_settings"][slug]
    # Nothing downloaded: one line naming the first missing file.
    missing = run_snakemake("-n", "--configfile", str(config), cwd=REPO)
    out = missing.stdout + missing.stderr
    assert missing.returncode != 0
    first = next(iter(settings["published"]))
    line = f"config: dataset_settings.{slug}.published.{first}.path: {settings['published'][first]['path']} not found"
    assert line in out and "Traceback" not in out, out[-2000:]

    work = placeholder_work(cfg, tmp_path)
    proc = run_snakemake("--snakefile", str(REPO / "Snakefile"), "--directory", str(work), "-n", "-p")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    jobs = job_counts(proc.stdout)
    assert jobs["import_published"] == len(settings["published"])
    assert not set(jobs) & set(TRAINING_RULES), jobs
    assert set(jobs) - {"import_published", "make_tables", "make_claims", "plot_figure", "all"} <= set(EVALUATIONS)
    if slug == "celeba64":  # Table 3 (D2C): both attributes, both scenarios, both autoencoders
        assert jobs["evaluate_fewshot_attribute"] == 8 and "evaluate_fewshot" not in jobs
    # The paper's protocol in the commands: random 50k reference, pytorch-fid, PDAE's latent clamp, ddim1000 encoding.
    commands = proc.stdout
    assert "--selection random --selection-seed 0" in commands and "--fid-backend pytorch-fid" in commands
    sampling = [ln for ln in commands.splitlines() if "python -m eval uncond --autoencoder" in ln
                or "python -m eval fewshot --autoencoder" in ln]
    assert sampling and all(("--clip-latent on" in ln) == (f"results/{slug}/pdae/" in ln) for ln in sampling)
    assert not any("--clip-latent" in ln for ln in commands.splitlines() if "--dpm " in ln)
    assert "--encode-steps same 1000" in commands
    if slug == "ffhq128":  # Table 1 on all CelebA-HQ images
        assert "--data config/data/celebahq128.yaml --split all" in commands


# (what is wrong, the key to set in published.<model>, its value, the one-line error). Each is set after the
# placeholders exist, so only the named check can fail.
BAD_ENTRIES = [
    ("kind", ("pdae", "kind", "diffae-autoencoder"),      # the PDAE autoencoder named with a Diff-AE kind
     "config: dataset_settings.ffhq128.published.pdae.kind: diffae-autoencoder is not a pdae (expected pdae-autoencoder)"),
    ("layout", ("diffae", "path", "checkpoints/ffhq128_autoenc_130M"),   # the folder, not its last.ckpt
     "config: dataset_settings.ffhq128.published.diffae.path: checkpoints/ffhq128_autoenc_130M is a folder; "
     "diffae-autoencoder reads a Lightning file (last.ckpt)"),
    ("option", ("diffae", "latents", "trained-models/latents/ffhq.pt"),  # a PDAE-latent option on Diff-AE
     "config: dataset_settings.ffhq128.published.diffae.latents: applies to pdae-latent only, not diffae-autoencoder"),
]


@pytest.mark.parametrize("edit,message", [case[1:] for case in BAD_ENTRIES], ids=[case[0] for case in BAD_ENTRIES])
def test_published_entry_of_the_wrong_kind_layout_or_option_fails_in_one_line(edit, message, tmp_path: Path) -> None:
    cfg = yaml.safe_load((REPO / "config" / "paper" / "ffhq128_published.yaml").read_text())
    work = placeholder_work(cfg, tmp_path)
    model, key, value = edit
    cfg["dataset_settings"]["ffhq128"]["published"][model][key] = value
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = run_snakemake("--snakefile", str(REPO / "Snakefile"), "--directory", str(work), "-n")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out
    assert message in out, out[-2000:]
