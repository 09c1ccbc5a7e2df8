"""The method registry: one table from a method name to its class, the networks it builds from a training config,
the components of its model folder and the classes they may hold.

`build_method` (here), `pdae.checkpoint` (which config.json names and classes it accepts, `load_method`),
`pdae.config` (the `method` / `nets` sections of a training config) and the `pdae train` command all read this
table; nothing else lists the methods. Adding a method is one `Method` subclass (with `from_components`) and one
line:

    register(MethodSpec("toy", ToyDPM, nets={"unet": Net(UNet, fixed=("in_channels",))}, diffusion=LINEAR_1000))

A component class is named in config.json by its class name (as EDM's pickles and diffusers' `_class_name` name
theirs), resolved here, never by importing a module named in a file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import nn

from pdae.diffusion.schedule import Schedule
from pdae.methods.base import Method
from pdae.methods.diffae import DiffAE
from pdae.methods.dpm import DPM
from pdae.methods.latent import FeatureNetMethod, LatentClassifier, LatentDPM, LatentStats
from pdae.methods.pdae import PDAE, ClassConditionalPDAE
from pdae.nets.adapters import AdmUNet, DiffusersPrior
from pdae.nets.classifier import FeatureNet, LinearHead
from pdae.nets.cond_unet import DiffAEUNet
from pdae.nets.encoder import SemanticEncoder
from pdae.nets.gradient_estimator import GradientEstimator
from pdae.nets.latent_mlp import LatentMLP
from pdae.nets.unet import UNet

__all__ = [
    "FORMAT", "LINEAR_1000", "PRIORS", "Net", "MethodSpec", "register", "unregister", "get", "names", "specs",
    "component_classes", "fixed_arguments", "build_method",
]

#: the format tag of a model folder's config.json
FORMAT = "pdae-bench/1"
#: the frozen priors a DPM / PDAE folder may hold: ours, openai ADM checkpoints, diffusers UNet2DModel
PRIORS: tuple[type[nn.Module], ...] = (UNet, AdmUNet, DiffusersPrior)
#: DDPM's linear schedule, T = 1000 (the default of every image diffusion model here)
LINEAR_1000 = MappingProxyType({"kind": "linear", "T": 1000})


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Net:
    """A network a method builds from `config.nets.<key>` (its keyword arguments) and stores as component <key>.

    :param cls: the network class.
    :param fixed: constructor arguments set by the data or by the models it builds on, never by the config
        (`in_channels`, `image_size`, `num_classes`, `num_outputs`, `prior`, `latent_dim`: `fixed_arguments`).
    :param same_as: {argument: other net key}: the argument defaults to that (earlier) network's value of it
        (PDAE's encoder width follows its estimator's `latent_dim`).
    """

    cls: type[nn.Module]
    fixed: tuple[str, ...] = ()
    same_as: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodSpec:
    """One method.

    :param name: its name in configs, model folders (config.json `method`) and records.
    :param cls: the `Method` subclass; `cls.from_components(parts, schedule, options)` makes it.
    :param nets: config.nets key -> `Net`, built in this order by `build_method`.
    :param components: the components its model folder must hold -> the classes each may be; default: the nets'.
    :param optional: components its folder may also hold (Diff-AE's imported latent statistics).
    :param diffusion: the default of its own diffusion schedule (config.diffusion empty); None: it has none of its
        own (PDAE takes its prior's, classifiers have none).
    :param needs: the trained model it builds on: "dpm" (`--dpm`, a DPM method) or "encoder" (`--encoder`, an
        autoencoder whose latents it models); None.
    :param cli: its name on the `pdae train` command line (default: `name` with "-" for "_").
    """

    name: str
    cls: type[Method]
    nets: Mapping[str, Net]
    components: Mapping[str, tuple[type[nn.Module], ...]] | None = None
    optional: Mapping[str, tuple[type[nn.Module], ...]] = field(default_factory=dict)
    diffusion: Mapping[str, Any] | None = None
    needs: str | None = None
    cli: str | None = None

    def __post_init__(self) -> None:
        if self.needs not in (None, "dpm", "encoder"):
            raise ValueError(f"MethodSpec {self.name!r}: needs must be None, 'dpm' or 'encoder', got {self.needs!r}")
        if self.components is None:
            object.__setattr__(self, "components", {key: (net.cls,) for key, net in self.nets.items()})
        object.__setattr__(self, "nets", _frozen(self.nets))
        object.__setattr__(self, "components", _frozen(self.components))
        object.__setattr__(self, "optional", _frozen(self.optional))
        if self.diffusion is not None:
            object.__setattr__(self, "diffusion", _frozen(self.diffusion))
        if self.cli is None:
            object.__setattr__(self, "cli", self.name.replace("_", "-"))

    def classes(self) -> tuple[type[nn.Module], ...]:
        """Every component class a folder of this method may hold."""
        out: list[type[nn.Module]] = []
        for group in (*self.components.values(), *self.optional.values()):
            out += [c for c in group if c not in out]
        return tuple(out)


_REGISTRY: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add `spec` to the table. A name registered twice is an error unless it is the same spec, and so is a
    component class whose name another registered class already has (config.json names classes by name)."""
    old = _REGISTRY.get(spec.name)
    if old is not None and old != spec:
        raise ValueError(f"method {spec.name!r} is already registered (as {old.cls.__name__})")
    known = component_classes()
    clash = [c.__name__ for c in spec.classes() if known.get(c.__name__, c) is not c]
    if clash:
        raise ValueError(f"method {spec.name!r}: another component class is already named {clash[0]!r}")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a method (tests that register a toy method)."""
    _REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
    """The registered method names, in registration order."""
    return tuple(_REGISTRY)


def specs() -> tuple[MethodSpec, ...]:
    return tuple(_REGISTRY.values())


def get(name: str) -> MethodSpec:
    """The spec of `name`; ValueError naming the known methods otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; expected one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def component_classes() -> dict[str, type[nn.Module]]:
    """Class name -> class, for every component class of every registered method (what config.json may name)."""
    out: dict[str, type[nn.Module]] = {}
    for spec in _REGISTRY.values():
        for cls in spec.classes():
            out.setdefault(cls.__name__, cls)
    return out


# ---------------------------------------------------------------------------------------------------
# Building a fresh method from a training config.


def fixed_arguments(
    data_info: Mapping[str, Any], options: Mapping[str, Any], prior: Any = None, encoder: Any = None
) -> dict[str, Callable[[], Any]]:
    """Argument name -> a function giving the value of a `Net.fixed` argument (called only for the arguments a
    network takes, so a missing prior, encoder or label set errs only where it is needed)."""

    def outputs() -> Any:
        targets = options.get("targets", "labels")
        n = data_info["num_attributes"] if targets == "attributes" else data_info["num_classes"]
        if not n:
            raise ValueError(f"method.targets: the dataset has no {targets}")
        return n

    return {
        "in_channels": lambda: data_info["channels"],
        "image_size": lambda: data_info["image_size"],
        "num_classes": lambda: data_info["num_classes"],
        "num_outputs": outputs,
        "prior": lambda: prior.unet,
        "latent_dim": lambda: int(encoder.latent_dim),
    }


def _construct(cls: type, kwargs: dict[str, Any], key: str, **fixed: Any) -> nn.Module:
    """cls(**fixed, **kwargs) with a one-line error naming the config key on a bad argument."""
    clash = sorted(set(kwargs) & set(fixed))
    if clash:
        raise ValueError(f"{key}.{clash[0]}: set by the data/prior, remove it from the config")
    try:
        return cls(**fixed, **kwargs)
    except TypeError as exc:
        raise ValueError(f"{key}: {exc}") from None


def _net_kwargs(cfg_nets: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = cfg_nets.get(key, {})
    if not isinstance(value, dict):
        raise ValueError(f"config.nets.{key}: expected a mapping of constructor arguments")
    return dict(value)


def build_method(
    name: str,
    cfg_nets: Mapping[str, Any],
    cfg_method: Mapping[str, Any],
    cfg_diffusion: Mapping[str, Any] | None,
    data_info: Mapping[str, Any],
    prior: Method | None = None,
    encoder: Method | None = None,
) -> Method:
    """A freshly initialised method from the sections of a training config.

    :param data_info: `image_size`, `channels`, `num_classes`, `num_attributes` of the training data.
    :param prior: the trained DPM (PDAE and its class-conditional variant build on its frozen U-Net).
    :param encoder: the trained autoencoder whose latents the latent DPM / classifier model.
    """
    spec = get(name)
    unknown = sorted(set(cfg_nets) - set(spec.nets))
    if unknown:
        raise ValueError(f"config.nets.{unknown[0]}: not used by method {name!r} (expected {tuple(spec.nets)})")
    if spec.needs == "dpm" and not isinstance(prior, DPM):
        raise ValueError(f"method {name} needs a trained DPM (--dpm DIR)")
    if spec.needs == "encoder" and encoder is None:
        raise ValueError(f"method {name} needs a trained autoencoder (--encoder DIR)")
    options = dict(cfg_method)
    spec.cls.check_data(dict(data_info), options)
    if spec.needs == "dpm":
        prior.unet.requires_grad_(False)
    fixed = fixed_arguments(data_info, options, prior, encoder)
    parts: dict[str, nn.Module] = {}
    for key, net in spec.nets.items():
        kwargs = _net_kwargs(cfg_nets, key)
        for argument, other in net.same_as.items():
            kwargs.setdefault(argument, parts[other].config[argument])
        parts[key] = _construct(net.cls, kwargs, f"config.nets.{key}", **{a: fixed[a]() for a in net.fixed})
    if spec.diffusion is not None:
        schedule: Schedule | None = Schedule.from_dict(dict(cfg_diffusion or spec.diffusion))
    else:
        schedule = prior.schedule if spec.needs == "dpm" else None
    return spec.cls.from_components(parts, schedule, options)


# ---------------------------------------------------------------------------------------------------
# The methods of the benchmark.

register(MethodSpec("dpm", DPM, nets={"unet": Net(UNet, fixed=("in_channels",))}, components={"unet": PRIORS},
                    diffusion=LINEAR_1000))
register(MethodSpec(
    "pdae", PDAE,
    nets={"estimator": Net(GradientEstimator, fixed=("prior",)),
          "encoder": Net(SemanticEncoder, fixed=("image_size", "in_channels"), same_as={"latent_dim": "estimator"})},
    components={"prior": PRIORS, "estimator": (GradientEstimator,), "encoder": (SemanticEncoder,)},
    needs="dpm",
))
register(MethodSpec(
    "pdae_class", ClassConditionalPDAE, nets={"estimator": Net(GradientEstimator, fixed=("prior", "num_classes"))},
    components={"prior": PRIORS, "estimator": (GradientEstimator,)}, needs="dpm",
))
register(MethodSpec("diffae", DiffAE, nets={"model": Net(DiffAEUNet, fixed=("image_size", "in_channels"))},
                    optional={"stats": (LatentStats,)}, diffusion=LINEAR_1000))
register(MethodSpec(
    "latent", LatentDPM, nets={"net": Net(LatentMLP, fixed=("latent_dim",))},
    components={"net": (LatentMLP,), "stats": (LatentStats,)}, diffusion={"kind": "const", "T": 1000, "beta": 0.008},
    needs="encoder",
))
register(MethodSpec(
    "classifier", LatentClassifier, nets={"head": Net(LinearHead, fixed=("latent_dim", "num_outputs"))},
    components={"head": (LinearHead,), "stats": (LatentStats,)}, needs="encoder",
))
register(MethodSpec("feature_net", FeatureNetMethod,
                    nets={"net": Net(FeatureNet, fixed=("image_size", "in_channels", "num_classes"))}))
