"""Metric backends: which networks give the perceptual distance of Table 1 and the FID / KID features.

A ``MetricBackend`` bundles a per-image distance on [-1, 1] images and the name of a feature
extractor registered with torch-fidelity, so FID and KID are always torch-fidelity's. The distance is
reported under the metric name ``backend.distance_name``, which says what is measured:

- ``standard``: ``distance_name`` "lpips": real LPIPS-AlexNet (``lpips`` package, v0.1, as the official
  PDAE and Diff-AE evaluations, paper §4.3 Table 1) and torch-fidelity's ``inception-v3-compat`` (the
  TF-Inception port behind published FIDs). Both weight files must be present locally; nothing is ever
  downloaded. A missing file raises ``MissingWeightsError``.
- ``domain``: ``distance_name`` "feat_dist" ("domain feature distance"): a feature network trained inside
  the workflow on the dataset's labels (``pdae.nets.classifier.FeatureNet``) gives both the FID features
  and an LPIPS-style distance between its channel-normalised stage feature maps (uniform stage weights,
  no learned linear heads; values in [0, 4]). It is NOT LPIPS and its numbers are not comparable with published ones,
  which is why it has its own metric name and every table names the backend. Works offline.

The FID features can be swapped independently of the distance (``with_fid_backend``, CLI ``--fid-backend``):

- ``pytorch-fid``: pytorch-fid's FID Inception (``eval.fid_inception``; weights
  ``pt_inception-2015-12-05-6726825d.pth`` from a local file), its resize and scaling, and its Fréchet
  distance (``eval.frechet.frechet_distance_pytorch_fid``): the FID of Diff-AE's and PDAE's published numbers.
  FID / KID records then carry the backend name "pytorch-fid"; distance records keep the metric backend's name.

Weight files are loaded with ``torch.load(..., weights_only=True)``: loading never executes code.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from eval import metrics
from eval.frechet import FRECHET_PYTORCH_FID, FRECHET_TORCH_FIDELITY  # noqa: F401 - MetricBackend.frechet values
from eval.metrics import feature_map_distance, unit_normalize  # noqa: F401 - importable here too (domain backend)

# File names of the standard weights in $TORCH_HOME/hub/checkpoints (as torchvision / torch-fidelity name them).
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
# torch-fidelity's name of the TF-compatible Inception-v3 (FID: pool3, 2048-d).
STANDARD_FEATURE_EXTRACTOR = "inception-v3-compat"
# Prefix of the torch-fidelity names under which domain feature networks are registered.
DOMAIN_EXTRACTOR_PREFIX = "pdae-domain-"
# Name of the single feature a domain extractor provides.
DOMAIN_FEATURE = "features"


class MissingWeightsError(FileNotFoundError):
    """A weight file of the standard backend is absent; the message is one line saying how to provide it."""


class WeightsFileError(ValueError):
    """A weight file exists but cannot be loaded safely or does not fit the architecture."""


# FID backends (with_fid_backend, CLI --fid-backend); the Fréchet distance formulas (MetricBackend.frechet) are
# named in eval.frechet, which computes them.
FID_BACKEND_OWN, FID_BACKEND_PYTORCH_FID = "backend", "pytorch-fid"
FID_BACKENDS = (FID_BACKEND_OWN, FID_BACKEND_PYTORCH_FID)

# Metric name and axis label of each backend's per-image distance.
LPIPS_NAME, FEAT_DIST_NAME = "lpips", "feat_dist"
DISTANCE_LABELS = {LPIPS_NAME: "LPIPS-AlexNet distance", FEAT_DIST_NAME: "domain feature distance"}


@dataclass
class MetricBackend:
    """A per-image perceptual distance plus a torch-fidelity feature extractor for FID / KID.

    Attributes:
        name: "standard" or "domain"; written next to every number.
        lpips_net: callable (a, b) -> [N] (or [N, 1, 1, 1]) on [-1, 1] images: LPIPS-AlexNet for the
            standard backend, the feature-map distance for the domain backend.
        feature_extractor: name registered with torch-fidelity's ``register_feature_extractor``.
        fidelity_kwargs: extra ``torch_fidelity.calculate_metrics`` keyword arguments (weights path).
        fid_layer: feature name for FID and KID; None takes the extractor's default (Inception:
            "2048", pool3, as published FIDs). Lower Inception layers ("64", "192", "768", as
            pytorch-fid's --dims) suit sets far smaller than the feature dimension.
        distance_name: metric name of ``distance`` in the records: "lpips" (real LPIPS only) or
            "feat_dist" (domain feature distance). Consumers ask the backend instead of assuming "lpips".
        fid_name: name recorded with FID / KID numbers when the FID features are not the backend's own
            ("pytorch-fid"); None: ``name``. See ``fid_backend_name``.
        frechet: Fréchet distance formula of ``eval.fid.compute_fid``: "torch-fidelity" (eigenvalues of
            sigma_1 sigma_2) or "pytorch-fid" (``scipy.linalg.sqrtm``, eps * I retry when it is not finite).
    """

    name: str
    lpips_net: nn.Module
    feature_extractor: str
    fidelity_kwargs: dict[str, Any] = field(default_factory=dict)
    fid_layer: str | None = None
    distance_name: str = LPIPS_NAME
    fid_name: str | None = None
    frechet: str = FRECHET_TORCH_FIDELITY

    @property
    def fid_backend_name(self) -> str:
        """Name written next to FID / KID numbers and into reference statistics: ``fid_name`` or ``name``."""
        return self.fid_name or self.name

    @property
    def distance_label(self) -> str:
        """Human-readable name of ``distance`` ("LPIPS-AlexNet distance" or "domain feature distance")."""
        return DISTANCE_LABELS.get(self.distance_name, self.distance_name)

    def distance(self, a: Tensor, b: Tensor) -> Tensor:
        """Per-image distance, float64 [N], of images a, b in [-1, 1]  # [N, C, H, W]; name: ``distance_name``."""
        return metrics.lpips_distance(a, b, self.lpips_net)

    def lpips(self, a: Tensor, b: Tensor) -> Tensor:
        """Alias of ``distance`` kept for callers written before ``distance_name``; it is LPIPS only when
        ``distance_name == "lpips"``. Records must be labelled with ``distance_name``, never "lpips" blindly."""
        return self.distance(a, b)

    def feature_layer(self, metric: str = "fid") -> str:
        """torch-fidelity feature name used for ``metric`` ("fid" or "kid")."""
        from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

        if self.fid_layer is not None:
            return self.fid_layer
        return FEATURE_EXTRACTORS_REGISTRY[self.feature_extractor].get_default_feature_layer_for_metric(metric)

    def to(self, device: torch.device | str) -> MetricBackend:
        """Move the LPIPS network to ``device`` (FID extractors are placed by torch-fidelity)."""
        self.lpips_net.to(device)
        return self


# ---------------------------------------------------------------------------------------------
# Standard backend: LPIPS-AlexNet (Zhang et al. 2018) and Inception-v3 FID (Heusel et al. 2017).


def torch_checkpoint_dir() -> Path:
    """$TORCH_HOME/hub/checkpoints, where torchvision and torch-fidelity cache downloaded weights."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_weights(file_name: str, configured: str | os.PathLike | None, config_key: str, url: str,
                 alternative: str = "or use the 'domain' metric backend") -> Path:
    """Locate a standard weight file without touching the network.

    Args:
        file_name: cache file name, e.g. ALEXNET_FILE.
        configured: explicit path (config key ``config_key``), or None to use the torch cache.
        alternative: the last suggestion of the error message.
    Raises:
        MissingWeightsError: one line naming the file, where it was looked for and how to provide it.
    """
    if configured is not None:
        path = Path(configured)
        where = f"at {path} (set by {config_key})"
    else:
        path = torch_checkpoint_dir() / file_name
        where = f"in {path.parent} ($TORCH_HOME/hub/checkpoints)"
    if not path.is_file():
        raise MissingWeightsError(
            f"{file_name} not found {where}; download {url} on a machine with internet and copy it to "
            f"$TORCH_HOME/hub/checkpoints/{file_name}, or pass its path as {config_key}, {alternative}"
        )
    return path


def load_state_dict_safely(path: str | os.PathLike) -> dict[str, Tensor]:
    """Load a state dict with ``torch.load(weights_only=True)`` (no code execution); one-line errors."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure becomes one line naming the file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise WeightsFileError(
            f"cannot load {path} as a plain state dict with weights_only=True ({type(exc).__name__}: {reason})"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsFileError(f"{path} does not hold a state dict of tensors")
    return state


class RGBLPIPS(nn.Module):
    """An RGB LPIPS module applied to 1- or 3-channel images (greyscale repeated to RGB); returns [N]."""

    def __init__(self, lpips_module: nn.Module):
        super().__init__()
        self.lpips = lpips_module

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """a, b in [-1, 1]  # [N, C, H, W] -> distance  # [N]"""
        return self.lpips(match_channels(a, 3), match_channels(b, 3)).reshape(a.shape[0])


def alexnet_lpips(alexnet_weights: str | os.PathLike | None = None) -> RGBLPIPS:
    """``lpips.LPIPS(net='alex')`` (v0.1, shipped linear heads) with the AlexNet trunk loaded from a local file.

    The trunk is built randomly (``pnet_rand=True``, so torchvision downloads nothing, under a forked
    RNG so the global seed is untouched) and then overwritten by the torchvision AlexNet state dict
    ``features.*`` found by ``find_weights``; ``classifier.*`` entries are ignored.
    """
    import lpips

    path = find_weights(ALEXNET_FILE, alexnet_weights, "alexnet_weights", ALEXNET_URL)
    state = load_state_dict_safely(path)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
    # lpips splits torchvision's alexnet.features[i] into slices named slice{k}.{i}.
    trunk_keys = {}
    for key in net.net.state_dict():
        _, index, param = key.split(".")
        trunk_keys[f"features.{index}.{param}"] = key
    missing = sorted(k for k in trunk_keys if k not in state)
    if missing:
        raise WeightsFileError(f"{path} is not an AlexNet state dict (missing {', '.join(missing[:3])})")
    try:
        net.net.load_state_dict({trunk_keys[k]: state[k] for k in trunk_keys}, strict=True)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1].strip()
        raise WeightsFileError(f"{path} does not fit torchvision's AlexNet: {reason}") from None
    return RGBLPIPS(net.eval().requires_grad_(False))


def inception_weights_path(inception_weights: str | os.PathLike | None = None) -> Path:
    """Locate and vet torch-fidelity's Inception-v3 weights before torch-fidelity loads them.

    torch-fidelity loads ``feature_extractor_weights_path`` with ``weights_only=False``. A file that
    loads under ``weights_only=True`` contains only tensors and containers, so unpickling it either
    way executes nothing else; we check that here, plus the classifier shape (1008 x 2048).
    """
    path = find_weights(INCEPTION_FILE, inception_weights, "inception_weights", INCEPTION_URL)
    state = load_state_dict_safely(path)
    fc = state.get("fc.weight")
    if fc is None or tuple(fc.shape) != (1008, 2048) or "Conv2d_1a_3x3.conv.weight" not in state:
        raise WeightsFileError(f"{path} is not torch-fidelity's FeatureExtractorInceptionV3 state dict")
    return path


def standard_backend(
    alexnet_weights: str | os.PathLike | None = None,
    inception_weights: str | os.PathLike | None = None,
    *,
    fid_backend: str = FID_BACKEND_OWN,
    fid_weights: str | os.PathLike | None = None,
) -> MetricBackend:
    """LPIPS-AlexNet + torch-fidelity ``inception-v3-compat`` FID, from local weight files only.

    Args:
        alexnet_weights: path of ``alexnet-owt-7be5be79.pth``; None looks in $TORCH_HOME/hub/checkpoints.
        inception_weights: path of ``weights-inception-2015-12-05-6726825d.pth``; None likewise.
        fid_backend: "backend" (torch-fidelity's Inception) or "pytorch-fid" (``with_fid_backend``; then
            ``inception_weights`` is not needed and ``fid_weights`` names pytorch-fid's file).
    Raises:
        MissingWeightsError: before anything is loaded, if a needed file is absent.
    """
    _check_fid_backend(fid_backend)
    if fid_backend == FID_BACKEND_PYTORCH_FID:
        from eval import fid_inception

        fid_inception.find_weights_file(fid_weights)
        find_weights(ALEXNET_FILE, alexnet_weights, "alexnet_weights", ALEXNET_URL)
        base = MetricBackend(name="standard", lpips_net=alexnet_lpips(alexnet_weights),
                             feature_extractor=STANDARD_FEATURE_EXTRACTOR, distance_name=LPIPS_NAME)
        return with_fid_backend(base, fid_backend, fid_weights)
    find_weights(ALEXNET_FILE, alexnet_weights, "alexnet_weights", ALEXNET_URL)
    find_weights(INCEPTION_FILE, inception_weights, "inception_weights", INCEPTION_URL)
    lpips_net = alexnet_lpips(alexnet_weights)
    # Always pass the path explicitly: torch-fidelity then never calls load_state_dict_from_url.
    weights = inception_weights_path(inception_weights)
    return MetricBackend(
        name="standard",
        lpips_net=lpips_net,
        feature_extractor=STANDARD_FEATURE_EXTRACTOR,
        fidelity_kwargs={"feature_extractor_weights_path": str(weights)},
        distance_name=LPIPS_NAME,
    )


# ---------------------------------------------------------------------------------------------
# FID backends: the FID features of a metric backend replaced by pytorch-fid's.


def _check_fid_backend(fid_backend: str) -> None:
    if fid_backend not in FID_BACKENDS:
        raise ValueError(f"unknown FID backend {fid_backend!r}; expected one of {', '.join(FID_BACKENDS)}")


def pytorch_fid_weights_path(fid_weights: str | os.PathLike | None = None) -> Path:
    """Locate and vet pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``: a missing file raises a one-line
    ``MissingWeightsError``, a file that is not that state dict a one-line ``WeightsFileError``."""
    from eval import fid_inception

    path = fid_inception.find_weights_file(fid_weights)
    fid_inception.load_fid_inception(path)
    return path


def with_fid_backend(backend: MetricBackend, fid_backend: str,
                     fid_weights: str | os.PathLike | None = None) -> MetricBackend:
    """``backend`` with its FID / KID features taken from ``fid_backend``; the distance is unchanged.

    Args:
        fid_backend: "backend" (return ``backend`` as it is) or "pytorch-fid": pytorch-fid's FID Inception
            (``eval.fid_inception``: its weights, its resize and scaling, pool3 2048-d features) and its
            Fréchet distance; FID / KID records and reference statistics then say "pytorch-fid".
        fid_weights: path of ``pt_inception-2015-12-05-6726825d.pth``; None looks in $TORCH_HOME/hub/checkpoints.
    Raises:
        MissingWeightsError / WeightsFileError: one line naming the file.
    """
    _check_fid_backend(fid_backend)
    if fid_backend == FID_BACKEND_OWN:
        return backend
    from eval import fid_inception

    path = pytorch_fid_weights_path(fid_weights)
    return dataclasses.replace(
        backend,
        feature_extractor=fid_inception.register_extractor(),
        fidelity_kwargs={"feature_extractor_weights_path": str(path)},
        fid_layer=None,
        fid_name=FID_BACKEND_PYTORCH_FID,
        frechet=FRECHET_PYTORCH_FID,
    )


# ---------------------------------------------------------------------------------------------
# Domain backend: a feature network trained on the dataset's labels.


def match_channels(x: Tensor, channels: int) -> Tensor:
    """Convert images [N, C, H, W] between 1 and 3 channels: RGB -> grey by channel mean, grey -> RGB by repeat."""
    c = x.shape[1]
    if c == channels:
        return x
    if c == 3 and channels == 1:
        return x.mean(dim=1, keepdim=True)
    if c == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1)
    raise ValueError(f"cannot convert {c}-channel images to the {channels} channels the feature network expects")


class FeatureMapLPIPS(nn.Module):
    """LPIPS-style distance on the stage feature maps of a domain feature network (``feature_map_distance``)."""

    def __init__(self, feature_net: nn.Module, in_channels: int):
        super().__init__()
        self.feature_net = feature_net
        self.in_channels = in_channels

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """a, b in [-1, 1]  # [N, C, H, W] -> distance float64  # [N]"""
        a, b = match_channels(a, self.in_channels), match_channels(b, self.in_channels)
        return feature_map_distance(self.feature_net.feature_maps(a), self.feature_net.feature_maps(b))


def module_fingerprint(module: nn.Module) -> str:
    """First 16 hex digits of a SHA-256 over the class name and every state-dict entry (name, dtype, shape, bytes)."""
    h = hashlib.sha256(type(module).__qualname__.encode())
    for key, value in module.state_dict().items():
        t = value.detach().cpu().contiguous().reshape(-1)
        h.update(f"{key}|{t.dtype}|{tuple(value.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def register_domain_extractor(feature_net: nn.Module, in_channels: int, image_size: int) -> str:
    """Register ``feature_net.features`` with torch-fidelity and return the extractor name.

    The name is ``pdae-domain-<fingerprint>``, so one set of weights maps to one name and reference
    statistics record which network made them. Registering the same weights again reuses the
    name. The registry keeps the network alive for the rest of the process.
    """
    import torch_fidelity
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    name = DOMAIN_EXTRACTOR_PREFIX + module_fingerprint(feature_net)
    if name in FEATURE_EXTRACTORS_REGISTRY:
        return name
    source = copy.deepcopy(feature_net).cpu().eval().requires_grad_(False)

    class DomainFeatureExtractor(FeatureExtractorBase):
        """torch-fidelity extractor: uint8 [B, 3, H, W] -> FeatureNet.features on [-1, 1], float64 [B, D]."""

        def __init__(self, name: str, features_list: list[str], **kwargs: Any):
            super().__init__(name, features_list)
            # A private copy: torch-fidelity moves the extractor to the GPU in place.
            self.net = copy.deepcopy(source)

        @staticmethod
        def get_provided_features_list() -> tuple[str, ...]:
            return (DOMAIN_FEATURE,)

        @staticmethod
        def get_default_feature_layer_for_metric(metric: str) -> str:
            if metric not in ("fid", "kid", "prc"):
                raise ValueError(f"the domain feature extractor supports fid, kid and prc, not {metric}")
            return DOMAIN_FEATURE

        @staticmethod
        def can_be_compiled() -> bool:
            return False

        @staticmethod
        def get_dummy_input_for_compile() -> Tensor:
            return torch.zeros(1, 3, image_size, image_size, dtype=torch.uint8)

        def forward(self, x: Tensor) -> tuple[Tensor, ...]:
            if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
                raise ValueError(f"expected uint8 images [B, 3, H, W], got {x.dtype} {tuple(x.shape)}")
            if tuple(x.shape[2:]) != (image_size, image_size):
                raise ValueError(
                    f"the domain feature network takes {image_size}x{image_size} images, got "
                    f"{x.shape[2]}x{x.shape[3]}"
                )
            images = match_channels(x.float() / 127.5 - 1.0, in_channels)
            features = self.net.features(images).double()
            return tuple(features for _ in self.features_list)

    DomainFeatureExtractor.__name__ = DomainFeatureExtractor.__qualname__ = f"DomainFeatureExtractor_{name[-16:]}"
    torch_fidelity.register_feature_extractor(name, DomainFeatureExtractor)
    return name


def _required_int(feature_net: nn.Module, attribute: str, given: int | None) -> int:
    """An explicit value, else the network's attribute; a one-line error if neither exists."""
    if given is not None:
        return int(given)
    if not hasattr(feature_net, attribute):
        raise ValueError(f"{type(feature_net).__name__} has no attribute '{attribute}'; pass {attribute}=...")
    return int(getattr(feature_net, attribute))


def domain_backend(
    feature_net: nn.Module, *, in_channels: int | None = None, image_size: int | None = None
) -> MetricBackend:
    """Backend built on a trained domain feature network (``pdae.nets.classifier.FeatureNet`` interface);
    its distance is reported as "feat_dist" (domain feature distance), not "lpips".

    Args:
        feature_net: module with ``features(x) -> [N, D]`` and ``feature_maps(x) -> list[[N, C_s, H_s, W_s]]``
            for x in [-1, 1]  # [N, in_channels, image_size, image_size]. Loading it from a model
            folder is the caller's job (pdae.checkpoint). It is copied and put in eval mode.
        in_channels, image_size: default to the network's attributes of the same names.
    """
    in_channels = _required_int(feature_net, "in_channels", in_channels)
    image_size = _required_int(feature_net, "image_size", image_size)
    for method in ("features", "feature_maps"):
        if not hasattr(feature_net, method):
            raise ValueError(f"{type(feature_net).__name__} lacks the method {method}(x) a domain backend needs")
    net = copy.deepcopy(feature_net).eval().requires_grad_(False)
    return MetricBackend(
        name="domain",
        lpips_net=FeatureMapLPIPS(net, in_channels),
        feature_extractor=register_domain_extractor(net, in_channels, image_size),
        distance_name=FEAT_DIST_NAME,
    )
