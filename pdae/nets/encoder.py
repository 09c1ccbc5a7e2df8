"""PDAE's semantic encoder E_phi: stacked stride-2 convolutions and a linear head (Zhang, Zhao & Lin,
NeurIPS 2022; official PDAE code, model/representation_learning/encoder/*.py). One class for every image
size; the official per-dataset files are presets of it, with the same layer order and hence the same
state-dict keys (`encoder.{i}.*`).
"""

from __future__ import annotations

from typing import ClassVar

import math
from collections.abc import Sequence

import torch
from torch import nn

from pdae.nets.configurable import register_to_config
from pdae.nets.layers import AttentionBlock, normalization

__all__ = ["SemanticEncoder"]

FINAL_RESOLUTION = 4  # the conv stack stops at 4 x 4 (docs/protocol.md §2.2)


class SemanticEncoder(nn.Module):
    """x0 -> z: Conv3x3 s2, then [GN32, SiLU, Conv3x3 s2] repeated down to 4 x 4, an
    AttentionBlock (legacy order) after every conv whose output resolution is in
    `attention_resolutions`, then GN32, SiLU, flatten, Linear -> latent_dim. Deterministic, no time
    input, no output normalisation.

    Presets (docs/protocol.md §2.2, §2.6):
      128 px (FFHQ, CelebA-HQ, Horse, Bedroom): channels (64, 128, 256, 256, 256) -> 3,914,240 params.
      64 px (CelebA64):                         channels (64, 128, 128, 128)      -> 1,487,104 params.
      32 px / 16 px (small runs): e.g. (32, 64, 64) / (32, 64), attention at 16 / none.
    Every channel count must be a multiple of 32 (the official GroupNorm has 32 groups; no fallback).

    :param image_size: input height = width; a power of two >= 8.
    :param in_channels: image channels.
    :param latent_dim: dimension of z.
    :param channels: output channels of each stride-2 conv; log2(image_size / 4) entries.
    :param attention_resolutions: feature resolutions (not factors) followed by attention.
    :param num_heads: attention heads.
    """

    #: which constructor arguments set the depth, and how it must fit data.image_size (checked from the
    #: config before anything is built, pdae.config.check_net_depths): "levels" = one entry per resolution,
    #: "stride2_to_4x4" = one stride-2 conv per entry down to a 4x4 map
    SIZE_RULES: ClassVar[dict[str, str]] = {"channels": "stride2_to_4x4"}

    @register_to_config
    def __init__(
        self,
        image_size: int,
        in_channels: int = 3,
        latent_dim: int = 512,
        channels: Sequence[int] = (64, 128, 256, 256, 256),
        attention_resolutions: Sequence[int] = (16,),
        num_heads: int = 4,
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        attention_resolutions = tuple(int(r) for r in attention_resolutions)
        if image_size < 2 * FINAL_RESOLUTION or image_size & (image_size - 1):
            raise ValueError(f"SemanticEncoder: image_size={image_size} must be a power of two >= 8")
        n_convs = int(math.log2(image_size // FINAL_RESOLUTION))
        if len(channels) != n_convs:
            raise ValueError(
                f"SemanticEncoder: image_size={image_size} needs {n_convs} channel entries "
                f"(one per stride-2 conv down to 4x4), got channels={channels}"
            )
        resolutions = [image_size >> (i + 1) for i in range(n_convs)]
        bad = [r for r in attention_resolutions if r not in resolutions]
        if bad:
            raise ValueError(
                f"SemanticEncoder: attention_resolutions {bad} not among the conv outputs {resolutions}"
            )
        self.config.update(channels=list(channels), attention_resolutions=list(attention_resolutions))  # as ints
        self.image_size = image_size
        self.in_channels = in_channels
        self.latent_dim = latent_dim

        layers: list[nn.Module] = []
        ch = in_channels
        for out_ch, res in zip(channels, resolutions):
            if layers:
                layers += [normalization(ch), nn.SiLU()]
            layers.append(nn.Conv2d(ch, out_ch, 3, stride=2, padding=1))  # -> [N, out_ch, res, res]
            if res in attention_resolutions:
                layers.append(AttentionBlock(out_ch, num_heads))
            ch = out_ch
        layers += [
            normalization(ch),
            nn.SiLU(),
            nn.Flatten(),  # [N, ch * 4 * 4]
            nn.Linear(ch * FINAL_RESOLUTION**2, latent_dim),
        ]
        self.encoder = nn.Sequential(*layers)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """x0: [N, in_channels, image_size, image_size] in [-1, 1] -> z: [N, latent_dim]."""
        expected = (self.in_channels, self.image_size, self.image_size)
        if tuple(x0.shape[1:]) != expected:
            raise ValueError(f"SemanticEncoder: expected input [N, {expected}], got {tuple(x0.shape)}")
        return self.encoder(x0)
