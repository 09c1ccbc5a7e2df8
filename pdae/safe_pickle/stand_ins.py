"""Stand-ins: every global outside the allowlist is an inert class made here from its name (`OpaqueClass`);
its module is never imported. Creating an instance (`OpaqueObject`) only records what the pickle asked for,
and calling a global of the standard library or of a `_CODE_PACKAGES` library is refused (`_RefusedGlobal`).
Also the `copyreg` reconstructors a pickle may call, restricted to stand-ins and the allowlisted Namespaces.
"""

from __future__ import annotations

import argparse
import sys
import types
from typing import Any

from .allowlist import AttributeDict
from .errors import _RefusedGlobal

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
