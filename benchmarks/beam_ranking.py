"""Beam search's ranking step alone: the 2K best of K x V extensions per sentence.

Times `_Beams.extensions` (the best of each group of 64 consecutive tokens, then only the
2K best groups' tokens) against ranking all K x V at once (scores added to every
log-probability, one `topk`, as beam search did before), on random log-probabilities of 64
sentences, for each vocabulary size given; checks that both give the same scores. Prints ms
per call (median of `--repeats`, each the mean of `--calls` calls) and the ratio.

    python benchmarks/beam_ranking.py --vocab 8000 8001 8002 8004 8032 250 1000 32001
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.int8 import cpu_name  # noqa: E402
from seq2seq.search import _Beams  # noqa: E402


def rank_all(beams: _Beams, log_probs: torch.Tensor):
    """The ranking before 997ed51: all K x V extensions of a sentence through one topk."""
    sentences, beam = beams.scores.shape
    candidates = log_probs.add_(beams.scores.view(-1, 1)).view(sentences, -1)
    top_scores, ids = candidates.topk(min(2 * beam, candidates.size(1)), dim=1)
    first_row = torch.arange(sentences)[:, None] * beam
    return top_scores, first_row + ids // log_probs.size(1), ids % log_probs.size(1)


def per_call_ms(rank, beams: _Beams, log_probs: torch.Tensor, calls: int) -> float:
    copies = [log_probs.clone() for _ in range(calls)]  # both rankers may spend their input
    start = time.perf_counter()
    for copy in copies:
        rank(beams, copy)
    return (time.perf_counter() - start) / calls * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, nargs="+", default=[8000, 8001, 1000, 32000])
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"{cpu_name()}; {args.sentences} sentences, beam {args.beam_size}, ms per call\n")
    print("| V | all K x V | groups of 64 | ratio |\n| --- | --- | --- | --- |")
    for vocab in args.vocab:
        beams = _Beams.start(args.beam_size, torch.full((args.sentences,), 9), 10, 4, 0, False)
        beams.scores = -torch.rand(args.sentences, args.beam_size) * 5
        log_probs = torch.randn(args.sentences * args.beam_size, vocab).log_softmax(-1)
        got = _Beams.extensions(beams, log_probs.clone())[0]
        assert torch.equal(got, rank_all(beams, log_probs.clone())[0]), vocab
        times = {rank: [] for rank in (rank_all, _Beams.extensions)}
        for _ in range(args.repeats):  # interleaved
            for rank, seen in times.items():
                seen.append(per_call_ms(rank, beams, log_probs, args.calls))
        old, new = (statistics.median(seen) for seen in times.values())
        print(f"| {vocab:,} | {old:.2f} | {new:.2f} | {old / new:.2f}x |")


if __name__ == "__main__":
    main()
