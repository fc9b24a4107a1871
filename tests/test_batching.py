"""Token storage, padding and batch plans."""

from __future__ import annotations

import pytest
import torch

from seq2seq.batching import (
    TokenSequences,
    TokenSequenceWriter,
    group_batches,
    make_batch,
    pad,
    training_batches,
)
from seq2seq.vocab import Vocab

VOCAB = Vocab(src_size=50, tgt_size=50, pad_id=1, unk_id=0, bos_id=2, eos_id=3)


def test_token_files_round_trip(tmp_path):
    sequences = [[5, 6, 7], [], [9], list(range(10, 40))]
    with TokenSequenceWriter(tmp_path / "x") as writer:
        writer.write(sequences[:2])
        writer.write(sequences[2:])
    loaded = TokenSequences.load(tmp_path / "x")
    assert len(loaded) == 4
    assert [loaded[i].tolist() for i in range(4)] == sequences
    assert loaded.lengths.tolist() == [3, 0, 1, 30]


def test_pad_adds_markers_and_reports_lengths():
    tokens, lengths = pad([[5, 6], [7]], pad_id=1, prefix=2, suffix=3)
    assert tokens.tolist() == [[2, 5, 6, 3], [2, 7, 3, 1]]
    assert lengths.tolist() == [4, 3]


def test_make_batch_shifts_target_by_one():
    src = TokenSequences.from_lists([[5, 6], [7, 8, 9]])
    tgt = TokenSequences.from_lists([[10], [11, 12]])
    batch = make_batch(src, tgt, [0, 1], VOCAB)  # rows: the longest target first
    assert batch.tgt_in.tolist() == [[2, 11, 12], [2, 10, 1]]
    assert batch.tgt_out.tolist() == [[11, 12, 3], [10, 3, 1]]
    assert batch.src.tolist() == [[7, 8, 9, 3], [5, 6, 3, 1]]
    assert batch.num_tgt_tokens == 5
    assert batch.positions.running == [2, 2, 1]
    assert batch.tgt_real.tolist() == [11, 10, 12, 3, 3]  # time-major


@pytest.mark.parametrize("bucket", [True, False], ids=["bucketed", "random"])
@pytest.mark.parametrize("batch_type, size", [("tokens", 64), ("sentences", 5)])
def test_epoch_uses_every_pair_once_within_budget(batch_type, size, bucket):
    generator = torch.Generator().manual_seed(0)
    src_lengths = torch.randint(1, 20, (200,), generator=generator)
    tgt_lengths = torch.randint(1, 20, (200,), generator=generator)
    batches = training_batches(src_lengths, tgt_lengths, batch_type, size, seed=3, bucket=bucket)
    assert sorted(i for b in batches for i in b) == list(range(200))
    for b in batches:
        longest = max(max(int(src_lengths[i]), int(tgt_lengths[i])) + 1 for i in b)
        cost = len(b) * longest if batch_type == "tokens" else len(b)
        assert cost <= size or len(b) == 1


def test_epochs_differ_but_repeat_with_the_seed():
    lengths = torch.randint(1, 20, (100,), generator=torch.Generator().manual_seed(1))
    first = training_batches(lengths, lengths, "tokens", 60, seed=1)
    assert first == training_batches(lengths, lengths, "tokens", 60, seed=1)
    assert first != training_batches(lengths, lengths, "tokens", 60, seed=2)


def test_an_item_longer_than_the_budget_gets_its_own_batch():
    assert group_batches([0, 1, 2], [3, 50, 3], "tokens", 10) == [[0], [1], [2]]


def test_bucketing_saves_padding_that_random_batches_pay():
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 40, (2000,), generator=generator)

    def padding(bucket: bool) -> int:
        batches = training_batches(lengths, lengths, "sentences", 32, seed=1, bucket=bucket)
        return sum(len(b) * int(lengths[b].max()) - int(lengths[b].sum()) for b in batches)

    assert padding(True) * 10 < padding(False)
