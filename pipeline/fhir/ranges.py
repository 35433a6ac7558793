"""Care-plan reference ranges for ``Observation.referenceRange`` and ``interpretation``.

The alert engine owns care plans; the mapping only asks a :class:`ReferenceRangeProvider` for
the limits that applied to each reading. :class:`NoReferenceRanges` (the default) knows none, so
the export works without care plans. :class:`TableReferenceRanges` serves a plain table of
versioned limits and is what tests and simple setups use.

Interpretation follows the limits (canonical unit, ends inclusive as "normal"): below
``critical_low`` LL, below ``low`` L, above ``critical_high`` HH, above ``high`` H, else N.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import polars as pl

from pipeline.readings import UTC_US

__all__ = [
    "RANGE_SCHEMA",
    "RANGE_TABLE_SCHEMA",
    "NoReferenceRanges",
    "ReferenceRangeProvider",
    "TableReferenceRanges",
    "interpretation_expr",
]

RANGE_SCHEMA: pl.Schema = pl.Schema(
    {
        "low": pl.Float64,
        "high": pl.Float64,
        "critical_low": pl.Float64,
        "critical_high": pl.Float64,
        "plan_version": pl.Utf8,
    }
)
"""What a provider returns per reading; all null when no care plan applies."""

RANGE_TABLE_SCHEMA: pl.Schema = pl.Schema(
    [("patient_id", pl.Utf8), ("metric", pl.Utf8), ("valid_from", UTC_US), *RANGE_SCHEMA.items()]
)
"""Rows of :class:`TableReferenceRanges`: limits effective from ``valid_from`` on."""


@runtime_checkable
class ReferenceRangeProvider(Protocol):
    """Care-plan limits per reading."""

    def reference_ranges(self, readings: pl.DataFrame) -> pl.DataFrame:
        """Limits that applied to each reading.

        Args:
            readings: Frame with at least ``patient_id`` (Utf8), ``metric`` (Utf8) and
                ``observed_at`` (Datetime us UTC).

        Returns:
            One row per input row, in the same order, with :data:`RANGE_SCHEMA`; nulls where
            no care plan applies. Limits are in the metric's canonical unit.
        """
        ...


class NoReferenceRanges:
    """The default provider: no care plans, so no referenceRange and no interpretation."""

    def reference_ranges(self, readings: pl.DataFrame) -> pl.DataFrame:
        """All-null limits."""
        return pl.DataFrame(
            {
                name: pl.Series(name, [None] * readings.height, dtype)
                for name, dtype in RANGE_SCHEMA.items()
            }
        )


class TableReferenceRanges:
    """Versioned limits from a table (:data:`RANGE_TABLE_SCHEMA`), by as-of join.

    The row with the latest ``valid_from`` at or before the reading's ``observed_at`` for the
    same patient and metric applies.
    """

    def __init__(self, table: pl.DataFrame) -> None:
        self._table = table.select(
            pl.col(name).cast(dtype) for name, dtype in RANGE_TABLE_SCHEMA.items()
        ).sort("valid_from")

    def reference_ranges(self, readings: pl.DataFrame) -> pl.DataFrame:
        """Limits from the table, as-of each reading's device time."""
        left = readings.select(
            pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row"),
            pl.col("patient_id").cast(pl.Utf8),
            pl.col("metric").cast(pl.Utf8),
            pl.col("observed_at").cast(UTC_US),
        ).sort("observed_at")
        matched = left.join_asof(
            self._table,
            left_on="observed_at",
            right_on="valid_from",
            by=["patient_id", "metric"],
            strategy="backward",
            check_sortedness=False,
        )
        return matched.sort("_row").select(RANGE_SCHEMA.names())


def interpretation_expr(value: pl.Expr) -> pl.Expr:
    """The v3 interpretation code of ``value`` against the :data:`RANGE_SCHEMA` columns."""
    low, high = pl.col("low"), pl.col("high")
    crit_low, crit_high = pl.col("critical_low"), pl.col("critical_high")
    return (
        pl.when(
            value.is_null()
            | (low.is_null() & high.is_null() & crit_low.is_null() & crit_high.is_null())
        )
        .then(pl.lit(None, pl.Utf8))
        .when(crit_low.is_not_null() & (value < crit_low))
        .then(pl.lit("LL"))
        .when(crit_high.is_not_null() & (value > crit_high))
        .then(pl.lit("HH"))
        .when(low.is_not_null() & (value < low))
        .then(pl.lit("L"))
        .when(high.is_not_null() & (value > high))
        .then(pl.lit("H"))
        .otherwise(pl.lit("N"))
    )
