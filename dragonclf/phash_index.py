"""Near-duplicate lookup that does not compare a new picture with every stored one.

Multi-index hashing (Norouzi, Punjani and Fleet, "Fast search in Hamming space with
multi-index hashing", CVPR 2012): the 64-bit perceptual hash is cut into `BANDS`
disjoint bands of 16 bits. If two hashes differ in at most `r` bits, then by the
pigeonhole principle at least one band differs in at most `r // BANDS` bits. So the
candidates are the rows whose band `k` is within `r // BANDS` bits of the query's
band `k`, for some `k`: a handful of exact lookups in an index per band (the store
keeps one SQLite expression index per band, `substr(phash, start, 4)`), then the
true distance is checked on those candidates only. With the default distance 6
that is 4 bands x 17 band values, whatever the size of the dataset.

Hashes are the 16 lowercase hex digits `imagehash.phash` writes; anything else
(another hash size) is not indexable and the caller falls back to comparing all.
"""

from __future__ import annotations

from itertools import combinations

HASH_HEX = 16  # 64-bit hashes
BANDS = 4
BAND_HEX = HASH_HEX // BANDS  # 4 hex digits = 16 bits per band
BAND_BITS = BAND_HEX * 4


def indexable(phash: str | None) -> bool:
    if not phash or len(phash) != HASH_HEX:
        return False
    try:
        int(phash, 16)
    except ValueError:
        return False
    return phash == phash.lower()


def band_sql(k: int, column: str = "phash") -> str:
    """The SQL expression of band `k` (the same text in the index and in the query, so SQLite uses the index)."""
    return f"substr({column}, {k * BAND_HEX + 1}, {BAND_HEX})"


def bands(phash: str) -> list[str]:
    return [phash[k * BAND_HEX:(k + 1) * BAND_HEX] for k in range(BANDS)]


def band_radius(max_distance: int) -> int:
    """How far each band may be from the query's for a match within `max_distance` to be found."""
    return max(0, max_distance) // BANDS


def neighbours(band: str, radius: int) -> list[str]:
    """Every band value within `radius` bits of `band` (itself included), as hex."""
    value = int(band, 16)
    out = [band]
    for r in range(1, radius + 1):
        for bits in combinations(range(BAND_BITS), r):
            flipped = value
            for b in bits:
                flipped ^= 1 << b
            out.append(f"{flipped:0{BAND_HEX}x}")
    return out


def distance(a: str, b: str) -> int:
    """Hamming distance between two hex perceptual hashes."""
    return (int(a, 16) ^ int(b, 16)).bit_count()
