"""The torch device of every command: one `resolve_device` for `pdae ...` and `python -m eval ...`.

`--device` takes auto (the first GPU torch sees, else the CPU), cpu, cuda or cuda:N. A GPU that is not there
(no GPU, a CPU-only torch build, CUDA_VISIBLE_DEVICES="", an index past the last GPU) is a DeviceError, a
ValueError whose message is one line: both command lines print it as `error: ...` and exit 2, before any
model is loaded.
"""

from __future__ import annotations

import argparse
import re

import torch

CHOICES = "auto, cpu, cuda or cuda:N"


class DeviceError(ValueError):
    """The requested device does not exist on this machine (or is not a device name); one-line message."""


def _cuda_build() -> str:
    return f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"


def resolve_device(name: str) -> torch.device:
    """The torch.device for `--device name`; DeviceError if it is not a device name or not on this machine."""
    name = str(name).strip()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match is None:
        raise DeviceError(f"--device {name!r}: expected {CHOICES}")
    if not torch.cuda.is_available():
        raise DeviceError(f"--device {name}: torch sees no CUDA device here (torch {torch.__version__}, "
                          f"{_cuda_build()}); use --device cpu or auto")
    index, count = int(match.group(1) or 0), torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"--device {name}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return torch.device(name)


def check_device(args: argparse.Namespace) -> None:
    """Resolve the `--device` of a parsed command line (if the command has one) before any work is done."""
    if getattr(args, "device", None) is not None:
        resolve_device(args.device)
