"""Our model-folder format, atomic writes, and safe loading of published PyTorch checkpoints.

A model folder (format tag `pdae-bench/1`) holds three files:

- `model.safetensors`: one flat dict of tensors, key `"{component}.{param_key}"` (e.g.
  `unet.input_blocks.0.0.weight`, `encoder.*`, `estimator.*`, `prior.*`, `net.*`), plus non-module
  tensor groups such as `stats.mean`, `stats.std`;
- `config.json`: `{"format": "pdae-bench/1", "method": ..., "components": {name: {"class", "kwargs"}},
  "diffusion": {"kind": ..., "T": ...} | null, "method_kwargs": {...}}`: enough to rebuild every
  component (`build_component`, `build_components`);
- `metadata.json`: a free dict (seed, images_seen, wall_time_s, code_version, created, source, ...).

A folder is written into a hidden temporary sibling and renamed into place, so an interrupted write
never leaves a folder that looks valid. Pickled `.pt`/`.ckpt` files (docs/protocol.md §3) are read with
`torch.load(weights_only=True)`, or, for PyTorch-Lightning checkpoints holding harmless non-tensor
objects, with a restricted unpickler whose allowlist admits tensors and plain containers only:
loading never runs code stored in a file. Every problem is a one-line `CheckpointError` naming the
file and key.
"""

from __future__ import annotations

import _compat_pickle
import argparse
import collections
import contextlib
import datetime
import hashlib
import importlib
import json
import os
import pathlib
import pickle
import shutil
import tempfile
import types
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "COMPONENT_CLASSES",
    "COMPONENT_INPUTS",
    "CONFIG_FILE",
    "FORMAT",
    "METADATA_FILE",
    "METHODS",
    "MODEL_FILES",
    "TENSORS_FILE",
    "CheckpointError",
    "ModelFolder",
    "atomic_write_bytes",
    "atomic_write_json",
    "build_component",
    "build_components",
    "check_state_dict",
    "load_model_folder",
    "load_state_dict_strict",
    "make_config",
    "safe_torch_load",
    "save_model_folder",
    "sha256_file",
    "split_components",
    "state_dict_with_prefix",
    "validate_config",
]

FORMAT = "pdae-bench/1"
TENSORS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
MODEL_FILES = (TENSORS_FILE, CONFIG_FILE, METADATA_FILE)
METHODS = ("dpm", "pdae", "pdae_class", "diffae", "latent", "classifier", "feature_net")
CONFIG_KEYS = ("format", "method", "components", "diffusion", "method_kwargs")

# Component class name -> "module:attribute"; imported only when a component is built.
COMPONENT_CLASSES: dict[str, str] = {
    "UNet": "pdae.nets.unet:UNet",
    "SemanticEncoder": "pdae.nets.encoder:SemanticEncoder",
    "GradientEstimator": "pdae.nets.gradient_estimator:GradientEstimator",
    "DiffAEUNet": "pdae.nets.cond_unet:DiffAEUNet",
    "LatentMLP": "pdae.nets.latent_mlp:LatentMLP",
    "LinearHead": "pdae.nets.classifier:LinearHead",
    "FeatureNet": "pdae.nets.classifier:FeatureNet",
    "LatentStats": "pdae.methods.latent:LatentStats",
    # issue 7: foreign frozen priors (pdae/nets/adapters.py)
    "DiffusersPrior": "pdae.nets.adapters:DiffusersPrior",
    "AdmUNet": "pdae.nets.adapters:AdmUNet",
}

# Constructor arguments that are other components of the same folder (class -> {argument: component}).
# The gradient estimator holds the frozen prior; the folder stores only its new parts under `estimator.`.
COMPONENT_INPUTS: dict[str, dict[str, str]] = {"GradientEstimator": {"prior": "prior"}}

_MAX_KEYS_SHOWN = 3


class CheckpointError(ValueError):
    """A checkpoint or model folder is missing, corrupt, unsafe or does not fit; one-line message."""


def _first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception message (its first sentence when long), never empty."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    if len(line) > limit and ". " in line:
        line = line[: line.index(". ") + 1]
    return line


def _show_keys(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_KEYS_SHOWN])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _MAX_KEYS_SHOWN else "")


# ---------------------------------------------------------------------------------------------------
# Atomic file writes.


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same directory and `os.replace`.

    Readers see either the old file or the complete new one, never a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _json_default(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    raise TypeError(f"value of type {type(value).__name__} is not JSON-serialisable")


def _json_bytes(obj: Any, where: str) -> bytes:
    try:
        return (json.dumps(obj, indent=2, default=_json_default) + "\n").encode()
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot write {where}: {_first_line(exc)}") from None


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON (paths as strings), atomically (see `atomic_write_bytes`)."""
    atomic_write_bytes(path, _json_bytes(obj, str(path)))


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(chunk_bytes):
                digest.update(chunk)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or _first_line(exc)}") from None
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------
# The config and its components.


def make_config(
    method: str,
    components: Mapping[str, Mapping[str, Any]],
    diffusion: Mapping[str, Any] | None,
    method_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A validated `config.json` dict; `components` maps name -> {"class": ..., "kwargs": {...}}."""
    config = {
        "format": FORMAT,
        "method": method,
        "components": {name: {"class": spec["class"], "kwargs": dict(spec["kwargs"])} for name, spec in components.items()},
        "diffusion": None if diffusion is None else dict(diffusion),
        "method_kwargs": dict(method_kwargs or {}),
    }
    validate_config(config, "config")
    return config


def validate_config(config: Any, where: str) -> None:
    """Check the structure of a `config.json` dict; raise a one-line CheckpointError naming `where`."""
    if not isinstance(config, dict):
        raise CheckpointError(f"{where}: expected a JSON object, got {type(config).__name__}")
    missing = [k for k in CONFIG_KEYS if k not in config]
    if missing:
        raise CheckpointError(f"{where}: missing key(s) {', '.join(missing)}")
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise CheckpointError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(CONFIG_KEYS)})")
    if config["format"] != FORMAT:
        raise CheckpointError(f"{where}: wrong format tag {config['format']!r} (expected {FORMAT!r})")
    if config["method"] not in METHODS:
        raise CheckpointError(f"{where}: unknown method {config['method']!r} (expected one of {', '.join(METHODS)})")
    components = config["components"]
    if not isinstance(components, dict) or not components:
        raise CheckpointError(f"{where}: 'components' must be a non-empty object")
    for name, spec in components.items():
        at = f"{where}: components.{name}"
        if not isinstance(name, str) or not name or "." in name:
            raise CheckpointError(f"{where}: invalid component name {name!r} (non-empty, no '.')")
        if not isinstance(spec, dict) or set(spec) != {"class", "kwargs"}:
            raise CheckpointError(f"{at}: expected an object with exactly 'class' and 'kwargs'")
        if spec["class"] not in COMPONENT_CLASSES:
            raise CheckpointError(
                f"{at}: unknown class {spec['class']!r} (known: {', '.join(sorted(COMPONENT_CLASSES))})"
            )
        if not isinstance(spec["kwargs"], dict):
            raise CheckpointError(f"{at}.kwargs: expected an object")
        for argument, source in COMPONENT_INPUTS.get(spec["class"], {}).items():
            if source not in components:
                raise CheckpointError(f"{at}: {spec['class']} needs component {source!r} as its {argument}")
    diffusion = config["diffusion"]
    if diffusion is not None and (not isinstance(diffusion, dict) or not isinstance(diffusion.get("kind"), str)):
        raise CheckpointError(f"{where}: 'diffusion' must be null or an object with a string 'kind'")
    if not isinstance(config["method_kwargs"], dict):
        raise CheckpointError(f"{where}: 'method_kwargs' must be an object")


def _import_class(class_name: str) -> type:
    if class_name not in COMPONENT_CLASSES:
        raise CheckpointError(f"unknown component class {class_name!r} (known: {', '.join(sorted(COMPONENT_CLASSES))})")
    module_name, attribute = COMPONENT_CLASSES[class_name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CheckpointError(f"component class {class_name}: cannot import {module_name} ({_first_line(exc)})") from None
    if not hasattr(module, attribute):
        raise CheckpointError(f"component class {class_name}: {module_name} has no {attribute}")
    return getattr(module, attribute)


def build_component(spec: Mapping[str, Any], where: str = "component", **extra: Any) -> nn.Module:
    """Construct `spec["class"](**spec["kwargs"], **extra)` (weights untouched).

    :param spec: {"class": name in COMPONENT_CLASSES, "kwargs": constructor kwargs}.
    :param where: names the spec in error messages (e.g. "run/config.json: components.unet").
    :param extra: constructor arguments that are not JSON values, e.g. `prior=` of GradientEstimator.
    """
    if not isinstance(spec, Mapping) or "class" not in spec or not isinstance(spec.get("kwargs"), Mapping):
        raise CheckpointError(f"{where}: expected {{'class': ..., 'kwargs': {{...}}}}, got {spec!r}")
    cls = _import_class(spec["class"])
    try:
        return cls(**spec["kwargs"], **extra)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: cannot build {spec['class']}: {_first_line(exc)}") from None


# ---------------------------------------------------------------------------------------------------
# State dicts.


def _module_state(module: nn.Module) -> dict[str, Tensor]:
    """What a module stores: `new_state_dict()` for modules that hold a frozen component they do not
    own (GradientEstimator), else `state_dict()`."""
    new_state_dict = getattr(module, "new_state_dict", None)
    return dict(new_state_dict()) if callable(new_state_dict) else dict(module.state_dict())


def state_dict_with_prefix(component: str, module_or_sd: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """{"{component}.{key}": tensor} for a module (its stored state, see `_module_state`) or a state dict."""
    if not component or "." in component:
        raise CheckpointError(f"invalid component name {component!r} (non-empty, no '.')")
    sd = _module_state(module_or_sd) if isinstance(module_or_sd, nn.Module) else module_or_sd
    out = {}
    for key, value in sd.items():
        if not isinstance(value, Tensor):
            raise CheckpointError(f"{component}.{key}: expected a tensor, got {type(value).__name__}")
        out[f"{component}.{key}"] = value.detach()
    return out


def split_components(tensors: Mapping[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    """Inverse of `state_dict_with_prefix`: {"unet.a.b": t} -> {"unet": {"a.b": t}}."""
    parts: dict[str, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        component, sep, rest = key.partition(".")
        if not sep or not component or not rest:
            raise CheckpointError(f"tensor key {key!r} has no '<component>.' prefix")
        parts.setdefault(component, {})[rest] = value
    return parts


def check_state_dict(module: nn.Module, sd: Mapping[str, Tensor], where: str) -> None:
    """Raise a one-line CheckpointError naming `where` and the first few offending keys unless `sd`
    has exactly the keys and shapes `module` stores (see `_module_state`). Works on meta-device
    modules, so an architecture can be checked without allocating its weights."""
    expected = _module_state(module)
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing keys {_show_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_show_keys(unexpected)}")
    not_tensors = [k for k in sd if k in expected and not isinstance(sd[k], Tensor)]
    if not_tensors:
        problems.append(f"not tensors: {_show_keys(not_tensors)}")
    shapes = [
        f"{k} {list(sd[k].shape)} vs {list(expected[k].shape)}"
        for k in expected
        if k in sd and isinstance(sd[k], Tensor) and sd[k].shape != expected[k].shape
    ]
    if shapes:
        problems.append(f"shape mismatch (checkpoint vs model) {_show_keys(shapes)}")
    if problems:
        raise CheckpointError(
            f"{where}: state dict does not fit {type(module).__name__} (wrong architecture?): " + "; ".join(problems)
        )


def load_state_dict_strict(module: nn.Module, sd: Mapping[str, Tensor], where: str) -> None:
    """Load `sd` into `module` only if keys and shapes match exactly (`check_state_dict`); modules with
    `new_state_dict` (GradientEstimator) are compared and loaded by their new parts only. Nothing is
    loaded when anything mismatches."""
    check_state_dict(module, sd, where)
    load_new_state_dict = getattr(module, "load_new_state_dict", None)
    if callable(getattr(module, "new_state_dict", None)) and callable(load_new_state_dict):
        load_new_state_dict(dict(sd))
    else:
        module.load_state_dict(dict(sd), strict=True)


# ---------------------------------------------------------------------------------------------------
# Model folders.


@dataclass
class ModelFolder:
    """A loaded model folder: flat tensors, config and metadata (see the module docstring)."""

    tensors: dict[str, Tensor]
    config: dict[str, Any]
    metadata: dict[str, Any]
    path: Path | None = field(default=None, compare=False)

    @property
    def method(self) -> str:
        return self.config["method"]

    def components(self) -> dict[str, dict[str, Tensor]]:
        """Tensors split by component prefix (including non-module groups such as `stats`)."""
        return split_components(self.tensors)


def _check_tensors(tensors: Mapping[str, Tensor], config: Mapping[str, Any], where: str) -> None:
    for key, value in tensors.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{where}: tensor key {key!r} is not a string")
        if not isinstance(value, Tensor):
            raise CheckpointError(f"{where}: {key} is a {type(value).__name__}, not a tensor")
    present = set(split_components(tensors))
    absent = [name for name in config["components"] if name not in present]
    if absent:
        raise CheckpointError(f"{where}: no tensors for component(s) {', '.join(absent)} listed in {CONFIG_FILE}")


def _tensors_for_file(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """CPU, contiguous, no two entries sharing memory (what safetensors accepts); values unchanged."""
    out = {key: value.detach().to("cpu").contiguous() for key, value in tensors.items()}
    users = collections.Counter(v.untyped_storage().data_ptr() for v in out.values() if v.numel())
    return {k: v.clone() if v.numel() and users[v.untyped_storage().data_ptr()] > 1 else v for k, v in out.items()}


def _check_replaceable(out_dir: Path) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise CheckpointError(f"cannot write model folder {out_dir}: a file of that name exists")
    foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in MODEL_FILES)
    if foreign:
        raise CheckpointError(
            f"refusing to replace {out_dir}: it holds files that are not part of a model folder "
            f"({_show_keys(foreign)}); use a dedicated directory"
        )


def save_model_folder(
    out_dir: str | Path, tensors: Mapping[str, Tensor], config: Mapping[str, Any], metadata: Mapping[str, Any]
) -> Path:
    """Write `model.safetensors`, `config.json`, `metadata.json` to `out_dir`, atomically.

    Everything is written into a hidden sibling `.{name}.tmp-*` and renamed into place; an existing
    model folder (or empty directory) at `out_dir` is replaced. An exception at any point leaves no
    folder at `out_dir` (or the old one) and no temporary directory. Returns `out_dir`.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    config = dict(config)
    validate_config(config, f"{out_dir / CONFIG_FILE}")
    _check_tensors(tensors, config, f"{out_dir / TENSORS_FILE}")
    config_bytes = _json_bytes(config, str(out_dir / CONFIG_FILE))
    metadata_bytes = _json_bytes(dict(metadata), str(out_dir / METADATA_FILE))
    _check_replaceable(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    mask = _umask()

    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o777 & ~mask)
        # One metadata key only: safetensors writes its metadata map in a per-process random order, and a
        # model folder must be byte-identical whatever process wrote it (bitwise resume). The format tag
        # lives in config.json.
        save_file(_tensors_for_file(tensors), str(tmp / TENSORS_FILE), metadata={"format": "pt"})
        with open(tmp / TENSORS_FILE, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp / TENSORS_FILE, 0o666 & ~mask)
        atomic_write_bytes(tmp / CONFIG_FILE, config_bytes)
        atomic_write_bytes(tmp / METADATA_FILE, metadata_bytes)
        _fsync_dir(tmp)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old)
            try:
                os.replace(tmp, out_dir)
            except BaseException:
                os.replace(old, out_dir)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(out_dir.parent)
    return out_dir


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({_first_line(exc)})") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or _first_line(exc)}") from None


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({_first_line(exc)})") from None


def load_model_folder(path: str | Path) -> ModelFolder:
    """Read and validate a model folder; any missing/corrupt file, wrong format tag or component
    without tensors raises a one-line CheckpointError naming the file."""
    path = Path(path)
    if not path.is_dir():
        what = "is a file" if path.exists() else "does not exist"
        raise CheckpointError(f"{path}: not a model folder (it {what})")
    missing = [name for name in MODEL_FILES if not (path / name).is_file()]
    if missing:
        raise CheckpointError(f"{path}: not a model folder: missing {', '.join(missing)}")
    config = _read_json(path / CONFIG_FILE)
    validate_config(config, str(path / CONFIG_FILE))
    metadata = _read_json(path / METADATA_FILE)
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path / METADATA_FILE}: expected a JSON object, got {type(metadata).__name__}")
    tensors = _read_safetensors(path / TENSORS_FILE)
    _check_tensors(tensors, config, str(path / TENSORS_FILE))
    return ModelFolder(tensors=tensors, config=config, metadata=metadata, path=path)


def build_components(folder: ModelFolder) -> dict[str, nn.Module]:
    """Build every component of `folder` (config order, inputs such as the estimator's prior first)
    and load its tensors strictly. Returns {name: module}; modules are in eval mode on the CPU."""
    where = str(folder.path / CONFIG_FILE) if folder.path is not None else CONFIG_FILE
    specs = folder.config["components"]
    parts = folder.components()
    built: dict[str, nn.Module] = {}

    def build(name: str, chain: tuple[str, ...]) -> nn.Module:
        if name in built:
            return built[name]
        if name in chain:
            raise CheckpointError(f"{where}: components depend on each other in a cycle ({' -> '.join(chain + (name,))})")
        spec = specs[name]
        inputs = {arg: build(src, chain + (name,)) for arg, src in COMPONENT_INPUTS.get(spec["class"], {}).items()}
        module = build_component(spec, f"{where}: components.{name}", **inputs)
        source = str(folder.path / TENSORS_FILE) if folder.path is not None else TENSORS_FILE
        load_state_dict_strict(module, parts.get(name, {}), f"{source}: component {name!r}")
        built[name] = module.eval()
        return module

    for name in specs:
        build(name, ())
    return {name: built[name] for name in specs}


# ---------------------------------------------------------------------------------------------------
# Safe loading of pickled PyTorch checkpoints (.pt, .ckpt).


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
        ("torch._tensor", "_rebuild_from_type_v2"): torch._tensor._rebuild_from_type_v2,
    }
    for rebuild in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter", "_rebuild_parameter_with_state"):
        if hasattr(torch._utils, rebuild):
            table[("torch._utils", rebuild)] = getattr(torch._utils, rebuild)
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


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves globals only through `_allowed_global`; anything else is refused
    before it is imported, so a payload (e.g. `os.system` via `__reduce__`) is never called."""

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names written by protocols < 3 (`__builtin__.set`), as pickle's own find_class maps them.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        obj = _allowed_global(module, name)
        if obj is None:
            raise _RefusedGlobal(module, name)
        return obj


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
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError, KeyError, IndexError,
            pickle.UnpicklingError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: truncated or corrupt PyTorch file ({_first_line(exc)})") from None


def safe_torch_load(path: str | Path) -> Any:
    """Load a pickled PyTorch file (`.pt`, `.ckpt`) onto the CPU without ever executing code from it.

    First `torch.load(weights_only=True)`; if that refuses a non-tensor global (PyTorch-Lightning
    checkpoints hold AttributeDicts, callback classes, Namespaces), the file is read again with
    `_RestrictedUnpickler`, whose explicit allowlist maps harmless containers to plain objects and
    refuses every other global (a code payload) with one line naming it. TorchScript archives are refused.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    with _load_errors(path):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. "pickle protocol 4 ... not the default"
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            pass
    if _is_torchscript(path):
        raise CheckpointError(f"refusing to load {path}: it is a TorchScript archive (code); expected a checkpoint")
    with _load_errors(path):
        return torch.load(path, map_location="cpu", pickle_module=_restricted_pickle_module())
