"""Atomic writes and line reading with errors that name the file and line."""

from __future__ import annotations

import gzip

import pytest

from seq2seq.errors import UserError
from seq2seq.io import atomic_open, atomic_write_text, count_lines, read_lines


def test_atomic_write_replaces_only_on_success(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write_text(path, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_open(path) as f:
            f.write("half")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_write_into_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        atomic_write_text(tmp_path / "no" / "out.txt", "x")


def test_read_lines_plain_and_gzip_agree(tmp_path):
    text = "eins\nzwei\r\ndrei\n"
    (tmp_path / "a.txt").write_bytes(text.encode())
    with gzip.open(tmp_path / "a.txt.gz", "wb") as f:
        f.write(text.encode())
    expected = ["eins", "zwei", "drei"]
    assert list(read_lines(tmp_path / "a.txt")) == expected
    assert list(read_lines(tmp_path / "a.txt.gz")) == expected
    assert count_lines(tmp_path / "a.txt.gz") == 3


def test_invalid_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"ok\nalso ok\nbad \xff byte\n")
    with pytest.raises(UserError, match=r"bad\.txt:3: invalid UTF-8"):
        list(read_lines(path))
    assert list(read_lines(path, errors="replace"))[2] == "bad \ufffd byte"


def test_binary_file_is_refused(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(b"\x00\x01\x02abc")
    with pytest.raises(UserError, match="binary"):
        list(read_lines(path))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(UserError, match="nothere.txt: no such file"):
        list(read_lines(tmp_path / "nothere.txt"))
