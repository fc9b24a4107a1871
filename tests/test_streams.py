"""Inputs and the standard streams: cases generated for every command that reads text.

- standard streams in every pairing with files and folders, and stdin read as it arrives
  (answered line by line, waited on without spinning)
- every text input read the same way (byte-order mark, CRLF, no final newline, gzip), corpora,
  config files and alignments files included
- what an input folder, a corpus or an alignments file may not hold

Shared workspace: the `world` fixture in conftest.py; helpers in workspace.py.

Each refusal must be one line on stderr, exit code 2, no traceback, and leave every file of
the workspace as it was."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seq2seq.config import load_config

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
