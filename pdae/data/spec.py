"""Dataset specs: the `data:` section of a config, validated and completed by `resolve_spec`.

Also the error type of the data package (`DataError`, a one-line `ValueError` naming the key or the
file), the split names and the per-source constants that a spec refers to (LMDB variants, the CelebA
partition).
"""

from __future__ import annotations

import os
from typing import Any

from pdae.data.shapes import SHAPE_LABEL_FACTORS

SPLITS = ("train", "test", "all")

# LMDB variants of Diff-AE [official Diff-AE code, dataset.py BaseLMDB; docs/protocol.md §4.5]:
# key = f"{resolution}-{str(index).zfill(zfill)}", plus b"length" holding the count.
LMDB_VARIANTS: dict[str, dict[str, Any]] = {
    "ffhq": {"resolution": 256, "zfill": 5, "image_size": 128, "crop": "center", "attr_offset": 0},
    "celebahq": {"resolution": 256, "zfill": 5, "image_size": 128, "crop": "center", "attr_offset": 0},
    "celeba": {"resolution": None, "zfill": 7, "image_size": 64, "crop": "d2c", "attr_offset": 1},
    "lsun": {"resolution": 256, "zfill": 7, "image_size": 128, "crop": "center", "attr_offset": 0},
}
# Official CelebA partition: the first 162,770 images are the training split [docs/protocol.md §4.5].
CELEBA_TRAIN_COUNT = 162_770


class DataError(ValueError):
    """A dataset spec or file is wrong; the message is one line naming the key or the file."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


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
