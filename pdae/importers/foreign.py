"""Foreign pre-trained DPMs as PDAE's frozen prior: reading diffusers `UNet2DModel` pipeline folders and openai
ADM (guided-diffusion / improved-diffusion) checkpoints, and converting them into our "dpm" model folder.

The network modules (`DiffusersPrior`, `AdmUNet`) and the pure key / flag / schedule mapping live in
`pdae.nets.adapters`; this module does the file reading (safetensors, or `.bin`/`.pt` through
`pdae.checkpoint.safe_torch_load`, never executing code) and wraps the prior in a `DPM` method:

  load_prior    kind "native" | "diffusers" | "adm" + path -> `DPM(prior, schedule)`, the object
                `pdae.methods.build_method("pdae", ..., prior=...)` takes (the prior's own schedule).
  import_prior  the same, written as a "dpm" model folder (`pdae import diffusers|adm`).

Every bad input is a one-line `CheckpointError`/`ValueError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from pdae.checkpoint import CheckpointError, load_state_dict_strict, safe_torch_load
from pdae.diffusion.schedule import Schedule
from pdae.nets.adapters import (
    AdmUNet,
    DiffusersPrior,
    adm_options,
    adm_schedule,
    adm_unet_kwargs,
    diffusers_schedule,
    rename_legacy_attention,
)

__all__ = ["PRIOR_KINDS", "WEIGHT_FILES", "import_prior", "load_adm_prior", "load_diffusers_prior", "load_prior"]

PRIOR_KINDS = ("native", "diffusers", "adm")
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A flat state dict from safetensors, or from a pickle read without executing code."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({str(exc).splitlines()[0]})") from None
    sd = safe_torch_load(path)
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: expected a flat state dict of tensors")
    return dict(sd)


def load_diffusers_prior(folder: str | Path) -> tuple[DiffusersPrior, Schedule]:
    """(prior, schedule) from a diffusers pipeline folder as published on the Hub.

    Layout: `model_index.json` (its "unet" entry must be a UNet2DModel), `unet/config.json`,
    `unet/diffusion_pytorch_model.safetensors` (or `.bin`), `scheduler/scheduler_config.json`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a diffusers folder (it {'is a file' if folder.exists() else 'does not exist'})")
    index = folder / "model_index.json"
    if index.is_file():
        entry = _read_json(index).get("unet")
        if not (isinstance(entry, list) and len(entry) == 2):
            raise CheckpointError(f"{index}: no 'unet' component")
        if entry[1] != "UNet2DModel":
            raise CheckpointError(f"{index}: unet is a {entry[1]}; only UNet2DModel priors are supported")
    unet_dir = folder / "unet"
    config_path, sched_path = unet_dir / "config.json", folder / "scheduler" / "scheduler_config.json"
    unet_config, sched_config = _read_json(config_path), _read_json(sched_path)
    try:
        schedule = diffusers_schedule(sched_config, str(sched_path))
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    weights = next((unet_dir / name for name in WEIGHT_FILES if (unet_dir / name).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{unet_dir}: no weights (expected one of {', '.join(WEIGHT_FILES)}; sharded weights unsupported)")
    sd = _read_weights(weights)
    try:
        prior = DiffusersPrior(unet_config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{config_path}: {str(exc).splitlines()[0]}") from None
    load_state_dict_strict(prior.unet, rename_legacy_attention(sd, set(prior.unet.state_dict())), str(weights))
    return prior.eval(), schedule


def load_adm_prior(
    path: str | Path, flags: str | Sequence[str] | Mapping[str, Any] = "", family: str = "guided"
) -> tuple[AdmUNet, Schedule]:
    """(prior, schedule) from an openai checkpoint (`.pt` state dict, read without executing code, or
    `.safetensors`) and the flags it was trained with (`adm_options`)."""
    path = Path(path)
    opts = adm_options(flags, family)
    kwargs, schedule = adm_unet_kwargs(opts, family), adm_schedule(opts)
    sd = _read_weights(path)
    unet = AdmUNet(**kwargs)
    load_state_dict_strict(unet, sd, str(path))
    return unet.eval(), schedule


def load_prior(kind: str, path: str | Path, device: str | torch.device = "cpu", **opts: Any) -> Any:
    """A frozen pre-trained DPM as a `DPM(unet=<prior>, schedule=<its schedule>)` method (eval, no grads).

    :param kind: "native" (our model folder of a trained/imported DPM), "diffusers" (a pipeline folder,
        `load_diffusers_prior`) or "adm" (an openai checkpoint; opts `flags`, `family`, `load_adm_prior`).
    """
    from pdae.checkpoint import load_method
    from pdae.methods import DPM

    if kind not in PRIOR_KINDS:
        raise ValueError(f"prior kind {kind!r} unknown; expected one of {PRIOR_KINDS}")
    allowed = {"native": set(), "diffusers": set(), "adm": {"flags", "family"}}[kind]
    extra = sorted(set(opts) - allowed)
    if extra:
        raise ValueError(f"prior kind {kind!r}: unexpected option {extra[0]!r} (allowed: {sorted(allowed) or 'none'})")
    if kind == "native":
        method = load_method(path, device)
        if not isinstance(method, DPM):
            raise CheckpointError(f"{path}: a {method.name!r} model folder; --dpm needs a 'dpm' folder")
        return method
    prior, schedule = load_diffusers_prior(path) if kind == "diffusers" else load_adm_prior(path, **opts)
    dpm = DPM(prior, schedule)
    dpm.metadata = {"source": kind, "path": str(path), **opts}  # type: ignore[attr-defined]
    return dpm.to(device).eval().requires_grad_(False)


def import_prior(kind: str, path: str | Path, out_dir: str | Path, **opts: Any) -> Path:
    """Convert a foreign prior into our "dpm" model folder (components.unet = DiffusersPrior/AdmUNet,
    weights `unet.*`, the prior's schedule in `diffusion`); `--dpm out_dir` then works unchanged."""
    from pdae.checkpoint import save_model_folder, sha256_file
    from pdae.methods import export_method

    if kind == "native":
        raise ValueError("prior kind 'native' is already a model folder")
    dpm = load_prior(kind, path, **opts)
    tensors, config = export_method(dpm)
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    metadata = {
        "source": f"import-{kind}",
        "files": {str(p.relative_to(path) if path.is_dir() else p.name): sha256_file(p) for p in files},
        **{k: v for k, v in opts.items() if isinstance(v, (str, int, float, bool))},
    }
    return save_model_folder(out_dir, tensors, config, metadata)
