"""The frozen-prior interface: what PDAE's gradient estimator needs from a pre-trained DPM.

PDAE (Zhang, Zhao & Lin, NeurIPS 2022) reuses the pre-trained eps-network's time embedding and encoder
half, and trains a new middle + decoder path fed by the same skip features (docs/protocol.md §2.3). A frozen
prior is therefore anything that can
  (a) `encode_features(x_t, t, y)`: run its time embedding, input convolution and encoder half once,
      returning the middle-block input, the skip features and the embedding (`PriorFeatures`);
  (b) `decode_features(feats)`: finish its own middle block, decoder and output layer;
  (c) `feature_layout()`: describe those features (`FeatureLayout`), from which the new decoder is built.
Our `UNet` is one; adapters for diffusers' `UNet2DModel` and openai ADM checkpoints implement the same ABC.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["FeatureLayout", "FrozenPrior", "OutputBlockSpec", "PriorFeatures"]


@dataclass
class PriorFeatures:
    """Features of one pass through a prior's encoder half.

    :param h: middle-block input.                                   # [N, C_mid, H/ds_max, W/ds_max]
    :param skips: outputs of every encoder block, first to last; the decoder consumes them in
        reverse order (last one first). Never mutated by consumers.  # list of [N, C_i, H/ds_i, W/ds_i]
    :param emb: time (+ class) embedding fed to every ResBlock.     # [N, E]
    """

    h: torch.Tensor
    skips: list[torch.Tensor]
    emb: torch.Tensor


@dataclass(frozen=True)
class OutputBlockSpec:
    """One decoder block: ResBlock(in_channels -> out_channels) [+ attention] [+ up ResBlock]."""

    in_channels: int  # decoder channels + skip channels (concatenated)
    out_channels: int
    attention: bool
    up: bool


@dataclass(frozen=True)
class FeatureLayout:
    """Everything needed to build a decoder that consumes a prior's `PriorFeatures`.

    Skips are listed in encoder order; `skip_ds[i]` is the downsample factor of `skips[i]`.
    The decoder plan (`output_block_specs`) follows ADM: for each level, coarsest first,
    `num_res_blocks + 1` ResBlocks each consuming one skip, attention where the downsample factor is in
    `attention_ds`, and an up-sampling ResBlock after the last block of every level but the finest.
    """

    in_channels: int  # image channels = eps channels = G channels
    out_channels: int  # the prior's raw output channels (2 * in_channels when learn_sigma)
    base_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    attention_ds: tuple[int, ...]
    num_heads: int
    head_channels: int
    new_attention_order: bool
    dropout: float
    emb_dim: int
    middle_channels: int
    skip_channels: tuple[int, ...]
    skip_ds: tuple[int, ...]

    @property
    def eps_channels(self) -> int:
        """Channels of the eps prediction (the first ones of the raw output)."""
        return self.in_channels

    def output_block_specs(self) -> list[OutputBlockSpec]:
        """The decoder plan, one spec per skip consumed (docs/protocol.md §2.1 `output_blocks`)."""
        levels = len(self.channel_mult)
        n_blocks = levels * (self.num_res_blocks + 1)
        if len(self.skip_channels) != n_blocks or len(self.skip_ds) != n_blocks:
            raise ValueError(
                f"FeatureLayout: {len(self.skip_channels)} skips, expected {n_blocks} "
                f"for channel_mult={self.channel_mult}, num_res_blocks={self.num_res_blocks}"
            )
        skips = list(self.skip_channels)
        ch = self.middle_channels
        ds = 2 ** (levels - 1)
        specs = []
        for level in reversed(range(levels)):
            out_ch = self.base_channels * self.channel_mult[level]
            for i in range(self.num_res_blocks + 1):
                up = level > 0 and i == self.num_res_blocks
                specs.append(OutputBlockSpec(ch + skips.pop(), out_ch, ds in self.attention_ds, up))
                ch = out_ch
            ds //= 2
        return specs

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


class FrozenPrior(nn.Module, ABC):
    """A pre-trained eps-network split at its middle block (see module docstring).

    `decode_features(encode_features(x_t, t, y))` must equal the prior's plain forward. The raw output
    has `feature_layout().out_channels` channels; `eps_from_output` keeps the first `eps_channels`
    (learned-variance models put the variance interpolation in the remaining ones).
    """

    @abstractmethod
    def encode_features(
        self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None
    ) -> PriorFeatures:
        """Time embedding, input conv and encoder half. x_t: [N, C, H, W], t: [N] (y: [N] labels)."""

    @abstractmethod
    def decode_features(self, feats: PriorFeatures) -> torch.Tensor:
        """Middle block, decoder and output layer -> raw output [N, out_channels, H, W]."""

    @abstractmethod
    def feature_layout(self) -> FeatureLayout:
        """Channel/resolution layout of the features (constant for a given network)."""

    @property
    def eps_channels(self) -> int:
        """Channels of the eps prediction."""
        return self.feature_layout().eps_channels

    def eps_from_output(self, out: torch.Tensor) -> torch.Tensor:
        """Keep the eps channels of a raw output [N, out_channels, H, W] -> [N, eps_channels, H, W]."""
        return out[:, : self.eps_channels]

    def predict_eps(self, feats: PriorFeatures) -> torch.Tensor:
        """eps_theta(x_t, t) from precomputed features. -> [N, eps_channels, H, W]."""
        return self.eps_from_output(self.decode_features(feats))
