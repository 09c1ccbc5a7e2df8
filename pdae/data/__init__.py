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

Modules (this package re-exports their public names): `spec` (DataError, `resolve_spec`, LMDB variants),
`base` (splits, `random_hflip`, `ImageDataset`), `shapes` (factors and rendering of the procedural shapes),
`embedded` (the digits and shapes datasets), `images` (decoding, channels, resize and crops), `labels`
(labels CSV, attribute files), `folder` (image folders), `diffae_lmdb` (Diff-AE LMDBs), `factory`
(`build_dataset`, `dataset_fingerprint`).
"""

from __future__ import annotations

from pdae.data.base import ImageDataset, random_hflip, split_indices
from pdae.data.diffae_lmdb import LmdbDataset, lmdb_key, lmdb_length
from pdae.data.embedded import DigitsDataset, ShapesDataset
from pdae.data.factory import build_dataset, dataset_fingerprint
from pdae.data.folder import IMAGE_EXTENSIONS, FolderDataset, list_image_files
from pdae.data.images import D2C_CROP_LEFT, D2C_CROP_SIZE, D2C_CROP_TOP
from pdae.data.labels import read_attribute_file
from pdae.data.shapes import (
    BACKGROUND_NAMES,
    BACKGROUNDS,
    COLOUR_NAMES,
    COLOURS,
    SHAPE_ATTRIBUTES,
    SHAPE_LABEL_FACTORS,
    SHAPE_LARGE_THRESHOLD,
    SHAPE_NAMES,
    SHAPE_SIZE_RANGE,
    SHAPE_SUPERSAMPLE,
    render_shapes,
    shape_attributes,
    shape_coverage,
    shape_factors,
)
from pdae.data.spec import (
    CELEBA_TRAIN_COUNT,
    LMDB_VARIANTS,
    SHAPES_DEFAULT_NUM_IMAGES,
    SPLITS,
    DataError,
    resolve_spec,
)

__all__ = [
    "BACKGROUNDS",
    "BACKGROUND_NAMES",
    "CELEBA_TRAIN_COUNT",
    "COLOURS",
    "COLOUR_NAMES",
    "D2C_CROP_LEFT",
    "D2C_CROP_SIZE",
    "D2C_CROP_TOP",
    "DataError",
    "DigitsDataset",
    "FolderDataset",
    "IMAGE_EXTENSIONS",
    "ImageDataset",
    "LMDB_VARIANTS",
    "LmdbDataset",
    "SHAPES_DEFAULT_NUM_IMAGES",
    "SHAPE_ATTRIBUTES",
    "SHAPE_LABEL_FACTORS",
    "SHAPE_LARGE_THRESHOLD",
    "SHAPE_NAMES",
    "SHAPE_SIZE_RANGE",
    "SHAPE_SUPERSAMPLE",
    "SPLITS",
    "ShapesDataset",
    "build_dataset",
    "dataset_fingerprint",
    "list_image_files",
    "lmdb_key",
    "lmdb_length",
    "random_hflip",
    "read_attribute_file",
    "render_shapes",
    "resolve_spec",
    "shape_attributes",
    "shape_coverage",
    "shape_factors",
    "split_indices",
]
