"""Published diffusion models as PDAE's frozen prior: diffusers `UNet2DModel` folders and openai ADM checkpoints.

PDAE adapts *any* pre-trained eps-prediction DPM (Zhang, Zhao & Lin, NeurIPS 2022, Sec. 3.3); the gradient
estimator only needs a `FrozenPrior` (pdae/nets/prior.py). This module provides two more of them (network
modules and the pure mapping of their configurations, flags and parameter names; the files are read by
`pdae.importers.foreign`):

  DiffusersPrior   a diffusers `UNet2DModel` (google/ddpm-cifar10-32, ddpm-celebahq-256, ...), split at its
                   middle block: its own time projection and embedding (diffusers' sinusoid convention, not
                   ADM's), class embedding, conv_in and down blocks; then mid block, up blocks, norm/act/conv_out.
                   It and the mapping of a diffusers folder are pdae/nets/diffusers_prior.py, re-exported here.
  AdmUNet          our ADM `UNet` plus the options of openai guided-diffusion / improved-diffusion checkpoints
                   (conv up/down-sampling, additive time embedding, `num_heads_upsample`, rescaled time);
                   their state-dict keys load unchanged.

`pdae.importers.foreign.load_prior` (kind "native" | "diffusers" | "adm" + path) returns `DPM(prior,
schedule)`, the object `pdae.methods.build_method("pdae", ..., prior=...)` takes.

What follows the prior, and why (issue 7, docs/protocol.md §1.3-1.7):

- The schedule is the prior's own: diffusers `scheduler/scheduler_config.json` (`beta_schedule` linear,
  scaled_linear or squaredcos_cap_v2, `beta_start/end`, `num_train_timesteps`, or `trained_betas`), ADM
  `--noise_schedule/--diffusion_steps` (guided-diffusion's linear betas are scaled by 1000/T). `load_prior`
  returns it as `DPM.schedule`, and `build_method` hands `prior.schedule` to PDAE, so everything that
  depends on t is computed from that schedule's alpha_bar: the shift coefficient and lambda_t (paper
  Eq. 7, 10), t ~ U{0, ..., T-1} in training, the DDIM respacing over the prior's T (ddim100 on T = 4000
  is stride 40), and `stop_fraction` (a fraction of the steps run, not a timestep index). Training and
  sampling read the same table, so they use the same shift coefficient.
- Time as the network sees it: the loss and the samplers pass original integer indices t in {0..T-1}.
  An ADM prior trained with `rescale_timesteps` saw t * 1000 / T (guided-diffusion `_WrappedModel`);
  `AdmUNet.time_scale` applies that inside `encode_features`, so no caller changes. A diffusers prior is
  given t as a tensor (diffusers turns a Python number into an int64 tensor, which cuts a float).
- Learned variance (raw output 2C channels: eps, then the variance interpolation v): only the eps
  channels are used (`FrozenPrior.eps_from_output`). The shift is Eq. 7 with Sigma = the posterior
  variance beta-tilde ("fixed small"), not the learned Sigma_theta: the coefficient must be a fixed
  function of t, identical in training and in sampling, and must not depend on the frozen network's
  output (with Sigma_theta it would change with x_t, and G would be trained for one coefficient and
  sampled with another). The official code makes the same choice (its learned-sigma coefficient is
  commented out, docs/protocol.md §2.3). DDIM encoding and decoding never use the variance; DDPM ancestral
  sampling (`ddpm_sample`) uses the fixed-small variance.

Every bad configuration is a one-line `ValueError`.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from pdae.diffusion.schedule import Schedule
from pdae.nets.diffusers_prior import (  # the diffusers prior, also importable from here
    DiffusersPrior,
    diffusers_layout,
    diffusers_schedule,
    rename_legacy_attention,
)
from pdae.nets.layers import AttentionBlock, ResBlock
from pdae.nets.prior import PriorFeatures
from pdae.nets.unet import UNet, attention_factors


__all__ = [
    "ADM_FAMILIES",
    "AdditiveResBlock",
    "AdmUNet",
    "ConvDownsample",
    "ConvUpsample",
    "DiffusersPrior",
    "adm_options",
    "adm_schedule",
    "adm_unet_kwargs",
    "diffusers_layout",
    "diffusers_schedule",
    "rename_legacy_attention",
]

# ---------------------------------------------------------------------------------------------------
# openai ADM (guided-diffusion, improved-diffusion).


class ConvDownsample(nn.Module):
    """ADM `Downsample(use_conv=True)`: Conv3x3 stride 2 (key `op`). x: [N, C, H, W] -> [N, C, H/2, W/2]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ConvUpsample(nn.Module):
    """ADM `Upsample(use_conv=True)`: nearest x2, Conv3x3 (key `conv`). x: [N, C, H, W] -> [N, C, 2H, 2W]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.interpolate(x, scale_factor=2, mode="nearest"))


class AdditiveResBlock(ResBlock):
    """ADM ResBlock with `use_scale_shift_norm=False`: h = out_layers(h + Linear(SiLU(emb))), Linear E -> C_out."""

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float = 0.0,
        out_channels: int | None = None,
        up: bool = False,
        down: bool = False,
    ) -> None:
        super().__init__(channels, emb_channels, dropout, out_channels, up, down)
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, self.out_channels))

    def modulate(self, h: torch.Tensor, emb: torch.Tensor, emb_z: torch.Tensor | None) -> torch.Tensor:
        """GN(h + b), b = emb_layers(emb). h: [N, C_out, H, W]."""
        if emb_z is not None:
            raise ValueError("AdditiveResBlock: got a condition emb_z but this block has no z path")
        return self.out_layers[0](h + self.emb_layers(emb)[..., None, None].to(h.dtype))


class AdmUNet(UNet):
    """Our ADM `UNet` with the options of openai guided-/improved-diffusion `UNetModel`.

    With the defaults it is exactly `UNet` (same modules, same keys, same outputs). The state-dict keys of an
    openai checkpoint equal ours (ResBlock in_layers/emb_layers/out_layers/skip_connection, AttentionBlock
    norm/qkv/proj_out, `label_emb`, legacy attention order unless use_new_attention_order), except for
    the options below, which this class reproduces:

    :param resblock_updown: down/up-sample with ResBlocks (True, as PDAE/Diff-AE and guided-diffusion's
        ImageNet/LSUN models) or with convolutions (`input_blocks.k.0.op`, `output_blocks.k.{1,2}.conv`;
        guided-diffusion's default and every improved-diffusion model).
    :param use_scale_shift_norm: AdaGN (True) or the additive time embedding (`AdditiveResBlock`).
    :param num_heads_upsample: heads of the decoder's attention (-1 = num_heads; unused with head_channels).
    :param time_scale: the network is fed t * time_scale; 1000 / T for models trained with
        `rescale_timesteps` (improved-diffusion's default), else 1.
    :param unet_kwargs: `UNet` arguments (learn_sigma=True for learned-variance models: 2C outputs).
    """

    def __init__(
        self,
        *,
        resblock_updown: bool = True,
        use_scale_shift_norm: bool = True,
        num_heads_upsample: int = -1,
        time_scale: float = 1.0,
        **unet_kwargs: Any,
    ) -> None:
        super().__init__(**unet_kwargs)
        if not time_scale > 0:
            raise ValueError(f"AdmUNet: time_scale must be positive, got {time_scale!r}")
        self.time_scale = float(time_scale)
        self.config.update(
            resblock_updown=resblock_updown,
            use_scale_shift_norm=use_scale_shift_norm,
            num_heads_upsample=num_heads_upsample,
            time_scale=self.time_scale,
        )
        blocks = [*self.input_blocks, self.middle_block, *self.output_blocks]
        if not resblock_updown:
            for seq in blocks:
                for i, layer in enumerate(seq):
                    if isinstance(layer, ResBlock) and layer.resample is not None:
                        seq[i] = (ConvDownsample if layer.resample == "down" else ConvUpsample)(layer.channels)
        if not use_scale_shift_norm:
            emb_dim, dropout = self.feature_layout().emb_dim, self.config["dropout"]
            for seq in blocks:
                for i, layer in enumerate(seq):
                    if isinstance(layer, ResBlock):
                        seq[i] = AdditiveResBlock(
                            layer.channels, emb_dim, dropout, layer.out_channels,
                            up=layer.resample == "up", down=layer.resample == "down",
                        )
        if num_heads_upsample not in (-1, self.config["num_heads"]) and self.config["head_channels"] == -1:
            for seq in self.output_blocks:
                for layer in seq:
                    if isinstance(layer, AttentionBlock):
                        if num_heads_upsample <= 0 or layer.channels % num_heads_upsample:
                            raise ValueError(
                                f"AdmUNet: {layer.channels} channels not divisible by num_heads_upsample={num_heads_upsample}"
                            )
                        layer.num_heads = num_heads_upsample

    def encode_features(
        self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None
    ) -> PriorFeatures:
        """As `UNet.encode_features`, with the network's time t * time_scale (float) when rescaled."""
        if self.time_scale != 1.0:
            t = t.float() * self.time_scale
        return super().encode_features(x_t, t, y)


ADM_FAMILIES = ("guided", "improved")

# `model_and_diffusion_defaults()` of each repository (openai/guided-diffusion, openai/improved-diffusion
# script_util.py): the value of every flag not given.
_ADM_DEFAULTS: dict[str, dict[str, Any]] = {
    "guided": {
        "image_size": 64, "num_channels": 128, "num_res_blocks": 2, "num_heads": 4, "num_heads_upsample": -1,
        "num_head_channels": -1, "attention_resolutions": "16,8", "channel_mult": "", "dropout": 0.0,
        "class_cond": False, "use_scale_shift_norm": True, "resblock_updown": False,
        "use_new_attention_order": False, "learn_sigma": False, "diffusion_steps": 1000,
        "noise_schedule": "linear", "predict_xstart": False, "rescale_timesteps": False,
    },
    "improved": {
        "image_size": 64, "num_channels": 128, "num_res_blocks": 2, "num_heads": 4, "num_heads_upsample": -1,
        "attention_resolutions": "16,8", "dropout": 0.0, "class_cond": False, "use_scale_shift_norm": True,
        "learn_sigma": False, "diffusion_steps": 1000, "noise_schedule": "linear", "predict_xstart": False,
        "rescale_timesteps": True,
    },
}
# channel_mult by image size when --channel_mult is not given (create_model of each repository).
_ADM_CHANNEL_MULT: dict[str, dict[int, tuple[int, ...]]] = {
    "guided": {256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)},
    "improved": {256: (1, 1, 2, 2, 4, 4), 64: (1, 2, 3, 4), 32: (1, 2, 2, 2)},
}
# Training/sampling flags of the same scripts that change neither the network nor the schedule.
_ADM_IGNORED = frozenset({
    "batch_size", "microbatch", "lr", "ema_rate", "log_interval", "save_interval", "resume_checkpoint",
    "fp16_scale_growth", "weight_decay", "lr_anneal_steps", "schedule_sampler", "num_samples", "use_ddim",
    "model_path", "clip_denoised", "data_dir", "use_checkpoint", "use_fp16", "use_kl", "rescale_learned_sigmas",
    "sigma_small", "timestep_respacing", "classifier_scale", "classifier_path",
})


def _parse_flag(name: str, raw: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("true", "1", "yes", "y", "t"):
            return True
        if text in ("false", "0", "no", "n", "f"):
            return False
        raise ValueError(f"ADM flag --{name}: expected a boolean, got {raw!r}")
    try:
        return type(default)(raw) if not isinstance(default, str) else str(raw)
    except (TypeError, ValueError):
        raise ValueError(f"ADM flag --{name}: expected {type(default).__name__}, got {raw!r}") from None


def adm_options(flags: str | Sequence[str] | Mapping[str, Any] = "", family: str = "guided") -> dict[str, Any]:
    """The model/diffusion options of an openai checkpoint from its script flags, defaults filled in.

    :param flags: "--image_size 64 --num_channels 128 --learn_sigma True ..." (MODEL_FLAGS and
        DIFFUSION_FLAGS of the repository's README, `--a-b` or `--a_b`, `--k v` or `--k=v`), the same
        as a token list, or a mapping {name: value}. Training/sampling flags are accepted and ignored.
    :param family: "guided" (openai/guided-diffusion) or "improved" (openai/improved-diffusion);
        they differ in defaults (rescale_timesteps: False / True) and in the channel_mult table.
    """
    if family not in ADM_FAMILIES:
        raise ValueError(f"ADM family {family!r} unknown; expected one of {ADM_FAMILIES}")
    defaults = _ADM_DEFAULTS[family]
    if isinstance(flags, Mapping):
        given = {str(k).lstrip("-").replace("-", "_"): v for k, v in flags.items()}
    else:
        tokens = shlex.split(flags) if isinstance(flags, str) else list(flags)
        given, i = {}, 0
        while i < len(tokens):
            token = tokens[i]
            if not token.startswith("--"):
                raise ValueError(f"ADM flags: expected --name, got {token!r}")
            name, eq, value = token[2:].partition("=")
            if not eq:
                if i + 1 >= len(tokens):
                    raise ValueError(f"ADM flags: --{name} has no value")
                value, i = tokens[i + 1], i + 1
            given[name.replace("-", "_")] = value
            i += 1
    opts = dict(defaults)
    for name, raw in given.items():
        if name in _ADM_IGNORED or name.startswith("classifier_"):
            continue
        if name not in defaults:
            raise ValueError(f"ADM flag --{name} unknown for {family}-diffusion (known: {', '.join(sorted(defaults))})")
        opts[name] = _parse_flag(name, raw, defaults[name])
    return opts


def adm_unet_kwargs(opts: Mapping[str, Any], family: str = "guided") -> dict[str, Any]:
    """`AdmUNet` arguments from `adm_options(...)` (as create_model: 3 channels, 1000 classes if class_cond).

    `--attention_resolutions` are feature-map sizes (`attention_factors`); one that names no level raises,
    where create_model ignores it."""
    if opts["predict_xstart"]:
        raise ValueError("ADM flag --predict_xstart True unsupported; PDAE needs an eps-prediction prior")
    size = opts["image_size"]
    mult_text = opts.get("channel_mult", "")
    if mult_text:
        try:
            mult = tuple(int(m) for m in mult_text.split(","))
        except ValueError:
            raise ValueError(f"ADM flag --channel_mult {mult_text!r}: expected integers like 1,2,3,4") from None
    elif size in _ADM_CHANNEL_MULT[family]:
        mult = _ADM_CHANNEL_MULT[family][size]
    else:
        raise ValueError(
            f"ADM flag --image_size {size}: no default channel_mult in {family}-diffusion "
            f"(sizes {sorted(_ADM_CHANNEL_MULT[family])}; the 512 px model's half-width level is unsupported)"
        )
    resolutions = [int(r) for r in str(opts["attention_resolutions"]).split(",") if r.strip()]
    attention_ds = sorted(set(attention_factors(resolutions, len(mult), "ADM flags", "--attention_resolutions", size)))
    T = opts["diffusion_steps"]
    return {
        "in_channels": 3,
        "base_channels": opts["num_channels"],
        "channel_mult": list(mult),
        "num_res_blocks": opts["num_res_blocks"],
        "attention_ds": attention_ds,
        "num_heads": opts["num_heads"],
        "head_channels": opts.get("num_head_channels", -1),
        "new_attention_order": opts.get("use_new_attention_order", False),
        "dropout": opts["dropout"],
        "learn_sigma": opts["learn_sigma"],
        "num_classes": 1000 if opts["class_cond"] else None,
        "resblock_updown": opts.get("resblock_updown", False),
        "use_scale_shift_norm": opts["use_scale_shift_norm"],
        "num_heads_upsample": opts["num_heads_upsample"],
        "time_scale": 1000.0 / T if opts["rescale_timesteps"] else 1.0,
    }


def adm_schedule(opts: Mapping[str, Any]) -> Schedule:
    """`get_named_beta_schedule(noise_schedule, diffusion_steps)`: linear with beta_start/end scaled by
    1000 / T (so T = 4000 has betas 2.5e-5 .. 5e-3), or cosine (s = 0.008, max_beta 0.999)."""
    T, kind = opts["diffusion_steps"], opts["noise_schedule"]
    if kind == "linear":
        scale = 1000 / T
        return Schedule.from_name("linear", T, start=scale * 0.0001, end=scale * 0.02)
    if kind == "cosine":
        return Schedule.from_name("cosine", T)
    raise ValueError(f"ADM flag --noise_schedule {kind!r} unknown; expected linear or cosine")
