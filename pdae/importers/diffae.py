"""Diff-AE checkpoints (phizaz/diffae) -> model folders: `diffae-ddim` (DDIM baseline), `diffae-autoencoder`,
`diffae-latent`; architectures from named presets (the official templates) or the checkpoint's own
`hyper_parameters` (docs/protocol.md §3)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from pdae.checkpoint import CheckpointError, check_state_dict, make_config, safe_torch_load, state_dict_with_prefix
from pdae.importers.common import (
    Converted,
    _int_or_none,
    _mapping,
    _meta_component,
    _metadata,
    _overrides,
    _save,
    _schedule_dict,
    check_source_kind,
)

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


# Diff-AE's latent DPM neither clamps z_T nor the predicted z_0 (docs/protocol.md §1.8, §7.4).
DIFFAE_LATENT_METHOD_KWARGS = {"clip_latent": False}


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
