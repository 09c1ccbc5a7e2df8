"""Import of the official PDAE latent DPM folder (`pdae import pdae-latent`, pdae/importers.py) and the
folder-vs-file errors of every import kind.

The official layout is built here at a small size, as the official PDAE code writes it
(trainer/train_latent_diffusion.py `save`: `{step, encoder, decoder, latent_denoise_fn,
ema_latent_denoise_fn, optimizer, scaler}` in trained-models/latent_denoise_fn/<name>/checkpoint.pt next to
the run's config.yml; sampler/infer_latents.py: `{"mean", "std"}` in trained-models/latents/<name>.pt).

tests/fixtures/pdae_keys/latent_mlp.json was generated from the official PDAE `MLPSkipNet` (ckczzj/PDAE
@4f9c29a, model/mlp_skip_net.py): the 10-layer key names and shapes of config/ffhq_latent.yml, the parameter
counts, and eps of a small config filled RNG-free as tests/fixtures/diffae_keys/latent_mlp.json (generated
from Diff-AE's `MLPSkipNet`), so the two official nets are compared here through their fixtures.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from pdae import importers as im
from pdae.checkpoint import CheckpointError, load_model_folder
from pdae.cli import main
from pdae.checkpoint import load_method
from pdae.nets.latent_mlp import LatentMLP
from tests.test_importers import (
    TINY_LATENT,
    assert_same,
    one_line,
    randomized,
    sha256,
    write_diffae_latent,
    write_pdae_dpm,
)
from tests.test_nets_latent import official_fill

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[1]

# The official config/ffhq_latent.yml at a small size (`latent_dim` anchor as in the official file);
# LatentMLP(**TINY_LATENT) is the same network.
OFFICIAL_LATENT_YML = """\
train_dataset_config:
  name: "FFHQ"
  data_path: "./data/ffhq"
  image_size: 16
  image_channel: 3
  latent_dim: &latent_dim 16
  augmentation: False
eval_dataset_config:
  augmentation: False

trained_ddpm_config: "./pre-trained-dpms/tiny/config.yml"
trained_representation_learning_config: "./trained-models/autoencoder/tiny/config.yml"
trained_representation_learning_checkpoint: "./trained-models/autoencoder/tiny/checkpoint.pt"
inferred_latents: "./trained-models/latents/tiny.pt"

latent_denoise_fn_config:
  model: "FFHQLatentDenoiseFn"
  input_channel: *latent_dim
  model_channel: 64
  num_layers: 3
  time_emb_channel: 8
  use_norm: True
  dropout: 0.0

optimizer_config:
  name: "AdamW"
  lr: 1e-3
  adam_betas: (0.9, 0.999)
  adam_eps: 1e-8
  weight_decay: 0.01
  enable_amp: False
"""


# Tiny tensors: one intra-op thread (tests/conftest.py `single_thread`).
pytestmark = pytest.mark.usefixtures("single_thread")


def write_pdae_latent(root: Path, seed: int = 7, config_text: str = OFFICIAL_LATENT_YML,
                      ema_sd: dict | None = None) -> tuple[Path, Path, dict, dict]:
    """trained-models/latent_denoise_fn/tiny/{config.yml, checkpoint.pt} and trained-models/latents/tiny.pt
    under `root`; returns (folder, stats file, EMA state dict, stats)."""
    src = root / "trained-models" / "latent_denoise_fn" / "tiny"
    src.mkdir(parents=True)
    ema = randomized(LatentMLP(**TINY_LATENT), seed).state_dict() if ema_sd is None else ema_sd
    raw = randomized(LatentMLP(**TINY_LATENT), seed + 100)
    optimizer = torch.optim.AdamW(raw.parameters(), lr=1e-3, weight_decay=0.01)
    raw(torch.randn(2, 16), torch.tensor([1, 2])).sum().backward()
    optimizer.step()
    g = torch.Generator().manual_seed(seed + 200)
    ckpt = {
        "step": 12,
        # The frozen autoencoder the latents came from (ignored by the import): small dummy state dicts.
        "encoder": {"encoder.0.weight": torch.randn(8, 3, 3, 3, generator=g),
                    "encoder.2.weight": torch.randn(16, 8, generator=g)},
        "decoder": {"input_blocks.0.0.weight": torch.randn(8, 3, 3, 3, generator=g), "shift_out.2.bias": torch.zeros(3)},
        "latent_denoise_fn": raw.state_dict(),
        "ema_latent_denoise_fn": ema,
        "optimizer": optimizer.state_dict(),
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                   "_growth_tracker": 0},  # GradScaler.state_dict()
    }
    torch.save(ckpt, src / "checkpoint.pt")
    (src / "config.yml").write_text(config_text)
    stats = {"mean": torch.randn(16, generator=g), "std": torch.rand(16, generator=g) + 0.5}
    stats_path = root / "trained-models" / "latents" / "tiny.pt"
    stats_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(stats, stats_path)
    return src, stats_path, ema, stats


def official_forward(sd: dict, z: torch.Tensor, t: torch.Tensor, num_layers: int, time_emb_channel: int) -> torch.Tensor:
    """MLPSkipNet.forward written out from the official PDAE code (model/mlp_skip_net.py, model/module.py
    `timestep_embedding`) on the raw state dict: no module of ours involved."""
    half = time_emb_channel // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    cond = F.linear(F.silu(F.linear(emb, sd["time_embed.0.weight"], sd["time_embed.0.bias"])),
                    sd["time_embed.2.weight"], sd["time_embed.2.bias"])
    h = z
    for i in range(num_layers):
        if i >= 1:  # skip_layers = range(1, num_layers)
            h = torch.cat([h, z], dim=1)
        h = F.linear(h, sd[f"layers.{i}.linear.weight"], sd[f"layers.{i}.linear.bias"])
        if i < num_layers - 1:  # MLPLNAct: x * (1 + cond_layers(cond)), LayerNorm, SiLU
            scale = F.linear(F.silu(cond), sd[f"layers.{i}.cond_layers.1.weight"], sd[f"layers.{i}.cond_layers.1.bias"])
            h = h * (1.0 + scale)
            h = F.silu(F.layer_norm(h, (h.shape[1],), sd[f"layers.{i}.norm.weight"], sd[f"layers.{i}.norm.bias"]))
    return h


def import_cli(*argv: str) -> int:
    return main(["import", *argv])


# The two official nets.


def test_official_pdae_and_diffae_latent_nets_share_keys():
    pdae = json.loads((FIXTURES / "pdae_keys" / "latent_mlp.json").read_text())
    diffae = json.loads((FIXTURES / "diffae_keys" / "latent_mlp.json").read_text())
    assert list(pdae["keys"].items()) == list(diffae["keys"].items())  # names, shapes and order (78 keys)
    assert pdae["num_params"] == diffae["num_params"] == 54_109_696 and pdae["num_params_20_layers"] == 117_106_176
    assert list(pdae["small"]["keys"].items()) == list(diffae["small"]["keys"].items())
    assert pdae["small"]["eps"] == diffae["small"]["eps"]  # same weights -> the same eps from both official codes
    with torch.device("meta"):
        ours = LatentMLP(**im.pdae_latent_kwargs(pdae["config"]))
    assert {k: list(v.shape) for k, v in ours.state_dict().items()} == pdae["keys"]


def test_full_size_official_layout_on_the_meta_device():
    pdae = json.loads((FIXTURES / "pdae_keys" / "latent_mlp.json").read_text())
    ckpt = {"ema_latent_denoise_fn": {k: torch.empty(v, device="meta") for k, v in pdae["keys"].items()}}
    official = {"latent_denoise_fn_config": {"model": "FFHQLatentDenoiseFn", **pdae["config"]}}
    stats = {"mean": torch.zeros(512), "std": torch.ones(512)}
    tensors, config = im.convert_pdae_latent(ckpt, official, stats)
    assert len(tensors) == 78 + 2
    assert config["components"]["net"]["kwargs"] == {
        "latent_dim": 512, "hidden": 2048, "num_layers": 10, "time_dim": 64, "time_out": 512, "dropout": 0.0,
        "use_norm": True,
    }
    official["latent_denoise_fn_config"]["num_layers"] = 20  # config/horse_latent.yml vs 10-layer weights
    with pytest.raises(CheckpointError) as exc:
        im.convert_pdae_latent(ckpt, official, stats)
    assert one_line(exc).startswith("checkpoint.pt: ema_latent_denoise_fn: state dict does not fit LatentMLP")


def test_small_official_values_reproduce_the_official_eps(tmp_path):
    small = json.loads((FIXTURES / "pdae_keys" / "latent_mlp.json").read_text())["small"]
    cfg = small["config"]
    text = yaml.safe_dump({"latent_denoise_fn_config": {"model": "CELEBA64LatentDenoiseFn", **cfg}})
    src = tmp_path / "latent"
    src.mkdir()
    torch.save({"ema_latent_denoise_fn": official_fill(small["keys"])}, src / "checkpoint.pt")
    (src / "config.yml").write_text(text)
    torch.save({"mean": torch.zeros(8), "std": torch.ones(8)}, tmp_path / "stats.pt")
    out = im.import_pdae_latent(src, tmp_path / "out", latents=tmp_path / "stats.pt")
    method = load_method(out)
    z_t = torch.sin(0.41 * torch.arange(24, dtype=torch.float64) + 0.5).float().reshape(3, 8)
    with torch.no_grad():
        eps = method.net(z_t, torch.tensor(small["inputs"]["t"]))
    torch.testing.assert_close(eps, torch.tensor(small["eps"]), atol=1e-5, rtol=1e-5)


# The import.


def test_import_pdae_latent_cli(tmp_path, capsys):
    src, stats_path, ema, stats = write_pdae_latent(tmp_path)
    out = tmp_path / "out"
    assert import_cli("pdae-latent", str(src), "--latents", str(stats_path), "--out", str(out)) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out} (method latent, components net, stats, ")
    folder = load_model_folder(out)
    expected = {f"net.{k}": v for k, v in ema.items()}  # the EMA weights, unchanged (not `latent_denoise_fn`)
    expected["stats.mean"], expected["stats.std"] = stats["mean"], stats["std"]
    assert_same(folder.tensors, expected)
    assert folder.config["method"] == "latent"
    assert folder.config["components"] == {
        "net": {"class": "LatentMLP", "kwargs": TINY_LATENT},
        "stats": {"class": "LatentStats", "kwargs": {"dim": 16}},
    }
    assert folder.config["diffusion"] == {"kind": "const", "T": 1000, "beta": 0.008}
    assert folder.config["method_kwargs"] == {"clip_latent": True}  # the official sampler's clamps
    source = folder.metadata["source"]
    assert source["importer"] == "pdae-latent" and source["sha256"] == sha256(src / "checkpoint.pt")
    assert source["files"] == {str(p.resolve()): sha256(p) for p in (src / "checkpoint.pt", src / "config.yml", stats_path)}
    assert folder.metadata["step"] == 12

    method = load_method(out)
    assert method.method_kwargs == {"clip_latent": True} and method.schedule.T == 1000
    assert torch.allclose(method.schedule.betas, torch.full((1000,), 0.008, dtype=method.schedule.betas.dtype))
    z_t, t = torch.randn(4, 16, generator=torch.Generator().manual_seed(3)), torch.tensor([0, 1, 500, 999])
    with torch.no_grad():
        eps = method.net(z_t, t)
    torch.testing.assert_close(eps, official_forward(ema, z_t, t, num_layers=3, time_emb_channel=8), atol=1e-6, rtol=1e-5)
    assert eps.abs().sum() > 0
    assert torch.equal(method.stats.mean, stats["mean"]) and torch.equal(method.stats.std, stats["std"])
    z = torch.randn(2, 16)
    assert torch.allclose(method.stats.normalize(z), (z - stats["mean"]) / stats["std"])


def test_same_weights_as_a_diffae_latent_import(tmp_path, monkeypatch):
    path, _, net, sd = write_diffae_latent(tmp_path, monkeypatch)  # LatentMLP(**TINY_LATENT) seed 7
    diffae = load_model_folder(im.import_diffae_latent(path, tmp_path / "diffae", "auto"))
    src, stats_path, ema, _ = write_pdae_latent(tmp_path / "pdae", ema_sd=net.state_dict())
    pdae = load_model_folder(im.import_pdae_latent(src, tmp_path / "pdae_out", latents=stats_path))
    net_keys = [k for k in pdae.tensors if k.startswith("net.")]
    assert net_keys == [k for k in diffae.tensors if k.startswith("net.")]
    assert all(torch.equal(pdae.tensors[k], diffae.tensors[k]) for k in net_keys)
    assert pdae.config["components"] == diffae.config["components"]
    assert pdae.config["diffusion"] == diffae.config["diffusion"]
    assert (pdae.config["method_kwargs"], diffae.config["method_kwargs"]) == ({"clip_latent": True}, {"clip_latent": False})
    z_t, t = torch.randn(3, 16, generator=torch.Generator().manual_seed(4)), torch.tensor([3, 300, 998])
    with torch.no_grad():
        assert torch.equal(load_method(tmp_path / "pdae_out").net(z_t, t), load_method(tmp_path / "diffae").net(z_t, t))


def test_stats_found_through_inferred_latents(tmp_path, capsys):
    src, stats_path, _, stats = write_pdae_latent(tmp_path)
    # Run from anywhere: `./trained-models/latents/tiny.pt` is looked up next to and above the folder.
    out = im.import_pdae_latent(src, tmp_path / "out")
    assert torch.equal(load_model_folder(out).tensors["stats.std"], stats["std"])
    stats_path.rename(tmp_path / "elsewhere.pt")
    with pytest.raises(CheckpointError) as exc:
        im.import_pdae_latent(src, tmp_path / "out2")
    assert one_line(exc) == (f"{src / 'config.yml'}: inferred_latents './trained-models/latents/tiny.pt' not found next to "
                             f"or above {src}; pass --latents PATH")
    assert import_cli("pdae-latent", str(src), "--out", str(tmp_path / "out2")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "pass --latents PATH" in err
    assert not (tmp_path / "out2").exists()


def test_pdae_latent_errors(tmp_path, capsys):
    src, stats_path, ema, _ = write_pdae_latent(tmp_path)
    ckpt_path, cfg_path = src / "checkpoint.pt", src / "config.yml"

    def error(**kw) -> str:
        with pytest.raises(CheckpointError) as exc:
            im.import_pdae_latent(src, tmp_path / "out", latents=stats_path, **kw)
        return one_line(exc)

    cfg_path.write_text(OFFICIAL_LATENT_YML.replace("model_channel: 64", "model_channel: 32"))
    msg = error()
    assert msg.startswith(f"{ckpt_path}: ema_latent_denoise_fn: state dict does not fit LatentMLP (wrong architecture?)")
    assert "layers.0.linear.weight [64, 16] vs [32, 16]" in msg  # (file vs config)
    cfg_path.write_text(OFFICIAL_LATENT_YML.replace("  num_layers: 3\n", ""))
    assert error() == f"{cfg_path}: latent_denoise_fn_config.num_layers missing"
    cfg_path.write_text(OFFICIAL_LATENT_YML.replace("model_channel: 64", "model_channel: wide"))
    assert error() == f"{cfg_path}: latent_denoise_fn_config.model_channel must be an integer, got 'wide'"
    cfg_path.write_text(OFFICIAL_LATENT_YML.replace("num_layers: 3", "num_layers: 1"))
    msg = error()
    assert msg.startswith(f"{cfg_path}: latent_denoise_fn_config: ") and msg.endswith("num_layers must be >= 2, got 1")
    cfg_path.write_text(yaml.safe_dump({"denoise_fn_config": {"model": "UNet"}}))  # a DPM folder's config
    assert "no latent_denoise_fn_config (not an official PDAE latent DPM folder?)" in error()
    cfg_path.write_text(OFFICIAL_LATENT_YML)

    torch.save({"step": 1, "latent_denoise_fn": ema}, ckpt_path)
    assert error() == f"{ckpt_path}: no 'ema_latent_denoise_fn' entry (found: latent_denoise_fn, step)"
    torch.save({"ema_latent_denoise_fn": {f"module.{k}": v for k, v in ema.items()}}, ckpt_path)  # DDP-saved: accepted
    im.import_pdae_latent(src, tmp_path / "ddp", latents=stats_path)

    torch.save({"mean": torch.zeros(8), "std": torch.ones(8)}, stats_path)
    assert error() == f"{stats_path}: mean has 8 entries, latent_denoise_fn_config.input_channel is 16"
    torch.save({"mean": torch.zeros(16)}, stats_path)
    assert error() == f"{stats_path}: expected the latent statistics {{'mean', 'std'}} (found: mean)"
    torch.save({"mean": torch.zeros(16), "std": torch.zeros(16)}, stats_path)
    assert "std > 0" in error()
    with pytest.raises(CheckpointError) as exc:
        im.import_pdae_latent(src, tmp_path / "out", latents=tmp_path / "missing.pt")
    assert one_line(exc) == f"{tmp_path / 'missing.pt'}: file not found"
    with pytest.raises(CheckpointError) as exc:
        im.import_pdae_latent(src, tmp_path / "out", latents=tmp_path)
    assert one_line(exc).startswith(f"{tmp_path}: is a folder; --latents expects the latent statistics file")
    (ckpt_path).unlink()
    assert error() == f"{ckpt_path}: file not found"
    assert not (tmp_path / "out").exists()

    for extra, words in ((["--config-json", "{}"], "pdae-latent takes no --config-json"),
                         (["--preset", "ffhq128"], "--preset applies to the diffae-* imports only")):
        assert import_cli("pdae-latent", str(src), "--out", str(tmp_path / "o"), *extra) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and words in err
    assert import_cli("pdae-dpm", str(src), "--latents", str(stats_path), "--out", str(tmp_path / "o")) == 2
    assert "--latents applies to pdae-latent only, not pdae-dpm" in capsys.readouterr().err


# Folder where a file is expected, and vice versa (every import kind).

FOLDER_KINDS = ("pdae-dpm", "pdae-autoencoder", "pdae-latent", "diffusers")
FILE_KINDS = ("diffae-ddim", "diffae-autoencoder", "diffae-latent", "adm")


def test_every_import_kind_is_classified():
    assert set(FOLDER_KINDS) | set(FILE_KINDS) == set(im.IMPORT_KINDS)


@pytest.mark.parametrize("kind", FILE_KINDS)
def test_folder_given_to_a_file_kind(kind, tmp_path, capsys):
    src, *_ = write_pdae_latent(tmp_path)  # an official PDAE folder
    assert import_cli(kind, str(src), "--out", str(tmp_path / "out")) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.err.startswith(f"error: {src}: is a folder; {kind} expects the ")
    assert not (tmp_path / "out").exists()
    if kind == "diffae-latent":
        assert captured.err == (f"error: {src}: is a folder; diffae-latent expects the `last.ckpt` file "
                                "(for the official PDAE latent folder use `pdae import pdae-latent`)\n")
    if kind.startswith("diffae-"):  # a Lightning checkpoints/<name>/ folder: point at its last.ckpt
        run = tmp_path / "checkpoints" / "tiny_autoenc_latent"
        run.mkdir(parents=True)
        (run / "last.ckpt").write_bytes(b"")
        assert import_cli(kind, str(run), "--out", str(tmp_path / "out")) == 2
        assert capsys.readouterr().err == (f"error: {run}: is a folder; {kind} expects the `last.ckpt` file "
                                           f"(did you mean {run / 'last.ckpt'}?)\n")


@pytest.mark.parametrize("kind", FOLDER_KINDS)
def test_file_given_to_a_folder_kind(kind, tmp_path, capsys):
    src, stats_path, *_ = write_pdae_latent(tmp_path)
    assert import_cli(kind, str(stats_path), "--out", str(tmp_path / "out")) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.err.startswith(f"error: {stats_path}: is a file; {kind} expects the ")
    if kind.startswith("pdae-"):
        assert f"{kind} expects the folder holding config.yml and checkpoint.pt (" in captured.err
        assert import_cli(kind, str(src / "checkpoint.pt"), "--out", str(tmp_path / "out")) == 2
        assert capsys.readouterr().err == (f"error: {src / 'checkpoint.pt'}: is a file; {kind} expects the folder "
                                           f"holding config.yml and checkpoint.pt (give its folder {src})\n")
    assert not (tmp_path / "out").exists()


def test_python_api_checks_the_source_kind_too(tmp_path, monkeypatch):
    dpm, _ = write_pdae_dpm(tmp_path)
    path, *_ = write_diffae_latent(tmp_path, monkeypatch)
    for call, words in (
        (lambda: im.import_pdae_dpm(dpm / "checkpoint.pt", tmp_path / "o"), "is a file; pdae-dpm expects the folder"),
        (lambda: im.import_pdae_autoencoder(path, tmp_path / "o"), "is a file; pdae-autoencoder expects the folder"),
        (lambda: im.import_pdae_latent(path, tmp_path / "o"), "use `pdae import diffae-latent`"),
        (lambda: im.import_diffae_ddim(dpm, tmp_path / "o"), "use `pdae import pdae-dpm`"),
        (lambda: im.import_diffae_autoencoder(dpm, tmp_path / "o"), "is a folder; diffae-autoencoder expects"),
        (lambda: im.import_diffae_latent(tmp_path, tmp_path / "o"), f"did you mean {path}?"),
    ):
        with pytest.raises(CheckpointError) as exc:
            call()
        assert words in one_line(exc)


@pytest.mark.parametrize("kind, expected", [
    ("pdae-dpm", "expected the official folder holding config.yml and checkpoint.pt"),
    ("pdae-autoencoder", "expected the official folder holding config.yml and checkpoint.pt"),
    ("pdae-latent", "expected the official folder holding config.yml and checkpoint.pt"),
    ("diffae-ddim", "file not found"),
    ("diffae-latent", "file not found"),
])
def test_missing_paths_keep_their_messages(kind, expected, tmp_path, capsys):
    missing = tmp_path / "missing"
    assert import_cli(kind, str(missing), "--out", str(tmp_path / "out")) == 2
    assert capsys.readouterr().err == f"error: {missing}: {expected}\n"


def test_command_line_end_to_end(tmp_path):
    """`python -m pdae import` as a user runs it: the import, then a folder given to diffae-latent."""
    src, stats_path, ema, _ = write_pdae_latent(tmp_path)
    run = [sys.executable, "-m", "pdae", "import"]
    ok = subprocess.run([*run, "pdae-latent", str(src), "--latents", str(stats_path), "--out", str(tmp_path / "out")],
                        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"wrote {tmp_path / 'out'} (method latent, components net, stats, ")
    tensors = load_model_folder(tmp_path / "out").tensors
    assert_same({k[len("net."):]: v for k, v in tensors.items() if k.startswith("net.")}, ema)
    bad = subprocess.run([*run, "diffae-latent", f"{src}/", "--out", str(tmp_path / "bad")],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    assert bad.stderr == (f"error: {src}: is a folder; diffae-latent expects the `last.ckpt` file "
                          "(for the official PDAE latent folder use `pdae import pdae-latent`)\n")
