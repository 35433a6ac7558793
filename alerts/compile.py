"""Care plans compiled into the frames the vectorized stages join against.

Plans with the same document (typically made from the same template) compile once; the
per-patient frames are a cross join with their patients, so 10,000 plans from four templates
compile in milliseconds. Ids (``rule_idx``, ``cond_id``, ``ep_id``) are positions in these
frames and change when plans change; state is carried under stable keys (patient, rule id,
side, level) instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from alerts.plans import CarePlan
from alerts.rules import Rule
from alerts.streams import stream_key
from pipeline.catalogue import Catalogue, catalogue

__all__ = ["RULE_SCHEMA", "Compiled", "compile_plans"]

RULE_SCHEMA = pl.Schema(
    {
        "rule_id": pl.Utf8, "kind": pl.Utf8, "tech_signal": pl.Utf8, "metric": pl.Utf8,
        "window_us": pl.Int64, "horizon_min": pl.Float64, "cadence_us": pl.Int64,
        "quality_mask": pl.UInt8, "freshness_us": pl.Int64, "spo2_scale": pl.Int8,
        "tz": pl.Utf8, "night_start": pl.Int32, "night_end": pl.Int32,
    }
)  # fmt: skip
_COND_SCHEMA = pl.Schema(
    {
        "rule_id": pl.Utf8, "low_side": pl.Boolean, "level": pl.Int8, "trig": pl.Float64,
        "clear": pl.Float64, "n_trig": pl.Float64, "n_clear": pl.Float64,
        "inclusive": pl.Boolean, "for_us": pl.Int64, "count_n": pl.Int64, "cap_us": pl.Int64,
        "gate_below": pl.Float64, "gate_above": pl.Float64, "priority": pl.Utf8,
    }
)  # fmt: skip


_COND_ARRAYS = ("cond_id", "ep_id", "rule_idx", "level", "low_side", "inclusive")
_COND_FLOATS = ("trig", "clear", "n_trig", "n_clear", "gate_below", "gate_above", "for_us",
                "count_n", "cap_us")

_WHO = pl.Schema({"patient_id": pl.Utf8, "plan_version": pl.Int32, "plan_created_us": pl.Int64})


def _us(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1_000_000)


def _body_frames(plan: CarePlan, cat: Catalogue) -> tuple[pl.DataFrame, pl.DataFrame]:
    s = plan.settings
    rules, conds = [], []
    for r in plan.rules:
        night = r.night is not None
        rules.append((
            r.id, r.kind, r.signal, r.metric, _us(r.window_s),
            None if r.horizon_s is None else r.horizon_s / 60.0, _us(r.cadence_s),
            r.quality_mask, _us(r.freshness_s), s.spo2_scale,
            s.timezone if night else None, s.night_start_min if night else None,
            s.night_end_min if night else None,
        ))  # fmt: skip
        for cd in r.conditions(cat):
            conds.append((
                r.id, cd.low_side, cd.level, cd.trigger, cd.clear, cd.night_trigger,
                cd.night_clear, r.inclusive, cd.for_us, cd.count, cd.cap_us, cd.gate_below,
                cd.gate_above, cd.priority,
            ))  # fmt: skip
    return (pl.DataFrame(rules, schema=RULE_SCHEMA, orient="row"),
            pl.DataFrame(conds, schema=_COND_SCHEMA, orient="row"))


@dataclass(frozen=True, slots=True)
class Compiled:
    """All plans as frames.

    Attributes:
        plans: The plans by patient.
        rules: One row per (patient, rule): ``rule_idx``, ``patient_id``, ``plan_version``,
            ``plan_created_us``, :data:`RULE_SCHEMA`, ``pcode`` (the patient's code),
            ``pk``, the stream key of the rule's (patient, metric)
            (:func:`alerts.signals.stream_key`; null without a metric), and the pre-filter's
            ``lo_max`` and ``hi_min``.
        conds: One row per condition: ``cond_id``, ``ep_id``, ``rule_idx``, ``patient_id``,
            ``rule_id``, the thresholds (canonical units) and the rule's night window.
        prefilter: Per rule: ``lo_max`` (outermost low-side clear threshold) and ``hi_min``.
        episodes: One row per episode key: ``ep_id``, ``patient_id``, ``rule_id``,
            ``low_side``, ``rule_idx``.
        night_zones: Time zones of the rules with night limits (their ``tz``; rules without
            night limits have none).
        codes: ``patient_id -> pcode`` of every patient ever compiled by the caller.
        cond_rules: ``conds["rule_idx"]`` (sorted), for :func:`alerts.streams.expand`.

    The array views (:meth:`cond_arrays`, :meth:`kind_arrays`, :meth:`index_arrays`,
    :meth:`patient_codes`) are built on first use and kept with the compilation.
    """

    plans: Mapping[str, CarePlan]
    rules: pl.DataFrame
    conds: pl.DataFrame
    prefilter: pl.DataFrame
    episodes: pl.DataFrame
    night_zones: tuple[str, ...]
    codes: pl.DataFrame
    cond_rules: npt.NDArray[np.int64]
    _by_kind: dict[tuple[str, ...], pl.DataFrame] = field(default_factory=dict, repr=False)
    _index: dict[tuple[str, ...], tuple[npt.NDArray[np.int64], pl.DataFrame]] = field(
        default_factory=dict, repr=False)
    _arrays: dict[object, Any] = field(default_factory=dict, repr=False)

    def index(self, *kinds: str) -> tuple[npt.NDArray[np.int64], pl.DataFrame]:
        """The rules of these kinds sorted by stream key, and the sorted keys (for
        :func:`alerts.streams.expand`)."""
        found = self._index.get(kinds)
        if found is None:
            rules = self.rules_of(*kinds).filter(pl.col("pk").is_not_null()).sort("pk")
            found = self._index[kinds] = (rules["pk"].to_numpy(), rules)
        return found

    def rules_of(self, *kinds: str) -> pl.DataFrame:
        """The rule rows of these kinds (``technical:<signal>`` selects technical signals)."""
        cached = self._by_kind.get(kinds)
        if cached is not None:
            return cached
        c = pl.col
        expr = pl.lit(False)
        for k in kinds:
            if k.startswith("technical:"):
                expr = expr | ((c("kind") == "technical") & (c("tech_signal") == k[10:]))
            else:
                expr = expr | (c("kind") == k)
        found = self._by_kind[kinds] = self.rules.filter(expr)
        return found

    def cond_arrays(self) -> dict[str, npt.NDArray[Any]]:
        """The condition columns the kernels read (:mod:`alerts.kernels`), one array each in
        ``conds`` order: numbers as floats with NaN for null, ``zone`` the position of the
        row's time zone in :attr:`night_zones` (-1: none)."""
        found = self._arrays.get("conds")
        if found is None:
            c = self.conds
            found = {k: c[k].to_numpy() for k in _COND_ARRAYS}
            found |= {k: np.asarray(c[k].to_numpy(), dtype=np.float64) for k in _COND_FLOATS}
            found |= {k: c[k].fill_null(0).to_numpy() for k in ("night_start", "night_end")}
            tz = c["tz"].fill_null("").to_numpy()
            zone = np.full(c.height, -1, dtype=np.int64)
            for i, name in enumerate(self.night_zones):
                zone[tz == name] = i
            found["zone"] = zone
            self._arrays["conds"] = found
        return found

    def cond_keys(self) -> pl.DataFrame:
        """``conds`` with only the stable keys and ids (``patient_id``, ``rule_id``,
        ``low_side``, ``level``, ``cond_id``, ``ep_id``, ``rule_idx``)."""
        found = self._arrays.get("cond_keys")
        if found is None:
            found = self._arrays["cond_keys"] = self.conds.select(
                "patient_id", "rule_id", "low_side", "level", "cond_id", "ep_id", "rule_idx")
        return found

    def kind_arrays(self, kinds: tuple[str, ...], columns: tuple[str, ...]
                    ) -> dict[str, npt.NDArray[Any]]:
        """These columns of :meth:`rules_of` ``kinds`` (ascending ``rule_idx``) as arrays."""
        return self._arrays_of(("kind", kinds, columns), lambda: self.rules_of(*kinds), columns)

    def index_arrays(self, kinds: tuple[str, ...], columns: tuple[str, ...]
                     ) -> dict[str, npt.NDArray[Any]]:
        """These columns of the rules of :meth:`index` ``kinds`` (in key order) as arrays."""
        return self._arrays_of(("index", kinds, columns), lambda: self.index(*kinds)[1],
                               columns)

    def _arrays_of(self, key: object, frame: Callable[[], pl.DataFrame],
                   columns: tuple[str, ...]) -> dict[str, npt.NDArray[Any]]:
        found = self._arrays.get(key)
        if found is None:
            rules = frame()
            found = self._arrays[key] = {c: rules[c].to_numpy() for c in columns}
        return found

    def patient_codes(self) -> tuple[npt.NDArray[np.str_], npt.NDArray[np.object_],
                                     npt.NDArray[np.int64]]:
        """Patient ids of :attr:`codes` in ascending order (as text and as Python strings),
        and their codes."""
        found = self._arrays.get("codes")
        if found is None:
            names = self.codes["patient_id"].to_numpy()
            order = np.argsort(names.astype(np.str_), kind="stable")
            found = self._arrays["codes"] = (
                names.astype(np.str_)[order], names[order],
                self.codes["pcode"].to_numpy().astype(np.int64)[order])
        return found

    def rule(self, patient_id: str, rule_id: str) -> Rule:
        """The rule object behind a row."""
        return self.plans[patient_id].rule(rule_id)


def compile_plans(plans: Mapping[str, CarePlan], cat: Catalogue | None = None,
                  codes: dict[str, int] | None = None) -> Compiled:
    """Compile every plan (the current version of each patient).

    Args:
        plans: The plan of each patient.
        cat: Metric catalogue.
        codes: Patient -> integer code, extended in place for new patients (pass the same dict
            on every compilation so that codes, and the stream keys made of them, never
            change).
    """
    cat = cat or catalogue()
    codes = {} if codes is None else codes
    for patient in sorted(plans):
        codes.setdefault(patient, len(codes))
    bodies: dict[str, tuple[CarePlan, list[tuple[str, int, int]]]] = {}
    for plan in plans.values():
        key = json.dumps(plan.document(), sort_keys=True, default=str)
        bodies.setdefault(key, (plan, []))[1].append(
            (plan.patient_id, plan.version, plan.created_at_us))
    rule_parts, cond_parts = [], []
    for plan, patients in bodies.values():
        body_rules, body_conds = _body_frames(plan, cat)
        who = pl.DataFrame(patients, schema=_WHO, orient="row")
        rule_parts.append(who.join(body_rules, how="cross"))
        cond_parts.append(who.select("patient_id").join(body_conds, how="cross"))
    if rule_parts:
        rules = pl.concat(rule_parts)
        conds = pl.concat(cond_parts)
    else:
        rules = pl.DataFrame(schema=dict(_WHO) | dict(RULE_SCHEMA))
        conds = pl.DataFrame(schema={"patient_id": pl.Utf8} | dict(_COND_SCHEMA))
    code_frame = pl.DataFrame(list(codes.items()), schema={"patient_id": pl.Utf8,
                                                            "pcode": pl.Int64}, orient="row")
    rules = rules.with_row_index("rule_idx").join(code_frame, on="patient_id", how="left",
                                                  maintain_order="left")
    rules = rules.with_columns(pk=stream_key())
    c = pl.col
    conds = (
        conds.join(rules.select("patient_id", "rule_id", "rule_idx"),
                   on=["patient_id", "rule_id"], maintain_order="left")
        .sort("rule_idx", "low_side", "level")
        .with_row_index("cond_id")
    )
    new_ep = (c("rule_idx") != c("rule_idx").shift(1)) | (c("low_side") != c("low_side").shift(1))
    conds = conds.with_columns(
        ep_id=(new_ep.fill_null(True).cast(pl.UInt32).cum_sum() - 1).cast(pl.UInt32)
    )
    lo = pl.when(c("low_side")).then(pl.max_horizontal("clear", "n_clear"))
    hi = pl.when(~c("low_side")).then(pl.min_horizontal("clear", "n_clear"))
    prefilter = conds.group_by("rule_idx").agg(
        lo_max=lo.max().fill_null(float("-inf")), hi_min=hi.min().fill_null(float("inf"))
    )
    episodes = conds.group_by("ep_id").agg(
        c("patient_id").first(), c("rule_id").first(), c("low_side").first(),
        c("rule_idx").first(),
    ).sort("ep_id")
    zones = tuple(sorted(rules["tz"].drop_nulls().unique().to_list()))
    rules = rules.join(prefilter, on="rule_idx", how="left", maintain_order="left").with_columns(
        pl.col("lo_max").fill_null(float("-inf")), pl.col("hi_min").fill_null(float("inf")))
    conds = conds.join(rules.select("rule_idx", "tz", "night_start", "night_end"),
                       on="rule_idx", how="left", maintain_order="left")
    return Compiled(dict(plans), rules, conds, prefilter, episodes, zones, code_frame,
                    conds["rule_idx"].to_numpy().astype(np.int64))
