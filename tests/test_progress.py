"""Progress lines (pdae.progress) in logs: training and evaluation commands run without a terminal."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from eval.cli import main as eval_main
from pdae import progress
from tests.test_eval_sample import save_models, tiny_models
from tests.test_training import tiny_config, write_config

LINE = re.compile(r"^\[(?P<desc>[^\]]+)\] (?P<done>\d+)/(?P<total>\d+) (?P<unit>\w+) \((?P<pct>[\d.]+)%\), (?P<rest>.*)$")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(autouse=True)
def _fresh_progress_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts as a new process: no tracker made yet."""
    monkeypatch.setattr(progress, "_last_line_at", [None])


def _lines(text: str) -> list[re.Match]:
    matches = [LINE.match(line) for line in text.splitlines()]
    return [m for m in matches if m]


def test_line_format_rate_and_eta() -> None:
    clock, out = Clock(), io.StringIO()
    bar = progress.LineProgress(100, "train dpm", "steps", initial=20, per_unit=(16, "images"), stream=out,
                                interval=30.0, clock=clock)
    for _ in range(70):  # 2 steps a second, from step 20 (a resumed run) to 90
        clock.t += 0.5
        bar.update(1)
    bar.set_postfix(loss="0.0412")
    bar.close()
    # One line once 30 s had passed (step 80), one at the end; the rate counts only this process's 60 / 70 steps.
    assert out.getvalue().splitlines() == [
        "[train dpm] 80/100 steps (80.0%), 1280 images, 32.0 images/s, elapsed 30s, ETA 10s",
        "[train dpm] 90/100 steps (90.0%), 1440 images, 32.0 images/s, elapsed 35s, ETA 5s, loss=0.0412",
    ]


def test_a_loop_that_printed_nothing_stays_silent_and_one_clock_serves_all_loops() -> None:
    clock, out = Clock(), io.StringIO()
    progress._last_line_at[0] = clock.t
    lines_per_loop = []
    for _ in range(6):  # six 10-second loops of 5 batches: one line per 30 s over all of them, not per loop
        bar = progress.LineProgress(5, "decode", "images", stream=out, interval=30.0, clock=clock)
        for _ in range(5):
            clock.t += 2.0
            bar.update(1)
        bar.close()
        lines_per_loop.append(len(out.getvalue().splitlines()))
    assert lines_per_loop == [0, 0, 1, 1, 1, 2]
    assert out.getvalue().splitlines()[0] == "[decode] 5/5 images (100.0%), 0.50 images/s, elapsed 10s"


def test_durations_read_as_a_person_writes_them() -> None:
    assert [progress.duration(s) for s in (0, 59.4, 61, 3599, 3600, 86399, 90000 * 3)] == [
        "0s", "59s", "1m01s", "59m59s", "1h00m", "23h59m", "3d03h"]


def test_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(progress.INTERVAL_ENV, raising=False)
    assert progress.interval_s() == 60.0
    monkeypatch.setenv(progress.INTERVAL_ENV, "2.5")
    assert progress.interval_s() == 2.5
    monkeypatch.setenv(progress.INTERVAL_ENV, "often")
    with pytest.raises(ValueError, match=r"^PDAE_PROGRESS_SECONDS='often': expected a number of seconds$"):
        progress.interval_s()


def test_batch_starts_are_the_batches_and_report_samples_done(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(progress.INTERVAL_ENV, "0")
    assert list(progress.batch_starts(10, 4, "decode", "images")) == [0, 4, 8]
    lines = _lines(capsys.readouterr().err)  # captured stderr is not a terminal: plain lines
    assert [(m["desc"], int(m["done"]), int(m["total"]), m["unit"]) for m in lines] == [
        ("decode", 4, 10, "images"), ("decode", 8, 10, "images"), ("decode", 10, 10, "images")]


def _run_to_log(argv: list[str], log: Path, cwd: Path) -> int:
    """Run a command as a workflow rule does: stdout and stderr into a log file, no terminal."""
    env = {**os.environ, progress.INTERVAL_ENV: "0", "OMP_NUM_THREADS": "1"}
    with open(log, "w") as fh:
        return subprocess.run([sys.executable, *argv], cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env=env,
                              timeout=600, check=False).returncode


def test_training_logs_steps_images_rate_and_eta_without_a_terminal(tmp_path: Path) -> None:
    config = write_config(tmp_path / "dpm.yaml", tiny_config(images=96, batch_size=16))
    log = tmp_path / "train.log"
    rc = _run_to_log(["-m", "pdae", "train", "dpm", "--config", str(config), "--out", str(tmp_path / "model")], log,
                     tmp_path)
    text = log.read_text()
    assert rc == 0, text
    lines = _lines(text)
    assert [int(m["done"]) for m in lines] == [1, 2, 3, 4, 5, 6]  # every step (interval 0), 6 steps of 16 images
    for m in lines:
        assert (m["desc"], int(m["total"]), m["unit"]) == ("train dpm", 6, "steps")
        assert re.match(rf"{int(m['done']) * 16} images, [\d.]+ images/s, elapsed \w+", m["rest"]), m.group(0)
        assert ("ETA" in m["rest"]) == (int(m["done"]) < 6)
    assert "\r" not in text  # no bar redraws in a log


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return save_models(tiny_models(), tmp_path_factory.mktemp("progress_models"))


def test_sampling_logs_images_done_without_a_terminal(model_folders: dict[str, Path], tmp_path: Path) -> None:
    backend = ["--backend", "domain", "--feature-net", str(model_folders["feature_net"]), "--device", "cpu"]
    stats = tmp_path / "ref.npz"
    assert eval_main(["ref-stats", "--model", str(model_folders["dpm"]), "--num-images", "16", "--out", str(stats),
                      *backend]) == 0
    log = tmp_path / "uncond.log"
    rc = _run_to_log(["-m", "eval", "uncond", "--autoencoder", str(model_folders["pdae"]), "--latent",
                      str(model_folders["latent"]), "--steps", "2", "--num-samples", "8", "--batch-size", "4",
                      "--ref-stats", str(stats), "--out", str(tmp_path / "u.json"), *backend], log, tmp_path)
    text = log.read_text()
    assert rc == 0, text
    done = {(m["desc"], m["unit"]): [] for m in _lines(text)}
    for m in _lines(text):
        done[(m["desc"], m["unit"])].append(int(m["done"]))
    assert done[("latent DDIM, 2 steps", "latents")] == [8]  # latents go in one batch (--batch-size is for images)
    assert done[("pdae ddim, 2 steps", "images")] == [4, 8]
