"""Alarm-fatigue figures of a replay: sensitivity, detection delay, alerts per patient-day,
for the engine and for the naive policy, per rule and overall.

A scripted event is *detected* by a rule when the rule opens, reopens or worsens an alert of
the event's patient and side between the event's onset and ``GRACE_S`` after its end. Rules
relevant to an event: for a physiological event, rules of kind threshold, rate and predicted on
a metric the event moves, with a limit on the event's side (hypoglycaemia low, fever high...),
and the NEWS2 rule when the metric is a NEWS2 parameter; for a ``dropout``, staleness rules of
the device's metrics; for ``garbage``, the ``decode_errors`` technical rule and staleness of the
device's metrics (no valid reading arrives). The delay is measured from the event's onset and,
for threshold rules, also from the first generated (true) value at or beyond the rule's first
limit (``after limit``): the first includes the time the scripted ramp takes to reach the
limit. An alert is *actionable* when it detects some event.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from alerts.news2 import METRIC_PARAMETERS
from alerts.replay import ReplayResult
from alerts.rules import Rule
from pipeline.catalogue import catalogue
from simulators import EventRecord

__all__ = ["GRACE_S", "SIDE_OF_EVENT", "Figures", "RuleFigures", "render", "score"]

GRACE_S = 300.0
SIDE_OF_EVENT: Mapping[str, str] = {
    "hypoglycaemia": "low", "hyperglycaemia": "high", "desaturation": "low",
    "tachycardia": "high", "bradycardia": "low", "tachypnoea": "high", "fever": "high",
    "hypotension": "low", "hypertension": "high",
}  # fmt: skip
_DETECTING = ("opened", "reopened", "worsened")


def relevant(rule: Rule, event: EventRecord) -> str | None:
    """The side of ``rule`` that should catch ``event``, or ``None`` when it is not meant to."""
    metrics = set(event.metrics)
    if event.kind == "dropout":
        return "high" if rule.kind == "staleness" and rule.metric in metrics else None
    if event.kind == "garbage":
        ok = ((rule.kind == "technical" and rule.signal in ("decode_errors", "sensor_error"))
              or (rule.kind == "staleness" and rule.metric in metrics))
        return "high" if ok else None
    side = SIDE_OF_EVENT.get(event.kind)
    if side is None:
        return None
    if rule.kind == "news2":
        return "high" if metrics & set(METRIC_PARAMETERS) else None
    if rule.kind in ("threshold", "rate", "predicted") and rule.metric in metrics:
        b = rule.bands
        limits = (b.low, b.critical_low) if side == "low" else (b.high, b.critical_high)
        return side if any(v is not None for v in limits) else None
    return None


@dataclass(slots=True)
class RuleFigures:
    """Figures of one rule id (over all patients that have it)."""

    rule_id: str
    kind: str
    relevant: int = 0
    detected: int = 0
    delays_s: list[float] = field(default_factory=list)
    alerts: int = 0
    actionable: int = 0
    naive_alerts: int = 0
    naive_detected: int = 0
    limit_delays_s: list[float] = field(default_factory=list)

    def to_json(self, patient_days: float) -> dict[str, Any]:
        """JSON figures."""
        return {
            "rule_id": self.rule_id, "kind": self.kind, "events": self.relevant,
            "detected": self.detected, "sensitivity": _ratio(self.detected, self.relevant),
            "median_delay_s": _median(self.delays_s),
            "max_delay_s": max(self.delays_s) if self.delays_s else None,
            "median_delay_after_limit_s": _median(self.limit_delays_s),
            "alerts": self.alerts, "alerts_per_patient_day": self.alerts / patient_days,
            "actionable": self.actionable,
            "naive_alerts": self.naive_alerts,
            "naive_alerts_per_patient_day": self.naive_alerts / patient_days,
            "naive_detected": self.naive_detected,
        }  # fmt: skip


@dataclass(slots=True)
class Figures:
    """Per-rule and overall figures of a replay."""

    scenario: str
    patients: int
    duration_s: float
    rules: list[RuleFigures]
    events: int
    detected: int
    delays_s: list[float]
    alerts: int
    actionable: int
    notifications: int
    naive_alerts: int
    naive_detected: int
    missed: list[str]
    wall_s: float
    messages: int

    @property
    def patient_days(self) -> float:
        """Patients times simulated days."""
        return self.patients * self.duration_s / 86_400

    @property
    def reduction(self) -> float | None:
        """1 - alerts / naive alerts."""
        return None if self.naive_alerts == 0 else 1 - self.alerts / self.naive_alerts

    @property
    def goal_met(self) -> bool:
        """Every event detected and at least 50 % fewer alerts than the naive policy."""
        r = self.reduction
        return self.detected == self.events and r is not None and r >= 0.5

    def to_json(self) -> dict[str, Any]:
        """JSON figures."""
        pd = self.patient_days
        return {
            "scenario": self.scenario, "patients": self.patients,
            "duration_s": self.duration_s, "patient_days": pd,
            "messages": self.messages, "wall_s": self.wall_s,
            "speedup": self.duration_s / self.wall_s if self.wall_s else None,
            "overall": {
                "events": self.events, "detected": self.detected,
                "sensitivity": _ratio(self.detected, self.events),
                "median_delay_s": _median(self.delays_s),
                "max_delay_s": max(self.delays_s) if self.delays_s else None,
                "alerts": self.alerts, "alerts_per_patient_day": self.alerts / pd,
                "actionable": self.actionable, "notifications": self.notifications,
                "naive_alerts": self.naive_alerts,
                "naive_alerts_per_patient_day": self.naive_alerts / pd,
                "naive_detected": self.naive_detected,
                "reduction_vs_naive": self.reduction, "goal_met": self.goal_met,
            },
            "missed": self.missed,
            "rules": [r.to_json(pd) for r in self.rules],
        }  # fmt: skip


def _crossing(values: pl.DataFrame, rule: Rule, side: str, ev: EventRecord, lo: int,
              hi: int) -> int | None:
    """When the generated value first reached a threshold rule's first limit on ``side``."""
    if rule.kind != "threshold" or rule.metric is None:
        return None
    limits = [c for c in rule.conditions(catalogue()) if c.low_side == (side == "low")]
    if not limits:
        return None
    trig = min(limits, key=lambda c: c.level).trigger
    v = pl.col("value")
    beyond = (v <= trig if rule.inclusive else v < trig) if side == "low" else (
        v >= trig if rule.inclusive else v > trig)
    hit = values.filter(
        (pl.col("patient_id") == ev.patient_id) & (pl.col("metric") == rule.metric)
        & pl.col("t").is_between(lo, hi) & beyond
    )
    return int(hit["t"].min()) if hit.height else None  # type: ignore[arg-type]


def _ratio(a: int, b: int) -> float | None:
    return None if b == 0 else a / b


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def score(result: ReplayResult) -> Figures:
    """Match alerts to the ground truth and count (see module docs)."""
    grace = round(GRACE_S * 1e6)
    opened = [e for e in result.events if e.kind == "opened"]
    detecting = [e for e in result.events if e.kind in _DETECTING]
    per_rule: dict[str, RuleFigures] = {}
    for plan in result.plans.values():
        for rule in plan.rules:
            per_rule.setdefault(rule.id, RuleFigures(rule.id, rule.kind))
    for e in opened:
        per_rule[e.rule_id].alerts += 1
    naive = result.naive
    for rule_id, n in naive.group_by("rule_id").len().iter_rows():
        per_rule[rule_id].naive_alerts += n
    useful: set[str] = set()
    delays, missed, detected, naive_detected = [], [], 0, 0
    for ev in result.truth:
        plan = result.plans[ev.patient_id]
        lo, hi = ev.start_us, ev.end_us + grace
        first: float | None = None
        naive_hit = False
        for rule in plan.rules:
            side = relevant(rule, ev)
            if side is None:
                continue
            fig = per_rule[rule.id]
            fig.relevant += 1
            hits = [e for e in detecting if e.patient_id == ev.patient_id
                    and e.rule_id == rule.id and e.side == side and lo <= e.at_us <= hi]
            if hits:
                first_at = min(e.at_us for e in hits)
                delay = max(0.0, (first_at - ev.start_us) / 1e6)
                fig.detected += 1
                fig.delays_s.append(delay)
                crossed = _crossing(result.values, rule, side, ev, lo, hi)
                if crossed is not None:
                    fig.limit_delays_s.append(max(0.0, (first_at - crossed) / 1e6))
                first = delay if first is None else min(first, delay)
                useful.update(e.alert_id for e in hits)
            n_hits = naive.filter(
                (pl.col("patient_id") == ev.patient_id) & (pl.col("rule_id") == rule.id)
                & (pl.col("side") == side) & pl.col("t").is_between(lo, hi)
            ).height
            if n_hits:
                fig.naive_detected += 1
                naive_hit = True
        if first is None:
            missed.append(f"{ev.kind} {ev.patient_id} (event {ev.event})")
        else:
            detected += 1
            delays.append(first)
        naive_detected += naive_hit
    for e in opened:
        if e.alert_id in useful:
            per_rule[e.rule_id].actionable += 1
    return Figures(
        scenario=result.scenario.name, patients=result.patients, duration_s=result.duration_s,
        rules=sorted(per_rule.values(), key=lambda f: f.rule_id), events=len(result.truth),
        detected=detected, delays_s=delays, alerts=len(opened),
        actionable=sum(f.actionable for f in per_rule.values()),
        notifications=sum(e.notify for e in result.events), naive_alerts=naive.height,
        naive_detected=naive_detected, missed=missed, wall_s=result.wall_s,
        messages=result.messages,
    )  # fmt: skip


def _fmt(v: float | None, spec: str = ".0f") -> str:
    return "-" if v is None else format(v, spec)


def render(fig: Figures) -> str:
    """The figures as a text report."""
    pd = fig.patient_days
    head = (f"{'rule':<18} {'kind':<10} {'events':>6} {'found':>5} {'delay s':>8} "
            f"{'after limit':>11} {'alerts':>6} {'/pt-day':>8} {'naive':>7} {'/pt-day':>9} "
            f"{'naive found':>11}")
    lines = [
        f"scenario {fig.scenario}: {fig.patients} patients, {fig.duration_s / 3600:g} h "
        f"simulated ({pd:.3f} patient-days), {fig.messages} messages, replayed in "
        f"{fig.wall_s:.1f} s ({fig.duration_s / max(fig.wall_s, 1e-9):.0f}x real time)",
        "", head, "-" * len(head),
    ]
    for r in fig.rules:
        lines.append(
            f"{r.rule_id:<18} {r.kind:<10} {r.relevant:>6} {r.detected:>5} "
            f"{_fmt(_median(r.delays_s)):>8} {_fmt(_median(r.limit_delays_s)):>11} "
            f"{r.alerts:>6} {r.alerts / pd:>8.1f} "
            f"{r.naive_alerts:>7} {r.naive_alerts / pd:>9.1f} {r.naive_detected:>11}"
        )
    lines.append("-" * len(head))
    lines.append(
        f"{'overall':<18} {'':<10} {fig.events:>6} {fig.detected:>5} "
        f"{_fmt(_median(fig.delays_s)):>8} {'':>11} {fig.alerts:>6} {fig.alerts / pd:>8.1f} "
        f"{fig.naive_alerts:>7} {fig.naive_alerts / pd:>9.1f} {fig.naive_detected:>11}"
    )
    red = fig.reduction
    lines += [
        "",
        "delay s: median from the event's onset; after limit: median from the first true value "
        "at or beyond a threshold rule's first limit",
        f"sensitivity {fig.detected}/{fig.events}; median delay from onset "
        f"{_fmt(_median(fig.delays_s))} s, max {_fmt(max(fig.delays_s) if fig.delays_s else None)}"
        f" s; {fig.actionable} of {fig.alerts} alerts actionable; {fig.notifications} "
        "notifications (incl. re-notifications and escalations)",
        f"alerts vs naive: {fig.alerts} vs {fig.naive_alerts} "
        f"({_fmt(None if red is None else red * 100)} % fewer)",
    ]
    if fig.missed:
        lines.append("missed: " + "; ".join(fig.missed))
    lines.append("goal (every event detected, >= 50 % fewer alerts than naive): "
                 + ("met" if fig.goal_met else "MISSED"))
    return "\n".join(lines)
