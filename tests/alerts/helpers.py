"""Builders shared by the alerting tests: plans from TOML text, batches, signal frames."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from alerts.compile import Compiled, compile_plans
from alerts.evaluate import CARRY_COND_SCHEMA, CARRY_EP_SCHEMA, SIGNAL_SCHEMA, Evaluation, evaluate
from alerts.plans import CarePlan, parse_plan_text
from gateway.records import RawMessage, RawReading, Rejection
from pipeline.batcher import build_batch
from pipeline.normalize import Normalizer, normalize
from pipeline.readings import UTC_US, ReadingBatch

T0 = 1_741_000_000_000_000
"""2025-03-03T11:06:40Z, a Monday (UTC microseconds)."""
S = 1_000_000
MIN = 60 * S
NORMALIZER = Normalizer.from_catalogue()


def plan(text: str, patient: str = "P1", version: int = 1) -> CarePlan:
    """A care plan from TOML text."""
    settings, rules = parse_plan_text(text, f"test plan {patient}")
    return CarePlan(patient, version, T0, "tester", "test", "", settings, rules)


def rule_toml(**fields: object) -> str:
    """One ``[[rule]]`` table from keyword fields (strings quoted, others as TOML)."""
    lines = ["[[rule]]"]
    for k, v in fields.items():
        if isinstance(v, bool):
            lines.append(f"{k} = {'true' if v else 'false'}")
        elif isinstance(v, str):
            lines.append(f'{k} = "{v}"')
        else:
            lines.append(f"{k} = {v}")
    return "\n".join(lines) + "\n"


def assignments(pairs: Sequence[tuple[str, str]]) -> pl.DataFrame:
    """Open assignments ``(device, patient)`` since the epoch."""
    return pl.DataFrame({
        "device_id": [d for d, _ in pairs],
        "patient_id": [p for _, p in pairs],
        "valid_from": pl.Series([0] * len(pairs), dtype=pl.Int64).cast(UTC_US),
        "valid_to": pl.Series([None] * len(pairs), dtype=pl.Int64).cast(UTC_US),
    })


DEFAULT_ASSIGNMENTS = assignments([("D1", "P1"), ("D2", "P2"), ("D3", "P1")])


def batch(
    rows: Sequence[tuple[str, float | None, int]],
    *,
    device: str = "D1",
    unit: str | None = None,
    quality: int = 0,
    now_us: int | None = None,
    garbage: int = 0,
    assigned: pl.DataFrame = DEFAULT_ASSIGNMENTS,
) -> ReadingBatch:
    """A normalized batch of ``(metric, value, t_us)`` readings of one device (canonical units
    unless ``unit``), plus ``garbage`` undecodable payloads of the same device."""
    from pipeline.catalogue import catalogue

    readings = [
        RawReading(device, m, v, unit or catalogue()[m].canonical_unit, t, i + 1, quality)
        for i, (m, v, t) in enumerate(rows)
    ]
    now = now_us if now_us is not None else max((t for _, _, t in rows), default=T0)
    msgs = [RawMessage("t/x", b"{}", now, "sim") for _ in readings]
    rejects = []
    for _ in range(garbage):
        rejects.append((len(msgs), Rejection("malformed_json", "", "bad", device)))
        msgs.append(RawMessage("t/x", b"{", now, "sim"))
    raw = build_batch(msgs, readings, list(range(len(readings))), rejects)
    return normalize(raw, NORMALIZER, assigned, now)


def signals(rule_idx: int, points: Sequence[tuple[int, float | None]],
            value: Sequence[float | None] | None = None) -> pl.DataFrame:
    """A signal frame of one rule: ``(t, signal)`` points (value = signal unless given)."""
    vals = list(value) if value is not None else [s for _, s in points]
    return pl.DataFrame(
        {"rule_idx": [rule_idx] * len(points), "t": [t for t, _ in points],
         "signal": [s for _, s in points], "value": vals, "device_id": ["D1"] * len(points),
         "lo_max": [None] * len(points), "hi_min": [None] * len(points)},
        schema=SIGNAL_SCHEMA,
    )


def with_prefilter(sig: pl.DataFrame, comp: Compiled) -> pl.DataFrame:
    """The compiled pre-filter thresholds on a hand-made signal frame."""
    return sig.drop("lo_max", "hi_min").join(
        comp.rules.select("rule_idx", "lo_max", "hi_min"), on="rule_idx", how="left",
        maintain_order="left").select(SIGNAL_SCHEMA.names())


class Runner:
    """Carries state across :func:`evaluate` calls for one compiled plan set."""

    def __init__(self, comp: Compiled) -> None:
        self.comp = comp
        self.carry_cond = pl.DataFrame(schema=CARRY_COND_SCHEMA)
        self.carry_ep = pl.DataFrame(schema=CARRY_EP_SCHEMA)

    @classmethod
    def of(cls, *plans: CarePlan) -> Runner:
        return cls(compile_plans({p.patient_id: p for p in plans}))

    def __call__(self, sig: pl.DataFrame) -> Evaluation:
        ev = evaluate(with_prefilter(sig, self.comp), self.comp, self.carry_cond,
                      self.carry_ep)
        self.carry_cond, self.carry_ep = ev.carry_cond, ev.carry_ep
        return ev

    def levels(self, sig: pl.DataFrame) -> list[tuple[int, int, bool]]:
        """``(t, level, low_side)`` of each level change."""
        ev = self(sig)
        rows = ev.transitions.join(self.comp.episodes.select("ep_id", "low_side"), on="ep_id")
        return [(r["t"], r["level"], r["low_side"]) for r in rows.iter_rows(named=True)]
