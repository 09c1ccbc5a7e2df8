"""`--device` of every command: one resolver (pdae.device), and a GPU that is not there is one line, exit 2."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from eval.cli import build_parser as eval_parser
from eval.cli import main as eval_main
from pdae.cli import build_parser as pdae_parser
from pdae.cli import main as pdae_main
from pdae.device import DeviceError, resolve_device

ENTRY_POINTS = {"eval": (eval_parser, eval_main), "pdae": (pdae_parser, pdae_main)}


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch sees no CUDA device (as on this machine; also on a GPU machine running the tests)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _leaf_commands(parser: argparse.ArgumentParser, path: list[str]) -> Iterator[tuple[list[str], argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, sub in subs[0].choices.items():
        yield from _leaf_commands(sub, [*path, name])


def _placeholder_args(parser: argparse.ArgumentParser, tmp_path: Path) -> list[str]:
    """Values for the required arguments: the first choice, or a path in tmp_path that does not exist."""
    argv: list[str] = []
    for action in parser._actions:
        positional = not action.option_strings
        if not (action.required or (positional and action.nargs not in ("?", "*"))):
            continue
        value = str(sorted(action.choices)[0]) if action.choices else str(tmp_path / f"missing_{action.dest}")
        argv += [value] if positional else [action.option_strings[-1], value]
    return argv


def device_commands(tmp_path: Path) -> list[tuple[str, list[str]]]:
    """(entry point, argv) of every command of `pdae` and `python -m eval` that takes --device."""
    out = []
    for prog, (build, _) in ENTRY_POINTS.items():
        for path, parser in _leaf_commands(build(), []):
            if any("--device" in a.option_strings for a in parser._actions):
                out.append((prog, [*path, *_placeholder_args(parser, tmp_path)]))
    return out


def test_auto_and_cpu_resolve_and_bad_names_are_one_line_errors(no_gpu: None) -> None:
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    for name in ("gpu", "cuda:x", "cuda:-1", "CPU", ""):
        with pytest.raises(DeviceError, match=r"^--device .*: expected auto, cpu, cuda or cuda:N$"):
            resolve_device(name)
    for name in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(DeviceError, match=rf"^--device {name}: torch sees no CUDA device here .*use --device cpu or auto$"):
            resolve_device(name)


def test_cuda_index_is_checked_against_the_gpus_there(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match=r"^--device cuda:2: this machine has 2 CUDA device\(s\), cuda:0 to cuda:1$"):
        resolve_device("cuda:2")


def test_every_command_with_a_device_option_is_covered(tmp_path: Path) -> None:
    names = {(prog, argv[0]) for prog, argv in device_commands(tmp_path)}
    assert {("eval", c) for c in ("reconstruct", "gap", "denoise-one-step", "shift-pictures", "ref-stats", "uncond",
                                  "fewshot", "interpolate", "manipulate", "truncation", "probe", "efficiency",
                                  "ablation")} | {("pdae", "train"), ("pdae", "bench")} <= names


def test_cuda_without_a_gpu_is_one_line_and_exit_2_in_every_command(
    no_gpu: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    commands = device_commands(tmp_path)
    for prog, argv in commands:
        for device in ("cuda", "cuda:1"):
            rc = ENTRY_POINTS[prog][1]([*argv, "--device", device])
            out, err = capsys.readouterr()
            assert rc == 2, (prog, argv)
            assert err.splitlines() == [err.strip()] and err.startswith(f"error: --device {device}: torch sees no CUDA"), (
                prog, argv, err)
            assert "Traceback" not in out + err
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


@pytest.mark.parametrize("argv", [["-m", "eval", "reconstruct", "--model", "m", "--out", "r.json", "--device", "cuda"],
                                  ["-m", "pdae", "train", "dpm", "--config", "c.yaml", "--out", "o", "--device", "cuda"]])
def test_cuda_without_a_gpu_ends_the_process_with_one_line(argv: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU for this process, whatever the machine has
    proc = subprocess.run([sys.executable, *argv], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300,
                          check=False)
    assert proc.returncode == 2
    assert proc.stdout == "" and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("error: --device cuda: torch sees no CUDA device here")
    assert list(tmp_path.iterdir()) == []
