"""EpochSampler: every index once per epoch, deterministic from the seed, resumable from its state."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segr1.data.sampler import EpochSampler, epoch_permutation


def draw(sampler: EpochSampler, batch_sizes: list[int]) -> list[int]:
    return [index for k in batch_sizes for index in sampler.next_batch(k)]


def test_each_epoch_is_a_permutation_even_when_batches_straddle_epochs():
    sampler = EpochSampler(n=10, seed=3)
    drawn = draw(sampler, [4] * 10)  # 40 indices = exactly 4 epochs, batches cross epoch ends
    for epoch in range(4):
        chunk = drawn[epoch * 10:(epoch + 1) * 10]
        assert sorted(chunk) == list(range(10))
        assert chunk == epoch_permutation(10, 3, epoch).tolist()
    assert (sampler.epoch, sampler.position) == (4, 0)
    assert drawn[:10] != drawn[10:20]  # epochs are reshuffled


def test_batch_larger_than_the_dataset_spans_several_epochs():
    sampler = EpochSampler(n=3, seed=0)
    batch = sampler.next_batch(7)
    assert sorted(batch[:3]) == sorted(batch[3:6]) == [0, 1, 2]
    assert (sampler.epoch, sampler.position) == (2, 1)


def test_same_seed_same_order_other_seed_other_order():
    assert draw(EpochSampler(50, 1), [8] * 9) == draw(EpochSampler(50, 1), [8] * 9)
    assert draw(EpochSampler(50, 1), [50]) != draw(EpochSampler(50, 2), [50])


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 30), seed=st.integers(0, 2**31), before=st.lists(st.integers(1, 12), max_size=6),
       after=st.lists(st.integers(1, 12), min_size=1, max_size=6))
def test_resume_from_state_continues_exactly(n, seed, before, after):
    reference = EpochSampler(n, seed)
    draw(reference, before)
    state = json.loads(json.dumps(reference.state_dict()))  # checkpoints store it as JSON
    resumed = EpochSampler(n, seed=999)  # the saved seed wins
    resumed.load_state_dict(state)
    assert draw(resumed, after) == draw(reference, after)


def test_state_checks():
    sampler = EpochSampler(5, 0)
    with pytest.raises(ValueError, match="for 6 samples, this dataset has 5"):
        sampler.load_state_dict({"n": 6, "seed": 0, "epoch": 0, "position": 0})
    with pytest.raises(KeyError, match="position"):
        sampler.load_state_dict({"n": 5, "seed": 0, "epoch": 0})
    with pytest.raises(ValueError, match="position 5 out of range"):
        sampler.load_state_dict({"n": 5, "seed": 0, "epoch": 0, "position": 5})
    with pytest.raises(ValueError, match="batch size"):
        sampler.next_batch(0)
    with pytest.raises(ValueError, match="n >= 1"):
        EpochSampler(0, 0)
