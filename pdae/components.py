"""The components of a model folder: its `config.json` and its state dicts (the format is pdae.checkpoint's).

`config.json` names the method and, per component, a class of the method registry with its constructor
kwargs (`make_config`, `validate_config`); `build_component` constructs one (a class is resolved by its name in
pdae.methods.registry, never imported from a name in a file). Tensors are stored flat under
`"{component}.{param_key}"` (`state_dict_with_prefix`, `split_components`) and loaded only when keys and shapes
match exactly (`check_state_dict`, `load_state_dict_strict`). Every problem is a one-line `CheckpointError`
naming the file and key. pdae.checkpoint re-exports every public name: import them from there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from pdae.methods import registry
from pdae.methods.registry import FORMAT
from pdae.safe_pickle import CheckpointError, _first_line

__all__ = [
    "CONFIG_KEYS",
    "build_component",
    "check_state_dict",
    "load_state_dict_strict",
    "make_config",
    "split_components",
    "state_dict_with_prefix",
    "validate_config",
]

CONFIG_KEYS = ("format", "method", "components", "diffusion", "method_kwargs")
# The methods, and the component classes a config.json may name, are those of the method registry
# (pdae.methods.registry): a class is resolved by its name there, never imported from a name in a file.


def _component_inputs(cls: type) -> dict[str, str]:
    """Constructor arguments of `cls` that are other components of the same folder ({argument: component}): the
    gradient estimator holds the frozen prior, and the folder stores only its new parts under `estimator.`."""
    return dict(getattr(cls, "component_inputs", {}))


_MAX_KEYS_SHOWN = 3


def _show_keys(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_KEYS_SHOWN])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _MAX_KEYS_SHOWN else "")


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
    if config["method"] not in registry.names():
        raise CheckpointError(
            f"{where}: unknown method {config['method']!r} (expected one of {', '.join(registry.names())})"
        )
    classes = registry.component_classes()
    components = config["components"]
    if not isinstance(components, dict) or not components:
        raise CheckpointError(f"{where}: 'components' must be a non-empty object")
    for name, spec in components.items():
        at = f"{where}: components.{name}"
        if not isinstance(name, str) or not name or "." in name:
            raise CheckpointError(f"{where}: invalid component name {name!r} (non-empty, no '.')")
        if not isinstance(spec, dict) or set(spec) != {"class", "kwargs"}:
            raise CheckpointError(f"{at}: expected an object with exactly 'class' and 'kwargs'")
        if spec["class"] not in classes:
            raise CheckpointError(f"{at}: unknown class {spec['class']!r} (known: {', '.join(sorted(classes))})")
        if not isinstance(spec["kwargs"], dict):
            raise CheckpointError(f"{at}.kwargs: expected an object")
        for argument, source in _component_inputs(classes[spec["class"]]).items():
            if source not in components:
                raise CheckpointError(f"{at}: {spec['class']} needs component {source!r} as its {argument}")
    diffusion = config["diffusion"]
    if diffusion is not None and (not isinstance(diffusion, dict) or not isinstance(diffusion.get("kind"), str)):
        raise CheckpointError(f"{where}: 'diffusion' must be null or an object with a string 'kind'")
    if not isinstance(config["method_kwargs"], dict):
        raise CheckpointError(f"{where}: 'method_kwargs' must be an object")


def _component_class(class_name: str) -> type:
    classes = registry.component_classes()
    if class_name not in classes:
        raise CheckpointError(f"unknown component class {class_name!r} (known: {', '.join(sorted(classes))})")
    return classes[class_name]


def build_component(spec: Mapping[str, Any], where: str = "component", **extra: Any) -> nn.Module:
    """Construct `spec["class"](**spec["kwargs"], **extra)` (weights untouched).

    :param spec: {"class": a component class name of the method registry, "kwargs": constructor kwargs}.
    :param where: names the spec in error messages (e.g. "run/config.json: components.unet").
    :param extra: constructor arguments that are not JSON values, e.g. `prior=` of GradientEstimator.
    """
    if not isinstance(spec, Mapping) or "class" not in spec or not isinstance(spec.get("kwargs"), Mapping):
        raise CheckpointError(f"{where}: expected {{'class': ..., 'kwargs': {{...}}}}, got {spec!r}")
    cls = _component_class(spec["class"])
    try:
        return cls(**spec["kwargs"], **extra)
    except (TypeError, ValueError, RuntimeError) as exc:  # RuntimeError: e.g. a negative channel count
        raise CheckpointError(f"{where}: cannot build {spec['class']}: {_first_line(exc)}") from None
    except MemoryError:
        raise CheckpointError(f"{where}: cannot build {spec['class']}: out of memory (absurd sizes?)") from None


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

