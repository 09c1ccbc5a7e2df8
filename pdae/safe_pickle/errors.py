"""Errors of the safe loader: the public `CheckpointError` and the internal refusals that become one.

`_RefusedGlobal` (a pickle calls code) and `_TooManyClasses` (a pickle names too many unknown globals) are
raised while unpickling and turned into one-line `CheckpointError`s by the loader (`_load_errors`).
"""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint or model folder is missing, corrupt, unsafe or does not fit; one-line message."""


def _first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception message (its first sentence when long), never empty."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    if len(line) > limit and ". " in line:
        line = line[: line.index(". ") + 1]
    return line


class _RefusedGlobal(Exception):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        display_module = {"posix": "os", "nt": "os"}.get(module, module)
        self.dotted = f"{display_module}.{name}"


class _TooManyClasses(Exception):
    pass
