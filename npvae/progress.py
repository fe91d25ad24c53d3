"""A progress line for long work (the log p(x) estimate, long training epochs), with no dependency.

On a terminal it rewrites one line in place (``\\r``); otherwise (a log file, CI) it writes a
new line about every 10 % of the work, so logs stay short. Each line says how much is
done, the rate and the time left::

    log p(x), k=1000:  4200/10000 images  87.3 images/s  1:06 left
"""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Report ``done/total`` of a long loop on ``stream`` (default ``sys.stderr``).

    ``update(n)`` adds n units done; ``close()`` writes the final line (with the total
    time); ``clear()`` instead erases the updating line (the caller prints its own summary).
    ``quiet=True`` writes nothing. ``delay`` seconds: say nothing until the work has run
    that long, so short phases (a 2 s epoch) stay silent and only long ones report. ``done``
    starts a resumed loop part-way. Used as a context manager, it closes itself. Raises
    nothing of its own; a closed or broken stream is ignored (progress must never stop the
    work it reports on).
    """

    def __init__(self, total: int, label: str, *, unit: str = "images", quiet: bool = False,
                 stream=None, min_interval: float = 0.5, delay: float = 0.0, done: int = 0) -> None:
        self.total, self.label, self.unit, self.quiet = max(1, int(total)), label, unit, quiet
        self.stream = stream if stream is not None else sys.stderr
        self.done = self._first = min(self.total, max(0, int(done)))
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._start = self._last = time.perf_counter()
        self._next_decile = self.done * 10 // self.total + 1
        self._min_interval = min_interval
        self._delay = delay
        self._wrote = False

    def _line(self, final: bool = False) -> str:
        elapsed = time.perf_counter() - self._start
        rate = (self.done - self._first) / elapsed if elapsed > 0 else 0.0
        if final:
            tail = f"done in {_clock(elapsed)}"
        else:
            tail = f"{_clock((self.total - self.done) / rate)} left" if rate > 0 else "..."
        return f"{self.label}: {self.done:>{len(str(self.total))}}/{self.total} {self.unit}  {rate:.1f} {self.unit}/s  {tail}"

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
            self._wrote = True
        except (OSError, ValueError):  # closed stream, broken pipe: never fail the work
            self.quiet = True

    def update(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + int(n))
        if self.quiet:
            return
        now = time.perf_counter()
        if now - self._start < self._delay:
            return
        if self._tty:
            if now - self._last >= self._min_interval or self.done == self.total:
                self._write("\r" + self._line() + "\x1b[K")
                self._last = now
        elif self.done * 10 >= self._next_decile * self.total and self.done < self.total:
            self._write(self._line() + "\n")
            self._next_decile = self.done * 10 // self.total + 1

    def close(self) -> None:
        """Write the final line (total time), unless quiet or still inside ``delay``."""
        if not self.quiet and time.perf_counter() - self._start >= self._delay:
            self._write(("\r" if self._tty else "") + self._line(final=True) + ("\x1b[K\n" if self._tty else "\n"))
        self.quiet = True

    def clear(self) -> None:
        """Erase the updating line on a terminal (nothing to erase in a log); write no final line."""
        if not self.quiet and self._tty and self._wrote:
            self._write("\r\x1b[K")
        self.quiet = True

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
