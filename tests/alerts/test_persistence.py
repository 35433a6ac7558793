"""DuckDB persistence: versioned care plans, the event log, and engine state across restarts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from alerts.config import AlertConfig
from alerts.engine import AlertEngine
from alerts.errors import CarePlanError, PlanNotFound
from alerts.plan_store import CarePlans
from alerts.schema import SCHEMA_VERSION, migrate
from pipeline.errors import RetryableStoreError
from pipeline.registry import assign
from pipeline.store import DuckDbStore, StoreConfig
from tests.alerts.helpers import T0, S, batch, rule_toml

CFG = AlertConfig(check_interval_s=3600.0)
HR_COUNT = rule_toml(id="hr", kind="threshold", metric="heart_rate", high=120, critical_high=140,
                     consecutive=3, priority="high")


def store(path: Path) -> DuckDbStore:
    return DuckDbStore(StoreConfig(path=path / "vw.duckdb", idle_checkpoint_s=0))


async def test_migrate_is_idempotent(tmp_path: Path) -> None:
    async with store(tmp_path) as s:
        assert await s.call(migrate) == SCHEMA_VERSION
        assert await s.call(migrate) == 0
        tables = s.query("SELECT table_name FROM information_schema.tables ORDER BY 1")
        names = set(tables["table_name"].to_list())
        assert {"care_plans", "alerts", "alert_events", "alert_snoozes"} <= names


async def test_plan_versions_are_kept_with_author_time_and_reason(tmp_path: Path) -> None:
    clock = iter([T0, T0 + S, T0 + 2 * S]).__next__
    async with store(tmp_path) as s:
        await s.call(migrate)
        plans = CarePlans(s, clock)
        v1 = await plans.apply_template("P003", ["adult-ward", "t1d-cgm"], author="dr.lee",
                                        reason="admitted")
        v2 = await plans.set("P003", HR_COUNT, author="dr.kim", reason="only heart rate")
        assert (v1.version, v1.template, v2.version, v2.template) == (1, "adult-ward+t1d-cgm",
                                                                      2, "")
        assert [r.id for r in (await plans.current("P003")).rules] == ["hr"]
        old = await plans.version("P003", 1)
        assert "glucose_low" in [r.id for r in old.rules]
        history = await plans.history("P003")
        assert [(h["version"], h["author"], h["reason"], h["created_at"]) for h in history] == [
            (1, "dr.lee", "admitted", "2025-03-03T11:06:40Z"),
            (2, "dr.kim", "only heart rate", "2025-03-03T11:06:41Z"),
        ]
        with pytest.raises(PlanNotFound, match="P009 has no care plan"):
            await plans.current("P009")
        with pytest.raises(PlanNotFound, match="P003 has no version 7"):
            await plans.version("P003", 7)
        with pytest.raises(CarePlanError, match="rule 'hr': low: 130 /min must be below high"):
            await plans.set("P003", rule_toml(id="hr", kind="threshold", metric="heart_rate",
                                              low=130, high=120), author="x", reason="y")
        with pytest.raises(CarePlanError, match="reason: expected why"):
            await plans.set("P003", HR_COUNT, author="x", reason=" ")
        assert len(await plans.history("P003")) == 2


async def _engine_with_plan(s: DuckDbStore) -> AlertEngine:
    await s.call(migrate)
    await CarePlans(s, lambda: T0).set("P1", HR_COUNT, author="dr", reason="test")
    await s.call(assign, "D1", "P1", None, None)
    return await AlertEngine.from_store(s, CFG)


async def test_sustain_state_and_open_alerts_survive_a_restart(tmp_path: Path) -> None:
    async with store(tmp_path) as s:
        eng = await _engine_with_plan(s)
        assert [r.id for r in eng.plan("P1").rules] == ["hr"]  # type: ignore[union-attr]
        assert eng.process(batch([("heart_rate", 125, T0)]), T0) == []
        assert eng.process(batch([("heart_rate", 126, T0 + S)]), T0 + S) == []
        await eng.sync(s, T0 + S)
    async with store(tmp_path) as s:
        eng = await AlertEngine.from_store(s, CFG)
        (event,) = eng.process(batch([("heart_rate", 127, T0 + 2 * S)]), T0 + 2 * S)
        assert (event.kind, event.value) == ("opened", 125.0)  # the reading that crossed
        alert_id = event.alert_id
        eng.snooze("P1", "hr", "high", 600, "nurse", T0 + 3 * S, reason="procedure")
        await eng.sync(s, T0 + 3 * S)
    async with store(tmp_path) as s:
        eng = await AlertEngine.from_store(s, CFG)
        (alert,) = eng.open_alerts()
        assert (alert.alert_id, alert.state, alert.trigger_value) == (alert_id, "active", 125.0)
        assert eng.book.snoozes[("P1", "hr", "high")].reason == "procedure"
        events = eng.process(batch([("heart_rate", 150, T0 + 4 * S)]), T0 + 4 * S)
        assert [e.kind for e in events] == []  # level 2 needs 3 readings too
        eng.acknowledge(alert_id, "nurse", T0 + 5 * S)
        await eng.sync(s, T0 + 5 * S)
        log = s.query("SELECT event_id, kind, actor FROM alert_events ORDER BY event_id")
        assert log.rows() == [(1, "opened", "system"), (2, "snoozed", "nurse"),
                              (3, "acknowledged", "nurse")]
        row = s.query("SELECT state, acknowledged_by, plan_version FROM alerts").row(0)
        assert row == ("acknowledged", "nurse", 1)


async def test_a_redelivered_batch_after_a_restart_is_not_counted_twice(tmp_path: Path) -> None:
    async with store(tmp_path) as s:
        eng = await _engine_with_plan(s)
        eng.process(batch([("heart_rate", 125, T0)]), T0)
        eng.process(batch([("heart_rate", 126, T0 + S)]), T0 + S)
        await eng.sync(s, T0 + S)
    async with store(tmp_path) as s:
        eng = await AlertEngine.from_store(s, CFG)
        assert eng.process(batch([("heart_rate", 126, T0 + S)]), T0 + 2 * S) == []
        assert eng.stats.late == 1


async def test_the_engine_picks_up_new_plan_versions_on_sync(tmp_path: Path) -> None:
    async with store(tmp_path) as s:
        eng = await _engine_with_plan(s)
        await CarePlans(s, lambda: T0).set(
            "P1", rule_toml(id="hr", kind="threshold", metric="heart_rate", high=100),
            author="dr", reason="lower")
        assert await eng.sync(s, T0) == []
        assert eng.plan("P1").version == 2  # type: ignore[union-attr]
        (event,) = eng.process(batch([("heart_rate", 105, T0 + S)]), T0 + S)
        assert (event.kind, event.plan_version) == ("opened", 2)


async def test_manual_observations_are_restored(tmp_path: Path) -> None:
    news = rule_toml(id="news2", kind="news2")
    async with store(tmp_path) as s:
        await s.call(migrate)
        await CarePlans(s, lambda: T0).set("P1", news, author="dr", reason="t")
        eng = await AlertEngine.from_store(s, CFG)
        events = eng.record_observation("P1", consciousness="P", by="nurse", now_us=T0)
        assert [(e.kind, e.level) for e in events] == [("opened", 1)]
        await eng.sync(s, T0)
    async with store(tmp_path) as s:
        eng = await AlertEngine.from_store(s, CFG)
        assert eng.manual_observations().rows() == [("P1", "P", None)]


class FlakyStore:
    """A store whose first call fails with a retryable error."""

    def __init__(self, inner: DuckDbStore) -> None:
        self.inner = inner
        self.failed = False

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if not self.failed:
            self.failed = True
            raise RetryableStoreError("disk hiccup")
        return await self.inner.call(fn, *args)


async def test_a_failed_sync_loses_nothing(tmp_path: Path) -> None:
    async with store(tmp_path) as s:
        eng = await _engine_with_plan(s)
        for k in range(3):
            eng.process(batch([("heart_rate", 125, T0 + k * S)]), T0 + k * S)
        flaky = FlakyStore(s)
        with pytest.raises(RetryableStoreError):
            await eng.sync(flaky, T0 + 3 * S)  # type: ignore[arg-type]
        await eng.sync(flaky, T0 + 3 * S)  # type: ignore[arg-type]
        assert s.query("SELECT kind FROM alert_events").rows() == [("opened",)]
        latest = s.query("SELECT value FROM alert_state_latest").rows()
        assert latest == [(125.0,)]
