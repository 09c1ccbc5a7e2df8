"""The embedded datasets, built without any file: scikit-learn's UCI digits and the procedural shapes."""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pdae.data.base import ImageDataset
from pdae.data.shapes import SHAPE_ATTRIBUTES, SHAPE_LABEL_FACTORS, render_shapes, shape_attributes, shape_factors


@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.astype(np.float32), digits.target.astype(np.int64)  # [1797, 8, 8] in 0..16, [1797]


class DigitsDataset(ImageDataset):
    """The UCI handwritten digits that scikit-learn ships: 1,797 images 8x8 (values 0..16), 10 classes.

    Values map to [-1, 1] as v / 8 - 1, then resize to `image_size` with bilinear interpolation
    (antialiased when shrinking, `align_corners=False`); 3 channels repeat the grey one.
    """

    def __init__(self, spec: dict, split: str = "train") -> None:
        images, targets = _load_digits()
        x = torch.from_numpy(images).unsqueeze(1) / 8.0 - 1.0  # [1797, 1, 8, 8]
        size = spec["image_size"]
        if size != x.shape[-1]:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        self.images = x.clamp(-1.0, 1.0).repeat(1, spec["channels"], 1, 1).contiguous()  # [1797, C, H, W]
        self._select(spec, split, torch.from_numpy(targets), torch.zeros(len(targets), 0), [],
                     [str(d) for d in range(10)])

    def load_source(self, j: int) -> Tensor:
        return self.images[j]


class ShapesDataset(ImageDataset):
    """Procedural RGB images of one shape with known factors (see `shape_factors`) and attributes.

    `num_images` is the number of images generated (before the split); image i depends only on
    (seed, i), so it is the same whatever `num_images`. The label is the `label_factor` factor
    (default `shape`); `factors` holds every factor for the selected images.
    Attributes (SHAPE_ATTRIBUTES): is_square, is_circle, is_triangle, is_red, is_green, is_blue,
    is_yellow, is_large (s >= 0.185), is_left (x < 0.5), is_top (y < 0.5), dark_background
    (black or slate).
    """

    def __init__(self, spec: dict, split: str = "train") -> None:
        all_factors = shape_factors(spec["seed"], np.arange(spec["num_images"]))
        factor = spec["label_factor"]
        self._select(spec, split, torch.from_numpy(all_factors[factor]),
                     torch.from_numpy(shape_attributes(all_factors)), list(SHAPE_ATTRIBUTES),
                     list(SHAPE_LABEL_FACTORS[factor]))
        self._all_factors = all_factors
        self.factors = {k: v[self.source_indices] for k, v in all_factors.items()}

    def load_source(self, j: int) -> Tensor:
        factors = {k: v[j : j + 1] for k, v in self._all_factors.items()}
        return torch.from_numpy(render_shapes(factors, self.image_size, self.spec["antialias"])[0])
