"""Safe loading of pickled PyTorch checkpoints (`.pt`, `.ckpt`): nothing stored in a file is ever executed.

`safe_torch_load` first tries `torch.load(weights_only=True)`. PyTorch-Lightning checkpoints (e.g. Diff-AE's
`last.ckpt`) often pickle more than tensors: an `AttributeDict`, callback classes, and in `hyper_parameters`
config objects (dataclasses) and enums of the training code, which is not installed here. Those files are read
again with `_RestrictedUnpickler`, whose rule is:

- an allowlisted global (torch's tensor rebuild functions, dtypes, plain containers, Namespaces, paths,
  datetimes, numpy arrays, Lightning's `AttributeDict` and callback classes) is the real, harmless object;
- any other global becomes an inert stand-in class (`OpaqueClass`), made here from its dotted name; its module
  is never imported. Creating an instance of it (REDUCE, NEWOBJ, INST/OBJ, `copyreg._reconstructor`) only
  records the arguments, and BUILD/SETITEMS/APPENDS only record state (`OpaqueObject`): no code of the class
  ever runs. `plain` turns such records into plain data (an enum -> its value, an object -> a dict of its
  state) for code that reads configs;
- calling a global of the Python standard library (`os.system`, `builtins.eval`, `subprocess.Popen`,
  `functools.partial`, ...) or of an installed library that can do harm (`_CODE_PACKAGES`: torch, numpy,
  Lightning beyond the allowlist, pdae itself, yaml, dill, ...) is refused: such a file carries a code payload
  and is rejected with one line naming the global. Merely referencing one (e.g. `torch.optim.Adam` stored as a
  config value) gives a stand-in class, which is harmless.

The refusal list does not make loading safe, the stand-ins do: a global is never imported and never called,
whatever its module. TorchScript archives are refused, and so is a file that declares more memory than it
holds (`_check_declared_sizes`, before anything is unpickled). Every problem is a one-line `CheckpointError`
naming the file.

Modules: `errors` (CheckpointError and the internal refusals), `allowlist` (`_allowed_global`, `AttributeDict`,
`GlobalName`), `stand_ins` (`OpaqueClass`, `OpaqueObject`, the `copyreg` reconstructors), `plain_data`
(`plain`), `scan` (`_check_declared_sizes`); this file holds the restricted unpickler and `safe_torch_load`.
The package imports nothing of the project outside itself (relative imports only).
"""

from __future__ import annotations

import _compat_pickle
import contextlib
import pickle
import types
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .allowlist import AttributeDict, GlobalName, _allowed_global
from .errors import CheckpointError, _first_line, _RefusedGlobal, _TooManyClasses
from .plain_data import plain
from .scan import _check_declared_sizes
from .stand_ins import (
    _COPYREG,
    _MAX_STAND_IN_CLASSES,
    OpaqueClass,
    OpaqueObject,
    _stand_in_class,
    describe,
    is_opaque,
)

__all__ = [
    "AttributeDict",
    "CheckpointError",
    "GlobalName",
    "OpaqueClass",
    "OpaqueObject",
    "describe",
    "is_opaque",
    "plain",
    "safe_torch_load",
]


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves globals through `_allowed_global`, and every other global to a stand-in class
    (never imported); creating an instance of a standard-library or `_CODE_PACKAGES` global (a payload,
    e.g. `os.system` via `__reduce__`) is refused before anything runs."""

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names written by protocols < 3 (`__builtin__.set`), as pickle's own find_class maps them.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if module == "copyreg" and name in _COPYREG:
            return _COPYREG[name]
        obj = _allowed_global(module, name)
        if obj is not None:
            return obj
        classes = self.__dict__.setdefault("_pdae_stand_ins", {})
        if (module, name) not in classes:
            if len(classes) >= _MAX_STAND_IN_CLASSES:
                raise _TooManyClasses(f"more than {_MAX_STAND_IN_CLASSES} distinct unknown classes")
            classes[(module, name)] = _stand_in_class(module, name)
        return classes[(module, name)]


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return _RestrictedUnpickler(file, **kwargs).load()


def _restricted_pickle_module() -> types.ModuleType:
    module = types.ModuleType("pdae_restricted_pickle")
    module.Unpickler = _RestrictedUnpickler  # type: ignore[attr-defined]
    module.load = _restricted_load  # type: ignore[attr-defined]
    module.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]
    return module


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with contextlib.suppress(zipfile.BadZipFile, OSError), zipfile.ZipFile(path) as archive:
        return any(n.endswith(("/constants.pkl", "/code/")) or "/code/" in n for n in archive.namelist())
    return False


@contextlib.contextmanager
def _load_errors(path: Path) -> Iterator[None]:
    """Turn failures of torch.load into one-line CheckpointErrors (refusals keep their own message)."""
    try:
        yield
    except CheckpointError:
        raise
    except _RefusedGlobal as exc:
        raise CheckpointError(
            f"refusing to load {path}: it references {exc.dotted} (pickled code); "
            "only tensors and plain containers are accepted"
        ) from None
    except _TooManyClasses as exc:
        raise CheckpointError(f"refusing to load {path}: it references {exc} (not a checkpoint)") from None
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError, KeyError, IndexError,
            AssertionError, pickle.UnpicklingError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        # (AssertionError: torch's own checks, e.g. a protocol-0 file's persistent ids are strings)
        raise CheckpointError(f"cannot read {path}: truncated or corrupt PyTorch file ({_first_line(exc)})") from None
    except MemoryError:
        raise CheckpointError(f"cannot read {path}: out of memory while unpickling it (more data than fits)") from None


def safe_torch_load(path: str | Path) -> Any:
    """Load a pickled PyTorch file (`.pt`, `.ckpt`) onto the CPU without ever executing code from it.

    First `torch.load(weights_only=True)`; if that refuses a non-tensor global (PyTorch-Lightning
    checkpoints hold AttributeDicts, callback classes, Namespaces, config objects and enums), the file is
    read again with `_RestrictedUnpickler`: allowlisted globals are the real harmless objects, every other
    global an inert stand-in (`OpaqueClass`/`OpaqueObject`, see the module docstring), and a call into the
    standard library or a `_CODE_PACKAGES` library (a code payload) is refused with one line naming it.
    TorchScript archives are refused, and so is a file that declares more memory than it holds
    (`_check_declared_sizes`, before unpickling). Stand-ins can appear anywhere in the result: read configs
    through `plain`, and check that tensors are tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    _check_declared_sizes(path)
    if _is_torchscript(path):  # (torch >= 2.6 refuses these under weights_only with a RuntimeError of its own)
        raise CheckpointError(f"refusing to load {path}: it is a TorchScript archive (code); expected a checkpoint")
    with _load_errors(path):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. "pickle protocol 4 ... not the default"
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            pass
    with _load_errors(path):
        return torch.load(path, map_location="cpu", pickle_module=_restricted_pickle_module())
