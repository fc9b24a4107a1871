"""Training pieces: learning-rate schedules, the loss, word dropout, state storage, budgets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from pipelines.layout import RunFolder
from pipelines.train import train
from seq2seq.config import TrainConfig, load_config
from seq2seq.training import (
    LearningRate,
    flatten_state,
    label_smoothed_nll,
    unflatten_state,
    word_dropout,
)

from .conftest import copy_run, write_config

ROOT = Path(__file__).resolve().parent.parent


def test_warmup_is_linear_then_inverse_square_root():
    lr = LearningRate(TrainConfig(lr=1.0, warmup_steps=100, schedule="inverse_sqrt"))
    assert lr(0) == pytest.approx(0.01)
    assert lr(49) == pytest.approx(0.5)
    assert lr(100) == pytest.approx(1.0)
    assert lr(400) == pytest.approx(0.5)


def test_cosine_decays_to_the_floor_at_max_steps():
    lr = LearningRate(
        TrainConfig(lr=1.0, min_lr=0.1, schedule="cosine", max_steps=1000, warmup_steps=0)
    )
    assert lr(0) == pytest.approx(1.0)
    assert lr(500) == pytest.approx(0.55)
    assert lr(1000) == pytest.approx(0.1)
    assert lr(5000) == pytest.approx(0.1)


def test_plateau_cuts_after_patience_and_never_below_the_floor():
    lr = LearningRate(
        TrainConfig(lr=1.0, min_lr=0.3, schedule="plateau", plateau_factor=0.5, plateau_patience=2)
    )
    for improved, expected in [
        (True, 1.0),
        (False, 1.0),
        (False, 0.5),
        (True, 0.5),
        (False, 0.5),
        (False, 0.3),
    ]:
        lr.validated(improved)
        assert lr(10) == pytest.approx(expected)
    copy = LearningRate(lr.config)
    copy.load_state_dict(lr.state_dict())
    assert copy(10) == lr(10)


def test_label_smoothing_matches_its_definition():
    torch.manual_seed(0)
    log_probs = torch.randn(2, 3, 7).log_softmax(-1)
    target = torch.tensor([[1, 2, 0], [3, 0, 0]])  # 0 is padding here
    loss, nll = label_smoothed_nll(log_probs, target, pad_id=0, epsilon=0.2)
    plain, plain_nll = label_smoothed_nll(log_probs, target, pad_id=0, epsilon=0.0)
    assert plain == plain_nll == nll
    mask = target != 0
    expected_nll = -log_probs.gather(-1, target[..., None]).squeeze(-1)[mask].sum()
    smooth = -log_probs.mean(-1)[mask].sum()
    assert nll == pytest.approx(float(expected_nll))
    assert loss == pytest.approx(float(0.8 * expected_nll + 0.2 * smooth))


@pytest.mark.parametrize("epsilon", [0.0, 0.2])
def test_the_loss_gradient_is_the_gradient_of_its_definition(epsilon):
    """The loss writes its own gradient (one pass instead of autograd's three): the same as
    autograd's through the plain formula, for both outputs, padding rows included."""
    torch.manual_seed(1)
    log_probs = torch.randn(3, 4, 9, dtype=torch.double).log_softmax(-1).requires_grad_()
    target = torch.randint(1, 9, (3, 4))
    target[0, 2:] = target[2, 1:] = 0  # padding
    mask = target != 0
    nll = -log_probs.gather(-1, target[..., None]).squeeze(-1).masked_fill(~mask, 0.0)
    smooth = -log_probs.mean(-1).masked_fill(~mask, 0.0)
    expected = (1 - epsilon) * nll.sum() + epsilon * smooth.sum(), nll.sum()
    loss, plain = label_smoothed_nll(log_probs, target, pad_id=0, epsilon=epsilon)
    for weights in ([1.0, 0.0], [0.7, 0.3], [0.0, 2.0]):
        ours, theirs = (
            torch.autograd.grad(weights[0] * a + weights[1] * b, log_probs, retain_graph=True)[0]
            for a, b in ((loss, plain), expected)
        )
        torch.testing.assert_close(ours, theirs)
        assert not ours[0, 2:].any() and not ours[2, 1:].any()  # nothing reaches padding


def test_word_dropout_spares_special_tokens():
    tokens = torch.tensor([[2, 5, 6, 7, 8, 3, 1, 1]] * 200)
    dropped = word_dropout(
        tokens, 0.5, unk_id=0, keep_ids=(1, 2, 3), generator=torch.Generator().manual_seed(0)
    )
    assert (dropped[:, [0, 5, 6, 7]] == tokens[:, [0, 5, 6, 7]]).all()
    share = (dropped[:, 1:5] == 0).float().mean()
    assert 0.4 < share < 0.6
    assert torch.equal(word_dropout(tokens, 0.0, 0, (1, 2, 3)), tokens)


def test_optimizer_state_survives_flattening():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    tensors = {}
    skeleton = json.loads(json.dumps(flatten_state(optimizer.state_dict(), tensors)))
    restored = unflatten_state(skeleton, tensors)
    other = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=0.1)
    other.load_state_dict(restored)
    for a, b in zip(optimizer.state_dict()["state"].values(), other.state_dict()["state"].values()):
        for key in a:
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key]))


@pytest.mark.parametrize(
    "overrides",
    [
        ["--train.accumulate=2", "--train.max_steps=3"],
        [
            "--train.precision=bf16",
            "--train.max_steps=3",
            "--train.optimizer=adamw",
            "--train.schedule=cosine",
            "--train.warmup_steps=1",
            "--train.word_dropout=0.1",
        ],
        [
            "--train.batch_type=sentences",
            "--train.batch_size=16",
            "--train.max_epochs=1",
            "--train.max_steps=0",
            "--train.validate_every=100",
        ],
    ],
)
def test_training_options_run_and_account_for_batches(
    tmp_path, tiny_corpus, trained_run, overrides
):
    run = RunFolder(copy_run(trained_run, tmp_path / "run"))
    config_path = write_config(tmp_path, tiny_corpus)
    config = load_config(config_path, overrides)
    result = train(config, run, log=lambda _: None, fresh=True)
    records = [json.loads(line) for line in run.train_log.read_text().splitlines()]
    assert all(math.isfinite(r["train_loss"]) for r in records if "train_loss" in r)
    if "--train.max_epochs=1" in overrides:
        assert result["stop"] == "max_epochs"
        assert result["step"] == math.ceil(300 / 16)
    else:
        assert result["step"] == 3


def test_a_time_budget_stops_training(tmp_path, tiny_corpus, trained_run):
    run = RunFolder(copy_run(trained_run, tmp_path / "run"))
    config_path = write_config(tmp_path, tiny_corpus)
    config = load_config(
        config_path, ["--train.max_steps=0", "--train.max_time=1.5", "--train.validate_every=1000"]
    )
    result = train(config, run, log=lambda _: None, fresh=True)
    assert result["stop"] == "max_time"
    assert result["elapsed"] < 10


def test_a_non_finite_loss_is_skipped_and_a_persistent_one_stops_the_run(
    tmp_path, tiny_corpus, trained_run, monkeypatch
):
    import pipelines.train as train_module
    from seq2seq.errors import UserError

    real_loss = train_module.label_smoothed_nll
    calls = []

    def sometimes_nan(log_probs, target, pad_id, epsilon):
        calls.append(1)
        loss, nll = real_loss(log_probs, target, pad_id, epsilon)
        if log_probs.requires_grad and (len(calls) == 3 or len(calls) > 20):
            return loss * float("nan"), nll
        return loss, nll

    monkeypatch.setattr(train_module, "label_smoothed_nll", sometimes_nan)
    run = RunFolder(copy_run(trained_run, tmp_path / "run", untrained=True))
    config = load_config(
        write_config(tmp_path, tiny_corpus), ["--train.max_steps=5", "--train.validate_every=5"]
    )
    result = train(config, run, log=lambda _: None)
    assert result["skipped"] == 1 and result["step"] == 5
    good = run.last.read_bytes()
    config = load_config(
        write_config(tmp_path, tiny_corpus),
        ["--train.max_steps=100", "--train.validate_every=1000"],
    )
    with pytest.raises(UserError, match="20 steps in a row had a non-finite loss"):
        train(config, run, log=lambda _: None)
    assert run.last.read_bytes() == good  # the last good checkpoint is intact


SAMPLING = ["--data.subwords.sampling_alpha=0.3", "--data.subwords.nbest_size=-1"]


def test_sampled_segmentations_spell_the_same_text_cut_differently(
    tmp_path, tiny_corpus, trained_run
):
    from pipelines.train import Trainer

    run = RunFolder(copy_run(trained_run, tmp_path / "run", untrained=True))
    config = load_config(write_config(tmp_path, tiny_corpus), SAMPLING)
    data = Trainer(config, run, log=lambda _: None).data
    batches = data.epoch_batches(0)[:3]
    first, again = data.step(batches), data.step(batches)
    ids = [[b.tgt_out.tolist() for b, _ in step.parts] for step in (first, again)]
    assert ids[0] != ids[1]  # sampled afresh each time a pair is batched
    best = [data.tgt[i].tolist() for i in batches[0]]
    decode = data.tokenizers[1].decode
    sampled = [
        [t for t in row if t not in (data.vocab.pad_id, data.vocab.eos_id)]
        for row in first.parts[0][0].tgt_out.tolist()
    ]
    assert sorted(decode(sampled)) == sorted(decode(best))  # the same sentences ...
    assert sorted(sampled) != sorted(best)  # ... cut differently
    assert first.tgt_tokens == sum(b.num_tgt_tokens for b, _ in first.parts)
