"""The Diff-AE LMDBs (ffhq, celebahq, celeba, lsun): one read-only environment per process and path,
key format per variant (`LMDB_VARIANTS`), optional CelebA attributes."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pdae.data.base import ImageDataset
from pdae.data.images import _d2c_crop_resize, _decode, _pil_to_tensor, _resize_center_crop, _to_channels
from pdae.data.labels import read_attribute_file
from pdae.data.spec import CELEBA_TRAIN_COUNT, LMDB_VARIANTS, DataError, _one_line

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
