"""Stage 4, score: hypotheses + references -> BLEU, chrF and TER with sacreBLEU signatures.

Reads: one hypothesis file per system and one or more reference files ("-": standard input,
for one of them), one detokenized sentence a line, all with the same number of lines.
Writes: nothing itself; `nmt score --json` prints the result and the pipeline saves it as
score.json in the run folder:
    {"bleu": float, "chrf": float, "ter": float, "signature": "<BLEU signature>",
     "chrf_signature": "...", "ter_signature": "...", "bleu_detail": "BLEU = ...",
     "sentences": int, "references": int}
sacreBLEU does all of it: BLEU with any of its tokenizers (13a by default; zh, ja-mecab,
char, intl, flores200, ... for other scripts), on cased text unless `lowercase`; chrF; TER;
and paired significance tests (bootstrap resampling or approximate randomization) of systems
against a baseline, printed as `sacrebleu --paired-bs` prints them.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from argparse import Namespace
from pathlib import Path

from seq2seq.config import ScoreConfig
from seq2seq.errors import UserError
from seq2seq.io import check_streams, read_lines

NAMES = {"bleu": "BLEU", "chrf": "chrF2", "ter": "TER"}


def metrics(config: ScoreConfig) -> dict:
    """sacreBLEU's metric objects for `config`, or a UserError naming what is missing."""
    from sacrebleu.metrics import BLEU, CHRF, TER
    from sacrebleu.metrics.bleu import _TOKENIZERS

    if config.tokenize not in _TOKENIZERS:
        raise UserError(
            f"config key 'score.tokenize': {config.tokenize!r} is not a sacreBLEU tokenizer; "
            f"expected one of {', '.join(_TOKENIZERS)}"
        )
    make = {
        "bleu": lambda: BLEU(tokenize=config.tokenize, lowercase=config.lowercase),
        "chrf": lambda: CHRF(lowercase=config.lowercase),
        "ter": lambda: TER(case_sensitive=not config.lowercase),
    }
    try:
        return {name: make[name]() for name in config.metrics}
    except (RuntimeError, ImportError) as e:  # ja-mecab or ko-mecab without their package
        raise UserError(f"score.tokenize {config.tokenize}: {' '.join(str(e).split())}") from None


def corpus_scores(
    hypotheses: list[str], references: list[list[str]], config: ScoreConfig = ScoreConfig()
) -> dict:
    """Every metric of `config` for one system against one or more reference lists."""
    result = {}
    for name, metric in metrics(config).items():
        try:
            score = metric.corpus_score(hypotheses, references)
        except OSError as e:  # flores101/200 fetch their SentencePiece model on first use
            what = "sacreBLEU could not fetch what it needs"
            raise UserError(f"score.tokenize {config.tokenize}: {what} ({e})") from None
        result[name] = round(score.score, 2)
        result["signature" if name == "bleu" else f"{name}_signature"] = str(metric.get_signature())
        if name == "bleu":
            result["bleu_detail"] = str(score)
    return {**result, "sentences": len(hypotheses), "references": len(references)}


def read_texts(paths: list[str | Path], what: str) -> list[list[str]]:
    """The lines of each file (at most one of them "-"), all as many."""
    if sum(str(p) == "-" for p in paths) > 1:
        raise UserError("stdin ('-') can be read once; name it at most once")
    check_streams(paths)  # the JSON or table printed on the end of an input
    texts = [list(read_lines(path)) for path in paths]
    for path, lines in zip(paths, texts):
        if len(lines) != len(texts[0]):
            raise UserError(
                f"{paths[0]} has {len(texts[0])} lines but {path} has {len(lines)}; "
                f"{what} must pair up line by line"
            )
    return texts


def score_files(
    hypotheses: str | Path | list, references: str | Path | list, config=ScoreConfig()
) -> dict:
    """Score one system's file against one or more reference files."""
    hyps = hypotheses if isinstance(hypotheses, list) else [hypotheses]
    refs = references if isinstance(references, list) else [references]
    texts = read_texts(hyps + refs, "hypotheses and references")
    if not texts[-1]:
        raise UserError(f"{refs[-1]}: empty; nothing to score")
    return corpus_scores(texts[0], texts[1:], config)


def paired_test(
    systems: list[str | Path], references: list, config=ScoreConfig(), test="bs", n=0, as_json=False
) -> str:
    """Each system against the first (the baseline) by paired bootstrap resampling ("bs") or
    approximate randomization ("ar"), as `sacrebleu --paired-bs` (or --paired-ar) prints it."""
    from sacrebleu.significance import PairedTest
    from sacrebleu.utils import Color, print_results_table

    if len(systems) < 2:
        raise UserError("a paired test needs a baseline and at least one system: -H twice")
    texts = read_texts([*systems, *references], "systems and references")
    if not texts[0]:
        raise UserError(f"{systems[0]}: empty; nothing to score")
    names = [f"Baseline: {systems[0]}", *map(str, systems[1:])]
    named = list(zip(names, texts[: len(systems)]))
    chosen = metrics(config)
    with contextlib.redirect_stderr(io.StringIO()):  # its progress log
        tested = PairedTest(named, chosen, texts[len(systems) :], test_type=test, n_samples=n)
        signatures, scores = tested()
    if as_json:  # sacreBLEU's own JSON of these results fails on numpy numbers
        rows = [
            {"system": name, **{m: scores[m][i].__dict__ for m in scores if m != "System"}}
            for i, name in enumerate(scores["System"])
        ]
        return json.dumps(rows, indent=2, default=float)
    args = Namespace(format="text", width=2, paired_bs=test == "bs", paired_ar=test == "ar")
    args.paired_bs_n = args.paired_ar_n = tested.n_samples
    Color.ENABLE_COLORS = sys.stdout.isatty()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print_results_table(scores, {k: v.format() for k, v in signatures.items()}, args)
    return out.getvalue().rstrip("\n")


def describe(result: dict) -> str:
    scores = "  ".join(f"{NAMES[name]} {result[name]:.2f}" for name in NAMES if name in result)
    lines = [f"{scores}  ({result['sentences']} sentences, {result['references']} reference(s))"]
    if "bleu_detail" in result:
        lines.append(f"  {result['bleu_detail']}")
    for name in NAMES:
        key = "signature" if name == "bleu" else f"{name}_signature"
        if key in result:
            lines.append(f"  {NAMES[name]} signature: {result[key]}")
    return "\n".join(lines)
