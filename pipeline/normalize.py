"""Normalization: canonical units, plausibility, time sanity and patient resolution.

A pure batch -> batch transform with no I/O and no row loops. Each check moves the readings it
rejects to the batch's quarantine with a stable ``reason_code``, the field at fault and a reason
that names it. Checks run in this order, so a reading is rejected for its first problem:

1. ``unit_not_accepted``   the unit is not one the catalogue accepts for the metric
2. ``missing_value``       no value, and the device did not flag it as absent
3. ``implausible_value``   outside the catalogue's plausible range (canonical unit, ends included)
4. ``inconsistent_bp``     diastolic not below systolic, or mean outside [diastolic, systolic]
5. ``future_timestamp`` / ``stale_timestamp``   device time too far ahead of / behind the gateway
   (a reading replayed from quarantine may be old: only the future check applies to it)
6. ``unassigned_device``   no assignment covers the device at the reading's time (replayable)
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from pipeline.catalogue import Catalogue, catalogue
from pipeline.errors import ConfigError
from pipeline.readings import Quality, ReadingBatch
from pipeline.registry import resolve_patients

__all__ = ["NormalizeConfig", "Normalizer", "normalize"]

_BP = ("systolic_bp", "diastolic_bp", "mean_bp")


@dataclass(frozen=True, slots=True)
class NormalizeConfig:
    """Limits of the normalization stage.

    Attributes:
        max_future_s: Device time may run ahead of the gateway clock by at most this much.
        max_past_s: Readings older than this (device time vs gateway clock) are rejected.
    """

    max_future_s: float = 300.0
    max_past_s: float = 90 * 24 * 3600.0

    def __post_init__(self) -> None:
        if self.max_future_s < 0:
            raise ConfigError(f"normalize.max_future_s: {self.max_future_s} must be >= 0")
        if self.max_past_s <= 0:
            raise ConfigError(f"normalize.max_past_s: {self.max_past_s} must be > 0")


@dataclass(frozen=True, slots=True)
class Normalizer:
    """The catalogue's tables, prepared once, and the limits."""

    units: pl.DataFrame
    ranges: pl.DataFrame
    config: NormalizeConfig

    @classmethod
    def from_catalogue(
        cls, cat: Catalogue | None = None, config: NormalizeConfig = NormalizeConfig()
    ) -> Normalizer:
        """Prepare the join tables of ``cat`` (the shipped catalogue by default)."""
        cat = cat or catalogue()
        accepted = pl.DataFrame(
            {
                "metric": list(cat.names),
                "accepted": [", ".join(m.accepted_units()) for m in cat.metrics],
            }
        )
        units = (
            cat.unit_table()
            .join(accepted, on="metric")
            .with_columns(pl.col("metric").cast(pl.Enum(list(cat.names))))
        )
        ranges = (
            cat.range_table()
            .join(accepted, on="metric")
            .with_columns(pl.col("metric").cast(pl.Enum(list(cat.names))))
        )
        return cls(units, ranges, config)

    def __call__(self, batch: ReadingBatch, assignments: pl.DataFrame, now_us: int) -> ReadingBatch:
        return normalize(batch, self, assignments, now_us)


def _convert_units(batch: ReadingBatch, n: Normalizer) -> ReadingBatch:
    joined = batch.readings.join(
        n.units.select("metric", "unit", "factor", "offset", "canonical_unit", "accepted"),
        on=["metric", "unit"],
        how="left",
        maintain_order="left",
    )
    bad = joined["factor"].is_null()
    if bad.any():
        accepted = batch.readings.select("metric").join(
            n.ranges.select("metric", "accepted"), on="metric", how="left", maintain_order="left"
        )
        why = (
            batch.readings.with_columns(_accepted=accepted["accepted"])
            .select(
                pl.format(
                    "unit: '{}' is not an accepted unit for {} (accepted: {})",
                    pl.col("unit").fill_null(""),
                    pl.col("metric").cast(pl.Utf8),
                    pl.col("_accepted"),
                )
            )
            .to_series()
        )
        batch = batch.reject(bad, "unit_not_accepted", "unit", why)
        joined = joined.filter(~bad)
    changed = joined.select((pl.col("factor") != 1.0) | (pl.col("offset") != 0.0)).to_series()
    readings = batch.readings.with_columns(
        value=joined["value"] * joined["factor"] + joined["offset"],
        unit=joined["canonical_unit"],
        quality=pl.when(changed)
        .then(pl.col("quality") | int(Quality.CONVERTED))
        .otherwise(pl.col("quality"))
        .cast(pl.UInt8),
    )
    return batch.replace(readings=readings)


def _check_values(batch: ReadingBatch, n: Normalizer) -> ReadingBatch:
    absent = (pl.col("quality") & int(Quality.VALUE_ABSENT)) != 0
    missing = batch.readings.select(pl.col("value").is_null() & ~absent).to_series()
    batch = batch.reject(missing, "missing_value", "value", pl.lit("value: missing"))
    with_bounds = batch.readings.join(
        n.ranges.select("metric", "plausible_low", "plausible_high"),
        on="metric",
        how="left",
        maintain_order="left",
    )
    low, high, value = pl.col("plausible_low"), pl.col("plausible_high"), pl.col("value")
    outside = with_bounds.select(value.is_not_null() & ((value < low) | (value > high))).to_series()
    if not outside.any():
        return batch
    why = with_bounds.select(
        pl.format(
            "value: {} {} is outside the plausible range {}–{} {} for {}",
            value.round(4),
            pl.col("unit"),
            low,
            high,
            pl.col("unit"),
            pl.col("metric").cast(pl.Utf8),
        )
    ).to_series()
    return batch.reject(outside, "implausible_value", "value", why)


def _check_bp(batch: ReadingBatch) -> ReadingBatch:
    r = batch.readings
    is_bp = r["metric"].cast(pl.Utf8).is_in(_BP)
    if is_bp.sum() < 2:
        return batch
    key = ["device_id", "observed_at"]
    bad = (
        r.filter(is_bp)
        .select(*key, pl.col("metric").cast(pl.Utf8), "value")
        .group_by(key)
        .agg(
            sys=pl.col("value").filter(pl.col("metric") == "systolic_bp").first(),
            dia=pl.col("value").filter(pl.col("metric") == "diastolic_bp").first(),
            mean=pl.col("value").filter(pl.col("metric") == "mean_bp").first(),
        )
        .filter(
            (pl.col("dia") >= pl.col("sys"))
            | (pl.col("mean") < pl.col("dia"))
            | (pl.col("mean") > pl.col("sys"))
        )
        .select(
            *key,
            _why=pl.format(
                "value: systolic {} / diastolic {} / mean {} mm[Hg] are inconsistent "
                "(need diastolic < systolic and diastolic <= mean <= systolic)",
                *(pl.col(c).round(1).cast(pl.Utf8).fill_null("-") for c in ("sys", "dia", "mean")),
            ),
        )
    )
    if bad.height == 0:
        return batch
    why = r.join(bad, on=key, how="left", maintain_order="left")["_why"]
    return batch.reject(why.is_not_null() & is_bp, "inconsistent_bp", "value", why.fill_null(""))


def _check_time(batch: ReadingBatch, n: Normalizer, now_us: int) -> ReadingBatch:
    now = pl.lit(now_us).cast(pl.Int64)
    ts = pl.col("observed_at").dt.epoch("us")
    ahead = int(n.config.max_future_s * 1e6)
    behind = int(n.config.max_past_s * 1e6)
    r = batch.readings
    future = r.select(ts > now + ahead).to_series()
    batch = batch.reject(
        future,
        "future_timestamp",
        "ts",
        pl.format(
            "ts: {} is more than {} s ahead of the gateway clock",
            pl.col("observed_at").dt.to_string("%Y-%m-%dT%H:%M:%S%.6fZ"),
            pl.lit(f"{n.config.max_future_s:g}"),
        ),
    )
    replayed = (pl.col("quality") & int(Quality.REPLAYED)) != 0
    stale = batch.readings.select((ts < now - behind) & ~replayed).to_series()
    return batch.reject(
        stale,
        "stale_timestamp",
        "ts",
        pl.format(
            "ts: {} is more than {} s older than the gateway clock",
            pl.col("observed_at").dt.to_string("%Y-%m-%dT%H:%M:%S%.6fZ"),
            pl.lit(f"{n.config.max_past_s:g}"),
        ),
    )


def resolve(batch: ReadingBatch, assignments: pl.DataFrame) -> ReadingBatch:
    """Fill ``patient_id`` from time-bounded assignments; quarantine the rest as replayable."""
    r = batch.readings
    if r.height == 0:
        return batch
    patient = resolve_patients(r, assignments)
    r = r.with_columns(patient_id=patient)
    known = assignments["device_id"].unique()
    return batch.replace(readings=r).reject(
        patient.is_null(),
        "unassigned_device",
        "device_id",
        pl.when(pl.col("device_id").is_in(known.implode()))
        .then(
            pl.format(
                "device_id: device '{}' is not assigned to a patient at {}",
                pl.col("device_id"),
                pl.col("observed_at").dt.to_string("%Y-%m-%dT%H:%M:%S%.6fZ"),
            )
        )
        .otherwise(
            pl.format("device_id: unknown device '{}' (no assignment)", pl.col("device_id"))
        ),
    )


def normalize(
    batch: ReadingBatch, n: Normalizer, assignments: pl.DataFrame, now_us: int
) -> ReadingBatch:
    """Run every check of this module on ``batch`` at gateway time ``now_us``."""
    if batch.readings.height == 0:
        return batch
    batch = _convert_units(batch, n)
    batch = _check_values(batch, n)
    batch = _check_bp(batch)
    batch = _check_time(batch, n, now_us)
    return resolve(batch, assignments)
