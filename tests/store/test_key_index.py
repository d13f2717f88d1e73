"""The eventID key index that deduplication relies on, against a plain Python set."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from trailguard.store.events import KeyIndex, StagedIds, first_of_sorted, id_keys, sort_keys


def _keys(rng: np.random.Generator, n: int, firsts: int) -> np.ndarray:
    """Random keys whose first halves come from only ``firsts`` values: many share a first half (rare in
    real ids, and the path binary search alone would get wrong)."""
    return np.stack(
        [rng.integers(0, firsts, n, dtype=np.uint64), rng.integers(0, 2**63, n, dtype=np.uint64)], axis=1
    )


def test_contains_and_add_agree_with_a_set_even_when_first_halves_collide() -> None:
    rng = np.random.default_rng(7)
    index, stored = KeyIndex(), set()
    for _ in range(40):
        batch = _keys(rng, 300, firsts=50)
        if stored:  # some keys already stored come back
            again = np.array(sorted(stored), dtype=np.uint64)[rng.integers(0, len(stored), 60)]
            batch = np.concatenate([batch, again])
        keys, _ = sort_keys(batch)
        expected = np.array([(int(a), int(b)) in stored for a, b in keys])
        assert (index.contains(keys) == expected).all()
        fresh = first_of_sorted(keys) & ~expected
        index.add(keys[fresh])
        stored.update((int(a), int(b)) for a, b in keys[fresh])
        assert len(index) == len(stored)
        assert sorted(map(tuple, index.keys().tolist())) == sorted(stored)


def test_first_of_sorted_keeps_the_first_row_of_each_key() -> None:
    keys = np.array([[5, 1], [3, 9], [5, 1], [3, 9], [3, 8]], dtype=np.uint64)
    ordered, rows = sort_keys(keys)
    kept_rows = sorted(rows[first_of_sorted(ordered)].tolist())
    assert kept_rows == [0, 1, 4]


def test_staged_ids_are_sorted_with_their_rows() -> None:
    ids = ["b1c2d3e4-0000-4000-8000-000000000002", "not-a-uuid", "b1c2d3e4-0000-4000-8000-000000000001"]
    table = pa.table({"eventID": ids, "source_key": ["k1", "k2", "k1"]})
    staged = StagedIds.of(table)
    raw = id_keys(pa.array(ids))
    assert (staged.keys == raw[staged.rows]).all()
    assert staged.keys[:, 0].tolist() == sorted(staged.keys[:, 0].tolist())
    assert [staged.sources[i] for i in staged.source_index] == ["k1", "k2", "k1"]
