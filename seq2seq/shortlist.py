"""A vocabulary shortlist per batch (Marian's lexical shortlist, from co-occurrence in the
training data where Marian uses word alignments): a batch decodes over the target pieces its
source pieces may need, the most frequent ones and the special ids, so the output layer,
`log_softmax` and the search's ranking cover a few thousand pieces, not the vocabulary."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import Tensor, nn

from .model import Decoder
from .vocab import Vocab


def build_shortlist(src, tgt, vocab: Vocab, width: int = 100) -> Tensor:
    """The table (src_size + 1, width) from the pairs src[i], tgt[i]: row s holds source piece
    s's best target pieces by Dice 2 c(s, t) / (c(s) + c(t)), c counting the pairs holding
    them (then end-of-sentence); the last row, the most frequent target pieces."""
    src_count, tgt_count = np.zeros(vocab.src_size), np.zeros(vocab.tgt_size)
    pairs, chunks = min(len(src), 500_000), []  # enough pairs for stable counts
    for start in range(0, pairs, 20_000):  # pair counts of 20,000 pairs at a time
        found = []
        for i in range(start, min(start + 20_000, pairs)):
            s, t = np.unique(src[i].numpy()), np.unique(tgt[i].numpy())
            src_count[s] += 1
            tgt_count[t] += 1
            found.append((s[:, None] * vocab.tgt_size + t).ravel())  # key s * V + t
        chunks.append(np.unique(np.concatenate(found), return_counts=True))
    keys, counts = (np.concatenate(part) for part in zip(*chunks))
    keys, where = np.unique(keys, return_inverse=True)
    s, t = np.divmod(keys, vocab.tgt_size)
    dice = 2 * np.bincount(where, counts) / (src_count[s] + tgt_count[t])
    order = np.lexsort((-dice, s))  # by source piece, best first
    s, t = s[order], t[order]
    rank = np.arange(len(s)) - np.searchsorted(s, s)  # place within its source piece
    kept = rank < width
    table = np.full((vocab.src_size + 1, width), vocab.eos_id, dtype=np.int32)
    table[s[kept], rank[kept]] = t[kept]
    frequent = np.argsort(-tgt_count, kind="stable")[:width]
    table[-1, : len(frequent)] = frequent
    return torch.from_numpy(table)


class Shortlisted:
    """`model` (a Seq2Seq or an ensemble) decoding one batch over a cut vocabulary: piece i
    stands for ids[i] (the `best` of each source piece in `src`, the most frequent, the
    special ids). Search sees `encode` and `step`; each decoder's output layer is cut once."""

    def __init__(self, model, table: Tensor, src: Tensor, best: int):
        vocab = model.vocab
        specials = torch.tensor([vocab.pad_id, vocab.unk_id, vocab.bos_id, vocab.eos_id])
        found = table[src.unique().cpu(), :best].reshape(-1).long()
        ids = torch.cat([found, table[-1].long(), specials]).unique()  # sorted
        self.model, self.ids, self.encode = model, ids.to(src.device), model.encode
        decoders = [m for m in model.modules() if isinstance(m, Decoder)]
        self.cuts = {d.output: _rows(d.output, self.ids) for d in decoders}
        self.vocab = Vocab(vocab.src_size, len(ids), *torch.searchsorted(ids, specials).tolist())

    def step(self, prev_tokens: Tensor, state, memory):
        return self.model.step(self.ids[prev_tokens], state, memory, cut_output=self.cuts.get)


def _rows(layer: nn.Module, ids: Tensor) -> nn.Module:
    if isinstance(layer, nn.Linear):
        cut = nn.Linear(layer.in_features, len(ids), layer.bias is not None, device="meta")
        cut.weight = nn.Parameter(layer.weight.detach()[ids], requires_grad=False)
        if layer.bias is not None:
            cut.bias = nn.Parameter(layer.bias.detach()[ids], requires_grad=False)
        return cut
    cut = copy.copy(layer)  # an Int8Linear: weight (K, N), a scale per output row
    cut.weight, cut.scale = layer.weight[:, ids].contiguous(), layer.scale[ids]
    cut.bias = None if layer.bias is None else layer.bias[ids]
    return cut
