"""Control of a training run: its one-line errors, stopping on SIGINT/SIGTERM at a step boundary, the
process group under torchrun, and the loss meter that checks finiteness without a host sync per step.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
from typing import Any

import torch
from torch import Tensor


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message is one line."""


class TrainingInterrupted(TrainingError):
    """SIGINT or SIGTERM stopped the run at a step boundary, after saving the resume state."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


class StopSignals:
    """SIGINT and SIGTERM ask the loop to stop at the next step boundary (`pending`) instead of killing it
    mid-write; a second signal stops at once (KeyboardInterrupt; every write is atomic, so nothing is left
    half-written). Installed only in the main thread; the previous handlers come back on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}")
        self.signum = signum

    def pending(self, dist_info: DistInfo, step: int, every: int) -> int:
        """The signal to stop for (0: none). Under DDP the ranks agree (all-reduce MAX) every `every` steps,
        so that all of them stop at the same step and save one resume state together."""
        if dist_info.world == 1:
            return self.signum or 0
        if step % max(every, 1):
            return 0
        import torch.distributed as dist

        flag = torch.tensor(self.signum or 0, dtype=torch.int64)
        if dist.get_backend() == "nccl":
            flag = flag.cuda()
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag)


# Distributed set-up.
@dataclasses.dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when started by torchrun (WORLD_SIZE > 1): NCCL on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


class LossMeter:
    """Training losses kept on the device: summed for the log lines and checked for finiteness, both without a
    host sync per step (`add`); the loop syncs only where it logs or saves (`first_nonfinite`, `mean`)."""

    def __init__(self, device: torch.device, total: float = 0.0, count: int = 0) -> None:
        self.sum = torch.tensor(total, dtype=torch.float64, device=device)
        self.count = count
        self.first_bad = torch.zeros((), dtype=torch.int64, device=device)  # first non-finite step; 0: none

    def add(self, loss: Tensor, step: int) -> None:
        self.sum += loss
        self.count += 1
        bad = (self.first_bad == 0) & ~torch.isfinite(loss)
        self.first_bad = torch.where(bad, step, self.first_bad)

    def first_nonfinite(self, dist_info: DistInfo) -> int:
        """The first step (on any rank) whose loss was not finite since the meter was made; 0 if none."""
        bad = self.first_bad.clone()
        if dist_info.world > 1:
            import torch.distributed as dist

            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        return int(bad)

    def mean(self, dist_info: DistInfo) -> float:
        return _mean_over_ranks(self.sum, dist_info) / max(self.count, 1)

    def state(self) -> list[float | int]:
        return [float(self.sum), self.count]

    def reset(self) -> None:
        self.sum.zero_()
        self.count = 0


def _mean_over_ranks(value: Tensor, dist_info: DistInfo) -> float:
    if dist_info.world > 1:
        import torch.distributed as dist

        value = value.clone()
        dist.all_reduce(value)
        value /= dist_info.world
    return float(value)


def _gather_objects(obj: Any, dist_info: DistInfo) -> list[Any]:
    if dist_info.world == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist_info.world
    dist.all_gather_object(out, obj)
    return out


def _barrier(dist_info: DistInfo) -> None:
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()
