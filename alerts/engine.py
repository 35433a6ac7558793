"""The alert engine: normalized batches in, alert events out, state carried and persisted.

::

    engine = await AlertEngine.from_store(store)          # migrate, load plans and state
    events = engine.process(batch, now_us)                 # before the batch is stored
    ...hand events on (dashboard, pager)...
    await store.write(batch)
    events += await engine.sync(store, now_us)             # persist; pick up plan changes
    events = engine.tick(now_us)                           # about every second (a task)

:meth:`AlertEngine.process` is vectorized: signal producers (:mod:`alerts.signals`) and the
condition machinery (:mod:`alerts.evaluate`) work on whole frames; only episode level changes
reach Python (:class:`~alerts.episodes.EpisodeBook`). Readings not newer than the latest one
already evaluated for the same patient and metric are skipped (a redelivered batch after a
crash is not counted twice; late readings do not raise alerts in the past). Every clock is the
``now_us`` argument: nothing here reads the time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from alerts.compile import Compiled, compile_plans
from alerts.config import AlertConfig
from alerts.engine_sync import EngineSync
from alerts.episodes import EpisodeBook
from alerts.errors import AlertActionError
from alerts.evaluate import (
    CARRY_COND_SCHEMA,
    CARRY_EP_SCHEMA,
    attach_ids,
    evaluate,
)
from alerts.lifecycle import Alert, AlertEvent
from alerts.news2 import ACVPU
from alerts.persist import Observation
from alerts.plans import CarePlan
from alerts.rules import Rule
from alerts.signals import (
    HISTORY_SCHEMA,
    MANUAL_SCHEMA,
    NEWS2_SCORE_SCHEMA,
    decode_signals,
    news2_signals,
    readings_frame,
    sensor_signals,
    staleness_signals,
    trend_signals,
    value_signals,
)
from alerts.streams import SLOTS, LatestValues, positions
from pipeline.catalogue import Catalogue, catalogue
from pipeline.readings import ReadingBatch

__all__ = ["AlertEngine", "EngineStats"]

log = logging.getLogger(__name__)

_DEVICES = pl.Schema({"device_id": pl.Utf8, "patient_id": pl.Utf8})


@dataclass(slots=True)
class EngineStats:
    """Running counters."""

    batches: int = 0
    readings: int = 0
    late: int = 0
    signals: int = 0
    evaluated: int = 0
    events: int = 0


class AlertEngine(EngineSync):
    """Care plans, carried episode state and open alerts of every patient.

    Args:
        config: Notification policies and the sweep interval (defaults without).
        plans: Initial plans (current version per patient).
        cat: Metric catalogue (the shipped one by default).
    """

    def __init__(self, config: AlertConfig | None = None, *, plans: Iterable[CarePlan] = (),
                 cat: Catalogue | None = None) -> None:
        config = config or AlertConfig()
        self.config = config
        self.cat = cat or catalogue()
        self.book = EpisodeBook(config)
        self.stats = EngineStats()
        self._plans: dict[str, CarePlan] = {p.patient_id: p for p in plans}
        self._codes: dict[str, int] = {}
        self._comp = compile_plans(self._plans, self.cat, self._codes)
        self._carry_cond = pl.DataFrame(schema=CARRY_COND_SCHEMA)
        self._carry_ep = pl.DataFrame(schema=CARRY_EP_SCHEMA)
        self._latest = LatestValues()
        self._latest.ensure(len(self._codes))
        self._history = pl.DataFrame(schema=HISTORY_SCHEMA)
        self._history_new = pl.DataFrame(schema=HISTORY_SCHEMA)
        self._history_before: int | None = None
        self._manual = pl.DataFrame(schema=MANUAL_SCHEMA)
        self._observations: list[Observation] = []
        self._devices = pl.DataFrame(schema=_DEVICES)
        self._assigned = pl.DataFrame(schema=_DEVICES)
        self._active_key: tuple[pl.DataFrame, pl.DataFrame] | None = None
        self._active_rules = np.zeros(0, dtype=np.uint32)
        self._pending_devices: list[pl.DataFrame] = []
        self._news2 = pl.DataFrame(schema=NEWS2_SCORE_SCHEMA)
        self._last_check_us: int | None = None
        self._plan_mark = 0
        self.signal_observers: list[Callable[[pl.DataFrame, Compiled, str], None]] = []
        """Called with every signal frame before it is evaluated, and where it came from:
        ``batch`` (:meth:`process`), ``sweep`` (:meth:`tick`) or ``manual``."""

    # -- plans ---------------------------------------------------------------------------------

    @property
    def compiled(self) -> Compiled:
        """The compiled plans."""
        return self._comp

    def plan(self, patient_id: str) -> CarePlan | None:
        """The plan in force for a patient."""
        return self._plans.get(patient_id)

    def set_plans(self, plans: Iterable[CarePlan], now_us: int) -> list[AlertEvent]:
        """Put new plan versions in force (compiles once). Open alerts of rules that left a plan
        are retired; carried state of those rules is dropped."""
        changed = list(plans)
        if not changed:
            return []
        for p in changed:
            self._plans[p.patient_id] = p
        self._comp = compile_plans(self._plans, self.cat, self._codes)
        self._latest.ensure(len(self._codes))
        self._carry_cond, self._carry_ep = attach_ids(self._carry_cond, self._carry_ep,
                                                      self._comp)
        events: list[AlertEvent] = []
        for alert in list(self.book.alerts.values()):
            plan = self._plans.get(alert.patient_id)
            if plan is not None and all(r.id != alert.rule_id for r in plan.rules):
                events += self.book.retire((alert.patient_id, alert.rule_id, alert.side), now_us,
                                           f"rule left the care plan (v{plan.version})")
        return events

    def set_assignments(self, assignments: pl.DataFrame) -> None:
        """Device -> patient of open assignments (``pipeline.registry.assignments_frame``), so
        that rejected payloads of a device count for its patient."""
        self._assigned = (
            assignments.filter(pl.col("valid_to").is_null())
            .select("device_id", "patient_id").unique("device_id", keep="last")
        )

    # -- evaluation ----------------------------------------------------------------------------

    def process(self, batch: ReadingBatch, now_us: int) -> list[AlertEvent]:
        """Evaluate one normalized batch at engine time ``now_us``; returns the events.

        Producers that cannot change anything are skipped (no flagged reading and no carried
        state, no quarantined payload...), so a normal batch costs a few frame operations.
        NEWS2 and staleness of every patient are evaluated by the sweep of :meth:`tick` (call
        it about every second, off the batch path); staleness episodes of the batch's patients
        close at once. Timers (re-notification, escalation) run here and in :meth:`tick`.
        """
        comp = self._comp
        r = readings_frame(batch.readings, comp)
        self.stats.batches += 1
        self.stats.readings += r.height
        if r.height:
            r = self._drop_late(r)
            self._pending_devices.append(r[["device_id", "patient_id"]])
        active = self._active()
        parts = [value_signals(r, comp), sensor_signals(r, comp, active)]
        if comp.rules_of("rate", "predicted").height:
            parts.append(trend_signals(r, self._history, comp))
        if batch.quarantine.height or len(active):
            devices = self._device_map() if batch.quarantine.height else self._assigned
            parts.append(decode_signals(r, batch.quarantine, devices, comp, active))
        self._remember(r)
        if r.height and len(active):
            stale = comp.kind_arrays(("staleness",), ("rule_idx", "pcode"))
            at = positions(stale["rule_idx"], active)
            at = at[np.isin(stale["pcode"][at], r["pk"].to_numpy() // SLOTS)]
            if len(at):
                parts.append(staleness_signals(self._latest, comp, now_us,
                                               stale["rule_idx"][at]))
        parts = [p for p in parts if p.height]
        events = self._evaluate(pl.concat(parts), now_us, "batch") if parts else []
        timers = self.book.timers(now_us)
        self.stats.events += len(timers)
        return events + timers

    def tick(self, now_us: int) -> list[AlertEvent]:
        """Time-driven work at ``now_us``: staleness and NEWS2 of every patient (at most every
        ``check_interval_s``), snooze expiry, re-notification, escalation."""
        events: list[AlertEvent] = []
        interval = round(self.config.check_interval_s * 1e6)
        if self._last_check_us is None or now_us - self._last_check_us >= interval:
            self._last_check_us = now_us
            self._prune_history(now_us)
            n2, scores = news2_signals(self._latest, self._manual, self._comp, now_us,
                                       active=self._active())
            self._keep_scores(scores)
            sweep = pl.concat([staleness_signals(self._latest, self._comp, now_us), n2])
            events += self._evaluate(sweep, now_us, "sweep")
        timers = self.book.timers(now_us)
        self.stats.events += len(timers)
        return events + timers

    def _active(self) -> npt.NDArray[np.uint32]:
        """Rule indexes with carried state (cached per state)."""
        cached = self._active_key  # the frames themselves: an id() can be reused
        if cached is None or cached[0] is not self._carry_cond or cached[1] is not self._carry_ep:
            self._active_key = (self._carry_cond, self._carry_ep)
            self._active_rules = np.unique(np.concatenate([
                self._carry_cond["rule_idx"].to_numpy(), self._carry_ep["rule_idx"].to_numpy(),
            ])).astype(np.uint32)  # fmt: skip
        return self._active_rules

    def _drop_late(self, r: pl.DataFrame) -> pl.DataFrame:
        newer = self._latest.newer(r["pk"].to_numpy(), r["t"].to_numpy())
        if newer.all():
            return r
        self.stats.late += int((~newer).sum())
        return r.filter(pl.Series(newer))

    def _device_map(self) -> pl.DataFrame:
        """Device -> patient: open assignments, overridden by what readings showed."""
        if self._pending_devices:
            seen = pl.concat([self._devices, *self._pending_devices]).unique(
                "device_id", keep="last", maintain_order=True)
            self._devices, self._pending_devices = seen, []
        return pl.concat([self._assigned.join(self._devices, on="device_id", how="anti"),
                          self._devices])

    def _remember(self, r: pl.DataFrame) -> None:
        if r.height == 0:
            return
        pk = r["pk"].to_numpy()
        self._latest.update(pk, r["t"].to_numpy(),
                            np.asarray(r["value"].to_numpy(), dtype=np.float64))
        keys, _ = self._comp.index("rate", "predicted")  # sorted
        if len(keys):
            at = np.minimum(np.searchsorted(keys, pk), len(keys) - 1)
            hit = keys[at] == pk
            if hit.any() and r["value"].has_nulls():
                hit &= r["value"].is_not_null().to_numpy()
            if hit.any():
                rows = r[np.flatnonzero(hit)][HISTORY_SCHEMA.names()]
                self._history = pl.concat([self._history, rows])
                self._history_new = pl.concat([self._history_new, rows])

    def _patient_ids(self) -> list[str]:
        """Patient id of each code."""
        ids = [""] * len(self._codes)
        for patient, code in self._codes.items():
            ids[code] = patient
        return ids

    def latest_values(self) -> pl.DataFrame:
        """The latest value of every stream: ``patient_id, metric, t, value``."""
        return self._latest.frame(self._latest.all_keys(), self._patient_ids()).drop("pk")

    def _prune_history(self, now_us: int) -> None:
        trend = self._comp.rules_of("rate", "predicted")
        if self._history.height == 0 or trend.height == 0:
            return
        before = now_us - 2 * int(trend["window_us"].to_numpy().max()) - 60_000_000
        if self._history_before is not None and before - self._history_before < 60_000_000:
            return  # at most once a minute
        self._history = self._history.filter(pl.col("t") >= before)
        self._history_new = self._history_new.filter(pl.col("t") >= before)
        self._history_before = before

    def _keep_scores(self, scores: pl.DataFrame) -> None:
        if scores.height:
            self._news2 = pl.concat([self._news2.join(scores, on="patient_id", how="anti"),
                                     scores])

    def _evaluate(self, signals: pl.DataFrame, now_us: int, origin: str) -> list[AlertEvent]:
        comp = self._comp
        self.stats.signals += signals.height
        for observe in self.signal_observers:
            observe(signals, comp, origin)
        ev = evaluate(signals, comp, self._carry_cond, self._carry_ep)
        self._carry_cond, self._carry_ep = ev.carry_cond, ev.carry_ep
        self.stats.evaluated += ev.rows
        if ev.transitions.height == 0:
            return []
        episodes = comp.episodes
        at = np.searchsorted(episodes["ep_id"].to_numpy(), ev.transitions["ep_id"].to_numpy())
        rows = ev.transitions.hstack(episodes[at].get_columns()[1:])
        events: list[AlertEvent] = []
        for row in rows.iter_rows(named=True):  # level changes only: a few per batch
            patient, rule_id = row["patient_id"], row["rule_id"]
            rule = comp.rule(patient, rule_id)
            rising = row["level"] > row["prev_level"]
            shown = (row["value"] if rule.kind == "news2"
                     else row["trigger"] if rising else row["signal"])
            events += self.book.change(
                (patient, rule_id, "low" if row["low_side"] else "high"), rule,
                self._plans[patient].version, self.unit_of(rule), level=row["level"],
                prev=row["prev_level"], t_us=row["t"], value=shown, limit=row["limit"],
                clear=row["clear"], device_id=row["device_id"], now_us=now_us,
            )
        self.stats.events += len(events)
        return events

    def unit_of(self, rule: Rule) -> str:
        """The unit of a rule's signal (``mg/dL/min`` for rates, ``intervals``...)."""
        if rule.kind == "news2":
            return "points"
        if rule.kind == "staleness":
            return "intervals"
        if rule.metric is None or (rule.kind == "technical" and rule.signal != "threshold"):
            return ""
        unit = self.cat[rule.metric].canonical_unit
        return f"{unit}/min" if rule.kind == "rate" else unit

    # -- people --------------------------------------------------------------------------------

    def acknowledge(self, alert_id: str, by: str, now_us: int, note: str = "") -> AlertEvent:
        """Acknowledge an open alert (a latched one resolves)."""
        return self.book.acknowledge(alert_id, by, now_us, note)

    def snooze(self, patient_id: str, rule_id: str, side: str, duration_s: float, by: str,
               now_us: int, reason: str = "") -> AlertEvent:
        """Snooze one patient + rule + side (``low`` or ``high``), capped per priority."""
        if side not in ("low", "high"):
            raise AlertActionError(f"snooze: side: expected low or high, got {side!r}")
        plan = self._plans.get(patient_id)
        if plan is None:
            raise AlertActionError(f"snooze: patient {patient_id!r} has no care plan")
        rule = plan.rule(rule_id)
        return self.book.snooze((patient_id, rule_id, side), rule, duration_s, by, now_us,
                                reason)

    def record_observation(self, patient_id: str, *, by: str, now_us: int,
                           consciousness: str | None = None,
                           supplemental_oxygen: bool | None = None) -> list[AlertEvent]:
        """A manual NEWS2 entry (ACVPU, supplemental oxygen); the patient's NEWS2 is
        re-evaluated at once."""
        if consciousness is not None and consciousness not in ACVPU:
            raise AlertActionError(f"observation: consciousness: expected one of "
                                   f"{', '.join(ACVPU)}, got {consciousness!r}")
        if consciousness is None and supplemental_oxygen is None:
            raise AlertActionError("observation: give consciousness and/or supplemental_oxygen")
        if not by:
            raise AlertActionError("observation: by: expected who entered it")
        old = self._manual.filter(pl.col("patient_id") == patient_id)
        c0 = old["consciousness"][0] if old.height else None
        o0 = old["supplemental_oxygen"][0] if old.height else None
        row = pl.DataFrame([(patient_id, consciousness or c0,
                             o0 if supplemental_oxygen is None else supplemental_oxygen)],
                           schema=MANUAL_SCHEMA, orient="row")
        self._manual = pl.concat([self._manual.filter(pl.col("patient_id") != patient_id), row])
        self._observations.append(Observation(patient_id, consciousness, supplemental_oxygen,
                                              now_us, by))
        n2, scores = news2_signals(self._latest, self._manual, self._comp, now_us,
                                   pl.Series([patient_id]))
        self._keep_scores(scores)
        return self._evaluate(n2, now_us, "manual")

    def open_alerts(self, patient_id: str | None = None) -> list[Alert]:
        """Open alerts, highest priority first."""
        return self.book.open_alerts(patient_id)

    def manual_observations(self) -> pl.DataFrame:
        """Manual NEWS2 entries in force (:data:`~alerts.signals.MANUAL_SCHEMA`)."""
        return self._manual

    def news2_scores(self) -> pl.DataFrame:
        """The latest NEWS2 per patient with a NEWS2 rule (:data:`NEWS2_SCORE_SCHEMA`)."""
        return self._news2
