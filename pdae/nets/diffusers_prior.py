"""A diffusers `UNet2DModel` as PDAE's frozen prior (google/ddpm-cifar10-32, ddpm-celebahq-256, ...).

PDAE adapts *any* pre-trained eps-prediction DPM (Zhang, Zhao & Lin, NeurIPS 2022, Sec. 3.3). `DiffusersPrior`
is a `FrozenPrior` (pdae/nets/prior.py) split at the model's middle block: its own time projection and embedding
(diffusers' sinusoid convention, not ADM's), class embedding, conv_in and down blocks; then mid block, up blocks,
norm/act/conv_out. This module also maps the rest of a diffusers folder without reading files: the scheduler
config to the prior's `Schedule` (`diffusers_schedule`), the network's `FeatureLayout` (`diffusers_layout`) and
the attention parameter names of diffusers < 0.14 (`rename_legacy_attention`); `pdae.importers.foreign` reads
the files. Why the schedule, time and variance follow the prior: pdae/nets/adapters.py (which re-exports every
name here, with the openai ADM prior). Every bad configuration is a one-line `ValueError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from pdae.diffusion.schedule import Schedule
from pdae.nets.configurable import json_value, register_to_config
from pdae.nets.prior import FeatureLayout, FrozenPrior, PriorFeatures
from pdae.nets.unet import adm_layout

__all__ = [
    "DiffusersPrior",
    "diffusers_layout",
    "diffusers_schedule",
    "rename_legacy_attention",
]


# Block types whose layout is ADM's: per level `layers_per_block` resnets (+ attention) each giving one
# skip, a downsampler giving one more (all but the last level); up blocks have layers_per_block + 1 resnets.
_DIFFUSERS_DOWN = ("DownBlock2D", "AttnDownBlock2D", "ResnetDownsampleBlock2D")
_DIFFUSERS_UP = ("UpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D")
_DIFFUSERS_TIME = ("positional", "learned")
# Attention parameter names of diffusers < 0.14 (published google/ddpm-* weights) -> current names.
_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def _import_diffusers() -> Any:
    try:
        import diffusers
    except ImportError:
        raise ValueError(
            "diffusers priors need the optional dependency diffusers (pip install 'pdae-bench[diffusers]')"
        ) from None
    return diffusers


def _check_diffusers_config(cfg: Mapping[str, Any]) -> None:
    """One-line ValueError for a UNet2DModel configuration whose layout the new decoder cannot follow."""
    where = "DiffusersPrior"
    kind = cfg.get("time_embedding_type", "positional")
    if kind not in _DIFFUSERS_TIME:
        raise ValueError(f"{where}: time_embedding_type={kind!r} unsupported (score-SDE models); expected {_DIFFUSERS_TIME}")
    for key, allowed in (("down_block_types", _DIFFUSERS_DOWN), ("up_block_types", _DIFFUSERS_UP)):
        bad = [b for b in cfg.get(key, ()) if b not in allowed]
        if bad:
            raise ValueError(f"{where}: {key} {bad} unsupported; expected blocks among {allowed}")
    c_in, c_out = cfg.get("in_channels", 3), cfg.get("out_channels", 3)
    if c_out not in (c_in, 2 * c_in):
        raise ValueError(f"{where}: out_channels={c_out} must be in_channels ({c_in}) or twice it (learned variance)")


def diffusers_layout(cfg: Mapping[str, Any], emb_dim: int) -> FeatureLayout:
    """The `FeatureLayout` of a UNet2DModel configuration (ADM's layout, docs/protocol.md §2.1).

    Skips as ADM's (`skip_layout`, with `layers_per_block` resnets per level): levels of
    block_out_channels[i] channels, written as base * channel_mult with base = their gcd. Attention in the new
    decoder follows the prior's up path (levels with an `Attn*` up block), with diffusers' head width
    (`attention_head_dim`; None = one head).
    """
    chans = tuple(int(c) for c in cfg["block_out_channels"])
    levels = len(chans)
    base = math.gcd(*chans)
    up_types = list(cfg["up_block_types"])
    attention_ds = sorted(2 ** (levels - 1 - i) for i, kind in enumerate(up_types) if kind.startswith("Attn"))
    head_dim = cfg.get("attention_head_dim")
    return adm_layout(
        in_channels=int(cfg["in_channels"]), out_channels=int(cfg["out_channels"]), base_channels=base,
        channel_mult=tuple(ch // base for ch in chans), num_res_blocks=int(cfg["layers_per_block"]),
        attention_ds=tuple(attention_ds), num_heads=1, head_channels=-1 if head_dim is None else int(head_dim),
        new_attention_order=False, dropout=float(cfg.get("dropout", 0.0)), emb_dim=int(emb_dim),
    )


class DiffusersPrior(FrozenPrior):
    """A diffusers `UNet2DModel` (eps prediction) split at its middle block.

    `decode_features(encode_features(x, t, y))` runs exactly the operations of `UNet2DModel.forward`, in
    the same order, so it equals the wrapped model's `self.unet(x, t, y).sample` bit for bit. Parameters
    live under `unet.` (model folders store them as `prior.unet.*`).

    :param unet_config: the `unet/config.json` mapping (keys starting with "_" are ignored).
    """

    @register_to_config
    def __init__(self, unet_config: Mapping[str, Any]) -> None:
        super().__init__()
        diffusers = _import_diffusers()
        if not isinstance(unet_config, Mapping):
            raise ValueError(f"DiffusersPrior: unet_config must be a mapping, got {type(unet_config).__name__}")
        class_name = unet_config.get("_class_name", "UNet2DModel")
        if class_name != "UNet2DModel":
            raise ValueError(f"DiffusersPrior: expected a UNet2DModel config, got _class_name={class_name!r}")
        _check_diffusers_config(unet_config)
        public = {k: v for k, v in unet_config.items() if not k.startswith("_")}
        self.unet = diffusers.UNet2DModel.from_config(public)
        cfg = self.unet.config
        # diffusers' full config (its defaults applied), so the stored config rebuilds the same network
        self.config.update(unet_config={k: json_value(v) for k, v in cfg.items() if not k.startswith("_")})
        self._layout = diffusers_layout(cfg, self.unet.time_embedding.linear_2.out_features)

    @classmethod
    def from_unet(cls, unet: nn.Module) -> DiffusersPrior:
        """Wrap an in-memory UNet2DModel (its config and a copy of its weights)."""
        prior = cls(dict(unet.config))
        prior.unet.load_state_dict(unet.state_dict())
        return prior

    def feature_layout(self) -> FeatureLayout:
        return self._layout

    def encode_features(
        self, x_t: torch.Tensor, t: torch.Tensor | float, y: torch.Tensor | None = None
    ) -> PriorFeatures:
        """Time (+ class) embedding, conv_in, down blocks. x_t: [N, C, H, W]; t: [N] or scalar; y: [N]."""
        unet = self.unet
        if unet.config.center_input_sample:
            x_t = 2 * x_t - 1.0
        if not torch.is_tensor(t):
            t = torch.tensor([t], dtype=torch.long, device=x_t.device)
        elif t.ndim == 0:
            t = t[None].to(x_t.device)
        t = t * torch.ones(x_t.shape[0], dtype=t.dtype, device=t.device)  # [N], as UNet2DModel.forward
        emb = unet.time_embedding(unet.time_proj(t).to(dtype=unet.dtype))  # [N, E]
        if unet.class_embedding is not None:
            if y is None:
                raise ValueError("DiffusersPrior: class-conditional UNet2DModel needs labels y")
            labels = unet.time_proj(y) if unet.config.class_embed_type == "timestep" else y
            emb = emb + unet.class_embedding(labels).to(dtype=unet.dtype)
        elif y is not None:
            raise ValueError("DiffusersPrior: got labels y but the UNet2DModel has no class embedding")
        h = unet.conv_in(x_t)
        skips = [h]
        for block in unet.down_blocks:
            h, res = block(hidden_states=h, temb=emb)
            skips.extend(res)
        return PriorFeatures(h=h, skips=skips, emb=emb)

    def decode_features(self, feats: PriorFeatures) -> torch.Tensor:
        """Mid block, up blocks (each takes its last len(resnets) skips), norm, act, conv_out -> [N, C_out, H, W]."""
        unet = self.unet
        h = feats.h
        if unet.mid_block is not None:
            h = unet.mid_block(h, feats.emb)
        skips = list(feats.skips)
        for block in unet.up_blocks:
            n = len(block.resnets)
            res, skips = tuple(skips[-n:]), skips[:-n]
            h = block(h, res, feats.emb)
        return unet.conv_out(unet.conv_act(unet.conv_norm_out(h)))

    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor | float, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Raw output [N, C_out, H, W] (= `unet(x_t, t, y).sample`)."""
        return self.decode_features(self.encode_features(x_t, t, y))


def diffusers_schedule(sched: Mapping[str, Any], where: str = "scheduler_config.json") -> Schedule:
    """The prior's training schedule from a diffusers scheduler config (defaults as `DDPMScheduler`).

    linear: linspace(beta_start, beta_end, T); scaled_linear: linspace(sqrt(start), sqrt(end), T)^2;
    squaredcos_cap_v2: the cosine schedule (s = 0.008, max_beta 0.999, = our "cosine"); `trained_betas`
    wins when set. Tables are float64 (diffusers builds float32 betas; the original DDPM code float64).
    """
    pred = sched.get("prediction_type", "epsilon")
    if pred != "epsilon":
        raise ValueError(f"{where}: prediction_type={pred!r} unsupported; PDAE needs an eps-prediction prior (epsilon)")
    if sched.get("rescale_betas_zero_snr"):
        raise ValueError(f"{where}: rescale_betas_zero_snr=true unsupported")
    T = sched.get("num_train_timesteps", 1000)
    if sched.get("trained_betas") is not None:
        return Schedule(torch.tensor(sched["trained_betas"], dtype=torch.float64))
    kind = sched.get("beta_schedule", "linear")
    start, end = float(sched.get("beta_start", 1e-4)), float(sched.get("beta_end", 0.02))
    if kind == "linear":
        return Schedule.from_name("linear", T, start=start, end=end)
    if kind == "scaled_linear":
        return Schedule(torch.from_numpy(np.linspace(start**0.5, end**0.5, T, dtype=np.float64)) ** 2)
    if kind == "squaredcos_cap_v2":
        return Schedule.from_name("cosine", T)
    raise ValueError(f"{where}: beta_schedule={kind!r} unsupported; expected linear, scaled_linear or squaredcos_cap_v2")


def rename_legacy_attention(sd: Mapping[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Map diffusers < 0.14 attention names (query/key/value/proj_attn) to the current ones, where they fit."""
    out = {}
    for key, value in sd.items():
        module, _, leaf = key.rpartition(".")
        parent, _, name = module.rpartition(".")
        new = f"{parent}.{_LEGACY_ATTENTION[name]}.{leaf}" if name in _LEGACY_ATTENTION else key
        out[new if key not in expected and new in expected else key] = value
    return out
