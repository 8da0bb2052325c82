"""The validation split: each label gets its share of pictures, to within one."""

from __future__ import annotations

from collections import defaultdict


def stratified_split(rows, share: float) -> set[int]:
    """`id()`s of the rows in the validation split: in each label, the round(n * share) lowest keys.

    A key below a fixed share is right only on average (a label of 28 could get 2 validation
    images at 20%, or 9); ranking within each label gives every label its share to within one
    picture, whatever was trashed or relabelled since. Rows sharing a key (near-duplicates) stay
    on one side: a tie at the cut goes to training.
    """
    by_label: dict[str, list] = defaultdict(list)
    for r in rows:
        by_label[str(r.label)].append(r)
    out: set[int] = set()
    for group in by_label.values():
        group.sort(key=lambda r: (r.split_key, str(getattr(r, "id", ""))))
        cut = round(len(group) * share)
        if cut <= 0:
            continue
        limit = group[cut].split_key if cut < len(group) else float("inf")
        out.update(id(r) for r in group if r.split_key < limit)
    return out
