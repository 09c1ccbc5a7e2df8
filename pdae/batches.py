"""What the training loop reads, and in which order.

The order of samples is a fixed permutation per epoch drawn from the run seed, so the sample at global
position k depends only on (seed, k): a run resumed at any step reads exactly what the uninterrupted run
read (`IndexBatches`), with one persistent DataLoader per run (`batch_loader`). Methods on latents (latent
DPM, classifiers) train on `TensorPairs` of the encoder's z (`encode_dataset`) and the dataset's labels or
attributes (`dataset_targets`).
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import Tensor

from pdae.methods import Method


# Data order: a fixed permutation per epoch, so the sample at global position k depends only on (seed, k).
def epoch_permutation(seed: int, epoch: int, n: int) -> Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def global_indices(seed: int, n: int, start: int, count: int) -> Tensor:
    """Dataset indices of global samples start .. start+count-1 (epochs reshuffled from the seed)."""
    out, pos = [], start
    while pos < start + count:
        epoch, offset = divmod(pos, n)
        take = min(n - offset, start + count - pos)
        out.append(epoch_permutation(seed, epoch, n)[offset : offset + take])
        pos += take
    return torch.cat(out)


class IndexBatches(torch.utils.data.Sampler):
    """This rank's dataset indices for `steps` global batches from global sample `start` on: batch k is
    `global_indices(seed, n, start + k * batch, batch)`, sharded by rank. The order depends only on (seed,
    position), so a run resumed at `start` reads exactly what the uninterrupted run read."""

    def __init__(self, seed: int, n: int, start: int, batch: int, steps: int, rank: int = 0, world: int = 1) -> None:
        self.seed, self.n, self.start, self.batch, self.steps = seed, n, start, batch, steps
        self.rank, self.local = rank, batch // world

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        perms: dict[int, Tensor] = {}  # the epochs' permutations, computed once each (not per batch)
        for k in range(self.steps):
            pos, out = self.start + k * self.batch, []
            while pos < self.start + (k + 1) * self.batch:
                epoch, offset = divmod(pos, self.n)
                if epoch not in perms:
                    perms = {epoch: epoch_permutation(self.seed, epoch, self.n), **{e: v for e, v in perms.items() if e >= epoch - 1}}
                take = min(self.n - offset, self.start + (k + 1) * self.batch - pos)
                out.append(perms[epoch][offset : offset + take])
                pos += take
            yield torch.cat(out)[self.rank * self.local : (self.rank + 1) * self.local].tolist()


def batch_loader(dataset: Any, batches: IndexBatches, num_workers: int, pin_memory: bool = False,
                 prefetch_factor: int = 4) -> torch.utils.data.DataLoader:
    """One loader for the whole run (built once, after resume): persistent worker processes that read
    `prefetch_factor` batches ahead each, pinned host memory for non-blocking copies to a GPU, and the
    deterministic index order of `batches`. With `num_workers=0` (the default for tiny in-memory data) it
    reads in the training process."""
    extra = ({"persistent_workers": True, "prefetch_factor": prefetch_factor, "worker_init_fn": _worker_ignores_sigint}
             if num_workers > 0 else {})
    # Its own generator: making the iterator draws a base seed, which must not come from the global RNG
    # (dropout's, restored on resume).
    return torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=_collate,
                                       pin_memory=pin_memory, generator=torch.Generator().manual_seed(0), **extra)


def _worker_ignores_sigint(worker_id: int) -> None:
    """Ctrl-C reaches the whole process group: the workers leave it to the training process, which stops at
    the next step boundary and shuts them down."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


class TensorPairs(torch.utils.data.Dataset):
    """(z, y) pairs of precomputed latents."""

    def __init__(self, z: Tensor, y: Tensor) -> None:
        self.z, self.y = z, y

    def __len__(self) -> int:
        return len(self.z)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.z[i], self.y[i]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        """A whole batch by one gather (the DataLoader's batched fetch; `batch_loader` keeps it as is)."""
        idx = torch.as_tensor(indices)
        return self.z[idx], self.y[idx]


def _collate(data: Any) -> Any:
    """A batch a dataset's `__getitems__` already stacked passes through; a list of items is collated."""
    return data if isinstance(data, tuple) else torch.utils.data.default_collate(data)


@torch.no_grad()
def encode_dataset(encoder: Method, dataset: Any, device: torch.device, batch_size: int = 256) -> Tensor:
    """z = E(x0) for every image (EMA encoder, no augmentation; docs/protocol.md §1.8). -> [N, D] on CPU."""
    zs = []
    for start in range(0, len(dataset), batch_size):
        x = torch.stack([dataset[i][0] for i in range(start, min(start + batch_size, len(dataset)))])
        zs.append(encoder.encode(x.to(device)).float().cpu())
    return torch.cat(zs)


def dataset_targets(dataset: Any, targets: str) -> Tensor:
    if targets == "attributes":
        attrs = getattr(dataset, "attributes", None)
        if attrs is None:
            raise ValueError("method.targets: attributes requested but the dataset has none")
        return torch.as_tensor(attrs).float()
    return torch.as_tensor(dataset.labels).long()


def data_info(dataset: Any) -> dict[str, Any]:
    attrs = getattr(dataset, "attributes", None)
    return {
        "image_size": int(dataset.image_size),
        "channels": int(dataset.channels),
        "num_classes": int(getattr(dataset, "num_classes", 0) or 0),
        "num_attributes": 0 if attrs is None else int(torch.as_tensor(attrs).shape[1]),
    }
