"""The bad input catalogue: every command refuses bad input with one line on stderr, exit code
2, no traceback, and no file created or changed."""

from __future__ import annotations

import pickle
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from seq2seq.checkpoint import load_checkpoint
from seq2seq.errors import UserError

from .conftest import TINY_CONFIG

MARKER = Path("/tmp/seq2seq-pickle-ran")


class Exploit:
    """Unpickling this runs code: it is what a poisoned checkpoint would hold."""

    def __reduce__(self):
        return (MARKER.write_text, ("the pickle ran",))


def setup_world(root: Path, tiny_corpus: Path, trained_run: Path) -> dict:
    """A workspace with a corpus, a config, a trained run and some text files."""
    corpus = shutil.copytree(tiny_corpus, root / "corpus")
    run = shutil.copytree(trained_run, root / "run")
    config = root / "tiny.yaml"
    config.write_text(TINY_CONFIG.format(corpus=corpus), encoding="utf-8")
    (root / "in.en").write_text("The dog sleeps.\n", encoding="utf-8")
    (root / "refs.de").write_text("Der Hund schläft.\nDie Katze liest.\n", encoding="utf-8")
    (root / "hyps.de").write_text("Der Hund schläft.\n", encoding="utf-8")
    (root / "binary.bin").write_bytes(b"\x00\x01\x02\x03\xff" * 10)
    (root / "latin1.de").write_bytes("Der Hund schläft.\nDie Katze\n".encode("latin-1"))
    (root / "empty.de").write_text("")
    (root / "garbage.yaml").write_text("data: [unclosed\n  - :\n")
    (root / "typo.yaml").write_text(f"data: {{path: {corpus}}}\nmodle: {{}}\n")
    (root / "empty_folder").mkdir()
    (root / "a_file").write_text("not a folder\n")
    checkpoint = run / "model" / "best.safetensors"
    (root / "truncated.safetensors").write_bytes(checkpoint.read_bytes()[:5000])
    (root / "evil.safetensors").write_bytes(pickle.dumps(Exploit()))
    (root / "notes.txt.safetensors").write_text("just text")
    return {"root": root, "corpus": corpus, "run": run, "config": config}


# (name, command line with {placeholders}, regex the one stderr line must match)
CASES = [
    # preprocess
    ("config missing", "preprocess {root}/nope.yaml", r"nope\.yaml: no such config file"),
    ("config not YAML", "preprocess {root}/garbage.yaml", r"garbage\.yaml:\d+: "),
    ("config binary", "preprocess {root}/binary.bin", r"binary\.bin: not UTF-8"),
    ("unknown section", "preprocess {root}/typo.yaml", r"unknown config key 'modle'"),
    ("wrong type", "preprocess {config} --train.lr=fast", r"'train\.lr': expected a number"),
    ("out of range", "preprocess {config} --data.subwords.vocab_size=2", r"vocab_size.*from 8 to"),
    ("bad choice", "preprocess {config} --model.encoder.cell=cnn", r"'cnn' is not allowed"),
    (
        "corpus folder missing",
        "preprocess {config} --data.path={root}/nowhere",
        r"nowhere/train\.en: no such file",
    ),
    (
        "vocabulary too large",
        "preprocess {config} --data.subwords.vocab_size=50000",
        r"vocab_size.*too large",
    ),
    (
        "corpus is a binary file",
        "preprocess {config} --data.format=parquet "
        "--data.path={root} --data.train=binary.bin --data.dev=binary.bin --data.test=binary.bin",
        r"binary\.bin: cannot read as parquet",
    ),
    ("malformed override", "preprocess {config} --train.lr", r"--section\.key=value"),
    # train
    ("not preprocessed", "train {config} --run-dir {root}/fresh", r"run `nmt preprocess` first"),
    (
        "manifest corrupted",
        "train {config} --run-dir {run} --manifest-corrupt",
        r"manifest\.json: not valid JSON",
    ),
    (
        "ids missing",
        "train {config} --run-dir {run} --ids-missing",
        r"train\.en\.bin: no such file",
    ),
    (
        "negative steps",
        "train {config} --run-dir {run} --max-steps -5",
        r"'train\.max_steps': expected an integer >= 0",
    ),
    ("no GPU", "train {config} --run-dir {run} --device cuda", r"no CUDA GPU"),
    ("bad device", "train {config} --run-dir {run} --device tpu", r"auto, cpu, cuda or cuda:N"),
    (
        "changed model",
        "train {config} --run-dir {run} --model.decoder.hidden_size=8",
        r"different model config; pass --fresh",
    ),
    # translate
    (
        "model missing",
        "translate -m {root}/nomodel -i {root}/in.en -o {root}/o.txt",
        r"nomodel: no such model folder or checkpoint",
    ),
    (
        "model folder without checkpoint",
        "translate -m {root}/empty_folder -i {root}/in.en -o {root}/o.txt",
        r"empty_folder: no checkpoint found",
    ),
    (
        "truncated checkpoint",
        "translate -m {root}/truncated.safetensors -i {root}/in.en -o {root}/o.txt",
        r"truncated\.safetensors: not a readable safetensors file",
    ),
    (
        "pickle checkpoint",
        "translate -m {root}/evil.safetensors -i {root}/in.en -o {root}/o.txt",
        r"evil\.safetensors: not a readable safetensors file",
    ),
    (
        "text as checkpoint",
        "translate -m {root}/notes.txt.safetensors -i {root}/in.en -o {root}/o.txt",
        r"not a readable safetensors file",
    ),
    (
        "input missing",
        "translate -m {run} -i {root}/none.en -o {root}/o.txt",
        r"none\.en: no such input file",
    ),
    (
        "input binary",
        "translate -m {run} -i {root}/binary.bin -o {root}/o.txt",
        r"binary\.bin:1: NUL byte",
    ),
    (
        "input not UTF-8",
        "translate -m {run} -i {root}/latin1.de -o {root}/o.txt",
        r"latin1\.de:1: invalid UTF-8",
    ),
    (
        "output folder missing",
        "translate -m {run} -i {root}/in.en -o {root}/no/dir/o.txt",
        r"no/dir does not exist",
    ),
    (
        "output under a file",
        "translate -m {run} -i {root}/in.en -o {root}/a_file/o.txt",
        r"a_file is not a folder",
    ),
    (
        "beam size zero",
        "translate -m {run} -i {root}/in.en -o {root}/o.txt --beam-size 0",
        r"'search\.beam_size': expected an integer >= 1",
    ),
    (
        "batch size zero",
        "translate -m {run} -i {root}/in.en -o {root}/o.txt --batch-size 0",
        r"'search\.batch_size': expected an integer >= 1",
    ),
    (
        "n-best beyond beam",
        "translate -m {run} -i {root}/in.en -o {root}/o.txt --beam-size 2 --n-best 5",
        r"'search\.n_best': expected an integer from 1 to beam_size",
    ),
    (
        "bad precision",
        "translate -m {run} -i {root}/in.en -o {root}/o.txt --precision fp64",
        r"translate.precision': 'fp64' is not allowed; expected one of auto, fp32, bf16, fp16",
    ),
    (
        "fp16 on cpu",
        "translate -m {run} -i {root}/in.en -o {root}/o.txt --device cpu --precision fp16",
        r"precision fp16 needs a CUDA GPU",
    ),
    (
        "chunk of zero lines",
        "translate -m {run} -i {root}/in.en -o {root}/o.txt --chunk-lines 0",
        r"'translate.chunk_lines': expected an integer >= 1",
    ),
    (
        "not a number",
        "translate -m {run} -i {root}/in.en -o {root}/o.txt --beam-size five",
        r"Invalid value for '--beam-size'",
    ),
    ("missing option", "translate -m {run} -i {root}/in.en", r"Missing option '-o'"),
    # score
    ("hypotheses missing", "score -H {root}/none.de -r {root}/refs.de", r"none\.de: no such file"),
    (
        "fewer hypotheses",
        "score -H {root}/hyps.de -r {root}/refs.de",
        r"hyps\.de has 1 lines but .*refs\.de has 2",
    ),
    ("empty references", "score -H {root}/empty.de -r {root}/empty.de", r"empty\.de: empty"),
    (
        "references not UTF-8",
        "score -H {root}/latin1.de -r {root}/latin1.de",
        r"latin1\.de:1: invalid UTF-8",
    ),
    ("references binary", "score -H {root}/refs.de -r {root}/binary.bin", r"binary\.bin:1: NUL"),
    # pipeline
    ("pipeline config missing", "pipeline {root}/nope.yaml", r"nope\.yaml: no such config file"),
    ("pipeline stray argument", "pipeline {config} stray", r"unexpected argument 'stray'"),
    (
        "pipeline bad corpus",
        "pipeline {config} --run-dir {root}/p --data.path={root}/nowhere",
        r"nowhere/train\.en: no such file",
    ),
    ("unknown command", "transalte -m x", r"No such command 'transalte'"),
]


def snapshot(root: Path) -> dict:
    return {
        p.relative_to(root): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_corpus, trained_run):
    return setup_world(tmp_path_factory.mktemp("world"), tiny_corpus, trained_run)


def test_the_catalogue_is_large_enough():
    assert len(CASES) >= 30
    assert {c[1].split()[0] for c in CASES} >= {
        "preprocess",
        "train",
        "translate",
        "score",
        "pipeline",
    }


@pytest.mark.parametrize("name, command, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input(world, name, command, expected, monkeypatch):
    root, run = world["root"], world["run"]
    args = command.format(**world).split()
    restore = []
    if "--manifest-corrupt" in args:
        args.remove("--manifest-corrupt")
        original = (run / "manifest.json").read_bytes()
        (run / "manifest.json").write_text("{ not json")
        restore.append((run / "manifest.json", original))
    if "--ids-missing" in args:
        args.remove("--ids-missing")
        path = run / "data" / "train.en.bin"
        restore.append((path, path.read_bytes()))
        path.unlink()
    monkeypatch.chdir(root)
    MARKER.unlink(missing_ok=True)
    before = snapshot(root)
    try:
        result = CliRunner().invoke(app, args)
    finally:
        after = snapshot(root)
        for path, data in restore:
            path.write_bytes(data)
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.search(expected, lines[0]), lines[0]
    assert "Traceback" not in result.output
    assert after == before, "files were created or changed"
    assert not MARKER.exists(), "a pickle in a checkpoint ran"


def test_a_planted_pickle_is_refused_and_never_runs(tmp_path):
    MARKER.unlink(missing_ok=True)
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(UserError, match="not a readable safetensors file"):
        load_checkpoint(path)
    assert not MARKER.exists()
