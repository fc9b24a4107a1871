"""The vocabulary shortlist: its table from co-occurrence, decoding over a cut vocabulary
through the same search, and the table's way from training to translation."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from pipelines.translator import Translator
from seq2seq.batching import pad
from seq2seq.checkpoint import load_checkpoint, save_checkpoint
from seq2seq.config import SearchConfig
from seq2seq.decoding import translate_ids
from seq2seq.ensemble import Ensemble
from seq2seq.errors import UserError
from seq2seq.int8 import quantize
from seq2seq.shortlist import Shortlisted, build_shortlist
from seq2seq.vocab import Vocab

from .test_model import random_sentences
from .test_search import SOME, VOCAB, build


def test_the_table_ranks_target_pieces_by_dice_and_fills_with_the_end():
    vocab = Vocab(src_size=8, tgt_size=9, pad_id=1, unk_id=0, bos_id=2, eos_id=3)
    pairs = [([4, 5], [6, 7]), ([4, 5, 5], [6, 8]), ([4], [6, 7]), ([5], [8, 6])]
    src, tgt = ([torch.tensor(p[side]) for p in pairs] for side in (0, 1))
    table = build_shortlist(src, tgt, vocab, width=4)
    assert table.shape == (vocab.src_size + 1, 4)
    # source 4 is in pairs 0-2: target 6 in all three (Dice 2*3/(3+4)), 7 in two (2*2/(3+2))
    # and 8 in one (2*1/(3+2)); source 5 in pairs 0, 1, 3: 6 (2*3/(3+4)), 8 (2*2/(3+2)), 7
    assert table[4].tolist() == [6, 7, 8, 3]  # the end of sentence fills the row
    assert table[5].tolist() == [6, 8, 7, 3]
    assert table[6].tolist() == [3, 3, 3, 3]  # never a source piece
    assert table[-1].tolist() == [6, 7, 8, 0]  # by frequency: 4, 2, 2 pairs, then none


def whole(vocab: Vocab) -> torch.Tensor:
    """A table that keeps every target piece."""
    return torch.arange(vocab.tgt_size, dtype=torch.int32).repeat(vocab.src_size + 1, 1)


def search_all(model, sentences, config, table=None):
    return translate_ids(model, sentences, config, torch.device("cpu"), False, table)


@pytest.mark.parametrize("kind", ["model", "ensemble", "int8"])
def test_a_shortlist_of_the_whole_vocabulary_decodes_as_without(kind):
    """Same search, same model, every piece kept: the same hypotheses and scores (the cut
    output layer is the whole one, rows in the same order), for one model, an ensemble and
    int8 weights."""
    model = {
        "model": lambda: build(SOME[0]),
        "ensemble": lambda: Ensemble([build(SOME[0]), build(SOME[1], seed=1)]).eval(),
        "int8": lambda: quantize(build(SOME[2])),
    }[kind]()
    sentences = random_sentences(9, seed=5)
    config = SearchConfig(beam_size=3, n_best=2)
    full = search_all(model, sentences, config)
    cut = search_all(model, sentences, dataclasses.replace(config, shortlist=13), whole(VOCAB))
    for one, two in zip(full, cut, strict=True):
        assert [h.tokens for h in one] == [h.tokens for h in two]
        assert [h.score for h in one] == pytest.approx([h.score for h in two], abs=1e-5)


def test_the_search_only_chooses_pieces_of_the_batch_shortlist():
    model = build(SOME[0])
    sentences = random_sentences(6, seed=8)
    table = torch.tensor([[5, 6]] * VOCAB.src_size + [[9, 9]], dtype=torch.int32)
    src, _ = pad(sentences, VOCAB.pad_id, suffix=VOCAB.eos_id)
    cut = Shortlisted(model, table, src, best=1)
    assert cut.ids.tolist() == [0, 1, 2, 3, 5, 9]  # specials, the first best, the frequent
    assert cut.vocab.eos_id == 3 and cut.vocab.tgt_size == 6
    config = SearchConfig(beam_size=4, max_len_a=0, max_len_b=6, shortlist=1)
    results = search_all(model, sentences, config, table)
    tokens = {t for hyps in results for h in hyps for t in h.tokens}
    assert tokens and tokens <= {0, 5, 9}  # <unk> may be chosen; pad and bos never are


def test_training_stores_the_table_and_translation_uses_it(trained_run, tmp_path):
    checkpoint = load_checkpoint(trained_run / "model" / "best.safetensors")
    vocab = checkpoint.model.vocab
    assert checkpoint.shortlist.shape == (vocab.src_size + 1, 100)
    source = tmp_path / "in.txt"
    source.write_text("a small test\nanother line\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    args = ["translate", "-m", str(trained_run), "-i", str(source), "-o", str(out)]
    result = CliRunner().invoke(app, [*args, "--search.shortlist=5"])
    assert result.exit_code == 0, result.output
    assert len(out.read_text(encoding="utf-8").splitlines()) == 2


def test_a_checkpoint_without_a_table_is_a_clear_error(trained_run, tmp_path):
    c = load_checkpoint(trained_run / "model" / "best.safetensors")
    older = tmp_path / "older.safetensors"
    save_checkpoint(older, c.model, c.src_tokenizer, c.tgt_tokenizer, c.search, c.info)
    assert load_checkpoint(older).shortlist is None
    with pytest.raises(UserError, match="search.shortlist needs a table .*resume training"):
        Translator(older, shortlist=10)
    with pytest.raises(UserError, match=f"{older}: search.shortlist needs"):
        Translator(older).translate("a line", shortlist=10)
    source = tmp_path / "in.txt"
    source.write_text("a line\n", encoding="utf-8")
    args = ["translate", "-m", str(older), "-i", str(source), "-o", str(tmp_path / "out.txt")]
    result = CliRunner().invoke(app, [*args, "--search.shortlist=10"])
    assert result.exit_code == 2
    assert "search.shortlist" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out.txt").exists()


def test_an_ensemble_or_average_takes_the_table_of_any_member(trained_run, tmp_path):
    best = trained_run / "model" / "best.safetensors"
    c = load_checkpoint(best)
    older = tmp_path / "older.safetensors"
    save_checkpoint(older, c.model, c.src_tokenizer, c.tgt_tokenizer, c.search, c.info)
    lines = ["a small test", "another line"]
    expected = Translator([best, best]).translate(lines, shortlist=3)
    assert Translator([older, best]).translate(lines, shortlist=3) == expected
    assert Translator([best, older]).translate(lines, shortlist=3) == expected
    averaged = tmp_path / "averaged.safetensors"
    result = CliRunner().invoke(app, ["average", str(older), str(best), "-o", str(averaged)])
    assert result.exit_code == 0, result.output
    assert torch.equal(load_checkpoint(averaged).shortlist, c.shortlist)


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t.clone().fill_(t.max() + 1000),  # ids beyond the vocabulary
        lambda t: -t - 1,  # negative ids
        lambda t: t[:10].clone(),  # too few rows
        lambda t: t.flatten(),  # not a table
        lambda t: t.float(),  # not integer ids
        lambda t: t[:, :0].clone(),  # no columns
    ],
)
def test_a_malformed_table_is_a_clear_error_at_load(trained_run, tmp_path, change):
    c = load_checkpoint(trained_run / "model" / "best.safetensors")
    bad = tmp_path / "bad.safetensors"
    table = change(c.shortlist)
    save_checkpoint(bad, c.model, c.src_tokenizer, c.tgt_tokenizer, c.search, c.info, table)
    with pytest.raises(UserError, match=f"{bad}: 'shortlist' is not an int32 table"):
        load_checkpoint(bad)
    source = tmp_path / "in.txt"
    source.write_text("a line\n", encoding="utf-8")
    args = ["translate", "-m", str(bad), "-i", str(source), "-o", str(tmp_path / "out.txt")]
    result = CliRunner().invoke(app, [*args, "--search.shortlist=10"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert not list(tmp_path.glob("out.txt*"))


def test_the_shortlist_setting_is_checked():
    with pytest.raises(UserError, match="shortlist"):
        SearchConfig(shortlist=101)
    with pytest.raises(UserError, match="shortlist"):
        SearchConfig(shortlist=5, cuda_graphs=True)
