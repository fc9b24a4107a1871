"""Invariants of the model on tiny random instances, over every configuration branch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from seq2seq.batching import pad
from seq2seq.checkpoint import load_checkpoint, save_checkpoint
from seq2seq.config import AttentionConfig, DecoderConfig, EncoderConfig, ModelConfig, SearchConfig
from seq2seq.model import Seq2Seq, build_attention
from seq2seq.search import greedy_search
from seq2seq.vocab import Vocab

from .conftest import ROOT

VOCAB = Vocab(src_size=13, tgt_size=13, pad_id=1, unk_id=0, bos_id=2, eos_id=3)


def model_config(
    cell="gru",
    scoring="additive",
    combine="concat",
    feed=False,
    bi=True,
    init="bridge",
    enc_layers=1,
    dec_layers=1,
    dec_cell=None,
    tie=False,
):
    enc_hidden = 8
    dec_hidden = enc_hidden * (2 if bi else 1)
    return ModelConfig(
        embedding_size=dec_hidden if tie else 12,
        embedding_dropout=0.1,
        output_dropout=0.1,
        tie_embeddings=tie,
        tie_output=tie,
        encoder=EncoderConfig(
            cell=cell, hidden_size=enc_hidden, num_layers=enc_layers, bidirectional=bi, dropout=0.1
        ),
        attention=AttentionConfig(scoring=scoring, hidden_size=12, heads=3),
        decoder=DecoderConfig(
            cell=dec_cell or cell,
            hidden_size=dec_hidden,
            num_layers=dec_layers,
            dropout=0.1,
            input_feeding=feed,
            init=init,
            combine=combine,
        ),
    )


# Every value of every option appears at least once.
CONFIGS = {
    "gru-additive-concat": model_config(),
    "lstm-dot-add-feed-last": model_config("lstm", "dot", "add", True, init="last"),
    "rnn-general-feed-uni-zero": model_config("rnn", "general", feed=True, bi=False, init="zero"),
    "gru-scaled_dot-add-2layers": model_config(
        "gru", "scaled_dot", "add", enc_layers=2, dec_layers=2
    ),
    "lstm-multihead-feed": model_config("lstm", "multihead", feed=True, dec_layers=2),
    "rnn-none": model_config("rnn", "none"),
    "gru-lstm-additive-tied": model_config("gru", "additive", dec_cell="lstm", tie=True),
    "lstm-gru-multihead-add-zero": model_config(
        "lstm", "multihead", "add", init="zero", dec_cell="gru"
    ),
    "lstm-last-2layers": model_config("lstm", "general", init="last", enc_layers=2, dec_layers=2),
}
ALL = pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())


def build(config: ModelConfig, seed: int = 0) -> Seq2Seq:
    torch.manual_seed(seed)
    return Seq2Seq(config, VOCAB).eval()


def random_sentences(n: int, seed: int, low=1, high=9) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high, (n,), generator=g)
    return [torch.randint(4, VOCAB.src_size, (int(k),), generator=g).tolist() for k in lengths]


@pytest.mark.parametrize("scoring", ["dot", "general", "additive", "scaled_dot", "multihead"])
def test_attention_weights_sum_to_one_and_are_zero_on_padding(scoring):
    torch.manual_seed(0)
    attention = build_attention(AttentionConfig(scoring=scoring, hidden_size=12, heads=3), 16, 16)
    states = torch.randn(4, 7, 16)
    mask = torch.arange(7)[None, :] < torch.tensor([7, 3, 1, 5])[:, None]
    keys, values = attention.prepare(states)
    context, weights = attention(torch.randn(4, 5, 16), keys, values, mask)
    assert weights.shape == (4, 5, 7)
    assert torch.allclose(weights.sum(-1), torch.ones(4, 5), atol=1e-6)
    assert (weights.masked_select(~mask[:, None, :]) == 0).all()
    assert context.shape == (4, 5, attention.context_size)


@ALL
def test_padding_does_not_change_any_real_position(config):
    model = build(config)
    sentences = random_sentences(5, seed=1)
    targets = random_sentences(5, seed=2)
    src, src_lengths = pad(sentences, VOCAB.pad_id, suffix=VOCAB.eos_id)
    tgt_in, tgt_lengths = pad(targets, VOCAB.pad_id, prefix=VOCAB.bos_id)
    with torch.no_grad():
        states, _ = model.encoder(src, src_lengths)
        log_probs = model(src, src_lengths, tgt_in)
        for i in range(5):
            s, t = int(src_lengths[i]), int(tgt_lengths[i])
            alone_states, _ = model.encoder(src[i : i + 1, :s], src_lengths[i : i + 1])
            alone = model(src[i : i + 1, :s], src_lengths[i : i + 1], tgt_in[i : i + 1, :t])
            assert torch.allclose(states[i, :s], alone_states[0], atol=1e-5)
            assert torch.allclose(log_probs[i, :t], alone[0], atol=1e-5)


@ALL
def test_gradients_reach_every_parameter(config):
    model = build(config).train()
    src, src_lengths = pad(random_sentences(4, seed=3), VOCAB.pad_id, suffix=VOCAB.eos_id)
    tgt_in, _ = pad(random_sentences(4, seed=4), VOCAB.pad_id, prefix=VOCAB.bos_id)
    model(src, src_lengths, tgt_in).sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


@ALL
def test_tiny_model_learns_to_reverse(config):
    """Reversal needs the whole source in order: a model that cannot use it fails."""
    model = build(config, seed=1).train()
    torch.manual_seed(1)
    sentences = random_sentences(24, seed=5, low=2, high=6)
    src, src_lengths = pad(sentences, VOCAB.pad_id, suffix=VOCAB.eos_id)
    reversed_ = [list(reversed(s)) for s in sentences]
    tgt_in, _ = pad(reversed_, VOCAB.pad_id, prefix=VOCAB.bos_id)
    tgt_out, _ = pad(reversed_, VOCAB.pad_id, suffix=VOCAB.eos_id)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(800):
        log_probs = model(src, src_lengths, tgt_in)
        loss = torch.nn.functional.nll_loss(
            log_probs.transpose(1, 2), tgt_out, ignore_index=VOCAB.pad_id
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.02:
            break
    model.eval()
    hypotheses = greedy_search(model, src, src_lengths, SearchConfig(beam_size=1))
    correct = sum(h[0].tokens == r for h, r in zip(hypotheses, reversed_))
    assert correct >= 22, f"{correct}/24 reversed correctly, loss {loss.item():.3f}"


def _tokenizer():
    from seq2seq.config import SubwordConfig
    from seq2seq.tokenizer import Tokenizer

    words = ["ein", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht"]
    text = [" ".join(words[i:] + words[:i]) for i in range(8)] * 4
    return Tokenizer.train(text, SubwordConfig(vocab_size=30, model_type="bpe"))


@pytest.mark.parametrize(
    "name", ["lstm-dot-add-feed-last", "gru-lstm-additive-tied", "lstm-multihead-feed"]
)
def test_checkpoint_gives_identical_log_probs_in_a_new_process(tmp_path, name):
    tokenizer = _tokenizer()
    vocab = Vocab(
        tokenizer.vocab_size,
        tokenizer.vocab_size,
        tokenizer.pad_id,
        tokenizer.unk_id,
        tokenizer.bos_id,
        tokenizer.eos_id,
    )
    torch.manual_seed(0)
    model = Seq2Seq(CONFIGS[name], vocab).eval()
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, model, tokenizer, tokenizer, SearchConfig(), {"step": 7})
    src = torch.tensor([[5, 6, 7, 3], [8, 9, 3, 1]])
    tgt_in = torch.tensor([[2, 10, 11], [2, 12, 1]])
    with torch.no_grad():
        expected = model(src, torch.tensor([4, 3]), tgt_in)
    script = (
        "import json, sys, torch\n"
        "from seq2seq.checkpoint import load_checkpoint\n"
        "c = load_checkpoint(sys.argv[1])\n"
        "with torch.no_grad():\n"
        f"    lp = c.model(torch.tensor({src.tolist()}), torch.tensor([4, 3]), "
        f"torch.tensor({tgt_in.tolist()}))\n"
        "print(json.dumps({'lp': lp.tolist(), 'step': c.info['step']}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    result = json.loads(out.stdout)
    assert result["step"] == 7
    assert torch.equal(torch.tensor(result["lp"]), expected)
    reloaded = load_checkpoint(path)
    assert reloaded.src_tokenizer.proto == tokenizer.proto
    assert reloaded.model.config == model.config


def test_the_same_checkpoint_is_the_same_bytes_in_every_process(tmp_path):
    """safetensors orders its header by a hash seeded per process; ours is sorted."""
    script = (
        "import sys, torch\n"
        "from seq2seq.checkpoint import load_checkpoint, save_checkpoint\n"
        "from seq2seq.config import SearchConfig\n"
        "from seq2seq.model import Seq2Seq\n"
        "from seq2seq.vocab import Vocab\n"
        "from tests.test_model import CONFIGS, _tokenizer\n"
        "t = _tokenizer()\n"
        "torch.manual_seed(0)\n"
        "vocab = Vocab(t.vocab_size, t.vocab_size, t.pad_id, t.unk_id, t.bos_id, t.eos_id)\n"
        "model = Seq2Seq(CONFIGS['lstm-multihead-feed'], vocab)\n"
        "save_checkpoint(sys.argv[1], model, t, t, SearchConfig(), {'step': 7, 'a': 1, 'z': 2})\n"
        "load_checkpoint(sys.argv[1])\n"
    )
    paths = [tmp_path / f"{n}.safetensors" for n in range(3)]
    for path in paths:
        subprocess.run([sys.executable, "-c", script, str(path)], cwd=ROOT, check=True)
    assert paths[0].read_bytes() == paths[1].read_bytes() == paths[2].read_bytes()


def test_a_checkpoint_from_another_version_is_a_clear_error(tmp_path):
    from safetensors.torch import save_file

    from seq2seq.errors import UserError

    path = tmp_path / "future.safetensors"
    save_file(
        {"x": torch.zeros(1)}, str(path), metadata={"format": "seq2seq-checkpoint", "version": "99"}
    )
    with pytest.raises(UserError, match="checkpoint version 99 is not supported"):
        load_checkpoint(path)
    save_file({"x": torch.zeros(1)}, str(path), metadata={"format": "something-else"})
    with pytest.raises(UserError, match="not a seq2seq checkpoint"):
        load_checkpoint(path)


@ALL
def test_training_on_real_positions_only_gives_the_padded_result(config):
    """Rows sorted longest first, the output layer (and, with input feeding, the decoder)
    skips the padding: the same log-probabilities and gradients as the padded computation."""
    from seq2seq.batching import TargetPositions

    model = build(config).eval()
    src, src_lengths = pad(random_sentences(6, seed=5), VOCAB.pad_id, suffix=VOCAB.eos_id)
    generator = torch.Generator().manual_seed(6)
    lengths = [7, 7, 5, 5, 5, 2]  # rows leave in runs, and some stay together
    targets = [
        torch.randint(4, VOCAB.tgt_size, (n,), generator=generator).tolist() for n in lengths
    ]
    tgt_in, tgt_lengths = pad(targets, VOCAB.pad_id, prefix=VOCAB.bos_id)
    positions = TargetPositions.of(tgt_lengths)
    dense = model(src, src_lengths, tgt_in)  # (B, T, V)
    real = model(src, src_lengths, tgt_in, positions)  # (N, V)
    expected = dense.reshape(-1, dense.size(-1))[positions.flat]
    assert real.shape == (int(tgt_lengths.sum()), VOCAB.tgt_size)
    assert torch.allclose(real, expected, atol=1e-5)
    grads = []
    for log_probs in (expected, real):
        model.zero_grad()
        log_probs[:, 4].sum().backward(retain_graph=True)
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize(
    "lengths", [[9, 1, 1, 2, 1, 3], [12, 11, 3, 2, 2, 2, 1], [9, 1, 1, 1, 1], list(range(1, 30))]
)
def test_length_spans_cover_every_real_position_and_no_more_rows(lengths):
    from seq2seq.cpu_paths import length_spans

    spans = length_spans(lengths, most=4)
    assert spans is not None
    assert sum(steps for steps, _ in spans) == max(lengths)
    assert all(steps > 0 for steps, _ in spans) and len(spans) <= 4
    start = 0
    for steps, rows in spans:
        assert rows == sum(1 for n in lengths if n > start)  # every row still going, only those
        start += steps
    assert [rows for _, rows in spans] == sorted((rows for _, rows in spans), reverse=True)


def test_length_spans_leave_batches_of_similar_length_alone():
    from seq2seq.cpu_paths import length_spans

    assert length_spans([7, 7, 7, 6, 6]) is None
    assert length_spans([9, 1, 1, 1]) is not None


@pytest.mark.parametrize("time_major", [False, True])
def test_gather_time_is_a_gather_in_either_layout(time_major):
    """The encoder picks positions (reversing each sentence, its last state) by whole rows:
    the values and gradients of a gather along time, from a batch-major tensor (embeddings)
    or a time-major one seen batch-major (RNN outputs)."""
    from seq2seq.model import _gather_time

    torch.manual_seed(3)
    x = torch.randn(4, 6, 5)
    if time_major:
        x = x.transpose(0, 1).contiguous().transpose(0, 1)
    x.requires_grad_()
    index = torch.randint(0, 6, (4, 3))
    picked = _gather_time(x, index)
    expected = x.gather(1, index[:, :, None].expand(-1, -1, 5))
    assert torch.equal(picked, expected)
    upstream = torch.randn(4, 3, 5)
    grad = torch.autograd.grad(picked, x, upstream)[0]
    assert torch.equal(grad, torch.autograd.grad(expected, x, upstream)[0])


def test_dropout_keeps_one_minus_p_scaled_and_is_the_identity_in_eval(monkeypatch):
    """The CPU mask from uniform numbers (used where `bernoulli_` is serial, forced here):
    about 1 - p of the elements kept, scaled by 1 / (1 - p), the gradient through the same
    mask; nothing changes outside training."""
    from seq2seq import cpu_paths
    from seq2seq.cpu_paths import Dropout

    monkeypatch.setattr(cpu_paths, "serial_bernoulli", lambda: True)
    dropout = Dropout(0.3)
    x = torch.full((200, 500), 2.0, requires_grad=True)
    y = dropout(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.01
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 2.0 / 0.7))
    y.sum().backward()
    assert torch.equal(x.grad != 0, kept)
    assert torch.equal(dropout.eval()(x), x) and torch.equal(Dropout(0.0)(x), x)


@ALL
def test_encoder_spans_give_the_padded_result(config, monkeypatch):
    """On the CPU a batch of mixed lengths runs in spans of rows still going (unsorted rows,
    a column of padding past the longest row): the same states, final states and gradients
    as one RNN call over the whole padded batch."""
    from seq2seq import cpu_paths

    model = build(config).eval()
    generator = torch.Generator().manual_seed(7)
    lengths = [2, 9, 1, 4, 1, 1, 7, 3, 5, 1, 6, 8, 2]  # more lengths than spans: some rows end
    # inside a span, so its padding runs there and must not reach the states or final states
    sentences = [
        torch.randint(4, VOCAB.src_size, (n,), generator=generator).tolist() for n in lengths
    ]
    src, src_lengths = pad(sentences, VOCAB.pad_id, suffix=VOCAB.eos_id)
    src = torch.cat([src, torch.full((len(lengths), 1), VOCAB.pad_id)], dim=1)  # one more column
    assert cpu_paths.length_spans(src_lengths.tolist()) is not None
    results = []
    for spans in (True, False):
        if not spans:
            monkeypatch.setattr(cpu_paths, "length_spans", lambda lengths: None)
        model.zero_grad()
        states, finals = model.encoder(src, src_lengths)
        (states.sin().sum() + finals.cos().sum()).backward()
        grads = [p.grad.clone() for p in model.encoder.parameters() if p.grad is not None]
        results.append((states.detach(), finals.detach(), grads))
    (states, finals, grads), (states0, finals0, grads0) = results
    assert torch.allclose(states, states0, atol=1e-6) and torch.allclose(finals, finals0, atol=1e-6)
    assert len(grads) == len(grads0)
    for a, b in zip(grads, grads0):
        assert torch.allclose(a, b, atol=1e-5)
