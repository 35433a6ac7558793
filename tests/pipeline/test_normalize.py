"""Normalization against the catalogue: units, plausibility, BP consistency, time, assignment."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from gateway.records import RawMessage, RawReading
from pipeline.batcher import build_batch
from pipeline.catalogue import catalogue
from pipeline.normalize import NormalizeConfig, Normalizer, normalize
from pipeline.readings import Quality

NOW = 1_790_000_000_000_000  # gateway clock, UTC microseconds
N = Normalizer.from_catalogue()


def assignments(*rows: tuple[str, str, int, int | None]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "device_id": [r[0] for r in rows],
            "patient_id": [r[1] for r in rows],
            "valid_from": pl.Series([r[2] for r in rows], dtype=pl.Int64).cast(
                pl.Datetime("us", "UTC")
            ),
            "valid_to": pl.Series([r[3] for r in rows], dtype=pl.Int64).cast(
                pl.Datetime("us", "UTC")
            ),
        }
    )


ALL = assignments(("D1", "P1", 0, None), ("D2", "P2", 0, None))


def run(
    readings: list[RawReading], assigned: pl.DataFrame = ALL, config: NormalizeConfig | None = None
):
    msgs = [RawMessage("t/x", b"payload-%d" % i, NOW, "mqtt") for i in range(len(readings))]
    batch = build_batch(msgs, readings, list(range(len(readings))), [])
    n = Normalizer.from_catalogue(config=config) if config else N
    return normalize(batch, n, assigned, NOW)


def r(
    metric: str,
    value: float | None,
    unit: str,
    *,
    device: str = "D1",
    ts: int = NOW - 1_000_000,
    seq: int | None = 1,
    quality: int = 0,
) -> RawReading:
    return RawReading(device, metric, value, unit, ts, seq, quality)


@pytest.mark.parametrize(
    ("metric", "value", "unit", "expected"),
    [
        ("heart_rate", 72.0, "bpm", 72.0),
        ("heart_rate", 72.0, "{beats}/min", 72.0),
        ("spo2", 0.97, "1", 97.0),
        ("systolic_bp", 16.0, "kPa", 16.0 * 7.50062),
        ("body_temperature", 98.6, "[degF]", 37.0),
        ("body_temperature", 37.2, "Cel", 37.2),
        ("body_weight", 154.0, "[lb_av]", 154.0 * 0.45359237),
        ("body_weight", 70500.0, "g", 70.5),
        ("glucose", 5.5, "mmol/L", 5.5 * 18.0156),
        ("cgm_glucose", 110.0, "mg/dL", 110.0),
        ("hrv_sdnn", 0.045, "s", 45.0),
    ],
)
def test_units_convert_to_canonical(metric: str, value: float, unit: str, expected: float) -> None:
    out = run([r(metric, value, unit)])
    assert out.quarantine.height == 0
    row = out.readings.row(0, named=True)
    assert row["value"] == pytest.approx(expected, rel=1e-12, abs=1e-9)
    assert row["unit"] == catalogue()[metric].canonical_unit
    converted = bool(row["quality"] & Quality.CONVERTED)
    assert converted == (catalogue()[metric].to_canonical(value, unit) != value)
    assert row["patient_id"] == "P1"


def test_wrong_unit_is_quarantined_naming_unit_and_accepted_list() -> None:
    out = run([r("heart_rate", 72.0, "Hz"), r("spo2", 97.0, "%")])
    assert out.readings["metric"].cast(pl.Utf8).to_list() == ["spo2"]
    q = out.quarantine.row(0, named=True)
    assert q["reason_code"] == "unit_not_accepted"
    assert q["field"] == "unit"
    assert q["reason"] == (
        "unit: 'Hz' is not an accepted unit for heart_rate"
        " (accepted: /min, {beats}/min, {beat}/min, bpm)"
    )
    assert q["payload"] == b"payload-0"
    assert q["value"] == 72.0


@pytest.mark.parametrize(
    ("metric", "unit", "low", "high"),
    [(m.name, m.canonical_unit, m.plausible_low, m.plausible_high) for m in catalogue().metrics],
)
def test_plausible_range_ends_are_included(metric: str, unit: str, low: float, high: float) -> None:
    eps = 1e-6 * max(1.0, abs(high))
    rows = [r(metric, v, unit, seq=i) for i, v in enumerate([low, high, low - eps, high + eps])]
    out = run(rows)
    assert out.readings["value"].to_list() == [low, high]
    assert out.quarantine["reason_code"].to_list() == ["implausible_value"] * 2
    assert out.quarantine["field"].to_list() == ["value", "value"]
    assert f"for {metric}" in out.quarantine["reason"][0]


def test_plausibility_applies_after_conversion() -> None:
    # 113 degF = 45 Cel (in range); 114 degF = 45.6 Cel (out)
    out = run(
        [
            r("body_temperature", 113.0, "[degF]", seq=1),
            r("body_temperature", 114.0, "[degF]", seq=2),
        ]
    )
    assert out.readings["value"].to_list() == [pytest.approx(45.0)]
    assert out.quarantine["reason"][0].startswith(
        "value: 45.5556 Cel is outside the plausible range"
    )


def test_absent_value_kept_only_when_flagged() -> None:
    out = run(
        [
            r("heart_rate", None, "/min", seq=1, quality=Quality.VALUE_ABSENT),
            r("heart_rate", None, "/min", seq=2),
        ]
    )
    assert out.readings["seq"].to_list() == [1]
    assert out.quarantine["reason_code"].to_list() == ["missing_value"]


def test_inconsistent_blood_pressure_rejects_the_set() -> None:
    ts = NOW - 10_000_000
    ok = [
        r("systolic_bp", 120, "mm[Hg]", ts=ts),
        r("diastolic_bp", 80, "mm[Hg]", ts=ts),
        r("mean_bp", 93, "mm[Hg]", ts=ts),
    ]
    bad = [
        r("systolic_bp", 90, "mm[Hg]", device="D2", ts=ts),
        r("diastolic_bp", 95, "mm[Hg]", device="D2", ts=ts),
    ]
    out = run(ok + bad)
    assert out.readings["device_id"].to_list() == ["D1"] * 3
    assert out.quarantine["reason_code"].to_list() == ["inconsistent_bp"] * 2
    assert "systolic 90.0 / diastolic 95.0" in out.quarantine["reason"][0]


def test_timestamps_too_far_ahead_or_behind() -> None:
    cfg = NormalizeConfig(max_future_s=300, max_past_s=3600)
    rows = [
        r("heart_rate", 60, "/min", ts=NOW + 300_000_000, seq=1),  # exactly at the limit: kept
        r("heart_rate", 60, "/min", ts=NOW + 300_000_001, seq=2),
        r("heart_rate", 60, "/min", ts=NOW - 3600_000_000, seq=3),  # at the limit: kept
        r("heart_rate", 60, "/min", ts=NOW - 3600_000_001, seq=4),
    ]
    out = run(rows, config=cfg)
    assert out.readings["seq"].to_list() == [1, 3]
    assert out.quarantine["reason_code"].to_list() == ["future_timestamp", "stale_timestamp"]
    assert out.quarantine["field"].to_list() == ["ts", "ts"]
    when = datetime.fromtimestamp((NOW + 300_000_001) / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert (
        out.quarantine["reason"][0] == f"ts: {when} is more than 300 s ahead of the gateway clock"
    )


def test_readings_resolve_by_their_own_timestamp() -> None:
    t1, t2 = NOW - 100_000_000, NOW - 50_000_000
    a = assignments(("D1", "P1", t1, t2), ("D1", "P9", t2, None))
    rows = [
        r("heart_rate", 60, "/min", ts=t1 - 1, seq=1),  # before any assignment
        r("heart_rate", 61, "/min", ts=t1, seq=2),  # first instant of P1
        r("heart_rate", 62, "/min", ts=t2 - 1, seq=3),  # last instant of P1
        r("heart_rate", 63, "/min", ts=t2, seq=4),  # first instant of P9
        r("heart_rate", 64, "/min", device="D7", seq=5),  # unknown device
    ]
    out = run(rows, assigned=a)
    assert out.readings["patient_id"].to_list() == ["P1", "P1", "P9"]
    assert out.readings["seq"].to_list() == [2, 3, 4]
    q = out.quarantine
    assert q["reason_code"].to_list() == ["unassigned_device", "unassigned_device"]
    assert q["reason"][0].startswith("device_id: device 'D1' is not assigned to a patient at ")
    assert q["reason"][1] == "device_id: unknown device 'D7' (no assignment)"


def test_first_problem_wins_and_nothing_is_lost() -> None:
    rows = [
        r("heart_rate", 72, "Hz", device="D7", seq=1),  # wrong unit and unknown device
        r("heart_rate", 900, "/min", seq=2),
        r("heart_rate", 72, "/min", seq=3),
    ]
    out = run(rows)
    assert out.readings.height + out.quarantine.height == 3
    assert out.quarantine["reason_code"].to_list() == ["unit_not_accepted", "implausible_value"]


def test_replayed_readings_skip_only_the_staleness_check() -> None:
    old = NOW - 400 * 86_400_000_000  # older than max_past_s
    out = run(
        [
            r("heart_rate", 60, "/min", ts=old, seq=1, quality=Quality.REPLAYED),
            r("heart_rate", 60, "/min", ts=old, seq=2),
            r("heart_rate", 60, "/min", ts=NOW + 10**9, seq=3, quality=Quality.REPLAYED),
        ]
    )
    assert out.readings["seq"].to_list() == [1]
    assert out.quarantine["reason_code"].to_list() == ["future_timestamp", "stale_timestamp"]


def test_single_and_repeated_assignments_resolve_in_one_batch() -> None:
    t1 = NOW - 100_000_000
    a = assignments(
        ("D1", "P1", 0, None),  # one open assignment
        ("D2", "P2", 0, t1), ("D2", "P8", t1, None),  # moved to another patient at t1
        ("D3", "P3", 0, t1),  # returned at t1
    )
    rows = [
        r("heart_rate", 60, "/min", device="D1", seq=1),
        r("heart_rate", 61, "/min", device="D2", ts=t1 - 1, seq=2),
        r("heart_rate", 62, "/min", device="D2", seq=3),
        r("heart_rate", 63, "/min", device="D3", ts=t1 - 1, seq=4),
        r("heart_rate", 64, "/min", device="D3", seq=5),  # after its return
        r("heart_rate", 65, "/min", device="D7", seq=6),  # never assigned
    ]
    out = run(rows, assigned=a)
    assert list(zip(out.readings["seq"], out.readings["patient_id"], strict=True)) == [
        (1, "P1"), (2, "P2"), (3, "P8"), (4, "P3")]
    assert out.quarantine["seq"].to_list() == [5, 6]
    assert out.quarantine["reason_code"].to_list() == ["unassigned_device"] * 2


def test_a_reloaded_assignment_frame_is_used_at_once() -> None:
    n = Normalizer.from_catalogue()
    msgs = [RawMessage("t/x", b"p", NOW, "mqtt")]
    batch = build_batch(msgs, [r("heart_rate", 60, "/min")], [0], [])
    before = normalize(batch, n, assignments(("D1", "P1", 0, None)), NOW)
    after = normalize(batch, n, assignments(("D1", "P5", 0, None)), NOW)
    assert before.readings["patient_id"].to_list() == ["P1"]
    assert after.readings["patient_id"].to_list() == ["P5"]


def test_blood_pressure_sets_are_per_device_and_time() -> None:
    ts = NOW - 10_000_000
    rows = [
        r("systolic_bp", 120, "mm[Hg]", ts=ts, seq=1),
        r("diastolic_bp", 80, "mm[Hg]", ts=ts + 1, seq=2),  # another time: its own set
        r("systolic_bp", 70, "mm[Hg]", device="D2", ts=ts, seq=3),
        r("diastolic_bp", 500, "mm[Hg]", device="D2", ts=ts, seq=4),  # implausible first
        r("mean_bp", 75, "mm[Hg]", device="D2", ts=ts, seq=5),  # 70 / - / 75: mean > sys
    ]
    out = run(rows)
    assert out.readings["seq"].to_list() == [1, 2]
    assert out.quarantine["reason_code"].to_list() == [
        "implausible_value", "inconsistent_bp", "inconsistent_bp"]
    assert out.quarantine["reason"][1].startswith("value: systolic 70.0 / diastolic - / mean 75.0")


def test_blood_pressure_sets_of_unassigned_devices_stay_apart() -> None:
    """Devices without one assignment are told apart by name, not merged into one set."""
    ts = NOW - 10_000_000
    t1 = NOW - 100_000_000
    a = assignments(("D1", "P1", 0, None), ("D2", "P2", 0, t1), ("D2", "P8", t1, None),
                    ("D3", "P3", 0, t1), ("D3", "P9", t1, None))
    rows = [
        r("systolic_bp", 120, "mm[Hg]", device="U1", ts=ts, seq=1),  # unknown devices
        r("diastolic_bp", 130, "mm[Hg]", device="U2", ts=ts, seq=2),
        r("systolic_bp", 110, "mm[Hg]", device="D2", ts=ts, seq=3),  # several assignments
        r("diastolic_bp", 115, "mm[Hg]", device="D3", ts=ts, seq=4),
        r("diastolic_bp", 70, "mm[Hg]", device="D1", ts=ts, seq=5),  # assigned
        r("systolic_bp", 60, "mm[Hg]", device="U1", ts=ts + 1, seq=6),
        r("diastolic_bp", 90, "mm[Hg]", device="U1", ts=ts + 1, seq=7),  # its own set: bad
    ]
    out = run(rows, assigned=a)
    assert out.readings["seq"].to_list() == [3, 4, 5]
    assert out.readings["patient_id"].to_list() == ["P8", "P9", "P1"]
    reasons = dict(zip(out.quarantine["seq"], out.quarantine["reason_code"], strict=True))
    assert reasons == {1: "unassigned_device", 2: "unassigned_device",
                       6: "inconsistent_bp", 7: "inconsistent_bp"}


def test_nan_is_a_missing_value_unless_flagged_absent() -> None:
    out = run([r("heart_rate", float("nan"), "/min", seq=1),
               r("heart_rate", float("nan"), "/min", seq=2, quality=Quality.VALUE_ABSENT)])
    assert out.readings["seq"].to_list() == [2]
    assert out.readings["value"].to_list() == [None]
    assert out.quarantine["reason_code"].to_list() == ["missing_value"]
