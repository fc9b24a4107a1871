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
    optionally no repeated n-grams. A forced end keeps its true log-probability."""
    pad_id, bos_id, eos_id = special
    end_log_probs = log_probs[:, eos_id].clone()
    log_probs = log_probs.clone()
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


@torch.no_grad()
def greedy_search(
    model, src: Tensor, src_lengths: Tensor, config: SearchConfig, return_attention: bool = False
) -> list[list[Hypothesis]]:
    """The most probable next token at every step, for a batch of B sentences at once."""
    vocab = model.vocab
    special = (vocab.pad_id, vocab.bos_id, vocab.eos_id)
    batch = src.size(0)
    state, memory = model.encode(src, src_lengths)
    max_len = max_output_lengths(src_lengths, config)  # (B,)
    prev = torch.full((batch, 1), vocab.bos_id, dtype=torch.long, device=src.device)
    history = prev.new_zeros(batch, 0)  # (B, t)
    log_prob = torch.zeros(batch, device=src.device)
    lengths = torch.zeros(batch, dtype=torch.long, device=src.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=src.device)
    weights_history = []
    for step in range(int(max_len.max()) + 1):
        log_probs, state, weights = model.step(prev, state, memory)  # (B, 1, V)
        log_probs = _restrict(log_probs[:, 0], step, max_len, history, config, special)
        best_log_prob, best = log_probs.max(dim=-1)  # (B,)
        best = best.masked_fill(finished, vocab.pad_id)
        log_prob += best_log_prob.masked_fill(finished, 0.0)
        lengths += (~finished).long()
        history = torch.cat([history, best[:, None]], dim=1)
        if return_attention:
            weights_history.append(_weights(weights, memory.mask))
        finished |= best == vocab.eos_id
        if finished.all():
            break
        prev = best[:, None]
    scores = log_prob / length_penalty(lengths, config.length_penalty)
    attention = torch.cat(weights_history, dim=1)[:, None] if return_attention else None
    return _hypotheses(
        history[:, None], lengths[:, None], scores[:, None], log_prob[:, None], attention, 1
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
        return cls(
            torch.full((batch, beam), float("-inf"), device=device),
            torch.full((batch, beam), float("-inf"), device=device),
            torch.zeros(batch, beam, dtype=torch.long, device=device),
            torch.full((batch, beam, max_tokens), pad_id, dtype=torch.long, device=device),
            torch.zeros(batch, beam, max_tokens, src_len, device=device)
            if with_attention
            else None,
            torch.zeros(batch, dtype=torch.long, device=device),
        )

    def add(
        self,
        scores: Tensor,
        log_probs: Tensor,
        lengths: Tensor,
        tokens: Tensor,
        attention: Tensor | None,
        new: Tensor,
    ) -> None:
        """Merge K candidates per sentence (-inf score: not a candidate), keep the K best."""
        beam = self.scores.size(1)
        all_scores = torch.cat([self.scores, scores], dim=1)  # (B, 2K)
        best_scores, best = all_scores.topk(beam, dim=1)  # (B, K), sorted

        def keep(old: Tensor, cand: Tensor) -> Tensor:
            merged = torch.cat([old, cand], dim=1)  # (B, 2K, ...)
            index = best.view(*best.shape, *([1] * (merged.dim() - 2))).expand(
                -1, -1, *merged.shape[2:]
            )
            return merged.gather(1, index)

        self.scores = best_scores
        self.log_probs = keep(self.log_probs, log_probs)
        self.lengths = keep(self.lengths, lengths)
        self.tokens = keep(self.tokens, tokens)
        if self.attention is not None:
            self.attention = keep(self.attention, attention)
        self.count += new.sum(dim=1)


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
    """Beam search for a batch of B sentences, B*K rows stepped together."""
    vocab = model.vocab
    special = (vocab.pad_id, vocab.bos_id, vocab.eos_id)
    beam, batch, device = config.beam_size, src.size(0), src.device
    state, memory = model.encode(src, src_lengths)
    rows = torch.arange(batch, device=device).repeat_interleave(beam)  # (B*K,)
    state, memory = state.select(rows), memory.select(rows)
    max_len = max_output_lengths(src_lengths, config)  # (B,)
    row_max_len = max_len[rows]  # (B*K,)
    longest = int(max_len.max()) + 1

    # Alive beams: only the first is real at the start, so the K first extensions differ.
    alive_scores = torch.full((batch, beam), float("-inf"), device=device)
    alive_scores[:, 0] = 0.0
    history = torch.zeros(batch * beam, 0, dtype=torch.long, device=device)  # (B*K, t)
    weights_history = src.new_zeros(batch * beam, 0, src.size(1), dtype=torch.float)
    finished = _Finished.empty(
        batch, beam, longest, src.size(1), vocab.pad_id, return_attention, device
    )
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    prev = torch.full((batch * beam, 1), vocab.bos_id, dtype=torch.long, device=device)
    first_rows = (torch.arange(batch, device=device) * beam)[:, None]  # (B, 1)

    for step in range(longest):
        log_probs, state, weights = model.step(prev, state, memory)  # (B*K, 1, V)
        log_probs = _restrict(log_probs[:, 0], step, row_max_len, history, config, special)
        vocab_size = log_probs.size(1)
        candidates = (alive_scores.view(-1, 1) + log_probs).view(batch, -1)  # (B, K*V)
        top_scores, top_ids = candidates.topk(min(2 * beam, candidates.size(1)), dim=1)  # (B, 2K)
        top_beams, top_tokens = top_ids // vocab_size, top_ids % vocab_size  # (B, 2K)
        top_rows = first_rows + top_beams  # (B, 2K) rows of B*K
        if return_attention:
            weights_history = torch.cat([weights_history, _weights(weights, memory.mask)], dim=1)
        ends = top_tokens == vocab.eos_id  # (B, 2K)

        # 1. Candidates ending here, among the K best, are finished.
        new = ends[:, :beam] & top_scores[:, :beam].isfinite() & ~done[:, None]  # (B, K)
        if new.any():
            rows_k = top_rows[:, :beam]  # (B, K)
            n = step + 1
            tokens = torch.cat([history[rows_k], top_tokens[:, :beam, None]], dim=2)  # (B, K, n)
            tokens = _pad_to(tokens, longest, 2, vocab.pad_id)
            log_prob = top_scores[:, :beam]
            score = log_prob / length_penalty(torch.full_like(rows_k, n), config.length_penalty)
            score = score.masked_fill(~new, float("-inf"))
            attention = None
            if return_attention:
                attention = _pad_to(weights_history[rows_k], longest, 2, 0.0)  # (B, K, L, S)
            finished.add(score, log_prob, torch.full_like(rows_k, n), tokens, attention, new)
        done |= (finished.count >= beam) | (step >= max_len)
        if done.all():
            break

        # 2. The K best candidates that do not end go on.
        rank = torch.arange(ends.size(1), device=device)
        order = (ends.long() * ends.size(1) + rank).topk(beam, dim=1, largest=False).indices
        alive_scores = top_scores.gather(1, order).masked_fill(done[:, None], float("-inf"))
        next_rows = top_rows.gather(1, order).view(-1)  # (B*K,)
        next_tokens = top_tokens.gather(1, order).view(-1, 1)  # (B*K, 1)
        state = state.select(next_rows)
        history = torch.cat([history[next_rows], next_tokens], dim=1)
        if return_attention:
            weights_history = weights_history[next_rows]
        prev = next_tokens

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
    vocab = model.vocab
    lengths = [len(s) + 1 for s in sequences]
    order = sorted(range(len(sequences)), key=lengths.__getitem__, reverse=True)
    if config.max_tokens:
        batches = group_batches(order, lengths, "tokens", config.max_tokens)
    else:
        batches = group_batches(order, lengths, "sentences", config.batch_size)
    results: list[list[Hypothesis]] = [[] for _ in sequences]
    for batch in batches:
        src, src_lengths = pad([sequences[i] for i in batch], vocab.pad_id, suffix=vocab.eos_id)
        hypotheses = search(model, src.to(device), src_lengths.to(device), config, return_attention)
        for i, hyps in zip(batch, hypotheses):
            results[i] = hyps
    return results
