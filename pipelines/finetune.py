"""Fine-tuning: training that starts from another run's checkpoint (`train.init_from`).

The new run folder is preprocessed with the checkpoint's SentencePiece model(s)
(`data.subwords.model`), so the vocabularies match; the model config must give the
checkpoint's shape (dropout may differ). The weights are the checkpoint's; the optimizer,
learning-rate schedule and data position start afresh, unless `train.init_optimizer` takes
them (but not the data position) from the run folder named. Once it has a training state of
its own, the new run resumes like any other.
"""

from __future__ import annotations

from pathlib import Path

from seq2seq.checkpoint import load_checkpoint
from seq2seq.config import to_dict
from seq2seq.errors import UserError

from .layout import RunFolder, resolve_checkpoint
from .records import flat
from .train_state import Checkpoints, TrainState


def fine_tune(trainer, name: str) -> TrainState:
    """Load `name`'s weights into the trainer's model (and with train.init_optimizer, its
    run's optimizer and schedule); the state training starts from."""
    path = resolve_checkpoint(name)
    source = load_checkpoint(path)
    mine, saved = flat(to_dict(trainer.config.model)), flat(to_dict(source.model.config))
    for key in mine:  # the model config must build the checkpoint's network; dropout may differ
        if "dropout" not in key and mine[key] != saved.get(key):
            raise UserError(
                f"config key 'model.{key}': {mine[key]!r} here but {saved.get(key)!r} in "
                f"{path}; fine-tuning keeps the model's shape"
            )
    theirs = (source.src_tokenizer, source.tgt_tokenizer)
    for side, their, ours in zip(("source", "target"), theirs, trainer.data.tokenizers):
        if their.proto != ours.proto:
            raise UserError(
                f"{path}: its {side} SentencePiece model is not the one of {trainer.folder.root}; "
                f"preprocess with --data.subwords.model={name} so that the vocabularies match"
            )
    trainer.model.load_state_dict(source.model.state_dict())
    trainer.log(f"train: fine-tuning from {path} (its step {source.info.get('step', '?')})")
    if not trainer.tc.init_optimizer:
        return TrainState()
    other = RunFolder(Path(name))
    if not other.train_state.is_file():
        raise UserError(
            f"config key 'train.init_optimizer': {name} is not a run folder with "
            f"{other.train_state.relative_to(other.root)}; name the run folder in train.init_from"
        )
    checkpoints = Checkpoints(trainer.config, other, trainer.data.tokenizers, other.read_manifest())
    state = checkpoints.restore(trainer.model, trainer.optimization)
    trainer.log(f"train: optimizer and schedule taken from {other.train_state} (step {state.step})")
    return TrainState(step=state.step)
