"""Official PDAE checkpoints (ckczzj/PDAE) -> model folders: `pdae-dpm` (pre-trained DPM), `pdae-autoencoder`
(encoder + gradient estimator), `pdae-latent` (latent DPM + latent statistics); layouts in docs/protocol.md §3."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pdae.checkpoint import CheckpointError, check_state_dict, make_config, safe_torch_load, state_dict_with_prefix
from pdae.importers.common import (
    Converted,
    _int_or_none,
    _mapping,
    _meta_component,
    _metadata,
    _on_meta,
    _overrides,
    _read_yaml,
    _save,
    _schedule_dict,
    _state_dict,
    check_source_kind,
)

# PDAE's official representation-learning recipe (paper Eq. 10): gamma 0.1, SNR weighting.
PDAE_METHOD_KWARGS = {"gamma": 0.1, "weighting": "snr"}


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
