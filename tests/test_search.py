"""Search invariants on tiny random models: exactness, batch invariance, scores."""

from __future__ import annotations

import itertools

import pytest
import torch

from seq2seq.batching import pad
from seq2seq.config import SearchConfig
from seq2seq.decoding import translate_ids
from seq2seq.model import Seq2Seq
from seq2seq.search import NEG_INF, _Beams, beam_search, greedy_search, length_penalty, search
from seq2seq.vocab import Vocab

from .test_model import CONFIGS, random_sentences

VOCAB = Vocab(src_size=13, tgt_size=13, pad_id=1, unk_id=0, bos_id=2, eos_id=3)
SOME = [
    "gru-additive-concat",
    "lstm-dot-add-feed-last",
    "rnn-general-feed-uni-zero",
    "lstm-multihead-feed",
    "rnn-none",
]


def build(name: str, vocab: Vocab = VOCAB, seed: int = 0) -> Seq2Seq:
    torch.manual_seed(seed)
    model = Seq2Seq(CONFIGS[name], vocab).eval()
    # Sharpen the output layer so that random models stop at different lengths.
    with torch.no_grad():
        model.decoder.output.bias[vocab.eos_id] += 1.5
    return model


def teacher_forced_log_prob(model: Seq2Seq, source: list[int], tokens: list[int]) -> float:
    vocab = model.vocab
    src, src_lengths = pad([source], vocab.pad_id, suffix=vocab.eos_id)
    tgt_in, _ = pad([tokens], vocab.pad_id, prefix=vocab.bos_id)
    tgt_out, _ = pad([tokens], vocab.pad_id, suffix=vocab.eos_id)
    with torch.no_grad():
        log_probs = model(src, src_lengths, tgt_in)
    return float(log_probs[0].gather(1, tgt_out[0, :, None]).sum())


@pytest.mark.parametrize("name", SOME)
@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_of_one_is_greedy(name, alpha):
    model = build(name)
    src, src_lengths = pad(random_sentences(16, seed=1), VOCAB.pad_id, suffix=VOCAB.eos_id)
    config = SearchConfig(beam_size=1, n_best=1, length_penalty=alpha)
    greedy = greedy_search(model, src, src_lengths, config)
    beam = beam_search(model, src, src_lengths, config)
    for g, b in zip(greedy, beam):
        assert g[0].tokens == b[0].tokens
        assert g[0].score == b[0].score
        assert g[0].log_prob == b[0].log_prob


@pytest.mark.parametrize("beam_size", [1, 5, 10])
@pytest.mark.parametrize("name", ["gru-additive-concat", "lstm-multihead-feed"])
def test_a_sentence_gets_the_same_result_alone_and_in_a_batch(name, beam_size):
    model = build(name)
    sentences = random_sentences(64, seed=2, low=1, high=12)
    config = SearchConfig(beam_size=beam_size, n_best=1, max_len_a=1.0, max_len_b=4)
    src, src_lengths = pad(sentences, VOCAB.pad_id, suffix=VOCAB.eos_id)
    batched = search(model, src, src_lengths, config)
    for i in range(64):
        alone_src, alone_lengths = pad([sentences[i]], VOCAB.pad_id, suffix=VOCAB.eos_id)
        alone = search(model, alone_src, alone_lengths, config)[0][0]
        assert alone.tokens == batched[i][0].tokens
        assert alone.score == pytest.approx(batched[i][0].score, abs=1e-5)


@pytest.mark.parametrize("name", SOME)
@pytest.mark.parametrize("beam_size, alpha", [(1, 0.0), (4, 0.0), (4, 1.0), (6, 0.6)])
def test_score_is_the_teacher_forced_log_prob_with_the_length_penalty(name, beam_size, alpha):
    model = build(name)
    sentences = random_sentences(6, seed=3)
    config = SearchConfig(beam_size=beam_size, n_best=min(3, beam_size), length_penalty=alpha)
    src, src_lengths = pad(sentences, VOCAB.pad_id, suffix=VOCAB.eos_id)
    for source, hypotheses in zip(sentences, search(model, src, src_lengths, config)):
        for h in hypotheses:
            expected = teacher_forced_log_prob(model, source, h.tokens)
            assert h.log_prob == pytest.approx(expected, abs=1e-4)
            penalty = float(length_penalty(torch.tensor(len(h.tokens) + 1), alpha))
            assert h.score == pytest.approx(h.log_prob / penalty, rel=1e-6)


def exhaustive(model: Seq2Seq, source: list[int], config: SearchConfig, max_len: int):
    """Every hypothesis search may return, scored by teacher forcing, best first."""
    vocab = model.vocab
    outputs = [
        t for t in range(vocab.tgt_size) if t not in (vocab.pad_id, vocab.bos_id, vocab.eos_id)
    ]
    scored = []
    for n in range(max(1, config.min_len), max_len + 1):
        for tokens in itertools.product(outputs, repeat=n):
            log_prob = teacher_forced_log_prob(model, source, list(tokens))
            penalty = float(length_penalty(torch.tensor(n + 1), config.length_penalty))
            scored.append((log_prob / penalty, list(tokens)))
    scored.sort(key=lambda item: -item[0])
    return scored


@pytest.mark.parametrize("name", ["gru-additive-concat", "lstm-dot-add-feed-last"])
@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_a_wide_enough_beam_finds_what_exhaustive_search_finds(name, alpha):
    vocab = Vocab(src_size=6, tgt_size=6, pad_id=1, unk_id=0, bos_id=2, eos_id=3)
    model = build(name, vocab, seed=4)
    with torch.no_grad():  # a flat model: the best hypothesis is not the greedy one
        model.decoder.output.bias[vocab.eos_id] -= 1.0
    source = [4, 5, 4]
    max_len = 3  # a * 3 + b
    config = SearchConfig(
        beam_size=6**max_len, n_best=5, max_len_a=0.0, max_len_b=max_len, length_penalty=alpha
    )
    src, src_lengths = pad([source], vocab.pad_id, suffix=vocab.eos_id)
    found = beam_search(model, src, src_lengths, config)[0]
    best = exhaustive(model, source, config, max_len)
    assert [h.tokens for h in found] == [tokens for _, tokens in best[:5]]
    for h, (score, _) in zip(found, best):
        assert h.score == pytest.approx(score, abs=1e-4)


@pytest.mark.parametrize("vocab", [6, 63, 64, 65, 100, 1001, 8000, 8001])
@pytest.mark.parametrize("beam", [2, 5])
def test_extensions_are_the_best_of_all_beams_times_vocabulary(vocab, beam):
    """Ranking only the best token groups finds the 2K best of all K*V extensions, whatever
    the vocabulary size (groups of 64 consecutive tokens and a shorter last one, or fewer
    tokens than 64), at the first step (K-1 beams at -inf), later with forbidden tokens, and
    when only end-of-sentence is allowed (a forced end: the other picks are -inf, yet still
    real tokens)."""
    generator = torch.Generator().manual_seed(vocab + beam)
    for case in ("first", "later", "forced"):
        beams = _Beams.start(beam, torch.full((3,), 9), 10, 4, 0, False)
        if case != "first":
            beams.scores = -torch.rand(3, beam, generator=generator) * 5
        log_probs = torch.randn(3 * beam, vocab, generator=generator).log_softmax(-1)
        log_probs[:, :2] = NEG_INF  # pad and begin-of-sentence are never chosen
        if case == "forced":
            log_probs[:, 3:] = NEG_INF
        all_scores = (log_probs + beams.scores.view(-1, 1)).view(3, -1)
        expected, ids = all_scores.topk(min(2 * beam, beam * vocab), dim=1)
        scores, rows, tokens = beams.extensions(log_probs.clone())
        assert torch.equal(scores, expected)
        assert ((0 <= tokens) & (tokens < vocab)).all()
        real = expected.isfinite()  # which of the -inf ties comes first is not defined
        first_row = torch.arange(3)[:, None] * beam
        assert torch.equal(rows[real], (first_row + ids // vocab)[real])
        assert torch.equal(tokens[real], (ids % vocab)[real])
        assert ((rows >= first_row) & (rows < first_row + beam)).all()


@pytest.mark.parametrize("name", SOME)
def test_n_best_lists_are_sorted_distinct_and_end_at_the_end(name):
    model = build(name)
    config = SearchConfig(beam_size=8, n_best=8, no_repeat_ngram=0)
    src, src_lengths = pad(random_sentences(8, seed=5), VOCAB.pad_id, suffix=VOCAB.eos_id)
    for hypotheses in search(model, src, src_lengths, config):
        assert len(hypotheses) == 8
        scores = [h.score for h in hypotheses]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens) for h in hypotheses}) == 8
        for h in hypotheses:
            assert VOCAB.eos_id not in h.tokens and VOCAB.pad_id not in h.tokens


@pytest.mark.parametrize("beam_size", [1, 4])
def test_length_limits_and_repeated_ngrams(beam_size):
    model = build("gru-additive-concat")
    with torch.no_grad():
        model.decoder.output.bias[VOCAB.eos_id] -= 10.0  # never wants to stop
    sentences = random_sentences(8, seed=6)
    config = SearchConfig(
        beam_size=beam_size, n_best=1, max_len_a=0.5, max_len_b=3, min_len=2, no_repeat_ngram=2
    )
    src, src_lengths = pad(sentences, VOCAB.pad_id, suffix=VOCAB.eos_id)
    for source, hypotheses in zip(sentences, search(model, src, src_lengths, config)):
        tokens = hypotheses[0].tokens
        assert 2 <= len(tokens) <= int(0.5 * len(source) + 3)
        bigrams = list(zip(tokens, tokens[1:]))
        assert len(bigrams) == len(set(bigrams))


def test_translate_ids_keeps_input_order_for_any_batching():
    model = build("gru-additive-concat")
    sentences = random_sentences(30, seed=7)
    by_sentences = translate_ids(
        model, sentences, SearchConfig(beam_size=3, batch_size=4), torch.device("cpu")
    )
    by_tokens = translate_ids(
        model, sentences, SearchConfig(beam_size=3, max_tokens=20), torch.device("cpu")
    )
    assert [h[0].tokens for h in by_sentences] == [h[0].tokens for h in by_tokens]
    src, src_lengths = pad(sentences[:1], VOCAB.pad_id, suffix=VOCAB.eos_id)
    assert (
        search(model, src, src_lengths, SearchConfig(beam_size=3))[0][0].tokens
        == by_sentences[0][0].tokens
    )
