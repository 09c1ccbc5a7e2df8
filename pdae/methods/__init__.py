"""Methods: one small interface (`Method`) for the DPM, PDAE, Diff-AE, the latent DPM and the classifiers.

`build_method` makes a fresh method from a training config; `export_method` turns one into the tensors and
config.json of a model folder; `load_method` rebuilds it from a folder written by either (or by
`pdae import`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pdae.diffusion.schedule import Schedule
from pdae.methods.base import EpsPrediction, Method
from pdae.methods.diffae import DiffAE
from pdae.methods.dpm import DPM
from pdae.methods.latent import FeatureNetMethod, LatentClassifier, LatentDPM
from pdae.methods.pdae import PDAE, ClassConditionalPDAE

METHOD_NAMES = ("dpm", "pdae", "pdae_class", "diffae", "latent", "classifier", "feature_net")
FORMAT = "pdae-bench/1"

__all__ = [
    "METHOD_NAMES", "Method", "EpsPrediction", "DPM", "PDAE", "ClassConditionalPDAE", "DiffAE", "LatentDPM",
    "LatentClassifier", "FeatureNetMethod", "build_method", "export_method", "load_method",
]


def _construct(cls: type, kwargs: dict[str, Any], key: str, **fixed: Any) -> nn.Module:
    """cls(**fixed, **kwargs) with a one-line error naming the config key on a bad argument."""
    clash = sorted(set(kwargs) & set(fixed))
    if clash:
        raise ValueError(f"{key}.{clash[0]}: set by the data/prior, remove it from the config")
    try:
        return cls(**fixed, **kwargs)
    except TypeError as exc:
        raise ValueError(f"{key}: {exc}") from None


def _nets(cfg_nets: dict[str, Any], name: str) -> dict[str, Any]:
    value = cfg_nets.get(name, {})
    if not isinstance(value, dict):
        raise ValueError(f"config.nets.{name}: expected a mapping of constructor arguments")
    return dict(value)


def build_method(
    name: str,
    cfg_nets: dict[str, Any],
    cfg_method: dict[str, Any],
    cfg_diffusion: dict[str, Any],
    data_info: dict[str, Any],
    prior: Method | None = None,
    encoder: Method | None = None,
) -> Method:
    """A freshly initialised method.

    :param data_info: `image_size`, `channels`, `num_classes`, `num_attributes` of the training data.
    :param prior: the trained DPM (PDAE and its class-conditional variant build on its frozen U-Net).
    :param encoder: the trained autoencoder whose latents the latent DPM / classifier model.
    """
    from pdae.nets.classifier import FeatureNet, LinearHead
    from pdae.nets.cond_unet import DiffAEUNet
    from pdae.nets.encoder import SemanticEncoder
    from pdae.nets.gradient_estimator import GradientEstimator
    from pdae.nets.latent_mlp import LatentMLP
    from pdae.nets.unet import UNet

    unknown = sorted(set(cfg_nets) - set(_NETS_KEYS.get(name, ())))
    if unknown:
        raise ValueError(f"config.nets.{unknown[0]}: not used by method {name!r} (expected {_NETS_KEYS[name]})")
    size, channels = data_info["image_size"], data_info["channels"]
    method_kwargs = dict(cfg_method)

    def schedule(default: dict[str, Any]) -> Schedule:
        return Schedule.from_dict(cfg_diffusion or default)

    if name == "dpm":
        unet = _construct(UNet, _nets(cfg_nets, "unet"), "config.nets.unet", in_channels=channels)
        return DPM(unet, schedule({"kind": "linear", "T": 1000}), **method_kwargs)
    if name in ("pdae", "pdae_class"):
        if not isinstance(prior, DPM):
            raise ValueError(f"method {name} needs a trained DPM (--dpm DIR)")
        prior_unet = prior.unet
        prior_unet.requires_grad_(False)
        if name == "pdae":
            est = _construct(GradientEstimator, _nets(cfg_nets, "estimator"), "config.nets.estimator", prior=prior_unet)
            enc_kwargs = _nets(cfg_nets, "encoder")
            enc_kwargs.setdefault("latent_dim", est.config["latent_dim"])
            enc = _construct(SemanticEncoder, enc_kwargs, "config.nets.encoder", image_size=size, in_channels=channels)
            return PDAE(enc, est, prior.schedule, **method_kwargs)
        est = _construct(
            GradientEstimator, _nets(cfg_nets, "estimator"), "config.nets.estimator",
            prior=prior_unet, num_classes=data_info["num_classes"],
        )
        return ClassConditionalPDAE(est, prior.schedule, **method_kwargs)
    if name == "diffae":
        model = _construct(DiffAEUNet, _nets(cfg_nets, "model"), "config.nets.model", image_size=size, in_channels=channels)
        return DiffAE(model, schedule({"kind": "linear", "T": 1000}))
    if name in ("latent", "classifier"):
        if encoder is None:
            raise ValueError(f"method {name} needs a trained autoencoder (--encoder DIR)")
        dim = int(encoder.latent_dim)
        if name == "latent":
            net = _construct(LatentMLP, _nets(cfg_nets, "net"), "config.nets.net", latent_dim=dim)
            return LatentDPM(net, schedule({"kind": "const", "T": 1000, "beta": 0.008}), dim, **method_kwargs)
        targets = method_kwargs.get("targets", "labels")
        outputs = data_info["num_attributes"] if targets == "attributes" else data_info["num_classes"]
        if not outputs:
            raise ValueError(f"method.targets: the dataset has no {targets}")
        head = _construct(LinearHead, _nets(cfg_nets, "head"), "config.nets.head", latent_dim=dim, num_outputs=outputs)
        return LatentClassifier(head, dim, **method_kwargs)
    if name == "feature_net":
        if not data_info.get("num_classes"):
            raise ValueError("method feature_net: the dataset has no class labels")
        net = _construct(
            FeatureNet, _nets(cfg_nets, "net"), "config.nets.net",
            image_size=size, in_channels=channels, num_classes=data_info["num_classes"],
        )
        return FeatureNetMethod(net)
    raise ValueError(f"unknown method {name!r}; expected one of {', '.join(METHOD_NAMES)}")


_NETS_KEYS = {
    "dpm": ("unet",), "pdae": ("encoder", "estimator"), "pdae_class": ("estimator",), "diffae": ("model",),
    "latent": ("net",), "classifier": ("head",), "feature_net": ("net",),
}


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


def load_method(folder: str | Path, device: str | torch.device = "cpu") -> Method:
    """Rebuild a method (eval mode, no grads) from a model folder."""
    from pdae.checkpoint import build_components, load_model_folder

    folder = Path(folder)
    mf = load_model_folder(folder)
    cfg = mf.config
    name = cfg.get("method")
    parts = build_components(mf)
    mkw = dict(cfg.get("method_kwargs") or {})
    sched = Schedule.from_dict(cfg["diffusion"]) if cfg.get("diffusion") else None

    def need(cname: str) -> nn.Module:
        if cname not in parts:
            raise ValueError(f"{folder}/config.json: component {cname!r} missing for method {name!r}")
        return parts[cname]

    if name == "dpm":
        method: Method = DPM(need("unet"), sched)
    elif name == "pdae":
        method = PDAE(need("encoder"), need("estimator"), sched, **mkw)
    elif name == "pdae_class":
        method = ClassConditionalPDAE(need("estimator"), sched, **mkw)
    elif name == "diffae":
        method = DiffAE(need("model"), sched)
    elif name == "latent":
        net = need("net")
        method = LatentDPM(net, sched, net.config["latent_dim"], **mkw)
        method.stats.load_state_dict(need("stats").state_dict())
    elif name == "classifier":
        head = need("head")
        method = LatentClassifier(head, head.config["latent_dim"], **mkw)
        method.stats.load_state_dict(need("stats").state_dict())
    elif name == "feature_net":
        method = FeatureNetMethod(need("net"))
    else:
        raise ValueError(f"{folder}/config.json: unknown method {name!r}")
    method.metadata = mf.metadata  # type: ignore[attr-defined]
    method.folder = folder  # type: ignore[attr-defined]
    return method.to(device).eval().requires_grad_(False)
