"""Inputs and the standard streams: cases generated for every command that reads text.

- standard streams in every pairing with files and folders, and stdin read as it arrives
  (answered line by line, waited on without spinning)
- every text input read the same way (byte-order mark, CRLF, no final newline, gzip), corpora,
  config files and alignments files included
- what an input folder, a corpus or an alignments file may not hold
- pipes and devices named by a path (read once, as streams; an endless binary one refused),
  closed standard streams, an ASCII locale, and a reader that goes away (`| head -1`)

Shared workspace: the `world` fixture in conftest.py; helpers in workspace.py.

Each refusal must be one line on stderr, exit code 2, no traceback, and leave every file of
the workspace as it was."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import select
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from seq2seq.checkpoint import load_checkpoint, save_checkpoint
from seq2seq.config import load_config, to_dict
from seq2seq.errors import UserError
from seq2seq.io import StreamLines, count_lines

from .conftest import ROOT, TINY_CONFIG
from .workspace import SENTENCES, invoke, refused_and_untouched

# --- standard streams in every combination --------------------------------------------------

INPUTS = {"file": "in.en", "folder": "inbox", "stdin": "-"}
OUTPUTS = {"file": "out.de", "folder": "outbox", "stdout": "-"}
# The output file and folder exist: a file is replaced, a folder filled (a single file
# goes into it under its own name, as cp does).
WORKS = {("file", "file"), ("file", "stdout"), ("stdin", "file"), ("stdin", "stdout"),
         ("folder", "folder"), ("file", "folder")}  # fmt: skip


@pytest.mark.parametrize("source", list(INPUTS))
@pytest.mark.parametrize("dest", list(OUTPUTS))
@pytest.mark.parametrize("aligned", [False, True], ids=["", "alignments"])
def test_every_pairing_of_files_folders_and_streams(
    world, tmp_path, source, dest, aligned, monkeypatch
):
    work = tmp_path / "work"
    shutil.copytree(world, work, ignore=shutil.ignore_patterns("run", "corpus"), symlinks=True)
    monkeypatch.chdir(work)
    Path("out.de").write_text("an earlier result\n")
    Path("outbox").mkdir()
    args = ["translate", "-m", world / "run", "-i", INPUTS[source], "-o", OUTPUTS[dest]]
    if aligned:
        args += ["--alignments", "out.align"]
    text = "".join(s + "\n" for s in SENTENCES)
    expected = (world / "in.de").read_text(encoding="utf-8")
    works = (source, dest) in WORKS and not (aligned and source == "folder")
    if not works:
        refused_and_untouched(work, args, input=text)
        return
    result = invoke(args, input=text)
    assert result.exit_code == 0, result.output
    if dest == "stdout":
        assert result.stdout == expected
    elif dest == "file":
        assert Path("out.de").read_text(encoding="utf-8") == expected
    else:
        names = ["a.en", "b.en"] if source == "folder" else ["in.en"]
        assert sorted(os.listdir("outbox")) == names
        assert all((Path("outbox") / n).read_text() == expected for n in names)
    if aligned:
        assert Path("out.align").read_text() == (world / "in.align").read_text()


def test_score_reads_hypotheses_or_references_from_stdin(world, monkeypatch):
    monkeypatch.chdir(world)
    plain = invoke(["score", "-H", "in.de", "-r", "in.de", "--json"])
    text = (world / "in.de").read_text(encoding="utf-8")
    for args in (["-H", "-", "-r", "in.de"], ["-H", "in.de", "-r", "-"]):
        result = invoke(["score", *args, "--json"], input=text)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == json.loads(plain.stdout)
    refused_and_untouched(world, ["score", "-H", "-", "-r", "-"], "stdin", input=text)


def test_lines_typed_one_at_a_time_are_answered_as_they_arrive(world):
    """A program writes a line and waits for its answer, as with fairseq-interactive."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "translate", "-m", str(world / "run"), "-i", "-",
         "-o", "-", "--device", "cpu"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    expected = (world / "in.de").read_text(encoding="utf-8").splitlines()
    try:
        for sentence, translation in zip(SENTENCES, expected):
            process.stdin.write((sentence + "\n").encode())
            process.stdin.flush()
            ready, _, _ = select.select([process.stdout], [], [], 60)
            assert ready, f"no answer to {sentence!r} while the input stays open"
            assert process.stdout.readline().decode().rstrip("\n") == translation
        process.stdin.close()
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()


def test_stdin_waits_are_not_busy(world):
    """While the input is silent, an interactive run sleeps instead of spinning a core."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "translate", "-m", str(world / "run"), "-i", "-",
         "-o", "-", "--device", "cpu"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    try:
        process.stdin.write(b"The dog sleeps.\n")
        process.stdin.flush()
        select.select([process.stdout], [], [], 60)
        process.stdout.readline()
        before = _cpu_seconds(process.pid)
        time.sleep(1.0)
        assert _cpu_seconds(process.pid) - before < 0.3
        process.stdin.close()
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- every text input read the same way -----------------------------------------------------


def variants(text: str) -> dict[str, bytes]:
    """One text as editors and tools save it."""
    data = text.encode("utf-8")
    bom = b"\xef\xbb\xbf"
    return {
        "plain": data,
        "byte-order mark": bom + data,
        "CRLF": data.replace(b"\n", b"\r\n"),
        "BOM and CRLF": bom + data.replace(b"\n", b"\r\n"),
        "no final newline": data.rstrip(b"\n"),
        "gzip": gzip.compress(data),
        "gzip with BOM": gzip.compress(bom + data),
        "gzip padded with zeros": gzip.compress(data) + bytes(512),
        "gzip in two members": gzip.compress(data[:3]) + gzip.compress(data[3:]),
    }


VARIANTS = list(variants("x\n"))


@pytest.mark.parametrize("variant", VARIANTS)
def test_score_reads_every_variant_like_the_plain_file(world, tmp_path, variant):
    text = (world / "in.de").read_text(encoding="utf-8")
    (tmp_path / "v.de").write_bytes(variants(text)[variant])
    plain = invoke(["score", "-H", world / "in.de", "-r", world / "in.de", "--json"])
    for args, input in ((["-H", tmp_path / "v.de", "-r", world / "in.de"], None),
                        (["-H", world / "in.de", "-r", tmp_path / "v.de"], None),
                        (["-H", "-", "-r", world / "in.de"], variants(text)[variant])):  # fmt: skip
        result = invoke(["score", *args, "--json"], input=input)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == json.loads(plain.stdout)


@pytest.mark.parametrize("variant", VARIANTS)
def test_translate_reads_every_variant_like_the_plain_file(world, tmp_path, variant):
    text = "".join(s + "\n" for s in SENTENCES)
    (tmp_path / "v.en").write_bytes(variants(text)[variant])
    for source, input in ((tmp_path / "v.en", None), ("-", variants(text)[variant])):
        result = invoke(["translate", "-m", world / "run", "-i", source, "-o", tmp_path / "o.de"],
                        input=input)  # fmt: skip
        assert result.exit_code == 0, result.output
        assert (tmp_path / "o.de").read_text() == (world / "in.de").read_text()


@pytest.mark.parametrize("variant", [v for v in VARIANTS if not v.startswith("gzip")])
@pytest.mark.parametrize("form", ["text", "tsv", "csv", "json"])
def test_preprocess_reads_every_variant_like_the_plain_file(world, tmp_path, variant, form):
    """The same corpus in each table format and spelling gives the same cleaned text."""
    corpus = world / "corpus"
    pairs = {
        split: list(zip(*(
            (corpus / f"{split}.{lang}").read_text(encoding="utf-8").splitlines()
            for lang in ("en", "de")
        )))
        for split in ("train", "dev", "test")
    }  # fmt: skip
    folder = tmp_path / "corpus"
    folder.mkdir()
    overrides = []
    for split, rows in pairs.items():
        if form == "text":
            for i, lang in enumerate(("en", "de")):
                text = "".join(row[i] + "\n" for row in rows)
                (folder / f"{split}.{lang}").write_bytes(variants(text)[variant])
            continue
        if form == "json":
            text = "".join(json.dumps({"en": en, "de": de}) + "\n" for en, de in rows)
        elif form == "tsv":
            text = "en\tde\n" + "".join(f"{en}\t{de}\n" for en, de in rows)
        else:
            table = io.StringIO()
            csv.writer(table, lineterminator="\n").writerows([("en", "de"), *rows])
            text = table.getvalue()
        (folder / f"{split}.{form}").write_bytes(variants(text)[variant])
        overrides.append(f"--data.{split}={split}.{form}")
    if form != "text":
        overrides.append(f"--data.format={form}")
    config = tmp_path / "c.yaml"
    config.write_text(TINY_CONFIG.format(corpus=folder))
    result = invoke(["preprocess", config, "--run-dir", tmp_path / "run", *overrides])
    assert result.exit_code == 0, result.output
    for split in ("train", "dev", "test"):
        for lang in ("en", "de"):
            got = (tmp_path / "run" / "data" / f"{split}.{lang}").read_text(encoding="utf-8")
            want = (world / "run" / "data" / f"{split}.{lang}").read_text(encoding="utf-8")
            assert got == want, (split, lang)


def test_a_config_file_with_a_byte_order_mark_or_crlf_reads_the_same(world, tmp_path):
    text = (world / "tiny.yaml").read_text(encoding="utf-8")
    plain = load_config(world / "tiny.yaml")
    for variant in ("byte-order mark", "CRLF", "BOM and CRLF"):
        path = tmp_path / "tiny.yaml"
        path.write_bytes(variants(text)[variant])
        assert load_config(path) == plain


def test_plot_attention_reads_a_crlf_alignments_file(world, tmp_path):
    text = (world / "in.align").read_text(encoding="utf-8")
    for variant in ("byte-order mark", "CRLF", "gzip"):
        path = tmp_path / "v.align"
        path.write_bytes(variants(text)[variant])
        result = invoke(["plot-attention", path, "--line", 2, "-o", tmp_path / f"{variant}.png"])
        assert result.exit_code == 0, result.output


# --- what an input may not hold -------------------------------------------------------------


@pytest.mark.parametrize("odd", ["broken link", "pipe"])
def test_a_folder_holding_something_that_is_not_a_file_is_refused(world, tmp_path, odd):
    inbox = tmp_path / "inbox"
    shutil.copytree(world / "inbox", inbox)
    if odd == "pipe":
        os.mkfifo(inbox / "c.en")
    else:
        (inbox / "c.en").symlink_to(tmp_path / "gone.en")
    (inbox / "sub").mkdir()  # a subfolder is not translated, and not an error
    args = ["translate", "-m", world / "run", "-i", inbox, "-o", tmp_path / "out"]
    refused_and_untouched(tmp_path, args, r"c\.en: not a regular file")


def test_a_gzipped_input_in_a_folder_is_translated_to_plain_text_without_gz(world, tmp_path):
    """x.en.gz is read as text, so its translation is plain text named x.en; with an x.en
    beside it, both would land on that name: refused before any work, naming both."""
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    text = "".join(s + "\n" for s in SENTENCES)
    (inbox / "v.en.gz").write_bytes(gzip.compress(text.encode("utf-8")))
    result = invoke(["translate", "-m", world / "run", "-i", inbox, "-o", out])
    assert result.exit_code == 0, result.output
    assert [p.name for p in out.iterdir()] == ["v.en"]
    assert (out / "v.en").read_text(encoding="utf-8") == (world / "in.de").read_text()
    shutil.rmtree(out)
    (inbox / "v.en").write_text(text, encoding="utf-8")
    args = ["translate", "-m", world / "run", "-i", inbox, "-o", out]
    refused_and_untouched(tmp_path, args, r"inbox/v\.en and \S*inbox/v\.en\.gz have the same")
    out.mkdir()  # one file into a folder, as cp does: named the same way
    result = invoke(["translate", "-m", world / "run", "-i", inbox / "v.en.gz", "-o", out])
    assert result.exit_code == 0 and [p.name for p in out.iterdir()] == ["v.en"], result.output


def test_a_corpus_with_a_split_both_plain_and_gzipped_is_refused(world, tmp_path):
    corpus = shutil.copytree(world / "corpus", tmp_path / "corpus")
    (corpus / "dev.de.gz").write_bytes(gzip.compress((corpus / "dev.de").read_bytes()))
    args = ["preprocess", world / "tiny.yaml", "--run-dir", tmp_path / "run",
            f"--data.path={corpus}"]  # fmt: skip
    refused_and_untouched(tmp_path, args, r"dev\.de: both it and dev\.de\.gz exist")


@pytest.mark.parametrize(
    "spoil",
    ["a row short", "a weight short", "a NaN weight", "a weight of 2", "a string weight",
     "no rows"],
)  # fmt: skip
def test_plot_attention_refuses_weights_that_do_not_fit_the_pieces(world, tmp_path, spoil):
    record = json.loads((world / "in.align").read_text().splitlines()[0])
    rows = record["attention"]
    if spoil == "a row short":
        rows.pop()
    elif spoil == "a weight short":
        rows[0].pop()
    elif spoil == "no rows":
        record["attention"] = {}
    else:
        rows[0][0] = {"a NaN weight": float("nan"), "a weight of 2": 2.0}.get(spoil, "0.5")
    (tmp_path / "a.jsonl").write_text(json.dumps(record) + "\n")
    args = ["plot-attention", tmp_path / "a.jsonl", "-o", tmp_path / "a.png"]
    refused_and_untouched(tmp_path, args, r"a\.jsonl:1: attention")


# --- pipes and devices named by a path; closed standard streams; a reader that goes away ----


def named_stream(tmp_path: Path, how: str, data: bytes) -> str:
    """A path that gives `data` once, as it is written: a named pipe, or a pipe as
    /dev/fd/N (what the shell names `<(zcat corpus.gz)`)."""
    if how == "named pipe":
        path = tmp_path / "fifo"
        os.mkfifo(path)
        threading.Thread(target=path.write_bytes, args=(data,), daemon=True).start()
        return str(path)
    read, write = os.pipe()
    threading.Thread(target=lambda: (os.write(write, data), os.close(write)), daemon=True).start()
    return f"/dev/fd/{read}"


READERS = ["translate", "score", "plot-attention", "config"]


@pytest.mark.parametrize("how", ["named pipe", "/dev/fd"])
@pytest.mark.parametrize("reader", READERS)
def test_a_pipe_named_by_a_path_is_read_once_as_a_stream(world, tmp_path, reader, how):
    """Gzipped too, as `-i <(cat corpus.gz)` gives it; nothing counts its lines first."""
    source = {"translate": "in.en", "score": "in.de", "plot-attention": "in.align",
              "config": "tiny.yaml"}[reader]  # fmt: skip
    data = (world / source).read_bytes()
    path = named_stream(tmp_path, how, data if reader == "config" else gzip.compress(data))
    try:
        if reader == "config":
            got, want = to_dict(load_config(path)), to_dict(load_config(world / source))
            assert {**got, "name": "x"} == {**want, "name": "x"}
            return
        args = {
            "translate": ["translate", "-m", world / "run", "-i", path, "-o", tmp_path / "o.de"],
            "score": ["score", "-H", path, "-r", world / "in.de", "--json"],
            "plot-attention": ["plot-attention", path, "--line", 2, "-o", tmp_path / "a.png"],
        }[reader]
        result = invoke(args)
        assert result.exit_code == 0, result.output
        if reader == "translate":
            assert (tmp_path / "o.de").read_text() == (world / "in.de").read_text()
        if reader == "score":
            plain = invoke(["score", "-H", world / source, "-r", world / "in.de", "--json"])
            assert json.loads(result.stdout) == json.loads(plain.stdout)
    finally:
        if how == "/dev/fd":
            os.close(int(path.rsplit("/", 1)[1]))


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
@pytest.mark.parametrize("reader", READERS)
def test_an_endless_binary_device_is_refused_after_a_bounded_read(world, tmp_path, reader, device):
    args = {
        "translate": ["translate", "-m", world / "run", "-i", device, "-o", tmp_path / "o.de"],
        "score": ["score", "-H", device, "-r", world / "in.de"],
        "plot-attention": ["plot-attention", device, "-o", tmp_path / "a.png"],
        "config": ["preprocess", world / "tiny.yaml", "--run-dir", tmp_path / "run",
                   f"--data.path={tmp_path}", "--data.train=zero"],
    }[reader]  # fmt: skip
    if reader == "config":  # the corpus: train.en is the device
        os.symlink(device, tmp_path / "zero.en")
        shutil.copy(world / "corpus" / "train.de", tmp_path / "zero.de")
        for split in ("dev", "test"):
            for lang in ("en", "de"):
                shutil.copy(world / "corpus" / f"{split}.{lang}", tmp_path)
    # (random bytes may start with a valid line: any refusal naming a line of the device)
    refused_and_untouched(tmp_path, args, rf"{device}:\d+: |zero\.en")


def run_nmt(args: list, cwd: Path, closed: int | None = None, **kwargs):
    """`nmt` in its own process, with one standard stream closed (`<&-`, `>&-`, `2>&-`) and
    an encoding that cannot spell the translations (PYTHONIOENCODING=ascii)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *map(str, args)], cwd=cwd, timeout=120,
        preexec_fn=None if closed is None else lambda: os.close(closed),
        env={**os.environ, "PYTHONIOENCODING": "ascii"}, **kwargs,
    )  # fmt: skip


STREAM_CASES = {  # stream closed, -i, -o, exit code, what stderr says
    "stdin closed, -i -": (0, "-", "o.de", 2, r"^error: stdin: is closed"),
    "stdout closed, -o -": (1, "test.en", "-", 2, r"^error: -o -: stdout is closed"),
    "stdout closed, -o FILE": (1, "test.en", "o.de", 0, ""),
    "stderr closed": (2, "test.en", "-", 0, None),
    "-i /dev/stdin": (None, "/dev/stdin", "-", 0, ""),
}


def umlaut_model(world: Path, path: Path) -> Path:
    """The world's model with its output bias pushed to a piece spelled beyond ASCII, so
    that every translation is (Mädchen Mädchen ...)."""
    checkpoint = load_checkpoint(world / "run" / "model" / "best.safetensors")
    pieces = checkpoint.tgt_tokenizer.sp
    umlaut = next(i for i in range(pieces.get_piece_size()) if "ä" in pieces.id_to_piece(i))
    with torch.no_grad():
        checkpoint.model.decoder.output.bias[umlaut] += 50
    save_checkpoint(path, checkpoint.model, checkpoint.src_tokenizer, checkpoint.tgt_tokenizer,
                    checkpoint.search, checkpoint.info)  # fmt: skip
    return path


@pytest.mark.parametrize("case", list(STREAM_CASES))
def test_closed_standard_streams_and_an_ascii_locale(world, tmp_path, case):
    closed, source, output, code, said = STREAM_CASES[case]
    shutil.copy(world / "in.en", tmp_path / "test.en")
    model = umlaut_model(world, tmp_path / "m.safetensors")
    expected = invoke(["translate", "-m", model, "-i", tmp_path / "test.en", "-o", "-"])
    assert "ä" in expected.stdout
    stdin = (tmp_path / "test.en").open("rb") if source == "/dev/stdin" else subprocess.DEVNULL
    args = ["translate", "-m", model, "-i", source, "-o", output, "--device", "cpu"]
    result = run_nmt(args, tmp_path, closed, stdin=stdin, capture_output=True)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr.decode()
    if said is not None:
        assert re.search(said, result.stderr.decode()), result.stderr
    if code == 0:
        written = result.stdout if output == "-" else (tmp_path / output).read_bytes()
        assert written == expected.stdout.encode("utf-8")
    else:
        assert sorted(os.listdir(tmp_path)) == ["m.safetensors", "test.en"]


def test_a_reader_that_goes_away_ends_translation_quietly(world, tmp_path):
    """`nmt translate ... | head -1`: exit status 141, as a process that SIGPIPE ends."""
    (tmp_path / "many.en").write_text((world / "corpus" / "test.en").read_text() * 20)
    args = ["translate", "-m", world / "run", "-i", "many.en", "-o", "-", "--chunk-lines", 1]
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), *map(str, args)], cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout.readline()
    process.stdout.close()
    assert process.wait(timeout=120) == 141
    stderr = process.stderr.read().decode()
    assert "Traceback" not in stderr and "error" not in stderr, stderr


def test_gzip_padding_that_arrives_in_a_later_read_is_skipped():
    """Zeros after a member, as `gzip` skips them, though the read that brings them comes
    after the one that ended the member."""
    member = gzip.compress(b"a\nb\n")
    parts = [member, bytes(512), gzip.compress(b"c\n"), bytes(10)]

    class Reads:  # a pipe: each read brings what one write put in
        read = staticmethod(lambda _, parts=iter(parts): next(parts, b""))

    assert list(StreamLines(Reads())) == ["a", "b", "c"]


def test_counting_lines_of_corrupt_gzip_names_the_file(tmp_path):
    path = tmp_path / "broken.en.gz"
    path.write_bytes(gzip.compress(b"a line\n" * 1000)[:-30])
    with pytest.raises(UserError, match=rf"{re.escape(str(path))}: corrupt gzip data"):
        count_lines(path)
