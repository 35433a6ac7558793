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

The checks are numpy masks over the batch's columns, indexed by the metric's enum code into
tables prepared once from the catalogue; a batch in which every reading passes costs one
``with_columns``. Reasons are formatted only for the rejected readings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from pipeline.catalogue import Catalogue, catalogue
from pipeline.errors import ConfigError
from pipeline.lookup import StringIndex
from pipeline.readings import READING_SCHEMA, Quality, ReadingBatch
from pipeline.registry import resolve_patients

__all__ = ["NormalizeConfig", "Normalizer", "normalize"]

_BP = ("systolic_bp", "diastolic_bp", "mean_bp")
_METRICS: list[str] = list(READING_SCHEMA["metric"].categories)  # type: ignore[attr-defined]
"""Metric names by enum code."""
_FMT_TS = "%Y-%m-%dT%H:%M:%S%.6fZ"

# (reason_code, field) of each check, in the order they apply.
_CHECKS = (
    ("unit_not_accepted", "unit"),
    ("missing_value", "value"),
    ("implausible_value", "value"),
    ("inconsistent_bp", "value"),
    ("future_timestamp", "ts"),
    ("stale_timestamp", "ts"),
    ("unassigned_device", "device_id"),
)
_UNIT, _MISSING, _IMPLAUSIBLE, _BP_SET, _FUTURE, _STALE, _UNASSIGNED = range(len(_CHECKS))
_OK = len(_CHECKS)


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
class _Assigned:
    """Devices with exactly one assignment as arrays (the common case, resolved without a
    join); devices with several are resolved by :func:`resolve_patients`. The arrays end with
    a sentinel that covers no time, where unknown devices point."""

    frame: pl.DataFrame
    devices: StringIndex
    patients: npt.NDArray[np.object_]
    valid_from: npt.NDArray[np.int64]
    valid_to: npt.NDArray[np.int64]

    @classmethod
    def of(cls, assignments: pl.DataFrame) -> _Assigned:
        lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
        a = assignments.select(
            pl.col("device_id").cast(pl.Utf8), pl.col("patient_id").cast(pl.Utf8),
            pl.col("valid_from").dt.epoch("us").fill_null(lo),
            pl.col("valid_to").dt.epoch("us").fill_null(hi),
            pl.len().over("device_id").alias("n"),
        )  # fmt: skip
        single = a.filter(pl.col("n") == 1)
        several = a.filter(pl.col("n") > 1)["device_id"].unique()
        devices = StringIndex(
            pl.concat([single["device_id"], several]),
            np.concatenate([np.arange(single.height), np.full(len(several), -2)]),
        )
        return cls(assignments, devices,
                   np.array([*single["patient_id"].to_list(), None], dtype=object),
                   np.append(single["valid_from"].to_numpy(), hi),
                   np.append(single["valid_to"].to_numpy(), lo))

    def index(self, readings: pl.DataFrame) -> npt.NDArray[np.int64]:
        """Each reading's device: its single assignment's position, -2 when the device has
        several assignments, -1 when it has none."""
        return self.devices.lookup(readings["device_id"])

    def resolve(self, readings: pl.DataFrame, ts: npt.NDArray[np.int64],
                idx: npt.NDArray[np.int64]) -> npt.NDArray[np.object_]:
        """The patient of each reading (``None`` where no assignment covers it); ``idx`` is
        :meth:`index` of the readings."""
        at = np.where(idx >= 0, idx, len(self.patients) - 1)
        covered = (ts >= self.valid_from[at]) & (ts < self.valid_to[at])
        out = self.patients[at]  # a copy (fancy indexing)
        out[~covered] = None
        several = idx == -2
        if several.any():
            out[several] = resolve_patients(readings.filter(pl.Series(several)),
                                            self.frame).to_numpy()
        return out


@dataclass(frozen=True, slots=True)
class Normalizer:
    """The catalogue's tables as arrays indexed by the metric's enum code, and the limits."""

    config: NormalizeConfig
    units: StringIndex
    factor: npt.NDArray[np.float64]  # [metric, unit id]; NaN where not accepted
    offset: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    canonical: npt.NDArray[np.object_]
    accepted: npt.NDArray[np.object_]
    bp_codes: npt.NDArray[np.uint32]
    _assigned: list[_Assigned] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def from_catalogue(
        cls, cat: Catalogue | None = None, config: NormalizeConfig = NormalizeConfig()
    ) -> Normalizer:
        """Prepare the tables of ``cat`` (the shipped catalogue by default)."""
        cat = cat or catalogue()
        names = _METRICS
        units = sorted({c.unit for m in cat.metrics for c in m.units})
        uid = {u: i for i, u in enumerate(units)}
        factor = np.full((len(names), len(units)), np.nan)
        offset = np.zeros((len(names), len(units)))
        low, high = np.full(len(names), np.nan), np.full(len(names), np.nan)
        canonical = np.full(len(names), None, dtype=object)
        accepted = np.full(len(names), "", dtype=object)
        for m in cat.metrics:
            code = names.index(m.name)
            for c in m.units:
                factor[code, uid[c.unit]], offset[code, uid[c.unit]] = c.factor, c.offset
            low[code], high[code] = m.plausible_low, m.plausible_high
            canonical[code] = m.canonical_unit
            accepted[code] = ", ".join(m.accepted_units())
        bp = np.array([names.index(b) for b in _BP if b in names], dtype=np.uint32)
        return cls(config, StringIndex(units), factor, offset, low, high, canonical, accepted,
                   bp)

    def __call__(self, batch: ReadingBatch, assignments: pl.DataFrame, now_us: int) -> ReadingBatch:
        return normalize(batch, self, assignments, now_us)

    def assigned(self, assignments: pl.DataFrame) -> _Assigned:
        """The index of ``assignments``, built once per frame (the service reloads the frame
        when the registry changes)."""
        if not self._assigned or self._assigned[0].frame is not assignments:
            self._assigned[:] = [_Assigned.of(assignments)]
        return self._assigned[0]


def normalize(
    batch: ReadingBatch, n: Normalizer, assignments: pl.DataFrame, now_us: int
) -> ReadingBatch:
    """Run every check of this module on ``batch`` at gateway time ``now_us``."""
    r = batch.readings
    if r.height == 0:
        return batch
    cfg = n.config
    metric = r["metric"].to_physical().to_numpy()
    unit = n.units.lookup(r["unit"])
    col = np.maximum(unit, 0)
    factor = np.where(unit >= 0, n.factor[metric, col], np.nan)
    offset = n.offset[metric, col]
    value = r["value"].to_numpy().astype(np.float64, copy=False)
    value_null = np.isnan(value)  # null (to_numpy makes it NaN) or NaN: no number either way
    v = value * factor + offset
    quality = r["quality"].to_numpy()
    ts = r["observed_at"].dt.epoch("us").to_numpy()

    code = np.full(r.height, _OK, dtype=np.int8)

    def reject(check: int, mask: npt.NDArray[np.bool_]) -> None:
        code[(code == _OK) & mask] = check  # the first failed check wins

    reject(_UNIT, np.isnan(factor))
    reject(_MISSING, value_null & ((quality & Quality.VALUE_ABSENT) == 0))
    with np.errstate(invalid="ignore"):
        reject(_IMPLAUSIBLE, ~value_null & ((v < n.low[metric]) | (v > n.high[metric])))
    assigned = n.assigned(assignments)
    device = assigned.index(r)
    bp_set = None
    is_bp = np.isin(metric, n.bp_codes) & (code == _OK)
    if is_bp.sum() >= 2:
        bp_set = _bp_sets(r, v, metric, ts, is_bp, device)
        reject(_BP_SET, bp_set[3])
    reject(_FUTURE, ts > now_us + int(cfg.max_future_s * 1e6))
    reject(_STALE, (ts < now_us - int(cfg.max_past_s * 1e6))
           & ((quality & Quality.REPLAYED) == 0))
    patient = assigned.resolve(r, ts, device)
    reject(_UNASSIGNED, patient == None)  # noqa: E711 (elementwise)

    ok = code == _OK
    all_ok = bool(ok.all())
    keep = slice(None) if all_ok else ok
    converted = (factor != 1.0) | (offset != 0.0)
    new_quality = np.where(converted, quality | int(Quality.CONVERTED), quality)
    readings = (r if all_ok else r.filter(pl.Series(ok))).with_columns(
        patient_id=pl.Series(patient[keep], dtype=pl.Utf8),
        value=pl.Series(v[keep], dtype=pl.Float64, nan_to_null=True),
        unit=pl.Series(n.canonical[metric[keep]], dtype=pl.Utf8),
        quality=pl.Series(new_quality[keep], dtype=pl.UInt8),
    )
    if all_ok:
        return batch.replace(readings=readings)
    rows = _quarantine_rows(batch, n, code, v, metric, bp_set, assignments)
    return batch.replace(readings=readings,
                         quarantine=pl.concat([batch.quarantine, rows], how="vertical"))


def _bp_sets(r: pl.DataFrame, v: npt.NDArray[np.float64], metric: npt.NDArray[np.uint32],
             ts: npt.NDArray[np.int64], is_bp: npt.NDArray[np.bool_],
             device: npt.NDArray[np.int64]) -> tuple[npt.NDArray[Any], ...]:
    """Per reading: its BP set's systolic, diastolic and mean (NaN when absent; a set is the
    readings of one device at one time that passed the value checks, the first of each metric
    counting), and whether the set is inconsistent. ``device`` is each reading's position in
    the assignments' device index (negative when it has none or several)."""
    rows = np.flatnonzero(is_bp)
    device_code = device[rows]
    other = device_code < 0
    if other.any():  # devices outside the index: tell them apart by name, after the others
        names = r["device_id"].gather(rows[other]).to_numpy().astype(str)
        device_code = device_code.copy()
        device_code[other] = np.unique(names, return_inverse=True)[1].reshape(-1) + (
            max(int(device.max()), 0) + 1)
    _, at = np.unique(ts[rows], return_inverse=True)
    key = device_code * (int(at.max()) + 1) + at.reshape(-1)
    _, group = np.unique(key, return_inverse=True)
    group = group.reshape(-1)
    out = []
    for name in _BP:
        member = np.full(group.max() + 1, np.nan)
        pick = np.flatnonzero(metric[rows] == _METRICS.index(name))[::-1]  # the first wins
        member[group[pick]] = v[rows[pick]]
        per_row = np.full(len(v), np.nan)
        per_row[rows] = member[group]
        out.append(per_row)
    sys_, dia, mean = out
    with np.errstate(invalid="ignore"):
        bad = is_bp & ((dia >= sys_) | (mean < dia) | (mean > sys_))
    return sys_, dia, mean, bad


def _quarantine_rows(batch: ReadingBatch, n: Normalizer, code: npt.NDArray[np.int8],
                     v: npt.NDArray[np.float64], metric: npt.NDArray[np.uint32],
                     bp_set: tuple[npt.NDArray[Any], ...] | None,
                     assignments: pl.DataFrame) -> pl.DataFrame:
    """Rejected readings as quarantine rows, grouped by check in :data:`_CHECKS` order. A
    reading with a wrong unit keeps its own value and unit; the others are shown converted."""
    bad = code != _OK
    cfg = n.config
    r = batch.readings.with_columns(
        _code=pl.Series(code, dtype=pl.Int8), _v=pl.Series(v, nan_to_null=True),
        _canonical=pl.Series(n.canonical[metric], dtype=pl.Utf8),
        _low=pl.Series(n.low[metric]), _high=pl.Series(n.high[metric]),
        _accepted=pl.Series(n.accepted[metric], dtype=pl.Utf8),
    )  # fmt: skip
    if bp_set is not None:
        r = r.with_columns(**{name: pl.Series(values, nan_to_null=True) for name, values
                              in zip(("_sys", "_dia", "_mean"), bp_set[:3], strict=False)})
    else:
        r = r.with_columns(_sys=pl.lit(None, pl.Float64), _dia=pl.lit(None, pl.Float64),
                           _mean=pl.lit(None, pl.Float64))
    r = r.filter(pl.Series(bad)).sort("_code", maintain_order=True)
    val, unit, name = pl.col("_v"), pl.col("_canonical"), pl.col("metric").cast(pl.Utf8)
    when = pl.col("observed_at").dt.to_string(_FMT_TS)
    known = assignments["device_id"].cast(pl.Utf8).implode()
    reasons = [
        pl.format("unit: '{}' is not an accepted unit for {} (accepted: {})",
                  pl.col("unit").fill_null(""), name, pl.col("_accepted")),
        pl.lit("value: missing"),
        pl.format("value: {} {} is outside the plausible range {}–{} {} for {}",
                  val.round(4), unit, pl.col("_low"), pl.col("_high"), unit, name),
        pl.format("value: systolic {} / diastolic {} / mean {} mm[Hg] are inconsistent "
                  "(need diastolic < systolic and diastolic <= mean <= systolic)",
                  *(pl.col(c).round(1).cast(pl.Utf8).fill_null("-")
                    for c in ("_sys", "_dia", "_mean"))),
        pl.format("ts: {} is more than {} s ahead of the gateway clock",
                  when, pl.lit(f"{cfg.max_future_s:g}")),
        pl.format("ts: {} is more than {} s older than the gateway clock",
                  when, pl.lit(f"{cfg.max_past_s:g}")),
        pl.when(pl.col("device_id").is_in(known))
        .then(pl.format("device_id: device '{}' is not assigned to a patient at {}",
                        pl.col("device_id"), when))
        .otherwise(pl.format("device_id: unknown device '{}' (no assignment)",
                             pl.col("device_id"))),
    ]  # fmt: skip
    c = pl.col("_code")
    reason: pl.Expr = pl.when(c == 0).then(reasons[0])
    for i, why in enumerate(reasons[1:], start=1):
        reason = reason.when(c == i).then(why)  # type: ignore[attr-defined]
    unit_bad = c == _UNIT
    return r.join(
        batch.messages.select("origin", "topic", "payload"), on="origin", how="left",
        maintain_order="left",
    ).select(
        pl.col("received_at"),
        pl.col("source").cast(pl.Utf8),
        pl.col("topic"),
        pl.col("device_id"),
        name,
        pl.when(unit_bad).then(pl.col("value")).otherwise(val).alias("value"),
        pl.when(unit_bad).then(pl.col("unit")).otherwise(unit).alias("unit"),
        pl.col("observed_at"),
        pl.col("seq"),
        pl.col("payload"),
        c.replace_strict({i: k for i, (k, _) in enumerate(_CHECKS)}, return_dtype=pl.Utf8)
        .alias("reason_code"),
        c.replace_strict({i: f for i, (_, f) in enumerate(_CHECKS)}, return_dtype=pl.Utf8)
        .alias("field"),
        reason.cast(pl.Utf8).alias("reason"),
    )  # fmt: skip
