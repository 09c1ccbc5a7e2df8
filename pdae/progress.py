"""Progress of long commands (training, sampling, encoding): a tqdm bar on a terminal, plain lines in a log.

Workflow jobs send stderr to their log file (`> {log} 2>&1`), where a bar is one line rewritten with carriage
returns and shows nothing useful while a job runs for hours on a cluster. Off a terminal, progress is a plain
line every PDAE_PROGRESS_SECONDS seconds (default 60) and one when a tracked loop that printed ends:

    [train dpm] 1200/100000 steps (1.2%), 153600 images, 812.4 images/s, elapsed 3m09s, ETA 3h22m, loss=0.0412

The rate counts only what this process did (a resumed run does not inherit its predecessor's speed); the
ETA is the remaining work at that rate. One clock is shared by all trackers of a process, so a command made of
many short loops (e.g. one DDIM decode per step count) still prints one line per interval, not one per loop.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO, TypeVar

T = TypeVar("T")
INTERVAL_ENV = "PDAE_PROGRESS_SECONDS"
DEFAULT_INTERVAL_S = 60.0
# When a tracker of this process last printed a line; the first tracker's start until then.
_last_line_at: list[float | None] = [None]


def interval_s() -> float:
    """Seconds between progress lines: $PDAE_PROGRESS_SECONDS, else 60."""
    raw = os.environ.get(INTERVAL_ENV, "")
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_INTERVAL_S
    except ValueError:
        raise ValueError(f"{INTERVAL_ENV}={raw!r}: expected a number of seconds") from None


def duration(seconds: float) -> str:
    """12s, 3m09s, 3h22m, 2d04h."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


class LineProgress:
    """tqdm's `update` / `set_postfix` / `close`, printing plain lines every `interval` seconds (see the module)."""

    def __init__(self, total: int, desc: str, unit: str, *, initial: int = 0, per_unit: tuple[int, str] | None = None,
                 stream: TextIO | None = None, interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.desc, self.unit, self.per_unit = total, desc, unit, per_unit
        self.done = self.start_done = initial
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval_s() if interval is None else interval
        self.clock, self.t0 = clock, clock()
        if _last_line_at[0] is None:
            _last_line_at[0] = self.t0
        self.postfix = ""
        self.lines, self._printed_at = 0, -1

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.clock() - _last_line_at[0] >= self.interval:
            self._print()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        """A last line, if this loop printed any (so the log shows that it finished and how fast)."""
        if self.lines and self.done != self._printed_at:
            self._print()

    def line(self) -> str:
        elapsed = max(self.clock() - self.t0, 1e-9)
        rate = (self.done - self.start_done) / elapsed
        parts = [f"{self.done}/{self.total} {self.unit} ({100 * self.done / max(self.total, 1):.1f}%)"]
        if self.per_unit:
            size, name = self.per_unit
            parts += [f"{self.done * size} {name}", f"{rate * size:.1f} {name}/s"]
        else:
            parts += [f"{rate:.2f} {self.unit}/s"]
        parts += [f"elapsed {duration(elapsed)}"]
        if self.done < self.total:
            parts += [f"ETA {duration((self.total - self.done) / rate)}" if rate > 0 else "ETA ?"]
        return f"[{self.desc}] " + ", ".join(parts + ([self.postfix] if self.postfix else []))

    def _print(self) -> None:
        print(self.line(), file=self.stream, flush=True)
        self.lines += 1
        self._printed_at = self.done
        _last_line_at[0] = self.clock()


class _Silent:
    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **values: Any) -> None: ...
    def close(self) -> None: ...


def progress_bar(total: int, desc: str, unit: str, *, initial: int = 0, per_unit: tuple[int, str] | None = None,
                 enabled: bool = True, leave: bool = True) -> Any:
    """A tqdm bar when stderr is a terminal, LineProgress otherwise, nothing when not `enabled`.

    :param per_unit: (size, name): each unit is `size` of `name`, e.g. (batch_size, "images") for training steps.
    """
    if not enabled:
        return _Silent()
    if not sys.stderr.isatty():
        return LineProgress(total, desc, unit, initial=initial, per_unit=per_unit)
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                mininterval=2.0, leave=leave)


def track(items: Sequence[T], desc: str, unit: str) -> Iterator[T]:
    """The items of a sequence, reporting one `unit` done after each."""
    bar = progress_bar(len(items), desc, unit, leave=False)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()


def batch_starts(n: int, batch_size: int, desc: str, unit: str = "samples") -> Iterator[int]:
    """range(0, n, batch_size), reporting min(i + batch_size, n) `unit` done after each batch."""
    bar = progress_bar(n, desc, unit, leave=False)
    try:
        for i in range(0, n, batch_size):
            yield i
            bar.update(min(batch_size, n - i))
    finally:
        bar.close()
