"""The live fleet with an injected clock and publisher: pacing, stop, event log."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from simulators import native
from simulators.config import FleetConfig, Timeline
from simulators.fleet import generate, ground_truth
from simulators.publisher import Fleet, MqttPublisher
from simulators.scenario import read_event_log
from tests.simulators.conftest import T0, US, FakeClock, ListPublisher

CLINICAL = Path(__file__).resolve().parents[2] / "simulators" / "scenarios" / "clinical-events.toml"


async def test_fleet_publishes_the_generated_messages_at_their_wall_time(
    clock: FakeClock, tmp_path: Path
) -> None:
    log = tmp_path / "events.jsonl"
    cfg = FleetConfig(scenario=CLINICAL, duration_s=1200.0, acceleration=20.0, event_log=log)
    sink = ListPublisher(clock)
    async with Fleet(cfg, clock=clock, publisher=sink) as fleet:
        assert fleet.timeline == Timeline.of(cfg, T0)
        assert read_event_log(log) == list(ground_truth(cfg, T0))
        assert await fleet.run_until() == len(sink.published)
        assert fleet.max_lag_us == 0
    expected = list(generate(cfg, T0))
    assert [(t, p) for _, t, p in sink.published] == [(m.topic, m.payload) for m in expected]
    tl = Timeline.of(cfg, T0)
    assert [at for at, _, _ in sink.published] == [tl.wall_time_us(m.ts_us) for m in expected]
    assert all(m.ts_us <= at for (at, _, _), m in zip(sink.published, expected, strict=True))
    assert clock.now <= T0 + 60 * US
    assert (fleet.published, fleet.errors, sink.entered, sink.exited) == (len(expected), 0, 1, 1)


async def test_stop_event_pauses_and_run_until_resumes(clock: FakeClock) -> None:
    cfg = FleetConfig(patients=3, duration_s=600.0, acceleration=10.0)
    sink = ListPublisher(clock)
    stop = asyncio.Event()
    sink.on_publish = lambda n: stop.set() if n == 100 else None
    async with Fleet(cfg, clock=clock, publisher=sink) as fleet:
        assert await fleet.run_until(stop) == 100
        stop.clear()
        total = await fleet.run_until(stop)
    expected = [(m.topic, m.payload) for m in generate(cfg, T0)]
    assert total == len(expected) > 100
    assert [(t, p) for _, t, p in sink.published] == expected


async def test_stop_event_interrupts_a_long_sleep() -> None:
    class StuckClock(FakeClock):
        async def sleep_until(self, t_us: int) -> None:
            await asyncio.Event().wait()  # never wakes by itself

    clock = StuckClock(T0)
    cfg = FleetConfig(patients=1, kinds=("scale",))
    stop = asyncio.Event()
    async with Fleet(cfg, clock=clock, publisher=ListPublisher(clock)) as fleet:
        task = asyncio.create_task(fleet.run_until(stop))
        await asyncio.sleep(0)
        stop.set()
        assert await asyncio.wait_for(task, 5.0) == 0


async def test_refused_publishes_are_counted(clock: FakeClock) -> None:
    cfg = FleetConfig(patients=2, kinds=("smartwatch", "cgm"), duration_s=900.0)
    cgm_topics = frozenset(
        {native.topic_for("cgm", "CGM-P001"), native.topic_for("cgm", "CGM-P002")}
    )
    sink = ListPublisher(clock, fail_topics=cgm_topics)
    async with Fleet(cfg, clock=clock, publisher=sink) as fleet:
        await fleet.run_until()
    expected = list(generate(cfg, T0))
    refused = sum(m.topic in cgm_topics for m in expected)
    assert refused == 6
    assert (fleet.published, fleet.errors) == (len(expected) - 6, 6)


async def test_run_until_outside_the_context_is_an_error(clock: FakeClock) -> None:
    fleet = Fleet(FleetConfig(), clock=clock, publisher=ListPublisher(clock))
    with pytest.raises(RuntimeError, match="outside 'async with'"):
        await fleet.run_until()
    with pytest.raises(RuntimeError, match="outside 'async with'"):
        await MqttPublisher(FleetConfig()).publish("t", b"x")


async def test_unwritable_event_log_is_a_config_error_and_closes_the_publisher(
    clock: FakeClock, tmp_path: Path
) -> None:
    log = tmp_path / "missing-dir" / "events.jsonl"
    sink = ListPublisher(clock)
    fleet = Fleet(FleetConfig(scenario=CLINICAL, event_log=log), clock=clock, publisher=sink)
    with pytest.raises(ConfigError, match=r"events\.jsonl: cannot write the event log"):
        async with fleet:
            pass
    assert (sink.entered, sink.exited) == (1, 1)


async def test_a_slow_publisher_falls_behind_and_the_lag_is_reported(clock: FakeClock) -> None:
    cfg = FleetConfig(patients=1, kinds=("bedside_monitor",), duration_s=60.0)
    sink = ListPublisher(clock)
    sink.on_publish = lambda n: setattr(clock, "now", clock.now + 10 * US)  # 10 s per message
    async with Fleet(cfg, clock=clock, publisher=sink) as fleet:
        await fleet.run_until()
    expected = list(generate(cfg, T0))
    assert [(t, p) for _, t, p in sink.published] == [(m.topic, m.payload) for m in expected]
    due = [Timeline.of(cfg, T0).wall_time_us(m.ts_us) for m in expected]
    lags = [at - d for (at, _, _), d in zip(sink.published, due, strict=True)]
    assert fleet.max_lag_us == max(lags) > 100 * US
