"""Signal producers: each rule kind turns readings (or time) into rows of
:data:`~alerts.evaluate.SIGNAL_SCHEMA`, by key lookups against the compiled rule frames.

============  =================================================================================
kind          signal row
============  =================================================================================
threshold     one per reading of the rule's metric: the value (``t`` = device time)
rate          one per reading: change per minute against the reading ``window`` earlier
              (the latest at or before ``t - window``, at most ``2 * window`` back); value
              is the reading (for the gates)
predicted     one per reading: value + rate * horizon (minutes)
staleness     one per (patient, metric) evaluated: missed intervals ``(now - last) / cadence``
              (``last``: the latest reading, or the plan's creation before the first one)
technical     ``sensor_error``: one per payload of the patient (1 when a reading in it carries a
              watched quality flag); ``decode_errors``: one per payload of the patient's devices
              (1 when quarantined, 0 when it gave readings; ``t`` = receive time);
              ``threshold``: as threshold
news2         one per patient with something to score: the risk band ordinal (value: the
              aggregate)
============  =================================================================================

Producers that can only report "normal" skip the rules without carried state (``active``:
rule indexes with carried state): such rows cannot change anything.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from alerts.compile import Compiled
from alerts.evaluate import SIGNAL_SCHEMA
from alerts.news2 import METRIC_PARAMETERS, score_frame
from alerts.streams import MISSING_T, SLOTS, LatestValues, expand, metric_code, positions

__all__ = [
    "CODES_SCHEMA",
    "HISTORY_SCHEMA",
    "MANUAL_SCHEMA",
    "NEWS2_SCORE_SCHEMA",
    "READING_COLUMNS",
    "decode_signals",
    "empty_signals",
    "news2_signals",
    "readings_frame",
    "sensor_signals",
    "signal_frame",
    "staleness_signals",
    "trend_signals",
    "value_signals",
]

READING_COLUMNS = pl.Schema(
    {"patient_id": pl.Utf8, "device_id": pl.Utf8, "metric": pl.Utf8, "t": pl.Int64,
     "rt": pl.Int64, "value": pl.Float64, "quality": pl.UInt8, "pk": pl.Int64}
)
"""The reading columns the producers use (``t`` device time, ``rt`` receive time, µs;
``pk`` the stream key, :mod:`alerts.streams`)."""
HISTORY_SCHEMA = pl.Schema(
    {"pk": pl.Int64, "patient_id": pl.Utf8, "metric": pl.Utf8, "t": pl.Int64,
     "value": pl.Float64}
)
"""Earlier values of the metrics that rate and predicted rules watch."""
CODES_SCHEMA = pl.Schema({"patient_id": pl.Utf8, "pcode": pl.Int64})
"""Patient codes of an engine (:attr:`alerts.compile.Compiled.codes`)."""
MANUAL_SCHEMA = pl.Schema(
    {"patient_id": pl.Utf8, "consciousness": pl.Utf8, "supplemental_oxygen": pl.Boolean}
)
"""Manual NEWS2 entries in force per patient."""
NEWS2_SCORE_SCHEMA = pl.Schema(
    {"patient_id": pl.Utf8, "t": pl.Int64, "aggregate": pl.Int32, "risk_band": pl.Utf8,
     "complete": pl.Boolean, "any_parameter_3": pl.Boolean, "missing": pl.Utf8}
)
"""The latest NEWS2 of each patient (``missing``: parameters left out, comma-separated)."""

_MISSING = pl.concat_str(
    [pl.when(pl.col(col).is_null()).then(pl.lit(col)) for col in METRIC_PARAMETERS.values()],
    separator=",", ignore_nulls=True,
)
_EMPTY = pl.DataFrame(schema=SIGNAL_SCHEMA)
_RULE_PART = ["rule_idx", "lo_max", "hi_min"]
_STALENESS_PART = ("rule_idx", "pk", "plan_created_us", "cadence_us", "lo_max", "hi_min")
Active = npt.NDArray[np.uint32]


def empty_signals() -> pl.DataFrame:
    """A signal frame with no rows (frames are immutable: always the same one)."""
    return _EMPTY


def _signals(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(SIGNAL_SCHEMA.names()).cast(SIGNAL_SCHEMA)


def signal_frame(**columns: pl.Series | npt.NDArray[Any]) -> pl.DataFrame:
    """A :data:`SIGNAL_SCHEMA` frame from its columns (series or arrays, all given)."""
    return pl.DataFrame([
        v.alias(k).cast(SIGNAL_SCHEMA[k]) if isinstance(v, pl.Series)
        else pl.Series(k, v, dtype=SIGNAL_SCHEMA[k])
        for k, v in ((k, columns[k]) for k in SIGNAL_SCHEMA.names())
    ])  # fmt: skip


def readings_frame(readings: pl.DataFrame, comp: Compiled) -> pl.DataFrame:
    """The producers' view of a normalized batch's readings: those of patients with a care
    plan (:attr:`~alerts.compile.Compiled.codes`), in batch order, with their stream key."""
    ids, names, codes = comp.patient_codes()
    given = readings["patient_id"].to_numpy()
    if len(ids) and len(given):
        at = np.minimum(np.searchsorted(ids, given.astype(np.str_)), len(ids) - 1)
        hit = names[at] == given
    else:
        at, hit = np.zeros(len(given), dtype=np.int64), np.zeros(len(given), dtype=bool)
    if not hit.all():
        keep = np.flatnonzero(hit)
        readings, at = readings[keep], at[keep]
    pcode = pl.Series(codes[at] * SLOTS, dtype=pl.Int64)
    return readings.select(
        "patient_id", "device_id", pl.col("metric").cast(pl.Utf8),
        t=pl.col("observed_at").dt.epoch("us"), rt=pl.col("received_at").dt.epoch("us"),
        value="value", quality="quality",
        pk=pl.lit(pcode) + pl.col("metric").to_physical().cast(pl.Int64),
    )


def _live(rule_idx: npt.NDArray[np.uint32], active: Active | None
          ) -> npt.NDArray[np.bool_] | None:
    """Which of the rules (``rule_idx``, ascending) have carried state."""
    if active is None:
        return None
    live = np.zeros(len(rule_idx), dtype=bool)
    live[positions(rule_idx, active)] = True
    return live


def _rule_idx(comp: Compiled, *kinds: str) -> npt.NDArray[np.uint32]:
    return comp.kind_arrays(kinds, ("rule_idx",))["rule_idx"]


def value_signals(r: pl.DataFrame, comp: Compiled) -> pl.DataFrame:
    """Threshold rules (and technical ``threshold`` rules): the reading's value."""
    kinds = ("threshold", "technical:threshold")
    keys, _ = comp.index(*kinds)
    if len(keys) == 0 or r.height == 0:
        return empty_signals()
    rows, at = expand(keys, r["pk"].to_numpy())
    if len(rows) == 0:
        return empty_signals()
    rules = comp.index_arrays(kinds, tuple(_RULE_PART))
    value = r["value"][rows]
    return signal_frame(rule_idx=rules["rule_idx"][at], t=r["t"][rows], signal=value,
                        value=value, device_id=r["device_id"][rows],
                        lo_max=rules["lo_max"][at], hi_min=rules["hi_min"][at])


def trend_signals(r: pl.DataFrame, history: pl.DataFrame, comp: Compiled) -> pl.DataFrame:
    """Rate and predicted rules. ``history`` holds earlier values (:data:`HISTORY_SCHEMA`);
    the batch's own readings count as history too."""
    keys, rules = comp.index("rate", "predicted")
    if len(keys) == 0 or r.height == 0:
        return empty_signals()
    valued = r
    if r["value"].has_nulls():
        valued = r.filter(pl.col("value").is_not_null())
    rows, at = expand(keys, valued["pk"].to_numpy())
    if len(rows) == 0:
        return empty_signals()
    cur = pl.concat([
        valued.select("pk", "t", "value", "device_id")[rows],
        rules.select(*_RULE_PART, "kind", "window_us", "horizon_min")[at],
    ], how="horizontal")  # fmt: skip
    past = pl.concat([
        history.select("pk", t0="t", v0="value"),
        cur.select("pk", t0="t", v0="value").unique(),
    ]).with_columns(_at=pl.col("t0")).sort("pk", "_at")  # fmt: skip
    parts = []
    for window in cur["window_us"].unique().to_list():
        part = cur.filter(pl.col("window_us") == window).with_columns(
            _at=pl.col("t") - window).sort("pk", "_at")
        parts.append(part.join_asof(past, on="_at", by="pk", strategy="backward",
                                    tolerance=int(window), check_sortedness=False))
    joined = pl.concat(parts) if len(parts) > 1 else parts[0]
    minutes = (pl.col("t") - pl.col("t0")) / 60e6
    rate = pl.when(minutes > 0).then((pl.col("value") - pl.col("v0")) / minutes)
    signal = (
        pl.when(pl.col("kind") == "rate").then(rate)
        .otherwise(pl.col("value") + rate * pl.col("horizon_min"))
    )  # fmt: skip
    return _signals(joined.with_columns(signal=signal))


def sensor_signals(r: pl.DataFrame, comp: Compiled, active: Active | None = None
                   ) -> pl.DataFrame:
    """Technical ``sensor_error`` rules: per payload, 1 when a watched flag is set. With
    ``active``, unflagged payloads are produced only for patients with a flagged payload in
    the batch or a rule with carried state."""
    kind = "technical:sensor_error"
    rules = comp.rules_of(kind)
    if rules.height == 0 or r.height == 0:
        return empty_signals()
    masks = comp.kind_arrays((kind,), ("quality_mask",))["quality_mask"]
    mask = int(np.bitwise_or.reduce(masks))
    flagged = (r["quality"].to_numpy() & mask) != 0
    live = _live(_rule_idx(comp, kind), active)
    if live is not None:
        if not flagged.any() and not live.any():
            return empty_signals()
        patients = pl.concat([rules["patient_id"].filter(pl.Series(live)),
                              r["patient_id"].filter(pl.Series(flagged))])
        r = r.filter(pl.col("patient_id").is_in(patients.implode()))
    out = (
        r.join(rules.select("patient_id", "quality_mask", *_RULE_PART, rule_metric="metric"),
               on="patient_id", how="inner")
        .filter(pl.col("rule_metric").is_null() | (pl.col("rule_metric") == pl.col("metric")))
        .with_columns(_flag=(pl.col("quality") & pl.col("quality_mask")) != 0)
        .group_by("rule_idx", "device_id", "t")
        .agg(signal=pl.col("_flag").any().cast(pl.Float64), value=pl.col("value").first(),
             lo_max=pl.col("lo_max").first(), hi_min=pl.col("hi_min").first())
    )
    return _signals(out)


def decode_signals(r: pl.DataFrame, quarantine: pl.DataFrame, devices: pl.DataFrame,
                   comp: Compiled, active: Active | None = None) -> pl.DataFrame:
    """Technical ``decode_errors`` rules: per payload of a device of the patient, 1 when it
    was quarantined (any reason but ``unassigned_device``), 0 when it gave readings.

    Args:
        r: Readings of the batch.
        quarantine: The batch's quarantine frame.
        devices: ``device_id -> patient_id`` of known devices.
        comp: Compiled plans.
        active: Rule indexes with carried state: payloads that gave readings are produced
            only for their patients and those with a rejected payload in the batch (elsewhere
            they cannot change anything).
    """
    rules = comp.rules_of("technical:decode_errors")
    if rules.height == 0:
        return empty_signals()
    live = _live(_rule_idx(comp, "technical:decode_errors"), active)
    if live is not None and quarantine.height == 0 and not live.any():
        return empty_signals()
    bad = (
        quarantine.filter(pl.col("reason_code") != "unassigned_device")
        .select("device_id", rt=pl.col("received_at").dt.epoch("us"))
        .join(devices, on="device_id", how="inner")
        .with_columns(signal=pl.lit(1.0))
    )
    if live is not None:
        patients = pl.concat([rules["patient_id"].filter(pl.Series(live)), bad["patient_id"]])
        r = r.filter(pl.col("patient_id").is_in(patients.implode()))
    good = r.select("patient_id", "device_id", "rt").unique().with_columns(signal=pl.lit(0.0))
    both = pl.concat([bad.select(good.columns), good])
    if both.height == 0:
        return empty_signals()
    out = both.join(rules.select("patient_id", *_RULE_PART), on="patient_id",
                    how="inner").with_columns(t=pl.col("rt"), value=pl.col("signal"))
    return _signals(out)


def staleness_signals(latest: LatestValues, comp: Compiled, now_us: int,
                      active: Active | None = None) -> pl.DataFrame:
    """Staleness rules: missed intervals since the metric's latest reading (or, before the
    first one, since the care plan version took effect), evaluated at ``now_us``; ``active``
    limits the rules evaluated (after a batch only rules with carried state can change: new
    readings only make data fresher)."""
    rules = comp.kind_arrays(("staleness",), _STALENESS_PART)
    if active is not None:
        at = positions(rules["rule_idx"], active)
        rules = {k: v[at] for k, v in rules.items()}
    n = len(rules["rule_idx"])
    if n == 0:
        return empty_signals()
    last = latest.t[rules["pk"]]
    since = np.where(last == MISSING_T, rules["plan_created_us"], last)
    missed = np.maximum((now_us - since) / rules["cadence_us"], 0.0)
    return signal_frame(rule_idx=rules["rule_idx"], t=np.full(n, now_us, dtype=np.int64),
                        signal=missed, value=missed,
                        device_id=pl.repeat(None, n, dtype=pl.Utf8, eager=True),
                        lo_max=rules["lo_max"], hi_min=rules["hi_min"])


def news2_signals(
    latest: LatestValues, manual: pl.DataFrame, comp: Compiled, now_us: int,
    patients: pl.Series | None = None, active: Active | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """NEWS2 rules: score the latest fresh vitals per patient at ``now_us``.

    Only patients with something to score are scored: a fresh parameter, a manual entry, or a
    NEWS2 rule with carried state (``active``, so that an episode can end when everything went
    stale). A patient with no data at all has no NEWS2, not a NEWS2 of 0.

    Returns:
        The signal rows and the scores (:data:`NEWS2_SCORE_SCHEMA`).
    """
    rules = comp.rules_of("news2")
    if patients is not None:
        rules = rules.filter(pl.col("patient_id").is_in(patients.implode()))
    if rules.height == 0:
        return empty_signals(), pl.DataFrame(schema=NEWS2_SCORE_SCHEMA)
    base = rules["pcode"].to_numpy() * SLOTS
    fresh_for = rules["freshness_us"].to_numpy()
    raw: dict[str, npt.NDArray[np.float64]] = {}
    has_data = np.isin(rules["patient_id"].to_numpy(), manual["patient_id"].to_numpy())
    if active is not None:
        has_data |= np.isin(rules["rule_idx"].to_numpy(), active)
    for metric, column in METRIC_PARAMETERS.items():
        pk = base + metric_code(metric)
        t = latest.t[pk]
        ok = (t != MISSING_T) & (t >= now_us - fresh_for)
        has_data |= ok
        raw[column] = np.where(ok, latest.v[pk], np.nan)
    if not has_data.all():
        keep = np.flatnonzero(has_data)
        if len(keep) == 0:
            return empty_signals(), pl.DataFrame(schema=NEWS2_SCORE_SCHEMA)
        rules = rules[keep]
        raw = {k: v[keep] for k, v in raw.items()}
    values = {k: pl.Series(v).fill_nan(None) for k, v in raw.items()}
    wide = (
        rules.select("patient_id", "spo2_scale", *_RULE_PART).with_columns(**values)
        .join(manual, on="patient_id", how="left", maintain_order="left")
        .with_columns(pl.col("consciousness").fill_null("A"),
                      pl.col("supplemental_oxygen").fill_null(False))
    )
    scored = score_frame(wide)
    scores = scored.select(
        "patient_id", t=pl.lit(now_us, pl.Int64), aggregate=pl.col("aggregate"),
        risk_band="risk_band", complete="complete", any_parameter_3="any_parameter_3",
        missing=_MISSING,
    ).cast(NEWS2_SCORE_SCHEMA)
    sig = scored.select(
        "rule_idx", t=pl.lit(now_us, pl.Int64), signal=pl.col("band").cast(pl.Float64),
        value=pl.col("aggregate").cast(pl.Float64), device_id=pl.lit(None, pl.Utf8),
        lo_max="lo_max", hi_min="hi_min",
    )
    return _signals(sig), scores
