"""Networks that record their own constructor arguments as `self.config`.

`self.config` is what a model folder's `config.json` stores as a component's `kwargs` and what
`pdae.checkpoint.build_component` passes back to the constructor, so it must be exactly the arguments of the
call (defaults included) as JSON values. Writing that dict by hand in every network repeated each constructor's
signature once more; `@register_to_config` on `__init__` takes it from the call instead. The design is
diffusers' `ConfigMixin.register_to_config` (a decorator on `__init__` that binds the call's arguments, defaults
applied, and stores them as the model's config), reduced to what our networks need:

- arguments that are not configuration (the frozen prior of the gradient estimator) are named in `ignore`;
- `*args` / `**kwargs` are never recorded: a subclass that forwards `**kwargs` to a decorated parent (the
  openai-options `AdmUNet` over `UNet`) inherits the parent's record and adds its own keys with
  `self.config.update(...)`;
- tuples become lists (JSON has no tuples);
- a constructor that normalises an argument (`channel_mult` to ints, `dropout=None` to the prior's) records the
  normalised value with `self.config.update(...)`, so the stored config rebuilds the same network.

The record is made before the constructor body runs, so the body may read and refine it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

__all__ = ["json_value", "register_to_config"]

F = TypeVar("F", bound=Callable[..., None])


def json_value(value: Any) -> Any:
    """`value` with tuples (and lists) as lists and mappings as dicts, recursively; other values unchanged."""
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, Mapping):
        return {k: json_value(v) for k, v in value.items()}
    return value


def register_to_config(init: F | None = None, *, ignore: tuple[str, ...] = ()) -> F | Callable[[F], F]:
    """Decorate a network's `__init__` so that every instance gets `self.config`: {argument: value} of the call,
    in the order of the signature, defaults applied, `ignore`d names and `*args` / `**kwargs` left out.

    Use as `@register_to_config` or `@register_to_config(ignore=("prior",))`. The wrapped `__init__` keeps its
    signature and type hints (`inspect.signature` and `typing.get_type_hints` see the original), which
    `pdae.config` reads to check the `nets` section of a training config.
    """

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)
        params = list(signature.parameters.values())[1:]  # after self
        recorded = [
            p.name for p in params
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in ignore
        ]
        unknown = sorted(set(ignore) - {p.name for p in params})
        if unknown:
            raise TypeError(f"register_to_config: {fn.__qualname__} has no argument(s) {unknown}")

        @functools.wraps(fn)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
            bound = signature.bind(self, *args, **kwargs)  # a bad call raises TypeError as the constructor would
            bound.apply_defaults()
            # object.__setattr__: before nn.Module.__init__ has run, a plain attribute is all it can be.
            object.__setattr__(self, "config", {name: json_value(bound.arguments[name]) for name in recorded})
            fn(self, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate(init) if init is not None else decorate
