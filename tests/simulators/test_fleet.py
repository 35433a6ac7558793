"""The fleet plan and generated messages: ids, seeding, cadence, events, dropout, rate."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest

from simulators import native
from simulators.config import FleetConfig, Timeline
from simulators.fleet import SimDevice, SimMessage, generate, ground_truth, plan_fleet
from simulators.scenario import write_event_log
from tests.simulators.conftest import T0, US

SCENARIOS = Path(__file__).resolve().parents[2] / "simulators" / "scenarios"
CLINICAL = SCENARIOS / "clinical-events.toml"
MIN = 60 * US
HOUR = 60 * MIN


def _by_device(msgs: list[SimMessage]) -> dict[str, list[SimMessage]]:
    out: dict[str, list[SimMessage]] = defaultdict(list)
    for m in msgs:
        out[m.device_id].append(m)
    return out


def test_default_mix_for_seed_1() -> None:
    plan = plan_fleet(FleetConfig())
    assert [d.device_id for d in plan.devices] == [
        "PW-P001", "SC-P001", "BM-P002", "BM-P003", "BM-P004", "SC-P004", "PW-P005", "SC-P005",
        "PW-P006", "CGM-P006", "GM-P006", "SC-P006", "PW-P007", "BM-P008", "CGM-P008", "GM-P008",
        "SC-P008",
    ]  # fmt: skip
    assert [p.patient_id for p in plan.patients if p.diabetic] == ["P006", "P008"]
    assert plan.devices_of("P006")[1] == SimDevice("CGM-P006", "cgm", "P006")


def test_every_patient_has_a_monitor_or_watch_and_diabetics_a_cgm_and_meter() -> None:
    plan = plan_fleet(FleetConfig(patients=40, seed=5))
    for p in plan.patients:
        kinds = [d.kind for d in plan.devices_of(p.patient_id)]
        assert ("bedside_monitor" in kinds) != ("smartwatch" in kinds)
        assert p.diabetic == ("cgm" in kinds) == ("glucose_meter" in kinds)
    counts = Counter(d.kind for d in plan.devices)
    assert 10 <= counts["bedside_monitor"] <= 30 and 10 <= counts["scale"] <= 30
    assert plan_fleet(FleetConfig(patients=40, seed=6)).devices != plan.devices


def test_first_patient_shifts_the_range_and_keeps_each_patients_devices() -> None:
    whole = plan_fleet(FleetConfig(patients=12))
    tail = plan_fleet(FleetConfig(patients=4, first_patient=9))
    assert [p.patient_id for p in tail.patients] == ["P009", "P010", "P011", "P012"]
    assert tail.devices == tuple(d for d in whole.devices if d.patient_id >= "P009")


def test_kinds_option_and_scenario_overrides() -> None:
    plan = plan_fleet(FleetConfig(patients=3, kinds=("scale", "smartwatch")))
    assert [d.device_id for d in plan.devices] == [
        "PW-P001", "SC-P001", "PW-P002", "SC-P002", "PW-P003", "SC-P003",
    ]  # fmt: skip
    plan = plan_fleet(FleetConfig(patients=7, kinds=("scale",), scenario=CLINICAL))
    assert [d.device_id for d in plan.devices_of("P003")] == ["BM-P003", "CGM-P003", "GM-P003"]
    assert [d.device_id for d in plan.devices_of("P007")] == ["PW-P007", "SC-P007"]
    assert plan.patients[2].diabetic


def test_same_seed_identical_messages_and_event_log(tmp_path: Path) -> None:
    cfg = FleetConfig(scenario=CLINICAL, duration_s=1800.0, acceleration=30.0)
    first = list(generate(cfg, T0))
    assert first == list(generate(cfg, T0))
    assert len(first) > 3000
    write_event_log(tmp_path / "a.jsonl", ground_truth(cfg, T0))
    write_event_log(tmp_path / "b.jsonl", ground_truth(cfg, T0))
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    other = list(generate(FleetConfig(scenario=CLINICAL, seed=2, duration_s=1800.0), T0))
    assert [m.payload for m in other[:50]] != [m.payload for m in first[:50]]


def test_messages_are_in_time_order_inside_the_timeline() -> None:
    cfg = FleetConfig(duration_s=3 * 3600.0, acceleration=90.0, scenario=CLINICAL)
    tl = Timeline.of(cfg, T0)
    assert tl.end_us is not None
    msgs = list(generate(cfg, T0))
    times = [m.ts_us for m in msgs]
    assert times == sorted(times)
    assert tl.start_us <= times[0] and times[-1] < tl.end_us <= T0 + 120 * US
    assert all(m.ts_us <= tl.wall_time_us(m.ts_us) for m in msgs)
    assert all(r.observed_at_us <= m.ts_us for m in msgs for r in m.readings)


def test_cadence_per_kind() -> None:
    kinds = ("smartwatch", "bedside_monitor", "cgm")
    msgs = list(generate(FleetConfig(patients=2, kinds=kinds, duration_s=2 * 3600.0), T0))
    by_device = _by_device(msgs)
    spans = {"PW": (5.0, 15.0), "BM": (1.0, 5.0), "CGM": (300.0, 300.0)}
    for device_id, dev_msgs in by_device.items():
        low, high = spans[device_id.split("-")[0]]
        gaps = [(b.ts_us - a.ts_us) / US for a, b in itertools.pairwise(dev_msgs)]
        assert low <= min(gaps) and max(gaps) <= high, device_id
        assert [m.readings[0].seq for m in dev_msgs] == list(range(1, len(dev_msgs) + 1))

    def gaps_of(device_id: str, metric: str) -> list[float]:
        times = [r.observed_at_us for m in by_device[device_id] for r in m.readings
                 if r.metric == metric]  # fmt: skip
        return [(b - a) / US for a, b in itertools.pairwise(times)]

    bp = gaps_of("BM-P001", "systolic_bp")
    temp = gaps_of("BM-P001", "body_temperature")
    hrv = gaps_of("PW-P001", "hrv_sdnn")
    assert len(bp) >= 7 and all(300 <= g <= 905 for g in bp)
    assert len(temp) >= 20 and all(270 <= g <= 335 for g in temp)
    assert len(hrv) >= 20 and all(300 <= g <= 315 for g in hrv)
    heart = [m for m in by_device["BM-P001"] if m.readings[0].metric == "heart_rate"]
    assert len(heart) == len(by_device["BM-P001"])  # HR, RR and SpO2 go in every message
    assert {r.metric for r in by_device["BM-P001"][0].readings} >= {
        "heart_rate", "respiratory_rate", "spo2",
    }  # fmt: skip


def test_daily_devices_measure_at_their_times() -> None:
    cfg = FleetConfig(patients=2, kinds=("glucose_meter", "scale"), duration_s=3 * 86400.0)
    by_device = _by_device(list(generate(cfg, T0)))
    assert {d: len(m) for d, m in by_device.items()} == {
        "GM-P001": 12, "SC-P001": 3, "GM-P002": 12, "SC-P002": 3,
    }  # fmt: skip
    for device_id, slots, jitter_s in (("GM-P001", (7, 12, 18, 22), 1200), ("SC-P002", (7,), 1800)):
        for i, m in enumerate(by_device[device_id]):
            day, slot = divmod(i, len(slots))
            expected = T0 + day * 86400 * US + slots[slot] * HOUR
            assert abs(m.ts_us - expected) <= jitter_s * US + 1000


def _readings(msgs: list[SimMessage], patient: str, metrics: tuple[str, ...], lo: int, hi: int
              ) -> list[float]:  # fmt: skip
    return [r.value for m in msgs if m.patient_id == patient for r in m.readings
            if r.metric in metrics and lo <= r.observed_at_us <= hi]  # fmt: skip


TOLERANCE = {"spo2": 2.5, "heart_rate": 7.0, "body_temperature": 0.4, "systolic_bp": 13.0,
             "cgm_glucose": 10.0, "glucose": 10.0}  # fmt: skip


def test_each_event_shows_at_its_scripted_time() -> None:
    cfg = FleetConfig(scenario=CLINICAL, duration_s=3600.0)
    msgs = list(generate(cfg, T0))
    records = ground_truth(cfg, T0)
    hypo = records[0]
    assert (hypo.kind, hypo.patient_id, hypo.device_ids, hypo.metrics, hypo.target) == (
        "hypoglycaemia", "P003", ("CGM-P003", "GM-P003"), ("cgm_glucose", "glucose"), 48.0,
    )  # fmt: skip
    assert (hypo.start_us, hypo.peak_us, hypo.plateau_end_us, hypo.end_us) == (
        T0 + 10 * MIN, T0 + 20 * MIN, T0 + 35 * MIN, T0 + 50 * MIN,
    )  # fmt: skip
    for rec in records:
        if rec.target is None:
            continue
        tol = TOLERANCE[rec.metrics[0]]
        plateau = _readings(msgs, rec.patient_id, rec.metrics, rec.peak_us, rec.plateau_end_us)
        before = _readings(msgs, rec.patient_id, rec.metrics, rec.start_us - 10 * MIN,
                           rec.start_us)  # fmt: skip
        assert plateau, rec.kind
        assert all(abs(v - rec.target) <= tol for v in plateau), (rec.kind, plateau)
        assert before and all(abs(v - rec.target) > tol for v in before), (rec.kind, before)
        shown = {m.device_id for m in msgs for r in m.readings if r.metric in rec.metrics
                 and m.patient_id == rec.patient_id}  # fmt: skip
        assert shown and shown <= set(rec.device_ids)
    hypotension = records[4]
    for m in msgs:
        vals = {r.metric: r.value for r in m.readings}
        if m.device_id == "BM-P005" and "systolic_bp" in vals:
            assert vals["diastolic_bp"] < vals["mean_bp"] < vals["systolic_bp"]
    assert hypotension.derived_metrics == ("diastolic_bp", "mean_bp")


def test_dropout_leaves_a_gap_then_the_cgm_backfills() -> None:
    cfg = FleetConfig(scenario=CLINICAL, duration_s=3600.0)
    msgs = [m for m in generate(cfg, T0) if m.device_id == "CGM-P006"]
    (dropout,) = [r for r in ground_truth(cfg, T0) if r.kind == "dropout"]
    assert (dropout.start_us, dropout.end_us) == (T0 + 12 * MIN, T0 + 32 * MIN)
    assert not [m for m in msgs if dropout.start_us <= m.ts_us < dropout.end_us]
    before = [m for m in msgs if m.ts_us < dropout.start_us]
    after = [m for m in msgs if m.ts_us >= dropout.end_us]
    backfill, resumed = after[0], after[1]
    assert backfill.ts_us == resumed.ts_us < dropout.end_us + 300 * US
    last_seq = before[-1].readings[0].seq
    assert [r.seq - last_seq for r in backfill.readings] == [1, 2, 3, 4]
    last_time = before[-1].readings[0].observed_at_us
    assert [(r.observed_at_us - last_time) // US for r in backfill.readings] == [
        300,
        600,
        900,
        1200,
    ]
    assert resumed.readings[0].seq == last_seq + 5 and len(resumed.readings) == 1
    body = orjson.loads(backfill.payload)
    assert [(p["seq"], p["mgdl"]) for p in body["egvs"]] == [
        (r.seq, r.value) for r in backfill.readings
    ]
    assert backfill.topic == native.topic_for("cgm", "CGM-P006")


def _valid_watch_payload(payload: bytes) -> bool:
    try:
        doc = orjson.loads(payload)
        hr = doc["vitals"]["hr_bpm"]
        return isinstance(doc["time_ms"], int) and isinstance(hr, int) and 20 <= hr <= 300
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return False


def test_garbage_device_sends_garbage_only_in_its_window() -> None:
    cfg = FleetConfig(scenario=CLINICAL, duration_s=3600.0)
    (rec,) = [r for r in ground_truth(cfg, T0) if r.kind == "garbage"]
    msgs = [m for m in generate(cfg, T0) if m.device_id == "PW-P007"]
    inside = [m for m in msgs if rec.start_us <= m.ts_us < rec.end_us]
    outside = [m for m in msgs if not rec.start_us <= m.ts_us < rec.end_us]
    assert 20 <= len(inside) <= 60
    assert all(m.garbage and m.readings == () for m in inside)
    assert not any(_valid_watch_payload(m.payload) for m in inside)
    assert all(not m.garbage and _valid_watch_payload(m.payload) for m in outside)
    assert {m.topic for m in msgs} == {native.topic_for("smartwatch", "PW-P007")}
    assert rec.device_ids == ("PW-P007",)


@pytest.mark.parametrize(
    ("rate", "duration_s", "acceleration", "expected"),
    [(50.0, 60.0, 1.0, 3000), (7.0, 600.0, 10.0, 420), (20000.0, 1.0, 1.0, 20000)],
)
def test_rate_override_yields_the_requested_count(
    rate: float, duration_s: float, acceleration: float, expected: int
) -> None:
    cfg = FleetConfig(patients=4, rate=rate, duration_s=duration_s, acceleration=acceleration)
    msgs = list(generate(cfg, T0 + 123))  # a start off the millisecond grid
    assert len(msgs) == expected
    counts = Counter(m.device_id for m in msgs)
    assert max(counts.values()) - min(counts.values()) <= 1
    assert set(counts) == {d.device_id for d in plan_fleet(cfg).devices}
    tl = Timeline.of(cfg, T0 + 123)
    wall = [tl.wall_time_us(m.ts_us) for m in msgs]
    assert wall[-1] - wall[0] <= duration_s / acceleration * US


def test_smartwatch_steps_are_a_daily_total() -> None:
    start = T0 + 23 * HOUR + 30 * MIN
    cfg = FleetConfig(patients=1, kinds=("smartwatch",), duration_s=3600.0)
    steps = [(r.observed_at_us, r.value) for m in generate(cfg, start) for r in m.readings
             if r.metric == "steps"]  # fmt: skip
    before = [v for t, v in steps if t < T0 + 24 * HOUR]
    after = [v for t, v in steps if t >= T0 + 24 * HOUR]
    assert before == sorted(before) and before[0] > 1000.0
    assert after and after == [0.0] * len(after)


def test_open_ended_run_keeps_going() -> None:
    msgs = list(itertools.islice(generate(FleetConfig(patients=1), T0), 5000))
    assert len(msgs) == 5000
    assert msgs[-1].ts_us > T0 + 3 * HOUR
