"""The allowlist: globals that a pickle may reference and that are the real, harmless objects.

Torch's tensor rebuild functions (a tensor's pickled Python attributes checked first), dtypes, plain
containers, Namespaces, pure paths, datetimes, numpy arrays, and Lightning's `AttributeDict` (-> the
`AttributeDict` here) and callback classes (-> `GlobalName`, never imported).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import importlib
import pathlib
import pickle
import types
from typing import Any

import torch

from .errors import _RefusedGlobal


class AttributeDict(dict):
    """Stand-in for PyTorch-Lightning's `AttributeDict` (a dict with attribute access); a plain dict."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


class GlobalName(str):
    """A class reference that is kept as its dotted name and never imported (e.g. the Lightning
    callback class used as a dict key in old `callbacks` states). Calling it is refused."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        module, _, name = self.rpartition(".")
        raise _RefusedGlobal(module, name)


_LIGHTNING_PACKAGES = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric", "lightning")
_LIGHTNING_ATTRIBUTE_DICT_MODULES = ("utilities.parsing", "utilities.data")
_LIGHTNING_CALLBACKS = frozenset(
    {
        "ModelCheckpoint",
        "LearningRateMonitor",
        "EarlyStopping",
        "ModelSummary",
        "RichModelSummary",
        "TQDMProgressBar",
        "ProgressBar",
        "RichProgressBar",
        "Timer",
        "StochasticWeightAveraging",
        "GradientAccumulationScheduler",
    }
)


def _numpy_allowlist() -> dict[tuple[str, str], Any]:
    import numpy as np

    try:
        multiarray = importlib.import_module("numpy._core.multiarray")
    except ImportError:
        multiarray = importlib.import_module("numpy.core.multiarray")
    allowed: dict[tuple[str, str], Any] = {("numpy", "dtype"): np.dtype, ("numpy", "ndarray"): np.ndarray}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "scalar")] = multiarray.scalar
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
    dtypes = getattr(np, "dtypes", None)
    for name in dir(dtypes) if dtypes is not None else ():
        if name.endswith("DType"):
            allowed[("numpy.dtypes", name)] = getattr(dtypes, name)
    return allowed


def _check_tensor_state(cls: type, state: Any) -> None:
    """A tensor's pickled Python attributes (torch sets them with setattr) may be data only: none may replace
    an attribute of its class (e.g. `contiguous`, `__deepcopy__`), which would give the tensor behaviour."""
    for part in state if isinstance(state, tuple) else (state,):
        if part is None:
            continue
        if not isinstance(part, dict):
            raise pickle.UnpicklingError("a tensor's pickled state is not a dict")
        for key in part:
            if not isinstance(key, str) or key.startswith("__") or hasattr(cls, key):
                raise pickle.UnpicklingError(f"a tensor's pickled state would replace its attribute {key!r}")


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    """torch._tensor._rebuild_from_type_v2 (a tensor with Python attributes), its state checked first."""
    if isinstance(new_type, type) and issubclass(new_type, torch.Tensor):
        _check_tensor_state(new_type, state)
    return torch._tensor._rebuild_from_type_v2(func, new_type, args, state)


def _rebuild_parameter_with_state(data: Any, requires_grad: Any, backward_hooks: Any, state: Any) -> Any:
    """torch._utils._rebuild_parameter_with_state (a Parameter with Python attributes), its state checked first."""
    _check_tensor_state(torch.nn.Parameter, state)
    return torch._utils._rebuild_parameter_with_state(data, requires_grad, backward_hooks, state)


def _allowed_global(module: str, name: str) -> Any:
    """The object a pickle may reference as `module.name`, or None when it is not allowlisted.

    Admitted: torch's tensor/parameter rebuild functions, dtypes, Size, device, layout; plain
    containers (OrderedDict, set, frozenset, complex, slice, bytes via _codecs.encode); argparse and
    SimpleNamespace; pure paths; datetime values; numpy arrays/scalars/dtypes; Lightning's
    AttributeDict (-> `AttributeDict`, a dict) and Lightning callback classes (-> `GlobalName`).
    """
    table: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "complex"): complex,
        ("builtins", "slice"): slice,
        ("builtins", "bytearray"): bytearray,
        ("_codecs", "encode"): __import__("_codecs").encode,
        ("argparse", "Namespace"): argparse.Namespace,
        ("types", "SimpleNamespace"): types.SimpleNamespace,
        ("datetime", "datetime"): datetime.datetime,
        ("datetime", "date"): datetime.date,
        ("datetime", "time"): datetime.time,
        ("datetime", "timedelta"): datetime.timedelta,
        ("datetime", "timezone"): datetime.timezone,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
        ("torch", "Tensor"): torch.Tensor,
        ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
        ("torch.serialization", "_get_layout"): torch.serialization._get_layout,
        ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    }
    for rebuild in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter", "_rebuild_parameter_with_state"):
        if hasattr(torch._utils, rebuild):
            table[("torch._utils", rebuild)] = getattr(torch._utils, rebuild)
    table[("torch._utils", "_rebuild_parameter_with_state")] = _rebuild_parameter_with_state
    for path_module in ("pathlib", "pathlib._local"):
        for cls_name, pure in (
            ("PosixPath", pathlib.PurePosixPath),
            ("PurePosixPath", pathlib.PurePosixPath),
            ("WindowsPath", pathlib.PureWindowsPath),
            ("PureWindowsPath", pathlib.PureWindowsPath),
        ):
            table[(path_module, cls_name)] = pure
    if (module, name) in table:
        return table[(module, name)]
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return getattr(torch, name)
    if module == "numpy" or module.startswith("numpy."):
        return _numpy_allowlist().get((module, name))
    for package in _LIGHTNING_PACKAGES:
        if not module.startswith(package + "."):
            continue
        sub = module[len(package) + 1 :]
        if name == "AttributeDict" and sub in _LIGHTNING_ATTRIBUTE_DICT_MODULES:
            return AttributeDict
        if name in _LIGHTNING_CALLBACKS and sub.startswith("callbacks"):
            return GlobalName(f"{module}.{name}")
    return None
