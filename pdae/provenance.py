"""Provenance of every artifact: code version, time stamps, file hashes."""

from __future__ import annotations

import datetime
import functools
import hashlib
import subprocess
from pathlib import Path

import pdae


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """`git describe --always --dirty` of the source tree when it is a git checkout, else the package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=10"],
            capture_output=True, text=True, timeout=10, check=True,
        )
        return f"{pdae.__version__}+g{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        return pdae.__version__


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
