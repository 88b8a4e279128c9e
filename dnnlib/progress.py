"""Progress you can see on every long step: a tqdm bar on a terminal, a throttled line in a log.

`bar(total, desc, unit)` is a tqdm bar when stderr is a terminal; otherwise (output piped to a file,
a CI log) it prints one plain line every `interval` seconds instead of nothing, so a long step never
looks hung. `StatusLine` is the same idea for the training loop, whose lines are written by the caller.
Both read only host-side counters and the wall clock: they never wait for a GPU.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO

INTERVAL = 10.0        # seconds between lines when the output is not a terminal


def is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def fmt_time(sec: float) -> str:
    sec = int(max(sec, 0))
    if sec >= 3600:
        return f"{sec // 3600}h {sec % 3600 // 60:02d}m"
    return f"{sec // 60}m {sec % 60:02d}s" if sec >= 60 else f"{sec}s"


class LineBar:
    """tqdm's counting interface (update, context manager) writing one line every `interval` seconds."""

    def __init__(self, total: Optional[int], desc: str, unit: str = "it", initial: int = 0,
                 interval: float = INTERVAL, file: Optional[TextIO] = None, clock: Callable[[], float] = time.monotonic):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.interval, self.file, self.clock = interval, file or sys.stderr, clock
        self.start = self.last = clock()
        self.initial = initial

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self._write(now)

    def _write(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = (self.n - self.initial) / elapsed
        text = f"{self.desc}: {self.n:,}"
        if self.total:
            text += f"/{self.total:,} {self.unit} ({100 * self.n / self.total:.0f}%)"
            if rate > 0:
                text += f", {rate:.1f} {self.unit}/s, eta {fmt_time((self.total - self.n) / rate)}"
        else:
            text += f" {self.unit}, {rate:.1f} {self.unit}/s"
        print(text, file=self.file, flush=True)

    def close(self) -> None:
        if self.n != self.initial and self.clock() - self.start >= self.interval:
            self._write(self.clock())             # the final count, if any line was due at all

    def __enter__(self) -> LineBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def bar(total: Optional[int], desc: str, unit: str = "it", enabled: bool = True, initial: int = 0, **tqdm_kw):
    """A progress bar: tqdm on a terminal, a LineBar otherwise, a silent one when not `enabled`."""
    from tqdm import tqdm
    if enabled and not is_tty(sys.stderr):
        return LineBar(total, desc, unit, initial=initial)
    return tqdm(total=total, desc=desc, unit=unit, initial=initial, disable=not enabled, dynamic_ncols=True, **tqdm_kw)


class StatusLine:
    """A status line at most every `interval` seconds: rewritten in place on a terminal, else a new line.

    `due()` is one clock read, cheap enough to call after every training step; `clear()` before a
    regular log line removes an in-place line so the two do not mix.
    """

    def __init__(self, interval: float = INTERVAL, file: Optional[TextIO] = None,
                 clock: Callable[[], float] = time.monotonic):
        self.interval, self.file, self.clock = interval, file or sys.stdout, clock
        self.tty = is_tty(self.file)
        self.last = clock()
        self.shown = False

    def due(self) -> bool:
        return self.clock() - self.last >= self.interval

    def show(self, text: str) -> None:
        self.last = self.clock()
        if self.tty:
            self.file.write("\r" + text + "\033[K")
            self.file.flush()
            self.shown = True
        else:
            print(text, file=self.file, flush=True)

    def clear(self) -> None:
        """Call before printing a regular line; also restarts the interval."""
        self.last = self.clock()
        if self.shown:
            self.file.write("\r\033[K")
            self.file.flush()
            self.shown = False
