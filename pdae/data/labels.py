"""Labels and binary attributes read from files: the labels CSV of an image folder and the CelebA-style
attribute files of the Diff-AE LMDBs. Both must describe every image exactly once."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pdae.data.spec import DataError


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
