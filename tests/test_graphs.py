"""The decoder step through CUDA-graph buffers (seq2seq.graphs): search gives what it gives
with the model itself. Without CUDA the graphs are not recorded, but every step goes through
the same static buffers, so what is checked here is their bookkeeping: inputs copied in,
source memory refreshed for each new batch, one buffer set per shape."""

from __future__ import annotations

import pytest
import torch

from seq2seq.batching import pad
from seq2seq.config import SearchConfig
from seq2seq.ensemble import Ensemble
from seq2seq.graphs import GraphedModel, rebuilt, tensors_of
from seq2seq.search import search

from .test_model import random_sentences
from .test_search import SOME, VOCAB, build


def results(model, sentences, config, attention=False, device="cpu"):
    src, src_lengths = pad(sentences, VOCAB.pad_id, suffix=VOCAB.eos_id)
    hypotheses = search(
        model, src.to(device), src_lengths.to(device), config, return_attention=attention
    )
    return [
        [(h.tokens, h.score, h.log_prob, None if h.attention is None else h.attention.tolist())]
        for hyps in hypotheses
        for h in hyps
    ]


@pytest.mark.parametrize("name", SOME)
@pytest.mark.parametrize("beam", [1, 3])
def test_search_through_the_buffers_is_unchanged(name, beam):
    model = build(name)
    graphed = GraphedModel(model, capture=False)
    config = SearchConfig(beam_size=beam, n_best=beam, length_penalty=1.0)
    # Two batches of the same shape, then a smaller one: the buffers of a shape are reused
    # with another batch's memory, and finished rows leaving the batch change the shape.
    batches = [random_sentences(8, seed=s) for s in (1, 2)] + [random_sentences(5, seed=3)]
    for sentences in batches:
        assert results(graphed, sentences, config, True) == results(model, sentences, config, True)
    assert len(graphed.graphs) > 1
    assert graphed.notes == []


def test_ensemble_and_a_full_cache():
    models = [build("gru-additive-concat", seed=s) for s in (0, 1)]
    ensemble = Ensemble(models).eval()
    graphed = GraphedModel(ensemble, capture=False, most=1)
    config = SearchConfig(beam_size=2, n_best=2)
    for seed in (4, 5):
        sentences = random_sentences(6, seed=seed)
        assert results(graphed, sentences, config) == results(ensemble, sentences, config)
    assert len(graphed.graphs) == 1


def test_tensors_and_rebuilt_are_inverse():
    model = build("lstm-dot-add-feed-last")  # an LSTM state is a (hidden, cell) tuple
    src, src_lengths = pad(random_sentences(3, seed=6), VOCAB.pad_id, suffix=VOCAB.eos_id)
    state, memory = model.encode(src, src_lengths)
    tree = (state, memory)
    tensors = tensors_of(tree)
    assert all(isinstance(t, torch.Tensor) for t in tensors)
    copy = rebuilt(tree, (t + 1 for t in tensors))
    assert type(copy[0].hidden) is tuple
    for old, new in zip(tensors, tensors_of(copy)):
        assert torch.equal(old + 1, new)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", SOME)
def test_recorded_graphs_give_the_eager_results(name):
    model = build(name).cuda()
    graphed = GraphedModel(model)
    config = SearchConfig(beam_size=3, n_best=3, length_penalty=1.0)
    for seed in (7, 8):
        sentences = random_sentences(16, seed=seed)
        with torch.inference_mode():
            ours = results(graphed, sentences, config, device="cuda")
            eager = results(model, sentences, config, device="cuda")
        assert [[h[0] for h in hyps] for hyps in ours] == [[h[0] for h in hyps] for hyps in eager]
    assert graphed.notes == []  # every shape was recorded
    assert all(graph.graph is not None for graph in graphed.graphs.values())
