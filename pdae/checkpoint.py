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
never leaves a folder that looks valid. Pickled `.pt`/`.ckpt` files (docs/protocol.md §3) are read by
`safe_torch_load` (`pdae.safe_pickle`, re-exported here): loading never runs code stored in a file. Every
problem is a one-line `CheckpointError` naming the file and key. The config and the state dicts of the
components (validation, building from the method registry, strict loading) are `pdae.components`, re-exported
here.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pdae.components import (  # also importable from here (importers, tests)
    CONFIG_KEYS,
    _component_inputs,
    _show_keys,
    build_component,
    check_state_dict,
    load_state_dict_strict,
    make_config,
    split_components,
    state_dict_with_prefix,
    validate_config,
)
from pdae.diffusion.schedule import Schedule
from pdae.methods import registry
from pdae.methods.base import Method
from pdae.methods.registry import FORMAT

# The restricted unpickler lives in its own module; its public names are re-exported here (and
# `_check_declared_sizes`, used by training's resume) so that `from pdae.checkpoint import ...` keeps working.
from pdae.safe_pickle import (  # noqa: F401
    AttributeDict,
    CheckpointError,
    GlobalName,
    OpaqueClass,
    OpaqueObject,
    _check_declared_sizes,
    _first_line,
    describe,
    is_opaque,
    plain,
    safe_torch_load,
)

__all__ = [
    "CONFIG_FILE",
    "CONFIG_KEYS",
    "FORMAT",
    "METADATA_FILE",
    "MODEL_FILES",
    "TENSORS_FILE",
    "CheckpointError",
    "ModelFolder",
    "atomic_write_bytes",
    "atomic_write_json",
    "build_component",
    "build_components",
    "check_state_dict",
    "load_method",
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

TENSORS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
MODEL_FILES = (TENSORS_FILE, CONFIG_FILE, METADATA_FILE)


# ---------------------------------------------------------------------------------------------------
# Atomic file writes.


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    from pdae.fsutil import fsync_dir

    fsync_dir(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same directory and `os.replace`.

    Readers see either the old file or the complete new one, never a partial file.
    """
    from pdae.fsutil import writing

    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    with writing(path, cleanup=[Path(tmp)]):
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
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
    """Only a missing path, an empty folder or one of our model folders (`pdae.fsutil.is_model_folder`:
    our config.json format tag, nothing but model-folder files) may be replaced."""
    from pdae.fsutil import foreign_entries, is_model_folder

    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if not out_dir.is_dir() or out_dir.is_symlink():
        raise CheckpointError(f"cannot write model folder {out_dir}: a file of that name exists")
    names = sorted(p.name for p in out_dir.iterdir())
    if names and not is_model_folder(out_dir):
        foreign = foreign_entries(out_dir, "model") or names
        raise CheckpointError(
            f"refusing to replace {out_dir}: it is not a model folder written by pdae (it holds "
            f"{_show_keys(foreign)}); use a dedicated directory"
        )


def save_model_folder(
    out_dir: str | Path, tensors: Mapping[str, Tensor], config: Mapping[str, Any], metadata: Mapping[str, Any],
    *, staging: str | Path | None = None, extra_files: Mapping[str, bytes] | None = None,
) -> Path:
    """Write `model.safetensors`, `config.json`, `metadata.json` (and `extra_files`, name -> bytes) to
    `out_dir`, atomically.

    Everything is written into `staging` (a path that does not exist yet, on the same file system: the
    run's staging folder, `pdae.fsutil.RunStaging`), or else a hidden sibling `.{name}.tmp-*`, and moved
    into place when complete; an existing model folder (or empty directory) at `out_dir` is replaced by an
    atomic swap (`pdae.fsutil.swap_in`), anything else is refused. An exception at any point leaves
    `out_dir` as it was and no temporary directory; a failed write (disk full) is a one-line
    `pdae.fsutil.WriteError` naming the file. Returns `out_dir`.
    """
    from safetensors.torch import save_file

    from pdae.fsutil import WriteError, staging_for, swap_in, write_failure, writing

    out_dir = Path(out_dir)
    config = dict(config)
    validate_config(config, f"{out_dir / CONFIG_FILE}")
    _check_tensors(tensors, config, f"{out_dir / TENSORS_FILE}")
    config_bytes = _json_bytes(config, str(out_dir / CONFIG_FILE))
    metadata_bytes = _json_bytes(dict(metadata), str(out_dir / METADATA_FILE))
    _check_replaceable(out_dir)
    mask = _umask()

    with writing(out_dir):
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        run_staging = staging_for(out_dir) if staging is None else None
        if run_staging is not None:
            staging = run_staging.new_path(out_dir.name)
        if staging is None:
            tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
        else:
            tmp = Path(staging)
            tmp.mkdir()
    try:
        os.chmod(tmp, 0o777 & ~mask)
        # One metadata key only: safetensors writes its metadata map in a per-process random order, and a
        # model folder must be byte-identical whatever process wrote it (bitwise resume). The format tag
        # lives in config.json.
        with writing(out_dir / TENSORS_FILE):
            save_file(_tensors_for_file(tensors), str(tmp / TENSORS_FILE), metadata={"format": "pt"})
            with open(tmp / TENSORS_FILE, "rb+") as handle:
                os.fsync(handle.fileno())
            os.chmod(tmp / TENSORS_FILE, 0o666 & ~mask)
        small_files = [(CONFIG_FILE, config_bytes), (METADATA_FILE, metadata_bytes), *(extra_files or {}).items()]
        for name, data in small_files:
            try:
                atomic_write_bytes(tmp / name, data)
            except WriteError as exc:  # name the final file, not the staging copy
                raise write_failure(out_dir / name, exc) from None
        _fsync_dir(tmp)
        with writing(out_dir):
            swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
    source = str(folder.path / TENSORS_FILE) if folder.path is not None else TENSORS_FILE
    specs = folder.config["components"]
    parts = folder.components()

    def build_all(meta: bool) -> dict[str, nn.Module]:
        built: dict[str, nn.Module] = {}

        def build(name: str, chain: tuple[str, ...]) -> nn.Module:
            if name in built:
                return built[name]
            if name in chain:
                raise CheckpointError(f"{where}: components depend on each other in a cycle ({' -> '.join(chain + (name,))})")
            spec = specs[name]
            cls = registry.component_classes().get(spec["class"], object)  # unknown: build_component says so
            inputs = {arg: build(src, chain + (name,)) for arg, src in _component_inputs(cls).items()}
            if meta:
                with torch.device("meta"):
                    module = build_component(spec, f"{where}: components.{name}", **inputs)
                check_state_dict(module, parts.get(name, {}), f"{source}: component {name!r}")
            else:
                module = build_component(spec, f"{where}: components.{name}", **inputs)
                load_state_dict_strict(module, parts.get(name, {}), f"{source}: component {name!r}")
            built[name] = module.eval()
            return module

        for name in specs:
            build(name, ())
        return built

    # First on the meta device (no memory): a config.json with negative or absurd sizes, or one that does not
    # fit the stored tensors, is refused in one line before anything is allocated.
    build_all(meta=True)
    built = build_all(meta=False)
    return {name: built[name] for name in specs}


def load_method(folder: str | Path, device: str | torch.device = "cpu") -> Method:
    """Rebuild a method (eval mode, no grads) from a model folder: its components built and loaded
    (`build_components`), assembled by the registered method class (`Method.from_components`)."""
    folder = Path(folder)
    mf = load_model_folder(folder)
    cfg = mf.config
    spec = registry.get(cfg["method"])
    parts = build_components(mf)
    missing = [name for name in spec.components if name not in parts]
    if missing:
        raise ValueError(f"{folder}/config.json: component {missing[0]!r} missing for method {spec.name!r}")
    schedule = Schedule.from_dict(cfg["diffusion"]) if cfg.get("diffusion") else None
    method = spec.cls.from_components(parts, schedule, dict(cfg.get("method_kwargs") or {}))
    method.metadata = mf.metadata  # type: ignore[attr-defined]
    method.folder = folder  # type: ignore[attr-defined]
    return method.to(device).eval().requires_grad_(False)
