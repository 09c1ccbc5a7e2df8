"""Methods: one small interface (`Method`) for the DPM, PDAE, Diff-AE, the latent DPM and the classifiers.

The methods, their networks and their model-folder components are listed once, in `pdae.methods.registry`.
`build_method` makes a fresh method from a training config; `export_method` turns one into the tensors and
config.json of a model folder; `pdae.checkpoint.load_method` rebuilds it from a folder written by either (or by
`pdae import`).
"""

from __future__ import annotations

from typing import Any

import torch

from pdae.methods import registry
from pdae.methods.base import EpsPrediction, Method
from pdae.methods.diffae import DiffAE
from pdae.methods.dpm import DPM
from pdae.methods.latent import FeatureNetMethod, LatentClassifier, LatentDPM
from pdae.methods.pdae import PDAE, ClassConditionalPDAE
from pdae.methods.registry import FORMAT, MethodSpec, Net, build_method, register

# The benchmark's methods (pdae.methods.registry lists them, and any registered later: `registry.names()`).
METHOD_NAMES = registry.names()

__all__ = [
    "METHOD_NAMES", "FORMAT", "Method", "EpsPrediction", "DPM", "PDAE", "ClassConditionalPDAE", "DiffAE", "LatentDPM",
    "LatentClassifier", "FeatureNetMethod", "MethodSpec", "Net", "register", "build_method", "export_method",
]


def export_method(method: Method, state_override: dict[str, torch.Tensor] | None = None) -> tuple[dict, dict]:
    """(tensors, config) of a model folder. `state_override` maps parameter names of `method`
    (`method.named_parameters()`) to replacement values, e.g. the EMA weights."""
    tensors: dict[str, torch.Tensor] = {}
    components: dict[str, Any] = {}
    saved = {}
    if state_override:
        params = dict(method.named_parameters())
        saved = {name: params[name].detach().clone() for name in state_override}
        with torch.no_grad():
            for name, value in state_override.items():
                params[name].copy_(value)
    try:
        for cname, module in method.components().items():
            for key, value in method.component_state(cname, module).items():
                tensors[f"{cname}.{key}"] = value.detach().cpu().contiguous().clone()
            components[cname] = {"class": type(module).__name__, "kwargs": getattr(module, "config", {})}
    finally:
        if saved:
            params = dict(method.named_parameters())
            with torch.no_grad():
                for name, value in saved.items():
                    params[name].copy_(value)
    config = {
        "format": FORMAT,
        "method": method.name,
        "components": components,
        "diffusion": method.schedule.to_dict() if method.schedule is not None else None,
        "method_kwargs": dict(method.method_kwargs),
    }
    return tensors, config
