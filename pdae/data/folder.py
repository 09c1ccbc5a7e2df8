"""Image-folder datasets: the image files of a folder, with optional labels and attributes from a CSV."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from pdae.data.base import ImageDataset
from pdae.data.images import _decode, _pil_to_tensor, _resize_center_crop, _to_channels
from pdae.data.labels import _read_labels_csv
from pdae.data.spec import DataError

IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".webp")


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
