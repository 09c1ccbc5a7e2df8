"""Training configuration: small dataclasses whose `from_dict` rejects unknown keys and wrong types.

A training config file (YAML or JSON) has five sections:

```yaml
data:      {name: digits, image_size: 16, channels: 1}   # -> pdae.data.build_dataset
diffusion: {kind: linear, T: 1000}                        # -> pdae.diffusion.schedule.Schedule.from_name
nets:      {unet: {...}, encoder: {...}}                  # constructor kwargs per component
method:    {gamma: 0.1, weighting: snr}                   # method options (pdae.methods)
train:     {images: 100000, batch_size: 64, lr: 1.0e-4}   # TrainConfig below
```
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import json
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or value is wrong; the message is one line naming the file and key."""


def _check_type(value: Any, annotation: Any, key: str) -> Any:
    """Return `value` converted to `annotation` where lossless (int -> float), else raise ConfigError."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        inner = args[0] if args else Any
        return [_check_type(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {type(value).__name__} {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {type(value).__name__} {value!r}")
        return value
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, key)
    return value


def from_dict(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types raise ConfigError naming `where.key`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (allowed: {', '.join(sorted(names))})")
    kwargs = {k: _check_type(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        obj = cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{where}: {exc}") from None
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(where)
    return obj


@dataclasses.dataclass
class TrainConfig:
    """Optimisation budget and loop settings (docs/protocol.md §4: Adam, EMA, budget in images seen)."""

    images: int = 100_000                     # budget: training images seen (the paper's unit)
    batch_size: int = 64                      # global batch (split over DDP ranks)
    lr: float = 1.0e-4                        # Adam learning rate (PDAE, Diff-AE: 1e-4)
    optimizer: str = "adam"                   # adam | adamw
    weight_decay: float = 0.0                 # AdamW weight decay (latent DPM: 0.01)
    betas: list[float] = dataclasses.field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float | None = None            # max grad norm (Diff-AE: 1.0; PDAE: none)
    ema_decay: float = 0.9999                 # EMA of trainable parameters, every step (the decay's ceiling)
    ema_warmup: bool = True                   # decay_n = min(ema_decay, (1 + n) / (10 + n)) at update n (see EMA)
    warmup_images: int = 0                    # linear LR warm-up
    log_every_images: int = 6_400             # JSONL log cadence
    resume_every_images: int = 12_800         # atomic resume-state cadence
    snapshot_images: list[int] = dataclasses.field(default_factory=list)  # EMA model snapshots (efficiency curves)
    num_workers: int = 0                      # DataLoader workers (0: in-process indexing)
    amp: str = "auto"                         # auto (bf16 for image nets on bf16 hardware) | bf16 | off
    channels_last: str = "auto"               # auto (on CUDA, and on CPU with bf16) | on | off
    compile: bool = False                     # torch.compile the training module (CUDA)

    def validate(self, where: str) -> None:
        if self.images <= 0:
            raise ConfigError(f"{where}.images: must be positive, got {self.images}")
        if self.batch_size <= 0:
            raise ConfigError(f"{where}.batch_size: must be positive, got {self.batch_size}")
        if self.optimizer not in ("adam", "adamw"):
            raise ConfigError(f"{where}.optimizer: expected adam or adamw, got {self.optimizer!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"{where}.ema_decay: must be in [0, 1), got {self.ema_decay}")
        if self.amp not in ("auto", "bf16", "off"):
            raise ConfigError(f"{where}.amp: expected auto, bf16 or off, got {self.amp!r}")
        if self.channels_last not in ("auto", "on", "off"):
            raise ConfigError(f"{where}.channels_last: expected auto, on or off, got {self.channels_last!r}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"{where}.betas: expected two numbers in [0, 1), got {self.betas}")
        if self.lr <= 0:
            raise ConfigError(f"{where}.lr: must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"{where}.weight_decay: must be >= 0, got {self.weight_decay}")
        if self.grad_clip is not None and self.grad_clip < 0:
            raise ConfigError(f"{where}.grad_clip: must be >= 0 or null (no clipping), got {self.grad_clip}")
        if self.warmup_images < 0:
            raise ConfigError(f"{where}.warmup_images: must be >= 0 (0: no warm-up), got {self.warmup_images}")
        for key in ("log_every_images", "resume_every_images"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{where}.{key}: must be positive, got {getattr(self, key)}")
        bad = [n for n in self.snapshot_images if not 0 < n <= self.images]
        if bad:
            raise ConfigError(f"{where}.snapshot_images: {bad[0]} is not in [1, train.images = {self.images}]")
        if self.num_workers < 0:
            raise ConfigError(f"{where}.num_workers: must be >= 0, got {self.num_workers}")


@dataclasses.dataclass
class RunConfig:
    """A whole training config file."""

    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    diffusion: dict[str, Any] = dataclasses.field(default_factory=lambda: {"kind": "linear", "T": 1000})
    nets: dict[str, Any] = dataclasses.field(default_factory=dict)
    method: dict[str, Any] = dataclasses.field(default_factory=dict)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int | None) -> None:
        super().__init__(f"duplicate key {key!r}" + (f" (line {line})" if line else ""))


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping with the same key twice (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, collections.abc.Hashable) and key in seen:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _unique_json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key, None)
        out[key] = value
    return out


def load_yaml_or_json(path: Path) -> Any:
    """Parse a YAML (.yaml/.yml) or JSON file: UTF-8, no python tags, no duplicate keys; ConfigError naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
        return json.loads(text, object_pairs_hook=_unique_json_object)
    except _DuplicateKey as exc:
        raise ConfigError(f"{path}: {exc}; each key may appear once per section") from None
    except (yaml.YAMLError, json.JSONDecodeError, RecursionError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path}: not valid YAML/JSON ({first})") from None


def load_run_config(path: str | Path) -> RunConfig:
    """Read a YAML/JSON training config; any problem is a one-line ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    raw = load_yaml_or_json(path)
    try:
        return from_dict(RunConfig, raw, "config")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


# ---------------------------------------------------------------------------------------------------
# The `method` and `nets` sections, checked against what each method's constructors take (before any work).

# The method class (whose keyword options after its networks and schedule form `method:`) and its networks
# (`nets.<key>`: class and the arguments set by the data / prior, not by the config) come from the method
# registry, pdae.methods.registry.


def _spec(method: str) -> Any:
    from pdae.methods import registry

    return registry.get(method)


def _options(cls: type, skip: int) -> dict[str, inspect.Parameter]:
    params = list(inspect.signature(cls.__init__).parameters.values())[1 + skip :]
    return {p.name: p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _check_options(cls: type, options: dict[str, Any], where: str, fixed: tuple[str, ...], positional: int) -> None:
    allowed = {k: v for k, v in _options(cls, positional).items() if k not in fixed}
    if not isinstance(options, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(options).__name__}")
    for key, value in options.items():
        if key in fixed:
            raise ConfigError(f"{where}.{key}: set from the data or the prior; remove it from the config")
        if key not in allowed:
            names = ", ".join(sorted(allowed)) or "none"
            raise ConfigError(f"{where}.{key}: unknown key for {cls.__name__} (allowed: {names})")
    hints = typing.get_type_hints(cls.__init__)
    for key, value in options.items():
        hint = hints.get(key, Any)
        value = _check_type(value, hint, f"{where}.{key}")
        default = allowed[key].default
        _check_range(key, value, default, f"{where}.{key}")


def _check_range(key: str, value: Any, default: Any, where: str) -> None:
    """Sizes are positive (a default of -1 marks "-1 = automatic"); rates such as dropout lie in [0, 1)."""
    if value is None:
        return
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_range(key, v, None, f"{where}[{i}]")
        return
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if value == -1 and isinstance(default, int) and default == -1:
            return
        if value < 1:
            raise ConfigError(f"{where}: must be a positive integer, got {value}")
    elif isinstance(value, float) and "dropout" in key and not 0.0 <= value < 1.0:
        raise ConfigError(f"{where}: must be in [0, 1), got {value}")


def check_method_options(method: str, options: dict[str, Any], where: str = "config.method") -> None:
    """`method:` holds only keyword options of the method's class, of the right types (ConfigError)."""
    cls = _spec(method).cls
    positional = [p for p in _options(cls, 0).values() if p.default is inspect.Parameter.empty]
    _check_options(cls, options, where, (), len(positional))


def check_nets(method: str, nets: dict[str, Any], where: str = "config.nets") -> None:
    """Each `nets.<name>` is a mapping of known constructor arguments of the right types and ranges."""
    spec_nets = _spec(method).nets
    known = sorted(spec_nets)
    for name, kwargs in nets.items():
        if name not in spec_nets:
            raise ConfigError(f"{where}.{name}: not used by method {method!r} (expected {', '.join(known)})")
        net = spec_nets[name]
        _check_options(net.cls, kwargs if kwargs is not None else {}, f"{where}.{name}", net.fixed, 0)


def net_kwarg(method: str, nets: dict[str, Any], name: str, key: str) -> Any:
    """`nets.<name>.<key>`, or the constructor's default."""
    given = (nets.get(name) or {})
    if key in given:
        return given[key]
    return _options(_spec(method).nets[name].cls, 0)[key].default


def check_depth(levels: int, image_size: int, where: str) -> None:
    """A U-Net with `levels` resolutions halves the image `levels - 1` times: the image side must be a
    multiple of 2^(levels - 1), so that the smallest feature map is at least 1 pixel and the skip
    connections line up."""
    factor = 2 ** (levels - 1)
    if image_size < factor or image_size % factor:
        raise ConfigError(f"{where}: {levels} levels halve the image {levels - 1} times, so data.image_size must be a "
                          f"multiple of {factor}; got {image_size} (smallest feature map {image_size / factor:g} px)")


def check_net_depths(method: str, nets: dict[str, Any], image_size: int, where: str = "config.nets") -> None:
    """The networks' depth against the image size, from the config (ConfigError naming the key): each network
    class names the arguments that set its depth and their rule (`SIZE_RULES`)."""
    for key, net in _spec(method).nets.items():
        for arg, rule in getattr(net.cls, "SIZE_RULES", {}).items():
            entries = len(net_kwarg(method, nets, key, arg))
            if rule == "levels":
                check_depth(entries, image_size, f"{where}.{key}.{arg}")
            elif rule == "stride2_to_4x4":  # PDAE's encoder (pdae.nets.encoder)
                if image_size != 4 * 2**entries:
                    raise ConfigError(f"{where}.{key}.{arg}: {entries} stride-2 convs take a {4 * 2**entries} px "
                                      f"image down to 4x4; data.image_size is {image_size} (give one entry per "
                                      f"halving)")
            else:
                raise ValueError(f"{net.cls.__name__}.SIZE_RULES[{arg!r}]: unknown rule {rule!r}")


def check_run_config(method: str, cfg: RunConfig, dpm_dir: str | Path | None = None,
                     encoder_dir: str | Path | None = None, *, check_inputs: bool = False) -> None:
    """Every value of a training config that can be checked without data or weights, before any work: the
    train section (its ranges), `data` (pdae.data.resolve_spec), `method` and `nets` against the method's
    constructors, the networks' depth against the image size, `diffusion`; with `check_inputs`, that the
    trained models the method builds on are given. ConfigError/DataError naming the key."""
    from pdae.data import resolve_spec
    from pdae.diffusion.schedule import Schedule

    from pdae.methods import registry

    if method not in registry.names():
        raise ConfigError(f"unknown method {method!r} (expected one of {', '.join(registry.names())})")
    method_spec = _spec(method)
    if check_inputs and method_spec.needs == "dpm" and dpm_dir is None:
        raise ConfigError(f"method {method} needs a trained DPM (--dpm DIR)")
    if check_inputs and method_spec.needs == "encoder" and encoder_dir is None:
        raise ConfigError(f"method {method} needs a trained autoencoder (--encoder DIR)")
    cfg.train.validate("config.train")
    spec = resolve_spec(cfg.data)
    check_method_options(method, cfg.method)
    if not isinstance(cfg.nets, dict):
        raise ConfigError(f"config.nets: expected a mapping, got {type(cfg.nets).__name__}")
    check_nets(method, cfg.nets)
    check_net_depths(method, cfg.nets, int(spec["image_size"]))
    if method_spec.diffusion is not None and cfg.diffusion:  # a schedule of its own (PDAE's is its prior's)
        try:
            Schedule.from_dict(cfg.diffusion)
        except (ValueError, TypeError, KeyError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"config.diffusion: {first}") from None
    if dpm_dir is not None and method_spec.needs == "dpm":
        config_json = Path(dpm_dir) / "config.json"
        try:
            unet = json.loads(config_json.read_text(encoding="utf-8"))["components"]["unet"]["kwargs"]
            levels = len(unet["channel_mult"])
        except (OSError, ValueError, KeyError, TypeError):
            return  # not readable here: loading the folder reports it
        check_depth(levels, int(spec["image_size"]), f"{config_json}: components.unet.kwargs.channel_mult")


def check_memory(method_name: str, cfg: RunConfig, info: dict[str, Any], prior: Any, encoder: Any,
                 dev: Any) -> None:
    """Refuse networks whose training state (fp32 weights, gradients, Adam moments, EMA: 20 bytes a parameter)
    exceeds the free memory, counted on the meta device (nothing allocated). Best effort: a network that
    cannot be built there is left to the real build."""
    import torch

    from pdae.run_control import TrainingError

    from pdae.methods import registry

    fixed = registry.fixed_arguments(info, cfg.method, prior, encoder)
    fixed["num_classes"] = lambda: info["num_classes"] or None
    total = 0
    for name, net in registry.get(method_name).nets.items():
        try:
            with torch.device("meta"):
                module = net.cls(**dict(cfg.nets.get(name) or {}), **{k: fixed[k]() for k in net.fixed})
        except Exception:  # noqa: BLE001 - the real build reports it
            return
        total += sum(p.numel() for p in module.parameters() if p.is_meta)
    need = 20 * total
    if dev.type == "cuda":
        free = torch.cuda.mem_get_info(dev)[0]
    else:
        free = _available_host_memory()
    if free is not None and need > free:
        raise TrainingError(f"config.nets: the networks have {total:,} parameters; their training state needs "
                            f"{need / 2**30:.1f} GiB, more than the {free / 2**30:.1f} GiB free on {dev.type}")


def _available_host_memory() -> int | None:
    import os

    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None
