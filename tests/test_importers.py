"""Import of published PDAE / Diff-AE checkpoints (pdae/importers.py, docs/protocol.md §3).

Inputs are built here with the documented layouts at small sizes; full-size presets are checked
against the official key/shape lists in tests/fixtures on the meta device (no memory).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml

from pdae import importers as im
from pdae.checkpoint import CheckpointError, load_model_folder
from pdae.cli import main
from pdae.checkpoint import load_method
from pdae.nets.cond_unet import DiffAEUNet
from pdae.nets.encoder import SemanticEncoder
from pdae.nets.gradient_estimator import GradientEstimator
from pdae.nets.latent_mlp import LatentMLP
from pdae.nets.unet import UNet

FIXTURES = Path(__file__).parent / "fixtures"

# Official PDAE `denoise_fn_config` of a tiny U-Net (docs/protocol.md §3.1 key names).
TINY_OFFICIAL = {
    "model": "UNet",
    "input_channel": 3,
    "base_channel": 32,
    "channel_multiplier": [1, 2],
    "num_residual_blocks_of_a_block": 1,
    "attention_resolutions": [2],
    "num_heads": 1,
    "head_channel": -1,
    "use_new_attention_order": False,
    "dropout": 0.0,
}
TINY_UNET = {
    "in_channels": 3,
    "base_channels": 32,
    "channel_mult": [1, 2],
    "num_res_blocks": 1,
    "attention_ds": [2],
    "num_heads": 1,
    "head_channels": -1,
    "new_attention_order": False,
    "dropout": 0.0,
    "learn_sigma": False,
    "num_classes": None,
}
# Diff-AE TrainConfig values (as `hyper_parameters`) of tiny models at 16 px.
TINY_HP = {
    "img_size": 16,
    "net_ch": 32,
    "net_ch_mult": [1, 2],
    "net_attn": [8],
    "net_num_res_blocks": 1,
    "net_num_input_res_blocks": None,
    "net_beatgans_attn_head": 1,
    "net_beatgans_embed_channels": 128,
    "net_enc_channel_mult": [1, 2, 2],
    "net_enc_attn": None,
    "net_enc_num_res_blocks": 1,
    "net_beatgans_resnet_cond_channels": None,
    "net_resblock_updown": True,
    "dropout": 0.0,
    "style_ch": 16,
    "net_latent_layers": 3,
    "net_latent_skip_layers": [1, 2],
    "net_latent_num_hid_channels": 64,
    "net_latent_time_emb_channels": 8,
    "net_latent_use_norm": True,
    "net_latent_dropout": 0.0,
    "net_latent_condition_bias": 1,
    "net_latent_num_time_layers": 2,
    "latent_beta_scheduler": "const0.008",
    "beta_scheduler": "linear",
    "T": 1000,
    "name": "tiny_autoenc_latent",
}
TINY_DIFFAE = {
    "image_size": 16,
    "in_channels": 3,
    "base_channels": 32,
    "channel_mult": [1, 2],
    "num_res_blocks": 1,
    "attention_resolutions": [8],
    "num_heads": 1,
    "dropout": 0.0,
    "latent_dim": 16,
    "enc_channel_mult": [1, 2, 2],
    "enc_attention_resolutions": [8],
    "embed_channels": 128,
    "head_channels": -1,
    "new_attention_order": False,
    "enc_num_res_blocks": 1,
}
TINY_LATENT = {"latent_dim": 16, "hidden": 64, "num_layers": 3, "time_dim": 8, "time_out": 16, "dropout": 0.0, "use_norm": True}


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert message and "\n" not in message
    return message


def randomized(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter ~ N(0, 0.05^2) (zero-initialised output convs would hide mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return module.eval()


def assert_same(actual: dict, expected: dict) -> None:
    assert set(actual) == set(expected)
    for key, value in expected.items():
        assert actual[key].dtype == value.dtype and torch.equal(actual[key], value), key


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fake_class(monkeypatch, module: str, name: str, base: type = object) -> type:
    """A class pickled as `module.name` (e.g. Lightning's AttributeDict) without Lightning installed."""
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        dotted = ".".join(parts[:i])
        if dotted not in sys.modules:
            monkeypatch.setitem(sys.modules, dotted, types.ModuleType(dotted))
    cls = type(name, (base,), {"__module__": module})
    monkeypatch.setattr(sys.modules[module], name, cls, raising=False)
    return cls


def lightning_save(monkeypatch, path: Path, state_dict: dict, hp: dict | None, step: int = 11) -> None:
    """A PyTorch-Lightning 1.4 `last.ckpt` as Diff-AE writes it (official Diff-AE code, experiment.py)."""
    attribute_dict = fake_class(monkeypatch, "pytorch_lightning.utilities.parsing", "AttributeDict", dict)
    model_checkpoint = fake_class(monkeypatch, "pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint")
    ckpt = {
        "epoch": 0,
        "global_step": step,
        "pytorch-lightning_version": "1.4.5",
        "state_dict": state_dict,
        "callbacks": {model_checkpoint: {"best_model_score": None, "dirpath": "checkpoints/x"}},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "params": [0]}]}],
        "lr_schedulers": [],
        "native_amp_scaling_state": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 3},
    }
    if hp is not None:
        ckpt["hyper_parameters"] = attribute_dict(hp)
    torch.save(ckpt, path)
    for name in [m for m in sys.modules if m.startswith("pytorch_lightning")]:
        monkeypatch.delitem(sys.modules, name)


def inputs(size: int = 16, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, size, size, generator=g), torch.tensor([5, 900])


# (a) Official PDAE pre-trained DPM.


def write_pdae_dpm(root: Path, seed: int = 0) -> tuple[Path, UNet]:
    src = root / "pre-trained-dpms" / "tiny"
    src.mkdir(parents=True)
    unet = randomized(UNet.from_official_config(TINY_OFFICIAL), seed)
    raw = randomized(UNet.from_official_config(TINY_OFFICIAL), seed + 100).state_dict()
    torch.save({"step": 7, "denoise_fn": raw, "ema_denoise_fn": unet.state_dict(), "optimizer": {}, "scaler": None}, src / "checkpoint.pt")
    (src / "config.yml").write_text(yaml.safe_dump({"denoise_fn_config": TINY_OFFICIAL, "diffusion_config": {"timesteps": 1000, "betas_type": "linear"}}))
    return src, unet


def test_import_pdae_dpm(tmp_path):
    src, unet = write_pdae_dpm(tmp_path)
    out = im.import_pdae_dpm(src, tmp_path / "out")
    folder = load_model_folder(out)
    assert_same(folder.tensors, {f"unet.{k}": v for k, v in unet.state_dict().items()})  # the EMA weights, unchanged
    assert folder.config["method"] == "dpm"
    assert folder.config["components"] == {"unet": {"class": "UNet", "kwargs": TINY_UNET}}
    assert folder.config["diffusion"] == {"kind": "linear", "T": 1000, "start": 1e-4, "end": 0.02}
    source = folder.metadata["source"]
    assert source["importer"] == "pdae-dpm" and source["sha256"] == sha256(src / "checkpoint.pt")
    assert source["files"][str((src / "config.yml").resolve())] == sha256(src / "config.yml")
    assert folder.metadata["step"] == 7 and folder.metadata["code_version"]

    # The lead's loader rebuilds the same network.
    method = load_method(out)
    x, t = inputs()
    with torch.no_grad():
        assert torch.equal(method.unet(x, t), unet(x, t))


def test_pdae_dpm_wrong_architecture_and_missing_entry(tmp_path):
    src, _ = write_pdae_dpm(tmp_path)
    (src / "config.yml").write_text(yaml.safe_dump({"denoise_fn_config": {**TINY_OFFICIAL, "base_channel": 64}}))
    with pytest.raises(CheckpointError) as exc:
        im.import_pdae_dpm(src, tmp_path / "out")
    msg = one_line(exc)
    assert msg.startswith(f"{src / 'checkpoint.pt'}: ema_denoise_fn: state dict does not fit UNet (wrong architecture?)")
    assert "time_embed.0.weight [128, 32] vs [256, 64]" in msg
    assert not (tmp_path / "out").exists()

    torch.save({"denoise_fn": {}}, src / "checkpoint.pt")
    with pytest.raises(CheckpointError) as exc:
        im.import_pdae_dpm(src, tmp_path / "out")
    assert "no 'ema_denoise_fn' entry (found: denoise_fn)" in one_line(exc)


def test_pdae_dpm_code_payload_executes_nothing(tmp_path):
    src, unet = write_pdae_dpm(tmp_path)
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    torch.save({"ema_denoise_fn": unet.state_dict(), "hook": Payload()}, src / "checkpoint.pt")
    with pytest.raises(CheckpointError) as exc:
        im.import_pdae_dpm(src, tmp_path / "out")
    assert "it references os.system (pickled code)" in one_line(exc)
    assert not marker.exists() and not (tmp_path / "out").exists()


# (b) Diff-AE DDIM baseline.


def write_diffae_ddim(tmp_path: Path, monkeypatch, hp: dict | None) -> tuple[Path, UNet]:
    ema = randomized(UNet(**TINY_UNET), 2)
    raw = randomized(UNet(**TINY_UNET), 3)
    sd = {f"model.{k}": v for k, v in raw.state_dict().items()}
    sd.update({f"ema_model.{k}": v for k, v in ema.state_dict().items()})
    sd["x_T"] = torch.randn(4, 3, 16, 16)
    path = tmp_path / "last.ckpt"
    lightning_save(monkeypatch, path, sd, hp)
    return path, ema


def test_import_diffae_ddim_auto(tmp_path, monkeypatch):
    path, ema = write_diffae_ddim(tmp_path, monkeypatch, TINY_HP)
    out = im.import_diffae_ddim(path, tmp_path / "out", preset="auto")
    folder = load_model_folder(out)
    assert_same(folder.tensors, {f"unet.{k}": v for k, v in ema.state_dict().items()})  # EMA, no x_T
    assert folder.config["components"]["unet"] == {"class": "UNet", "kwargs": TINY_UNET}  # res 8 @ 16 px -> ds 2
    assert folder.metadata["source"]["sha256"] == sha256(path) and folder.metadata["global_step"] == 11
    method = load_method(out)
    x, t = inputs()
    with torch.no_grad():
        assert torch.equal(method.unet(x, t), ema(x, t))


def test_diffae_ddim_preset_checks(tmp_path, monkeypatch):
    path, ema = write_diffae_ddim(tmp_path, monkeypatch, TINY_HP)
    with pytest.raises(CheckpointError) as exc:
        im.import_diffae_ddim(path, tmp_path / "out")  # default preset ffhq128
    assert "preset 'ffhq128' disagrees with the checkpoint's hyper_parameters (base_channels: 128 vs 32)" in one_line(exc)

    # Without hyper_parameters the shapes catch it; an explicit config makes it importable.
    path, ema = write_diffae_ddim(tmp_path, monkeypatch, None)
    with pytest.raises(CheckpointError) as exc:
        im.import_diffae_ddim(path, tmp_path / "out", "horse128")
    assert "ema_model: state dict does not fit UNet (wrong architecture?)" in one_line(exc)
    with pytest.raises(CheckpointError) as exc:
        im.import_diffae_ddim(path, tmp_path / "out", "auto")
    assert "no hyper_parameters" in one_line(exc)
    with pytest.raises(CheckpointError) as exc:
        im.import_diffae_ddim(path, tmp_path / "out", "ffhq256")
    assert "unknown preset 'ffhq256'" in one_line(exc)
    out = im.import_diffae_ddim(path, tmp_path / "out", config={"unet": TINY_UNET})
    assert_same(load_model_folder(out).tensors, {f"unet.{k}": v for k, v in ema.state_dict().items()})
    assert not (tmp_path / "out2").exists()


# (c) Official PDAE autoencoder.


def write_pdae_autoencoder(root: Path) -> tuple[Path, UNet, SemanticEncoder, GradientEstimator]:
    _, prior = write_pdae_dpm(root)
    encoder = randomized(SemanticEncoder(16, latent_dim=16, channels=(32, 64), attention_resolutions=(8,), num_heads=4), 4)
    estimator = GradientEstimator(prior, latent_dim=16, dropout=0.0)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in estimator.new_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    estimator.eval()
    shift_unet = {**prior.state_dict(), **estimator.new_state_dict()}  # the official ShiftUNet keys
    src = root / "trained-models" / "autoencoder" / "tiny"
    src.mkdir(parents=True)
    torch.save(
        {"step": 3, "encoder": encoder.state_dict(), "ema_encoder": encoder.state_dict(), "decoder": shift_unet,
         "ema_decoder": shift_unet, "optimizer": {}, "scaler": None},
        src / "checkpoint.pt",
    )
    config = {
        "train_dataset_config": {"name": "TINY", "image_size": 16, "latent_dim": 16},
        "diffusion_config": {"timesteps": 1000, "betas_type": "linear"},
        "trained_ddpm_config": "./pre-trained-dpms/tiny/config.yml",
        "trained_ddpm_checkpoint": "./pre-trained-dpms/tiny/checkpoint.pt",
        "encoder_config": {"model": "TinyEncoder", "latent_dim": 16},
        "decoder_config": {"model": "TinyDecoder", "latent_dim": 16},
    }
    (src / "config.yml").write_text(yaml.safe_dump(config))
    return src, prior, encoder, estimator


def test_import_pdae_autoencoder(tmp_path):
    src, prior, encoder, estimator = write_pdae_autoencoder(tmp_path)
    out = im.import_pdae_autoencoder(src, tmp_path / "out")
    folder = load_model_folder(out)
    expected = {f"prior.{k}": v for k, v in prior.state_dict().items()}
    expected.update({f"encoder.{k}": v for k, v in encoder.state_dict().items()})
    expected.update({f"estimator.{k}": v for k, v in estimator.new_state_dict().items()})
    assert_same(folder.tensors, expected)
    assert folder.config["method"] == "pdae" and folder.config["method_kwargs"] == {"gamma": 0.1, "weighting": "snr"}
    comps = folder.config["components"]
    assert comps["prior"]["kwargs"] == TINY_UNET
    assert comps["estimator"]["kwargs"] == {"latent_dim": 16, "num_classes": None, "dropout": 0.0}
    assert comps["encoder"]["kwargs"] == encoder.config  # read off the weights
    dpm_config = tmp_path / "pre-trained-dpms" / "tiny" / "config.yml"
    assert set(folder.metadata["source"]["files"]) == {str(p.resolve()) for p in (src / "checkpoint.pt", src / "config.yml", dpm_config)}

    method = load_method(out)
    x, t = inputs()
    with torch.no_grad():
        z = encoder(x)
        assert torch.equal(method.encode(x), z)
        eps, g = method.estimator(x, t, z)
        eps_ref, g_ref = estimator(x, t, z)
    assert torch.equal(eps, eps_ref) and torch.equal(g, g_ref) and g.abs().sum() > 0


def test_pdae_autoencoder_needs_the_dpm_config(tmp_path):
    src, *_ = write_pdae_autoencoder(tmp_path)
    moved = tmp_path / "elsewhere"
    os.rename(tmp_path / "pre-trained-dpms", moved)
    with pytest.raises(CheckpointError) as exc:
        im.import_pdae_autoencoder(src, tmp_path / "out")
    assert "pass --dpm-config" in one_line(exc)
    out = im.import_pdae_autoencoder(src, tmp_path / "out", dpm_config=moved / "tiny")
    assert load_model_folder(out).config["components"]["prior"]["kwargs"] == TINY_UNET

    config = yaml.safe_load((src / "config.yml").read_text())
    config["encoder_config"]["latent_dim"] = 32
    (src / "config.yml").write_text(yaml.safe_dump(config))
    with pytest.raises(CheckpointError) as exc:
        im.import_pdae_autoencoder(src, tmp_path / "out2", dpm_config=moved / "tiny")
    assert "ema_encoder has latent_dim 16" in one_line(exc) and "says 32" in str(exc.value)


# (d) Diff-AE autoencoder and latent DPM.


def diffae_official_keys(model: DiffAEUNet) -> dict[str, torch.Tensor]:
    """Our DiffAEUNet state dict under the official BeatGANsAutoencModel names (docs/protocol.md §3.4)."""
    return {("time_embed." + k if k.startswith("time_embed.") else k): v for k, v in model.state_dict().items()}


def write_diffae_latent(tmp_path: Path, monkeypatch, with_latent: bool = True, with_stats: bool = True):
    model = randomized(DiffAEUNet(**TINY_DIFFAE), 6)
    net = randomized(LatentMLP(**TINY_LATENT), 7)
    sd = {f"ema_model.{k}": v for k, v in diffae_official_keys(model).items()}
    sd.update({f"model.{k}": torch.zeros_like(v) for k, v in diffae_official_keys(model).items()})
    if with_latent:
        sd.update({f"ema_model.latent_net.{k}": v for k, v in net.state_dict().items()})
    sd["x_T"] = torch.randn(2, 3, 16, 16)
    if with_stats:
        sd["conds_mean"] = torch.randn(1, 16)
        sd["conds_std"] = torch.rand(1, 16) + 0.5
    path = tmp_path / "last.ckpt"
    lightning_save(monkeypatch, path, sd, TINY_HP, step=21)
    return path, model, net, sd


def test_official_diffae_key_names_are_the_documented_ones():
    keys = json.loads((FIXTURES / "diffae_keys" / "autoenc_small.json").read_text())["keys"]
    assert "time_embed.time_embed.0.weight" in keys and "encoder.out.3.weight" in keys
    assert not any(k.startswith("time_embed.0") for k in keys)


def test_import_diffae_autoencoder(tmp_path, monkeypatch):
    path, model, _, sd = write_diffae_latent(tmp_path, monkeypatch)
    out = im.import_diffae_autoencoder(path, tmp_path / "out", "auto")
    folder = load_model_folder(out)
    expected = {f"model.{k}": v for k, v in model.state_dict().items()}
    expected["stats.mean"], expected["stats.std"] = sd["conds_mean"][0], sd["conds_std"][0]
    assert_same(folder.tensors, expected)
    assert folder.config["components"] == {"model": {"class": "DiffAEUNet", "kwargs": TINY_DIFFAE}}
    assert folder.config["method"] == "diffae" and folder.metadata["global_step"] == 21
    method = load_method(out)
    x, t = inputs()
    with torch.no_grad():
        z = model.encode(x)
        assert torch.equal(method.encode(x), z)
        assert torch.equal(method.model(x, t, z), model(x, t, z))


def test_import_diffae_latent(tmp_path, monkeypatch):
    path, _, net, sd = write_diffae_latent(tmp_path, monkeypatch)
    out = im.import_diffae_latent(path, tmp_path / "out", "auto")
    folder = load_model_folder(out)
    expected = {f"net.{k}": v for k, v in net.state_dict().items()}
    expected["stats.mean"], expected["stats.std"] = sd["conds_mean"][0], sd["conds_std"][0]
    assert_same(folder.tensors, expected)
    assert folder.config["components"]["net"] == {"class": "LatentMLP", "kwargs": TINY_LATENT}
    assert folder.config["diffusion"] == {"kind": "const", "T": 1000, "beta": 0.008}
    assert folder.config["method_kwargs"] == {"clip_latent": False}
    method = load_method(out)
    z_t, t = torch.randn(3, 16, generator=torch.Generator().manual_seed(8)), torch.tensor([0, 250, 999])
    with torch.no_grad():
        assert torch.equal(method.net(z_t, t), net(z_t, t))
    assert torch.equal(method.stats.mean, sd["conds_mean"][0]) and torch.equal(method.stats.std, sd["conds_std"][0])


def test_diffae_latent_errors(tmp_path, monkeypatch):
    path, *_ = write_diffae_latent(tmp_path, monkeypatch, with_latent=False)
    with pytest.raises(CheckpointError) as exc:
        im.import_diffae_latent(path, tmp_path / "out", "auto")
    assert "no 'ema_model.latent_net.*' entries" in one_line(exc)
    path, *_ = write_diffae_latent(tmp_path, monkeypatch, with_stats=False)
    with pytest.raises(CheckpointError) as exc:
        im.import_diffae_latent(path, tmp_path / "out", "auto")
    assert "no conds_mean/conds_std" in one_line(exc)
    with pytest.raises(CheckpointError) as exc:
        im.import_diffae_latent(path, tmp_path / "out", "auto", config={"unet": {}})
    assert "unknown component 'unet'" in one_line(exc)
    assert not (tmp_path / "out").exists()


# Full-size presets against the official key/shape lists (meta tensors: no memory, no files).


def meta_tensors(shapes: dict[str, list[int]], prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k: torch.empty(v, device="meta") for k, v in shapes.items()}


def test_presets_fit_the_official_128px_layouts():
    official = json.loads((FIXTURES / "parity" / "official_keys_128.json").read_text())
    _, config = im.convert_pdae_dpm({"ema_denoise_fn": meta_tensors(official["unet"])}, {"denoise_fn_config": official["config"]})
    unet_kwargs = config["components"]["unet"]["kwargs"]
    ddim_sd = {**meta_tensors(official["unet"], "ema_model."), "x_T": torch.empty(32, 3, 128, 128, device="meta")}
    _, config = im.convert_diffae_ddim({"state_dict": ddim_sd}, "ffhq128")
    assert config["components"]["unet"]["kwargs"] == unet_kwargs == im.diffae_unet_kwargs(im.DIFFAE_PRESETS["horse128"])
    assert unet_kwargs["attention_ds"] == [8] and unet_kwargs["base_channels"] == 128

    encoder = json.loads((FIXTURES / "parity" / "official_keys_encoder.json").read_text())
    ckpt = {"ema_encoder": meta_tensors(encoder["128"]), "ema_decoder": meta_tensors({**official["unet"], **official["shift_unet_new"]})}
    ae_config = {"encoder_config": {"model": "FFHQEncoder", "latent_dim": 512}, "decoder_config": {"latent_dim": 512}}
    tensors, config = im.convert_pdae_autoencoder(ckpt, ae_config, official["config"])
    assert config["components"]["encoder"]["kwargs"] == {
        "image_size": 128, "in_channels": 3, "latent_dim": 512, "channels": [64, 128, 256, 256, 256],
        "attention_resolutions": [16], "num_heads": 4,
    }
    assert sum(1 for k in tensors if k.startswith("estimator.")) == 312
    assert im.infer_encoder_kwargs(meta_tensors(encoder["64"]), "x")["channels"] == [64, 128, 128, 128]

    autoenc = json.loads((FIXTURES / "diffae_keys" / "autoenc_ffhq128.json").read_text())
    tensors, config = im.convert_diffae_autoencoder({"state_dict": meta_tensors(autoenc["keys"], "ema_model.")})
    assert len(tensors) == 608 and config["components"]["model"]["kwargs"]["enc_channel_mult"] == [1, 1, 2, 3, 4, 4]

    latent = json.loads((FIXTURES / "diffae_keys" / "latent_mlp.json").read_text())
    sd = {**meta_tensors(latent["keys"], "ema_model.latent_net."), "conds_mean": torch.zeros(1, 512), "conds_std": torch.ones(1, 512)}
    _, config = im.convert_diffae_latent({"state_dict": sd}, "ffhq128")
    assert config["components"]["net"]["kwargs"]["num_layers"] == 10
    with pytest.raises(CheckpointError) as exc:
        im.convert_diffae_latent({"state_dict": sd}, "horse128")  # 20-layer preset vs 10-layer weights
    assert "state dict does not fit LatentMLP" in one_line(exc)
    with pytest.raises(CheckpointError) as exc:
        im.convert_diffae_ddim({"state_dict": ddim_sd}, "celeba64")
    assert "not expressible by UNet" in one_line(exc)


# Command line.


def test_cli_import(tmp_path, monkeypatch, capsys):
    src, _ = write_pdae_dpm(tmp_path)
    assert main(["import", "pdae-dpm", str(src), "--out", str(tmp_path / "a")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["import", "pdae-dpm", str(src), "--out", str(tmp_path / "a")]) == 2  # exists
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "--force" in err
    assert main(["import", "pdae-dpm", str(src), "--out", str(tmp_path / "a"), "--force"]) == 0
    assert main(["import", "pdae-dpm", str(tmp_path / "missing"), "--out", str(tmp_path / "b")]) == 2
    assert main(["import", "pdae-dpm", str(src), "--out", str(tmp_path / "b"), "--preset", "ffhq128"]) == 2
    capsys.readouterr()

    path, ema = write_diffae_ddim(tmp_path, monkeypatch, None)
    override = json.dumps({"unet": TINY_UNET})
    assert main(["import", "diffae-ddim", str(path), "--out", str(tmp_path / "c"), "--config-json", override]) == 0
    assert_same(load_model_folder(tmp_path / "c").tensors, {f"unet.{k}": v for k, v in ema.state_dict().items()})
    assert main(["import", "diffae-ddim", str(path), "--out", str(tmp_path / "d")]) == 2  # ffhq128 shapes
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "wrong architecture" in err
    assert not (tmp_path / "b").exists() and not (tmp_path / "d").exists()
