"""Decoding of image files (folder, LMDB): open and verify, channel checks, resize and crops, to tensor.

Every failure is a one-line `DataError` naming the file (or the LMDB key).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from pdae.data.spec import DataError, _one_line

# D2C crop of aligned CelebA (178x218): rows 57..185, columns 25..153, then resize [docs/protocol.md §4.5].
D2C_CROP_TOP, D2C_CROP_LEFT, D2C_CROP_SIZE = 57, 25, 128

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
