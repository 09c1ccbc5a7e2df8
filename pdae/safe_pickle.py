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
naming the file. This module imports nothing of the project.
"""

from __future__ import annotations

import _compat_pickle
import argparse
import collections
import contextlib
import datetime
import importlib
import io
import pathlib
import pickle
import re
import sys
import types
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

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


class CheckpointError(ValueError):
    """A checkpoint or model folder is missing, corrupt, unsafe or does not fit; one-line message."""


def _first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception message (its first sentence when long), never empty."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    if len(line) > limit and ". " in line:
        line = line[: line.index(". ") + 1]
    return line


# ---------------------------------------------------------------------------------------------------
# The allowlist: globals that are the real (harmless) objects.



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


class _RefusedGlobal(Exception):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        display_module = {"posix": "os", "nt": "os"}.get(module, module)
        self.dotted = f"{display_module}.{name}"


class _TooManyClasses(Exception):
    pass


# ---------------------------------------------------------------------------------------------------
# Stand-ins: every other global is an inert class made here from its name; its module is never imported.

# Installed libraries (top-level names) whose functions can do harm when called (load pickles, run
# code, write files, reach the network, import modules by name). Calling a global of one of them, or of
# the standard library, marks a code payload: the file is refused. Other globals (a training code's config
# classes and enums, e.g. Diff-AE's `config.TrainConfig`, `choices.TrainMode`) are recorded, never run.
_CODE_PACKAGES = frozenset(
    {
        "__builtin__", "posix", "nt", "copy_reg",  # Python 2 / OS-level names of standard modules
        "torch", "torchvision", "torchaudio", "functorch", "triton",
        "numpy", "scipy", "pandas", "sklearn", "numba",
        "pdae", "eval", "workflow",  # this project
        "lightning", "pytorch_lightning", "lightning_fabric", "lightning_utilities", "torchmetrics",
        "hydra",  # (hydra.utils.instantiate/call run any target; omegaconf's DictConfig is a plain config: inert)
        "setuptools", "pip", "pkg_resources", "_distutils_hack", "wheel",
        "yaml", "dill", "cloudpickle", "joblib", "jsonpickle",
        "IPython", "ipykernel", "jupyter_client",
        "requests", "urllib3", "httpx", "aiohttp", "fsspec", "huggingface_hub", "boto3", "botocore",
        "safetensors", "h5py", "PIL", "imageio", "matplotlib",
        "transformers", "diffusers", "accelerate", "timm", "tensorflow", "keras", "jax",
        "snakemake", "wandb", "tensorboard", "psutil", "sh", "pexpect", "paramiko", "invoke", "fabric",
    }
)
_MAX_STAND_IN_CLASSES = 1000  # distinct unknown globals in one file (a Lightning checkpoint has a few)


def _calls_code(module: str) -> bool:
    """Whether calling a global of `module` is refused: the standard library or a `_CODE_PACKAGES` package."""
    top = module.split(".", 1)[0]
    return top in sys.stdlib_module_names or top in _CODE_PACKAGES


class OpaqueClass(type):
    """The type of stand-in classes: read-only, named after the pickled global (`module.name`)."""

    dotted: str
    refused: tuple[str, str] | None

    def __setattr__(cls, name: str, value: Any) -> None:
        raise TypeError(f"stand-in class {cls.dotted} is read-only")

    def __delattr__(cls, name: str) -> None:
        raise TypeError(f"stand-in class {cls.dotted} is read-only")

    def __repr__(cls) -> str:
        return f"<stand-in class {cls.dotted}>"


class OpaqueObject(metaclass=OpaqueClass):
    """An instance of a stand-in class: what the pickle asked to create, recorded and never run.

    `args`/`kwargs`: the constructor arguments (an enum pickled as `Enum(value)` has `value`);
    `state`: what BUILD passed to `__setstate__` (e.g. a dataclass's `__dict__`); `items`: (key, value)
    pairs of SETITEM(S); `list_items`: what APPEND(S) added; `member`: the name of an enum member pickled
    by name (`getattr(EnumClass, "NAME")`, `_enum_member_by_name`), else None. Creating one of a refused class (a standard-library
    or `_CODE_PACKAGES` global) raises `_RefusedGlobal` instead.
    """

    __slots__ = ("args", "kwargs", "state", "items", "list_items", "member")
    dotted = "pdae.safe_pickle.OpaqueObject"
    refused: tuple[str, str] | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> OpaqueObject:
        if cls.refused is not None:
            raise _RefusedGlobal(*cls.refused)
        return _record(cls, args, kwargs)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # everything is recorded by __new__ (NEWOBJ calls only __new__)

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))

    def append(self, item: Any) -> None:
        self.list_items.append(item)

    def extend(self, items: Any) -> None:
        self.list_items.extend(list(items))

    @property
    def name(self) -> str:
        """The name of an enum member pickled by name (`getattr(EnumClass, "NAME")`); a member pickled by value
        (`EnumClass(value)`) does not record its name."""
        if self.member is None:
            raise AttributeError(f"stand-in {type(self).dotted} object was not pickled by name")
        return self.member

    @property
    def value(self) -> Any:
        """The value of an enum member (pickled as `EnumClass(value)`)."""
        if self.member is not None:
            raise AttributeError(f"stand-in {type(self).dotted}.{self.member} was pickled by name, without its value")
        if len(self.args) == 1 and not self.kwargs:
            return self.args[0]
        raise AttributeError(f"stand-in {type(self).dotted} object was not created from one value")

    def __repr__(self) -> str:
        if self.member is not None:
            return f"<stand-in {type(self).dotted}.{self.member}>"
        return f"<stand-in {type(self).dotted} object>"


def _record(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any], member: str | None = None) -> OpaqueObject:
    """A new instance of stand-in class `cls` recording `args`/`kwargs` (or an enum `member` name); runs nothing."""
    self = object.__new__(cls)
    self.args, self.kwargs, self.state, self.member = args, kwargs, None, member
    self.items: list[tuple[Any, Any]] = []
    self.list_items: list[Any] = []
    return self


def _enum_member_by_name(cls: Any, *args: Any, **kwargs: Any) -> OpaqueObject:
    """`builtins.getattr` as a pickle may call it: only `getattr(<stand-in class>, "NAME")`, the way Python
    pickles an enum member by name (`enum.pickle_by_enum_name`: `(getattr, (EnumClass, "NAME"))`), giving an
    inert member of that stand-in (`plain` -> "NAME"). The class must be a stand-in that is not refused (never
    imported, not of the standard library or a `_CODE_PACKAGES` package) and the name a plain str; getattr on
    anything else (a real object, a refused stand-in, a stand-in object) is refused as pickled code."""
    if len(args) == 2 and not kwargs and type(args[1]) is str:
        owner = args[0]
        if isinstance(owner, OpaqueClass) and owner is not OpaqueObject and owner.refused is None:
            return _record(owner, (), {}, member=args[1])
    raise _RefusedGlobal("builtins", "getattr")


# Refused globals that a pickle may still call in one inert form (their stand-in class's __new__).
_INERT_CALLS = {("builtins", "getattr"): _enum_member_by_name}


def _stand_in_class(module: str, name: str) -> OpaqueClass:
    namespace: dict[str, Any] = {
        "__slots__": (),
        "__module__": module,
        "__qualname__": name,
        "dotted": f"{module}.{name}",
        "refused": (module, name) if _calls_code(module) else None,
    }
    if (module, name) in _INERT_CALLS:
        namespace["__new__"] = _INERT_CALLS[(module, name)]
    return OpaqueClass(name, (OpaqueObject,), namespace)


def is_opaque(obj: Any) -> bool:
    """Whether `obj` is a stand-in (a class made from a pickled name, or an instance of one)."""
    return isinstance(obj, (OpaqueClass, OpaqueObject))


def describe(obj: Any) -> str:
    """A few words on what `obj` is, for one-line errors (stand-ins are named as pickled)."""
    if isinstance(obj, OpaqueClass):
        return f"a reference to {obj.dotted}, never imported"
    if isinstance(obj, OpaqueObject) and obj.member is not None:
        return f"a pickled {type(obj).dotted}.{obj.member} member, never imported"
    if isinstance(obj, OpaqueObject):
        return f"a pickled {type(obj).dotted} object, never imported"
    return f"a {type(obj).__name__}"


def _stand_in_only(cls: Any) -> OpaqueClass:
    if not isinstance(cls, OpaqueClass) or cls is OpaqueObject:
        raise _RefusedGlobal("copyreg", "_reconstructor")  # a real class: this would run its code
    return cls


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """`copyreg._reconstructor` (protocols 0 and 1 pickle objects as `_reconstructor(cls, base, state)` then
    BUILD) for stand-in classes, and for the allowlisted Namespaces and `AttributeDict` (made here, as plain
    objects); `base` is never called; any other real class is refused."""
    if not isinstance(base, type):
        raise _RefusedGlobal("copyreg", "_reconstructor")
    if cls in (argparse.Namespace, types.SimpleNamespace) and state is None:
        return cls()
    if cls is AttributeDict and (state is None or type(state) is dict):
        return AttributeDict(state or {})
    cls = _stand_in_only(cls)
    return cls() if state is None else cls(state)


def _newobj(cls: Any, *args: Any) -> OpaqueObject:
    """`copyreg.__newobj__` for stand-in classes only."""
    return _stand_in_only(cls)(*args)


def _newobj_ex(cls: Any, args: Any, kwargs: Any) -> OpaqueObject:
    """`copyreg.__newobj_ex__` for stand-in classes only."""
    if not isinstance(args, tuple) or not isinstance(kwargs, dict):
        raise _RefusedGlobal("copyreg", "__newobj_ex__")
    return _stand_in_only(cls)(*args, **kwargs)


_COPYREG = {"_reconstructor": _reconstructor, "__newobj__": _newobj, "__newobj_ex__": _newobj_ex}


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


# ---------------------------------------------------------------------------------------------------
# Plain data from loaded objects (for code that reads configs, e.g. Diff-AE's `hyper_parameters`).

_MAX_PLAIN_DEPTH = 100
_ACTIVE = object()


def plain(obj: Any) -> Any:
    """A copy of `obj` in plain data, for reading configs: a stand-in object becomes its recorded state (a dict
    from `__dict__`/slots/SETITEMS, a list from APPENDS) or, without state, its one constructor argument (an
    enum member -> its value, or its name when pickled by name; several -> a list, keywords -> a dict); a stand-in class its dotted name
    (`GlobalName`); mappings and Namespaces become dicts; lists, tuples and sets keep their type. Nothing
    is called and `obj` is not changed; a reference cycle is cut (None). ValueError when nested more than
    100 levels deep."""
    memo: dict[int, Any] = {}

    def key(k: Any, depth: int) -> Any:
        out = conv(k, depth)
        try:
            hash(out)
        except TypeError:
            return repr(k)
        return out

    def mapping(pairs: Any, depth: int) -> dict[Any, Any]:
        return {key(k, depth): conv(v, depth) for k, v in pairs}

    def stand_in(x: OpaqueObject, depth: int) -> Any:
        if x.member is not None:
            return x.member  # an enum member pickled by name
        state = x.state
        if (isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], Mapping)
                and (state[0] is None or isinstance(state[0], Mapping))):
            state = {**(state[0] or {}), **state[1]}  # (__dict__, slots) as object.__reduce_ex__ writes it
        if x.items or isinstance(state, Mapping):
            out = mapping(x.items, depth)
            if isinstance(state, Mapping):
                out.update(mapping(state.items(), depth))
            return out
        if x.list_items:
            return [conv(v, depth) for v in x.list_items]
        if state is not None:
            return conv(state, depth)
        if x.kwargs:
            kwargs = mapping(x.kwargs.items(), depth)
            return {"args": [conv(a, depth) for a in x.args], "kwargs": kwargs} if x.args else kwargs
        if len(x.args) == 1:
            return conv(x.args[0], depth)
        return [conv(a, depth) for a in x.args] if x.args else {}

    def conv(x: Any, depth: int) -> Any:
        if depth > _MAX_PLAIN_DEPTH:
            raise ValueError(f"nested more than {_MAX_PLAIN_DEPTH} levels deep")
        if isinstance(x, OpaqueClass):
            return GlobalName(x.dotted)
        container = isinstance(x, (OpaqueObject, Mapping, list, tuple, set, frozenset, argparse.Namespace,
                                   types.SimpleNamespace))
        if not container:
            return x
        if id(x) in memo:
            return None if memo[id(x)] is _ACTIVE else memo[id(x)]
        memo[id(x)] = _ACTIVE
        depth += 1
        if isinstance(x, OpaqueObject):
            out: Any = stand_in(x, depth)
        elif isinstance(x, Mapping):
            out = mapping(x.items(), depth)
        elif isinstance(x, (argparse.Namespace, types.SimpleNamespace)):
            out = mapping(vars(x).items(), depth)
        elif isinstance(x, list):
            out = [conv(v, depth) for v in x]
        elif isinstance(x, tuple):
            out = tuple(conv(v, depth) for v in x)
        else:
            out = type(x)(key(v, depth) for v in x)  # set, frozenset
        memo[id(x)] = out
        return out

    return conv(obj, 0)



# ---------------------------------------------------------------------------------------------------
# Loading.


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


# Declared sizes: a pickle can ask for memory it does not contain (`bytearray(10**12)` through an allowed
# global, a string or storage whose declared length exceeds the file). Before anything is unpickled, its
# opcodes are scanned (`pickletools.genops`, which executes nothing, through a reader that never returns more
# than the file holds) with a small symbolic stack; every such size is bounded by the file's own size.

_SIZED_CALLABLES = {("builtins", "bytearray"), ("builtins", "bytes")}


class _BoundedReader:
    """read(n) / readline() on a binary stream that never allocate more than what is left of it."""

    def __init__(self, stream: Any, size: int) -> None:
        self.stream, self.size = stream, size

    def read(self, n: int = -1) -> bytes:
        left = max(self.size - self.stream.tell(), 0)
        return self.stream.read(left if n is None or n < 0 else min(n, left))

    def readline(self) -> bytes:
        return self.stream.readline(max(self.size - self.stream.tell(), 0))

    def tell(self) -> int:
        return self.stream.tell()


class _OversizedDeclaration(Exception):
    pass


def _scan_pickle(reader: _BoundedReader, bound: int) -> bool:
    """Walk one pickle's opcodes up to STOP; raise _OversizedDeclaration when a size it declares exceeds
    `bound`. -> False when the stream is not a pickle the scan understands (torch.load then decides)."""
    import pickletools

    mark, unknown = object(), object()
    stack: list[Any] = []
    memo: dict[Any, Any] = {}

    def pop_mark() -> list[Any]:
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is mark:
                items = stack[i + 1 :]
                del stack[i:]
                return items
        raise IndexError("no mark")

    def global_name(module: Any, name: Any) -> Any:
        if not isinstance(module, str) or not isinstance(name, str):
            return unknown
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        return ("global", _compat_pickle.IMPORT_MAPPING.get(module, module), name)

    def check_call(fn: Any, args: Any) -> None:
        sized = isinstance(fn, tuple) and fn[:1] == ("global",) and fn[1:] in _SIZED_CALLABLES
        if sized and isinstance(args, tuple) and args and isinstance(args[0], int) and not isinstance(args[0], bool):
            if args[0] > bound:
                raise _OversizedDeclaration(f"a {args[0]}-byte {fn[2]}")

    try:
        for op, arg, _ in pickletools.genops(reader):
            name = op.name
            if name == "STOP":
                return True
            if name == "MARK":
                stack.append(mark)
            elif name == "GLOBAL":
                module, _, attr = str(arg).partition(" ")
                stack.append(global_name(module, attr))
            elif name == "STACK_GLOBAL":
                attr, module = stack.pop(), stack.pop()
                stack.append(global_name(module, attr))
            elif name == "INST":
                module, _, attr = str(arg).partition(" ")
                check_call(global_name(module, attr), tuple(pop_mark()))
                stack.append(unknown)
            elif name == "OBJ":
                items = pop_mark()
                check_call(items[0] if items else unknown, tuple(items[1:]))
                stack.append(unknown)
            elif name in ("REDUCE", "NEWOBJ"):
                args, fn = stack.pop(), stack.pop()
                check_call(fn, args)
                stack.append(unknown)
            elif name == "NEWOBJ_EX":
                _, args, fn = stack.pop(), stack.pop(), stack.pop()
                check_call(fn, args)
                stack.append(unknown)
            elif name == "BINPERSID":
                pid = stack.pop()
                # torch: ('storage', storage_type, key, location, numel[, view_metadata]); every element of a
                # storage takes at least one byte of the file.
                if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
                    numel = pid[4]
                    if isinstance(numel, int) and numel > bound:
                        raise _OversizedDeclaration(f"a storage of {numel} elements")
                stack.append(unknown)
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                items = stack[-n:]
                if len(items) != n:
                    raise IndexError("stack underflow")
                del stack[-n:]
                stack.append(tuple(items))
            elif name == "TUPLE":
                stack.append(tuple(pop_mark()))
            elif name == "EMPTY_TUPLE":
                stack.append(())
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = stack[-1]
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo.get(arg, unknown))
            elif name == "DUP":
                stack.append(stack[-1])
            elif name == "POP":
                stack.pop()
            elif name == "POP_MARK":
                pop_mark()
            elif not op.stack_before and len(op.stack_after) == 1:
                stack.append(arg if arg is not None else unknown)  # a literal (int, str, bytes, float, ...)
            else:
                before = op.stack_before
                if pickletools.markobject in before:
                    pop_mark()
                    keep = before.index(pickletools.markobject)
                else:
                    keep = len(before)
                if keep:
                    if len(stack) < keep:
                        raise IndexError("stack underflow")
                    del stack[-keep:]
                stack.extend(unknown for _ in op.stack_after)
    except ValueError as exc:
        text = str(exc)
        if "remain" in text or "sys.maxsize" in text:  # a string/bytes length beyond the end of the file
            found = re.search(r"(\d+)", text)
            raise _OversizedDeclaration(f"a {found.group(1) if found else 'huge'}-byte string") from None
        return False
    except (IndexError, TypeError, KeyError, EOFError):
        return False
    return False


def _check_declared_sizes(path: Path) -> None:
    """Refuse (CheckpointError) a pickled file that declares more memory than it holds (see `_scan_pickle`)."""
    size = path.stat().st_size
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                infos = archive.infolist()
                big = [i for i in infos if i.file_size > size]
                if big:
                    raise _OversizedDeclaration(f"a {big[0].file_size}-byte entry {big[0].filename!r} (a zip bomb?)")
                for info in infos:
                    if info.filename.endswith(".pkl"):
                        data = archive.read(info)
                        stream = io.BytesIO(data)
                        _scan_pickle(_BoundedReader(stream, len(data)), size)
        else:
            with open(path, "rb") as handle:
                reader = _BoundedReader(handle, size)
                for _ in range(5):  # legacy format: magic, protocol, sys_info, the object, storage keys
                    if not _scan_pickle(reader, size):
                        break
    except _OversizedDeclaration as exc:
        raise CheckpointError(
            f"refusing to load {path}: it declares {exc}, more than the file's {size} bytes hold"
        ) from None
    except (OSError, zipfile.BadZipFile, RuntimeError, NotImplementedError):
        return  # unreadable: torch.load reports it


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
