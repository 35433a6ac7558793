"""Exact string → integer lookups over whole columns, without a join or a per-row loop.

polars' ``replace_strict`` and joins build a hash table of the keys on every call, which costs
hundreds of microseconds even for a few hundred rows; a batch pays that once per lookup. A
:class:`StringIndex` hashes its keys once: a lookup hashes the column (vectorized), finds each
hash by binary search in the sorted key hashes, and compares the candidate key with the value
itself, so a hash collision can never match a wrong key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import polars as pl

__all__ = ["Hasher", "StringIndex", "polars_hash"]

Hasher = Callable[[pl.Series], "npt.NDArray[np.uint64]"]


def polars_hash(column: pl.Series) -> npt.NDArray[np.uint64]:
    """polars' 64-bit hash of each string (stable within a process)."""
    return column.hash(seed=0).to_numpy()


class StringIndex:
    """Map strings to integers: ``values[i]`` for ``keys[i]``, ``missing`` for anything else.

    Args:
        keys: Distinct strings (no nulls).
        values: One integer per key (``keys``' positions by default).
        missing: What :meth:`lookup` gives for a value that is not a key, or null.
        hasher: The hash function (tests give a weak one to force collisions).

    Raises:
        ValueError: Keys repeat or hold a null, or ``values`` has the wrong length.
    """

    __slots__ = ("_hash", "_hashes", "_keys", "_missing", "_values", "size")

    def __init__(self, keys: pl.Series | Sequence[str], values: npt.ArrayLike | None = None,
                 missing: int = -1, hasher: Hasher = polars_hash) -> None:
        keys = pl.Series(keys, dtype=pl.Utf8) if not isinstance(keys, pl.Series) else keys
        keys = keys.cast(pl.Utf8)
        if keys.null_count():
            raise ValueError("StringIndex: keys must not be null")
        if keys.n_unique() != len(keys):
            raise ValueError("StringIndex: keys must be distinct")
        vals = (np.arange(len(keys), dtype=np.int64) if values is None
                else np.asarray(values, dtype=np.int64))
        if vals.shape != (len(keys),):
            raise ValueError(f"StringIndex: {len(keys)} keys but {vals.shape} values")
        self._hash = hasher
        hashes = hasher(keys)
        order = np.argsort(hashes, kind="stable")
        # A sentinel at the end: a value hashing above every key lands on it, never matches.
        self._hashes = np.append(hashes[order], np.uint64(0))
        self._keys = np.concatenate([keys.to_numpy()[order], np.array([None], dtype=object)])
        self._values = np.append(vals[order], missing)
        self._missing = missing
        self.size = len(keys)

    def lookup(self, column: pl.Series) -> npt.NDArray[np.int64]:
        """The value of each element of ``column`` (``missing`` where it is not a key)."""
        if not len(column):
            return np.zeros(0, dtype=np.int64)
        column = column.cast(pl.Utf8)
        hashed = self._hash(column)
        pos = np.searchsorted(self._hashes[:-1], hashed)  # == size when above every key
        hit = (self._hashes[pos] == hashed) & (self._keys[pos] == column.to_numpy())
        # Colliding keys sit next to each other; the first is tried, the rest below.
        out = np.where(hit, self._values[pos], self._missing)
        unresolved = ~hit & (self._hashes[pos] == hashed)
        if unresolved.any():
            out[unresolved] = self._scan(column.to_numpy()[unresolved], pos[unresolved])
        return out

    def _scan(self, values: npt.NDArray[np.object_], start: npt.NDArray[np.intp]
              ) -> npt.NDArray[np.int64]:
        """Keys whose hash equals another key's: walk the run of equal hashes (rare)."""
        out = np.full(len(values), self._missing, dtype=np.int64)
        for i, (value, at) in enumerate(zip(values, start, strict=True)):
            h = self._hashes[at]
            while at < self.size and self._hashes[at] == h:
                if self._keys[at] == value:
                    out[i] = self._values[at]
                    break
                at += 1
        return out
