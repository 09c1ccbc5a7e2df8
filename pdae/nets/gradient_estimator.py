"""PDAE's gradient estimator G_psi(x_t, z, t) (Zhang, Zhao & Lin, NeurIPS 2022, Sec. 3.3, Eq. 9).

A new middle block + decoder + output layer, fed by the skip features and time embedding of a frozen
pre-trained DPM (any `FrozenPrior`) and conditioned on the semantic code z through a double AdaGN
(paper Eq. 9; docs/protocol.md §2.3). Parameter names equal the official `ShiftUNet`'s new parts (`label_emb`,
`shift_middle_block`, `shift_output_blocks`, `shift_out`); the prior is held, not copied.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import nn

from pdae.nets.configurable import register_to_config
from pdae.nets.layers import AttentionBlock, EmbedSequential, ResBlock, normalization, zero_module
from pdae.nets.prior import FrozenPrior, PriorFeatures
from pdae.nets.unet import build_output_blocks

__all__ = ["GradientEstimator", "ResBlockShift", "NEW_PART_PREFIXES"]

NEW_PART_PREFIXES = ("label_emb.", "shift_middle_block.", "shift_output_blocks.", "shift_out.")


class ResBlockShift(ResBlock):
    """ResBlock with a second, z-driven scale-shift after the time AdaGN (paper Eq. 9; official PDAE code,
    model/module.py `ResBlockShift`).

    h = (1 + z_s) * (GN(h) * (1 + t_s) + t_b) + z_b, with [t_s, t_b] = emb_layers(emb) and
    [z_s, z_b] = emb_z_layers(emb_z) = Linear(SiLU(emb_z)) (E -> 2 C_out). The paper writes
    z_s (t_s GN(h) + t_b) + z_b; the official code uses the (1 + .) parameterisation, kept here.
    """

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
        self.emb_z_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * self.out_channels))

    def modulate(
        self, h: torch.Tensor, emb: torch.Tensor, emb_z: torch.Tensor | None
    ) -> torch.Tensor:
        """Double AdaGN. h: [N, C_out, H, W], emb, emb_z: [N, E]."""
        if emb_z is None:
            raise ValueError("ResBlockShift: needs the embedded condition emb_z")
        h = super().modulate(h, emb, None)
        z_scale, z_shift = self.emb_z_layers(emb_z)[..., None, None].chunk(2, dim=1)
        return (1.0 + z_scale) * h + z_shift


class GradientEstimator(nn.Module):
    """G_psi(x_t, z, t) on top of a frozen prior; `forward` returns (eps_theta, G) in one pass.

    New trainable parts, built from `prior.feature_layout()` (docs/protocol.md §2.3):
      label_emb           Linear(latent_dim -> E) (z embedding), or Embedding(num_classes, E) for the
                          class-conditional variant (docs/protocol.md §5.8); E = the prior's embedding width.
      shift_middle_block  ResBlockShift, AttentionBlock, ResBlockShift.
      shift_output_blocks the prior's decoder layout with ResBlockShift.
      shift_out           GN, SiLU, zero-init Conv3x3 -> eps channels (so G == 0 at initialisation).
    Parameter counts (128 px prior, z 512): 78,522,371; 64 px prior with attention_ds (4,): 77,537,027.

    The prior is frozen here (requires_grad False) and stays in eval mode whatever `train()` is called
    with; it runs under `torch.no_grad()` and its features carry no autograd graph.

    :param prior: the pre-trained eps-network (held by reference, registered as submodule `prior`).
    :param latent_dim: dimension of z (ignored when num_classes is set).
    :param num_classes: condition on a class label instead of z.
    :param dropout: dropout in the new ResBlocks; None uses the prior's (as the official code).
    """

    #: constructor arguments that are other components of the same model folder (pdae.checkpoint.build_components)
    component_inputs = {"prior": "prior"}

    @register_to_config(ignore=("prior",))
    def __init__(
        self,
        prior: FrozenPrior,
        latent_dim: int = 512,
        num_classes: int | None = None,
        dropout: float | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(prior, FrozenPrior):
            raise TypeError(f"GradientEstimator: prior must be a FrozenPrior, got {type(prior).__name__}")
        layout = prior.feature_layout()
        dropout = layout.dropout if dropout is None else dropout
        self.config.update(dropout=dropout)  # None -> the prior's
        self.prior = prior
        self.prior.requires_grad_(False)
        self.prior.eval()

        emb_dim, ch = layout.emb_dim, layout.middle_channels
        if num_classes is None:
            self.label_emb: nn.Module = nn.Linear(latent_dim, emb_dim)
        else:
            self.label_emb = nn.Embedding(num_classes, emb_dim)
        self.shift_middle_block = EmbedSequential(
            ResBlockShift(ch, emb_dim, dropout),
            AttentionBlock(ch, layout.num_heads, layout.head_channels, layout.new_attention_order),
            ResBlockShift(ch, emb_dim, dropout),
        )
        self.shift_output_blocks = build_output_blocks(layout, ResBlockShift, dropout)
        out_ch = layout.output_block_specs()[-1].out_channels
        self.shift_out = nn.Sequential(
            normalization(out_ch),
            nn.SiLU(),
            zero_module(nn.Conv2d(out_ch, layout.eps_channels, 3, padding=1)),
        )

    def train(self, mode: bool = True) -> GradientEstimator:
        """Set the new parts' mode; the prior always stays in eval mode."""
        super().train(mode)
        self.prior.eval()
        return self

    # Frozen branch.

    def features(
        self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None
    ) -> PriorFeatures:
        """The prior's encoder-half features, without an autograd graph. x_t: [N, C, H, W], t: [N]."""
        with torch.no_grad():
            return self.prior.encode_features(x_t, t, y)

    def prior_eps(self, feats: PriorFeatures) -> torch.Tensor:
        """eps_theta(x_t, t) from features, without an autograd graph. -> [N, C, H, W]."""
        with torch.no_grad():
            return self.prior.predict_eps(feats)

    # Trainable branch.

    def shift(self, feats: PriorFeatures, z: torch.Tensor) -> torch.Tensor:
        """G(x_t, z, t) from the prior's features.

        :param feats: `features(x_t, t)`.
        :param z: [N, latent_dim] semantic codes, or [N] int64 labels for the class-conditional variant.
        :return: [N, C, H, W].
        """
        emb, emb_z = feats.emb, self.label_emb(z)  # [N, E] x2
        h = self.shift_middle_block(feats.h, emb, emb_z)
        for block, skip in zip(self.shift_output_blocks, reversed(feats.skips)):
            h = block(torch.cat([h, skip], dim=1), emb, emb_z)
        return self.shift_out(h)

    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor, z: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(eps_theta(x_t, t), G(x_t, z, t)) sharing one pass through the prior's encoder half.

        :param y: class labels of a class-conditional prior (not the label fed to G).
        """
        feats = self.features(x_t, t, y)
        return self.prior_eps(feats), self.shift(feats, z)

    # New parts only (the official ShiftUNet names).

    def new_named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """(name, parameter) of the trainable parts, official names."""
        for name, p in self.named_parameters():
            if name.startswith(NEW_PART_PREFIXES):
                yield name, p

    def new_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters (everything but the prior)."""
        return [p for _, p in self.new_named_parameters()]

    def new_state_dict(self) -> dict[str, torch.Tensor]:
        """State dict of the new parts only; keys as the official ShiftUNet's (`label_emb.*`, ...)."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(NEW_PART_PREFIXES)}

    def load_new_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> None:
        """Load the new parts. Prior keys present in `state_dict` (e.g. a whole official ShiftUNet
        `decoder` entry) are ignored; with `strict`, missing or unexpected new-part keys raise."""
        new = {k: v for k, v in state_dict.items() if k.startswith(NEW_PART_PREFIXES)}
        own = self.new_state_dict()
        missing, unexpected = sorted(set(own) - set(new)), sorted(set(new) - set(own))
        if strict and (missing or unexpected):
            raise ValueError(
                f"GradientEstimator.load_new_state_dict: missing {missing[:5]} ({len(missing)}), "
                f"unexpected {unexpected[:5]} ({len(unexpected)})"
            )
        for key in sorted(set(new) & set(own)):
            if tuple(new[key].shape) != tuple(own[key].shape):
                raise ValueError(
                    f"GradientEstimator.load_new_state_dict: {key} has shape {tuple(new[key].shape)}, "
                    f"expected {tuple(own[key].shape)}"
                )
        self.load_state_dict({k: v for k, v in new.items() if k in own}, strict=False)
