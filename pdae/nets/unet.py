"""The pre-trained DPM: an ADM-style eps-prediction U-Net (Dhariwal & Nichol 2021) as used by PDAE.

State-dict keys and shapes equal the official PDAE `UNet` (model/unet.py; docs/protocol.md §3.2), so published
`ema_denoise_fn` checkpoints (and Diff-AE DDIM baselines with the `ema_model.` prefix stripped, §3.4)
load without renaming. Implements `FrozenPrior` so PDAE's gradient estimator reuses its encoder half.

The ADM parts are written once here and shared by every ADM-shaped network (this U-Net, Diff-AE's
`DiffAEUNet`/`DiffAEEncoder`, the openai and diffusers priors in `adapters.py`, PDAE's `GradientEstimator`):
`adm_levels` and `attention_factors` (the argument rules), `skip_layout` and `adm_layout` (what the encoder half
hands to a decoder), `build_input_blocks` (the encoder half) and `build_output_blocks` (the decoder half).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, ClassVar

import torch
from torch import nn

from pdae.nets.configurable import register_to_config
from pdae.nets.layers import (
    AttentionBlock,
    EmbedSequential,
    ResBlock,
    normalization,
    timestep_embedding,
    zero_module,
)
from pdae.nets.prior import FeatureLayout, FrozenPrior, PriorFeatures

__all__ = [
    "OFFICIAL_CONFIG_KEYS",
    "UNet",
    "adm_layout",
    "adm_levels",
    "attention_factors",
    "build_input_blocks",
    "build_output_blocks",
    "skip_layout",
]

# official `denoise_fn_config` key -> our constructor argument (docs/protocol.md §3.1)
OFFICIAL_CONFIG_KEYS: dict[str, str] = {
    "input_channel": "in_channels",
    "base_channel": "base_channels",
    "channel_multiplier": "channel_mult",
    "num_residual_blocks_of_a_block": "num_res_blocks",
    "attention_resolutions": "attention_ds",
    "num_heads": "num_heads",
    "head_channel": "head_channels",
    "use_new_attention_order": "new_attention_order",
    "dropout": "dropout",
}
_OFFICIAL_OPTIONAL_KEYS: dict[str, str] = {"learn_sigma": "learn_sigma", "num_class": "num_classes"}


class UNet(FrozenPrior):
    """ADM U-Net predicting eps(x_t, t) (docs/protocol.md §2.1).

    Presets (docs/protocol.md §2.1 table):
      128 px FFHQ/Horse/Bedroom: base 128, mult (1,1,2,3,4), 2 res blocks, attention_ds (8,), 1 head,
                                 dropout 0.1 -> 98,618,499 parameters, 432 keys.
      MNIST (32 px, 1 channel):  base 64, mult (1,2,2,4), 2 res blocks, attention_ds (), dropout 0
                                 -> 19,404,161 parameters.

    :param in_channels: image channels (eps has the same number).
    :param base_channels: channels of the first level; the time embedding has 4 * base_channels.
    :param channel_mult: per-level multiplier of base_channels; one x2 downsampling between levels.
    :param num_res_blocks: ResBlocks per level in the encoder (decoder: one more).
    :param attention_ds: downsample factors (1, 2, 4, ...) at which attention follows each ResBlock.
        Not feature resolutions: Diff-AE's `attn_resolutions=(16,)` at 128 px is `(8,)` here.
    :param num_heads: attention heads (when head_channels == -1).
    :param head_channels: fixed channels per head, or -1 to use num_heads.
    :param new_attention_order: split q/k/v before heads (`QKVAttention`) instead of the legacy order.
    :param dropout: dropout in every ResBlock.
    :param learn_sigma: output 2 * in_channels (eps then variance interpolation).
    :param num_classes: class-conditional prior: adds `label_emb` (nn.Embedding) to the time embedding.
    """

    #: which constructor arguments set the depth, and how it must fit data.image_size (checked from the
    #: config before anything is built, pdae.config.check_net_depths): "levels" = one entry per resolution,
    #: "stride2_to_4x4" = one stride-2 conv per entry down to a 4x4 map
    SIZE_RULES: ClassVar[dict[str, str]] = {"channel_mult": "levels"}

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        base_channels: int = 128,
        channel_mult: Sequence[int] = (1, 1, 2, 3, 4),
        num_res_blocks: int = 2,
        attention_ds: Sequence[int] = (8,),
        num_heads: int = 1,
        head_channels: int = -1,
        new_attention_order: bool = False,
        dropout: float = 0.1,
        learn_sigma: bool = False,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        channel_mult = adm_levels(channel_mult, num_res_blocks, "UNet")
        attention_ds = attention_factors(attention_ds, len(channel_mult), "UNet", "attention_ds")
        self.config.update(channel_mult=list(channel_mult), attention_ds=list(attention_ds))  # as ints
        self.base_channels = base_channels
        self.num_classes = num_classes
        emb_dim = 4 * base_channels
        attention = partial(
            AttentionBlock, num_heads=num_heads, num_head_channels=head_channels,
            use_new_attention_order=new_attention_order,
        )

        # Time (and class) embedding.
        self.time_embed = nn.Sequential(
            nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, emb_dim)

        # Encoder half, middle block, decoder half.
        self._layout = adm_layout(
            in_channels=in_channels, out_channels=2 * in_channels if learn_sigma else in_channels,
            base_channels=base_channels, channel_mult=channel_mult, num_res_blocks=num_res_blocks,
            attention_ds=attention_ds, num_heads=num_heads, head_channels=head_channels,
            new_attention_order=new_attention_order, dropout=dropout, emb_dim=emb_dim,
        )
        self.input_blocks = build_input_blocks(
            in_channels, base_channels, channel_mult, num_res_blocks, attention_ds,
            EmbedSequential, lambda c_in, c_out, down: ResBlock(c_in, emb_dim, dropout, c_out, down=down),
            attention,
        )
        ch = self._layout.middle_channels
        self.middle_block = EmbedSequential(
            ResBlock(ch, emb_dim, dropout), attention(ch), ResBlock(ch, emb_dim, dropout)
        )
        self.output_blocks = build_output_blocks(self._layout, ResBlock, dropout)
        out_ch = base_channels * channel_mult[0]
        self.out = nn.Sequential(
            normalization(out_ch),
            nn.SiLU(),
            zero_module(nn.Conv2d(out_ch, self._layout.out_channels, 3, padding=1)),
        )

    @classmethod
    def from_official_config(cls, denoise_fn_config: Mapping[str, Any]) -> UNet:
        """Build from the official `config.yml` `denoise_fn_config` mapping (docs/protocol.md §3.1).

        Extra keys (`model`, ...) are ignored; `dims` must be 2 when present.
        """
        missing = [k for k in OFFICIAL_CONFIG_KEYS if k not in denoise_fn_config]
        if missing:
            raise ValueError(f"UNet.from_official_config: missing key(s) {missing}")
        dims = denoise_fn_config.get("dims", 2)
        if dims != 2:
            raise ValueError(f"UNet.from_official_config: dims={dims!r} unsupported (only 2-D images)")
        kwargs = {ours: denoise_fn_config[theirs] for theirs, ours in OFFICIAL_CONFIG_KEYS.items()}
        for theirs, ours in _OFFICIAL_OPTIONAL_KEYS.items():
            if denoise_fn_config.get(theirs) is not None:
                kwargs[ours] = denoise_fn_config[theirs]
        for key in ("channel_multiplier", "attention_resolutions"):
            value = denoise_fn_config[key]
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                raise ValueError(f"UNet.from_official_config: {key} must be a list, got {value!r}")
        return cls(**kwargs)

    def feature_layout(self) -> FeatureLayout:
        return self._layout

    def encode_features(
        self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None
    ) -> PriorFeatures:
        """Time embedding + encoder half. x_t: [N, C, H, W], t: [N] or scalar, y: [N] class labels."""
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        t_emb = timestep_embedding(t, self.base_channels).to(self.time_embed[0].weight.dtype)
        emb = self.time_embed(t_emb)  # [N, E]
        if self.num_classes is not None:
            if y is None:
                raise ValueError("UNet: class-conditional model (num_classes set) needs labels y")
            emb = emb + self.label_emb(y)
        elif y is not None:
            raise ValueError("UNet: got labels y but the model is unconditional (num_classes=None)")
        skips = []
        h = x_t
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        return PriorFeatures(h=h, skips=skips, emb=emb)

    def decode_features(self, feats: PriorFeatures) -> torch.Tensor:
        """Middle block + decoder + output layer -> [N, out_channels, H, W] (eps first)."""
        h = self.middle_block(feats.h, feats.emb)
        for block, skip in zip(self.output_blocks, reversed(feats.skips)):
            h = block(torch.cat([h, skip], dim=1), feats.emb)
        return self.out(h)

    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """eps_theta(x_t, t): [N, C, H, W] -> [N, C, H, W] ([N, 2C, H, W] when learn_sigma)."""
        return self.decode_features(self.encode_features(x_t, t, y))


def adm_levels(channel_mult: Sequence[int], num_res_blocks: int, where: str) -> tuple[int, ...]:
    """`channel_mult` as a tuple of ints; one-line ValueError without a level or a ResBlock per level."""
    mult = tuple(int(m) for m in channel_mult)
    if not mult or num_res_blocks < 1:
        raise ValueError(
            f"{where}: need at least one level and one res block, got channel_mult={mult}, "
            f"num_res_blocks={num_res_blocks}"
        )
    return mult


def attention_factors(
    values: Sequence[int], levels: int, where: str, key: str, image_size: int | None = None
) -> tuple[int, ...]:
    """The attention rule of every ADM network here: attention follows each ResBlock of the levels listed,
    a level named by its downsample factor ds = 2^k (official PDAE code, model/unet.py `ds in
    attention_resolutions`) or, given `image_size`, by its feature-map size image_size / 2^k (official
    Diff-AE code, model/unet.py `resolution in attention_resolutions`; openai `create_model`).

    The official networks ignore a value that names no level; here it raises a one-line ValueError
    naming `key`, as does an `image_size` not divisible by 2^(levels - 1).
    :return: the downsample factors, in the order given.
    """
    factors = [2**k for k in range(levels)]
    values = [int(v) for v in values]
    if image_size is None:
        named, what = factors, "downsample factors (not feature-map sizes)"
    elif image_size % 2 ** max(levels - 1, 0):
        raise ValueError(f"{where}: image_size={image_size} not divisible by 2^{levels - 1} ({levels} levels)")
    else:
        named, what = [image_size // f for f in factors], f"feature-map sizes at image_size={image_size}"
    bad = [v for v in values if v not in named]
    if bad:
        raise ValueError(f"{where}: {key} {bad} never reached; the {levels} levels' {what} are {named}")
    return tuple(factors[named.index(v)] for v in values)


def skip_layout(level_channels: Sequence[int], num_res_blocks: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(channels, downsample factors) of the skips an ADM encoder half hands its decoder, in encoder order
    (official PDAE code, model/unet.py `input_block_chans`; diffusers `UNet2DModel` down blocks): the input
    conv (level 0, ds 1); per level k, `num_res_blocks` ResBlocks (level_channels[k], ds 2^k) and, but at
    the last level, the down-sampling block (level_channels[k], ds 2^(k+1)).
    """
    channels, ds = [level_channels[0]], [1]
    for level, ch in enumerate(level_channels):
        channels += [ch] * num_res_blocks
        ds += [2**level] * num_res_blocks
        if level < len(level_channels) - 1:
            channels.append(ch)
            ds.append(2 ** (level + 1))
    return tuple(channels), tuple(ds)


def adm_layout(
    *, base_channels: int, channel_mult: Sequence[int], num_res_blocks: int, **fields: Any
) -> FeatureLayout:
    """The `FeatureLayout` of an ADM encoder half with levels of base_channels * channel_mult channels:
    `skip_layout` and the middle width (the last level's) added to `fields` (FeatureLayout's others)."""
    level_channels = [base_channels * m for m in channel_mult]
    skip_channels, skip_ds = skip_layout(level_channels, num_res_blocks)
    return FeatureLayout(
        base_channels=base_channels, channel_mult=tuple(channel_mult), num_res_blocks=num_res_blocks,
        middle_channels=level_channels[-1], skip_channels=skip_channels, skip_ds=skip_ds, **fields,
    )


def build_input_blocks(
    in_channels: int,
    base_channels: int,
    channel_mult: Sequence[int],
    num_res_blocks: int,
    attention_ds: Sequence[int],
    make_sequential: Callable[..., nn.Sequential],
    make_resblock: Callable[[int, int, bool], nn.Module],
    make_attention: Callable[[int], nn.Module],
) -> nn.ModuleList:
    """ADM encoder half, one block per skip of `skip_layout` (official PDAE code, model/unet.py; Diff-AE
    model/unet.py with `resblock_updown=True`): the input Conv3x3, then a ResBlock (+ attention where its
    ds is in `attention_ds`) or, where ds doubles, a down-sampling ResBlock; levels of
    base_channels * channel_mult channels. Keys: `{i}.0` the conv or ResBlock, `{i}.1` the attention.

    :param make_sequential: the container (`EmbedSequential`, or `nn.Sequential` without time input).
    :param make_resblock: (C_in, C_out, down) -> ResBlock.
    :param make_attention: C -> attention block.
    """
    channels, ds = skip_layout([base_channels * m for m in channel_mult], num_res_blocks)
    blocks = nn.ModuleList([make_sequential(nn.Conv2d(in_channels, channels[0], 3, padding=1))])
    for c_in, c_out, ds_in, ds_out in zip(channels, channels[1:], ds, ds[1:]):
        down = ds_out != ds_in
        layers = [make_resblock(c_in, c_out, down)]
        if not down and ds_out in attention_ds:
            layers.append(make_attention(c_out))
        blocks.append(make_sequential(*layers))
    return blocks


def build_output_blocks(
    layout: FeatureLayout, block: type[ResBlock], dropout: float, attention: type[AttentionBlock] = AttentionBlock
) -> nn.ModuleList:
    """ADM decoder blocks following `layout.output_block_specs()`, with `block` as the ResBlock class and
    `attention` as the attention class (Diff-AE's differ in their GroupNorm rule).

    Used for the prior's `output_blocks` (ResBlock) and PDAE's `shift_output_blocks` (ResBlockShift);
    keys are `{i}.0` ResBlock, `{i}.1` attention (if any), then the up-sampling ResBlock.
    """
    blocks = nn.ModuleList()
    for spec in layout.output_block_specs():
        layers: list[nn.Module] = [block(spec.in_channels, layout.emb_dim, dropout, spec.out_channels)]
        if spec.attention:
            layers.append(
                attention(
                    spec.out_channels, layout.num_heads, layout.head_channels, layout.new_attention_order
                )
            )
        if spec.up:
            layers.append(block(spec.out_channels, layout.emb_dim, dropout, up=True))
        blocks.append(EmbedSequential(*layers))
    return blocks
