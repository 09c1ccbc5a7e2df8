"""Import published PDAE and Diff-AE checkpoints into our model-folder format (`pdae.checkpoint`).

docs/protocol.md §3 describes every layout:
  pdae-dpm            official PDAE pre-trained DPM folder: `config.yml` (`denoise_fn_config`) +
                      `checkpoint.pt` (`ema_denoise_fn`, a plain U-Net state dict)      -> method "dpm"
  diffae-ddim         Diff-AE DDIM baseline `last.ckpt`: `state_dict["ema_model.*"]`, prefix stripped,
                      buffer `x_T` ignored (§3.4)                                       -> method "dpm"
  pdae-autoencoder    official PDAE autoencoder folder: `checkpoint.pt` (`ema_encoder`, `ema_decoder` = the
                      whole ShiftUNet) + `config.yml` (`encoder_config`, `decoder_config`,
                      `diffusion_config`, `trained_ddpm_config`)                         -> method "pdae"
  diffae-autoencoder  Diff-AE autoencoder `last.ckpt` (`ema_model.*`, `conds_mean/std`) -> method "diffae"
  diffae-latent       Diff-AE latent DPM `last.ckpt` (`ema_model.latent_net.*`, `conds_mean/std`)
                                                                                         -> method "latent"
  pdae-latent         official PDAE latent DPM folder `trained-models/latent_denoise_fn/<name>/`:
                      `config.yml` (`latent_denoise_fn_config`) + `checkpoint.pt`
                      (`ema_latent_denoise_fn`, same keys as Diff-AE's `latent_net`), plus the latent
                      statistics `trained-models/latents/<name>.pt` (`{"mean", "std"}`) -> method "latent"
Every import checks keys and shapes against the architecture it declares (on the meta device, so
full-size models cost no memory), stores the source tensors unchanged, and records the source files
and their SHA-256 in metadata.json. Pickles are read with `safe_torch_load` (no code is executed).

Architectures: PDAE folders carry their own config; Diff-AE checkpoints are described either by a
named preset (the official templates' TrainConfig values) or by `auto` (the checkpoint's own
`hyper_parameters`); `config` overrides any constructor argument per component (small test models).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from pdae.checkpoint import (
    CheckpointError,
    build_component,
    check_state_dict,
    make_config,
    safe_torch_load,
    save_model_folder,
    sha256_file,
    state_dict_with_prefix,
)

__all__ = [
    "DIFFAE_PRESETS",
    "IMPORT_KINDS",
    "check_source_kind",
    "convert_diffae_autoencoder",
    "convert_diffae_ddim",
    "convert_diffae_latent",
    "convert_pdae_autoencoder",
    "convert_pdae_dpm",
    "convert_pdae_latent",
    "diffae_autoencoder_kwargs",
    "diffae_latent_kwargs",
    "diffae_unet_kwargs",
    "import_diffae_autoencoder",
    "import_diffae_ddim",
    "import_diffae_latent",
    "import_pdae_autoencoder",
    "import_pdae_dpm",
    "import_pdae_latent",
    "infer_encoder_kwargs",
    "pdae_latent_kwargs",
    "register_cli",
]

Converted = tuple[dict[str, Tensor], dict[str, Any]]  # (tensors, config.json) of a model folder

# ---------------------------------------------------------------------------------------------------
# Diff-AE presets: the official templates' TrainConfig values (phizaz/diffae templates.py,
# templates_latent.py; docs/protocol.md §2.1, §2.3, §2.4). Keys use Diff-AE's names so that a preset and a
# checkpoint's own `hyper_parameters` go through the same converters.

_DIFFAE_LATENT_10 = {
    "net_latent_layers": 10,
    "net_latent_skip_layers": list(range(1, 10)),
    "net_latent_num_hid_channels": 2048,
    "net_latent_time_emb_channels": 64,
    "net_latent_use_norm": True,
    "net_latent_dropout": 0.0,
    "net_latent_condition_bias": 1.0,
    "net_latent_num_time_layers": 2,
    "net_latent_time_last_act": False,
    "latent_beta_scheduler": "const0.008",
}
_DIFFAE_LATENT_20 = {**_DIFFAE_LATENT_10, "net_latent_layers": 20, "net_latent_skip_layers": list(range(1, 20))}
_DIFFAE_COMMON = {
    "net_num_res_blocks": 2,
    "net_num_input_res_blocks": None,
    "net_attn": [16],
    "net_enc_attn": None,
    "net_enc_num_res_blocks": 2,
    "net_beatgans_attn_head": 1,
    "net_beatgans_embed_channels": 512,
    "net_beatgans_resnet_cond_channels": None,
    "net_resblock_updown": True,
    "dropout": 0.1,
    "style_ch": 512,
    "T": 1000,
    "beta_scheduler": "linear",
}
_DIFFAE_128 = {
    **_DIFFAE_COMMON,
    "img_size": 128,
    "net_ch": 128,
    "net_ch_mult": [1, 1, 2, 3, 4],
    "net_enc_channel_mult": [1, 1, 2, 3, 4, 4],
}
DIFFAE_PRESETS: dict[str, dict[str, Any]] = {
    # ffhq128_ddpm_130M / ffhq128_autoenc_130M / ffhq128_autoenc_latent
    "ffhq128": {**_DIFFAE_128, **_DIFFAE_LATENT_10},
    # horse128_ddpm / horse128_autoenc / horse128_autoenc_latent (20-layer latent MLP)
    "horse128": {**_DIFFAE_128, **_DIFFAE_LATENT_20},
    "bedroom128": {**_DIFFAE_128, **_DIFFAE_LATENT_20},
    # celeba64d2c_autoenc (= ffhq64_autoenc) and its latent DPM; its 64-channel U-Net has a 512-wide time
    # embedding, so a DDIM with it cannot be expressed by our (PDAE's) UNet (docs/protocol.md §2.1).
    "celeba64": {
        **_DIFFAE_COMMON,
        **_DIFFAE_LATENT_10,
        "img_size": 64,
        "net_ch": 64,
        "net_ch_mult": [1, 2, 4, 8],
        "net_enc_channel_mult": [1, 2, 4, 8, 8],
    },
}
AUTO_PRESET = "auto"  # read the architecture from the checkpoint's `hyper_parameters`
DEFAULT_PRESET = "ffhq128"

# PDAE's official representation-learning recipe (paper Eq. 10): gamma 0.1, SNR weighting.
PDAE_METHOD_KWARGS = {"gamma": 0.1, "weighting": "snr"}
# Diff-AE's latent DPM neither clamps z_T nor the predicted z_0 (docs/protocol.md §1.8, §7.4).
DIFFAE_LATENT_METHOD_KWARGS = {"clip_latent": False}
# PDAE's latent sampler clamps z_T and, through the image `ddim_sample` its latent loop calls, the predicted
# normalised z_0 to [-1, 1] (official PDAE code, diffusion/gaussian_diffusion.py `latent_diffusion_sample`,
# diffusion/ddim.py `latent_ddim_sample_loop`); its schedule is hard-coded there (`latent_diffusion_config`):
# constant beta 0.008, T = 1000 (docs/protocol.md §1.8).
PDAE_LATENT_METHOD_KWARGS = {"clip_latent": True}
PDAE_LATENT_SCHEDULE = {"kind": "const", "T": 1000, "beta": 0.008}

# Official PDAE encoder class names -> image size (docs/protocol.md §2.2); used to cross-check inference.
PDAE_ENCODER_IMAGE_SIZE = {
    "FFHQEncoder": 128,
    "CELEBAHQEncoder": 128,
    "HORSEEncoder": 128,
    "BEDROOMEncoder": 128,
    "CELEBA64Encoder": 64,
}
PDAE_ENCODER_NUM_HEADS = 4  # every official encoder's AttentionBlock (docs/protocol.md §2.2)


# ---------------------------------------------------------------------------------------------------
# Small helpers.


def _schedule_dict(kind: str, T: int, **params: float) -> dict[str, Any]:
    from pdae.diffusion.schedule import Schedule

    return Schedule.from_name(kind, T, **params).to_dict()


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not valid YAML ({first})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a YAML mapping, got {type(data).__name__}")
    return data


def _mapping(obj: Any, key: str, where: str) -> dict[str, Any]:
    if not isinstance(obj, Mapping) or key not in obj:
        have = ", ".join(sorted(map(str, obj))[:8]) if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{where}: no {key!r} entry (found: {have})")
    value = obj[key]
    if not isinstance(value, Mapping):
        raise CheckpointError(f"{where}: {key!r} is a {type(value).__name__}, expected a mapping")
    return dict(value)


def _state_dict(obj: Any, key: str, where: str) -> dict[str, Tensor]:
    """obj[key] as a state dict of tensors; a DDP `module.` prefix on every key is removed."""
    sd = _mapping(obj, key, where)
    bad = [k for k, v in sd.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{where}: {key}[{bad[0]!r}] is not a tensor")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _on_meta(build: Callable[[], nn.Module], where: str) -> nn.Module:
    """Build a module on the meta device (no memory, no init cost); ValueErrors become CheckpointErrors."""
    try:
        with torch.device("meta"):
            return build()
    except CheckpointError:
        raise
    except (TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{where}: {first}") from None


def _meta_component(spec: Mapping[str, Any], where: str, **extra: Any) -> nn.Module:
    return _on_meta(lambda: build_component(spec, where, **extra), where)


def _overrides(config: Mapping[str, Any] | None, allowed: tuple[str, ...], where: str) -> dict[str, dict[str, Any]]:
    """Validate `config` = {component: {kwarg: value}}; only the importer's components are allowed."""
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise CheckpointError(f"{where}: expected a JSON object {{component: {{argument: value}}}}")
    out = {}
    for name, kwargs in config.items():
        if name not in allowed:
            raise CheckpointError(f"{where}: unknown component {name!r} (this import has: {', '.join(allowed)})")
        if not isinstance(kwargs, Mapping):
            raise CheckpointError(f"{where}: {name} must map constructor arguments to values")
        out[name] = dict(kwargs)
    return out


def _metadata(importer: str, files: list[Path], **extra: Any) -> dict[str, Any]:
    from pdae.provenance import code_version, utc_now

    main = files[0]
    return {
        "source": {
            "importer": importer,
            "path": str(main.resolve()),
            "sha256": sha256_file(main),
            "files": {str(f.resolve()): sha256_file(f) for f in files},
        },
        "code_version": code_version(),
        "created": utc_now(),
        **{k: v for k, v in extra.items() if v is not None},
    }


def _save(out_dir: str | Path, converted: Converted, metadata: dict[str, Any], force: bool,
          staging: Path | None = None) -> Path:
    """Write the converted folder; an existing one is replaced (atomic swap) only with `force` and only if it
    is one of our model folders (`pdae.fsutil.check_replaceable`)."""
    from pdae.fsutil import OutputError, check_replaceable

    out_dir = Path(out_dir)
    try:
        check_replaceable(out_dir, force=force)
    except OutputError as exc:
        raise CheckpointError(str(exc)) from None
    tensors, config = converted
    return save_model_folder(out_dir, tensors, config, metadata, staging=staging)


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# ---------------------------------------------------------------------------------------------------
# Official PDAE configs.


def _official_schedule(diffusion_config: Any, where: str) -> dict[str, Any]:
    """PDAE `diffusion_config` ({timesteps, betas_type} [+ linear_beta_start/end at c2088f8]) -> ours.
    Absent: the linear T = 1000 schedule every shipped config uses (docs/protocol.md §1.1)."""
    if diffusion_config is None:
        return _schedule_dict("linear", 1000)
    if not isinstance(diffusion_config, Mapping):
        raise CheckpointError(f"{where}: diffusion_config must be a mapping")
    kind = diffusion_config.get("betas_type", "linear")
    T = diffusion_config.get("timesteps", 1000)
    params = {}
    if kind == "linear":
        for theirs, ours in (("linear_beta_start", "start"), ("linear_beta_end", "end")):
            if theirs in diffusion_config:
                params[ours] = float(diffusion_config[theirs])
    elif kind != "cosine":
        raise CheckpointError(f"{where}: diffusion_config.betas_type {kind!r} unsupported (linear or cosine)")
    try:
        return _schedule_dict(kind, int(T), **params)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: diffusion_config: {exc}") from None


def _official_unet(denoise_fn_config: Any, where: str) -> nn.Module:
    from pdae.nets.unet import UNet

    if not isinstance(denoise_fn_config, Mapping):
        raise CheckpointError(f"{where}: denoise_fn_config must be a mapping")
    return _on_meta(lambda: UNet.from_official_config(denoise_fn_config), f"{where}: denoise_fn_config")


def infer_encoder_kwargs(sd: Mapping[str, Tensor], where: str) -> dict[str, Any]:
    """SemanticEncoder kwargs read off an official PDAE encoder state dict (docs/protocol.md §2.2).

    The stride-2 convs are the 4-D `encoder.{i}.weight` entries (channels, in_channels); an
    `encoder.{i}.qkv.weight` marks an AttentionBlock after the preceding conv; the last 2-D weight is
    the Linear (latent_dim). image_size = 4 * 2^(number of convs). num_heads is not in the weights:
    the official value (4) is used.
    """
    layers: dict[int, dict[str, Tensor]] = {}
    for key, value in sd.items():
        parts = key.split(".")
        if len(parts) < 3 or parts[0] != "encoder" or not parts[1].isdigit():
            raise CheckpointError(f"{where}: unexpected key {key!r} for a PDAE encoder (expected 'encoder.<i>.*')")
        layers.setdefault(int(parts[1]), {})[".".join(parts[2:])] = value
    channels: list[int] = []
    attention: list[int] = []
    in_channels = latent_dim = None
    for index in sorted(layers):
        params = layers[index]
        weight = params.get("weight")
        if weight is not None and weight.ndim == 4:
            if in_channels is None:
                in_channels = int(weight.shape[1])
            channels.append(int(weight.shape[0]))
        elif "qkv.weight" in params:
            attention.append(len(channels))
        elif weight is not None and weight.ndim == 2:
            latent_dim = int(weight.shape[0])
    if not channels or in_channels is None or latent_dim is None:
        raise CheckpointError(f"{where}: not a PDAE encoder state dict (needs stride-2 convs and a final Linear)")
    image_size = 4 * 2 ** len(channels)
    return {
        "image_size": image_size,
        "in_channels": in_channels,
        "latent_dim": latent_dim,
        "channels": channels,
        "attention_resolutions": [image_size >> n for n in attention],
        "num_heads": PDAE_ENCODER_NUM_HEADS,
    }


def _find_near(src_dir: Path, ref: str) -> Path | None:
    """The file an official config names by a path relative to the repository it ran in (`trained_ddpm_config`,
    `inferred_latents`): as given when absolute, else looked up next to `src_dir` and in each folder above it."""
    rel = Path(ref)
    candidates = [rel] if rel.is_absolute() else [base / rel for base in (src_dir, *src_dir.resolve().parents)]
    return next((path for path in candidates if path.is_file()), None)


def _find_dpm_config(src_dir: Path, ae_config: Mapping[str, Any], dpm_config: str | Path | None) -> tuple[dict[str, Any], Path | None]:
    """The pre-trained DPM's `denoise_fn_config` for a PDAE autoencoder, and the file it came from.

    Order: `dpm_config` (a config.yml or the DPM folder); `denoise_fn_config` inside the autoencoder's
    config.yml; its `trained_ddpm_config` path, relative to the autoencoder folder or any parent (the
    official repository runs from its root: trained-models/autoencoder/<name>/ -> ../../..).
    """
    where = src_dir / "config.yml"
    if dpm_config is not None:
        path = Path(dpm_config)
        path = path / "config.yml" if path.is_dir() else path
        return _mapping(_read_yaml(path), "denoise_fn_config", str(path)), path
    if "denoise_fn_config" in ae_config:
        return _mapping(ae_config, "denoise_fn_config", str(where)), None
    ref = ae_config.get("trained_ddpm_config")
    if isinstance(ref, str):
        path = _find_near(src_dir, ref)
        if path is not None:
            return _mapping(_read_yaml(path), "denoise_fn_config", str(path)), path
        raise CheckpointError(
            f"{where}: trained_ddpm_config {ref!r} not found next to or above {src_dir}; pass --dpm-config PATH"
        )
    raise CheckpointError(f"{where}: no denoise_fn_config or trained_ddpm_config; pass --dpm-config PATH")


# Official `latent_denoise_fn_config` keys = MLPSkipNet's constructor arguments (official PDAE code,
# model/mlp_skip_net.py; config/*_latent.yml), in order.
PDAE_LATENT_CONFIG_KEYS = ("input_channel", "model_channel", "num_layers", "time_emb_channel", "use_norm", "dropout")


def pdae_latent_kwargs(latent_config: Any, where: str = "config.yml") -> dict[str, Any]:
    """LatentMLP kwargs of an official PDAE `latent_denoise_fn_config` (docs/protocol.md §2.4).

    MLPSkipNet(input_channel, model_channel, num_layers, time_emb_channel, use_norm, dropout) has skips
    at every layer >= 1, condition bias 1 and a time MLP as wide as its input, so `time_out` = `latent_dim`
    = input_channel; `model` (e.g. FFHQLatentDenoiseFn) is an alias of MLPSkipNet in every official config.
    """
    if not isinstance(latent_config, Mapping):
        raise CheckpointError(f"{where}: latent_denoise_fn_config must be a mapping")
    missing = [k for k in PDAE_LATENT_CONFIG_KEYS if k not in latent_config]
    if missing:
        raise CheckpointError(f"{where}: latent_denoise_fn_config.{missing[0]} missing")
    ints = {}
    for key in ("input_channel", "model_channel", "num_layers", "time_emb_channel"):
        value = latent_config[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise CheckpointError(f"{where}: latent_denoise_fn_config.{key} must be an integer, got {value!r}")
        ints[key] = value
    use_norm, dropout = latent_config["use_norm"], latent_config["dropout"]
    if not isinstance(use_norm, bool):
        raise CheckpointError(f"{where}: latent_denoise_fn_config.use_norm must be true or false, got {use_norm!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
        raise CheckpointError(f"{where}: latent_denoise_fn_config.dropout must be a number, got {dropout!r}")
    return {
        "latent_dim": ints["input_channel"],
        "hidden": ints["model_channel"],
        "num_layers": ints["num_layers"],
        "time_dim": ints["time_emb_channel"],
        "time_out": ints["input_channel"],
        "dropout": float(dropout),
        "use_norm": use_norm,
    }


def _find_latent_stats(src_dir: Path, latent_config: Mapping[str, Any], latents: str | Path | None) -> Path:
    """The latent statistics file of a PDAE latent DPM: `latents`, else the config's `inferred_latents`
    relative to the folder or any parent (the official code runs from the repository root:
    trained-models/latent_denoise_fn/<name>/ -> ../../..)."""
    where = src_dir / "config.yml"
    if latents is not None:
        path = Path(latents)
        if path.is_dir():
            raise CheckpointError(
                f"{path}: is a folder; --latents expects the latent statistics file {{'mean', 'std'}} "
                "(official trained-models/latents/<name>.pt)"
            )
        if not path.is_file():
            raise CheckpointError(f"{path}: file not found")
        return path
    ref = latent_config.get("inferred_latents")
    if isinstance(ref, str):
        path = _find_near(src_dir, ref)
        if path is not None:
            return path
        raise CheckpointError(f"{where}: inferred_latents {ref!r} not found next to or above {src_dir}; pass --latents PATH")
    raise CheckpointError(f"{where}: no inferred_latents (the latent statistics file); pass --latents PATH")


def _pdae_latent_stats(obj: Any, where: str, dim: int) -> dict[str, Tensor]:
    """Official `{"mean": [D], "std": [D]}` (official PDAE code, sampler/infer_latents.py) -> our `stats.*`."""
    if not isinstance(obj, Mapping) or "mean" not in obj or "std" not in obj:
        have = ", ".join(sorted(map(str, obj))[:8]) if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{where}: expected the latent statistics {{'mean', 'std'}} (found: {have})")
    out = {}
    for key in ("mean", "std"):
        value = obj[key]
        if not isinstance(value, Tensor) or not value.is_floating_point():
            raise CheckpointError(f"{where}: {key} is not a floating-point tensor")
        if value.numel() != dim:
            raise CheckpointError(
                f"{where}: {key} has {value.numel()} entries, latent_denoise_fn_config.input_channel is {dim}"
            )
        out[key] = value.reshape(-1)
    if not bool(torch.isfinite(out["mean"]).all()) or not bool((torch.isfinite(out["std"]) & (out["std"] > 0)).all()):
        raise CheckpointError(f"{where}: mean/std must be finite and std > 0 (z is normalised as (z - mean) / std)")
    return out


# ---------------------------------------------------------------------------------------------------
# Diff-AE hyper-parameters -> our constructor arguments.


def _hp(hp: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in hp:
        raise CheckpointError(f"{where}: Diff-AE hyper-parameter {key!r} missing")
    return hp[key]


def _require(hp: Mapping[str, Any], key: str, allowed: tuple[Any, ...], where: str, what: str) -> None:
    if key in hp and hp[key] not in allowed:
        raise CheckpointError(f"{where}: Diff-AE {key}={hp[key]!r} unsupported ({what})")


def _attention_ds(img_size: int, resolutions: list[int], where: str) -> list[int]:
    bad = [r for r in resolutions if r <= 0 or img_size % r]
    if bad:
        raise CheckpointError(f"{where}: attention resolutions {bad} do not divide img_size {img_size}")
    return [img_size // r for r in resolutions]


def diffae_unet_kwargs(hp: Mapping[str, Any], where: str = "Diff-AE DDIM") -> dict[str, Any]:
    """UNet kwargs of a Diff-AE `beatgans_ddpm` model (docs/protocol.md §2.1, §3.4): attention resolutions
    become downsample factors (128 px, (16,) -> (8,)); the time embedding must be 4 * net_ch wide."""
    ch, img = int(_hp(hp, "net_ch", where)), int(_hp(hp, "img_size", where))
    embed = int(hp.get("net_beatgans_embed_channels", 512))
    if embed != 4 * ch:
        raise CheckpointError(
            f"{where}: Diff-AE time embedding {embed} != 4 * net_ch = {4 * ch}; not expressible by UNet "
            "(its time embedding is 4 * base_channels, docs/protocol.md §2.1)"
        )
    n_res = int(_hp(hp, "net_num_res_blocks", where))
    _require(hp, "net_num_input_res_blocks", (None, n_res), where, "encoder and decoder need equal res blocks")
    _require(hp, "net_resblock_updown", (True,), where, "resampling must use ResBlocks")
    return {
        "in_channels": 3,
        "base_channels": ch,
        "channel_mult": [int(m) for m in _hp(hp, "net_ch_mult", where)],
        "num_res_blocks": n_res,
        "attention_ds": _attention_ds(img, [int(r) for r in _hp(hp, "net_attn", where)], where),
        "num_heads": int(hp.get("net_beatgans_attn_head", 1)),
        "head_channels": -1,
        "new_attention_order": False,
        "dropout": float(hp.get("dropout", 0.1)),
        "learn_sigma": False,
        "num_classes": None,
    }


def diffae_autoencoder_kwargs(hp: Mapping[str, Any], where: str = "Diff-AE autoencoder") -> dict[str, Any]:
    """DiffAEUNet kwargs of a Diff-AE `beatgans_autoenc` model (docs/protocol.md §2.2, §2.3)."""
    n_res = int(_hp(hp, "net_num_res_blocks", where))
    style = int(_hp(hp, "style_ch", where))
    _require(hp, "net_num_input_res_blocks", (None, n_res), where, "encoder and decoder need equal res blocks")
    _require(hp, "net_resblock_updown", (True,), where, "resampling must use ResBlocks")
    _require(hp, "net_beatgans_resnet_cond_channels", (None, style), where, "z must enter every block at style_ch")
    _require(hp, "net_beatgans_resnet_two_cond", (True,), where, "every ResBlock must be z-conditioned")
    _require(hp, "net_enc_pool", ("adaptivenonzero",), where, "encoder pooling")
    _require(hp, "net_enc_use_time", (False,), where, "time-conditioned encoder")
    _require(hp, "net_autoenc_stochastic", (False,), where, "stochastic encoder")
    attn = [int(r) for r in _hp(hp, "net_attn", where)]
    enc_attn = hp.get("net_enc_attn")
    return {
        "image_size": int(_hp(hp, "img_size", where)),
        "in_channels": 3,
        "base_channels": int(_hp(hp, "net_ch", where)),
        "channel_mult": [int(m) for m in _hp(hp, "net_ch_mult", where)],
        "num_res_blocks": n_res,
        "attention_resolutions": attn,
        "num_heads": int(hp.get("net_beatgans_attn_head", 1)),
        "dropout": float(hp.get("dropout", 0.1)),
        "latent_dim": style,
        "enc_channel_mult": [int(m) for m in _hp(hp, "net_enc_channel_mult", where)],
        "enc_attention_resolutions": [int(r) for r in enc_attn] if enc_attn else attn,
        "embed_channels": int(hp.get("net_beatgans_embed_channels", 512)),
        "head_channels": -1,
        "new_attention_order": False,
        "enc_num_res_blocks": int(hp.get("net_enc_num_res_blocks", 2)),
    }


def diffae_latent_kwargs(hp: Mapping[str, Any], where: str = "Diff-AE latent DPM") -> dict[str, Any]:
    """LatentMLP kwargs of a Diff-AE `MLPSkipNet` (docs/protocol.md §2.4): skip at every layer >= 1,
    condition bias 1, two time layers, time width = style_ch."""
    layers = int(_hp(hp, "net_latent_layers", where))
    style = int(_hp(hp, "style_ch", where))
    skips = hp.get("net_latent_skip_layers")
    if skips is not None and [int(s) for s in skips] != list(range(1, layers)):
        raise CheckpointError(f"{where}: net_latent_skip_layers {list(skips)} unsupported (expected 1..{layers - 1})")
    _require(hp, "net_latent_condition_bias", (1, 1.0), where, "time scale is 1 + Linear(t)")
    _require(hp, "net_latent_num_time_layers", (2,), where, "two time-embedding layers")
    _require(hp, "net_latent_time_last_act", (False,), where, "no activation after the time MLP")
    return {
        "latent_dim": style,
        "hidden": int(_hp(hp, "net_latent_num_hid_channels", where)),
        "num_layers": layers,
        "time_dim": int(_hp(hp, "net_latent_time_emb_channels", where)),
        "time_out": style,
        "dropout": float(hp.get("net_latent_dropout", 0.0)),
        "use_norm": bool(_hp(hp, "net_latent_use_norm", where)),
    }


def _diffae_schedule(hp: Mapping[str, Any], key: str, default: str, where: str) -> dict[str, Any]:
    """Diff-AE `beta_scheduler` / `latent_beta_scheduler` ('linear', 'const0.008', ...) -> ours."""
    name = str(hp.get(key, default))
    T = int(hp.get("T", 1000))
    if name == "linear":
        return _schedule_dict("linear", T)
    if name.startswith("const"):
        try:
            beta = float(name[len("const"):])
        except ValueError:
            raise CheckpointError(f"{where}: {key}={name!r} unsupported") from None
        return _schedule_dict("const", T, beta=beta)
    raise CheckpointError(f"{where}: {key}={name!r} unsupported (linear or const<beta>)")


def _diffae_kwargs(
    ckpt: Mapping[str, Any],
    preset: str,
    convert: Callable[[Mapping[str, Any], str], dict[str, Any]],
    override: Mapping[str, Any],
    where: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(constructor kwargs, hyper-parameters used) for a Diff-AE checkpoint.

    `auto` reads the checkpoint's `hyper_parameters` (`_diffae_hparams`); a named preset is cross-checked
    against them when present (a disagreement not covered by `override` is an error).
    """
    stored = _diffae_hparams(ckpt, where)
    convert = _one_line_hp_errors(convert)
    if preset == AUTO_PRESET:
        if stored is None:
            raise CheckpointError(f"{where}: no hyper_parameters to read the architecture from; pass --preset NAME")
        hp = stored
    elif preset in DIFFAE_PRESETS:
        hp = DIFFAE_PRESETS[preset]
    else:
        raise CheckpointError(f"unknown preset {preset!r} (expected {AUTO_PRESET} or one of {', '.join(DIFFAE_PRESETS)})")
    kwargs = convert(hp, f"{where} (preset {preset})")
    if preset != AUTO_PRESET and stored is not None:
        try:
            theirs = convert(stored, where)
        except CheckpointError:
            theirs = None  # incomplete hyper-parameters: the shape check below still applies
        if theirs is not None:
            diffs = [k for k in kwargs if k not in override and kwargs[k] != theirs.get(k)]
            if diffs:
                k = diffs[0]
                raise CheckpointError(
                    f"{where}: preset {preset!r} disagrees with the checkpoint's hyper_parameters "
                    f"({k}: {kwargs[k]!r} vs {theirs.get(k)!r}); use --preset {AUTO_PRESET}"
                )
    return {**kwargs, **override}, hp


def _diffae_hparams(ckpt: Mapping[str, Any], where: str) -> dict[str, Any] | None:
    """The checkpoint's `hyper_parameters` as plain data (None when absent or not a mapping).

    Diff-AE saves `conf.as_dict_jsonable()`, plain values only (official Diff-AE code, experiment.py
    `LitModel.__init__`); other Lightning checkpoints pickle config objects and enums, which load as inert
    stand-ins (pdae.safe_pickle) and are read through `plain`: a dataclass -> the dict of its fields, an enum
    member -> its value. A `save_hyperparameters()` inside `LitModel(conf)` stores {"conf": TrainConfig}:
    its `conf` is read.
    """
    from pdae.safe_pickle import plain

    raw = ckpt.get("hyper_parameters")
    if raw is None:
        return None
    try:
        hp = plain(raw)
    except ValueError as exc:
        raise CheckpointError(f"{where}: hyper_parameters: {exc}") from None
    if not isinstance(hp, Mapping):
        return None
    if "net_ch" not in hp and isinstance(hp.get("conf"), Mapping):
        hp = hp["conf"]
    return dict(hp)


def _one_line_hp_errors(
    convert: Callable[[Mapping[str, Any], str], dict[str, Any]],
) -> Callable[[Mapping[str, Any], str], dict[str, Any]]:
    """`convert` with a hyper-parameter of the wrong type (int({...}), int('x')) as a one-line CheckpointError."""

    def checked(hp: Mapping[str, Any], where: str) -> dict[str, Any]:
        try:
            return convert(hp, where)
        except CheckpointError:
            raise
        except (TypeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"{where}: a Diff-AE hyper-parameter has an unusable value ({first})") from None

    return checked


def _diffae_ema(ckpt: Any, where: str) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(Lightning `state_dict`, its `ema_model.*` entries with the prefix stripped)."""
    sd = _mapping(ckpt, "state_dict", where)
    ema = {k[len("ema_model."):]: v for k, v in sd.items() if k.startswith("ema_model.")}
    if not ema:
        raise CheckpointError(f"{where}: no 'ema_model.*' entries in state_dict (not a Diff-AE checkpoint?)")
    bad = [k for k, v in ema.items() if not isinstance(v, Tensor)]
    if bad:
        from pdae.safe_pickle import describe

        raise CheckpointError(f"{where}: state_dict['ema_model.{bad[0]}'] is not a tensor ({describe(ema[bad[0]])})")
    return sd, ema


def _diffae_stats(sd: Mapping[str, Any], where: str, required: bool) -> dict[str, Tensor]:
    """`conds_mean`/`conds_std` ([1, D] buffers) -> {"mean": [D], "std": [D]} (our `stats.*`)."""
    if "conds_mean" not in sd or "conds_std" not in sd:
        if required:
            raise CheckpointError(f"{where}: no conds_mean/conds_std (latent statistics) in state_dict")
        return {}
    mean, std = sd["conds_mean"], sd["conds_std"]
    if not isinstance(mean, Tensor) or not isinstance(std, Tensor) or mean.numel() != std.numel():
        raise CheckpointError(f"{where}: conds_mean/conds_std must be tensors of equal size")
    return {"mean": mean.reshape(-1), "std": std.reshape(-1)}


# ---------------------------------------------------------------------------------------------------
# Conversions (in memory; checkpoint object -> tensors + config.json). Shapes are checked on meta modules.


def convert_pdae_dpm(
    ckpt: Any, official_config: Mapping[str, Any], where: str = "checkpoint.pt", config_where: str = "config.yml"
) -> Converted:
    """Official PDAE pre-trained DPM (docs/protocol.md §3.1): `ckpt["ema_denoise_fn"]` fitted to
    `UNet.from_official_config(official_config["denoise_fn_config"])` -> method "dpm", component `unet`."""
    if "denoise_fn_config" not in official_config:
        raise CheckpointError(f"{config_where}: no denoise_fn_config")
    unet = _official_unet(official_config["denoise_fn_config"], config_where)
    sd = _state_dict(ckpt, "ema_denoise_fn", where)
    check_state_dict(unet, sd, f"{where}: ema_denoise_fn")
    diffusion = _official_schedule(official_config.get("diffusion_config"), config_where)
    config = make_config("dpm", {"unet": {"class": "UNet", "kwargs": unet.config}}, diffusion)
    return state_dict_with_prefix("unet", sd), config


def convert_pdae_autoencoder(
    ckpt: Any,
    ae_config: Mapping[str, Any],
    denoise_fn_config: Mapping[str, Any],
    override: Mapping[str, Any] | None = None,
    where: str = "checkpoint.pt",
    config_where: str = "config.yml",
    dpm_where: str = "the pre-trained DPM's config.yml",
) -> Converted:
    """Official PDAE autoencoder (docs/protocol.md §3.3): `ema_decoder` (whole ShiftUNet) is split by key
    prefix into the frozen prior (`prior`, UNet) and the new parts (`estimator`, GradientEstimator);
    `ema_encoder` -> `encoder` (SemanticEncoder, architecture read off the weights)."""
    from pdae.nets.gradient_estimator import NEW_PART_PREFIXES

    overrides = _overrides(override, ("encoder", "estimator"), "config override")
    decoder = _state_dict(ckpt, "ema_decoder", where)
    encoder_sd = _state_dict(ckpt, "ema_encoder", where)
    prior_sd = {k: v for k, v in decoder.items() if not k.startswith(NEW_PART_PREFIXES)}
    new_sd = {k: v for k, v in decoder.items() if k.startswith(NEW_PART_PREFIXES)}

    # 1. Prior: the pre-trained DPM part of the ShiftUNet.
    prior = _official_unet(denoise_fn_config, dpm_where)
    check_state_dict(prior, prior_sd, f"{where}: ema_decoder (pre-trained DPM part)")

    # 2. Gradient estimator: the new parts, dropout as the pre-trained config (as ShiftUNet).
    decoder_config = ae_config.get("decoder_config") or {}
    if "latent_dim" not in decoder_config and "latent_dim" not in overrides.get("estimator", {}):
        raise CheckpointError(f"{config_where}: decoder_config.latent_dim missing")
    est_kwargs = {
        "latent_dim": int(decoder_config.get("latent_dim", 0)),
        "num_classes": None,
        "dropout": float(prior.config["dropout"]),
        **overrides.get("estimator", {}),
    }
    est_spec = {"class": "GradientEstimator", "kwargs": est_kwargs}
    estimator = _meta_component(est_spec, "estimator", prior=prior)
    check_state_dict(estimator, new_sd, f"{where}: ema_decoder (label_emb/shift_* parts)")

    # 3. Encoder: conv stack read off the weights, cross-checked with the official config.
    enc_kwargs = {**infer_encoder_kwargs(encoder_sd, f"{where}: ema_encoder"), **overrides.get("encoder", {})}
    encoder_config = ae_config.get("encoder_config") or {}
    declared = {
        "latent_dim": encoder_config.get("latent_dim"),
        "image_size": PDAE_ENCODER_IMAGE_SIZE.get(encoder_config.get("model"))
        or (ae_config.get("train_dataset_config") or {}).get("image_size"),
    }
    for key, value in declared.items():
        if value is not None and key not in overrides.get("encoder", {}) and int(value) != enc_kwargs[key]:
            raise CheckpointError(f"{where}: ema_encoder has {key} {enc_kwargs[key]}, {config_where} says {value}")
    if est_kwargs["latent_dim"] != enc_kwargs["latent_dim"]:
        raise CheckpointError(
            f"{where}: encoder latent_dim {enc_kwargs['latent_dim']} != decoder latent_dim {est_kwargs['latent_dim']}"
        )
    enc_spec = {"class": "SemanticEncoder", "kwargs": enc_kwargs}
    check_state_dict(_meta_component(enc_spec, "encoder"), encoder_sd, f"{where}: ema_encoder")

    diffusion = _official_schedule(ae_config.get("diffusion_config"), config_where)
    config = make_config(
        "pdae",
        {
            "prior": {"class": "UNet", "kwargs": prior.config},
            "estimator": {"class": "GradientEstimator", "kwargs": estimator.config},
            "encoder": {"class": "SemanticEncoder", "kwargs": enc_kwargs},
        },
        diffusion,
        PDAE_METHOD_KWARGS,
    )
    tensors = {
        **state_dict_with_prefix("prior", prior_sd),
        **state_dict_with_prefix("estimator", new_sd),
        **state_dict_with_prefix("encoder", encoder_sd),
    }
    return tensors, config


def convert_pdae_latent(
    ckpt: Any,
    official_config: Mapping[str, Any],
    stats: Any,
    where: str = "checkpoint.pt",
    config_where: str = "config.yml",
    stats_where: str = "latents.pt",
) -> Converted:
    """Official PDAE latent DPM (docs/protocol.md §1.8, §2.4, §3.3): `ckpt["ema_latent_denoise_fn"]` (an
    MLPSkipNet state dict, the key names of our LatentMLP) fitted to `latent_denoise_fn_config` -> method
    "latent", component `net`, plus `stats.mean`/`stats.std` from the statistics file. `encoder`,
    `decoder`, the raw `latent_denoise_fn`, `optimizer` and `scaler` are ignored. Schedule: constant
    beta 0.008, T = 1000 (hard-coded in the official code); `clip_latent` as the official sampler."""
    if "latent_denoise_fn_config" not in official_config:
        raise CheckpointError(f"{config_where}: no latent_denoise_fn_config (not an official PDAE latent DPM folder?)")
    kwargs = pdae_latent_kwargs(official_config["latent_denoise_fn_config"], config_where)
    spec = {"class": "LatentMLP", "kwargs": kwargs}
    net = _meta_component(spec, f"{config_where}: latent_denoise_fn_config")
    sd = _state_dict(ckpt, "ema_latent_denoise_fn", where)
    check_state_dict(net, sd, f"{where}: ema_latent_denoise_fn")
    stats_sd = _pdae_latent_stats(stats, stats_where, kwargs["latent_dim"])
    config = make_config(
        "latent",
        {"net": spec, "stats": {"class": "LatentStats", "kwargs": {"dim": kwargs["latent_dim"]}}},
        _schedule_dict(PDAE_LATENT_SCHEDULE["kind"], PDAE_LATENT_SCHEDULE["T"], beta=PDAE_LATENT_SCHEDULE["beta"]),
        PDAE_LATENT_METHOD_KWARGS,
    )
    return {**state_dict_with_prefix("net", sd), **state_dict_with_prefix("stats", stats_sd)}, config


def convert_diffae_ddim(
    ckpt: Any, preset: str = DEFAULT_PRESET, override: Mapping[str, Any] | None = None, where: str = "last.ckpt"
) -> Converted:
    """Diff-AE DDIM baseline (docs/protocol.md §3.4): `ema_model.*` with the prefix stripped is a PDAE
    UNet state dict; `x_T` and the raw `model.*` are ignored -> method "dpm", component `unet`."""
    overrides = _overrides(override, ("unet",), "config override")
    _, ema = _diffae_ema(ckpt, where)
    kwargs, hp = _diffae_kwargs(ckpt, preset, diffae_unet_kwargs, overrides.get("unet", {}), where)
    spec = {"class": "UNet", "kwargs": kwargs}
    check_state_dict(_meta_component(spec, "unet"), ema, f"{where}: ema_model")
    config = make_config("dpm", {"unet": spec}, _diffae_schedule(hp, "beta_scheduler", "linear", where))
    return state_dict_with_prefix("unet", ema), config


def convert_diffae_autoencoder(
    ckpt: Any, preset: str = DEFAULT_PRESET, override: Mapping[str, Any] | None = None, where: str = "last.ckpt"
) -> Converted:
    """Diff-AE autoencoder (docs/protocol.md §3.4): `ema_model.*` (without `latent_net.*`) renamed by
    `diffae_state_dict_to_ours` -> method "diffae", component `model` (DiffAEUNet); `conds_mean`/
    `conds_std`, when present, -> `stats.mean`/`stats.std` ([D])."""
    from pdae.nets.cond_unet import diffae_state_dict_to_ours

    overrides = _overrides(override, ("model",), "config override")
    sd, ema = _diffae_ema(ckpt, where)
    try:
        ours = diffae_state_dict_to_ours(ema)
    except ValueError as exc:
        raise CheckpointError(f"{where}: ema_model: {exc}") from None
    kwargs, hp = _diffae_kwargs(ckpt, preset, diffae_autoencoder_kwargs, overrides.get("model", {}), where)
    spec = {"class": "DiffAEUNet", "kwargs": kwargs}
    check_state_dict(_meta_component(spec, "model"), ours, f"{where}: ema_model")
    config = make_config("diffae", {"model": spec}, _diffae_schedule(hp, "beta_scheduler", "linear", where))
    stats = _diffae_stats(sd, where, required=False)
    return {**state_dict_with_prefix("model", ours), **state_dict_with_prefix("stats", stats)}, config


def convert_diffae_latent(
    ckpt: Any, preset: str = DEFAULT_PRESET, override: Mapping[str, Any] | None = None, where: str = "last.ckpt"
) -> Converted:
    """Diff-AE latent DPM (docs/protocol.md §2.4, §3.4): `ema_model.latent_net.*` -> method "latent",
    component `net` (LatentMLP), plus `stats.mean`/`stats.std` from `conds_mean`/`conds_std`
    (required: the latent DPM works on normalised z). Schedule: `latent_beta_scheduler` (const 0.008)."""
    from pdae.nets.latent_mlp import DIFFAE_LATENT_PREFIX

    overrides = _overrides(override, ("net",), "config override")
    sd, ema = _diffae_ema(ckpt, where)
    net_sd = {k[len(DIFFAE_LATENT_PREFIX):]: v for k, v in ema.items() if k.startswith(DIFFAE_LATENT_PREFIX)}
    if not net_sd:
        raise CheckpointError(f"{where}: no 'ema_model.{DIFFAE_LATENT_PREFIX}*' entries (not a Diff-AE latent DPM checkpoint?)")
    kwargs, hp = _diffae_kwargs(ckpt, preset, diffae_latent_kwargs, overrides.get("net", {}), where)
    spec = {"class": "LatentMLP", "kwargs": kwargs}
    check_state_dict(_meta_component(spec, "net"), net_sd, f"{where}: ema_model.latent_net")
    stats = _diffae_stats(sd, where, required=True)
    if stats["mean"].numel() != kwargs["latent_dim"]:
        raise CheckpointError(f"{where}: conds_mean has {stats['mean'].numel()} entries, latent_dim is {kwargs['latent_dim']}")
    config = make_config(
        "latent",
        {"net": spec, "stats": {"class": "LatentStats", "kwargs": {"dim": kwargs["latent_dim"]}}},
        _diffae_schedule(hp, "latent_beta_scheduler", "const0.008", where),
        DIFFAE_LATENT_METHOD_KWARGS,
    )
    return {**state_dict_with_prefix("net", net_sd), **state_dict_with_prefix("stats", stats)}, config


# ---------------------------------------------------------------------------------------------------
# Importers (files -> model folder).


# What each import kind reads (`check_source_kind`): a folder or a file, and a hint for the other layout.
_SOURCE_FOLDER = "the folder holding config.yml and checkpoint.pt"
_SOURCE_KINDS: dict[str, tuple[str, str, str]] = {  # kind: (folder/file, what it expects, hint for the other layout)
    "pdae-dpm": ("folder", _SOURCE_FOLDER, "for a Diff-AE DDIM last.ckpt use `pdae import diffae-ddim`"),
    "pdae-autoencoder": (
        "folder", _SOURCE_FOLDER, "for a Diff-AE autoencoder last.ckpt use `pdae import diffae-autoencoder`"
    ),
    "pdae-latent": ("folder", _SOURCE_FOLDER, "for a Diff-AE latent last.ckpt use `pdae import diffae-latent`"),
    "diffae-ddim": ("file", "the `last.ckpt` file", "for the official PDAE DPM folder use `pdae import pdae-dpm`"),
    "diffae-autoencoder": (
        "file", "the `last.ckpt` file", "for the official PDAE autoencoder folder use `pdae import pdae-autoencoder`"
    ),
    "diffae-latent": ("file", "the `last.ckpt` file", "for the official PDAE latent folder use `pdae import pdae-latent`"),
    "diffusers": (
        "folder", "the diffusers model folder (model_index.json or unet/)",
        "for a guided/improved-diffusion .pt file use `pdae import adm`",
    ),
    "adm": (
        "file", "the guided/improved-diffusion `.pt` checkpoint file", "for a diffusers folder use `pdae import diffusers`"
    ),
}


def check_source_kind(kind: str, src: str | Path) -> None:
    """One-line CheckpointError when SRC exists but is a folder where `kind` reads a file, or vice versa.
    A missing SRC passes: each importer reports it in its own words."""
    if kind not in _SOURCE_KINDS:
        return
    path = Path(src)
    want, what, other = _SOURCE_KINDS[kind]
    if want == "folder" and path.exists() and not path.is_dir():
        hint = f"give its folder {path.parent}" if path.name in ("config.yml", "checkpoint.pt") else other
        raise CheckpointError(f"{path}: is a file; {kind} expects {what} ({hint})")
    if want == "file" and path.is_dir():
        inside = path / "last.ckpt"
        hint = f"did you mean {inside}?" if kind.startswith("diffae-") and inside.is_file() else other
        raise CheckpointError(f"{path}: is a folder; {kind} expects {what} ({hint})")


def _pdae_folder(src_dir: str | Path, kind: str) -> tuple[Path, Path, Path]:
    check_source_kind(kind, src_dir)
    src = Path(src_dir)
    if not src.is_dir():
        raise CheckpointError(f"{src}: expected the official folder holding config.yml and checkpoint.pt")
    return src, src / "config.yml", src / "checkpoint.pt"


def import_pdae_dpm(src_dir: str | Path, out_dir: str | Path, *, force: bool = False) -> Path:
    """Official PDAE `pre-trained-dpms/<name>/` (config.yml + checkpoint.pt) -> model folder, method "dpm"."""
    _, cfg_path, ckpt_path = _pdae_folder(src_dir, "pdae-dpm")
    official = _read_yaml(cfg_path)
    if not ckpt_path.is_file():
        raise CheckpointError(f"{ckpt_path}: file not found")
    ckpt = safe_torch_load(ckpt_path)
    converted = convert_pdae_dpm(ckpt, official, str(ckpt_path), str(cfg_path))
    step = _int_or_none(ckpt.get("step")) if isinstance(ckpt, Mapping) else None
    return _save(out_dir, converted, _metadata("pdae-dpm", [ckpt_path, cfg_path], step=step), force)


def import_pdae_autoencoder(
    src_dir: str | Path,
    out_dir: str | Path,
    *,
    dpm_config: str | Path | None = None,
    config: Mapping[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """Official PDAE `trained-models/autoencoder/<name>/` -> model folder, method "pdae".

    :param dpm_config: the pre-trained DPM's config.yml (or folder) when the autoencoder's config.yml
        neither embeds `denoise_fn_config` nor points to a reachable `trained_ddpm_config`.
    :param config: overrides {"encoder": {...}, "estimator": {...}} of the inferred constructor kwargs.
    """
    src, cfg_path, ckpt_path = _pdae_folder(src_dir, "pdae-autoencoder")
    ae_config = _read_yaml(cfg_path)
    denoise_fn_config, dpm_path = _find_dpm_config(src, ae_config, dpm_config)
    if not ckpt_path.is_file():
        raise CheckpointError(f"{ckpt_path}: file not found")
    ckpt = safe_torch_load(ckpt_path)
    dpm_where = str(dpm_path) if dpm_path is not None else str(cfg_path)
    converted = convert_pdae_autoencoder(
        ckpt, ae_config, denoise_fn_config, config, str(ckpt_path), str(cfg_path), dpm_where
    )
    files = [ckpt_path, cfg_path] + ([dpm_path] if dpm_path is not None else [])
    step = _int_or_none(ckpt.get("step")) if isinstance(ckpt, Mapping) else None
    return _save(out_dir, converted, _metadata("pdae-autoencoder", files, step=step), force)


def import_pdae_latent(
    src_dir: str | Path,
    out_dir: str | Path,
    *,
    latents: str | Path | None = None,
    force: bool = False,
) -> Path:
    """Official PDAE `trained-models/latent_denoise_fn/<name>/` (config.yml + checkpoint.pt) and its latent
    statistics `trained-models/latents/<name>.pt` -> model folder, method "latent".

    :param latents: the `{"mean", "std"}` file; default: config.yml's `inferred_latents`, looked up next to
        and above the folder.
    """
    src, cfg_path, ckpt_path = _pdae_folder(src_dir, "pdae-latent")
    official = _read_yaml(cfg_path)
    if not ckpt_path.is_file():
        raise CheckpointError(f"{ckpt_path}: file not found")
    stats_path = _find_latent_stats(src, official, latents)
    ckpt = safe_torch_load(ckpt_path)
    stats = safe_torch_load(stats_path)
    converted = convert_pdae_latent(ckpt, official, stats, str(ckpt_path), str(cfg_path), str(stats_path))
    step = _int_or_none(ckpt.get("step")) if isinstance(ckpt, Mapping) else None
    return _save(out_dir, converted, _metadata("pdae-latent", [ckpt_path, cfg_path, stats_path], step=step), force)


def _import_diffae(
    kind: str,
    convert: Callable[..., Converted],
    last_ckpt: str | Path,
    out_dir: str | Path,
    preset: str,
    config: Mapping[str, Any] | None,
    force: bool,
) -> Path:
    check_source_kind(kind, last_ckpt)
    path = Path(last_ckpt)
    ckpt = safe_torch_load(path)
    converted = convert(ckpt, preset, config, str(path))
    step = _int_or_none(ckpt.get("global_step")) if isinstance(ckpt, Mapping) else None
    return _save(out_dir, converted, _metadata(kind, [path], preset=preset, global_step=step), force)


def import_diffae_ddim(
    last_ckpt: str | Path,
    out_dir: str | Path,
    preset: str = DEFAULT_PRESET,
    *,
    config: Mapping[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """Diff-AE DDIM baseline `last.ckpt` -> model folder, method "dpm" (`preset`: a name in
    DIFFAE_PRESETS or "auto"; `config`: {"unet": {...}} overrides)."""
    return _import_diffae("diffae-ddim", convert_diffae_ddim, last_ckpt, out_dir, preset, config, force)


def import_diffae_autoencoder(
    last_ckpt: str | Path,
    out_dir: str | Path,
    preset: str = DEFAULT_PRESET,
    *,
    config: Mapping[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """Diff-AE autoencoder `last.ckpt` -> model folder, method "diffae" (`config`: {"model": {...}})."""
    return _import_diffae("diffae-autoencoder", convert_diffae_autoencoder, last_ckpt, out_dir, preset, config, force)


def import_diffae_latent(
    last_ckpt: str | Path,
    out_dir: str | Path,
    preset: str = DEFAULT_PRESET,
    *,
    config: Mapping[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """Diff-AE latent DPM `last.ckpt` (`*_autoenc_latent`) -> model folder, method "latent"
    (`config`: {"net": {...}})."""
    return _import_diffae("diffae-latent", convert_diffae_latent, last_ckpt, out_dir, preset, config, force)


# ---------------------------------------------------------------------------------------------------
# Command line: `pdae import KIND SRC --out DIR`.

IMPORT_KINDS = (
    "pdae-dpm", "diffae-ddim", "pdae-autoencoder", "diffae-autoencoder", "pdae-latent", "diffae-latent", "diffusers", "adm",
)
# Foreign priors (issue 7): a diffusers UNet2DModel folder or an openai guided/improved-diffusion checkpoint.
_PRIOR_KINDS = ("diffusers", "adm")
_DIFFAE_IMPORTERS = {
    "diffae-ddim": import_diffae_ddim,
    "diffae-autoencoder": import_diffae_autoencoder,
    "diffae-latent": import_diffae_latent,
}

_EPILOG = """\
examples:
  pdae import pdae-dpm pre-trained-dpms/ffhq128 --out models/ffhq128_dpm
  pdae import pdae-autoencoder trained-models/autoencoder/ffhq128 --out models/ffhq128_pdae
  pdae import diffae-ddim checkpoints/ffhq128_ddpm_130M/last.ckpt --out models/ffhq128_ddim
  pdae import diffae-autoencoder checkpoints/ffhq128_autoenc_130M/last.ckpt --out models/ffhq128_diffae
  pdae import diffae-latent checkpoints/horse128_autoenc_latent/last.ckpt --preset horse128 --out models/h
  pdae import pdae-latent trained-models/latent_denoise_fn/ffhq128 --latents trained-models/latents/ffhq.pt --out models/l
  pdae import diffae-ddim small/last.ckpt --preset auto --out models/small   # read hyper_parameters
  pdae import diffusers ddpm-cifar10-32 --out models/cifar10_dpm             # a google/ddpm-* folder
  pdae import adm 256x256_diffusion_uncond.pt --flags "$MODEL_FLAGS $DIFFUSION_FLAGS" --out models/adm256
"""


def _parse_config_json(value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    path = Path(value)
    try:
        text = path.read_text(encoding="utf-8") if path.is_file() else value
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"--config-json {path}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"--config-json: not a JSON object or a file holding one ({exc.msg})") from None
    if not isinstance(data, dict):
        raise CheckpointError("--config-json: expected a JSON object {component: {argument: value}}")
    return data


def _run_import(args: argparse.Namespace) -> int:
    """`pdae import`: the output is checked first (missing, empty, or one of our model folders with --force;
    anything else is refused), locked (`<out>.lock`) for the whole import, and replaced only once the new
    folder is complete; a source that fails leaves it untouched."""
    from pdae.fsutil import OutputLock, RunStaging, check_replaceable

    check_replaceable(args.out, force=args.force)
    with OutputLock(args.out), RunStaging(args.out):  # temporary files: .<out>.pdae-staging, removed on exit
        check_replaceable(args.out, force=args.force)  # again, under the lock
        return _run_import_locked(args)


def _run_import_locked(args: argparse.Namespace) -> int:
    kind = args.kind
    check_source_kind(kind, args.src)
    if args.latents is not None and kind != "pdae-latent":
        raise CheckpointError(f"--latents applies to pdae-latent only, not {kind}")
    if kind in _PRIOR_KINDS:
        from pdae.nets.adapters import import_prior

        if kind == "diffusers" and (args.flags or args.family):
            raise CheckpointError("--flags/--family apply to adm imports only")
        opts = {"flags": args.flags or "", "family": args.family or "guided"} if kind == "adm" else {}
        out = import_prior(kind, args.src, args.out, **opts)  # replaces an existing (ours, --force) folder atomically
    elif kind in _DIFFAE_IMPORTERS:
        if args.dpm_config is not None:
            raise CheckpointError(f"--dpm-config applies to pdae-autoencoder only, not {kind}")
        out = _DIFFAE_IMPORTERS[kind](
            args.src, args.out, args.preset or DEFAULT_PRESET, config=_parse_config_json(args.config_json), force=args.force
        )
    else:
        if args.preset is not None:
            raise CheckpointError(f"--preset applies to the diffae-* imports only; {kind} reads its config.yml")
        if kind == "pdae-dpm":
            if args.config_json is not None or args.dpm_config is not None:
                raise CheckpointError("pdae-dpm takes no --config-json/--dpm-config: its config.yml is complete")
            out = import_pdae_dpm(args.src, args.out, force=args.force)
        elif kind == "pdae-latent":
            if args.config_json is not None or args.dpm_config is not None:
                raise CheckpointError("pdae-latent takes no --config-json/--dpm-config: its config.yml is complete")
            out = import_pdae_latent(args.src, args.out, latents=args.latents, force=args.force)
        else:
            out = import_pdae_autoencoder(
                args.src, args.out, dpm_config=args.dpm_config, config=_parse_config_json(args.config_json), force=args.force
            )
    from pdae.checkpoint import load_model_folder

    folder = load_model_folder(out)
    n_params = sum(t.numel() for t in folder.tensors.values())
    print(f"wrote {out} (method {folder.method}, components {', '.join(folder.config['components'])}, {n_params:,} values)")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `import` sub-command to `subparsers`; it sets `func` (returns the exit code)."""
    parser = subparsers.add_parser(
        "import",
        help="convert a published PDAE / Diff-AE checkpoint into a model folder",
        description=__doc__.split("\n\n")[0] + " Pickles are loaded without executing code.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("kind", choices=IMPORT_KINDS, help="layout of SRC (docs/protocol.md §3)")
    parser.add_argument("src", help="official folder (pdae-*, diffusers) or file (diffae-*: Lightning last.ckpt; adm: .pt)")
    parser.add_argument("--out", required=True, help="model folder to write (must not exist unless --force)")
    parser.add_argument(
        "--preset",
        default=None,
        help=f"diffae-*: architecture, one of {', '.join(DIFFAE_PRESETS)} or '{AUTO_PRESET}' "
        f"(the checkpoint's hyper_parameters); default {DEFAULT_PRESET}",
    )
    parser.add_argument(
        "--config-json",
        default=None,
        help='constructor-argument overrides per component, JSON or a JSON file, e.g. \'{"unet": {"base_channels": 32}}\'',
    )
    parser.add_argument("--dpm-config", default=None, help="pdae-autoencoder: the pre-trained DPM's config.yml or folder")
    parser.add_argument("--latents", default=None,
                        help="pdae-latent: the latent statistics file {mean, std} (official "
                        "trained-models/latents/<name>.pt); default: config.yml's inferred_latents, looked up next to "
                        "and above the folder")
    parser.add_argument("--flags", default=None,
                        help='adm: the checkpoint\'s guided-diffusion script flags, e.g. "--image_size 256 --learn_sigma True ..."')
    parser.add_argument("--family", choices=("guided", "improved"), default=None,
                        help="adm: guided-diffusion (default) or improved-diffusion checkpoint")
    parser.add_argument("--force", action="store_true", help="replace an existing folder at --out")
    parser.set_defaults(func=_run_import)
    return parser
