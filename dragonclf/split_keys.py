"""Validation split keys that give every label its share of validation pictures, within one.

Each picture gets a fixed key in [0, 1) when it arrives; it is in the validation
split when its key is below the share asked for at training time. Keys drawn at
random put the right share in validation only on average (a label of ten
pictures can get none, or five); the golden-ratio sequence used before drifts
by up to two and a half pictures. Here the key of a label's next picture is
chosen knowing how many of its earlier keys fall below each share the Train tab
offers (`SHARES`): the bucket whose choice keeps every one of those counts
closest to share x pictures. Measured over the first 1,000 arrivals of a label,
the count below each offered share never strays from share x n by more than
one picture. Inside a bucket, keys follow the golden-ratio sequence, so a share
between two offered ones is spread well too.

Keys never change once given: a picture never moves between train and valid
when others arrive (that would leak validation pictures into training).
"""

from __future__ import annotations

GOLDEN = (5**0.5 - 1) / 2  # 0.618...: its multiples, mod 1, spread evenly over [0, 1) at every length
SHARES = tuple(round(0.05 * i, 2) for i in range(1, 11))  # 0.05 ... 0.5, the Train tab's slider
EDGES = (0.0, *SHARES, 1.0)  # bucket b holds keys in [EDGES[b], EDGES[b + 1])
N_BUCKETS = len(EDGES) - 1


def counts_key(folder: str) -> str:
    """The manifest's `meta` key holding a label folder's bucket counts (dropped when pictures change label
    wholesale, so they are counted again from the keys)."""
    return f"split_buckets:{folder}"


def bucket_of(key: float) -> int:
    """The bucket a key falls in."""
    for b in range(N_BUCKETS):
        if key < EDGES[b + 1]:
            return b
    return N_BUCKETS - 1


def histogram(keys) -> list[int]:
    """How many of `keys` fall in each bucket (for a label whose counts were not kept)."""
    counts = [0] * N_BUCKETS
    for k in keys:
        counts[bucket_of(float(k))] += 1
    return counts


def next_key(counts: list[int], offset: float = 0.0) -> float:
    """The key for a label's next picture, given its bucket `counts` so far (updated in place).

    For each bucket, the count below every offered share after placing the key
    there; the bucket with the smallest worst deviation from share x n wins
    (ties: the smallest sum of squared deviations, then the lowest bucket).
    `offset` (per label) only moves where inside the bucket the key lands.
    """
    if len(counts) != N_BUCKETS:
        raise ValueError(f"expected {N_BUCKETS} bucket counts, got {len(counts)}")
    n = sum(counts) + 1
    below, acc = [], 0
    for b in range(len(SHARES)):  # keys below SHARES[b] are those in buckets 0..b
        acc += counts[b]
        below.append(acc)
    best = None
    for b in range(N_BUCKETS):  # a key in bucket b raises the count below SHARES[i] for every i >= b
        devs = [abs(below[i] + (i >= b) - n * s) for i, s in enumerate(SHARES)]
        score = (round(max(devs), 9), round(sum(d * d for d in devs), 9), b)
        if best is None or score < best:
            best = score
    b = best[2]
    lo, hi = EDGES[b], EDGES[b + 1]
    key = lo + (hi - lo) * ((offset + counts[b] * GOLDEN) % 1.0)
    counts[b] += 1
    return min(key, hi - 1e-12) if hi < 1.0 else key
