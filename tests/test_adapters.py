"""Foreign priors (pdae/nets/adapters.py, pdae/importers/foreign.py, issue 7): diffusers UNet2DModel folders and openai ADM checkpoints.

Pinned: a saved UNet2DModel loads with bit-identical weights and the split run (encoder half, then
middle/up path) equals the loaded model's own `unet(x, t).sample` bit for bit (published
google/ddpm-cifar10-32 block structure, and a class-conditional config). A second instance with the same
weights may differ in the last bits (CPU kernels depend on memory alignment), hence allclose there. openai
state-dict keys and outputs equal guided-/improved-diffusion's `UNetModel` (goldens below were produced by
running the upstream code, guided-diffusion @22e0df8 and improved-diffusion @1bc7bbb, on CPU with every
parameter `fill_value(key, shape)`, inputs
`fill_value("x0"|"x1", (3, 32, 32))`, t = [T//10, T-1], rescaled where the flags say so); schedules equal
diffusers' / guided-diffusion's betas; PDAE trains on each adapter with the prior frozen and untouched,
saves/loads through a model folder, and reconstructs through the shared DDIM code over the prior's T;
code-carrying pickles are refused without running.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest
import torch

from pdae.checkpoint import CheckpointError, load_model_folder, save_model_folder
from pdae.diffusion.gaussian import shift_coef
from pdae.diffusion.sampling import ddim_invert, ddim_sample
from pdae.diffusion.schedule import Schedule
from pdae.checkpoint import load_method
from pdae.methods import DPM, build_method, export_method
from pdae.nets.adapters import (
    AdmUNet,
    DiffusersPrior,
    adm_options,
    adm_schedule,
    adm_unet_kwargs,
    diffusers_schedule,
)
from pdae.importers.foreign import import_prior, load_prior
from pdae.nets.unet import UNet
from tests.test_nets_parity import fill_value

try:
    import diffusers
except ImportError:  # the optional dependency: diffusers tests skip, ADM tests run
    diffusers = None
needs_diffusers = pytest.mark.skipif(diffusers is None, reason="optional dependency diffusers not installed")

# google/ddpm-cifar10-32 unet/config.json (as published on the Hub) and its scheduler.
CIFAR10_UNET = {
    "_class_name": "UNet2DModel",
    "act_fn": "silu",
    "attention_head_dim": None,
    "block_out_channels": [128, 256, 256, 256],
    "center_input_sample": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "in_channels": 3,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 32,
    "time_embedding_type": "positional",
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
}
CIFAR10_SCHEDULER = {"beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear", "num_train_timesteps": 1000,
                     "clip_sample": True, "variance_type": "fixed_large"}
SMALL = {"block_out_channels": [32, 32, 32, 32], "sample_size": 16}  # same block structure, fast
DATA_INFO = {"image_size": 16, "channels": 3, "num_classes": 10, "num_attributes": None}
NETS = {"estimator": {"latent_dim": 16}, "encoder": {"channels": [32, 32], "attention_resolutions": []}}


def save_pipeline(folder: Path, unet_config: dict, seed: int = 0, scheduler: dict | None = None) -> torch.nn.Module:
    """A random-initialised UNet2DModel saved as a Hub-style pipeline folder; returns the model (eval)."""
    torch.manual_seed(seed)
    unet = diffusers.UNet2DModel.from_config(unet_config).eval()
    sched = diffusers.DDPMScheduler(**(scheduler or CIFAR10_SCHEDULER))
    diffusers.DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(folder)
    return unet


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def images(n: int = 2, size: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ddpm-small")
    save_pipeline(folder, {**CIFAR10_UNET, **SMALL})
    return folder


# Split run == diffusers forward.


@needs_diffusers
def test_cifar10_published_structure_split_equals_forward(tmp_path: Path) -> None:
    unet = save_pipeline(tmp_path, CIFAR10_UNET)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_index.json", "scheduler", "unet"]
    dpm = load_prior("diffusers", tmp_path)
    prior = dpm.unet
    assert isinstance(dpm, DPM) and isinstance(prior, DiffusersPrior)
    assert sum(p.numel() for p in prior.parameters()) == 35_746_307  # the published model's size
    assert_same_weights(prior.unet, unet)
    x, t = images(1, 32), torch.tensor([7])
    with torch.no_grad():
        ref = prior.unet(x, t).sample
        feats = prior.encode_features(x, t)
        out = prior.decode_features(feats)
        torch.testing.assert_close(unet(x, t).sample, ref, rtol=0, atol=1e-5)
    assert torch.equal(out, ref)
    layout = prior.feature_layout()
    assert [s.shape[1] for s in feats.skips] == list(layout.skip_channels)
    assert [32 // s.shape[-1] for s in feats.skips] == list(layout.skip_ds)
    assert (layout.base_channels, layout.channel_mult, layout.attention_ds, layout.emb_dim) == (128, (1, 2, 2, 2), (2,), 512)
    assert torch.equal(dpm.schedule.betas, Schedule.from_name("linear", 1000).betas)


@needs_diffusers
def test_class_conditional_split_equals_forward(tmp_path: Path) -> None:
    unet = save_pipeline(tmp_path, {**CIFAR10_UNET, **SMALL, "num_class_embeds": 10, "attention_head_dim": 16})
    prior = load_prior("diffusers", tmp_path).unet
    assert_same_weights(prior.unet, unet)
    x, t, y = images(), torch.tensor([0, 500]), torch.tensor([3, 9])
    with torch.no_grad():
        assert torch.equal(prior.decode_features(prior.encode_features(x, t, y)), prior.unet(x, t, y).sample)
        # a Python float is cut to an integer, as diffusers does; a tensor keeps its value
        assert torch.equal(prior(x, 10.7, y), prior.unet(x, 10, y).sample)
        assert torch.equal(prior(x, torch.tensor(10.7), y), prior.unet(x, torch.tensor(10.7), y).sample)
        assert not torch.equal(prior(x, torch.tensor(10.7), y), prior(x, 10.7, y))
    assert prior.feature_layout().head_channels == 16
    with pytest.raises(ValueError, match="needs labels y"):
        prior.encode_features(x, t)


@needs_diffusers
def test_diffusers_schedules_match_diffusers() -> None:
    for kind in ("linear", "scaled_linear", "squaredcos_cap_v2"):
        cfg = {"beta_schedule": kind, "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000}
        ref = diffusers.DDPMScheduler(**cfg).betas.double()
        torch.testing.assert_close(diffusers_schedule(cfg).betas, ref, rtol=2e-6, atol=1e-9)
    assert diffusers_schedule({"beta_schedule": "squaredcos_cap_v2"}).to_dict()["kind"] == "cosine"


# openai ADM checkpoints against the upstream code.

ADM_CASES = {
    "improved_cifar_lv_cosine4000": (
        "improved",
        "--image_size 32 --num_channels 32 --num_res_blocks 1 --learn_sigma True --dropout 0.3 "
        "--diffusion_steps 4000 --noise_schedule cosine",
        {"keys": 222, "params": 1_679_782, "keys_sha": "c960fc8ec99df3ad", "sum": -1313.080406430352,
         "first": [0.12187616527080536, -0.16565737128257751, 0.33641040325164795, -0.44305098056793213],
         "ch_means": [-0.010451255478074017, -0.5544676134118163, -0.10848958019641941,
                      0.26602111436886844, -0.10804920289464803, -0.12571600459023102]},
    ),
    "guided_additive_classcond": (
        "guided",
        "--image_size 32 --channel_mult 1,2 --num_channels 32 --num_res_blocks 1 --attention_resolutions 16 "
        "--num_heads 2 --num_heads_upsample 1 --use_scale_shift_norm False --resblock_updown True "
        "--class_cond True --learn_sigma True",
        {"keys": 145, "params": 890_310, "keys_sha": "7611ee15544236fa", "sum": -1355.503855543211,
         "first": [-0.10717064887285233, -0.23668333888053894, -0.2382369041442871, -0.30858680605888367],
         "ch_means": [-0.01328324440146389, -0.5516256903149497, -0.10257059999912599,
                      0.2577851941246081, -0.113429362795614, -0.1387434135779131]},
    ),
    "guided_convresample_newattn": (
        "guided",
        "--image_size 32 --channel_mult 1,2 --num_channels 32 --num_res_blocks 1 --attention_resolutions 32,16 "
        "--num_head_channels 16 --use_new_attention_order True --resblock_updown False",
        {"keys": 146, "params": 769_027, "keys_sha": "937dc8d81ac50a37", "sum": -1346.385482925456,
         "first": [0.35017654299736023, -0.48516207933425903, -0.7772673964500427, -0.43756863474845886],
         "ch_means": [-0.010053367861928564, -0.5533212956624993, -0.09404012306026743]},
    ),
}


@pytest.mark.parametrize("case", sorted(ADM_CASES))
def test_adm_checkpoint_matches_upstream(case: str, tmp_path: Path) -> None:
    family, flags, gold = ADM_CASES[case]
    shapes = {k: tuple(v.shape) for k, v in AdmUNet(**adm_unet_kwargs(adm_options(flags, family), family)).state_dict().items()}
    listing = "\n".join(f"{k}:{list(s)}" for k, s in sorted(shapes.items()))
    assert (len(shapes), hashlib.sha256(listing.encode()).hexdigest()[:16]) == (gold["keys"], gold["keys_sha"])
    assert sum(torch.Size(s).numel() for s in shapes.values()) == gold["params"]
    torch.save({k: fill_value(k, s).float() for k, s in shapes.items()}, tmp_path / "model.pt")
    dpm = load_prior("adm", tmp_path / "model.pt", flags=flags, family=family)
    T = dpm.schedule.T
    x = torch.stack([fill_value(f"x{i}", (3, 32, 32)).float() for i in range(2)])
    y = torch.tensor([3, 997]) if dpm.unet.num_classes else None
    with torch.no_grad():
        out = dpm.unet(x, torch.tensor([T // 10, T - 1]), y).double()
    assert out.sum().item() == pytest.approx(gold["sum"], abs=2e-2)
    torch.testing.assert_close(out.flatten()[:4], torch.tensor(gold["first"], dtype=torch.float64), atol=2e-5, rtol=0)
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), torch.tensor(gold["ch_means"], dtype=torch.float64), atol=2e-5, rtol=0)


def test_adm_schedules_and_time_rescaling() -> None:
    # guided-diffusion get_named_beta_schedule: linear betas scaled by 1000/T; cosine as ours
    lin = adm_schedule({"diffusion_steps": 4000, "noise_schedule": "linear"})
    assert (lin.betas[0].item(), lin.betas[-1].item()) == (2.5e-05, 0.005)
    cos = adm_schedule({"diffusion_steps": 4000, "noise_schedule": "cosine"})
    assert torch.equal(cos.betas, Schedule.from_name("cosine", 4000).betas)
    assert adm_unet_kwargs(adm_options("--diffusion_steps 4000", "improved"), "improved")["time_scale"] == 0.25
    assert adm_unet_kwargs(adm_options("--diffusion_steps 4000", "guided"), "guided")["time_scale"] == 1.0


def test_adm_defaults_are_the_native_unet_and_rescaling_feeds_scaled_time() -> None:
    kw = {"base_channels": 32, "channel_mult": (1, 2), "num_res_blocks": 1, "attention_ds": (2,), "dropout": 0.0,
          "learn_sigma": True}
    torch.manual_seed(0)
    native = UNet(**kw).eval()
    adm = AdmUNet(**kw).eval()
    assert set(adm.state_dict()) == set(native.state_dict())
    sd = {k: fill_value(k, tuple(v.shape)).float() for k, v in native.state_dict().items()}
    native.load_state_dict(sd, assign=True)  # one set of tensors: bit-exact comparisons are meaningful
    adm.load_state_dict(sd, assign=True)
    rescaled = AdmUNet(time_scale=0.25, **kw).eval()
    rescaled.load_state_dict(sd, assign=True)
    x, t = images(), torch.tensor([400, 3999])
    with torch.no_grad():
        assert torch.equal(adm(x, t), native(x, t))
        raw = rescaled.decode_features(rescaled.encode_features(x, t))
        assert torch.equal(raw, native(x, t.float() * 0.25))
    assert raw.shape[1] == 6 and torch.equal(rescaled.eps_from_output(raw), raw[:, :3])


# PDAE on foreign priors.


def train_and_reconstruct(dpm: DPM, out_dir: Path, steps: int = 3) -> None:
    """PDAE on a frozen prior: a few Adam steps, the prior untouched; save/load; DDIM encode/decode."""
    method = build_method("pdae", NETS, {}, {}, DATA_INFO, prior=dpm)
    assert method.schedule is dpm.schedule
    assert torch.equal(method.shift_coef, shift_coef(dpm.schedule).float())
    prior_before = {k: v.clone() for k, v in dpm.unet.state_dict().items()}
    new_before = {k: v.clone() for k, v in method.estimator.new_state_dict().items()}
    opt = torch.optim.Adam(method.trainable_parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    x, y = images(4), torch.zeros(4, dtype=torch.long)
    method.train()
    for _ in range(steps):
        opt.zero_grad()
        method(x, y, gen).mean().backward()
        opt.step()
    method.eval()
    assert all(p.grad is None for p in dpm.unet.parameters())
    assert all(torch.equal(v, prior_before[k]) for k, v in dpm.unet.state_dict().items())
    assert not torch.equal(method.estimator.new_state_dict()["shift_out.2.weight"], new_before["shift_out.2.weight"])

    tensors, config = export_method(method)
    assert config["components"]["prior"]["class"] == type(dpm.unet).__name__
    assert config["diffusion"] == dpm.schedule.to_dict()
    save_model_folder(out_dir, tensors, config, {})
    loaded = load_method(out_dir)
    ts = []
    with torch.no_grad():
        z = loaded.encode(x[:2])
        assert torch.equal(z, method.encode(x[:2]))
        eps_fn, shift_fn = loaded.denoiser(z)
        x_t, t = x[:2] * 0.5, torch.tensor([dpm.schedule.T // 2] * 2)
        for got, want in zip(shift_fn(x_t, t), method.denoiser(z)[1](x_t, t)):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        x_T = ddim_invert(eps_fn, x[:2], loaded.schedule, 5, shift_fn=shift_fn, callback=lambda s: ts.append(int(s["t"][0])))
        rec = ddim_sample(eps_fn, x_T, loaded.schedule, 5, shift_fn=shift_fn)
        plain = ddim_sample(eps_fn, x_T, loaded.schedule, 5)
    stride = dpm.schedule.T // 5
    assert ts == list(range(0, dpm.schedule.T, stride))  # respacing over the prior's T
    assert torch.isfinite(rec).all() and rec.shape == x[:2].shape
    assert not torch.equal(rec, plain)  # the trained G shifts the DDIM decoder


@needs_diffusers
def test_pdae_on_diffusers_prior(small_folder: Path, tmp_path: Path) -> None:
    dpm = load_prior("diffusers", small_folder)
    train_and_reconstruct(dpm, tmp_path / "pdae")
    files = load_model_folder(tmp_path / "pdae")
    assert files.config["components"]["prior"]["kwargs"]["unet_config"]["block_out_channels"] == [32, 32, 32, 32]
    assert any(k.startswith("prior.unet.down_blocks.1.attentions.0.") for k in files.tensors)


def test_pdae_on_adm_learned_variance_cosine4000_prior(tmp_path: Path) -> None:
    family = "guided"  # conv resampling (resblock_updown False), time rescaled to t * 1000 / 4000
    flags = ("--image_size 16 --channel_mult 1,2 --num_channels 32 --num_res_blocks 1 --attention_resolutions 8 "
             "--learn_sigma True --dropout 0.3 --diffusion_steps 4000 --noise_schedule cosine --rescale_timesteps True")
    unet = AdmUNet(**adm_unet_kwargs(adm_options(flags, family), family))
    torch.save({k: fill_value(k, tuple(v.shape)).float() * 0.5 for k, v in unet.state_dict().items()}, tmp_path / "m.pt")
    dpm = load_prior("adm", tmp_path / "m.pt", flags=flags, family=family)
    assert (dpm.schedule.T, dpm.unet.time_scale, dpm.unet.feature_layout().out_channels) == (4000, 0.25, 6)
    train_and_reconstruct(dpm, tmp_path / "pdae")


@needs_diffusers
def test_import_prior_writes_a_dpm_folder(small_folder: Path, tmp_path: Path) -> None:
    out = import_prior("diffusers", small_folder, tmp_path / "dpm")
    dpm, direct = load_method(out), load_prior("diffusers", small_folder)
    assert isinstance(dpm, DPM) and isinstance(dpm.unet, DiffusersPrior)
    assert json.loads((out / "metadata.json").read_text())["source"] == "import-diffusers"
    assert_same_weights(dpm.unet, direct.unet)
    x, t = images(), torch.tensor([3, 800])
    with torch.no_grad():
        torch.testing.assert_close(dpm.unet(x, t), direct.unet(x, t), rtol=0, atol=1e-5)


# Weight files.


@needs_diffusers
def test_legacy_attention_names_in_bin_load(small_folder: Path, tmp_path: Path) -> None:
    """Published google/ddpm-* weights use diffusers < 0.14 attention names (query/key/value/proj_attn)."""
    legacy = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    folder = tmp_path / "legacy"
    save_pipeline(folder, {**CIFAR10_UNET, **SMALL}, seed=3)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    from safetensors.torch import load_file

    sd = load_file(str(weights))
    renamed = {}
    for k, v in sd.items():
        for new, old in legacy.items():
            k = k.replace(f".{new}.", f".{old}.")
        renamed[k] = v
    assert any(".query." in k for k in renamed)
    weights.unlink()
    torch.save(renamed, folder / "unet" / "diffusion_pytorch_model.bin")
    prior = load_prior("diffusers", folder).unet
    assert all(torch.equal(prior.unet.state_dict()[k], v) for k, v in sd.items())


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


@needs_diffusers
def test_code_payload_in_bin_is_refused(small_folder: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "evil"
    shutil.copytree(small_folder, folder)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    marker = tmp_path / "pwned"
    torch.save({"conv_in.weight": _Payload(marker)}, folder / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(CheckpointError) as err:
        load_prior("diffusers", folder)
    assert "\n" not in str(err.value) and "diffusion_pytorch_model.bin" in str(err.value)
    torch.save({"input_blocks.0.0.weight": _Payload(marker)}, tmp_path / "adm.pt")
    with pytest.raises(CheckpointError):
        load_prior("adm", tmp_path / "adm.pt")
    assert not marker.exists()


# One-line errors.


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"scheduler": {"prediction_type": "v_prediction"}}, "prediction_type='v_prediction' unsupported"),
        ({"scheduler": {"beta_schedule": "sigmoid"}}, "beta_schedule='sigmoid' unsupported"),
        ({"unet": {"time_embedding_type": "fourier"}}, "time_embedding_type='fourier' unsupported"),
        ({"unet": {"down_block_types": ["SkipDownBlock2D"] * 4}}, "down_block_types"),
        ({"index": {"unet": ["diffusers", "UNet2DConditionModel"]}}, "only UNet2DModel"),
    ],
)
@needs_diffusers
def test_bad_diffusers_folder_is_one_line(small_folder: Path, tmp_path: Path, edit: dict, message: str) -> None:
    import shutil

    folder = tmp_path / "bad"
    shutil.copytree(small_folder, folder)
    files = {"scheduler": folder / "scheduler" / "scheduler_config.json", "unet": folder / "unet" / "config.json",
             "index": folder / "model_index.json"}
    for part, change in edit.items():
        cfg = json.loads(files[part].read_text())
        files[part].write_text(json.dumps({**cfg, **change}))
    with pytest.raises(CheckpointError, match=message) as err:
        load_prior("diffusers", folder)
    assert "\n" not in str(err.value)


def test_bad_adm_flags_are_one_line() -> None:
    with pytest.raises(ValueError, match="--num_channel unknown"):
        adm_options("--num_channel 64")
    with pytest.raises(ValueError, match="expected a boolean"):
        adm_options("--learn_sigma maybe")
    with pytest.raises(ValueError, match="predict_xstart"):
        adm_unet_kwargs(adm_options("--predict_xstart True"))
    with pytest.raises(ValueError, match="image_size 512"):
        adm_unet_kwargs(adm_options("--image_size 512 --batch_size 4 --use_fp16 True"))
    with pytest.raises(ValueError, match="unexpected option 'flags'"):
        load_prior("diffusers", ".", flags="")


def test_missing_diffusers_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers -> ImportError
    with pytest.raises(ValueError, match=r"pip install 'pdae-bench\[diffusers\]'"):
        DiffusersPrior(CIFAR10_UNET)
