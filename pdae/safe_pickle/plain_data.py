"""Plain data from loaded objects (for code that reads configs, e.g. Diff-AE's `hyper_parameters`)."""

from __future__ import annotations

import argparse
import types
from collections.abc import Mapping
from typing import Any

from .allowlist import GlobalName
from .stand_ins import OpaqueClass, OpaqueObject

_MAX_PLAIN_DEPTH = 100
_ACTIVE = object()


def plain(obj: Any) -> Any:
    """A copy of `obj` in plain data, for reading configs: a stand-in object becomes its recorded state (a dict
    from `__dict__`/slots/SETITEMS, a list from APPENDS) or, without state, its one constructor argument (an
    enum member -> its value, or its name when pickled by name; several -> a list, keywords -> a dict); a stand-in class its dotted name
    (`GlobalName`); mappings and Namespaces become dicts; lists, tuples and sets keep their type. Nothing
    is called and `obj` is not changed; a reference cycle is cut (None). ValueError when nested more than
    100 levels deep."""
    memo: dict[int, Any] = {}

    def key(k: Any, depth: int) -> Any:
        out = conv(k, depth)
        try:
            hash(out)
        except TypeError:
            return repr(k)
        return out

    def mapping(pairs: Any, depth: int) -> dict[Any, Any]:
        return {key(k, depth): conv(v, depth) for k, v in pairs}

    def stand_in(x: OpaqueObject, depth: int) -> Any:
        if x.member is not None:
            return x.member  # an enum member pickled by name
        state = x.state
        if (isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], Mapping)
                and (state[0] is None or isinstance(state[0], Mapping))):
            state = {**(state[0] or {}), **state[1]}  # (__dict__, slots) as object.__reduce_ex__ writes it
        if x.items or isinstance(state, Mapping):
            out = mapping(x.items, depth)
            if isinstance(state, Mapping):
                out.update(mapping(state.items(), depth))
            return out
        if x.list_items:
            return [conv(v, depth) for v in x.list_items]
        if state is not None:
            return conv(state, depth)
        if x.kwargs:
            kwargs = mapping(x.kwargs.items(), depth)
            return {"args": [conv(a, depth) for a in x.args], "kwargs": kwargs} if x.args else kwargs
        if len(x.args) == 1:
            return conv(x.args[0], depth)
        return [conv(a, depth) for a in x.args] if x.args else {}

    def conv(x: Any, depth: int) -> Any:
        if depth > _MAX_PLAIN_DEPTH:
            raise ValueError(f"nested more than {_MAX_PLAIN_DEPTH} levels deep")
        if isinstance(x, OpaqueClass):
            return GlobalName(x.dotted)
        container = isinstance(x, (OpaqueObject, Mapping, list, tuple, set, frozenset, argparse.Namespace,
                                   types.SimpleNamespace))
        if not container:
            return x
        if id(x) in memo:
            return None if memo[id(x)] is _ACTIVE else memo[id(x)]
        memo[id(x)] = _ACTIVE
        depth += 1
        if isinstance(x, OpaqueObject):
            out: Any = stand_in(x, depth)
        elif isinstance(x, Mapping):
            out = mapping(x.items(), depth)
        elif isinstance(x, (argparse.Namespace, types.SimpleNamespace)):
            out = mapping(vars(x).items(), depth)
        elif isinstance(x, list):
            out = [conv(v, depth) for v in x]
        elif isinstance(x, tuple):
            out = tuple(conv(v, depth) for v in x)
        else:
            out = type(x)(key(v, depth) for v in x)  # set, frozenset
        memo[id(x)] = out
        return out

    return conv(obj, 0)
