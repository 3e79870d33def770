"""A progress line for long commands (report, export, verify over large ledgers), on a terminal only.

    with progress.line("verify", quiet=args.quiet):
        ...                                     # library code, anywhere below:
        progress.phase("segments", total=12)    # what is being done, and how many steps it has
        progress.advance()                      # one step done

Written to stderr and redrawn in place by a ticker thread (five times a second), so a step that
blocks for half a minute in DuckDB still shows its elapsed time. Nothing at all is written when
stderr is not a terminal (pipes, logs, CI) or with --quiet; library code calls `phase` and `advance`
whether or not anything is shown (they are no-ops then). The line is erased when the command ends,
so its results print as they would without it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO

TICK_S = 0.2


class Line:
    def __init__(self, label: str, stream: TextIO) -> None:
        self.label = label
        self.stream = stream
        self.phase = "starting"
        self.done = 0
        self.total: int | None = None
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._width = 0
        self._ticker = threading.Thread(target=self._run, name="phigate-progress", daemon=True)

    def text(self) -> str:
        elapsed = time.monotonic() - self.started
        count = ""
        if self.total:
            count = f" {self.done}/{self.total} ({100 * self.done // self.total}%)"
        elif self.done:
            count = f" {self.done}"
        return f"{self.label}: {self.phase}{count}, {elapsed:.0f} s"

    def draw(self) -> None:
        with self._lock:
            columns = shutil.get_terminal_size((80, 24)).columns - 1
            text = self.text()[:columns]
            # Pad over what the previous, longer line left behind.
            self.stream.write("\r" + text.ljust(self._width))
            self.stream.flush()
            self._width = len(text)

    def _run(self) -> None:
        while not self._stop.wait(TICK_S):
            self.draw()

    def start(self) -> None:
        self.draw()
        self._ticker.start()

    def close(self) -> None:
        self._stop.set()
        if self._ticker.is_alive():
            self._ticker.join()
        with self._lock:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()


_current: Line | None = None


def shown(stream: TextIO, quiet: bool) -> bool:
    return not quiet and stream.isatty() and os.environ.get("TERM") != "dumb"


@contextlib.contextmanager
def line(label: str, *, quiet: bool = False, stream: TextIO | None = None) -> Iterator[None]:
    """Show a progress line for the duration of the block (see the module's docstring)."""
    global _current
    out = stream if stream is not None else sys.stderr
    if not shown(out, quiet) or _current is not None:  # nested commands (report runs verify): one line
        yield
        return
    _current = Line(label, out)
    _current.start()
    try:
        yield
    finally:
        current, _current = _current, None
        current.close()


def phase(name: str, total: int | None = None) -> None:
    """Start a named step of the running command (no-op when no line is shown)."""
    current = _current
    if current is not None:
        current.phase, current.done, current.total = name, 0, total
        current.draw()  # a new step shows at once, however short it is


def advance(n: int = 1) -> None:
    current = _current
    if current is not None:
        current.done += n
