"""The workspace the reliability tests share: running a command, taking a snapshot of every
file, and checking a refusal. The workspace itself is the `world` fixture in conftest.py.

Each refusal must be one line on stderr, exit code 2, no traceback, and leave every file of
the workspace as it was."""

from __future__ import annotations

import os
import re
from pathlib import Path

from typer.testing import CliRunner

from cli import app

PROGRESS = re.compile(r"^train \| \d+/\d+ steps")  # the plain progress line off a terminal

runner = CliRunner()
SENTENCES = ["The dog sleeps.", "The old man sees the cat.", "", "A woman reads a book."]


def invoke(args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def snapshot(root: Path) -> dict:
    """Every file under `root` with its bytes and time stamp (links as their target)."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            found[path.relative_to(root)] = ("link", os.readlink(path))
        elif path.is_file():
            found[path.relative_to(root)] = (path.stat().st_mtime_ns, path.read_bytes())
        elif path.is_dir():
            found[path.relative_to(root)] = "folder"
    return found


def assert_refused(result, pattern: str = "") -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error"), lines[0]
    assert "Traceback" not in result.output
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def refused_and_untouched(root: Path, args, pattern: str = "", input=None) -> str:
    before = snapshot(root)
    result = invoke(args, input=input)
    line = assert_refused(result, pattern)
    assert snapshot(root) == before, "files were created or changed"
    return line


HERE = "@"  # stands for the workspace's absolute path in the cases, filled in by `resolve`


def resolve(args: list, root: Path) -> list[str]:
    return [str(a).replace(HERE, str(root)) for a in args]


def spellings(name: str) -> list[str]:
    """Ways to name the workspace's file `name`: relative, absolute, with . and .., a
    symbolic link, a hard link (the last two exist for in.en only)."""
    names = [name, f"{HERE}/{name}", f"./{name}", f"inbox/../{name}"]
    if name == "in.en":
        names += ["link.en", "hard.en"]
    return names
