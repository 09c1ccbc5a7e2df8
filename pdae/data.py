"""Datasets for the PDAE / Diff-AE benchmark: built-in digits and shapes, an image folder, the Diff-AE LMDBs.

Every dataset is an `ImageDataset`: item `i` is `(image, label)` with `image` a float32 tensor
`[C, H, W]` in [-1, 1] and `label` an int (-1 where the source has no labels). Binary attributes
are a float tensor `dataset.attributes` `[N, A]` (0/1) named by `dataset.attribute_names`.
One factory builds them from the `data:` section of a config (see `resolve_spec` for every key):

    build_dataset({"name": "digits", "image_size": 16}, split="train")

Splits are a fixed seeded permutation of the source (`split_indices`), so evaluation always uses
held-out images. Nothing random happens inside `__getitem__`: horizontal flips are applied by the
training loop to whole batches with its own generator (`random_hflip`), only when `dataset.hflip`.
Bad specs or files raise `DataError`, a one-line `ValueError` naming the key or the file.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".webp")
SPLITS = ("train", "test", "all")

# LMDB variants of Diff-AE [official Diff-AE code, dataset.py BaseLMDB; docs/protocol.md §4.5]:
# key = f"{resolution}-{str(index).zfill(zfill)}", plus b"length" holding the count.
LMDB_VARIANTS: dict[str, dict[str, Any]] = {
    "ffhq": {"resolution": 256, "zfill": 5, "image_size": 128, "crop": "center", "attr_offset": 0},
    "celebahq": {"resolution": 256, "zfill": 5, "image_size": 128, "crop": "center", "attr_offset": 0},
    "celeba": {"resolution": None, "zfill": 7, "image_size": 64, "crop": "d2c", "attr_offset": 1},
    "lsun": {"resolution": 256, "zfill": 7, "image_size": 128, "crop": "center", "attr_offset": 0},
}
# D2C crop of aligned CelebA (178x218): rows 57..185, columns 25..153, then resize [docs/protocol.md §4.5].
D2C_CROP_TOP, D2C_CROP_LEFT, D2C_CROP_SIZE = 57, 25, 128
# Official CelebA partition: the first 162,770 images are the training split [docs/protocol.md §4.5].
CELEBA_TRAIN_COUNT = 162_770

# Shapes: factor values. Colours are RGB in [0, 1]; the first two backgrounds are the dark ones.
SHAPE_NAMES = ("square", "circle", "triangle")
COLOUR_NAMES = ("red", "green", "blue", "yellow")
COLOURS = np.array([[0.90, 0.10, 0.10], [0.10, 0.75, 0.20], [0.15, 0.30, 0.95], [0.95, 0.85, 0.10]])
BACKGROUND_NAMES = ("black", "slate", "light_grey", "white")
BACKGROUNDS = np.array([[0.05, 0.05, 0.05], [0.20, 0.22, 0.28], [0.75, 0.75, 0.75], [0.95, 0.95, 0.95]])
SHAPE_SIZE_RANGE = (0.12, 0.25)  # half-extent s as a fraction of the image side
SHAPE_LARGE_THRESHOLD = 0.185    # is_large <=> s >= the midpoint of SHAPE_SIZE_RANGE
SHAPE_SUPERSAMPLE = 4            # sub-pixels per side when antialiasing
SHAPE_ATTRIBUTES = (
    "is_square", "is_circle", "is_triangle",       # shape factor
    "is_red", "is_green", "is_blue", "is_yellow",  # colour factor
    "is_large",                                    # half-extent s >= SHAPE_LARGE_THRESHOLD
    "is_left", "is_top",                           # centre x < 0.5, centre y < 0.5 (y grows downwards)
    "dark_background",                             # background is black or slate
)
SHAPE_LABEL_FACTORS = {"shape": SHAPE_NAMES, "colour": COLOUR_NAMES, "background": BACKGROUND_NAMES}


class DataError(ValueError):
    """A dataset spec or file is wrong; the message is one line naming the key or the file."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------------------------------
# Spec validation
# --------------------------------------------------------------------------------------------

# key -> (accepted types, default); the default _REQUIRED marks a required key.
_REQUIRED = object()
_COMMON_KEYS: dict[str, tuple[tuple[type, ...], Any]] = {
    "name": ((str,), _REQUIRED),
    "image_size": ((int,), None),         # output side in pixels; None -> per-source default
    "channels": ((int,), None),           # 1 or 3; None -> per-source default
    "seed": ((int,), 0),                  # split permutation (and shapes content)
    "test_fraction": ((float, int), 0.1), # held-out fraction of the source
    "hflip": ((bool,), False),            # training loop flips batches with `random_hflip`
    "num_images": ((int,), None),         # cap: first N of the split (shapes: number generated)
    "class_subset": ((list,), None),      # keep only these classes (indices or names)
}
_SOURCE_KEYS: dict[str, dict[str, tuple[tuple[type, ...], Any]]] = {
    "digits": {},
    "shapes": {"label_factor": ((str,), "shape"), "antialias": ((bool,), True)},
    "folder": {
        "path": ((str, os.PathLike), _REQUIRED),
        "recursive": ((bool,), False),
        "labels": ((str, os.PathLike), None),
        "convert": ((bool,), False),
        "verify": ((bool,), True),
    },
    "lmdb": {
        "path": ((str, os.PathLike), _REQUIRED),
        "variant": ((str,), _REQUIRED),
        "attributes_file": ((str, os.PathLike), None),
        "convert": ((bool,), False),
    },
}
_DEFAULT_IMAGE_SIZE = {"digits": 16, "shapes": 32}
_DEFAULT_CHANNELS = {"digits": 1, "shapes": 3, "folder": 3, "lmdb": 3}
SHAPES_DEFAULT_NUM_IMAGES = 10_000


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true/false", str: "a string", list: "a list"}


def resolve_spec(spec: dict) -> dict:
    """Validate a dataset spec and fill in defaults; return a new dict (paths as strings).

    Common keys: `name` (digits | shapes | folder | lmdb), `image_size`, `channels` (1 or 3),
    `seed` (split permutation; shapes content), `test_fraction` (held-out share, default 0.1),
    `hflip` (bool, see `random_hflip`), `num_images` (cap: the first N of the split; for `shapes`
    the number of images generated before the split, default 10,000), `class_subset` (list of
    class indices or names; labels keep their original values). Source keys: shapes
    `label_factor` (shape | colour | background), `antialias`; folder `path`, `recursive`,
    `labels` (CSV), `convert` (grey <-> RGB), `verify` (decode every file when opening);
    lmdb `path`, `variant` (ffhq | celebahq | celeba | lsun), `attributes_file`, `convert`.
    Unknown keys, wrong types and bad values raise DataError naming `data.<key>`.
    """
    if not isinstance(spec, dict):
        raise DataError(f"data: expected a mapping, got {type(spec).__name__}")
    name = spec.get("name")
    if name not in _SOURCE_KEYS:
        raise DataError(f"data.name: expected one of {sorted(_SOURCE_KEYS)}, got {name!r}")
    allowed = {**_COMMON_KEYS, **_SOURCE_KEYS[name]}
    for key in spec:
        if key not in allowed:
            raise DataError(f"data.{key}: unknown key for dataset {name!r} (allowed: {', '.join(sorted(allowed))})")
    out: dict[str, Any] = {}
    for key, (types, default) in allowed.items():
        if key not in spec or spec[key] is None:
            if default is _REQUIRED:
                raise DataError(f"data.{key}: required for dataset {name!r}")
            out[key] = default
            continue
        value = spec[key]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise DataError(f"data.{key}: expected {_TYPE_NAMES[types[0]]}, got {type(value).__name__} {value!r}")
        out[key] = os.fspath(value) if isinstance(value, os.PathLike) else value
    out["test_fraction"] = float(out["test_fraction"])
    if name == "lmdb" and out["variant"] not in LMDB_VARIANTS:
        raise DataError(f"data.variant: expected one of {sorted(LMDB_VARIANTS)}, got {out['variant']!r}")
    if out["image_size"] is None:
        if name in _DEFAULT_IMAGE_SIZE:
            out["image_size"] = _DEFAULT_IMAGE_SIZE[name]
        elif name == "lmdb":
            out["image_size"] = LMDB_VARIANTS[out["variant"]]["image_size"]
        else:
            raise DataError(f"data.image_size: required for dataset {name!r}")
    if out["channels"] is None:
        out["channels"] = _DEFAULT_CHANNELS[name]
    if out["image_size"] < 1:
        raise DataError(f"data.image_size: must be >= 1, got {out['image_size']}")
    if out["channels"] not in (1, 3):
        raise DataError(f"data.channels: must be 1 or 3, got {out['channels']}")
    if out["seed"] < 0:
        raise DataError(f"data.seed: must be >= 0, got {out['seed']}")
    if not 0.0 <= out["test_fraction"] < 1.0:
        raise DataError(f"data.test_fraction: must be in [0, 1), got {out['test_fraction']}")
    if out["num_images"] is not None and out["num_images"] < 1:
        raise DataError(f"data.num_images: must be >= 1, got {out['num_images']}")
    if out["class_subset"] is not None:
        for value in out["class_subset"]:
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise DataError(f"data.class_subset: entries must be class indices or names, got {value!r}")
    if name == "shapes":
        if out["label_factor"] not in SHAPE_LABEL_FACTORS:
            raise DataError(f"data.label_factor: expected one of {sorted(SHAPE_LABEL_FACTORS)}, "
                            f"got {out['label_factor']!r}")
        if out["channels"] != 3:
            raise DataError(f"data.channels: shapes are RGB (3 channels), got {out['channels']}")
        if out["num_images"] is None:
            out["num_images"] = SHAPES_DEFAULT_NUM_IMAGES
    if name == "lmdb":
        if out["variant"] == "celeba" and "test_fraction" in spec:
            raise DataError("data.test_fraction: not used by variant 'celeba' (official partition: "
                            f"the first {CELEBA_TRAIN_COUNT:,} images are 'train', the rest 'test')")
    return out


# --------------------------------------------------------------------------------------------
# Splits, selection, augmentation
# --------------------------------------------------------------------------------------------

def split_indices(num_source: int, split: str, test_fraction: float, seed: int) -> np.ndarray:
    """Source indices of a split, sorted: a fixed permutation seeded by `seed` (torch.randperm).

    The first `round(num_source * test_fraction)` entries of the permutation are `test`, the rest
    `train`; `all` is `arange(num_source)`. Train and test are disjoint and cover the source.
    """
    if split not in SPLITS:
        raise DataError(f"split: expected one of {list(SPLITS)}, got {split!r}")
    if split == "all":
        return np.arange(num_source, dtype=np.int64)
    perm = torch.randperm(num_source, generator=torch.Generator().manual_seed(seed)).numpy()
    num_test = int(round(num_source * test_fraction))
    chosen = perm[:num_test] if split == "test" else perm[num_test:]
    return np.sort(chosen).astype(np.int64)


def random_hflip(images: Tensor, generator: torch.Generator) -> Tensor:
    """Flip each image of a batch `[N, C, H, W]` left-right with probability 1/2.

    Draws exactly N uniforms from `generator` (on the generator's device), so a training loop
    with a seeded generator gets the same flips whatever the DataLoader workers do. This is the
    `RandomHorizontalFlip` of PDAE and Diff-AE training [docs/protocol.md §4.1], moved out of the
    dataset so that `dataset[i]` is deterministic.
    """
    flip = torch.rand(images.shape[0], generator=generator, device=generator.device) < 0.5
    flip = flip.to(images.device).view(-1, *([1] * (images.dim() - 1)))
    return torch.where(flip, images.flip(-1), images)


class ImageDataset(Dataset):
    """Base class: a fixed list of source indices with labels and attributes.

    Subclasses describe their source (labels and attributes of every source image) through
    `_select` and decode one source image in `load_source(j) -> [C, H, W]` in [-1, 1].
    Attributes after `_select`: `source_indices` `[N]`, `labels` `[N]` (long, -1 = none),
    `attributes` `[N, A]` (float 0/1), `attribute_names`, `class_names`, `num_classes`,
    `image_size`, `channels`, `hflip`, `spec` (the resolved spec), `split`.
    """

    def _select(
        self,
        spec: dict,
        split: str,
        source_labels: Tensor,              # [M] long, -1 = unlabelled
        source_attributes: Tensor,          # [M, A] float 0/1
        attribute_names: list[str],
        class_names: list[str],
        train_count: int | None = None,     # fixed partition: first `train_count` are train
    ) -> None:
        self.spec = spec
        self.split = split
        self.image_size: int = spec["image_size"]
        self.channels: int = spec["channels"]
        self.hflip: bool = spec["hflip"]
        self.class_names = list(class_names)
        self.num_classes = len(class_names)
        self.attribute_names = list(attribute_names)
        num_source = len(source_labels)
        if train_count is None:
            indices = split_indices(num_source, split, spec["test_fraction"], spec["seed"])
        elif split not in SPLITS:
            raise DataError(f"split: expected one of {list(SPLITS)}, got {split!r}")
        else:
            cut = min(train_count, num_source)
            bounds = {"train": (0, cut), "test": (cut, num_source), "all": (0, num_source)}[split]
            indices = np.arange(*bounds, dtype=np.int64)
        if spec["class_subset"] is not None:
            keep = self._class_ids(spec["class_subset"])
            labels = source_labels.numpy()[indices]
            indices = indices[np.isin(labels, keep)]
        if spec["num_images"] is not None and spec["name"] != "shapes":
            indices = indices[: spec["num_images"]]
        if len(indices) == 0:
            raise DataError(f"data: split {split!r} of dataset {spec['name']!r} selects no images "
                            f"(source has {num_source}; check test_fraction, class_subset, num_images)")
        self.source_indices = indices
        index = torch.from_numpy(indices)
        self.labels = source_labels[index].clone()
        self.attributes = source_attributes[index].clone()

    def _class_ids(self, subset: list) -> list[int]:
        if not self.class_names:
            raise DataError(f"data.class_subset: dataset {self.spec['name']!r} has no class labels")
        ids = []
        for value in subset:
            if isinstance(value, str):
                if value not in self.class_names:
                    raise DataError(f"data.class_subset: unknown class {value!r} (classes: {self.class_names})")
                ids.append(self.class_names.index(value))
            elif 0 <= value < self.num_classes:
                ids.append(value)
            else:
                raise DataError(f"data.class_subset: class index {value} outside [0, {self.num_classes})")
        return ids

    def load_source(self, j: int) -> Tensor:  # [C, H, W] in [-1, 1]
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.source_indices)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.load_source(int(self.source_indices[i])), int(self.labels[i])


# --------------------------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# shapes
# --------------------------------------------------------------------------------------------

def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _hash_uniform(seed: int, index: np.ndarray, stream: int) -> np.ndarray:
    """Uniforms in [0, 1) that depend only on (seed, index, stream): counter-based, no state."""
    index = np.asarray(index, dtype=np.uint64).reshape(-1)
    key = _splitmix64(np.full(index.shape, seed, dtype=np.uint64))
    h = _splitmix64(_splitmix64(key ^ index) ^ np.uint64(stream))
    return (h >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def shape_factors(seed: int, index: np.ndarray) -> dict[str, np.ndarray]:
    """Factors of shapes images `index` `[N]`: image i depends only on (seed, i).

    Returns `shape` (index into SHAPE_NAMES), `colour` (COLOUR_NAMES), `background`
    (BACKGROUND_NAMES), `size` (half-extent s / image side, uniform in SHAPE_SIZE_RANGE) and the
    centre `x`, `y` (fractions of the side, uniform in [s, 1 - s] so the shape is inside).
    """
    u = [_hash_uniform(seed, index, stream) for stream in range(6)]
    lo, hi = SHAPE_SIZE_RANGE
    size = lo + (hi - lo) * u[3]
    return {
        "shape": np.minimum((u[0] * len(SHAPE_NAMES)).astype(np.int64), len(SHAPE_NAMES) - 1),
        "colour": np.minimum((u[1] * len(COLOUR_NAMES)).astype(np.int64), len(COLOUR_NAMES) - 1),
        "background": np.minimum((u[2] * len(BACKGROUND_NAMES)).astype(np.int64), len(BACKGROUND_NAMES) - 1),
        "size": size,
        "x": size + (1.0 - 2.0 * size) * u[4],
        "y": size + (1.0 - 2.0 * size) * u[5],
    }


def shape_attributes(factors: dict[str, np.ndarray]) -> np.ndarray:
    """Binary attributes `[N, len(SHAPE_ATTRIBUTES)]` (0/1 float32) derived from the factors."""
    cols = [factors["shape"] == k for k in range(len(SHAPE_NAMES))]
    cols += [factors["colour"] == k for k in range(len(COLOUR_NAMES))]
    cols += [factors["size"] >= SHAPE_LARGE_THRESHOLD, factors["x"] < 0.5, factors["y"] < 0.5,
             factors["background"] < 2]
    return np.stack(cols, axis=1).astype(np.float32)


def shape_coverage(shape: int, size: float, x: float, y: float, image_size: int, antialias: bool = True) -> np.ndarray:
    """Fraction of each pixel covered by one shape, `[H, W]` float64 in [0, 1].

    With half-extent s = `size` and centre (x, y), in image-side units with y downwards: a square
    is |dx|, |dy| <= s (area 4 s^2), a circle dx^2 + dy^2 <= s^2 (area pi s^2), a triangle has its
    apex at (x, y - s) and its base on y + s from x - s to x + s (area 2 s^2). Antialiasing
    averages SHAPE_SUPERSAMPLE^2 sub-pixel samples per pixel; otherwise pixel centres are tested.
    Only the pixels of the bounding box (plus a one-pixel margin) are evaluated.
    """
    ss = SHAPE_SUPERSAMPLE if antialias else 1
    n = image_size * ss
    c0, c1 = max(int((x - size) * image_size) - 1, 0), min(int((x + size) * image_size) + 2, image_size)
    r0, r1 = max(int((y - size) * image_size) - 1, 0), min(int((y + size) * image_size) + 2, image_size)
    dx = (np.arange(c0 * ss, c1 * ss) + 0.5)[None, :] / n - x  # [1, w]  sub-pixel centres
    dy = (np.arange(r0 * ss, r1 * ss) + 0.5)[:, None] / n - y  # [h, 1]
    if shape == 0:
        inside = (np.abs(dx) <= size) & (np.abs(dy) <= size)
    elif shape == 1:
        inside = dx * dx + dy * dy <= size * size
    else:
        inside = (np.abs(dy) <= size) & (np.abs(dx) <= (dy + size) / 2.0)
    out = np.zeros((image_size, image_size))
    out[r0:r1, c0:c1] = inside.reshape(r1 - r0, ss, c1 - c0, ss).sum(axis=(1, 3)) / (ss * ss)
    return out


def render_shapes(factors: dict[str, np.ndarray], image_size: int, antialias: bool = True) -> np.ndarray:
    """RGB images `[N, 3, H, W]` float32 in [-1, 1]: background + (colour - background) * coverage."""
    out = np.empty((len(factors["shape"]), 3, image_size, image_size), dtype=np.float32)
    for i in range(len(out)):
        cover = shape_coverage(int(factors["shape"][i]), float(factors["size"][i]), float(factors["x"][i]),
                               float(factors["y"][i]), image_size, antialias)  # [H, W]
        fg, bg = COLOURS[factors["colour"][i]], BACKGROUNDS[factors["background"][i]]  # [3]
        out[i] = (bg[:, None, None] + (fg - bg)[:, None, None] * cover) * 2.0 - 1.0
    return out


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


# --------------------------------------------------------------------------------------------
# decoded images (folder, lmdb)
# --------------------------------------------------------------------------------------------

_GREY_MODES = {"1", "L"}
_COLOUR_MODES = {"RGB", "CMYK", "YCbCr"}


def _decode(source: str | Path | io.BytesIO, name: str, verify: bool) -> Image.Image:
    """Open and fully decode an image; any failure -> DataError naming `name`."""
    try:
        if verify:
            with Image.open(source) as im:
                im.verify()
            if isinstance(source, io.BytesIO):
                source.seek(0)
        with Image.open(source) as opened:
            opened.load()
            im = opened.copy()  # detached from the file, which the context closes
    except Exception as exc:  # PIL raises OSError, SyntaxError, struct.error, ... for broken files
        raise DataError(f"{name}: unreadable or truncated image ({type(exc).__name__}: {_one_line(exc)})") from None
    return im


def _to_channels(im: Image.Image, channels: int, convert: bool, name: str) -> Image.Image:
    """Return `im` in mode L (channels 1) or RGB (channels 3); grey <-> RGB only when `convert`."""
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in _GREY_MODES:
        have = 1
    elif mode in _COLOUR_MODES:
        have = 3
    elif mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        raise DataError(f"{name}: image has an alpha channel (mode {mode}), expected {channels} channel(s); "
                        "flatten it to RGB or greyscale first")
    else:
        raise DataError(f"{name}: unsupported image mode {mode} (expected 8-bit greyscale or RGB)")
    if have != channels and not convert:
        kind = "greyscale" if have == 1 else "RGB"
        raise DataError(f"{name}: {kind} image (mode {mode}) but channels={channels}; "
                        "set convert: true to convert grey <-> RGB")
    target = "L" if channels == 1 else "RGB"
    return im if im.mode == target else im.convert(target)


def _resize_center_crop(im: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size` (PIL bilinear, antialiased) then crop the centre `size x size`.

    Same arithmetic as torchvision `Resize(size)` + `CenterCrop(size)` used by Diff-AE and PDAE.
    """
    w, h = im.size
    if (w, h) == (size, size):
        return im
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.BILINEAR)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    return im.crop((left, top, left + size, top + size))


def _d2c_crop_resize(im: Image.Image, size: int, name: str) -> Image.Image:
    """D2C crop of aligned CelebA (top 57, left 25, 128x128) then resize to `size` [docs/protocol.md §4.5]."""
    w, h = im.size
    if w < D2C_CROP_LEFT + D2C_CROP_SIZE or h < D2C_CROP_TOP + D2C_CROP_SIZE:
        raise DataError(f"{name}: image {w}x{h} is too small for the D2C crop "
                        f"(needs at least {D2C_CROP_LEFT + D2C_CROP_SIZE}x{D2C_CROP_TOP + D2C_CROP_SIZE})")
    im = im.crop((D2C_CROP_LEFT, D2C_CROP_TOP, D2C_CROP_LEFT + D2C_CROP_SIZE, D2C_CROP_TOP + D2C_CROP_SIZE))
    return im if size == D2C_CROP_SIZE else im.resize((size, size), Image.BILINEAR)


def _pil_to_tensor(im: Image.Image) -> Tensor:
    """8-bit L or RGB image -> float32 `[C, H, W]` in [-1, 1] (v / 127.5 - 1)."""
    arr = np.asarray(im, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 127.5 - 1.0


# --------------------------------------------------------------------------------------------
# folder
# --------------------------------------------------------------------------------------------

def list_image_files(path: str | Path, recursive: bool = False) -> list[str]:
    """Image files under `path` (IMAGE_EXTENSIONS, case-insensitive, no hidden files) as sorted
    POSIX paths relative to `path`. Missing, non-directory or image-less folders raise DataError."""
    root = Path(path)
    if not root.exists():
        raise DataError(f"{root}: image folder does not exist")
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    candidates = root.rglob("*") if recursive else root.iterdir()
    files = sorted(
        p.relative_to(root).as_posix() for p in candidates
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        where = "the folder or its subfolders" if recursive else "the folder"
        raise DataError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) in {where}")
    return files


def _read_labels_csv(path: str, files: list[str]) -> tuple[Tensor, list[str], Tensor, list[str]]:
    """Parse a labels CSV with a `file` column, an optional `label` column and attribute columns.

    Rows must match the image files one to one (`file` relative to the folder). `label` holds
    integer class ids (>= 0, -1 = none) or class names (sorted to ids). Attribute values are
    -1/0/1 or 0/1 and map to (value > 0). Returns labels [N], class names, attributes [N, A], names.
    """
    if not Path(path).is_file():
        raise DataError(f"{path}: labels file does not exist")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: labels file is not UTF-8 text (byte {exc.start})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: not a valid CSV file ({exc})") from None
    if "file" not in columns:
        raise DataError(f"{path}: labels file needs a 'file' column (found {columns})")
    by_file: dict[str, dict[str, str]] = {}
    for line, row in enumerate(rows, start=2):
        if row["file"] in by_file:
            raise DataError(f"{path}:{line}: duplicate row for file {row['file']!r}")
        by_file[row["file"]] = row
    known = set(files)
    extra = [name for name in by_file if name not in known]
    if extra:
        raise DataError(f"{path}: row for {extra[0]!r} matches no image in the folder ({len(extra)} such rows)")
    missing = [name for name in files if name not in by_file]
    if missing:
        raise DataError(f"{path}: no row for image {missing[0]!r} ({len(missing)} images without a row)")
    ordered = [by_file[name] for name in files]
    labels = torch.full((len(files),), -1, dtype=torch.long)
    class_names: list[str] = []
    if "label" in columns:
        raw = [row["label"] for row in ordered]
        try:
            ints = [int(v) for v in raw]
        except ValueError:
            ints = None
        if ints is not None:
            if min(ints) < -1:
                raise DataError(f"{path}: label values must be >= -1 (found {min(ints)})")
            class_names = [str(k) for k in range(max(ints) + 1)]
            labels = torch.tensor(ints, dtype=torch.long)
        else:
            class_names = sorted(set(raw))
            labels = torch.tensor([class_names.index(v) for v in raw], dtype=torch.long)
    attribute_names = [c for c in columns if c not in ("file", "label")]
    values = np.zeros((len(files), len(attribute_names)), dtype=np.float32)
    for i, row in enumerate(ordered):
        for a, col in enumerate(attribute_names):
            if row[col] not in ("-1", "0", "1"):
                raise DataError(f"{path}: attribute {col!r} of {files[i]!r} must be -1, 0 or 1, got {row[col]!r}")
            values[i, a] = float(int(row[col]) > 0)
    return labels, class_names, torch.from_numpy(values), attribute_names


class FolderDataset(ImageDataset):
    """Images of a folder (sorted relative paths), resized and centre-cropped to `image_size`.

    With `verify: true` (default) every file is verified and decoded when the dataset is built,
    so broken files, alpha channels and wrong channel counts fail early with the file named.
    `files` lists the selected files (relative paths) in dataset order.
    """

    def __init__(self, spec: dict, split: str = "train") -> None:
        self.root = Path(spec["path"])
        self._want_channels, self._convert = spec["channels"], spec["convert"]
        all_files = list_image_files(self.root, spec["recursive"])
        if spec["labels"] is not None:
            labels, class_names, attributes, attribute_names = _read_labels_csv(spec["labels"], all_files)
        else:
            labels, class_names = torch.full((len(all_files),), -1, dtype=torch.long), []
            attributes, attribute_names = torch.zeros(len(all_files), 0), []
        self.all_files = all_files
        if spec["verify"]:
            for name in all_files:
                self._open(name, verify=True)
        self._select(spec, split, labels, attributes, attribute_names, class_names)
        self.files = [all_files[j] for j in self.source_indices]

    def _open(self, name: str, verify: bool = False) -> Image.Image:
        path = self.root / name
        return _to_channels(_decode(path, str(path), verify), self._want_channels, self._convert, str(path))

    def load_source(self, j: int) -> Tensor:
        return _pil_to_tensor(_resize_center_crop(self._open(self.all_files[j]), self.image_size))


# --------------------------------------------------------------------------------------------
# lmdb
# --------------------------------------------------------------------------------------------

def read_attribute_file(path: str | Path, num_images: int, index_offset: int = 0) -> tuple[Tensor, list[str]]:
    """Parse a CelebA-style attribute file into a 0/1 float tensor `[num_images, A]` and the names.

    Format (CelebAMask-HQ-attribute-anno.txt, list_attr_celeba.txt): line 1 the row count, line 2
    the A attribute names, then one row `filename v_1 .. v_A` per image with values -1/1; the value
    maps to (v > 0) [docs/protocol.md §2.5]. Row `k.jpg` describes image `int(k) - index_offset` (0 for
    CelebA-HQ `0.jpg`, 1 for CelebA `000001.jpg`). Every image needs exactly one row.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: attributes file does not exist")
    try:
        lines = [line.split() for line in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: attributes file is not UTF-8 text (byte {exc.start})") from None
    lines = [line for line in lines if line]
    if len(lines) < 2 or len(lines[0]) != 1 or not lines[0][0].isdigit():
        raise DataError(f"{path}: expected a count on line 1 and attribute names on line 2")
    count, names, rows = int(lines[0][0]), lines[1], lines[2:]
    if len(rows) != count:
        raise DataError(f"{path}: header says {count} rows, found {len(rows)}")
    values = np.zeros((num_images, len(names)), dtype=np.float32)
    seen = np.zeros(num_images, dtype=bool)
    for line, row in enumerate(rows, start=3):
        stem = Path(row[0]).stem
        if len(row) != len(names) + 1 or not stem.isdigit():
            raise DataError(f"{path}:{line}: expected 'filename' and {len(names)} values, got {len(row)} fields")
        j = int(stem) - index_offset
        if not 0 <= j < num_images:
            raise DataError(f"{path}:{line}: row {row[0]!r} names image {j}, outside the LMDB's {num_images} images")
        if seen[j]:
            raise DataError(f"{path}:{line}: duplicate row for {row[0]!r}")
        try:
            raw = [int(v) for v in row[1:]]
        except ValueError:
            raise DataError(f"{path}:{line}: attribute values must be integers (-1/0/1)") from None
        values[j] = [float(v > 0) for v in raw]
        seen[j] = True
    missing = np.flatnonzero(~seen)
    if len(missing):
        raise DataError(f"{path}: no row for image {int(missing[0])} ({len(missing)} images without a row)")
    return torch.from_numpy(values), names


_LMDB_ENVS: dict[str, tuple[int, Any]] = {}  # realpath -> (pid that opened it, lmdb.Environment)


def _lmdb_env(path: str):
    """The process-wide read-only environment of `path` (`lock=False`), opened on first use.

    LMDB allows one environment per file per process, so datasets share it. A forked process
    (DataLoader worker) closes the copy it inherited and opens its own.
    """
    import lmdb

    key = os.path.realpath(path)
    pid, env = _LMDB_ENVS.get(key, (None, None))
    if env is not None and pid == os.getpid():
        return env
    if env is not None:
        env.close()
    try:
        env = lmdb.open(path, readonly=True, lock=False, readahead=False, meminit=False,
                        max_readers=64, subdir=os.path.isdir(path))
    except lmdb.Error as exc:
        raise DataError(f"{path}: cannot open LMDB ({_one_line(exc)})") from None
    _LMDB_ENVS[key] = (os.getpid(), env)
    return env


def lmdb_length(path: str | Path) -> int:
    """The image count stored under the `length` key of a Diff-AE LMDB."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: LMDB does not exist")
    with _lmdb_env(path).begin(write=False) as txn:
        raw = txn.get(b"length")
    if raw is None:
        raise DataError(f"{path}: LMDB has no 'length' key (not a Diff-AE LMDB)")
    try:
        return int(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise DataError(f"{path}: LMDB 'length' is not a decimal count ({raw[:20]!r})") from None


def lmdb_key(resolution: int | None, index: int, zfill: int) -> bytes:
    """Diff-AE LMDB key of image `index`: f"{resolution}-{str(index).zfill(zfill)}" (resolution may be None)."""
    return f"{resolution}-{str(index).zfill(zfill)}".encode("utf-8")


class LmdbDataset(ImageDataset):
    """A Diff-AE LMDB (`variant`: ffhq, celebahq, celeba, lsun); see LMDB_VARIANTS for key formats.

    ffhq, celebahq and lsun: resize the shorter side then centre-crop; celeba: D2C crop then resize,
    and the split is the official partition (first 162,770 images `train`, the rest `test`).
    `attributes_file` (celebahq, celeba) adds the 40 CelebA attributes. The environment is opened
    read-only with `lock=False`, lazily and once per process and path (`_lmdb_env`; DataLoader
    workers open their own after fork); datasets hold only the path, so they pickle. Only the
    first selected image is decoded when building.
    """

    def __init__(self, spec: dict, split: str = "train") -> None:
        variant = LMDB_VARIANTS[spec["variant"]]
        self.path = spec["path"]
        self.resolution, self.zfill, self.crop = variant["resolution"], variant["zfill"], variant["crop"]
        self._want_channels, self._convert = spec["channels"], spec["convert"]
        num_source = lmdb_length(self.path)
        if spec["attributes_file"] is not None:
            if spec["variant"] not in ("celebahq", "celeba"):
                raise DataError(f"data.attributes_file: only for variants celebahq and celeba, not {spec['variant']!r}")
            attributes, names = read_attribute_file(spec["attributes_file"], num_source, variant["attr_offset"])
        else:
            attributes, names = torch.zeros(num_source, 0), []
        labels = torch.full((num_source,), -1, dtype=torch.long)
        train_count = CELEBA_TRAIN_COUNT if spec["variant"] == "celeba" else None
        self._select(spec, split, labels, attributes, names, [], train_count=train_count)
        self.load_source(int(self.source_indices[0]))

    def read_bytes(self, j: int) -> bytes:
        """Encoded bytes of source image `j`."""
        key = lmdb_key(self.resolution, j, self.zfill)
        with _lmdb_env(self.path).begin(write=False) as txn:
            value = txn.get(key)
        if value is None:
            raise DataError(f"{self.path}: LMDB has no key {key.decode()!r}")
        return bytes(value)

    def load_source(self, j: int) -> Tensor:
        name = f"{self.path}[{lmdb_key(self.resolution, j, self.zfill).decode()}]"
        im = _to_channels(_decode(io.BytesIO(self.read_bytes(j)), name, False), self._want_channels,
                          self._convert, name)
        if self.crop == "d2c":
            im = _d2c_crop_resize(im, self.image_size, name)
        else:
            im = _resize_center_crop(im, self.image_size)
        return _pil_to_tensor(im)


# --------------------------------------------------------------------------------------------
# factory and provenance
# --------------------------------------------------------------------------------------------

_SOURCES: dict[str, type[ImageDataset]] = {
    "digits": DigitsDataset, "shapes": ShapesDataset, "folder": FolderDataset, "lmdb": LmdbDataset,
}


def build_dataset(spec: dict, split: str = "train") -> ImageDataset:
    """Build the dataset a spec describes (`resolve_spec` lists the keys); `split` in train | test | all."""
    resolved = resolve_spec(spec)
    if split not in SPLITS:
        raise DataError(f"split: expected one of {list(SPLITS)}, got {split!r}")
    return _SOURCES[resolved["name"]](resolved, split)


def _content_size(resolved: dict) -> dict[str, int]:
    """Cheap content summary for provenance: image count and bytes on disk (no decoding)."""
    name = resolved["name"]
    if name == "digits":
        return {"images": len(_load_digits()[1])}
    if name == "shapes":
        return {"images": resolved["num_images"]}
    if name == "folder":
        files = list_image_files(resolved["path"], resolved["recursive"])
        size = sum((Path(resolved["path"]) / f).stat().st_size for f in files)
        out = {"images": len(files), "bytes": size}
    else:
        path = Path(resolved["path"])
        data_file = path / "data.mdb" if path.is_dir() else path
        out = {"images": lmdb_length(path), "bytes": data_file.stat().st_size}
    for key in ("labels", "attributes_file"):
        if resolved.get(key) is not None:
            if not Path(resolved[key]).is_file():
                raise DataError(f"{resolved[key]}: {key} file does not exist")
            out[f"{key}_bytes"] = Path(resolved[key]).stat().st_size
    return out


def dataset_fingerprint(spec: dict) -> str:
    """Stable 16-hex-digit hash of the resolved spec and the content size, for provenance files."""
    resolved = resolve_spec(spec)
    payload = json.dumps({"spec": resolved, "content": _content_size(resolved)}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]
