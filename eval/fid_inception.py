"""pytorch-fid's FID Inception-v3, written for this project: the network behind the FIDs of Diff-AE and PDAE.

Diff-AE (``metrics.py``, ``evaluate_fid``) and PDAE (``metric/fid``) compute FID with pytorch-fid
(github.com/mseitzer/pytorch-fid, ``src/pytorch_fid/inception.py``): the TF "2015-12-05" Inception graph ported
to PyTorch, weights file ``pt_inception-2015-12-05-6726825d.pth``. Its features differ from torch-fidelity's
``inception-v3-compat`` in the preprocessing (below), so the two do not give the same FID. What pytorch-fid does
and what this module reproduces:

- input: images as pytorch-fid reads PNG files, ``ToTensor``: uint8 / 255 in [0, 1];
- resize: always ``F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)`` (PyTorch's
  bilinear, not TF 1.x's, which torch-fidelity imitates);
- scaling: ``2 x - 1`` (torch-fidelity: ``(x_uint8 - 128) / 128``);
- network: torchvision's Inception-v3 layout and key names (``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b...``),
  BatchNorm eps 1e-3, with the FID blocks: the 3x3 average pools of the A, C and first E blocks exclude the
  padding (``count_include_pad=False``, as TF), the last E block (``Mixed_7c``) max-pools its pool branch;
- features: the block outputs pytorch-fid's ``--dims`` select, spatially averaged: "64" (first max pool),
  "192" (second max pool), "768" (``Mixed_6e``), "2048" (pool3 after ``Mixed_7c``, the FID feature).

The weights come from a local file only (``load_fid_inception``), loaded with ``torch.load(weights_only=True)``;
nothing is ever downloaded. ``register_extractor`` makes the network a torch-fidelity feature extractor, so
``eval.fid`` computes its statistics exactly like the other backends' (uint8 [B, 3, H, W] batches).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

# pytorch-fid's weights file and the release it is published in (pytorch-fid, inception.py: FID_WEIGHTS_URL).
WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + WEIGHTS_FILE
INPUT_SIZE = 299
# Features provided (pytorch-fid's --dims) and the FID / KID default.
FEATURES = ("64", "192", "768", "2048")
FID_FEATURE = "2048"
# Name under which the network is registered with torch-fidelity.
EXTRACTOR_NAME = "pytorch-fid-inception-v3"
# Entries of the weights file that the feature network does not use (the 1008-way classifier).
UNUSED_KEYS = ("fc.weight", "fc.bias")
CLASSIFIER_SHAPE = (1008, 2048)


# ---------------------------------------------------------------------------------------------
# Preprocessing.


def preprocess(images: Tensor) -> Tensor:
    """uint8 [B, 3, H, W] -> float32 [B, 3, 299, 299] in [-1, 1], as pytorch-fid prepares a batch.

    ``/ 255`` (torchvision's ``ToTensor`` on a PNG), bilinear resize to 299 x 299 with
    ``align_corners=False`` (done for every size, 299 included), then ``2 x - 1``.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 images [B, 3, H, W], got {images.dtype} {tuple(images.shape)}")
    x = images.to(torch.float32).div(255)
    x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    return 2 * x - 1


# ---------------------------------------------------------------------------------------------
# Network.


class ConvBN(nn.Module):
    """Convolution without bias, BatchNorm (eps 1e-3, TF's), ReLU; children ``conv`` and ``bn``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int = 1, padding: int | tuple[int, int] = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def max_pool_3x3_2(x: Tensor) -> Tensor:
    """3x3 max pool, stride 2, no padding (after the stem convolutions and in the grid reductions)."""
    return F.max_pool2d(x, kernel_size=3, stride=2)


def tf_avg_pool(x: Tensor) -> Tensor:
    """3x3 average pool, stride 1, padding 1, averaging only over the pixels inside the image (TF's rule)."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):
    """35x35 block (``Mixed_5b/c/d``): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | TF avg pool-1x1."""

    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = ConvBN(in_channels, 64, 1)
        self.branch5x5_1 = ConvBN(in_channels, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(in_channels, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(tf_avg_pool(x)),
        ], dim=1)


class BlockB(nn.Module):
    """Grid reduction 35 -> 17 (``Mixed_6a``): 3x3/2 | 1x1-3x3-3x3/2 | max pool 3x3/2."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = ConvBN(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            max_pool_3x3_2(x),
        ], dim=1)


class BlockC(nn.Module):
    """17x17 block (``Mixed_6b..e``) with factorised 7x7 convolutions and a TF avg pool branch."""

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c = channels_7x7
        self.branch1x1 = ConvBN(in_channels, 192, 1)
        self.branch7x7_1 = ConvBN(in_channels, c, 1)
        self.branch7x7_2 = ConvBN(c, c, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(c, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(in_channels, c, 1)
        self.branch7x7dbl_2 = ConvBN(c, c, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c, c, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c, c, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            d = layer(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(tf_avg_pool(x))], dim=1)


class BlockD(nn.Module):
    """Grid reduction 17 -> 8 (``Mixed_7a``): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | max pool 3x3/2."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = ConvBN(in_channels, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(in_channels, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b7 = x
        for layer in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, max_pool_3x3_2(x)], dim=1)


class BlockE(nn.Module):
    """8x8 block (``Mixed_7b``: TF avg pool branch; ``Mixed_7c``: 3x3 max pool branch, as the FID graph)."""

    def __init__(self, in_channels: int, max_pool_branch: bool):
        super().__init__()
        self.max_pool_branch = max_pool_branch
        self.branch1x1 = ConvBN(in_channels, 320, 1)
        self.branch3x3_1 = ConvBN(in_channels, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(in_channels, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool_branch else tf_avg_pool(x)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(s), self.branch3x3_2b(s),
            self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d),
            self.branch_pool(pooled),
        ], dim=1)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's FID Inception-v3 up to pool3, with the key names of its weights file (no classifier).

    ``forward(images)`` takes uint8 [B, 3, H, W] (any H, W) and returns the requested features, float32 [B, D];
    ``features(x)`` takes the preprocessed float32 [B, 3, 299, 299] in [-1, 1].
    """

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = BlockA(192, pool_features=32)
        self.Mixed_5c = BlockA(256, pool_features=64)
        self.Mixed_5d = BlockA(288, pool_features=64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b = BlockC(768, channels_7x7=128)
        self.Mixed_6c = BlockC(768, channels_7x7=160)
        self.Mixed_6d = BlockC(768, channels_7x7=160)
        self.Mixed_6e = BlockC(768, channels_7x7=192)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b = BlockE(1280, max_pool_branch=False)
        self.Mixed_7c = BlockE(2048, max_pool_branch=True)

    def features(self, x: Tensor, names: tuple[str, ...] = (FID_FEATURE,)) -> dict[str, Tensor]:
        """Spatially averaged block outputs named in ``names`` (subset of FEATURES) of x  # [B, 3, 299, 299]."""
        unknown = [n for n in names if n not in FEATURES]
        if unknown:
            raise ValueError(f"unknown feature(s) {unknown}; this network provides {list(FEATURES)}")
        out: dict[str, Tensor] = {}
        stages = (
            ("64", (self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3, max_pool_3x3_2)),
            ("192", (self.Conv2d_3b_1x1, self.Conv2d_4a_3x3, max_pool_3x3_2)),
            ("768", (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                     self.Mixed_6d, self.Mixed_6e)),
            ("2048", (self.Mixed_7a, self.Mixed_7b, self.Mixed_7c)),
        )
        for name, layers in stages:
            for layer in layers:
                x = layer(x)
            if name in names:
                out[name] = F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)
            if len(out) == len(set(names)):
                break
        return out

    def forward(self, images: Tensor, names: tuple[str, ...] = (FID_FEATURE,)) -> dict[str, Tensor]:
        return self.features(preprocess(images), names)


# ---------------------------------------------------------------------------------------------
# Weights.


def find_weights_file(path: str | os.PathLike | None) -> Path:
    """The weights file: ``path``, or $TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth (where
    pytorch-fid's own download lands). A missing file raises a one-line ``MissingWeightsError``."""
    from eval.backends import find_weights

    return find_weights(WEIGHTS_FILE, path, "fid_weights", WEIGHTS_URL,
                        alternative="or leave the FID backend at the metric backend's own")


def load_fid_inception(path: str | os.PathLike | None = None) -> FIDInceptionV3:
    """FIDInceptionV3 with the weights of ``path`` (see ``find_weights_file``), in eval mode, no gradients.

    The file must be pytorch-fid's state dict (``torch.load(weights_only=True)``; every network entry present
    with its shape; the only extra entries allowed are the classifier ``fc.*``). Otherwise a one-line
    ``WeightsFileError`` naming the file.
    """
    from eval.backends import WeightsFileError, load_state_dict_safely

    path = find_weights_file(path)
    state = load_state_dict_safely(path)
    net = FIDInceptionV3()
    expected = net.state_dict()
    # num_batches_tracked is not used in eval mode; files written before it existed lack it.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected and k not in UNUSED_KEYS]
    what = f"{path} is not pytorch-fid's FID Inception state dict ({WEIGHTS_FILE})"
    if missing or unexpected:
        detail = f"missing {', '.join(missing[:3])}" if missing else f"unexpected {', '.join(unexpected[:3])}"
        raise WeightsFileError(f"{what}: {detail}")
    shapes = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if "fc.weight" in state and tuple(state["fc.weight"].shape) != CLASSIFIER_SHAPE:
        shapes.append("fc.weight")
    if shapes:
        raise WeightsFileError(f"{what}: wrong shape of {', '.join(shapes[:3])}")
    net.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    return net.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# torch-fidelity extractor.


def register_extractor() -> str:
    """Register the network with torch-fidelity as ``EXTRACTOR_NAME`` (once per process) and return the name.

    The extractor takes ``feature_extractor_weights_path`` (required: it never downloads) and maps uint8
    [B, 3, H, W] to the requested features, float32 [B, D], like torch-fidelity's own Inception.
    """
    import torch_fidelity
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    if EXTRACTOR_NAME in FEATURE_EXTRACTORS_REGISTRY:
        return EXTRACTOR_NAME

    class PytorchFidInceptionExtractor(FeatureExtractorBase):
        """torch-fidelity wrapper of ``FIDInceptionV3`` (weights from ``feature_extractor_weights_path``)."""

        def __init__(self, name: str, features_list: list[str], feature_extractor_weights_path: Any = None,
                     **kwargs: Any):
            super().__init__(name, features_list)
            if feature_extractor_weights_path is None:
                raise ValueError(f"the {EXTRACTOR_NAME} extractor needs feature_extractor_weights_path "
                                 f"({WEIGHTS_FILE}); it never downloads")
            self.net = load_fid_inception(feature_extractor_weights_path)

        @staticmethod
        def get_provided_features_list() -> tuple[str, ...]:
            return FEATURES

        @staticmethod
        def get_default_feature_layer_for_metric(metric: str) -> str:
            if metric not in ("fid", "kid", "prc"):
                raise ValueError(f"the {EXTRACTOR_NAME} extractor supports fid, kid and prc, not {metric}")
            return FID_FEATURE

        @staticmethod
        def can_be_compiled() -> bool:
            return False

        @staticmethod
        def get_dummy_input_for_compile() -> Tensor:
            return torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE, dtype=torch.uint8)

        def forward(self, x: Tensor) -> tuple[Tensor, ...]:
            features = self.net(x, tuple(self.features_list))
            return tuple(features[name] for name in self.features_list)

    torch_fidelity.register_feature_extractor(EXTRACTOR_NAME, PytorchFidInceptionExtractor)
    return EXTRACTOR_NAME
