"""Atomic file writes and line reading with errors that name the file and line.

Every artifact is written to a temporary name in the same folder, flushed to disk, then
renamed over the final name, so an interrupted write never leaves a file that looks finished.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gzip
import hashlib
import itertools
import os
import select
import stat
import sys
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from .errors import UserError

GZIP_MAGIC = b"\x1f\x8b"
BOM = "\ufeff"
# Failures to write that the user can fix: permissions; a read-only, full or failing disk; a
# quota; a file size limit (`ulimit -f`); too many open files.
WRITE_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG,
                errno.EIO, errno.EMFILE, errno.ENFILE}  # fmt: skip


def write_error(error: BaseException | None) -> OSError | None:
    """The failure to write (one of WRITE_ERRORS) behind `error`, however a library wrapped it."""
    while error is not None and not (isinstance(error, OSError) and error.errno in WRITE_ERRORS):
        hidden = error.__suppress_context__ and error.__cause__ is None
        error = error.__cause__ or (None if hidden else error.__context__)
    return error


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """A failure to write in the block as one line naming `path`: the error of a write to
    an open file names no file, and libraries wrap theirs."""
    try:
        yield
    except Exception as e:
        if (error := write_error(e)) is None:
            raise
        raise UserError(f"{path}: cannot write ({error.strerror})") from None


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file that replaces `path` only when the block ends without error."""
    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"{path}: folder {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with writing(path):
            with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def append_text(path: str | Path, text: str) -> None:
    """Add `text` to the end of a file (a log), whole or not at all."""
    with writing(path), open(path, "ab", buffering=0) as f:
        end, data = f.tell(), memoryview(text.encode("utf-8"))
        try:
            while data:  # a write may take part of it, and fail on the rest
                data = data[f.write(data) :]
        except OSError:
            f.truncate(end)
            raise


def open_binary(path: str | Path) -> IO[bytes]:
    """Open a file for reading bytes, decompressing gzip (by its magic bytes) on the fly."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected a file")
    f = open(path, "rb")  # no right to read it: one line, from the command line's rule
    if f.read(2) == GZIP_MAGIC:
        f.close()
        return gzip.open(path, "rb")
    f.seek(0)
    return f


def decode_line(raw: bytes, where: str, number: int, errors: str = "strict") -> str:
    """One line of UTF-8 text without its line ending, by the rules every reader follows: no
    byte-order mark on line 1; NUL or invalid UTF-8 (unless errors="replace") is an error."""
    problem = "NUL byte found; this looks like a binary file," if b"\x00" in raw else ""
    try:
        line = raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        problem = problem or f"invalid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1});"
    if problem:
        raise UserError(f"{where}:{number}: {problem} expected UTF-8 text")
    line = line.removeprefix(BOM) if number == 1 else line
    return line.rstrip("\n").rstrip("\r")


@contextlib.contextmanager
def _gzip_errors(path: str | Path) -> Iterator[None]:
    try:
        yield
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise UserError(f"{path}: corrupt gzip data ({e})") from None


def is_stream(path: str | Path) -> bool:
    """Whether an input is read once, as it arrives: "-", a pipe or a device (`<(zcat a.gz)`)."""
    named = os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path)
    return str(path) == "-" or named


def stream_lines(path: str | Path, errors: str = "strict") -> StreamLines:
    """The lines of a stream input (see `is_stream`), by the rules of `decode_line`."""
    if str(path) != "-":
        return StreamLines(open(path, "rb", buffering=0), str(path), errors)
    if sys.stdin is None:
        raise UserError("stdin: is closed; give the input on it or as -i FILE")
    return StreamLines(sys.stdin.buffer, "stdin", errors)


def read_lines(path: str | Path, errors: str = "strict") -> Iterator[str]:
    """Yield the lines of a UTF-8 text file (gzip or plain) or stream, by `decode_line`'s rules."""
    if is_stream(path):
        yield from stream_lines(path, errors)
        return
    with open_binary(path) as f, _gzip_errors(path):
        for number, raw in enumerate(f, start=1):
            yield decode_line(raw, str(path), number, errors)


class StreamLines:
    """The lines of a stream (standard input) as they arrive, by the rules of `decode_line`.

    `waiting()` tells whether the next line is not there yet (a person typing, a program
    awaiting an answer), so that readers answer what they have rather than wait for a chunk."""

    def __init__(self, stream, where: str = "stdin", errors: str = "strict"):
        self.stream, self.where, self.errors = stream, where, errors
        try:
            self.fd = stream.fileno()
        except (AttributeError, OSError, ValueError):
            self.fd = None  # an in-memory stream: everything is there already
        self.buffer, self.ended = b"", False
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
        # Zeros between members are padding, which `gzip` skips, in whichever read they come.
        while data := data if self.fed else data.lstrip(b"\x00"):
            with _gzip_errors(self.where):
                out += self.inflate.decompress(data)
            data = self.inflate.unused_data
            self.fed = not self.inflate.eof
            if self.inflate.eof:
                self.inflate = zlib.decompressobj(wbits=31)
        return out

    def waiting(self) -> bool:
        if self.buffer or self.ended or self.fd is None:
            return False
        return not select.select([self.fd], [], [], 0)[0]

    def __iter__(self) -> Iterator[str]:
        for number in itertools.count(1):
            # A NUL byte ends the wait too: binary input (/dev/zero) may hold no newline.
            while b"\n" not in self.buffer and b"\x00" not in self.buffer and not self.ended:
                self._fill()
            if not self.buffer:
                return
            line, _, self.buffer = self.buffer.partition(b"\n")  # the last may have no "\n"
            yield decode_line(line, self.where, number, self.errors)


def count_lines(path: str | Path) -> int:
    with open_binary(path) as f, _gzip_errors(path):
        return sum(1 for _ in f)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- destinations ---------------------------------------------------------------------------
SPECIAL_FILE_SYSTEMS = (Path("/proc"), Path("/sys"), Path("/dev"))
STREAMS = {"-": "the file on stdin (-i -)", 0: "the file on stdin", 1: "the file on stdout"}
HELD: set[Path] = set()  # the locks this process holds: a stage inside `pipeline` nests


def same_file(a: str | Path | int, b: str | Path | int) -> bool:
    """Whether two paths, or a path and a standard stream ("-" or 0: stdin, 1: stdout), name
    one regular file: on disk (hard links too), or once resolved for a file yet to be made."""
    a, b = (0 if str(name) == "-" else name for name in (a, b))
    try:
        found = [os.fstat(n) if isinstance(n, int) else os.stat(n) for n in (a, b)]
        return all(stat.S_ISREG(f.st_mode) for f in found) and os.path.samestat(*found)
    except OSError:
        named = not isinstance(a, int) and not isinstance(b, int)
        return named and Path(a).resolve() == Path(b).resolve()


def check_streams(reads: Iterable[str | Path]) -> None:
    """Refuse a run whose standard output goes to a file it reads (`>> input`)."""
    for other in reads:
        if same_file(1, other):
            named = STREAMS.get(str(other), f"{other}, which this command reads or keeps")
            raise UserError(f"standard output goes to {named}; send it elsewhere")


def check_destination(path: str | Path, folder=False, parents=False, reads=(), writes=()) -> None:
    """Refuse, before any work is done, a destination that cannot take the output, or that
    (or the temporary files it `writes` beside it) is a file the command `reads` or a stream's.
    With `parents`, missing folders on the way will be made: the nearest existing one is checked."""
    if not folder and str(path).endswith("/"):
        raise UserError(f"{path}: names a folder (it ends in '/'); expected a file name")
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
    check_streams(reads)
    for written, other in itertools.product([path, *writes], [*reads, 0, 1]):
        if same_file(written, other):
            what = "is" if written == path else f"would write {written} over"
            named = STREAMS.get(other, f"the input {other}")  # a file, "-", a stream's file
            raise UserError(f"{path}: {what} {named}; choose another output")


@contextlib.contextmanager
def hold(lock: Path, name: str | Path) -> Iterator[None]:
    """Keep `name` (a run folder, an output) to this process for the block: an advisory lock on
    `lock`, a file naming the holder (the kernel frees a killed one's); others are refused."""
    lock = Path(lock).absolute()
    if lock in HELD:
        yield
        return
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if not same_file(lock, fd):  # its holder removed it as it finished: one more is due
            raise BlockingIOError
    except BlockingIOError:
        holder = os.read(fd, 1000).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise UserError(f"{name}: in use by {holder}; wait for it or stop it") from None
    command = " ".join(["nmt", *sys.argv[1:]])
    os.ftruncate(fd, os.write(fd, f"process {os.getpid()} ({command})".encode()))  # no stale tail
    HELD.add(lock)
    try:
        yield
    finally:
        HELD.discard(lock)
        lock.unlink(missing_ok=True)
        os.close(fd)
