"""Replay a simulator scenario through the real pipeline and the engine, faster than real time.

The scenario's messages come from :func:`simulators.generate` (pure, seeded). Each one is
decoded by the gateway's :class:`~gateway.formats.router.Router` with the shipped routes and
device profiles, batched every ``batch_s`` of simulated time with
:func:`pipeline.batcher.build_batch`, normalized (:mod:`pipeline.normalize`) against the fleet's
assignments, and given to an :class:`~alerts.engine.AlertEngine` whose clock is the simulated
time (the end of the batch window). Windows without messages still tick the engine, so
staleness, re-notification and escalation run as they would live.

Care plans: a patient with a CGM gets ``t1d-cgm`` (plus ``adult-ward`` when it also has a
monitor or watch), everyone else ``adult-ward``; ``alerts/care_plans/evaluation.toml`` and
``--plan P004=copd-scale2`` override that per patient.

The naive policy is measured on the same signals: every signal sample at or beyond a rule's
highest limit is one alert (no sustain, no hysteresis, no episodes). Reading-driven rules have
one sample per reading (per payload for technical rules); the clock-driven ones (staleness,
NEWS2) one per engine sweep (``check_interval_s``, 5 s).
"""

from __future__ import annotations

import re
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl

from alerts.compile import Compiled
from alerts.config import AlertConfig
from alerts.engine import AlertEngine
from alerts.errors import CarePlanError
from alerts.evaluate import naive_breaches
from alerts.lifecycle import AlertEvent
from alerts.plans import CarePlan, merge_templates
from gateway.formats.router import DEFAULT_ROUTES, Router, load_default_profiles
from gateway.records import RawMessage, RawReading, Rejection, Source
from pipeline.batcher import build_batch
from pipeline.catalogue import catalogue
from pipeline.normalize import Normalizer, normalize
from pipeline.readings import UTC_US
from simulators import EventRecord, FleetConfig, Scenario, generate, ground_truth, plan_fleet

__all__ = [
    "DEFAULT_BATCH_S",
    "DEFAULT_START",
    "EVALUATION_PLANS",
    "ReplayConfig",
    "ReplayResult",
    "default_templates",
    "replay",
]

DEFAULT_START = "2025-03-03T08:00:00+00:00"
"""Simulated start (a Monday morning, UTC): fixed so that runs are reproducible."""
DEFAULT_BATCH_S = 2.0
DEFAULT_PATIENTS = 8
EVALUATION_PLANS = Path(__file__).resolve().parent / "care_plans" / "evaluation.toml"
"""Care-plan templates per patient for the shipped evaluation scenarios, by scenario name."""
_PATIENT_NUM = re.compile(r"P(\d+)")


def _us(text: str) -> int:
    dt = datetime.fromisoformat(text)
    return round(dt.timestamp()) * 1_000_000


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    """One evaluation run.

    Attributes:
        scenario: Simulator scenario file.
        seed: Simulation seed.
        patients: Fleet size (default: at least 8 and every patient the scenario names).
        duration_s: Simulated seconds (default: the scenario's duration, else one hour).
        start_us: Simulated start, UTC microseconds.
        batch_s: Simulated seconds per batch.
        plans: Template names per patient, overriding the defaults.
        config: Engine settings.
    """

    scenario: Path
    seed: int = 1
    patients: int | None = None
    duration_s: float | None = None
    start_us: int = field(default_factory=lambda: _us(DEFAULT_START))
    batch_s: float = DEFAULT_BATCH_S
    plans: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    config: AlertConfig = field(default_factory=AlertConfig)

    def __post_init__(self) -> None:
        if not 0.05 <= self.batch_s <= 60:
            raise CarePlanError(f"evaluate: batch_s: expected 0.05..60 s, got {self.batch_s}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise CarePlanError(f"evaluate: duration: expected > 0 s, got {self.duration_s}")


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay produced.

    Attributes:
        scenario: The loaded scenario.
        truth: Ground-truth event log.
        plans: Plan of each patient.
        events: Every alert event, in order.
        naive: Naive-policy alerts: ``patient_id, rule_id, side, t``.
        values: The generated values (``patient_id, metric, t, value``, canonical units).
        patients: Fleet size.
        duration_s: Simulated seconds.
        messages: Messages replayed.
        readings: Readings stored by the pipeline (after normalization).
        quarantined: Rows quarantined by decoding and normalization.
        wall_s: Wall-clock seconds the replay took.
    """

    scenario: Scenario
    truth: tuple[EventRecord, ...]
    plans: Mapping[str, CarePlan]
    events: list[AlertEvent]
    naive: pl.DataFrame
    values: pl.DataFrame
    patients: int
    duration_s: float
    messages: int
    readings: int
    quarantined: int
    wall_s: float


def default_templates(kinds: set[str]) -> tuple[str, ...]:
    """Templates for a patient with these device kinds."""
    vitals = bool(kinds & {"bedside_monitor", "smartwatch"})
    if "cgm" in kinds or "glucose_meter" in kinds:
        return ("adult-ward", "t1d-cgm") if vitals else ("t1d-cgm",)
    return ("adult-ward",)


def _shipped_plans(name: str) -> dict[str, tuple[str, ...]]:
    if not EVALUATION_PLANS.is_file():
        return {}
    doc = tomllib.loads(EVALUATION_PLANS.read_text(encoding="utf-8"))
    table = doc.get("scenario", {}).get(name, {})
    return {p: tuple(t) if isinstance(t, list) else (str(t),) for p, t in table.items()}


def _fleet_size(scenario_path: Path, wanted: int | None) -> int:
    text = scenario_path.read_text(encoding="utf-8")
    referenced = max((int(n) for n in _PATIENT_NUM.findall(text)), default=1)
    return max(referenced, wanted if wanted is not None else DEFAULT_PATIENTS)


def _plans(cfg: ReplayConfig, fleet: FleetConfig, name: str) -> dict[str, CarePlan]:
    plan = plan_fleet(fleet)
    chosen = {**_shipped_plans(name), **cfg.plans}
    out = {}
    for p in plan.patients:
        kinds = {d.kind for d in plan.devices_of(p.patient_id)}
        names = chosen.get(p.patient_id, default_templates(kinds))
        tpl = merge_templates(names)
        out[p.patient_id] = CarePlan(p.patient_id, 1, cfg.start_us, "evaluate", "evaluation",
                                     tpl.name, tpl.settings, tpl.rules)
    return out


def _assignments(fleet: FleetConfig, start_us: int) -> pl.DataFrame:
    devices = plan_fleet(fleet).devices
    return pl.DataFrame({
        "device_id": [d.device_id for d in devices],
        "patient_id": [d.patient_id for d in devices],
        "valid_from": pl.Series([start_us - 86_400_000_000] * len(devices)).cast(UTC_US),
        "valid_to": pl.Series([None] * len(devices), dtype=pl.Int64).cast(UTC_US),
    })  # fmt: skip


def replay(cfg: ReplayConfig) -> ReplayResult:
    """Run the scenario (see module docs)."""
    wall = time.perf_counter()
    size = _fleet_size(cfg.scenario, cfg.patients)
    probe = FleetConfig(patients=size, seed=cfg.seed, scenario=cfg.scenario)
    scenario = plan_fleet(probe).scenario
    assert scenario is not None
    duration = cfg.duration_s or scenario.duration_s or 3600.0
    fleet = FleetConfig(patients=size, seed=cfg.seed, scenario=cfg.scenario, duration_s=duration)
    plans = _plans(cfg, fleet, scenario.name)
    engine = AlertEngine(cfg.config, plans=plans.values())
    assignments = _assignments(fleet, cfg.start_us)
    engine.set_assignments(assignments)
    naive_parts: list[pl.DataFrame] = []

    def observe(signals: pl.DataFrame, comp: Compiled, origin: str) -> None:
        hits = naive_breaches(signals, comp.conds)
        if hits.height == 0:
            return
        hits = hits.join(comp.rules.select("rule_idx", "patient_id", "rule_id", "kind"),
                         on="rule_idx")
        clocked = pl.col("kind").is_in(["staleness", "news2"])
        keep = clocked if origin == "sweep" else ~clocked
        naive_parts.append(hits.filter(keep).select("patient_id", "rule_id", "low_side", "t"))

    engine.signal_observers.append(observe)
    router = Router(DEFAULT_ROUTES, load_default_profiles(catalogue().names))
    normalizer = Normalizer.from_catalogue()
    step = round(cfg.batch_s * 1e6)
    end = cfg.start_us + round(duration * 1e6)
    events: list[AlertEvent] = []
    pending: list[RawMessage] = []
    counts = {"messages": 0, "readings": 0, "quarantined": 0}

    def flush(now_us: int) -> None:
        if not pending:
            events.extend(engine.tick(now_us))
            return
        readings: list[RawReading] = []
        origins: list[int] = []
        rejects: list[tuple[int, Rejection]] = []
        for i, msg in enumerate(pending):
            decoded = router.decode(msg)
            readings += decoded.readings
            origins += [i] * len(decoded.readings)
            rejects += [(i, rej) for rej in decoded.rejections]
        batch = normalize(build_batch(pending, readings, origins, rejects), normalizer,
                          assignments, now_us)
        counts["messages"] += len(pending)
        counts["readings"] += batch.readings.height
        counts["quarantined"] += batch.quarantine.height
        pending.clear()
        events.extend(engine.process(batch, now_us))
        events.extend(engine.tick(now_us))

    window = cfg.start_us + step
    truth: list[tuple[str, str, int, float]] = []
    for msg in generate(fleet, cfg.start_us):
        while msg.ts_us >= window:
            flush(window)
            window += step
        pending.append(RawMessage(msg.topic, msg.payload, msg.ts_us, Source.SIM))
        truth += [(msg.patient_id, r.metric, r.observed_at_us, r.value) for r in msg.readings]
    while window <= end + step:
        flush(window)
        window += step
    naive = (pl.concat(naive_parts) if naive_parts else
             pl.DataFrame(schema={"patient_id": pl.Utf8, "rule_id": pl.Utf8,
                                  "low_side": pl.Boolean, "t": pl.Int64}))
    naive = naive.with_columns(side=pl.when(pl.col("low_side")).then(pl.lit("low"))
                               .otherwise(pl.lit("high"))).drop("low_side")
    values = pl.DataFrame(truth, schema={"patient_id": pl.Utf8, "metric": pl.Utf8,
                                         "t": pl.Int64, "value": pl.Float64}, orient="row")
    return ReplayResult(scenario, ground_truth(fleet, cfg.start_us), plans, events, naive,
                        values, size, duration, counts["messages"], counts["readings"],
                        counts["quarantined"], time.perf_counter() - wall)
