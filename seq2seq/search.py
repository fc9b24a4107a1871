"""Greedy and batched beam search over `model.encode` and `model.step`.

Both work on whole batches at once (B sentences, B*K rows for a beam of K) on any device.
What depends only on the source (encoder states, attention keys) is computed once per
sentence and shared by its K beams.

Scores. A hypothesis y_1 .. y_n ends with end-of-sentence (y_n = eos) and has
log_prob = sum_i log p(y_i | y_<i, x), the teacher-forced log-probability, end-of-sentence
included. Its score is log_prob / lp(n) with the GNMT length penalty
lp(n) = ((5 + n) / 6) ** alpha (Wu et al., 2016), n counting end-of-sentence; alpha = 0
gives the plain log-probability. Hypotheses are ranked by score.

Beam search follows fairseq: at each step the 2K best extensions are scored; those ending
in end-of-sentence among the K best are set aside as finished, and the K best others go on.
A sentence is done when K hypotheses have finished or it reaches its length limit
max_len = a * source length + b, where end-of-sentence is forced. Every rule looks at one
sentence only, so a sentence gets the same result alone as inside any batch.

The device never waits for the host inside the step loop but once a step, to learn how many
sentences still run: the search rules, finished hypotheses and length limits are tensor
operations on fixed-size buffers. When enough sentences are done, their rows leave the
batch (see `_worth_compacting`), so the work shrinks as sentences finish.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from .config import SearchConfig
from .errors import UserError

NEG_INF = float("-inf")
Top = tuple[Tensor, Tensor, Tensor]  # extensions' scores, rows, tokens: (A, 2K) or (A, K)


@dataclass
class Hypothesis:
    tokens: list[int]  # output ids, end-of-sentence not included
    score: float  # log_prob / length penalty: what hypotheses are ranked by
    log_prob: float  # sum of token log-probabilities, end-of-sentence included
    attention: Tensor | None = None  # (len(tokens) + 1, S) weights, when asked for


def length_penalty(lengths: Tensor, alpha: float) -> Tensor:
    """GNMT length penalty ((5 + n) / 6) ** alpha for n output tokens (end included)."""
    return ((5.0 + lengths.float()) / 6.0) ** alpha


def max_output_lengths(src_lengths: Tensor, config: SearchConfig) -> Tensor:
    """Tokens a hypothesis may have before the forced end-of-sentence: a * source length + b,
    the source length counting its pieces without the end-of-sentence the model sees."""
    pieces = (src_lengths - 1).clamp(min=0).float()
    return (config.max_len_a * pieces + config.max_len_b).floor().long().clamp(min=1)


def _block_repeated_ngrams(log_probs: Tensor, history: Tensor, n: int) -> Tensor:
    """Forbid any token that would repeat an n-gram already in `history` (N, t)."""
    if n <= 0 or history.size(1) < n:
        return log_probs
    ngrams = history.unfold(1, n, 1)  # (N, t - n + 1, n)
    suffix = history[:, history.size(1) - n + 1 :]  # (N, n - 1)
    match = (ngrams[:, :, :-1] == suffix[:, None, :]).all(dim=-1)  # (N, t - n + 1)
    vocab = log_probs.size(1)
    banned = torch.where(match, ngrams[:, :, -1], vocab)  # (N, t - n + 1); vocab: no ban
    penalty = log_probs.new_zeros(log_probs.size(0), vocab + 1)
    penalty.scatter_(1, banned, NEG_INF)
    return log_probs + penalty[:, :vocab]


class _Rules:
    """The search rules for next-token log-probabilities (N, V) at output position `step`:
    never pad or begin-of-sentence; no end before min_len; end forced at max_len (N,);
    optionally no repeated n-grams. A forced end keeps its true log-probability.

    Built once per batch from the length limits (B,): the host learns the shortest and the
    longest limit there, so that no step before the shortest spends work on forcing."""

    def __init__(self, vocab, config: SearchConfig, max_len: Tensor):
        self.config, self.eos_id = config, vocab.eos_id
        self.never = torch.tensor([vocab.pad_id, vocab.bos_id], device=max_len.device)
        self.shortest, self.longest = torch.stack([max_len.min(), max_len.max()]).tolist()

    def __call__(self, log_probs: Tensor, step: int, max_len: Tensor, history: Tensor) -> Tensor:
        """`log_probs` is changed in place: it is the step's own fresh tensor."""
        eos, forcing = self.eos_id, step >= self.shortest
        if forcing:
            end_log_probs = log_probs[:, eos].clone()  # (N,)
        log_probs.index_fill_(1, self.never, NEG_INF)
        if step < self.config.min_len:
            log_probs[:, eos] = NEG_INF
        log_probs = _block_repeated_ngrams(log_probs, history, self.config.no_repeat_ngram)
        if forcing:
            forced = step >= max_len  # (N,)
            log_probs.masked_fill_(forced[:, None], NEG_INF)
            log_probs[:, eos] = torch.where(forced, end_log_probs, log_probs[:, eos])
        return log_probs


def _weights(weights: Tensor | None) -> Tensor | float:
    """Attention weights of one step (N, S) in float32; zero for a model without attention."""
    return 0.0 if weights is None else weights[:, 0].float()


def _worth_compacting(running: int, rows: int, device: torch.device) -> bool:
    """Whether to drop the rows of finished sentences now. On the CPU every row costs its
    share of each step, so they go as soon as one finishes. On a GPU a step costs about the
    same at any batch size until it gets small, and each compaction copies the whole state:
    there they go once half of them are finished."""
    return running < rows if device.type == "cpu" else running <= rows // 2


@dataclass
class _Finished:
    """The best K finished hypotheses of each sentence so far, best first (greedy search
    keeps one)."""

    scores: Tensor  # (B, K) length-penalized; -inf for empty slots
    log_probs: Tensor  # (B, K)
    lengths: Tensor  # (B, K) tokens including end-of-sentence
    tokens: Tensor  # (B, K, L) padded
    attention: Tensor | None  # (B, K, L, S)
    count: Tensor  # (B,) hypotheses finished so far (kept or not)

    @classmethod
    def empty(cls, src: Tensor, beam: int, length: int, pad_id: int, attention: bool) -> _Finished:
        """K empty slots for each sentence of `src` (B, S), for hypotheses of `length` tokens."""
        batch, src_len = src.shape

        def full(*shape, value=0.0, dtype=torch.float):
            return torch.full(shape, value, dtype=dtype, device=src.device)

        return cls(
            full(batch, beam, value=NEG_INF),
            full(batch, beam, value=NEG_INF),
            full(batch, beam, dtype=torch.long),
            full(batch, beam, length, value=pad_id, dtype=torch.long),
            full(batch, beam, length, src_len) if attention else None,
            full(batch, dtype=torch.long),
        )

    def hypotheses(self, n_best: int) -> list[list[Hypothesis]]:
        """The finite hypotheses of each sentence, at most n_best, best first. One transfer
        to the host for the whole batch."""
        tokens, lengths = self.tokens.tolist(), self.lengths.tolist()
        scores, log_probs = self.scores.tolist(), self.log_probs.tolist()
        attention = None if self.attention is None else self.attention.cpu()

        def hypothesis(b: int, k: int) -> Hypothesis:
            n = lengths[b][k]
            weights = None if attention is None else attention[b, k, :n]
            return Hypothesis(tokens[b][k][: n - 1], scores[b][k], log_probs[b][k], weights)

        # sorted best first, so the empty slots (-inf) come last
        return [
            [hypothesis(b, k) for k in range(min(n_best, len(row))) if row[k] != NEG_INF]
            for b, row in enumerate(scores)
        ]


# --- greedy ---------------------------------------------------------------------------------


@dataclass
class _GreedyRows:
    """The rows greedy search is still stepping, one per sentence."""

    sentences: Tensor  # (N,) which sentence of the batch
    running: Tensor  # (N,) False once it has ended (its row may linger)
    max_len: Tensor  # (N,) its length limit
    tokens: Tensor  # (N, L) output so far, padded; pad after the end
    log_prob: Tensor  # (N,)
    attention: Tensor | None  # (N, L, S)

    def select(self, index: Tensor) -> _GreedyRows:
        fields = (getattr(self, f.name) for f in dataclasses.fields(self))
        return _GreedyRows(*(None if x is None else x[index] for x in fields))

    def store(self, out: _Finished) -> None:
        """Put each row's output in the one slot of its sentence in `out`."""
        out.tokens[self.sentences, 0] = self.tokens
        out.log_probs[self.sentences, 0] = self.log_prob
        if out.attention is not None:
            out.attention[self.sentences, 0] = self.attention


@torch.no_grad()
def greedy_search(
    model, src: Tensor, src_lengths: Tensor, config: SearchConfig, return_attention: bool = False
) -> list[list[Hypothesis]]:
    """The most probable next token at every step, for a batch of B sentences at once."""
    vocab, batch, device = model.vocab, src.size(0), src.device
    state, memory = model.encode(src, src_lengths)
    max_len = max_output_lengths(src_lengths, config)  # (B,)
    rules = _Rules(vocab, config, max_len)
    longest = rules.longest + 1

    out = _Finished.empty(src, 1, longest, vocab.pad_id, return_attention)
    rows = _GreedyRows(
        torch.arange(batch, device=device),
        torch.ones(batch, dtype=torch.bool, device=device),
        max_len,
        out.tokens[:, 0].clone(),
        torch.zeros(batch, device=device),
        None if out.attention is None else out.attention[:, 0].clone(),
    )
    prev = torch.full((batch, 1), vocab.bos_id, dtype=torch.long, device=device)
    all_running = True  # known on the host: no row has ended yet
    for step in range(longest):
        log_probs, state, weights = model.step(prev, state, memory)  # (N, 1, V)
        log_probs = rules(log_probs[:, 0], step, rows.max_len, rows.tokens[:, :step])
        best_log_prob, best = log_probs.max(dim=-1)  # (N,)
        if not all_running:  # lingering rows add nothing
            best = best.masked_fill(~rows.running, vocab.pad_id)
            best_log_prob = best_log_prob.masked_fill(~rows.running, 0.0)
        rows.tokens[:, step] = best
        rows.log_prob += best_log_prob
        if return_attention:
            rows.attention[:, step] = _weights(weights) * rows.running[:, None]
        rows.running &= best != vocab.eos_id  # the end is forced at max_len
        alive = int(rows.running.sum())  # the step's one wait for the device
        if alive == 0:
            break
        all_running = alive == rows.running.numel()
        if _worth_compacting(alive, rows.running.numel(), device):
            rows.select(~rows.running).store(out)
            keep = rows.running.nonzero().squeeze(1)  # (N',)
            rows, state, memory = rows.select(keep), state.select(keep), memory.select(keep)
            best, all_running = best[keep], True
        prev = best[:, None]
    rows.store(out)
    out.lengths = (out.tokens != vocab.pad_id).sum(dim=2)  # pad never comes before the end
    out.scores = out.log_probs / length_penalty(out.lengths, config.length_penalty)
    return out.hypotheses(1)


# --- beam -----------------------------------------------------------------------------------


@dataclass
class _Beams:
    """The K live hypotheses of each of the A sentences still in the batch (row a*K + k)."""

    sentences: Tensor  # (A,) which sentence of the batch
    running: Tensor  # (A,) False once the sentence is done (its rows may linger)
    max_len: Tensor  # (A,) its length limit
    scores: Tensor  # (A, K) log-probabilities so far
    history: Tensor  # (A*K, L) tokens so far, padded
    weights: Tensor | None  # (A*K, L, S) attention so far, when asked for

    @classmethod
    def start(
        cls, beam: int, max_len: Tensor, length: int, src_len: int, pad_id: int, attention: bool
    ) -> _Beams:
        """K beams for each of the B sentences whose length limits are `max_len` (B,). Only
        the first beam is real at the start, so that the K first extensions differ."""
        batch, device = max_len.size(0), max_len.device
        scores = torch.full((batch, beam), NEG_INF, device=device)
        scores[:, 0] = 0.0
        rows = batch * beam
        return cls(
            torch.arange(batch, device=device),
            torch.ones(batch, dtype=torch.bool, device=device),
            max_len,
            scores,
            torch.full((rows, length), pad_id, dtype=torch.long, device=device),
            torch.zeros(rows, length, src_len, device=device) if attention else None,
        )

    def extensions(self, log_probs: Tensor) -> Top:
        """The 2K best one-token extensions of each sentence's beams (A, 2K): scores, the rows
        they extend, last tokens; best first. One pass finds the best of each row's groups of
        64 consecutive tokens (the last may be shorter): only the 2K best groups can hold the
        2K best extensions, so only their tokens (consecutive in memory) are ranked."""
        (sentences, beam), (rows, vocab) = self.scores.shape, log_probs.shape
        size, device, log_probs = min(vocab, 64), log_probs.device, log_probs.contiguous()
        full, want = vocab // size, min(2 * beam, beam * vocab)
        best = log_probs.as_strided((rows, full, size), (vocab, size, 1)).amax(2)  # (A*K, G)
        if full * size < vocab:  # the last group, shorter
            best = torch.cat([best, log_probs[:, full * size :].amax(1, keepdim=True)], dim=1)
        groups, best = best.size(1), best.add_(self.scores.view(-1, 1)).view(sentences, -1)
        chosen = best.topk(min(want, beam * groups), dim=1).indices  # (A, 2K)
        chosen_rows = torch.arange(sentences, device=device)[:, None] * beam + chosen // groups
        tokens = (chosen % groups)[..., None] * size + torch.arange(size, device=device)
        beyond, tokens = tokens >= vocab, tokens.clamp_(max=vocab - 1)  # (A, 2K, C)
        scores = log_probs.take(chosen_rows[..., None] * vocab + tokens)
        scores.masked_fill_(beyond, NEG_INF).add_(self.scores.view(-1)[chosen_rows][..., None])
        top_scores, top = scores.view(sentences, -1).topk(want, dim=1)  # (A, 2K)
        tokens = tokens.view(sentences, -1).gather(1, top)
        return top_scores, chosen_rows.gather(1, top // size), tokens

    def go_on(self, rows: Tensor, tokens: Tensor, scores: Tensor, step: int) -> None:
        """Continue from `rows` (A, K) of this step with `tokens` (A, K) at `step` and their
        `scores` (A, K)."""
        rows = rows.view(-1)
        self.history = self.history[rows]
        self.history[:, step] = tokens.view(-1)
        if self.weights is not None:
            self.weights = self.weights[rows]
        self.scores = scores

    def keep(self, keep: Tensor) -> None:
        """Keep only the sentences `keep` (A',), before `go_on` picks their rows."""
        self.sentences, self.running = self.sentences[keep], self.running[keep]
        self.max_len = self.max_len[keep]


def _finish(
    finished: _Finished, beams: _Beams, top: Top, new: Tensor, step: int, alpha: float
) -> None:
    """Set aside the extensions `new` (A, K) among each sentence's K best: the K best of
    these and the sentence's finished hypotheses stay finished."""
    beam, sentences = beams.scores.size(1), beams.sentences
    scores, rows, tokens = (t[:, :beam] for t in top)  # (A, K)
    candidates = beams.history[rows]  # (A, K, L)
    candidates[:, :, step] = tokens
    lengths = torch.full_like(rows, step + 1)
    penalized = (scores / length_penalty(lengths, alpha)).masked_fill(~new, NEG_INF)
    merged_scores = torch.cat([finished.scores[sentences], penalized], dim=1)  # (A, 2K)
    best_scores, best = merged_scores.topk(beam, dim=1)  # (A, K), sorted

    def keep(old: Tensor, candidate: Tensor) -> Tensor:
        merged = torch.cat([old[sentences], candidate], dim=1)  # (A, 2K, ...)
        index = best.view(*best.shape, *([1] * (merged.dim() - 2)))
        return merged.gather(1, index.expand(-1, -1, *merged.shape[2:]))

    finished.log_probs[sentences] = keep(finished.log_probs, scores)
    finished.lengths[sentences] = keep(finished.lengths, lengths)
    finished.tokens[sentences] = keep(finished.tokens, candidates)
    if finished.attention is not None:  # (A, K, L, S)
        finished.attention[sentences] = keep(finished.attention, beams.weights[rows])
    finished.scores[sentences] = best_scores
    finished.count[sentences] += new.sum(dim=1)


def _survivors(top: Top, beam: int, eos_id: int) -> Top:
    """The K best extensions of each sentence that do not end: scores, rows, tokens (A, K).
    (At most K of the 2K end, one per beam, so there are always K.)"""
    ends = top[2] == eos_id  # (A, 2K): the tokens
    rank = torch.arange(ends.size(1), device=ends.device)
    order = (ends.long() * ends.size(1) + rank).topk(beam, dim=1, largest=False).indices
    return tuple(t.gather(1, order) for t in top)


@torch.no_grad()
def beam_search(
    model, src: Tensor, src_lengths: Tensor, config: SearchConfig, return_attention: bool = False
) -> list[list[Hypothesis]]:
    """Beam search for a batch of B sentences: the K beams of the A sentences still in the
    batch are stepped together as A*K rows."""
    vocab, beam, batch, device = model.vocab, config.beam_size, src.size(0), src.device
    state, memory = model.encode(src, src_lengths)
    sentence_of_row = torch.arange(batch, device=device)[:, None].expand(-1, beam).reshape(-1)
    state = state.select(sentence_of_row)  # B*K rows; the memory keeps B (see Decoder.attend)
    max_len = max_output_lengths(src_lengths, config)  # (B,)
    rules = _Rules(vocab, config, max_len)
    longest = rules.longest + 1
    finished = _Finished.empty(src, beam, longest, vocab.pad_id, return_attention)
    beams = _Beams.start(beam, max_len, longest, src.size(1), vocab.pad_id, return_attention)
    prev = torch.full((batch * beam, 1), vocab.bos_id, dtype=torch.long, device=device)
    for step in range(longest):
        log_probs, state, weights = model.step(prev, state, memory)  # (A*K, 1, V)
        row_max_len = beams.max_len[:, None].expand(-1, beam).reshape(-1)  # (A*K,)
        log_probs = rules(log_probs[:, 0], step, row_max_len, beams.history[:, :step])
        if return_attention:
            beams.weights[:, step] = _weights(weights)
        top = beams.extensions(log_probs)  # (A, 2K) each
        # those of the K best that end are finished (sentences already done take none)
        scores, _, tokens = (t[:, :beam] for t in top)  # (A, K)
        new = (tokens == vocab.eos_id) & scores.isfinite() & beams.running[:, None]  # (A, K)
        count = finished.count[beams.sentences] + new.sum(dim=1)  # (A,)
        beams.running &= (count < beam) & (step < beams.max_len)
        any_new, alive = torch.stack([new.any(), beams.running.sum()]).tolist()  # one wait
        if any_new:
            _finish(finished, beams, top, new, step, config.length_penalty)
        if alive == 0:
            break
        survivors = _survivors(top, beam, vocab.eos_id)  # scores, rows, tokens (A, K)
        if _worth_compacting(alive, beams.running.numel(), device):
            keep = beams.running.nonzero().squeeze(1)  # (A',)
            beams.keep(keep)
            memory = memory.select(keep)
            survivors = tuple(t[keep] for t in survivors)
        next_scores, next_rows, next_tokens = survivors
        beams.go_on(next_rows, next_tokens, next_scores, step)
        state = state.select(next_rows.view(-1))
        prev = next_tokens.view(-1, 1)
    return finished.hypotheses(config.n_best)


def check_beam_size(beam_size: int, vocab, key: str = "search.beam_size") -> None:
    """A beam wider than the target vocabulary only repeats work; checked before any."""
    if beam_size > vocab.tgt_size:
        raise UserError(
            f"config key '{key}': expected at most the target vocabulary size "
            f"({vocab.tgt_size}), got {beam_size}"
        )


def search(
    model, src: Tensor, src_lengths: Tensor, config: SearchConfig, return_attention: bool = False
) -> list[list[Hypothesis]]:
    """Greedy search when beam_size is 1, beam search otherwise; n_best hypotheses each."""
    if config.beam_size == 1:
        return greedy_search(model, src, src_lengths, config, return_attention)
    return beam_search(model, src, src_lengths, config, return_attention)
