"""The latent DPM's eps-network: the skip-connected MLP "MLPSkipNet" of Diff-AE (Preechakul et al. 2022),
reused unchanged by PDAE (Zhang, Zhao & Lin 2022) for unconditional sampling and few-shot generation.

State-dict keys and shapes equal the official `MLPSkipNet` of both repositories (docs/protocol.md §2.4):
`time_embed.{0,2}.*`, `layers.{i}.linear.*`, `layers.{i}.linear_emb.*`, `layers.{i}.cond_layers.1.*`
(the same Linear registered twice, as in the official code) and `layers.{i}.norm.*`. A Diff-AE latent
checkpoint's `latent_net.*` entries therefore load after stripping the prefix
(`diffae_latent_state_dict`).

Notation: z_t -> noisy normalised semantic latent [N, D]; t -> timestep index [N]; t_emb -> [N, time_out].
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from pdae.nets.configurable import register_to_config
from pdae.nets.layers import timestep_embedding

__all__ = ["DIFFAE_LATENT_PREFIX", "LatentMLP", "LatentMLPLayer", "diffae_latent_state_dict"]

DIFFAE_LATENT_PREFIX = "latent_net."  # prefix of the latent DPM inside a Diff-AE `BeatGANsAutoencModel`


# One layer of MLPSkipNet (official `MLPLNAct`): Linear, x * (1 + Linear(SiLU(t_emb))), LayerNorm, SiLU.
class LatentMLPLayer(nn.Module):
    """h = Dropout(SiLU(LN(Linear(x) * (1 + linear_emb(SiLU(t_emb)))))) (official PDAE code, model/mlp_skip_net.py).

    The last layer of the MLP is a plain Linear (`conditioned=False`: no time scale, no norm, no
    activation). Linear layers followed by SiLU get Kaiming-normal weights (fan-in, ReLU gain, as the
    official `init_weights`); the output layer keeps PyTorch's default init.

    :param in_features: input width (hidden + latent_dim after the skip concat).
    :param out_features: output width.
    :param cond_features: time-embedding width.
    :param conditioned: hidden layer (time-scaled, normed, SiLU) or the final linear output layer.
    :param use_norm: LayerNorm after the time scale (hidden layers only).
    :param dropout: dropout after the activation (hidden layers only; no module when 0).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        cond_features: int,
        conditioned: bool,
        use_norm: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.conditioned = conditioned
        self.linear = nn.Linear(in_features, out_features)
        self.act: nn.Module = nn.SiLU() if conditioned else nn.Identity()
        if conditioned:
            self.linear_emb = nn.Linear(cond_features, out_features)
            # Same module under two names, so both official keys exist (and share one tensor).
            self.cond_layers = nn.Sequential(self.act, self.linear_emb)
        self.norm: nn.Module = nn.LayerNorm(out_features) if conditioned and use_norm else nn.Identity()
        self.dropout: nn.Module = nn.Dropout(dropout) if conditioned and dropout > 0 else nn.Identity()
        if conditioned:
            for linear in (self.linear, self.linear_emb):
                nn.init.kaiming_normal_(linear.weight, a=0, nonlinearity="relu")

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        """x: [N, in_features], t_emb: [N, cond_features] -> [N, out_features]."""
        h = self.linear(x)
        if self.conditioned:
            h = h * (1.0 + self.cond_layers(t_emb))
        return self.dropout(self.act(self.norm(h)))


# The latent DPM eps-network: `MLPSkipNet` of Diff-AE and PDAE (condition_bias 1, skips at layers >= 1).
class LatentMLP(nn.Module):
    """eps_omega(z_t, t) for the latent DPM (docs/protocol.md §2.4, §1.8).

    Time: sinusoidal(time_dim) -> Linear(time_dim, time_out) -> SiLU -> Linear(time_out, time_out).
    Layer 0: latent_dim -> hidden; layers 1 .. L-2: concat(h, z_t) (hidden + latent_dim) -> hidden;
    layer L-1: concat(h, z_t) -> latent_dim, plain Linear.

    Presets:
      FFHQ128, CelebA64:    num_layers 10 -> 54,109,696 parameters (78 state-dict keys)
      Horse128, Bedroom128: num_layers 20 -> 117,106,176 parameters
      (latent_dim 512, hidden 2048, time_dim 64, time_out 512, use_norm, dropout 0)

    :param latent_dim: D, width of z (and of eps).
    :param hidden: hidden width.
    :param num_layers: number of Linear layers L (>= 2).
    :param time_dim: sinusoidal timestep-embedding width.
    :param time_out: time-embedding MLP width (the official code ties it to latent_dim).
    :param dropout: dropout in the hidden layers.
    :param use_norm: LayerNorm in the hidden layers.
    """

    @register_to_config
    def __init__(
        self,
        latent_dim: int = 512,
        hidden: int = 2048,
        num_layers: int = 10,
        time_dim: int = 64,
        time_out: int = 512,
        dropout: float = 0.0,
        use_norm: bool = True,
    ) -> None:
        super().__init__()
        if num_layers < 2:
            raise ValueError(f"LatentMLP: num_layers must be >= 2, got {num_layers}")
        if min(latent_dim, hidden, time_dim, time_out) <= 0:
            raise ValueError(
                f"LatentMLP: widths must be positive, got latent_dim={latent_dim}, hidden={hidden}, "
                f"time_dim={time_dim}, time_out={time_out}"
            )
        self.latent_dim = latent_dim
        self.time_dim = time_dim
        self.time_embed = nn.Sequential(
            nn.Linear(time_dim, time_out), nn.SiLU(), nn.Linear(time_out, time_out)
        )
        self.layers = nn.ModuleList()
        for i in range(num_layers):
            last = i == num_layers - 1
            in_features = latent_dim if i == 0 else hidden + latent_dim
            out_features = latent_dim if last else hidden
            self.layers.append(
                LatentMLPLayer(in_features, out_features, time_out, not last, use_norm, dropout)
            )

    def forward(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """eps prediction. z_t: [N, latent_dim], t: [N] (or a scalar) -> [N, latent_dim]."""
        if z_t.ndim != 2 or z_t.shape[1] != self.latent_dim:
            raise ValueError(
                f"LatentMLP: z_t must be [N, {self.latent_dim}], got {tuple(z_t.shape)}"
            )
        if t.ndim == 0:
            t = t.expand(z_t.shape[0])
        t_emb = self.time_embed(timestep_embedding(t, self.time_dim).to(z_t.dtype))  # [N, time_out]
        h = z_t
        for i, layer in enumerate(self.layers):
            if i > 0:
                h = torch.cat([h, z_t], dim=1)  # skip: re-inject the input
            h = layer(h, t_emb)
        return h


def diffae_latent_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The `latent_net.*` entries of a Diff-AE state dict (`ema_model.` already stripped), prefix removed.

    The result loads strictly into `LatentMLP` built with the checkpoint's sizes (docs/protocol.md §2.4, §3.4).
    PDAE latent checkpoints (`ema_latent_denoise_fn`) need no mapping at all.
    """
    out = {
        key[len(DIFFAE_LATENT_PREFIX):]: value
        for key, value in state_dict.items()
        if key.startswith(DIFFAE_LATENT_PREFIX)
    }
    if not out:
        raise ValueError(
            f"diffae_latent_state_dict: no '{DIFFAE_LATENT_PREFIX}*' keys "
            f"(is this a Diff-AE *_autoenc_latent checkpoint with 'ema_model.' stripped?)"
        )
    return out
