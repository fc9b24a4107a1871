"""Atomic file writes and line reading with errors that name the file and line.

Every artifact is written to a temporary name in the same folder, flushed to disk, then
renamed over the final name, so an interrupted write never leaves a file that looks finished.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import itertools
import os
import select
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .errors import UserError

GZIP_MAGIC = b"\x1f\x8b"
BOM = "\ufeff"
# Failures to write that the user can fix: permissions, a read-only or full disk.
WRITE_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file that replaces `path` only when the block ends without error."""
    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"{path}: folder {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if e.errno not in WRITE_ERRORS:
            raise
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


def decode_line(raw: bytes, where: str, number: int, errors: str = "strict") -> str:
    """One line of UTF-8 text without its line ending, by the rules every reader follows:
    a byte-order mark opening the first line is dropped; a NUL byte marks a binary file;
    invalid UTF-8 is an error naming the line, or U+FFFD with errors="replace"."""
    if b"\x00" in raw:
        raise UserError(
            f"{where}:{number}: NUL byte found; this looks like a binary file, expected UTF-8 text"
        )
    try:
        line = raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        raise UserError(
            f"{where}:{number}: invalid UTF-8 (byte 0x{raw[e.start]:02x} at column "
            f"{e.start + 1}); expected UTF-8 text"
        ) from None
    line = line.removeprefix(BOM) if number == 1 else line
    return line.rstrip("\n").rstrip("\r")


def read_lines(path: str | Path, errors: str = "strict") -> Iterator[str]:
    """Yield the lines of a UTF-8 text file (gzip or plain; "-" for standard input) by the
    rules of `decode_line`."""
    if str(path) == "-":
        yield from StreamLines(sys.stdin.buffer, "stdin", errors)
        return
    path = Path(path)
    with open_binary(path) as f:
        try:
            for number, raw in enumerate(f, start=1):
                yield decode_line(raw, str(path), number, errors)
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            raise UserError(f"{path}: corrupt gzip data ({e})") from None


class StreamLines:
    """The lines of a stream (standard input) as they arrive, by the rules of `decode_line`.

    `waiting()` tells whether the next line is not there yet: a person typing, or a program
    that writes a line and waits for its answer. Readers then answer what they have instead
    of waiting for a full chunk."""

    def __init__(self, stream, where: str = "stdin", errors: str = "strict"):
        self.stream, self.where, self.errors = stream, where, errors
        try:
            self.fd = stream.fileno()
        except (AttributeError, OSError, ValueError):
            self.fd = None  # an in-memory stream: everything is there already
        self.buffer = b""
        self.ended = False
        self.started = False  # whether the first bytes were seen (gzip or not)
        self.inflate = None  # a gzip stream's decompressor
        self.fed = False  # whether it holds part of a member

    def _read(self) -> bytes:
        return os.read(self.fd, 1 << 16) if self.fd is not None else self.stream.read(1 << 16)

    def _fill(self) -> None:
        data = self._read()
        if not self.started and data:  # gzip, by its magic bytes, as in `open_binary`
            if data == GZIP_MAGIC[:1]:  # never text: the rest of the magic is on its way
                data += self._read()
            self.started = True
            if data.startswith(GZIP_MAGIC):
                self.inflate = zlib.decompressobj(wbits=31)
        if data:  # a gzip header alone decompresses to nothing yet: read on
            self.buffer += data if self.inflate is None else self._decompress(data)
        elif self.inflate is not None and self.fed:
            raise UserError(f"{self.where}: corrupt gzip data (it ends in the middle)")
        else:
            self.ended = True

    def _decompress(self, data: bytes) -> bytes:
        """Decompressed bytes of the next compressed `data`, member after member."""
        out = b""
        while data:
            try:
                out += self.inflate.decompress(data)
            except zlib.error as e:
                raise UserError(f"{self.where}: corrupt gzip data ({e})") from None
            data = self.inflate.unused_data
            self.fed = not self.inflate.eof
            if self.inflate.eof:
                self.inflate = zlib.decompressobj(wbits=31)
                data = data.lstrip(b"\x00")  # padding after a member, as `gzip` skips it
        return out

    def waiting(self) -> bool:
        if self.buffer or self.ended or self.fd is None:
            return False
        return not select.select([self.fd], [], [], 0)[0]

    def __iter__(self) -> Iterator[str]:
        for number in itertools.count(1):
            while b"\n" not in self.buffer and not self.ended:
                self._fill()
            if not self.buffer:
                return
            line, _, self.buffer = self.buffer.partition(b"\n")  # the last may have no "\n"
            yield decode_line(line, self.where, number, self.errors)


def count_lines(path: str | Path) -> int:
    with open_binary(path) as f:
        return sum(1 for _ in f)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- destinations ---------------------------------------------------------------------------

SPECIAL_FILE_SYSTEMS = (Path("/proc"), Path("/sys"), Path("/dev"))


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file: the same spelling after links and `..` are resolved,
    or (when both exist) the same file on disk, hard links included."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def check_destination(path: str | Path, folder: bool = False, parents: bool = False) -> None:
    """Refuse, before any work is done, a destination that cannot take the output: a file
    name that is a folder or a special file, a folder name that is a file, a missing or
    unwritable parent folder, or a place on a special file system (/proc, /sys, /dev).
    With `parents`, missing folders on the way will be made: the nearest existing one is
    checked instead."""
    path = Path(path)
    if path.exists() and folder and not path.is_dir():
        raise UserError(f"{path}: exists and is not a folder; expected a folder")
    if path.exists() and not folder and not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file"
        raise UserError(f"{path}: is {kind}; expected a file name")
    parent = path if folder and path.is_dir() else path.parent
    while parents and not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise UserError(f"{path}: folder {parent} {what}")
    resolved = parent.resolve()
    if any(resolved == root or root in resolved.parents for root in SPECIAL_FILE_SYSTEMS):
        raise UserError(f"{path}: {resolved} is a special file system; write to a normal folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{path}: cannot write in folder {parent} (permission denied)")
