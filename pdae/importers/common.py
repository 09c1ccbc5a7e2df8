"""Helpers shared by the importers (pdae/importers/): YAML reading, state-dict checks on the meta device,
overrides, metadata, atomic saving, and the folder-or-file check of each import kind."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from pdae.checkpoint import CheckpointError, build_component, save_model_folder, sha256_file

Converted = tuple[dict[str, Tensor], dict[str, Any]]  # (tensors, config.json) of a model folder


# ---------------------------------------------------------------------------------------------------
# Small helpers.


def _schedule_dict(kind: str, T: int, **params: float) -> dict[str, Any]:
    from pdae.diffusion.schedule import Schedule

    return Schedule.from_name(kind, T, **params).to_dict()


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not valid YAML ({first})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a YAML mapping, got {type(data).__name__}")
    return data


def _mapping(obj: Any, key: str, where: str) -> dict[str, Any]:
    if not isinstance(obj, Mapping) or key not in obj:
        have = ", ".join(sorted(map(str, obj))[:8]) if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{where}: no {key!r} entry (found: {have})")
    value = obj[key]
    if not isinstance(value, Mapping):
        raise CheckpointError(f"{where}: {key!r} is a {type(value).__name__}, expected a mapping")
    return dict(value)


def _state_dict(obj: Any, key: str, where: str) -> dict[str, Tensor]:
    """obj[key] as a state dict of tensors; a DDP `module.` prefix on every key is removed."""
    sd = _mapping(obj, key, where)
    bad = [k for k, v in sd.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{where}: {key}[{bad[0]!r}] is not a tensor")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _on_meta(build: Callable[[], nn.Module], where: str) -> nn.Module:
    """Build a module on the meta device (no memory, no init cost); ValueErrors become CheckpointErrors."""
    try:
        with torch.device("meta"):
            return build()
    except CheckpointError:
        raise
    except (TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{where}: {first}") from None


def _meta_component(spec: Mapping[str, Any], where: str, **extra: Any) -> nn.Module:
    return _on_meta(lambda: build_component(spec, where, **extra), where)


def _overrides(config: Mapping[str, Any] | None, allowed: tuple[str, ...], where: str) -> dict[str, dict[str, Any]]:
    """Validate `config` = {component: {kwarg: value}}; only the importer's components are allowed."""
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise CheckpointError(f"{where}: expected a JSON object {{component: {{argument: value}}}}")
    out = {}
    for name, kwargs in config.items():
        if name not in allowed:
            raise CheckpointError(f"{where}: unknown component {name!r} (this import has: {', '.join(allowed)})")
        if not isinstance(kwargs, Mapping):
            raise CheckpointError(f"{where}: {name} must map constructor arguments to values")
        out[name] = dict(kwargs)
    return out


def _metadata(importer: str, files: list[Path], **extra: Any) -> dict[str, Any]:
    from pdae.provenance import code_version, utc_now

    main = files[0]
    return {
        "source": {
            "importer": importer,
            "path": str(main.resolve()),
            "sha256": sha256_file(main),
            "files": {str(f.resolve()): sha256_file(f) for f in files},
        },
        "code_version": code_version(),
        "created": utc_now(),
        **{k: v for k, v in extra.items() if v is not None},
    }


def _save(out_dir: str | Path, converted: Converted, metadata: dict[str, Any], force: bool,
          staging: Path | None = None) -> Path:
    """Write the converted folder; an existing one is replaced (atomic swap) only with `force` and only if it
    is one of our model folders (`pdae.fsutil.check_replaceable`)."""
    from pdae.fsutil import OutputError, check_replaceable

    out_dir = Path(out_dir)
    try:
        check_replaceable(out_dir, force=force)
    except OutputError as exc:
        raise CheckpointError(str(exc)) from None
    tensors, config = converted
    return save_model_folder(out_dir, tensors, config, metadata, staging=staging)


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# Importers (files -> model folder).


# What each import kind reads (`check_source_kind`): a folder or a file, and a hint for the other layout.
_SOURCE_FOLDER = "the folder holding config.yml and checkpoint.pt"
_SOURCE_KINDS: dict[str, tuple[str, str, str]] = {  # kind: (folder/file, what it expects, hint for the other layout)
    "pdae-dpm": ("folder", _SOURCE_FOLDER, "for a Diff-AE DDIM last.ckpt use `pdae import diffae-ddim`"),
    "pdae-autoencoder": (
        "folder", _SOURCE_FOLDER, "for a Diff-AE autoencoder last.ckpt use `pdae import diffae-autoencoder`"
    ),
    "pdae-latent": ("folder", _SOURCE_FOLDER, "for a Diff-AE latent last.ckpt use `pdae import diffae-latent`"),
    "diffae-ddim": ("file", "the `last.ckpt` file", "for the official PDAE DPM folder use `pdae import pdae-dpm`"),
    "diffae-autoencoder": (
        "file", "the `last.ckpt` file", "for the official PDAE autoencoder folder use `pdae import pdae-autoencoder`"
    ),
    "diffae-latent": ("file", "the `last.ckpt` file", "for the official PDAE latent folder use `pdae import pdae-latent`"),
    "diffusers": (
        "folder", "the diffusers model folder (model_index.json or unet/)",
        "for a guided/improved-diffusion .pt file use `pdae import adm`",
    ),
    "adm": (
        "file", "the guided/improved-diffusion `.pt` checkpoint file", "for a diffusers folder use `pdae import diffusers`"
    ),
}


def check_source_kind(kind: str, src: str | Path) -> None:
    """One-line CheckpointError when SRC exists but is a folder where `kind` reads a file, or vice versa.
    A missing SRC passes: each importer reports it in its own words."""
    if kind not in _SOURCE_KINDS:
        return
    path = Path(src)
    want, what, other = _SOURCE_KINDS[kind]
    if want == "folder" and path.exists() and not path.is_dir():
        hint = f"give its folder {path.parent}" if path.name in ("config.yml", "checkpoint.pt") else other
        raise CheckpointError(f"{path}: is a file; {kind} expects {what} ({hint})")
    if want == "file" and path.is_dir():
        inside = path / "last.ckpt"
        hint = f"did you mean {inside}?" if kind.startswith("diffae-") and inside.is_file() else other
        raise CheckpointError(f"{path}: is a folder; {kind} expects {what} ({hint})")
