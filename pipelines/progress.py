"""Progress of long work on stderr: done, rate, time left, and any named figures.

On a terminal it is a `rich` progress bar, redrawn in place; elsewhere (logs, CI) a plain
line every `every` seconds and one at the end, so that a log file stays readable."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, TextColumn
from rich.progress import Progress as Bar


def format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


def _figure(value) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return str(value)


def is_terminal(stream) -> bool:
    """Whether `stream` is a terminal (False for a closed or replaced stream)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """total: the amount of work when known (for time left); done: how much was done before
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
        mirror=None,
    ):
        self.label, self.total, self.unit, self.enabled = label, total, unit, enabled
        self.every, self.deadline, self.stream = every, deadline, stream or sys.stderr
        self.mirror = mirror  # also gets the plain line every `every` seconds (a log file)
        self.start = self.last = time.monotonic()
        self.done = self.initial = done
        self.figures: dict[str, str] = {}
        self.bar = None
        if enabled and self.stream.isatty():
            bar = [BarColumn()] if total else []
            columns = [TextColumn("{task.description}"), *bar, TextColumn("{task.fields[status]}")]
            # What the program prints meanwhile goes above the bar when it reaches the same
            # terminal; standard output sent elsewhere (a file, a pipe) is left alone.
            above, console = is_terminal(sys.stdout), Console(file=self.stream)
            self.bar = Bar(*columns, console=console, refresh_per_second=4, redirect_stdout=above)
            self.task = self.bar.add_task(label, total=total, completed=done, status="")
            self.bar.start()

    def update(self, amount: float = 1, **figures) -> None:
        self.done += amount
        self.figures.update({k: _figure(v) for k, v in figures.items()})
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done, status=self.status())
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._write()

    def status(self) -> str:
        """Done (of the total), rate, the figures, elapsed and time left."""
        elapsed = time.monotonic() - self.start
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.done:,.0f} {self.unit}"]
        if self.total:
            share = f"{100 * self.done / self.total:.0f}%"
            parts = [f"{self.done:,.0f}/{self.total:,.0f} {self.unit} ({share})"]
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

    def _write(self) -> None:
        line = f"{self.label} | {self.status()}"
        if self.enabled and self.mirror is not None:
            self.mirror(line)
        if self.enabled and self.bar is None:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done, status=self.status())
            self.bar.stop()
        self._write()
