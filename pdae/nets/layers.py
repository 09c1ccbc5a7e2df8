"""Building blocks of the ADM-style U-Net (Dhariwal & Nichol 2021) used by PDAE and Diff-AE.

One copy of every layer shared by `unet.py`, `encoder.py`, `gradient_estimator.py` and the Diff-AE
networks. Module attribute names reproduce the official state-dict keys (docs/protocol.md §2.1, §3.2):
`in_layers.{0,2}`, `emb_layers.1`, `out_layers.{0,3}`, `skip_connection`, `norm`, `qkv`, `proj_out`.

Notation: emb -> time embedding [N, E]; emb_z -> embedded semantic code z (PDAE) [N, E];
C -> channels; T -> number of spatial positions H*W.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "GROUPNORM_GROUPS",
    "AttentionBlock",
    "EmbeddingBlock",
    "EmbedSequential",
    "GroupNorm32",
    "ResBlock",
    "diffae_normalization",
    "normalization",
    "timestep_embedding",
    "zero_module",
]

GROUPNORM_GROUPS = 32  # every official GroupNorm has 32 groups (docs/protocol.md §2.1)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal timestep embedding, [cos, sin] order as in ADM (official PDAE code, model/module.py).

    freq_k = max_period^(-k / (dim // 2)), k = 0 .. dim//2 - 1; emb = [cos(t * freq), sin(t * freq)],
    zero-padded by one column when `dim` is odd. Computed in float32.

    :param t: [N] timesteps (integer indices in [0, T) or fractional).
    :param dim: embedding width.
    :return: [N, dim] float32 embedding.
    """
    if t.ndim != 1:
        raise ValueError(f"timestep_embedding: t must be 1-D [N], got shape {tuple(t.shape)}")
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None]  # [N, half]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm evaluated in float32 and cast back to the input dtype (stable under fp16/bf16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def normalization(channels: int) -> GroupNorm32:
    """The standard normalisation layer: GroupNorm with 32 groups, computed in float32.

    Same parameters (`weight`, `bias` of shape [C]) as PDAE's `nn.GroupNorm(32, C)`.
    """
    if channels % GROUPNORM_GROUPS:
        raise ValueError(
            f"normalization: channels={channels} is not divisible by {GROUPNORM_GROUPS} groups"
        )
    return GroupNorm32(GROUPNORM_GROUPS, channels)


def diffae_normalization(channels: int) -> GroupNorm32:
    """Diff-AE's normalisation layer: GroupNorm(min(32, C), C) in float32 (official Diff-AE code,
    model/nn.py `normalization`), so its networks also build with fewer than 32 channels; identical to
    `normalization` for every C that is a multiple of 32."""
    groups = min(GROUPNORM_GROUPS, channels)
    if channels < 1 or channels % groups:
        raise ValueError(f"normalization: channels={channels} is not divisible by {groups} groups")
    return GroupNorm32(groups, channels)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero every parameter of `module` in place and return it (zero-init output convs)."""
    for p in module.parameters():
        p.detach().zero_()
    return module


class EmbeddingBlock(nn.Module):
    """A block whose forward takes the time embedding (and optionally an embedded condition)."""

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor, emb_z: torch.Tensor | None = None
    ) -> torch.Tensor:
        raise NotImplementedError


class EmbedSequential(nn.Sequential):
    """`nn.Sequential` that hands (emb, emb_z) to `EmbeddingBlock`s and only x to other layers.

    Keys are the plain `nn.Sequential` indices, as the official `TimestepSequential`.
    """

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, emb: torch.Tensor, emb_z: torch.Tensor | None = None
    ) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb, emb_z) if isinstance(layer, EmbeddingBlock) else layer(x)
        return x


class ResBlock(EmbeddingBlock):
    """ADM residual block with adaptive GroupNorm on the time embedding (official PDAE code, model/module.py).

    h = in_layers(x)                    (GN, SiLU, [up/down], Conv3x3)
    [s, b] = emb_layers(emb)            (SiLU, Linear(E -> 2 C_out))
    h = GN(h) * (1 + s) + b             (AdaGN; `modulate`)
    h = out_layers[1:](h)               (SiLU, Dropout, zero-init Conv3x3)
    return skip_connection(x) + h       (Identity, or 1x1 conv when C changes)

    `up`/`down` resample by nearest x2 / 2x2 average pooling, without a convolution, applied to both
    the residual branch (between SiLU and the conv) and x. Subclasses change the conditioning by
    overriding `modulate` only.

    :param channels: input channels C_in.
    :param emb_channels: time-embedding width E.
    :param dropout: dropout probability before the last conv.
    :param out_channels: output channels C_out (default C_in).
    :param up: upsample x2 (nearest).
    :param down: downsample x2 (average pooling).
    """

    #: the normalisation layer's builder (channels -> module); Diff-AE's blocks use `diffae_normalization`
    make_norm = staticmethod(normalization)

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float = 0.0,
        out_channels: int | None = None,
        up: bool = False,
        down: bool = False,
    ) -> None:
        super().__init__()
        if up and down:
            raise ValueError("ResBlock: up and down are mutually exclusive")
        self.channels = channels
        self.out_channels = out_channels or channels
        self.resample = "up" if up else "down" if down else None
        self.in_layers = nn.Sequential(
            self.make_norm(channels),
            nn.SiLU(),
            nn.Conv2d(channels, self.out_channels, 3, padding=1),
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * self.out_channels))
        self.out_layers = nn.Sequential(
            self.make_norm(self.out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            zero_module(nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1)),
        )
        if self.out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 1)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.resample == "down":
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        return x

    def modulate(
        self, h: torch.Tensor, emb: torch.Tensor, emb_z: torch.Tensor | None
    ) -> torch.Tensor:
        """AdaGN: GN(h) * (1 + s) + b with [s, b] = emb_layers(emb). h: [N, C_out, H, W]."""
        if emb_z is not None:
            raise ValueError("ResBlock: got a condition emb_z but this block has no z path")
        scale, shift = self.emb_layers(emb)[..., None, None].chunk(2, dim=1)  # [N, C_out, 1, 1] x2
        return self.out_layers[0](h) * (1.0 + scale) + shift

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor, emb_z: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: [N, C_in, H, W], emb: [N, E] -> [N, C_out, H', W'] (H' = 2H, H/2 or H)."""
        if self.resample is None:
            h = self.in_layers(x)
        else:
            h = self.in_layers[:-1](x)
            h = self.in_layers[-1](self._resample(h))
            x = self._resample(x)
        h = self.modulate(h, emb, emb_z)
        h = self.out_layers[1:](h)
        return self.skip_connection(x) + h


def _attention_legacy(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    """QKV attention, heads split before q/k/v (`QKVAttentionLegacy`). qkv: [N, H*3*c, T] -> [N, H*c, T]."""
    n, width, length = qkv.shape
    ch = width // (3 * num_heads)
    q, k, v = qkv.reshape(n * num_heads, 3 * ch, length).split(ch, dim=1)  # [N*H, c, T] x3
    return _softmax_attention(q, k, v).reshape(n, -1, length)


def _attention_new_order(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    """QKV attention, q/k/v split before heads (`QKVAttention`). qkv: [N, 3*H*c, T] -> [N, H*c, T]."""
    n, width, length = qkv.shape
    ch = width // (3 * num_heads)
    q, k, v = (u.reshape(n * num_heads, ch, length) for u in qkv.chunk(3, dim=1))
    return _softmax_attention(q, k, v).reshape(n, -1, length)


def _softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q^T k / sqrt(c)) applied to v. q, k, v: [B, c, T] -> [B, c, T]."""
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    )  # [B, T, c]
    return out.transpose(1, 2)


class AttentionBlock(nn.Module):
    """Spatial self-attention with a residual connection (ADM `AttentionBlock`; official PDAE code, model/module.py).

    h = x + proj_out(attention(qkv(GN(x)))) with qkv a 1x1 Conv1d C -> 3C and proj_out zero-initialised.

    :param channels: C.
    :param num_heads: number of heads (used when `num_head_channels == -1`).
    :param num_head_channels: fixed width per head; overrides `num_heads` when not -1.
    :param use_new_attention_order: split q/k/v before heads (`QKVAttention`); default is the legacy order.
    """

    make_norm = staticmethod(normalization)  # as `ResBlock.make_norm`

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        use_new_attention_order: bool = False,
    ) -> None:
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if num_head_channels <= 0 or channels % num_head_channels:
                raise ValueError(
                    f"AttentionBlock: channels={channels} not divisible by "
                    f"num_head_channels={num_head_channels}"
                )
            self.num_heads = channels // num_head_channels
        if self.num_heads <= 0 or channels % self.num_heads:
            raise ValueError(
                f"AttentionBlock: channels={channels} not divisible by num_heads={self.num_heads}"
            )
        self.channels = channels
        self.use_new_attention_order = use_new_attention_order
        self.norm = self.make_norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, C, H, W] -> [N, C, H, W]."""
        n, c, *spatial = x.shape
        x = x.reshape(n, c, -1)  # [N, C, T]
        qkv = self.qkv(self.norm(x))  # [N, 3C, T]
        attend = _attention_new_order if self.use_new_attention_order else _attention_legacy
        h = self.proj_out(attend(qkv, self.num_heads))
        return (x + h).reshape(n, c, *spatial)
