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

import dataclasses
import json
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
    if origin in (list, tuple):
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
    channels_last: str = "auto"               # auto (on CUDA) | on | off
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
        if len(self.betas) != 2:
            raise ConfigError(f"{where}.betas: expected two numbers, got {self.betas}")


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


def load_run_config(path: str | Path) -> RunConfig:
    """Read a YAML/JSON training config; any problem is a one-line ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text()) if path.suffix in (".yaml", ".yml") else json.loads(path.read_text())
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path}: not valid YAML/JSON ({first})") from None
    try:
        return from_dict(RunConfig, raw, "config")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
