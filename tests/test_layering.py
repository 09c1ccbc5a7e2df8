"""Layering of the code base (issue 17): an import scan of every module in `pdae/` and `eval/`.

Layers, lowest first; a module may import its own layer and the layers listed as below it, nothing above:

    util        pdae (package: __version__), device, precision, progress, fsutil, provenance, safe_pickle,
                run_control (errors, signals, DDP helpers)         -- no project imports but each other
    core        pdae.diffusion.*, pdae.data                        -- Diffusion / Data
    nets        pdae.nets.*                                        -- network modules, pure key mapping
    methods     pdae.methods.*
    checkpoint  pdae.checkpoint, pdae.components                   -- model folders (above Methods)
    app         pdae.importers.*, pdae.training, pdae.train_state, pdae.batches, pdae.optim, pdae.bench,
                pdae.config (validates the `method`/`nets` sections against their classes, so it reads
                methods and nets: it belongs with training, not with the utilities)
    cli         pdae.cli, pdae.__main__
    eval        eval.*  -- Eval -> Methods: it may use methods, nets, core, util and the checkpoint
                format, never training, importers or the pdae CLI (siblings above Methods, not below Eval)
    eval-cli    eval.cli, eval.__main__                            -- `python -m eval`: registers every eval module

Workflow (Snakemake rules under workflow/) sits above Eval and is not Python modules of these packages.

Edges come from `import` / `from ... import` statements anywhere in a module (inside functions too), from
`importlib.import_module("...")` / `__import__("...")` with a literal name, from literal "module:attr"
references to project modules, and, in a module that calls `import_module` / `__import__` on a computed name,
from every string literal that names a project module (the strings that `importlib.import_module` later
resolves: they are imports too, just hidden). No upward edge is allowed: the last one (a `pdae.methods.load_method`
forwarder into pdae.checkpoint) is gone.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pdae", "eval")

# Module (prefix) -> layer; the longest matching prefix wins.
LAYER_OF = {
    "pdae": "util",
    "pdae.device": "util",
    "pdae.precision": "util",
    "pdae.progress": "util",
    "pdae.fsutil": "util",
    "pdae.provenance": "util",
    "pdae.safe_pickle": "util",
    "pdae.run_control": "util",
    "pdae.diffusion": "core",
    "pdae.data": "core",
    "pdae.nets": "nets",
    "pdae.methods": "methods",
    "pdae.checkpoint": "checkpoint",
    "pdae.components": "checkpoint",
    "pdae.importers": "app",
    "pdae.training": "app",
    "pdae.train_state": "app",
    "pdae.batches": "app",
    "pdae.optim": "app",
    "pdae.bench": "app",
    "pdae.config": "app",
    "pdae.cli": "cli",
    "pdae.__main__": "cli",
    "eval": "eval",
    "eval.cli": "eval-cli",
    "eval.__main__": "eval-cli",
}
# Layer -> the layers it may import (besides itself).
MAY_IMPORT = {
    "util": set(),
    "core": {"util"},
    "nets": {"core", "util"},
    "methods": {"nets", "core", "util"},
    "checkpoint": {"methods", "nets", "core", "util"},
    "app": {"checkpoint", "methods", "nets", "core", "util"},
    "cli": {"app", "checkpoint", "methods", "nets", "core", "util"},
    "eval": {"checkpoint", "methods", "nets", "core", "util"},
    "eval-cli": {"eval", "checkpoint", "methods", "nets", "core", "util"},
}
# Modules whose literal "module:attr" references / string imports of project modules are still there.
STRING_IMPORTS_ALLOWED: dict[str, str] = {
    "eval.cli": (
        "COMMAND_MODULES names the eval modules that register sub-commands and is imported lazily so that tests "
        "can narrow it to one module (tests/test_eval_*.py monkeypatch it); every name is an eval module below "
        "eval.cli, which test_no_upward_imports checks"
    ),
}

_REF = re.compile(r"^((?:pdae|eval)(?:\.\w+)*):\w+$")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".")
    base = base[: len(base) - level + (1 if is_package else 0)]
    return ".".join(base + ([name] if name else []))


def _project(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def _known(name: str, modules: set[str]) -> str:
    """The longest prefix of `name` that is a project module (`from pdae.nets import unet` -> pdae.nets.unet)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in modules:
            return ".".join(parts[:i])
    return name


def edges_in(source: str, module: str, is_package: bool, modules: set[str]) -> set[tuple[str, int, str]]:
    """Project modules imported by `source` (the text of `module`): {(imported module, line, kind)}, kind
    "import" (an import statement anywhere, inside functions too) or "string" (a literal name)."""
    out: set[tuple[str, int, str]] = set()
    dynamic = False  # import_module / __import__ of a computed name: then any literal module name is an edge
    literals: set[tuple[str, int]] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.add((alias.name, node.lineno, "import"))
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node.level, node.module) if node.level else node.module or ""
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{target}.{alias.name}"
                out.add((sub if sub in modules else target, node.lineno, "import"))
        elif isinstance(node, ast.Call) and node.args:
            func, arg = node.func, node.args[0]
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__"):
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    out.add((arg.value, node.lineno, "string"))
                else:
                    dynamic = True
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _REF.match(node.value):
                out.add((_REF.match(node.value).group(1), node.lineno, "string"))
            elif node.value in modules:
                literals.add((node.value, node.lineno))
    if dynamic:
        out |= {(name, line, "string") for name, line in literals}
    return {(_known(t, modules), line, kind) for t, line, kind in out if _project(t)}


def scan() -> tuple[set[str], dict[str, set[tuple[str, int, str]]]]:
    """(project modules, module -> its edges) for every module under PACKAGES."""
    paths = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    modules = {_module_name(p) for p in paths}
    edges = {
        _module_name(p): edges_in(p.read_text(encoding="utf-8"), _module_name(p), p.name == "__init__.py", modules)
        for p in paths
    }
    return modules, edges


def layer(module: str) -> str:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in LAYER_OF:
            return LAYER_OF[prefix]
    raise KeyError(module)


def test_every_module_has_a_layer() -> None:
    modules, _ = scan()
    missing = sorted(m for m in modules if not any(m == p or m.startswith(p + ".") for p in LAYER_OF))
    assert not missing, f"modules without a declared layer (add them to LAYER_OF): {missing}"


def test_no_upward_imports() -> None:
    _, edges = scan()
    bad = []
    for importer, targets in sorted(edges.items()):
        for imported, line, kind in sorted(targets):
            src, dst = layer(importer), layer(imported)
            if dst != src and dst not in MAY_IMPORT[src]:
                bad.append(f"{importer}:{line} ({src}) -> {imported} ({dst}) [{kind}]")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_string_imports_of_project_modules() -> None:
    _, edges = scan()
    bad = [f"{m}:{line} -> {t}" for m, targets in sorted(edges.items()) for t, line, kind in sorted(targets)
           if kind == "string" and m not in STRING_IMPORTS_ALLOWED]
    assert not bad, "string imports of project modules (import them, or register the class):\n" + "\n".join(bad)


@pytest.mark.parametrize("module", sorted(STRING_IMPORTS_ALLOWED))
def test_allowed_string_imports_still_exist(module: str) -> None:
    _, edges = scan()
    assert any(kind == "string" for _, _, kind in edges.get(module, ())), (
        f"{module} has no string imports left: remove it from STRING_IMPORTS_ALLOWED"
    )


def test_scan_sees_hidden_edges() -> None:
    """The scan itself: imports inside functions, relative imports, `from package import module`, string
    imports and "module:attr" references are edges; third-party imports are not."""
    source = (
        "import torch\nfrom . import layers\nfrom .prior import FrozenPrior\n"
        "def f():\n    from pdae.methods import DPM\n"
        "import importlib\nimportlib.import_module('pdae.training')\n__import__('eval.fid')\n"
        "X = 'pdae.nets.unet:UNet'\n"
    )
    modules = {"pdae.nets.unet", "pdae.nets.layers", "pdae.nets.prior", "pdae.methods", "pdae.training", "eval.fid"}
    found = {(t, kind) for t, _, kind in edges_in(source, "pdae.nets.unet", False, modules)}
    assert found == {
        ("pdae.nets.layers", "import"), ("pdae.nets.prior", "import"), ("pdae.methods", "import"),
        ("pdae.training", "string"), ("eval.fid", "string"), ("pdae.nets.unet", "string"),
    }
    # A computed import_module name: every literal project module name in that module is an edge.
    registry = "import importlib\nNAMES = ('eval.fid', 'not.a.module')\nfor n in NAMES:\n    importlib.import_module(n)\n"
    assert {(t, kind) for t, _, kind in edges_in(registry, "eval.cli", False, modules)} == {("eval.fid", "string")}
    assert not edges_in("X = 'eval.fid'\n", "eval.plots", False, modules)  # a plain string is no import
    assert _resolve("pdae.importers", True, 1, "common") == "pdae.importers.common"
    assert layer("pdae.nets.adapters") == "nets" and layer("eval.fid") == "eval" and layer("pdae") == "util"
    assert layer("eval.cli") == "eval-cli" and layer("eval.frechet") == "eval"
