"""Sampled segmentations (seq2seq/segmentation.py) against SentencePiece itself: the same
lattice, the same best segmentation, the same BPE merges, the same distributions; and the
same samples from the same seed in every process."""

import gzip
import itertools
import math
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import sentencepiece as spm

from seq2seq.config import SubwordConfig
from seq2seq.segmentation import BPE, UNIGRAM, _fields, read_model
from seq2seq.tokenizer import Tokenizer

DEMO = Path(__file__).resolve().parent.parent / "data" / "demo"
MODELS = {  # name: (model_type, byte_fallback, user_symbols)
    "unigram": ("unigram", False, ()),
    "unigram-bytes-tags": ("unigram", True, ("<b>", "<tag>")),
    "bpe": ("bpe", False, ()),
    "bpe-bytes-tags": ("bpe", True, ("<b>", "<tag>")),
}
ODD = [  # unknown characters, user-defined pieces, odd spacing, nothing at all
    "ɮɮ ein ɮ Hund漢",
    "<tag>Ein<b> Mann <tag><tag>  läuft .",
    "   ",
    "",
    "Ǆ ½ ﬁsh",
]


def _lines(name: str, count: int) -> list[str]:
    with gzip.open(DEMO / name, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in itertools.islice(f, count)]


@pytest.fixture(scope="module", params=list(MODELS))
def tokenizer(request) -> Tokenizer:
    model_type, byte_fallback, symbols = MODELS[request.param]
    config = SubwordConfig(
        model_type=model_type,
        vocab_size=400,
        byte_fallback=byte_fallback,
        user_symbols=symbols,
        character_coverage=0.995,
    )
    return Tokenizer.train(_lines("train.en.gz", 3000) + _lines("train.de.gz", 3000), config)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return _lines("dev.en.gz", 150) + _lines("dev.de.gz", 150) + ODD


def test_the_model_file_is_read_as_sentencepiece_reads_it(tokenizer, request):
    model_type, pieces = read_model(tokenizer.proto)
    sp = tokenizer.sp
    trained_as = MODELS[request.node.callspec.params["tokenizer"]][0]
    assert model_type == {"unigram": UNIGRAM, "bpe": BPE}[trained_as]
    assert [p for p, _, _ in pieces] == [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    assert [s for _, s, _ in pieces] == pytest.approx(
        [sp.get_score(i) for i in range(sp.get_piece_size())]
    )


def test_samples_spell_the_text(tokenizer, texts):
    best = tokenizer.decode(tokenizer.encode(texts))
    for alpha, nbest in [(0.1, -1), (0.5, -1), (0.1, 4)]:
        sampled = tokenizer.sample(texts, alpha, nbest, seed=3)
        assert tokenizer.decode(sampled) == best
        assert all(0 <= i < tokenizer.vocab_size for ids in sampled for i in ids)
    assert sampled != tokenizer.encode(texts)


def test_without_randomness_the_result_is_sentencepieces(tokenizer, texts):
    """A very large alpha concentrates the unigram lattice on its best path; BPE without
    dropout is plain BPE. Either way SentencePiece's own encoding must come out."""
    unigram = read_model(tokenizer.proto)[0] == UNIGRAM
    for alpha in (1000.0, 1e308) if unigram else (0.0,):  # 1e308 * score would overflow
        for nbest in (-1, 8) if unigram else (-1,):
            assert tokenizer.sample(texts, alpha, nbest, seed=1) == tokenizer.encode(texts)


def test_the_same_seed_gives_the_same_samples_in_a_new_process(tokenizer, texts, tmp_path):
    model = tmp_path / "spm.model"
    model.write_bytes(tokenizer.proto)
    script = (
        "import sys; from seq2seq.tokenizer import Tokenizer\n"
        "t = Tokenizer.load(sys.argv[1]); texts = sys.stdin.read().split('\\n')\n"
        "print(t.sample(texts, 0.2, -1, seed=11), t.sample(texts, 0.2, 6, seed=11))"
    )
    texts = [t for t in texts if "\n" not in t]
    runs = [
        subprocess.run(
            [sys.executable, "-c", script, str(model)],
            input="\n".join(texts),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for _ in range(2)
    ]
    here = f"{tokenizer.sample(texts, 0.2, -1, seed=11)} {tokenizer.sample(texts, 0.2, 6, seed=11)}"
    assert runs[0] == runs[1] == here + "\n"
    assert tokenizer.sample(texts, 0.2, -1, seed=12) != tokenizer.sample(texts, 0.2, -1, seed=11)


def _paths(ends, end):
    """Every (score, ids) path through the lattice to position `end`."""
    if end == 0:
        yield 0.0, ()
        return
    for begin, piece, score in ends[end]:
        for total, ids in _paths(ends, begin):
            yield total + score, (*ids, piece)


def _close(counts: Counter, probs: dict, draws: int) -> bool:
    """Every count within 5 standard deviations (and 3 draws, for the rare outcomes, where
    the normal approximation fails) of its expectation; no outcome that has no probability."""
    if set(counts) - set(probs):
        return False
    return all(
        abs(counts[k] - draws * p) <= 5 * math.sqrt(draws * p * (1 - p)) + 3
        for k, p in probs.items()
    )


@pytest.fixture(scope="module")
def small_unigram() -> Tokenizer:
    lines = _lines("train.de.gz", 3000) + ["<tag> <b>"] * 3
    return Tokenizer.train(lines, SubwordConfig(vocab_size=300, user_symbols=("<b>", "<tag>")))


@pytest.mark.parametrize("word", ["Hund Haus", "Die Katze singen", "dunklen Straße", "<tag>Hund"])
@pytest.mark.parametrize("alpha", [0.1, 0.5])
def test_unigram_samples_follow_the_lattice_and_sentencepiece(small_unigram, word, alpha):
    """Exact probabilities by enumerating the lattice; our draws and SentencePiece's (in
    this process its seed holds) must both match them."""
    tokenizer = small_unigram
    segmenter = tokenizer.segmenter
    normalized = tokenizer.sp.normalize(word)
    paths = list(_paths(segmenter.lattice(normalized), len(normalized)))
    assert len(paths) > 2
    z = math.fsum(math.exp(alpha * s) for s, _ in paths)
    probs = {ids: math.exp(alpha * s) / z for s, ids in paths}
    draws = 20000
    ours = Counter(map(tuple, tokenizer.sample([word] * draws, alpha, -1, seed=5)))
    spm.set_random_generator_seed(5)
    theirs = tokenizer.sp.encode(
        [word] * draws, out_type=int, enable_sampling=True, alpha=alpha, nbest_size=-1
    )
    assert _close(ours, probs, draws)
    assert _close(Counter(map(tuple, theirs)), probs, draws)


@pytest.mark.parametrize("word", ["Straßenmusiker", "Fußball spielen"])
def test_bpe_dropout_follows_sentencepiece(word):
    """BPE-dropout's distribution over segmentations, ours against SentencePiece's (there is
    no closed form): each frequency within 5 standard deviations of the other's."""
    tokenizer = Tokenizer.train(
        _lines("train.de.gz", 3000), SubwordConfig(vocab_size=300, model_type="bpe")
    )
    draws = 4000
    ours = Counter(map(tuple, tokenizer.sample([word] * draws, 0.2, -1, seed=5)))
    spm.set_random_generator_seed(5)
    theirs = Counter(
        map(tuple, tokenizer.sp.encode([word] * draws, out_type=int, enable_sampling=True,
                                       alpha=0.2, nbest_size=-1))
    )  # fmt: skip
    assert len(ours) > 3
    assert _same_frequencies(ours, theirs, draws)


def _same_frequencies(ours: Counter, theirs: Counter, draws: int) -> bool:
    """Two samplers' counts within 5 standard deviations (and 3 draws) of each other."""
    for key in set(ours) | set(theirs):  # the difference of two counts, each about n p
        p = (ours[key] + theirs[key]) / (2 * draws)
        if abs(ours[key] - theirs[key]) > 5 * math.sqrt(2 * draws * p * (1 - p)) + 3:
            return False
    return True


@pytest.mark.parametrize("text", ["§§§", "ɮ§§", "ɮ<tag>", "Hund ɮɮ <tag>§§ Haus"])
@pytest.mark.parametrize("alpha", [0.02, 0.5])
def test_nbest_weights_match_sentencepiece_beside_unknown_characters(text, alpha):
    """SentencePiece's n best spell a run of unknown characters as one piece; where the run
    ends next to a user-defined piece made of unknown characters decides its weight."""
    lines = _lines("train.en.gz", 3000)
    config = SubwordConfig(vocab_size=400, user_symbols=("§§", "<tag>"))
    tokenizer = Tokenizer.train(lines, config)
    draws = 3000
    ours = Counter(map(tuple, tokenizer.sample([text] * draws, alpha, 3, seed=4)))
    spm.set_random_generator_seed(4)
    theirs = tokenizer.sp.encode(
        [text] * draws, out_type=int, enable_sampling=True, alpha=alpha, nbest_size=3
    )
    assert _same_frequencies(ours, Counter(map(tuple, theirs)), draws)


def _nbest_with_scores(tokenizer: Tokenizer, text: str, n: int) -> list[tuple[list[int], float]]:
    """SentencePiece's n best and its own scores, read from its serialized answer
    (NBestSentencePieceText: nbests = 1; each: pieces = 2 (id = 2), score = 3)."""
    blob = tokenizer.sp.nbest_encode(text, out_type="serialized_proto", nbest_size=n)
    results = []
    for field, nbest in _fields(blob):
        if field == 1:
            parts = list(_fields(nbest))
            ids = [next(v for f, v in _fields(piece) if f == 2) for f, piece in parts if f == 2]
            score = next((struct.unpack("<f", v)[0] for f, v in parts if f == 3), 0.0)
            results.append((ids, score))
    return results


def test_nbest_candidates_are_scored_as_sentencepiece_scores_them(tokenizer, texts):
    """Exactly, for every candidate without a user-defined piece (whose score changed
    between SentencePiece versions; ours is 0.2.0's, the same with every version)."""
    if read_model(tokenizer.proto)[0] != UNIGRAM:
        pytest.skip("n-best is for unigram models")
    user_defined = {tokenizer.sp.piece_to_id(p) for p in tokenizer.segmenter.user_defined}
    compared = 0
    for text in texts:
        normalized = tokenizer.sp.normalize(text)
        for ids, score in _nbest_with_scores(tokenizer, text, 4):
            if user_defined.isdisjoint(ids):
                assert tokenizer.segmenter._score(normalized, ids) == pytest.approx(score, abs=1e-3)
                compared += 1
    assert compared > len(texts)


def test_nbest_samples_come_from_sentencepieces_n_best(tokenizer, texts):
    if read_model(tokenizer.proto)[0] != UNIGRAM:
        pytest.skip("n-best sampling is for unigram models")
    sampled = tokenizer.sample(texts, 0.0, 3, seed=2)  # alpha 0: the three equally likely
    for text, ids in zip(texts, sampled):
        assert ids in tokenizer.sp.nbest_encode(text, out_type=int, nbest_size=3)
    word = "Straßenmusiker"
    counts = Counter(map(tuple, tokenizer.sample([word] * 3000, 0.0, 3, seed=2)))
    candidates = tokenizer.sp.nbest_encode(word, out_type=int, nbest_size=3)
    assert _close(counts, {tuple(c): 1 / len(candidates) for c in candidates}, 3000)
