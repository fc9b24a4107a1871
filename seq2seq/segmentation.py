"""Sampled subword segmentations (subword regularization), drawn here rather than inside
SentencePiece, so that a seed gives the same samples in every process and with every
SentencePiece version (0.2.2 and later draw their sampling randomness anew in each process,
whatever seed they are given).

- unigram, `nbest_size` -1: forward-filtering backward-sampling over the lattice of all
  segmentations, P(x) proportional to exp(alpha * sum of its piece scores) (Kudo, 2018,
  "Subword Regularization", section 3.3);
- unigram, `nbest_size` n > 1: one of SentencePiece's n best segmentations, drawn with the
  same weights;
- bpe: BPE-dropout (Provilkov et al., 2020): each merge is skipped with probability alpha.

The lattice (the scores of unknown and user-defined pieces) and the merge order follow
SentencePiece's own (unigram_model.cc, bpe_model.cc), so alpha means what it means there.
Where no randomness is involved the results are SentencePiece's: a large alpha gives its best
segmentation, BPE without dropout its encoding (tests/test_segmentation.py).
"""

from __future__ import annotations

import heapq
import math
import random
import struct

import sentencepiece as spm

# SentencePiece's piece types (sentencepiece_model.proto)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
UNIGRAM, BPE = 1, 2
FLT_MIN = 1.17549435e-38
UNK_PENALTY = 10.0  # an unknown character scores this far below the rarest piece
# Far beyond where every sample is the best segmentation; alpha * score stays finite.
MAX_ALPHA = 1e200


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if byte < 0x80:
            return value, i


def _fields(buf: bytes):
    """(field number, value) of each field of a serialized protobuf message: an int for
    varints, bytes for the rest (the model file is read without the protobuf package)."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        wire = key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i : i + size], i + size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value, i = buf[i : i + width], i + width
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
        yield key >> 3, value


def read_model(proto: bytes) -> tuple[int, list[tuple[str, float, int]]]:
    """The model type and each piece's (piece, score, type) from a SentencePiece model."""
    model_type, pieces = UNIGRAM, []
    for field, value in _fields(proto):
        if field == 1:  # ModelProto.pieces
            piece, score, kind = "", 0.0, NORMAL
            for sub, sub_value in _fields(value):
                if sub == 1:
                    piece = sub_value.decode("utf-8")
                elif sub == 2:
                    score = struct.unpack("<f", sub_value)[0]
                elif sub == 3:
                    kind = sub_value
            pieces.append((piece, score, kind))
        elif field == 2:  # ModelProto.trainer_spec
            model_type = next((v for f, v in _fields(value) if f == 3), UNIGRAM)
    return model_type, pieces


class Segmenter:
    """Draws segmentations from one SentencePiece model; `sp` must hold the same model."""

    def __init__(self, proto: bytes, sp: spm.SentencePieceProcessor):
        self.sp = sp
        self.model_type, pieces = read_model(proto)
        normal = [score for _, score, kind in pieces if kind == NORMAL]
        # SentencePiece starts its maximum at FLT_MIN, the smallest positive float, so with
        # unigram scores (log-probabilities, all negative) it stays about 0, and a
        # user-defined piece scores about -0.1 whatever its length. (So in 0.2.0; 0.2.3
        # scores one 0.1 a character higher. Samples here are the same with every version.)
        max_score = max([*normal, FLT_MIN])
        self.unk_id = sp.unk_id()
        self.unk_score = min(normal, default=0.0) - UNK_PENALTY
        # What the lattice (and BPE's merges) may use: normal and user-defined pieces.
        self.scores: dict[str, tuple[int, float]] = {}
        self.unused: set[str] = set()
        self.user_defined: set[str] = set()
        self.bytes: dict[int, int] = {}
        for i, (piece, score, kind) in enumerate(pieces):
            if kind == USER_DEFINED:
                self.user_defined.add(piece)
                score = len(piece) * max_score - 0.1
            if kind in (NORMAL, USER_DEFINED):
                self.scores[piece] = (i, score)
            elif kind == UNUSED:
                self.unused.add(piece)
                self.scores[piece] = (i, score)  # merged by BPE, then split again
            elif kind == BYTE:
                self.bytes[int(piece[1:-1], 16)] = i  # "<0x41>"
        self.id_scores = {i: score for piece, (i, score) in self.scores.items()}
        self.id_lengths = {i: len(piece) for piece, (i, _) in self.scores.items()}
        # The lattice's pieces as a trie: a node maps a character to the next node, and ""
        # to the (id, score) of the piece spelled on the way there.
        self.trie: dict = {}
        for piece, entry in self.scores.items():
            if piece not in self.unused:
                node = self.trie
                for char in piece:
                    node = node.setdefault(char, {})
                node[""] = entry

    def sample(self, texts: list[str], alpha: float, nbest_size: int, seed: int) -> list[list[int]]:
        """One sampled segmentation (piece ids) of each text; the same seed, the same ids."""
        rng = random.Random(seed)
        alpha = min(alpha, MAX_ALPHA)
        normalized = [self.sp.normalize(text) for text in texts]
        if self.model_type == BPE:
            return [self._bpe(text, alpha, rng) for text in normalized]
        if nbest_size > 1:
            return [self._nbest(t, n, alpha, nbest_size, rng) for t, n in zip(texts, normalized)]
        return [self._unigram(text, alpha, rng) for text in normalized]

    # --- unigram ------------------------------------------------------------------------

    def lattice(self, text: str) -> list[list[tuple[int, int, float]]]:
        """ends[e]: (begin, id, score) of each piece that covers text[begin:e]. A character
        no single piece spells gets an unknown piece of its own, as in SentencePiece."""
        ends: list[list[tuple[int, int, float]]] = [[] for _ in range(len(text) + 1)]
        for begin in range(len(text)):
            node, end = self.trie, begin
            while end < len(text) and (node := node.get(text[end])) is not None:
                end += 1
                if "" in node:
                    ends[end].append((begin, *node[""]))
            if not ends[begin + 1] or ends[begin + 1][-1][0] != begin:
                ends[begin + 1].append((begin, self.unk_id, self.unk_score))
        return ends

    def _unigram(self, text: str, alpha: float, rng: random.Random) -> list[int]:
        ends, exp = self.lattice(text), math.exp
        forward = [0.0] * len(ends)  # log of the summed weight of every path to each position
        for end in range(1, len(ends)):
            terms = [forward[b] + alpha * s for b, _, s in ends[end]]
            top = max(terms)
            forward[end] = top + math.log(sum([exp(t - top) for t in terms]))
        path, end = [], len(text)
        while end > 0:  # walk back from the end, choosing each piece by its paths' weight
            edges = ends[end]
            terms = [forward[b] + alpha * s for b, _, s in edges]
            top = max(terms)  # weights relative to the heaviest, which is 1: never all 0
            weights = [exp(t - top) for t in terms]
            left = rng.random() * sum(weights)
            for edge, weight in zip(edges, weights):  # noqa: B007 (the chosen edge)
                left -= weight
                if left < 0:
                    break
            path.append((edge[0], end, edge[1]))  # (rounding leaves the last piece if none)
            end = edge[0]
        return self._spell([(text[b:e], piece) for b, e, piece in reversed(path)])

    def _nbest(self, text: str, normalized: str, alpha: float, nbest_size: int, rng) -> list[int]:
        spm.set_min_log_level(2)  # its n-best search warns on every long line ("agenda size")
        try:
            candidates = self.sp.nbest_encode(text, out_type=int, nbest_size=nbest_size)
        finally:
            spm.set_min_log_level(0)  # SentencePiece's default
        if not candidates:
            return []
        scores = [alpha * self._score(normalized, ids) for ids in candidates]
        top = max(scores)
        return rng.choices(candidates, [math.exp(s - top) for s in scores])[0]

    def _score(self, text: str, ids: list[int]) -> float:
        """The lattice score of a segmentation SentencePiece returned: its pieces' scores,
        and each character they do not spell is an unknown one (SentencePiece writes a run
        of those as one unknown piece, or as their bytes)."""
        scores = [self.id_scores.get(i) for i in ids]
        if None not in scores:  # no unknown character
            return sum(scores)
        spelled = sum(self.id_lengths.get(i, 0) for i in ids)
        known = sum(score for score in scores if score is not None)
        return known + (len(text) - spelled) * self.unk_score

    # --- bpe ----------------------------------------------------------------------------

    def _bpe(self, text: str, dropout: float, rng: random.Random) -> list[int]:
        symbols = self._characters(text)
        frozen = [s in self.user_defined for s in symbols]
        after = [*range(1, len(symbols)), -1]
        before = list(range(-1, len(symbols) - 1))
        agenda: list[tuple[float, int, int, int]] = []  # (-score, left, right, merged length)
        splits: dict[str, tuple[str, str]] = {}  # unused pieces, to split again at the end

        def consider(left: int, right: int) -> None:
            if left < 0 or right < 0 or frozen[left] or frozen[right]:
                return
            merged = symbols[left] + symbols[right]
            if merged in self.scores:
                heapq.heappush(agenda, (-self.scores[merged][1], left, right, len(merged)))
                if merged in self.unused:
                    splits[merged] = (symbols[left], symbols[right])

        for i in range(1, len(symbols)):
            consider(i - 1, i)
        while agenda:  # the best-scored merge first, the leftmost among equals
            _, left, right, length = heapq.heappop(agenda)
            stale = len(symbols[left]) + len(symbols[right]) != length
            if stale or not symbols[left] or not symbols[right]:
                continue  # one side has merged with something else since
            if dropout > 0 and rng.random() < dropout:
                continue
            symbols[left], symbols[right] = symbols[left] + symbols[right], ""
            after[left] = after[right]
            if after[right] >= 0:
                before[after[right]] = left
            consider(before[left], left)
            consider(left, after[left])
        pieces: list[str] = []
        for symbol in symbols:
            if symbol:
                self._resplit(symbol, splits, pieces)
        return self._spell([(p, self.scores.get(p, (self.unk_id,))[0]) for p in pieces])

    def _characters(self, text: str) -> list[str]:
        """BPE's starting symbols: characters, and user-defined pieces whole (the longest)."""
        longest = max(map(len, self.user_defined), default=1)
        symbols, pos = [], 0
        while pos < len(text):
            size = next(
                (n for n in range(longest, 1, -1) if text[pos : pos + n] in self.user_defined), 1
            )
            symbols.append(text[pos : pos + size])
            pos += size
        return symbols

    def _resplit(self, piece: str, splits: dict[str, tuple[str, str]], out: list[str]) -> None:
        if piece in splits:
            for part in splits[piece]:
                self._resplit(part, splits, out)
        else:
            out.append(piece)

    # --- both ---------------------------------------------------------------------------

    def _spell(self, pieces: list[tuple[str, int]]) -> list[int]:
        """Piece ids, as SentencePiece writes them: a run of unknown characters as one
        unknown piece, or as their UTF-8 bytes where the model has bytes."""
        if not self.bytes:
            ids, unk = [piece for _, piece in pieces], self.unk_id
            return [i for n, i in enumerate(ids) if i != unk or n == 0 or ids[n - 1] != unk]
        ids = []
        for surface, piece in pieces:
            if piece == self.unk_id:
                ids.extend(self.bytes[b] for b in surface.encode("utf-8"))
            else:
                ids.append(piece)
        return ids
