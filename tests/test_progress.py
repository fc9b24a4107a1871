"""Progress: a rich bar on a terminal, plain lines with rate and time left elsewhere."""

from __future__ import annotations

import io

from pipelines.progress import Progress, format_duration


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_plain_lines_with_rate_and_time_left():
    stream = io.StringIO()
    progress = Progress("translate", total=100, unit="sent", every=0.0, stream=stream)
    progress.update(40, loss=2.5)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("translate | 40/100 sent (40%) | ")
    assert "sent/s" in lines[0] and "loss 2.5" in lines[0] and "left" in lines[0]


def test_a_budget_in_seconds_gives_time_left_without_a_total():
    stream = io.StringIO()
    progress = Progress("train", unit="steps", every=0.0, stream=stream, deadline=3600)
    progress.update(5)
    assert "left 59:5" in stream.getvalue() or "left 1:00:00" in stream.getvalue()


def test_a_terminal_gets_a_bar_that_ends_with_the_figures():
    stream = Terminal()
    progress = Progress("train", total=10, unit="steps", stream=stream)
    for _ in range(10):
        progress.update(1, lr=0.001)
    progress.close()
    assert "10/10 steps" in stream.getvalue() and "lr 0.001" in stream.getvalue()


def test_disabled_progress_writes_nothing():
    stream = Terminal()
    progress = Progress("train", total=3, stream=stream, enabled=False)
    progress.update(3)
    progress.close()
    assert stream.getvalue() == ""


def test_durations_read_as_clock_times():
    assert format_duration(59) == "00:59"
    assert format_duration(3725) == "1:02:05"


def test_what_is_printed_elsewhere_is_not_drawn_into_the_bar(capsys):
    """A bar on a terminal while standard output goes to a file or a pipe: what the
    program prints stays on standard output."""
    import os
    import pty

    main, terminal = pty.openpty()
    with open(terminal, "w") as stream:
        progress = Progress("work", total=3, stream=stream)
        print("a result line")
        progress.update(1)
        progress.close()
    os.close(main)
    assert capsys.readouterr().out == "a result line\n"
