"""Validation during training: dev loss and perplexity by teacher forcing, and dev BLEU and
chrF from real decoding of the dev split (greedy unless train.dev_beam_size says otherwise).

Reads (from the run folder): data/dev.<lang>.bin/.idx and data/dev.<tgt_lang> (references).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from seq2seq.batching import TokenSequences, make_batch
from seq2seq.config import ScoreConfig, SearchConfig
from seq2seq.decoding import translate_ids
from seq2seq.device import autocast
from seq2seq.tokenizer import Tokenizer
from seq2seq.training import label_smoothed_nll
from seq2seq.vocab import Vocab

from .layout import RunFolder
from .score import corpus_scores

BATCH = 64  # dev sentences a teacher-forced batch


class DevSet:
    """The dev split of a run folder, and how a model scores on it."""

    def __init__(
        self, run: RunFolder, manifest: dict, vocab: Vocab, tokenizer: Tokenizer, score: ScoreConfig
    ):
        split = manifest["splits"]["dev"]
        self.src = TokenSequences.load(run.root / split["src_ids"])
        self.tgt = TokenSequences.load(run.root / split["tgt_ids"])
        self.sources = (run.root / split["src"]).read_text(encoding="utf-8").splitlines()
        self.references = (run.root / split["tgt"]).read_text(encoding="utf-8").splitlines()
        self.vocab, self.tgt_tokenizer = vocab, tokenizer  # the target side's, to decode
        self.score = dataclasses.replace(score, metrics=("bleu", "chrf"))  # as test is scored

    @torch.no_grad()
    def loss(self, model, device: torch.device, precision: str) -> float:
        """Mean negative log-likelihood per target token (end of sentence included)."""
        nll_sum, tokens = torch.zeros((), dtype=torch.float64, device=device), 0
        for start in range(0, len(self.src), BATCH):
            rows = list(range(start, min(start + BATCH, len(self.src))))
            batch = make_batch(self.src, self.tgt, rows, self.vocab).to(device)
            with autocast(device, precision):
                log_probs = model(batch.src, batch.src_lengths, batch.tgt_in, batch.positions)
            nll_sum += label_smoothed_nll(log_probs, batch.tgt_real, self.vocab.pad_id, 0.0)[1]
            tokens += batch.num_tgt_tokens
        return float(nll_sum) / tokens

    @torch.no_grad()
    def evaluate(
        self, model, search: SearchConfig, device: torch.device, precision: str, examples: int = 0
    ) -> dict:
        """dev_loss, dev_ppl, dev_bleu and dev_chrf of `model` (put in eval mode), and the
        first `examples` dev sentences as (number, source, reference, hypothesis)."""
        model.eval()
        dev_loss = self.loss(model, device, precision)
        sources = [self.src[i].tolist() for i in range(len(self.src))]
        with autocast(device, precision):
            hypotheses = translate_ids(  # the whole vocabulary: the table is the checkpoints'
                model, sources, dataclasses.replace(search, shortlist=0), device
            )
        texts = self.tgt_tokenizer.decode([h[0].tokens if h else [] for h in hypotheses])
        scores = corpus_scores(texts, [self.references], self.score)
        shown = zip(self.sources, self.references, texts)
        return {
            "dev_loss": dev_loss,
            "dev_ppl": math.exp(min(50.0, dev_loss)) if math.isfinite(dev_loss) else dev_loss,
            "dev_bleu": scores["bleu"],
            "dev_chrf": scores["chrf"],
            "examples": [(i + 1, *example) for i, example in zip(range(examples), shown)],
        }
