"""Stage 4, score: hypotheses + references -> BLEU and chrF with sacreBLEU signatures.

Reads: a hypothesis file and a reference file ("-": standard input, for one of them), one
detokenized, cased sentence a line, with equal line counts.
Writes: nothing itself; `nmt score --json` prints the result and the pipeline saves it as
score.json in the run folder:
    {"bleu": float, "chrf": float, "signature": "<BLEU signature>",
     "chrf_signature": "...", "bleu_detail": "BLEU = ...", "sentences": int}
BLEU is sacreBLEU's default (13a tokenizer, exponential smoothing), on text as it is:
cased and detokenized, so figures compare with published sacreBLEU scores.
"""

from __future__ import annotations

from pathlib import Path

from sacrebleu.metrics import BLEU, CHRF

from seq2seq.errors import UserError
from seq2seq.io import read_lines


def corpus_scores(hypotheses: list[str], references: list[str]) -> dict:
    if len(hypotheses) != len(references):
        raise ValueError("hypotheses and references differ in number")
    bleu, chrf = BLEU(), CHRF()
    bleu_result = bleu.corpus_score(hypotheses, [references])
    chrf_result = chrf.corpus_score(hypotheses, [references])
    return {
        "bleu": round(bleu_result.score, 2),
        "chrf": round(chrf_result.score, 2),
        "signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
        "bleu_detail": str(bleu_result),
        "sentences": len(references),
    }


def score_files(hypotheses: str | Path, references: str | Path) -> dict:
    """Score two files ("-" for one of them: standard input)."""
    if str(hypotheses) == "-" and str(references) == "-":
        raise UserError("-H - and -r - both name stdin; at most one of them can be '-'")
    hyps = list(read_lines(hypotheses))
    refs = list(read_lines(references))
    if len(hyps) != len(refs):
        raise UserError(
            f"{hypotheses} has {len(hyps)} lines but {references} has {len(refs)}; "
            "hypotheses and references must pair up line by line"
        )
    if not refs:
        raise UserError(f"{references}: empty; nothing to score")
    return corpus_scores(hyps, refs)


def describe(result: dict) -> str:
    return (
        f"BLEU {result['bleu']:.2f}  chrF {result['chrf']:.2f}  ({result['sentences']} "
        f"sentences)\n  {result['bleu_detail']}\n  BLEU signature: {result['signature']}\n"
        f"  chrF signature: {result['chrf_signature']}"
    )
