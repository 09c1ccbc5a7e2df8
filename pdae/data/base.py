"""Splits, batch augmentation and `ImageDataset`, the base class of every dataset of the package.

Splits are a fixed seeded permutation of the source (`split_indices`); nothing random happens inside
`__getitem__`: horizontal flips are applied by the training loop to whole batches (`random_hflip`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from pdae.data.spec import SPLITS, DataError


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
