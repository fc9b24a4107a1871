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
max_len = a * source length + b, where end-of-sentence is forced; done sentences leave the
batch, so the work shrinks as sentences finish. Every rule looks at one sentence only, so a
sentence gets the same result alone as inside any batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .batching import group_batches, pad
from .config import SearchConfig


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
    penalty.scatter_(1, banned, float("-inf"))
    return log_probs + penalty[:, :vocab]


def _restrict(
    log_probs: Tensor,
    step: int,
    max_len: Tensor,
    history: Tensor,
    config: SearchConfig,
    special: tuple[int, int, int],
) -> Tensor:
    """Apply the search rules to next-token log-probabilities (N, V) at output position `step`:
    never pad or begin-of-sentence; no end before min_len; end forced at max_len (N,);
    optionally no repeated n-grams. A forced end keeps its true log-probability.
    `log_probs` is changed in place: it is the step's own fresh tensor."""
    pad_id, bos_id, eos_id = special
    end_log_probs = log_probs[:, eos_id].clone()
    log_probs[:, [pad_id, bos_id]] = float("-inf")
    if step < config.min_len:
        log_probs[:, eos_id] = float("-inf")
    log_probs = _block_repeated_ngrams(log_probs, history, config.no_repeat_ngram)
    forced = step >= max_len  # (N,)
    if forced.any():
        log_probs[forced] = float("-inf")
        log_probs[forced, eos_id] = end_log_probs[forced]
    return log_probs


def _weights(weights: Tensor | None, mask: Tensor) -> Tensor:
    """Attention weights of one step (N, 1, S) in float32; zeros for a model without attention.
    `mask` (N, S) is the source mask of the same rows."""
    if weights is None:
        return mask.new_zeros(mask.size(0), 1, mask.size(1), dtype=torch.float)
    return weights.float()


def _hypotheses(
    tokens: Tensor,
    lengths: Tensor,
    scores: Tensor,
    log_probs: Tensor,
    attention: Tensor | None,
    n_best: int,
) -> list[list[Hypothesis]]:
    """Unpack (B, N, L) token tensors, sorted best first, into lists of finite hypotheses."""
    tokens, lengths = tokens.tolist(), lengths.tolist()
    scores, log_probs = scores.tolist(), log_probs.tolist()
    results = []
    for b in range(len(tokens)):
        kept = []
        for k in range(min(n_best, len(tokens[b]))):
            if scores[b][k] == float("-inf"):
                break
            n = lengths[b][k]
            weights = None if attention is None else attention[b, k, :n].cpu()
            kept.append(Hypothesis(tokens[b][k][: n - 1], scores[b][k], log_probs[b][k], weights))
        results.append(kept)
    return results


def _rows_of(sentences: Tensor, beam: int) -> Tensor:
    """Row indices (A*K,) of the K beams of each sentence index in `sentences` (A,)."""
    offsets = torch.arange(beam, device=sentences.device)
    return (sentences[:, None] * beam + offsets).view(-1)


@torch.no_grad()
def greedy_search(
    model, src: Tensor, src_lengths: Tensor, config: SearchConfig, return_attention: bool = False
) -> list[list[Hypothesis]]:
    """The most probable next token at every step, for a batch of B sentences at once.

    Sentences leave the batch as soon as they end, so the rest run on fewer rows."""
    vocab = model.vocab
    special = (vocab.pad_id, vocab.bos_id, vocab.eos_id)
    batch, device = src.size(0), src.device
    state, memory = model.encode(src, src_lengths)
    max_len = max_output_lengths(src_lengths, config)  # (B,)
    longest = int(max_len.max()) + 1
    tokens = torch.full((batch, longest), vocab.pad_id, dtype=torch.long, device=device)
    attention = src.new_zeros(batch, longest, src.size(1), dtype=torch.float)
    log_prob = torch.zeros(batch, device=device)
    lengths = torch.zeros(batch, dtype=torch.long, device=device)
    active = torch.arange(batch, device=device)  # (A,) sentences still running
    prev = torch.full((batch, 1), vocab.bos_id, dtype=torch.long, device=device)
    history = prev.new_zeros(batch, 0)  # (A, t)
    for step in range(longest):
        log_probs, state, weights = model.step(prev, state, memory)  # (A, 1, V)
        log_probs = _restrict(log_probs[:, 0], step, max_len[active], history, config, special)
        best_log_prob, best = log_probs.max(dim=-1)  # (A,)
        log_prob[active] += best_log_prob
        lengths[active] += 1
        tokens[active, step] = best
        if return_attention:
            attention[active, step] = _weights(weights, memory.mask)[:, 0]
        done = best == vocab.eos_id  # (A,); the end is forced at max_len
        if done.all():
            break
        if done.any():
            keep = (~done).nonzero().squeeze(1)  # (A',)
            active, best, history = active[keep], best[keep], history[keep]
            state, memory = state.select(keep), memory.select(keep)
        history = torch.cat([history, best[:, None]], dim=1)
        prev = best[:, None]
    scores = log_prob / length_penalty(lengths, config.length_penalty)
    return _hypotheses(
        tokens[:, None],
        lengths[:, None],
        scores[:, None],
        log_prob[:, None],
        attention[:, None] if return_attention else None,
        1,
    )


@dataclass
class _Finished:
    """The best K finished hypotheses of each sentence so far, best first."""

    scores: Tensor  # (B, K) length-penalized; -inf for empty slots
    log_probs: Tensor  # (B, K)
    lengths: Tensor  # (B, K) tokens including end-of-sentence
    tokens: Tensor  # (B, K, L_max)
    attention: Tensor | None  # (B, K, L_max, S)
    count: Tensor  # (B,) hypotheses finished so far (kept or not)

    @classmethod
    def empty(
        cls,
        batch: int,
        beam: int,
        max_tokens: int,
        src_len: int,
        pad_id: int,
        with_attention: bool,
        device,
    ) -> _Finished:
        def full(*shape, value=0.0, dtype=torch.float):
            return torch.full(shape, value, dtype=dtype, device=device)

        return cls(
            full(batch, beam, value=float("-inf")),
            full(batch, beam, value=float("-inf")),
            full(batch, beam, dtype=torch.long),
            full(batch, beam, max_tokens, value=pad_id, dtype=torch.long),
            full(batch, beam, max_tokens, src_len) if with_attention else None,
            full(batch, dtype=torch.long),
        )

    def add(
        self,
        sentences: Tensor,
        scores: Tensor,
        log_probs: Tensor,
        lengths: Tensor,
        tokens: Tensor,
        attention: Tensor | None,
        new: Tensor,
    ) -> None:
        """Merge K candidates for each of `sentences` (A,) (score -inf: no candidate) and
        keep the K best of each."""
        beam = self.scores.size(1)
        merged_scores = torch.cat([self.scores[sentences], scores], dim=1)  # (A, 2K)
        best_scores, best = merged_scores.topk(beam, dim=1)  # (A, K), sorted

        def keep(old: Tensor, candidates: Tensor) -> Tensor:
            merged = torch.cat([old[sentences], candidates], dim=1)  # (A, 2K, ...)
            index = best.view(*best.shape, *([1] * (merged.dim() - 2)))
            return merged.gather(1, index.expand(-1, -1, *merged.shape[2:]))

        self.log_probs[sentences] = keep(self.log_probs, log_probs)
        self.lengths[sentences] = keep(self.lengths, lengths)
        self.tokens[sentences] = keep(self.tokens, tokens)
        if self.attention is not None:
            self.attention[sentences] = keep(self.attention, attention)
        self.scores[sentences] = best_scores
        self.count[sentences] += new.sum(dim=1)


def _pad_to(x: Tensor, length: int, dim: int, value: float) -> Tensor:
    missing = length - x.size(dim)
    if missing <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x, x.new_full(shape, value)], dim=dim)


@torch.no_grad()
def beam_search(
    model, src: Tensor, src_lengths: Tensor, config: SearchConfig, return_attention: bool = False
) -> list[list[Hypothesis]]:
    """Beam search for a batch of B sentences: the K beams of the A sentences still
    searching are stepped together as A*K rows; a sentence leaves the batch when done."""
    vocab = model.vocab
    special = (vocab.pad_id, vocab.bos_id, vocab.eos_id)
    beam, batch, device = config.beam_size, src.size(0), src.device
    state, memory = model.encode(src, src_lengths)
    rows = torch.arange(batch, device=device).repeat_interleave(beam)  # (B*K,)
    state, memory = state.select(rows), memory.select(rows)
    max_len = max_output_lengths(src_lengths, config)  # (B,)
    longest = int(max_len.max()) + 1
    finished = _Finished.empty(
        batch, beam, longest, src.size(1), vocab.pad_id, return_attention, device
    )

    active = torch.arange(batch, device=device)  # (A,) sentences still searching
    # Alive beams: only the first is real at the start, so the K first extensions differ.
    alive_scores = torch.full((batch, beam), float("-inf"), device=device)  # (A, K)
    alive_scores[:, 0] = 0.0
    history = torch.zeros(batch * beam, 0, dtype=torch.long, device=device)  # (A*K, t)
    weights_history = src.new_zeros(batch * beam, 0, src.size(1), dtype=torch.float)
    prev = torch.full((batch * beam, 1), vocab.bos_id, dtype=torch.long, device=device)

    for step in range(longest):
        n_active = active.numel()
        log_probs, state, weights = model.step(prev, state, memory)  # (A*K, 1, V)
        row_max_len = max_len[active].repeat_interleave(beam)  # (A*K,)
        log_probs = _restrict(log_probs[:, 0], step, row_max_len, history, config, special)
        vocab_size = log_probs.size(1)
        candidates = (alive_scores.view(-1, 1) + log_probs).view(n_active, -1)  # (A, K*V)
        top_scores, top_ids = candidates.topk(min(2 * beam, candidates.size(1)), dim=1)
        top_beams, top_tokens = top_ids // vocab_size, top_ids % vocab_size  # (A, 2K)
        top_rows = (torch.arange(n_active, device=device) * beam)[:, None] + top_beams
        if return_attention:
            weights_history = torch.cat([weights_history, _weights(weights, memory.mask)], 1)
        ends = top_tokens == vocab.eos_id  # (A, 2K)

        # 1. Candidates ending here, among the K best, are finished.
        new = ends[:, :beam] & top_scores[:, :beam].isfinite()  # (A, K)
        if new.any():
            rows_k = top_rows[:, :beam]  # (A, K)
            tokens = torch.cat([history[rows_k], top_tokens[:, :beam, None]], dim=2)
            log_prob = top_scores[:, :beam]
            lengths = torch.full_like(rows_k, step + 1)
            score = log_prob / length_penalty(lengths, config.length_penalty)
            attention = None
            if return_attention:
                attention = _pad_to(weights_history[rows_k], longest, 2, 0.0)  # (A, K, L, S)
            finished.add(
                active,
                score.masked_fill(~new, float("-inf")),
                log_prob,
                lengths,
                _pad_to(tokens, longest, 2, vocab.pad_id),
                attention,
                new,
            )
        done = (finished.count[active] >= beam) | (step >= max_len[active])  # (A,)
        if done.all():
            break

        # 2. The K best candidates that do not end go on; done sentences leave the batch.
        rank = torch.arange(ends.size(1), device=device)
        order = (ends.long() * ends.size(1) + rank).topk(beam, dim=1, largest=False).indices
        alive_scores = top_scores.gather(1, order)  # (A, K)
        next_rows = top_rows.gather(1, order)  # (A, K) rows of the previous step
        next_tokens = top_tokens.gather(1, order)  # (A, K)
        if done.any():
            keep = (~done).nonzero().squeeze(1)  # (A',)
            active, alive_scores = active[keep], alive_scores[keep]
            next_rows, next_tokens = next_rows[keep], next_tokens[keep]
            memory = memory.select(_rows_of(keep, beam))
        next_rows = next_rows.view(-1)
        state = state.select(next_rows)
        history = torch.cat([history[next_rows], next_tokens.view(-1, 1)], dim=1)
        if return_attention:
            weights_history = weights_history[next_rows]
        prev = next_tokens.view(-1, 1)

    return _hypotheses(
        finished.tokens,
        finished.lengths,
        finished.scores,
        finished.log_probs,
        finished.attention,
        config.n_best,
    )


def search(
    model, src: Tensor, src_lengths: Tensor, config: SearchConfig, return_attention: bool = False
) -> list[list[Hypothesis]]:
    """Greedy search when beam_size is 1, beam search otherwise; n_best hypotheses each."""
    if config.beam_size == 1:
        return greedy_search(model, src, src_lengths, config, return_attention)
    return beam_search(model, src, src_lengths, config, return_attention)


def translate_ids(
    model,
    sequences: list[list[int]],
    config: SearchConfig,
    device: torch.device,
    return_attention: bool = False,
) -> list[list[Hypothesis]]:
    """Translate id sequences (end-of-sentence not included) in batches of similar length,
    batched by config.max_tokens source tokens or config.batch_size sentences; results come
    back in input order."""
    lengths = [len(s) + 1 for s in sequences]
    order = sorted(range(len(sequences)), key=lengths.__getitem__, reverse=True)
    if config.max_tokens:
        batches = group_batches(order, lengths, "tokens", config.max_tokens)
    else:
        batches = group_batches(order, lengths, "sentences", config.batch_size)
    results: list[list[Hypothesis]] = [[] for _ in sequences]
    for batch in batches:
        hypotheses = _search_splitting(
            model, [sequences[i] for i in batch], config, device, return_attention
        )
        for i, hyps in zip(batch, hypotheses):
            results[i] = hyps
    return results


def _search_splitting(
    model,
    sequences: list[list[int]],
    config: SearchConfig,
    device: torch.device,
    return_attention: bool,
) -> list[list[Hypothesis]]:
    """Search one batch; when the device runs out of memory, search its halves instead
    (a sentence's result does not depend on its batch, so the output is the same)."""
    vocab = model.vocab
    try:
        src, src_lengths = pad(sequences, vocab.pad_id, suffix=vocab.eos_id)
        return search(model, src.to(device), src_lengths.to(device), config, return_attention)
    except torch.OutOfMemoryError:
        if len(sequences) == 1:
            raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        half = len(sequences) // 2
        return _search_splitting(
            model, sequences[:half], config, device, return_attention
        ) + _search_splitting(model, sequences[half:], config, device, return_attention)
