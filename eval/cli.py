"""`python -m eval <command>`: each evaluation module registers its own sub-command(s).

Every command reads model folders / files and writes files (JSON records, CSV, NPZ, PNG); nothing is
printed instead of written.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from pdae.device import check_device

# Modules providing `register_cli(subparsers)`; each sub-command sets `func(args) -> int`.
COMMAND_MODULES = (
    "eval.reconstruct",
    "eval.gap",
    "eval.sample",
    "eval.fewshot",
    "eval.edit",
    "eval.probe",
    "eval.efficiency",
    "eval.tables",
    "eval.claims",
    "eval.plots",
)


class _Parser(argparse.ArgumentParser):
    """A bad command line is one line, `error: argument --flag: ...` (exit status 2, as argparse), like every
    other error of the eval commands; `-h` still prints the usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message.splitlines()[0] if message else 'bad arguments'} ({self.prog} -h for usage)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_device(args)
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, PermissionError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
