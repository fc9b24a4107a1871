"""Several models of one vocabulary decoding as one (Sutskever et al., 2014; fairseq, Marian
and OpenNMT do the same): at every step the next-token log-probabilities are the mean of the
models' log-probabilities, and the attention weights the mean of the models' weights.

An ensemble has the model's search interface, `encode` and `step` (and teacher forcing),
so greedy search, beam search, n-best lists and alignments work on it unchanged; each model
keeps its own decoder state and source memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .model import Seq2Seq


@dataclass
class EnsembleState:
    states: list  # one DecoderState per model

    def select(self, index: Tensor) -> EnsembleState:
        return EnsembleState([state.select(index) for state in self.states])


@dataclass
class EnsembleMemory:
    memories: list  # one Memory per model

    def select(self, index: Tensor) -> EnsembleMemory:
        return EnsembleMemory([memory.select(index) for memory in self.memories])


class Ensemble(nn.Module):
    """Models that share their vocabularies (checked by the caller, who knows the
    SentencePiece models), decoding as one."""

    def __init__(self, models: list[Seq2Seq]):
        super().__init__()
        vocabs = {model.vocab for model in models}
        if len(vocabs) != 1:
            raise ValueError(f"an ensemble needs one vocabulary, got {vocabs}")
        self.models, self.vocab = nn.ModuleList(models), models[0].vocab

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[EnsembleState, EnsembleMemory]:
        parts = [model.encode(src, src_lengths) for model in self.models]
        return EnsembleState([s for s, _ in parts]), EnsembleMemory([m for _, m in parts])

    def step(
        self, prev_tokens: Tensor, state: EnsembleState, memory: EnsembleMemory, cut_output=None
    ):
        """prev_tokens (B, T) -> mean log-probabilities (B, T, V), next state, mean weights
        (B, T, S) of the models with attention (None if none has any)."""
        parts = zip(self.models, state.states, memory.memories)
        outputs = [model.step(prev_tokens, s, m, cut_output=cut_output) for model, s, m in parts]
        log_probs = torch.stack([lp for lp, _, _ in outputs]).mean(dim=0)  # (B, T, V)
        weights = [w.float() for _, _, w in outputs if w is not None]
        mean_weights = torch.stack(weights).mean(dim=0) if weights else None  # (B, T, S)
        return log_probs, EnsembleState([s for _, s, _ in outputs]), mean_weights

    def forward(self, src: Tensor, src_lengths: Tensor, prev_tokens: Tensor) -> Tensor:
        """Teacher forcing: the mean log-probabilities (B, T, V) of each next target token."""
        state, memory = self.encode(src, src_lengths)
        return self.step(prev_tokens, state, memory)[0]  # the log-probabilities
