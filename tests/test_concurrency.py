"""Two processes on one thing: a run folder, or an output, is held by one process at a time.

The second is refused before any work, in one line naming the holder (its process id and
command), and leaves everything as it was; the lock goes when its holder ends, killed too.
A process may take again what it holds (`nmt pipeline` runs the stages inside its own lock).

Each case starts a real second process: a small holder of the lock while the command runs
here, or two `nmt` commands at once."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.layout import RunFolder
from pipelines.outputs import lock_of

from .conftest import ROOT, copy_run
from .workspace import HERE, SENTENCES, refused_and_untouched, resolve

HOLDER = """\
import sys
from pathlib import Path
sys.path.insert(0, {root!r})
from seq2seq.io import hold
with hold(Path(sys.argv[1]), "x"):
    print("held", flush=True)
    sys.stdin.read()
"""
NMT = [sys.executable, str(ROOT / "cli.py")]


@contextlib.contextmanager
def held_elsewhere(lock: Path):
    """`lock` held by another process until the block ends; yields that process."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER.format(root=str(ROOT)), str(lock), "nmt", "test"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        yield holder
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def wait_for(path: Path, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.fixture
def desk(world, tmp_path, monkeypatch):
    """A run folder (and a link to it), a text and an output folder in tmp_path."""
    copy_run(world / "run", tmp_path / "run")
    (tmp_path / "linked").symlink_to(tmp_path / "run")
    (tmp_path / "in.en").write_text("".join(s + "\n" for s in SENTENCES), encoding="utf-8")
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "a.en").write_text("The dog sleeps.\n", encoding="utf-8")
    (tmp_path / "tiny.yaml").write_bytes((world / "tiny.yaml").read_bytes())
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("run", ["run", f"{HERE}/run", "inbox/../run", "linked", "linked/"])
@pytest.mark.parametrize("command", ["preprocess", "train", "pipeline"])
def test_a_run_folder_in_use_is_refused(desk, command, run):
    with held_elsewhere(desk / "run" / ".lock") as holder:
        args = resolve([command, "tiny.yaml", "--run-dir", run], desk)
        line = refused_and_untouched(desk, args, rf"in use by process {holder.pid} \(nmt ")
    assert line.startswith(f"error: {Path(args[-1])}: ") and "wait for it or stop it" in line
    assert not (desk / "run" / ".lock").exists()


@pytest.mark.parametrize("output", ["out.de", f"{HERE}/out.de", "./out.de", "inbox/../out.de"])
@pytest.mark.parametrize("flag", ["-o", "--alignments"])
def test_an_output_in_use_is_refused(desk, output, flag):
    """The same output file (or alignments file) however spelled, while another writes it."""
    (desk / "out.de").write_text("an earlier translation\n")
    other = {"-o": ["--alignments", "a.json"], "--alignments": ["-o", "x.de"]}[flag]
    with held_elsewhere(lock_of(desk / "out.de")) as holder:
        args = resolve(["translate", "-m", "run", "-i", "in.en", flag, output, *other], desk)
        refused_and_untouched(desk, args, rf"out.de: in use by process {holder.pid}")


def test_an_output_folder_in_use_is_refused(desk):
    with held_elsewhere(lock_of(desk / "outbox")) as holder:
        for output in ["outbox", "outbox/", str(desk / "outbox")]:
            args = ["translate", "-m", "run", "-i", "inbox", "-o", output]
            refused_and_untouched(desk, args, rf"outbox: in use by process {holder.pid}")


def test_a_process_takes_again_what_it_holds(desk):
    """The pipeline holds its run folder while its stages take it again."""
    run = RunFolder(desk / "run")
    with run.lock(), run.lock():
        assert (desk / "run" / ".lock").read_text().startswith(f"process {os.getpid()} ")
    assert not (desk / "run" / ".lock").exists()


def test_two_translations_to_one_output(desk):
    """The first reads stdin, which is left open, so it holds its output while the second
    starts; the second is refused and the first then finishes its translation."""
    translate = [*NMT, "translate", "-m", str(desk / "run"), "-o", str(desk / "out.de")]
    first = subprocess.Popen([*translate, "-i", "-"], stdin=subprocess.PIPE, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        wait_for(lock_of(desk / "out.de"), first)
        second = subprocess.run([*translate, "-i", str(desk / "in.en")], capture_output=True,
                                text=True, timeout=120)  # fmt: skip
        assert second.returncode == 2, second.stderr
        assert f"in use by process {first.pid} (nmt translate" in second.stderr
        out, err = first.communicate("".join(s + "\n" for s in SENTENCES), timeout=120)
    finally:
        first.kill()
    assert first.returncode == 0, err
    assert len((desk / "out.de").read_text().splitlines()) == len(SENTENCES)
    assert sorted(p.name for p in desk.iterdir() if "out" in p.name) == ["out.de"]


def test_two_trainings_on_one_run_and_the_lock_goes_with_a_killed_holder(desk):
    """A second `nmt train` on a run folder in training is refused; once the first is killed
    (SIGKILL: no chance to clean up) a third trains."""
    train = [*NMT, "train", str(desk / "tiny.yaml"), "--run-dir", str(desk / "run")]
    first = subprocess.Popen([*train, "--max-steps", "100000"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)  # fmt: skip
    try:
        wait_for(desk / "run" / ".lock", first)
        second = subprocess.run(train, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert f"in use by process {first.pid} (nmt train" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    third = subprocess.run([*train, "--max-steps", "1"], capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert third.returncode == 0, third.stderr
    assert not (desk / "run" / ".lock").exists()
