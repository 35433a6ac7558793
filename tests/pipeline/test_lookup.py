"""StringIndex: exact lookups, misses, nulls, and hash collisions resolved by the key itself."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.lookup import StringIndex


def _expected(keys: list[str], values: list[int], column: list[str | None], missing: int
              ) -> list[int]:
    table = dict(zip(keys, values, strict=True))
    return [table.get(v, missing) if v is not None else missing for v in column]


def test_values_misses_and_nulls() -> None:
    index = StringIndex(["mmHg", "%", "/min"], [7, 8, 9])
    got = index.lookup(pl.Series(["%", "kPa", None, "mmHg", "/min", "", "MMHG"]))
    assert got.tolist() == [8, -1, -1, 7, 9, -1, -1]


def test_positions_by_default_and_custom_missing() -> None:
    index = StringIndex(pl.Series(["a", "b"]), missing=-5)
    assert index.lookup(pl.Series(["b", "a", "c"])).tolist() == [1, 0, -5]
    assert index.size == 2


def test_empty_column_and_empty_index() -> None:
    assert StringIndex(["a"]).lookup(pl.Series([], dtype=pl.Utf8)).tolist() == []
    assert StringIndex([]).lookup(pl.Series(["a", None])).tolist() == [-1, -1]


def test_categorical_columns_are_looked_up_by_their_strings() -> None:
    column = pl.Series(["b", "a", "zz"]).cast(pl.Categorical)
    assert StringIndex(["a", "b"]).lookup(column).tolist() == [1, 0, -1]


@pytest.mark.parametrize(
    ("keys", "values", "message"),
    [
        (["a", "a"], None, "distinct"),
        (pl.Series(["a", None]), None, "null"),
        (["a", "b"], [1], "2 keys"),
    ],
)
def test_bad_keys_are_refused(keys: object, values: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StringIndex(keys, values)  # type: ignore[arg-type]


def _weak_hash(column: pl.Series) -> np.ndarray:
    """Two buckets only: nearly every key collides with another."""
    return (column.str.len_bytes().fill_null(0).to_numpy() % 2).astype(np.uint64)


def test_colliding_hashes_still_find_the_right_key() -> None:
    keys = [f"dev-{i}" for i in range(40)] + ["x", "yy"]
    index = StringIndex(keys, list(range(100, 142)), hasher=_weak_hash)
    column = ["dev-7", "nope", "yy", None, "x", "dev-39", "dev-100", "dev-0"]
    assert index.lookup(pl.Series(column)).tolist() == _expected(
        keys, list(range(100, 142)), column, -1
    )


@given(
    keys=st.lists(st.text(max_size=6), unique=True, max_size=30),
    extra=st.lists(st.one_of(st.none(), st.text(max_size=6)), max_size=30),
    weak=st.booleans(),
)
def test_matches_a_dictionary(keys: list[str], extra: list[str | None], weak: bool) -> None:
    values = [i * 3 + 1 for i in range(len(keys))]
    index = StringIndex(keys, values, hasher=_weak_hash) if weak else StringIndex(keys, values)
    column = keys[::2] + extra + keys[1::3]
    got = index.lookup(pl.Series(column, dtype=pl.Utf8)).tolist()
    assert got == _expected(keys, values, column, -1)
