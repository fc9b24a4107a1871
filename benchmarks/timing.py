"""Run a command under GNU time: wall seconds, peak resident memory, and its output."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_timed(command: list[str], log: Path | None = None) -> dict:
    """Run `command` from the repository root under /usr/bin/time -v. Output goes to `log`
    when given (and is returned otherwise); a failure ends the benchmark with its output."""
    start = time.monotonic()
    result = subprocess.run(
        ["/usr/bin/time", "-v", *command], capture_output=True, text=True, cwd=ROOT
    )
    wall = time.monotonic() - start
    if log is not None:
        log.write_text(result.stdout + result.stderr, encoding="utf-8")
    if result.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    return {
        "wall": wall,
        "rss_mib": int(rss[1]) / 1024,
        "stdout": result.stdout,
        "stderr": result.stderr,
    }
