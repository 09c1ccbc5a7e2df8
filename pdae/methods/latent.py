"""The latent DPM p(z) on normalised semantic latents, for unconditional and few-shot sampling.

docs/protocol.md §1.8: z from the frozen EMA encoder, normalised per dimension with dataset mean/std;
constant beta = 0.008, T = 1000, t uniform, L1 loss on eps; the eps-network is the MLP of §2.4.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pdae.diffusion.gaussian import q_sample
from pdae.diffusion.schedule import Schedule
from pdae.methods.base import Method, per_sample_mean
from pdae.nets.configurable import register_to_config


class LatentStats(nn.Module):
    """Per-dimension mean and std of the training latents; z_n = (z - mean) / std."""

    @register_to_config
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def set(self, z: Tensor) -> None:  # z: [N, D]
        self.mean.copy_(z.mean(0))
        self.std.copy_(z.std(0).clamp_min(1e-8))

    def normalize(self, z: Tensor) -> Tensor:
        return (z - self.mean) / self.std

    def denormalize(self, z_n: Tensor) -> Tensor:
        return z_n * self.std + self.mean


class LatentDPM(Method):
    name = "latent"
    input_kind = "latents"
    is_diffusion = True

    def __init__(self, net: nn.Module, schedule: Schedule, latent_dim: int, clip_latent: bool = False) -> None:
        super().__init__()
        self.net = net
        self.schedule = schedule
        self.stats = LatentStats(latent_dim)
        # PDAE's HEAD clamps z_T and the predicted z_0 to [-1, 1]; Diff-AE does not (docs/protocol.md §7.4).
        self.method_kwargs = {"clip_latent": clip_latent}

    def loss_from(self, x: Tensor, y: Tensor, draws: dict[str, Tensor]) -> Tensor:
        t, noise = draws["t"], draws["noise"]
        eps = self.net(q_sample(self.schedule, x, t, noise), t)
        return per_sample_mean((noise - eps).abs().float())

    @property
    def latent_dim(self) -> int:
        """D of the latents it models (its dataset statistics)."""
        return int(self.stats.mean.shape[0])

    def latent_statistics(self) -> tuple[Tensor, Tensor]:
        """(mean, std) [D] of the training latents, fp32 on the CPU (copies): z_n = (z - mean) / std."""
        return self.stats.mean.detach().float().cpu().clone(), self.stats.std.detach().float().cpu().clone()

    def denormalize(self, z_n: Tensor) -> Tensor:
        """Raw latents z = z_n * std + mean for samples z_n of this DPM (which models normalised latents)."""
        return self.stats.denormalize(z_n)

    @classmethod
    def from_components(cls, parts, schedule, options):
        method = cls(parts["net"], schedule, int(parts["net"].config["latent_dim"]), **options)
        if "stats" in parts:  # a fresh one has none yet: training sets them from the encoder's latents
            method.stats.load_state_dict(parts["stats"].state_dict())
        return method

    def components(self) -> dict[str, nn.Module]:
        return {"net": self.net, "stats": self.stats}

    def denoiser(self, cond: Tensor | None = None):
        return (lambda z_t, t: self.net(z_t, t)), None


class LatentClassifier(Method):
    """A linear head on normalised z (docs/protocol.md §2.5): BCE on binary attributes or CE on class labels."""

    name = "classifier"
    input_kind = "latents"

    def __init__(self, head: nn.Module, latent_dim: int, targets: str = "labels") -> None:
        super().__init__()
        if targets not in ("labels", "attributes"):
            raise ValueError(f"method.targets: expected labels or attributes, got {targets!r}")
        self.head = head
        self.stats = LatentStats(latent_dim)
        self.method_kwargs = {"targets": targets}

    @property
    def latent_dim(self) -> int:
        """D of the latents it classifies (its dataset statistics)."""
        return int(self.stats.mean.shape[0])

    def loss_from(self, x: Tensor, y: Tensor, draws: dict[str, Tensor]) -> Tensor:
        logits = self.head(x)
        if self.method_kwargs["targets"] == "attributes":
            bce = nn.functional.binary_cross_entropy_with_logits(logits.float(), y.float(), reduction="none")
            return bce.mean(dim=1)
        return nn.functional.cross_entropy(logits.float(), y.long(), reduction="none")

    @classmethod
    def from_components(cls, parts, schedule, options):
        method = cls(parts["head"], int(parts["head"].config["latent_dim"]), **options)
        if "stats" in parts:
            method.stats.load_state_dict(parts["stats"].state_dict())
        return method

    def components(self) -> dict[str, nn.Module]:
        return {"head": self.head, "stats": self.stats}

    def predict_logits(self, z: Tensor) -> Tensor:
        """Logits for raw (unnormalised) latents z: [N, D] -> [N, K]."""
        return self.head(self.stats.normalize(z))

    def normalize(self, z: Tensor) -> Tensor:
        """z_n = (z - mean) / std with the statistics of the latents it was trained on."""
        return self.stats.normalize(z)

    def denormalize(self, z_n: Tensor) -> Tensor:
        return self.stats.denormalize(z_n)

    def edit_direction(self, index: int) -> Tensor:
        """Unit manipulation direction w_c / ||w_c|| of output `index` in normalised-z space [D], detached
        (docs/protocol.md §2.5)."""
        return self.head.direction(index).detach()


class FeatureNetMethod(Method):
    """The domain feature network: an image classifier on the dataset's labels, used by `eval` as an
    offline FID feature extractor and LPIPS-style distance (the `domain` metric backend)."""

    name = "feature_net"

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    @property
    def num_classes(self) -> int:
        return int(self.net.config["num_classes"])

    def loss_from(self, x: Tensor, y: Tensor, draws: dict[str, Tensor]) -> Tensor:
        return nn.functional.cross_entropy(self.net(x).float(), y.long(), reduction="none")

    @classmethod
    def check_data(cls, data_info, options):
        if not data_info.get("num_classes"):
            raise ValueError("method feature_net: the dataset has no class labels")

    @classmethod
    def from_components(cls, parts, schedule, options):
        return cls(parts["net"], **options)

    def components(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def feature_network(self) -> nn.Module:
        """The classifier network whose `features` / `feature_maps` the `domain` metric backend uses."""
        return self.net

    def predict_logits(self, x: Tensor) -> Tensor:
        """Class logits of images x [N, C, H, W] in [-1, 1] -> [N, K]."""
        return self.net(x)
