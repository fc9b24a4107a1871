"""The translation driver: search over many id sequences, in batches of similar length, as
large as the device's memory allows. The search itself is `search.py`'s.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .batching import group_batches, pad
from .config import SearchConfig
from .search import Hypothesis, search
from .shortlist import Shortlisted


def translate_ids(
    model,
    sequences: list[list[int]],
    config: SearchConfig,
    device: torch.device,
    return_attention: bool = False,
    shortlist: Tensor | None = None,
) -> list[list[Hypothesis]]:
    """Translate id sequences (end-of-sentence not included) in batches of similar length,
    batched by config.max_tokens source tokens or config.batch_size sentences; results come
    back in input order. With config.shortlist, each batch over `shortlist`'s pieces."""
    vocab = model.vocab

    def search_halving(batch: list[list[int]]) -> list[list[Hypothesis]]:
        """Search one batch; when the device runs out of memory, search its halves instead
        (a sentence's result does not depend on its batch, so the output is the same, but
        with a shortlist: that is the batch's). The halves run after the except block, once
        the failed attempt's traceback, and the tensors it holds, are freed."""
        try:
            src, src_lengths = (x.to(device) for x in pad(batch, vocab.pad_id, suffix=vocab.eos_id))
            cut = Shortlisted(model, shortlist, src, config.shortlist) if config.shortlist else None
            hypotheses = search(cut or model, src, src_lengths, config, return_attention)
            for h in [h for hyps in hypotheses for h in hyps] if cut else []:  # to vocab ids
                h.tokens = cut.ids[h.tokens].tolist()
            return hypotheses
        except torch.cuda.OutOfMemoryError:  # torch.OutOfMemoryError from torch 2.5 on
            if len(batch) == 1:
                raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        half = len(batch) // 2
        return search_halving(batch[:half]) + search_halving(batch[half:])

    lengths = [len(s) + 1 for s in sequences]
    order = sorted(range(len(sequences)), key=lengths.__getitem__, reverse=True)
    kind = "tokens" if config.max_tokens else "sentences"
    batches = group_batches(order, lengths, kind, config.max_tokens or config.batch_size)
    results: list[list[Hypothesis]] = [[] for _ in sequences]
    for batch in batches:
        for i, hyps in zip(batch, search_halving([sequences[i] for i in batch])):
            results[i] = hyps
    return results
