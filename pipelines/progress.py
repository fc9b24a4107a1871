"""A one-line progress display on stderr: done, rate, time left, and any named figures."""

from __future__ import annotations

import sys
import time


def format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


def _figure(value) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return str(value)


class Progress:
    """Redraws one line on a terminal; elsewhere (logs, CI) prints a line every `every` seconds.

    total: the amount of work when known (for time left); done: how much was done before
    (a resumed run); deadline: seconds of budget, when time rather than work ends the job;
    unit: what is counted."""

    def __init__(
        self,
        label: str,
        total: float | None = None,
        unit: str = "it",
        every: float = 30.0,
        stream=None,
        enabled: bool = True,
        done: float = 0.0,
        deadline: float | None = None,
    ):
        self.label, self.total, self.unit, self.enabled = label, total, unit, enabled
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()
        self.every = 0.2 if self.interactive else every
        self.start = self.last = time.monotonic()
        self.done = self.initial = done
        self.deadline = deadline
        self.figures: dict[str, str] = {}

    def update(self, amount: float = 1, **figures) -> None:
        self.done += amount
        self.figures.update({k: _figure(v) for k, v in figures.items()})
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._draw(final=False)

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        parts = [self.label]
        if self.total:
            parts.append(
                f"{self.done:,.0f}/{self.total:,.0f} {self.unit} "
                f"({100 * self.done / self.total:.0f}%)"
            )
        else:
            parts.append(f"{self.done:,.0f} {self.unit}")
        parts.append(f"{rate:,.1f} {self.unit}/s")
        parts += [f"{k} {v}" for k, v in self.figures.items()]
        left = []
        if self.total and rate > 0:
            left.append((self.total - self.done) / rate)
        if self.deadline:
            left.append(self.deadline - elapsed)
        parts.append(f"elapsed {format_duration(elapsed)}")
        if left:
            parts[-1] += f", left {format_duration(min(left))}"
        return " | ".join(parts)

    def _draw(self, final: bool) -> None:
        if not self.enabled:
            return
        if self.interactive:
            self.stream.write("\r\033[K" + self.line() + ("\n" if final else ""))
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        self._draw(final=True)
