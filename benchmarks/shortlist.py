"""Experiment: a vocabulary shortlist per batch (Marian's lexical shortlist, from
co-occurrence in the training data instead of word alignments). Decides whether the
shortlist earns a place in the library: speed against the full vocabulary and BLEU within
0.3, in fp32 and in int8, on the same checkpoint and search settings.

For each source piece s, its `--best` target pieces t by Dice coefficient
2 c(s, t) / (c(s) + c(t)) over the training pairs (c counts pairs holding the piece), plus
the `--frequent` most frequent target pieces and the special ids. A batch decodes over the
union of its source pieces' lists only: the decoder's embedding and output layer are cut to
those rows, the search runs in that smaller id space unchanged, and the ids are mapped back.

    python benchmarks/shortlist.py runs/m30k_de_en --settings 100:20,100:50,200:100
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import sacrebleu  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import seq2seq.decoding  # noqa: E402
from pipelines.translator import Translator  # noqa: E402
from seq2seq.batching import TokenSequences  # noqa: E402
from seq2seq.int8 import Int8Linear  # noqa: E402
from seq2seq.model import Decoder  # noqa: E402
from seq2seq.search import search as full_search  # noqa: E402


def cooccurrence(run: Path, src_size: int, tgt_size: int) -> tuple[np.ndarray, ...]:
    """Pair counts c(s, t) as sorted keys s * tgt_size + t with counts, c(s), c(t)."""
    src, tgt = (
        TokenSequences.load(run / "data" / "train.de"),
        TokenSequences.load(run / "data" / "train.en"),
    )
    keys = []
    src_count, tgt_count = np.zeros(src_size, np.int64), np.zeros(tgt_size, np.int64)
    for i in range(len(src)):
        s, t = np.unique(src[i].numpy()), np.unique(tgt[i].numpy())
        src_count[s] += 1
        tgt_count[t] += 1
        keys.append((s[:, None].astype(np.int64) * tgt_size + t[None, :]).ravel())
    keys, counts = np.unique(np.concatenate(keys), return_counts=True)
    return keys, counts, src_count, tgt_count


def table(stats, tgt_size: int, best: int) -> list[np.ndarray]:
    """Each source piece's `best` target pieces by Dice coefficient."""
    keys, counts, src_count, tgt_count = stats
    s, t = keys // tgt_size, keys % tgt_size
    dice = 2 * counts / (src_count[s] + tgt_count[t])
    order = np.lexsort((-dice, s))  # by source, best first
    s, t = s[order], t[order]
    starts = np.searchsorted(s, np.arange(len(src_count)))
    ends = np.searchsorted(s, np.arange(len(src_count)), side="right")
    return [t[a : min(b, a + best)] for a, b in zip(starts, ends)]


def restrict(layer: nn.Module, ids: torch.Tensor) -> nn.Module:
    """An output layer (float or int8) or embedding cut to the rows `ids`."""
    if isinstance(layer, nn.Embedding):
        return nn.Embedding.from_pretrained(layer.weight[ids], freeze=True)
    if isinstance(layer, Int8Linear):
        cut = copy.copy(layer)
        cut.weight = layer.weight[:, ids].contiguous()
        cut.scale = layer.scale[ids]
        cut.bias = None if layer.bias is None else layer.bias[ids]
        return cut
    cut = nn.Linear(layer.in_features, len(ids), bias=layer.bias is not None)
    cut.weight = nn.Parameter(layer.weight[ids], requires_grad=False)
    if layer.bias is not None:
        cut.bias = nn.Parameter(layer.bias[ids], requires_grad=False)
    return cut


class Shortlisted:
    """`model` seen through the target ids `ids` (sorted): position i stands for ids[i]."""

    def __init__(self, model, ids: torch.Tensor):
        self.model, self.ids = model, ids
        position = {int(v): i for i, v in enumerate(ids)}
        v = model.vocab
        self.vocab = type(v)(
            v.src_size, len(ids), *(position[x] for x in (v.pad_id, v.unk_id, v.bos_id, v.eos_id))
        )

    def encode(self, src, lengths):
        return self.model.encode(src, lengths)

    def step(self, prev, state, memory):
        return self.model.step(prev, state, memory)


def install(translator: Translator, frequent: np.ndarray, lists: list[np.ndarray], sizes):
    """The search of one batch over the target pieces its source pieces may need."""
    vocab = translator.model.vocab
    specials = [vocab.pad_id, vocab.unk_id, vocab.bos_id, vocab.eos_id]
    decoders = [m for m in translator.model.modules() if isinstance(m, Decoder)]

    def shortlisted_search(model, src, src_lengths, config, return_attention=False):
        pieces = np.unique(src.cpu().numpy())
        ids = np.unique(np.concatenate([frequent, specials, *(lists[p] for p in pieces)]))
        sizes.append(len(ids))
        ids = torch.from_numpy(ids).to(src.device)
        saved = [(d.embed, d.output) for d in decoders]
        for d in decoders:
            d.embed, d.output = restrict(d.embed, ids), restrict(d.output, ids)
        try:
            hyps = full_search(Shortlisted(model, ids), src, src_lengths, config, return_attention)
        finally:
            for d, (embed, output) in zip(decoders, saved):
                d.embed, d.output = embed, output
        mapping = ids.tolist()
        for line in hyps:
            for h in line:
                h.tokens = [mapping[t] for t in h.tokens]
        return hyps

    return shortlisted_search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--settings", default="100:20,100:50,200:100", help="frequent:best,...")
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sources = (args.run / "data" / "test.de").read_text(encoding="utf-8").splitlines()
    references = (args.run / "data" / "test.en").read_text(encoding="utf-8").splitlines()
    start = time.perf_counter()
    translators = {
        p: Translator(args.run, "cpu", p, beam_size=args.beam_size)
        for p in args.precisions.split(",")
    }
    vocab = next(iter(translators.values())).model.vocab
    stats = cooccurrence(args.run, vocab.src_size, vocab.tgt_size)
    print(f"co-occurrence counts: {time.perf_counter() - start:.1f}s", flush=True)
    frequent_order = np.argsort(-stats[3], kind="stable")
    variants = [("full", None)]
    for setting in args.settings.split(","):
        frequent, best = map(int, setting.split(":"))
        variants.append(
            (
                f"{frequent} frequent + {best} best",
                (frequent_order[:frequent], table(stats, vocab.tgt_size, best)),
            )
        )
    rows = {}
    for p, translator in translators.items():
        translator.translate(sources[:50])
        for name, _ in variants:
            rows[p, name] = {"speed": [], "sizes": []}
        for _ in range(args.repeats):
            for name, variant in variants:
                sizes = rows[p, name]["sizes"]
                seq2seq.decoding.search = (
                    full_search if variant is None else install(translator, *variant, sizes)
                )
                began = time.perf_counter()
                rows[p, name]["out"] = translator.translate(sources)
                rows[p, name]["speed"].append(len(sources) / (time.perf_counter() - began))
        seq2seq.decoding.search = full_search
        print(f"| {p} | shortlist | sentences/s | vs full | BLEU | lines = full | ids per batch |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        base = statistics.median(rows[p, "full"]["speed"])
        for name, _ in variants:
            r = rows[p, name]
            speed = statistics.median(r["speed"])
            bleu = sacrebleu.corpus_bleu(r["out"], [references]).score
            same = sum(a == b for a, b in zip(r["out"], rows[p, "full"]["out"]))
            size = f"{statistics.median(r['sizes']):.0f}" if r["sizes"] else str(vocab.tgt_size)
            print(
                f"| {p} | {name} | {speed:.1f} ({min(r['speed']):.1f}-{max(r['speed']):.1f}) "
                f"| {speed / base:.2f}x | {bleu:.2f} | {same}/{len(sources)} | {size} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
