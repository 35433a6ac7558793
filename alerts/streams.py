"""Streams: one integer key per (patient, metric), the latest value of each, and key lookups.

A stream key is ``pcode * slots + metric``: ``pcode`` is the patient's code in the engine
(assigned once, never reused), ``metric`` the metric's position in the catalogue and ``slots``
the catalogue size rounded up to a power of two. The latest time and value of every stream live
in two dense numpy arrays indexed by the key, so "is this reading newer than the last one" and
"what is this patient's latest SpO2" are array lookups, not joins.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import polars as pl

from pipeline.readings import READING_SCHEMA

__all__ = [
    "METRICS",
    "MISSING_T",
    "SLOTS",
    "LatestValues",
    "expand",
    "metric_code",
    "positions",
    "stream_key",
]

METRIC_DTYPE = READING_SCHEMA["metric"]
METRICS: tuple[str, ...] = tuple(METRIC_DTYPE.categories.to_list())  # type: ignore[attr-defined]
SLOTS = 1 << max(1, (len(METRICS) - 1).bit_length())
"""Keys per patient (catalogue metrics rounded up to a power of two)."""
MISSING_T = np.iinfo(np.int64).min
"""``t`` of a stream with no value yet."""

I64 = npt.NDArray[np.int64]


def metric_code(metric: str) -> int:
    """Position of a metric in the catalogue."""
    return METRICS.index(metric)


def stream_key(pcode: str = "pcode", metric: str = "metric") -> pl.Expr:
    """``pcode * SLOTS + metric position`` (the metric column may be Utf8 or the Enum)."""
    return pl.col(pcode) * SLOTS + pl.col(metric).cast(METRIC_DTYPE).to_physical().cast(pl.Int64)


def expand(keys: I64, wanted: I64) -> tuple[I64, I64]:
    """All matches of ``wanted`` in sorted ``keys``: ``(wanted index, keys index)`` pairs, in
    ``wanted`` order (a vectorized many-to-many lookup)."""
    lo = np.searchsorted(keys, wanted, "left")
    hi = np.searchsorted(keys, wanted, "right")
    count = hi - lo
    total = int(count.sum())
    rows = np.repeat(np.arange(len(wanted), dtype=np.int64), count)
    offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(count) - count, count)
    return rows, np.repeat(lo, count) + offsets


def positions(keys: npt.NDArray[np.integer], wanted: npt.NDArray[np.integer]) -> I64:
    """Ascending positions in ``keys`` (sorted, unique) of the values of ``wanted`` found
    there: ``np.flatnonzero(np.isin(keys, wanted))`` without a pass over ``keys``."""
    if len(keys) == 0 or len(wanted) == 0:
        return np.zeros(0, dtype=np.int64)
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return np.unique(at[keys[at] == wanted]).astype(np.int64)


class LatestValues:
    """The latest (device time, value) of every stream, and which changed since last taken."""

    def __init__(self) -> None:
        self.t: I64 = np.full(0, MISSING_T, dtype=np.int64)
        self.v = np.full(0, np.nan)
        self._dirty: list[I64] = []

    def ensure(self, patients: int) -> None:
        """Room for ``patients`` patient codes."""
        size = patients * SLOTS
        if size > len(self.t):
            grow = size - len(self.t)
            self.t = np.concatenate([self.t, np.full(grow, MISSING_T, dtype=np.int64)])
            self.v = np.concatenate([self.v, np.full(grow, np.nan)])

    def newer(self, pk: I64, t: I64) -> npt.NDArray[np.bool_]:
        """Which readings are newer than their stream's latest value."""
        return t > self.t[pk]

    def update(self, pk: I64, t: I64, v: npt.NDArray[np.float64]) -> None:
        """Take the newest of these values per stream (NaN values are ignored)."""
        ok = ~np.isnan(v)
        pk, t, v = pk[ok], t[ok], v[ok]
        if len(pk) == 0:
            return
        np.maximum.at(self.t, pk, t)
        newest = t == self.t[pk]
        self.v[pk[newest]] = v[newest]
        self._dirty.append(np.unique(pk))

    def take_dirty(self) -> I64:
        """Keys updated since the last call."""
        if not self._dirty:
            return np.zeros(0, dtype=np.int64)
        keys = np.unique(np.concatenate(self._dirty))
        self._dirty = []
        return keys

    def restore_dirty(self, keys: I64) -> None:
        """Put keys back (a save failed)."""
        if len(keys):
            self._dirty.insert(0, keys)

    def frame(self, keys: I64, patients: list[str]) -> pl.DataFrame:
        """``pk, patient_id, metric, t, value`` of these keys (those with a value)."""
        keys = keys[self.t[keys] != MISSING_T]
        names = np.asarray(patients, dtype=object)
        metrics = np.asarray(METRICS + ("",) * (SLOTS - len(METRICS)), dtype=object)
        return pl.DataFrame({
            "pk": keys,
            "patient_id": pl.Series(names[keys // SLOTS], dtype=pl.Utf8),
            "metric": pl.Series(metrics[keys % SLOTS], dtype=pl.Utf8),
            "t": self.t[keys],
            "value": self.v[keys],
        })  # fmt: skip

    def all_keys(self) -> I64:
        """Keys that have a value."""
        return np.flatnonzero(self.t != MISSING_T).astype(np.int64)

    def load(self, pk: I64, t: I64, v: npt.NDArray[np.float64]) -> None:
        """Set streams from persisted rows (not marked as changed)."""
        if len(pk):
            self.t[pk] = t
            self.v[pk] = v
