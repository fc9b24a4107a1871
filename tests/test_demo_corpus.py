"""The bundled demo corpus: reproducible, held out, and grammatical where it matters."""

from __future__ import annotations

import gzip

from .conftest import ROOT

DEMO = ROOT / "data" / "demo"


def read(split: str, lang: str) -> list[str]:
    return gzip.decompress((DEMO / f"{split}.{lang}.gz").read_bytes()).decode().splitlines()


def test_generator_reproduces_the_committed_files(generator, tmp_path):
    for split, pairs in generator.generate().items():
        assert [en for en, _ in pairs] == read(split, "en")
        assert [de for _, de in pairs] == read(split, "de")
    generator.write_gzip(tmp_path / "x.gz", ["eins", "zwei"])
    generator.write_gzip(tmp_path / "y.gz", ["eins", "zwei"])
    assert (tmp_path / "x.gz").read_bytes() == (tmp_path / "y.gz").read_bytes()


def test_sizes_and_held_out_splits():
    train, dev, test = (set(read(s, "en")) for s in ("train", "dev", "test"))
    assert len(train) == 30_000 and len(dev) == 500 and len(test) == 1_000
    assert not train & dev and not train & test and not dev & test
    assert sum(f.stat().st_size for f in DEMO.glob("*.gz")) < 2_000_000


def test_one_english_sentence_has_one_german_translation(generator):
    pairs = {}
    for en, de in generator.generate(seed=11, sizes={"x": 3000})["x"]:
        assert pairs.setdefault(en, de) == de


def test_subordinate_clauses_put_the_finite_verb_last(generator):
    finite = (
        {v[4] for v in generator.VERBS}
        | {v[5] for v in generator.VERBS}
        | {v[6] for v in generator.VERBS}
        | {v[7] for v in generator.VERBS}
        | set(generator.HABEN)
        | set(generator.SEIN)
        | set(generator.WERDEN)
        | {form for _, forms in generator.MODALS for form in forms}
    )
    checked = 0
    for _, de in generator.generate(seed=12, sizes={"x": 2000})["x"]:
        if ", dass " in de and "," not in de.split(", dass ")[1]:
            clause = de.split(", dass ")[1].rstrip(".?")
            assert clause.split()[-1] in finite, de
            checked += 1
    assert checked > 50
