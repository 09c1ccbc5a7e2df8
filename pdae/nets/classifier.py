"""Small classifier networks: the linear attribute head on z (PDAE/Diff-AE manipulation) and a small CNN
trained on a dataset's labels that serves as an offline feature extractor for FID and an LPIPS-style
distance (the `domain` metric backend, docs/protocol.md §5.10; the distance itself is metric code,
`eval.metrics.feature_map_distance` on `FeatureNet.feature_maps`).

Notation: z -> normalised semantic latent [N, D]; x -> image in [-1, 1] [N, C, H, W].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from pdae.nets.configurable import register_to_config

__all__ = ["FeatureNet", "LinearHead", "FEATURENET_GN_GROUPS"]

FEATURENET_GN_GROUPS = 8  # GroupNorm groups in FeatureNet (batch-independent features, unlike BatchNorm)


# Attribute classifier on z (docs/protocol.md §2.5): one Linear layer, keys `weight`, `bias` as PDAE's `nn.Linear`.
class LinearHead(nn.Linear):
    """logits = W z + b on the normalised latent z, trained with BCE-with-logits (official PDAE code,
    trainer/train_manipulation.py).

    Preset: CelebA-HQ attributes, 512 -> 40: 20,520 parameters. The state dict is a plain `nn.Linear`'s
    (`weight` [num_outputs, latent_dim], `bias` [num_outputs]), so PDAE's `ema_classifier` loads as is.

    :param latent_dim: D, width of z.
    :param num_outputs: number of attributes / classes.
    """

    @register_to_config
    def __init__(self, latent_dim: int, num_outputs: int) -> None:
        if latent_dim <= 0 or num_outputs <= 0:
            raise ValueError(
                f"LinearHead: sizes must be positive, got latent_dim={latent_dim}, num_outputs={num_outputs}"
            )
        super().__init__(latent_dim, num_outputs)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: [N, latent_dim] (normalised) -> logits [N, num_outputs]."""
        if z.ndim != 2 or z.shape[1] != self.in_features:
            raise ValueError(f"LinearHead: z must be [N, {self.in_features}], got {tuple(z.shape)}")
        return super().forward(z)

    def direction(self, index: int) -> torch.Tensor:
        """Unit manipulation direction w_c / ||w_c|| of output `index` (docs/protocol.md §2.5). -> [latent_dim]."""
        if not 0 <= index < self.out_features:
            raise ValueError(f"LinearHead.direction: index {index} not in [0, {self.out_features})")
        w = self.weight[index]
        return w / w.norm()


# Small CNN classifier whose penultimate layer is the `domain` FID feature (docs/protocol.md §5.10).
class FeatureNet(nn.Module):
    """Stages of [Conv3x3, GN, SiLU] x 2, average-pooled x2 between stages; global average pool;
    `embed` = Linear(channels[-1], feature_dim) + SiLU (the FID feature); `classifier` = Linear -> logits.

    For image_size 16 and channels (32, 64, 128) the stage maps are 16x16, 8x8 and 4x4.

    :param image_size: input height = width; divisible by 2^(len(channels) - 1).
    :param in_channels: image channels.
    :param num_classes: number of labels the net is trained on (cross-entropy).
    :param channels: channels per stage (each divisible by FEATURENET_GN_GROUPS).
    :param feature_dim: width of the penultimate feature used for FID.
    """

    #: which constructor arguments set the depth, and how it must fit data.image_size (checked from the
    #: config before anything is built, pdae.config.check_net_depths): "levels" = one entry per resolution,
    #: "stride2_to_4x4" = one stride-2 conv per entry down to a 4x4 map
    SIZE_RULES: ClassVar[dict[str, str]] = {"channels": "levels"}

    @register_to_config
    def __init__(
        self,
        image_size: int,
        in_channels: int,
        num_classes: int,
        channels: Sequence[int] = (32, 64, 128),
        feature_dim: int = 128,
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if not channels or any(c <= 0 or c % FEATURENET_GN_GROUPS for c in channels):
            raise ValueError(
                f"FeatureNet: channels must be positive multiples of {FEATURENET_GN_GROUPS}, got {channels}"
            )
        if image_size <= 0 or image_size % 2 ** (len(channels) - 1):
            raise ValueError(
                f"FeatureNet: image_size={image_size} not divisible by 2^{len(channels) - 1} "
                f"(one x2 pooling between {len(channels)} stages)"
            )
        if min(in_channels, num_classes, feature_dim) <= 0:
            raise ValueError(
                f"FeatureNet: in_channels, num_classes, feature_dim must be positive, got "
                f"{in_channels}, {num_classes}, {feature_dim}"
            )
        self.config.update(channels=list(channels))  # as ints
        self.image_size = image_size
        self.in_channels = in_channels
        self.stages = nn.ModuleList()
        prev = in_channels
        for ch in channels:
            self.stages.append(
                nn.Sequential(
                    nn.Conv2d(prev, ch, 3, padding=1),
                    nn.GroupNorm(FEATURENET_GN_GROUPS, ch),
                    nn.SiLU(),
                    nn.Conv2d(ch, ch, 3, padding=1),
                    nn.GroupNorm(FEATURENET_GN_GROUPS, ch),
                    nn.SiLU(),
                )
            )
            prev = ch
        self.embed = nn.Sequential(nn.Linear(prev, feature_dim), nn.SiLU())
        self.classifier = nn.Linear(feature_dim, num_classes)

    def _check_input(self, x: torch.Tensor) -> None:
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            shape = ", ".join(map(str, expected))
            raise ValueError(f"FeatureNet: x must be [N, {shape}], got {tuple(x.shape)}")

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-stage activations for the LPIPS-style distance. x: [N, C, H, W] in [-1, 1]
        -> list of [N, channels[s], H / 2^s, W / 2^s]."""
        self._check_input(x)
        maps = []
        h = x
        for s, stage in enumerate(self.stages):
            if s > 0:
                h = F.avg_pool2d(h, kernel_size=2)
            h = stage(h)
            maps.append(h)
        return maps

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate feature (the FID feature). x: [N, C, H, W] in [-1, 1] -> [N, feature_dim]."""
        return self.embed(self.feature_maps(x)[-1].mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits. x: [N, C, H, W] in [-1, 1] -> [N, num_classes]."""
        return self.classifier(self.features(x))
