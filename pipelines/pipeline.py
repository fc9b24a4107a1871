"""The pipeline: preprocess, train, translate the test split, score it, from one config.

Reads: the config and the corpus it names. Writes: everything the four stages write, in one
run folder (see layout.py), plus translations/test.<tgt_lang> and score.json. The stages talk
only through those files. Preprocessing is skipped when the run folder already holds the
output of the same data config and inputs; training resumes where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from seq2seq.config import Config, to_dict
from seq2seq.errors import UserError
from seq2seq.io import atomic_write_text, file_sha256

from .layout import RunFolder
from .preprocess import preprocess
from .score import describe, score_files
from .train import train
from .translate import translate_file


def _stale(config: Config, run: RunFolder) -> str | None:
    """Why the run folder must be preprocessed (again), or None when its manifest was made
    from this very data config and corpus files (the files that are still there)."""
    try:
        manifest = run.read_manifest()
    except UserError:  # none, or not JSON
        return "its manifest is missing or damaged"
    if _made_by(manifest.get("data") or {}) != _made_by(to_dict(config.data)):
        return "the data config changed"
    for origin in _file_origins(manifest.get("inputs")):
        if Path(origin["path"]).is_file() and file_sha256(origin["path"]) != origin["sha256"]:
            return f"{origin['path']} changed"
    files = [run.root / s[side] for s in manifest["splits"].values() for side in ("src", "tgt")]
    return None if all(file.is_file() for file in files) else "its data files are missing"


def _file_origins(node) -> list[dict]:
    """The {path, sha256, bytes} records of local corpus files in a manifest's `inputs`."""
    if isinstance(node, dict) and "sha256" in node:
        return [node]
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    return [origin for child in children for origin in _file_origins(child)]


# Keys of the data section that only training reads: changing them needs no new preprocess.
TRAINING_ONLY = ("sampling_alpha", "nbest_size")


def _made_by(data: dict) -> dict:
    """The part of a data config that decides what preprocess writes (weights only decide
    how training samples the corpora)."""
    subwords = {k: v for k, v in data.get("subwords", {}).items() if k not in TRAINING_ONLY}
    corpora = [{k: v for k, v in c.items() if k != "weight"} for c in data.get("corpora", [])]
    made = {k: v for k, v in data.items() if k != "weight"}
    return {**made, "subwords": subwords, "corpora": corpora}


def pipeline(
    config: Config, run: RunFolder, log: Callable[[str], None] = print, fresh: bool = False
) -> dict:
    with run.lock():  # the stages take it again inside
        stale = _stale(config, run)
        if stale and not fresh and (run.train_state.is_file() or run.last.is_file()):
            raise UserError(
                f"{run.root}: trained on what was preprocessed before, but {stale}; pass "
                "--fresh to preprocess and train again, or use another --run-dir"
            )
        if fresh or stale:
            manifest = preprocess(config, run, log)
        else:
            log(f"preprocess: {run.manifest} is up to date; skipped")
            manifest = run.read_manifest()
        train(config, run, log, fresh=fresh)
        test = manifest["splits"]["test"]
        hypotheses = run.translation("test", manifest["languages"]["tgt"])
        hypotheses.parent.mkdir(parents=True, exist_ok=True)
        source = str(run.root / test["src"])
        speed = translate_file(run.root, source, str(hypotheses), config.translate, None, log)
        count, rate, beam = speed["sentences"], speed["sentences_per_s"], config.search.beam_size
        log(f"translate: {count} test sentences at {rate:.1f} sentences/s (beam {beam})")
        result = score_files(hypotheses, run.root / test["tgt"], config.score)
        atomic_write_text(run.score, json.dumps(result, indent=2) + "\n")
        log("score: " + describe(result))
        artifacts = [
            ("manifest", run.manifest),
            ("tokenizer", run.root / manifest["tokenizer"]["src"]),
            ("data", run.data),
            ("best model", run.best),
            ("last model", run.last),
            ("training log", run.train_log),
            ("learning curve", run.learning_curve),
            ("translation", hypotheses),
            ("score", run.score),
        ]
        log("artifacts:\n" + "\n".join(f"  {name:<15} {path}" for name, path in artifacts))
        return result
