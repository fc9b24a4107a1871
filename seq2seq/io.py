"""Atomic file writes and line reading with errors that name the file and line.

Every artifact is written to a temporary name in the same folder, flushed to disk, then
renamed over the final name, so an interrupted write never leaves a file that looks finished.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .errors import UserError

GZIP_MAGIC = b"\x1f\x8b"


def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file that replaces `path` only when the block ends without error."""
    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"{path}: folder {path.parent} does not exist")
    tmp = _temporary_name(path)
    try:
        encoding = None if "b" in mode else "utf-8"
        with open(tmp, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except PermissionError as e:
        raise UserError(f"{path}: cannot write ({e.strerror})") from None
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def open_binary(path: str | Path) -> IO[bytes]:
    """Open a file for reading bytes, decompressing gzip (by its magic bytes) on the fly."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected a file")
    try:
        f = open(path, "rb")
    except PermissionError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    if f.read(2) == GZIP_MAGIC:
        f.close()
        return gzip.open(path, "rb")
    f.seek(0)
    return f


def read_lines(path: str | Path, errors: str = "strict") -> Iterator[str]:
    """Yield the lines of a UTF-8 text file (gzip or plain) without their line endings.

    errors="strict" stops at the first invalid UTF-8 with an error naming the line;
    "replace" puts U+FFFD in place of each bad byte. NUL bytes mark a binary file.
    """
    path = Path(path)
    with open_binary(path) as f:
        try:
            for number, raw in enumerate(f, start=1):
                if b"\x00" in raw:
                    raise UserError(
                        f"{path}:{number}: NUL byte found; this looks like a binary "
                        "file, expected UTF-8 text"
                    )
                try:
                    line = raw.decode("utf-8", errors=errors)
                except UnicodeDecodeError as e:
                    raise UserError(
                        f"{path}:{number}: invalid UTF-8 (byte 0x{raw[e.start]:02x} at column "
                        f"{e.start + 1}); expected UTF-8 text"
                    ) from None
                yield line.rstrip("\n").rstrip("\r")
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            raise UserError(f"{path}: corrupt gzip data ({e})") from None


def count_lines(path: str | Path) -> int:
    with open_binary(path) as f:
        return sum(1 for _ in f)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
