"""Split keys: every label gets its share of validation pictures within one, for every offered share."""

from __future__ import annotations

import random

import pytest

from dragonclf import split_keys


@pytest.mark.parametrize("offset", [0.0, 0.37, 0.91])
def test_every_offered_share_stays_within_one_picture_as_a_label_grows(offset):
    counts = [0] * split_keys.N_BUCKETS
    keys = []
    for n in range(1, 601):
        keys.append(split_keys.next_key(counts, offset))
        for s in split_keys.SHARES:
            assert abs(sum(k < s for k in keys) - n * s) <= 1.0, (n, s)
    assert all(0.0 <= k < 1.0 for k in keys) and len(set(keys)) == len(keys)
    assert split_keys.histogram(keys) == counts


def test_shares_between_the_offered_ones_are_spread_too():
    counts = [0] * split_keys.N_BUCKETS
    keys = [split_keys.next_key(counts, 0.5) for _ in range(400)]
    for s in (0.12, 0.33, 0.6, 0.8):
        assert abs(sum(k < s for k in keys) - 400 * s) <= 3, s


def test_a_label_with_keys_from_before_is_brought_back_into_balance():
    rnd = random.Random(0)
    old = [rnd.random() for _ in range(30)]  # random keys, as an old store gave
    counts = split_keys.histogram(old)
    keys = old + [split_keys.next_key(counts) for _ in range(60)]
    assert abs(sum(k < 0.2 for k in keys) - 90 * 0.2) <= 1.0
