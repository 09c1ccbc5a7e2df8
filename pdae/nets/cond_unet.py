"""Diff-AE (Preechakul et al., CVPR 2022): the z-conditioned U-Net and its half-U-Net semantic encoder.

`DiffAEUNet` is the official `BeatGANsAutoencModel` (docs/protocol.md §2.2, §2.3): an ADM U-Net whose every
ResBlock (encoder half, middle and decoder, including the resampling ones) is conditioned on the time
embedding and, scale-only, on the semantic code z; its `encoder` submodule is `DiffAEEncoder`
(`BeatGANsEncoderModel`: a half U-Net without time input, pooled to z).

State-dict keys equal the official ones except the time MLP: Diff-AE `time_embed.time_embed.{0,2}.*`
is our `time_embed.{0,2}.*` (`diffae_state_dict_to_ours`). Parameter counts at the FFHQ128 config:
128,545,155 in all, 24,673,536 in the encoder (608 keys).

Notation: emb -> time embedding [N, E]; z -> semantic code [N, latent_dim] (passed to the blocks as
`emb_z`); `attention_resolutions` are feature-map sizes (Diff-AE), not downsample factors (PDAE).
"""

from __future__ import annotations

from typing import ClassVar

from collections.abc import Callable, Mapping, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from pdae.nets.configurable import register_to_config
from pdae.nets.latent_mlp import DIFFAE_LATENT_PREFIX
from pdae.nets.prior import FeatureLayout
from pdae.nets.layers import (
    AttentionBlock,
    EmbedSequential,
    ResBlock,
    diffae_normalization,
    timestep_embedding,
    zero_module,
)
from pdae.nets.unet import adm_layout, adm_levels, attention_factors, build_input_blocks, build_output_blocks

__all__ = [
    "CondResBlock",
    "DiffAEEncoder",
    "DiffAEUNet",
    "EncoderResBlock",
    "diffae_state_dict_to_ours",
]


class DiffAEAttentionBlock(AttentionBlock):
    """`AttentionBlock` with Diff-AE's GroupNorm(min(32, C), C)."""

    make_norm = staticmethod(diffae_normalization)


def _diffae_attention(num_heads: int, head_channels: int, new_attention_order: bool) -> Callable[[int], nn.Module]:
    """C -> Diff-AE attention block (GroupNorm(min(32, C), C)) with these heads."""
    return partial(
        DiffAEAttentionBlock, num_heads=num_heads, num_head_channels=head_channels,
        use_new_attention_order=new_attention_order,
    )


# Diff-AE ResBlock with two conditions (official `ResBlock` with `two_cond=True`, `apply_conditions`).
class CondResBlock(ResBlock):
    """ADM ResBlock whose AdaGN is also scaled by z (official Diff-AE code, model/blocks.py `apply_conditions`):

    h = (GN(h) * (1 + t_s) + t_b) * (1 + z_s),  [t_s, t_b] = emb_layers(emb),
    z_s = cond_emb_layers(z) = Linear(SiLU(z)) -> C_out   (scale only, no z shift).

    :param cond_channels: width of z (Diff-AE: `resnet_cond_channels or embed_channels`).
    Other parameters as `ResBlock`; normalised with Diff-AE's GroupNorm(min(32, C), C).
    """

    make_norm = staticmethod(diffae_normalization)

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float = 0.0,
        out_channels: int | None = None,
        up: bool = False,
        down: bool = False,
        *,
        cond_channels: int,
    ) -> None:
        super().__init__(channels, emb_channels, dropout, out_channels, up, down)
        self.cond_emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(cond_channels, self.out_channels))

    def modulate(
        self, h: torch.Tensor, emb: torch.Tensor, emb_z: torch.Tensor | None
    ) -> torch.Tensor:
        """h: [N, C_out, H, W], emb: [N, E], emb_z = z: [N, cond_channels] -> [N, C_out, H, W]."""
        if emb_z is None:
            raise ValueError("CondResBlock: the Diff-AE decoder needs the semantic code z")
        z_scale = self.cond_emb_layers(emb_z)[..., None, None]  # [N, C_out, 1, 1]
        return super().modulate(h, emb, None) * (1.0 + z_scale)


# Diff-AE encoder ResBlock (official `ResBlock` with `use_condition=False`: no emb_layers, no out_layers).
class EncoderResBlock(nn.Module):
    """h = skip_connection(x) + Conv3x3(SiLU(GN(x))); with `down`, 2x2 average pooling of both the
    residual branch (between SiLU and the conv) and x (official Diff-AE code, model/blocks.py `ResBlock`).

    :param channels: input channels C_in.
    :param out_channels: output channels C_out (default C_in; a 1x1 conv skip when they differ).
    :param down: downsample x2.
    """

    def __init__(self, channels: int, out_channels: int | None = None, down: bool = False) -> None:
        super().__init__()
        self.out_channels = out_channels or channels
        self.down = down
        self.in_layers = nn.Sequential(
            diffae_normalization(channels),
            nn.SiLU(),
            nn.Conv2d(channels, self.out_channels, 3, padding=1),
        )
        if self.out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, C_in, H, W] -> [N, C_out, H', W'] (H' = H/2 with `down`, else H)."""
        if self.down:
            h = self.in_layers[-1](F.avg_pool2d(self.in_layers[:-1](x), kernel_size=2))
            x = F.avg_pool2d(x, kernel_size=2)
        else:
            h = self.in_layers(x)
        return self.skip_connection(x) + h


def _check_image(x: torch.Tensor, channels: int, image_size: int, where: str) -> None:
    expected = (channels, image_size, image_size)
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
        raise ValueError(f"{where}: expected [N, {', '.join(map(str, expected))}], got {tuple(x.shape)}")


# Diff-AE semantic encoder (official `BeatGANsEncoderModel`, pool 'adaptivenonzero', no time condition).
class DiffAEEncoder(nn.Module):
    """z = Enc(x0): half U-Net without time input, then GN, SiLU, global average pool, 1x1 conv -> z
    (official Diff-AE code, model/unet.py `BeatGANsEncoderModel`). Deterministic, no output normalisation.

    Presets:
      FFHQ128 (Diff-AE `ffhq128_autoenc_base`): base 128, channel_mult (1,1,2,3,4,4), 2 res blocks,
        attention at 16x16, latent 512 -> 24,673,536 parameters.
      64 px (Diff-AE `ffhq64_autoenc`): base 64, channel_mult (1,2,4,8,8), attention at 16x16.

    :param image_size: input height = width.
    :param in_channels: image channels.
    :param base_channels: channels of the first level.
    :param channel_mult: per-level multiplier; one x2 downsampling between levels.
    :param num_res_blocks: ResBlocks per level.
    :param attention_resolutions: feature-map sizes with attention after each ResBlock.
    :param num_heads: attention heads (when head_channels == -1).
    :param head_channels: fixed channels per head, or -1.
    :param new_attention_order: split q/k/v before heads.
    :param latent_dim: width of z.
    """

    @register_to_config
    def __init__(
        self,
        image_size: int,
        in_channels: int = 3,
        base_channels: int = 128,
        channel_mult: Sequence[int] = (1, 1, 2, 3, 4, 4),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (16,),
        num_heads: int = 1,
        head_channels: int = -1,
        new_attention_order: bool = False,
        latent_dim: int = 512,
    ) -> None:
        super().__init__()
        channel_mult = adm_levels(channel_mult, num_res_blocks, "DiffAEEncoder")
        attention_resolutions = tuple(int(r) for r in attention_resolutions)
        attention_ds = attention_factors(
            attention_resolutions, len(channel_mult), "DiffAEEncoder", "attention_resolutions", image_size
        )
        self.config.update(channel_mult=list(channel_mult), attention_resolutions=list(attention_resolutions))
        self.image_size = image_size
        self.in_channels = in_channels
        attention = _diffae_attention(num_heads, head_channels, new_attention_order)
        self.input_blocks = build_input_blocks(
            in_channels, base_channels, channel_mult, num_res_blocks, attention_ds,
            nn.Sequential, lambda c_in, c_out, down: EncoderResBlock(c_in, c_out, down=down), attention,
        )
        ch = base_channels * channel_mult[-1]
        self.middle_block = nn.Sequential(EncoderResBlock(ch), attention(ch), EncoderResBlock(ch))
        self.out = nn.Sequential(
            diffae_normalization(ch),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d((1, 1)),
            nn.Conv2d(ch, latent_dim, 1),
            nn.Flatten(),
        )

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """x0: [N, C, H, W] clean image in [-1, 1] -> z: [N, latent_dim]."""
        _check_image(x0, self.in_channels, self.image_size, "DiffAEEncoder")
        h = x0
        for block in self.input_blocks:
            h = block(h)
        return self.out(self.middle_block(h))


def _checked_levels(
    image_size: int,
    channel_mult: Sequence[int],
    num_res_blocks: int,
    attention_resolutions: Sequence[int],
    enc_channel_mult: Sequence[int],
    enc_attention_resolutions: Sequence[int],
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """`DiffAEUNet`'s levels checked (one-line ValueError naming its argument) -> (channel_mult,
    attention_resolutions as ints, the U-Net's attention downsample factors); the encoder's attention
    resolutions are checked here too, named by this network's key."""
    channel_mult = adm_levels(channel_mult, num_res_blocks, "DiffAEUNet")
    attention_resolutions = tuple(int(r) for r in attention_resolutions)
    attention_ds = attention_factors(
        attention_resolutions, len(channel_mult), "DiffAEUNet", "attention_resolutions", image_size
    )
    attention_factors(  # the encoder's, named by this network's key
        enc_attention_resolutions, len(enc_channel_mult), "DiffAEUNet", "enc_attention_resolutions", image_size
    )
    return channel_mult, attention_resolutions, attention_ds


# Diff-AE autoencoder (official `BeatGANsAutoencModel`, `resnet_two_cond=True`, `resblock_updown=True`).
class DiffAEUNet(nn.Module):
    """eps_theta(x_t, t, z) with z = encoder(x0) (official Diff-AE code, model/unet_autoenc.py).

    Time: sinusoidal(base_channels) -> Linear(base, E) -> SiLU -> Linear(E, E). Every ResBlock is a
    `CondResBlock`; z enters raw (`style` is the identity in Diff-AE) through each block's
    `cond_emb_layers`. Layout as ADM: input conv; per level ResBlocks (+ attention) and a down
    ResBlock; middle ResBlock, attention, ResBlock; decoder with num_res_blocks + 1 ResBlocks per level
    on concat(h, skip) and up ResBlocks; out = GN, SiLU, zero-init Conv3x3.

    Presets (Diff-AE templates):
      FFHQ128/Horse128/Bedroom128: image 128, base 128, channel_mult (1,1,2,3,4), attention (16,),
        enc_channel_mult (1,1,2,3,4,4), embed 512, latent 512, dropout 0.1
        -> 128,545,155 parameters (encoder 24,673,536).
      64 px (`ffhq64_autoenc`, CelebA64): base 64, channel_mult (1,2,4,8), enc_channel_mult (1,2,4,8,8).

    :param image_size: input height = width.
    :param in_channels: image channels (= eps channels).
    :param base_channels: channels of the first level; also the sinusoidal embedding width.
    :param channel_mult: decoder U-Net per-level multipliers.
    :param num_res_blocks: ResBlocks per level (decoder side: one more).
    :param attention_resolutions: feature-map sizes with attention in the U-Net.
    :param num_heads: attention heads (U-Net and encoder).
    :param dropout: dropout in the U-Net's ResBlocks (the encoder's blocks have none).
    :param latent_dim: width of z.
    :param enc_channel_mult: encoder per-level multipliers.
    :param enc_attention_resolutions: feature-map sizes with attention in the encoder.
    :param embed_channels: time-embedding width E (Diff-AE: 512 in every template).
    :param head_channels: fixed channels per head, or -1 to use num_heads.
    :param new_attention_order: split q/k/v before heads.
    :param enc_num_res_blocks: ResBlocks per level in the encoder.
    """

    #: which constructor arguments set the depth, and how it must fit data.image_size (checked from the
    #: config before anything is built, pdae.config.check_net_depths): "levels" = one entry per resolution,
    #: "stride2_to_4x4" = one stride-2 conv per entry down to a 4x4 map
    SIZE_RULES: ClassVar[dict[str, str]] = {"channel_mult": "levels", "enc_channel_mult": "levels"}

    @register_to_config
    def __init__(
        self,
        image_size: int,
        in_channels: int = 3,
        base_channels: int = 128,
        channel_mult: Sequence[int] = (1, 1, 2, 3, 4),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (16,),
        num_heads: int = 1,
        dropout: float = 0.1,
        latent_dim: int = 512,
        enc_channel_mult: Sequence[int] = (1, 1, 2, 3, 4, 4),
        enc_attention_resolutions: Sequence[int] = (16,),
        embed_channels: int = 512,
        head_channels: int = -1,
        new_attention_order: bool = False,
        enc_num_res_blocks: int = 2,
    ) -> None:
        super().__init__()
        channel_mult, attention_resolutions, attention_ds = _checked_levels(
            image_size, channel_mult, num_res_blocks, attention_resolutions, enc_channel_mult,
            enc_attention_resolutions,
        )
        self.config.update(  # as ints
            channel_mult=list(channel_mult), attention_resolutions=list(attention_resolutions),
            enc_channel_mult=[int(m) for m in enc_channel_mult],
            enc_attention_resolutions=[int(r) for r in enc_attention_resolutions],
        )
        self.image_size = image_size
        self.in_channels = in_channels
        self.base_channels = base_channels
        self.latent_dim = latent_dim
        block = partial(CondResBlock, cond_channels=latent_dim)
        attention = _diffae_attention(num_heads, head_channels, new_attention_order)

        # Semantic encoder.
        self.encoder = DiffAEEncoder(
            image_size,
            in_channels,
            base_channels,
            enc_channel_mult,
            enc_num_res_blocks,
            enc_attention_resolutions,
            num_heads,
            head_channels,
            new_attention_order,
            latent_dim,
        )

        # Time embedding.
        self.time_embed = nn.Sequential(
            nn.Linear(base_channels, embed_channels), nn.SiLU(), nn.Linear(embed_channels, embed_channels)
        )

        # Encoder half, middle block, decoder half: ADM's layout.
        layout = adm_layout(
            in_channels=in_channels, out_channels=in_channels, base_channels=base_channels,
            channel_mult=channel_mult, num_res_blocks=num_res_blocks, attention_ds=attention_ds,
            num_heads=num_heads, head_channels=head_channels, new_attention_order=new_attention_order,
            dropout=dropout, emb_dim=embed_channels,
        )
        self._build_unet(layout, block, attention)

    def _build_unet(
        self, layout: FeatureLayout, block: Callable[..., nn.Module], attention: Callable[[int], nn.Module]
    ) -> None:
        """The z-conditioned U-Net of `layout` (`block`: CondResBlock; `attention`: C -> attention block), in
        this order (parameter initialisation draws from the global RNG): `input_blocks`, `middle_block`,
        `output_blocks`, `out` (GN, SiLU, zero-init Conv3x3)."""
        emb_dim, dropout = layout.emb_dim, layout.dropout
        self.input_blocks = build_input_blocks(
            layout.in_channels, layout.base_channels, layout.channel_mult, layout.num_res_blocks, layout.attention_ds,
            EmbedSequential, lambda c_in, c_out, down: block(c_in, emb_dim, dropout, c_out, down=down),
            attention,
        )
        ch = layout.middle_channels
        self.middle_block = EmbedSequential(
            block(ch, emb_dim, dropout), attention(ch), block(ch, emb_dim, dropout)
        )
        self.output_blocks = build_output_blocks(layout, block, dropout, DiffAEAttentionBlock)  # type: ignore[arg-type]
        out_ch = layout.base_channels * layout.channel_mult[0]
        self.out = nn.Sequential(
            diffae_normalization(out_ch),
            nn.SiLU(),
            zero_module(nn.Conv2d(out_ch, layout.in_channels, 3, padding=1)),
        )

    def encode(self, x0: torch.Tensor) -> torch.Tensor:
        """Semantic code. x0: [N, C, H, W] in [-1, 1] -> z: [N, latent_dim]."""
        return self.encoder(x0)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """eps prediction. x_t: [N, C, H, W], t: [N] (or a scalar), z: [N, latent_dim] -> [N, C, H, W]."""
        _check_image(x_t, self.in_channels, self.image_size, "DiffAEUNet")
        if z.ndim != 2 or z.shape != (x_t.shape[0], self.latent_dim):
            raise ValueError(
                f"DiffAEUNet: z must be [{x_t.shape[0]}, {self.latent_dim}], got {tuple(z.shape)}"
            )
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        emb = self.time_embed(
            timestep_embedding(t, self.base_channels).to(self.time_embed[0].weight.dtype)
        )  # [N, E]
        skips = []
        h = x_t
        for blk in self.input_blocks:
            h = blk(h, emb, z)
            skips.append(h)
        h = self.middle_block(h, emb, z)
        for blk in self.output_blocks:
            h = blk(torch.cat([h, skips.pop()], dim=1), emb, z)
        return self.out(h)


# Official Diff-AE key prefix -> ours (docs/protocol.md §3.4); everything else is identical.
DIFFAE_KEY_RENAMES: tuple[tuple[str, str], ...] = (("time_embed.time_embed.", "time_embed."),)
_DIFFAE_MODULES = ("time_embed.", "input_blocks.", "middle_block.", "output_blocks.", "out.", "encoder.")


def diffae_state_dict_to_ours(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a Diff-AE `BeatGANsAutoencModel` state dict (the `ema_model.` prefix already stripped) to
    `DiffAEUNet` keys: `time_embed.time_embed.*` -> `time_embed.*`, all other keys unchanged.

    `latent_net.*` entries (latent DPM checkpoints) are left out: load them into `LatentMLP` with
    `pdae.nets.latent_mlp.diffae_latent_state_dict`. Any other unknown key raises ValueError.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(("ema_model.", "model.")):
            raise ValueError(
                f"diffae_state_dict_to_ours: key {key!r} still has the Lightning prefix; "
                f"keep the 'ema_model.*' entries and strip 'ema_model.' first"
            )
        if key.startswith(DIFFAE_LATENT_PREFIX):
            continue
        for old, new in DIFFAE_KEY_RENAMES:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        if not key.startswith(_DIFFAE_MODULES):
            raise ValueError(
                f"diffae_state_dict_to_ours: unexpected key {key!r} (not a Diff-AE autoencoder key)"
            )
        out[key] = value
    return out
