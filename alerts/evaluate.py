"""Vectorized evaluation: signals and compiled conditions in, episode level changes out.

A pure function of frames; no per-reading Python. Every rule kind reduces to *signals*: rows of
``(rule_idx, t, signal, value, device_id)`` (:mod:`alerts.signals`). For each condition of the
rule (side and level, :class:`~alerts.rules.Condition`) a signal row is

* **enter** when it is at or beyond the trigger (strictly beyond when the rule is not
  inclusive), **exit** when it is back past the clear threshold, and **hold** in between or
  when the signal is null. A failed gate (rate rules) is an exit.

The condition's state is the last non-hold verdict (hysteresis), carried across batches. A run
of "on" rows is **sustained** once it has lasted ``for`` or counted ``consecutive`` rows (or, at
high priority, has lasted the cap). The *episode level* of a side of a rule is the highest
sustained level; :func:`evaluate` returns the rows where it changes, which is all the lifecycle
needs. Carried state is kept only for conditions that are on and episodes above level 0, keyed
by stable ids (patient, rule, side, level), so it stays small and survives plan changes.

Rows are processed in ``(condition, t, row)`` order. Rules whose rows are all well inside the
clear thresholds, with nothing carried, are dropped before the conditions are looked up: a
normal batch costs a few array operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from alerts.compile import Compiled
from alerts.kernels import Columns, episode_levels, runs
from alerts.streams import expand

__all__ = [
    "CARRY_COND_SCHEMA",
    "CARRY_EP_SCHEMA",
    "SIGNAL_SCHEMA",
    "STATE_COND_SCHEMA",
    "STATE_EP_SCHEMA",
    "TRANSITION_SCHEMA",
    "Evaluation",
    "attach_ids",
    "evaluate",
    "naive_breaches",
]

SIGNAL_SCHEMA = pl.Schema(
    {"rule_idx": pl.UInt32, "t": pl.Int64, "signal": pl.Float64, "value": pl.Float64,
     "device_id": pl.Utf8, "lo_max": pl.Float64, "hi_min": pl.Float64}
)
"""Columns of a signal frame (``t`` in UTC microseconds). ``lo_max`` and ``hi_min`` are the
rule's outermost clear thresholds (from the compiled rules): rows between them can only end a
condition, so rules with no other rows and nothing carried are skipped."""

STATE_COND_SCHEMA = pl.Schema(
    {"patient_id": pl.Utf8, "rule_id": pl.Utf8, "low_side": pl.Boolean, "level": pl.Int8,
     "c_start": pl.Int64, "c_count": pl.Int64, "c_value": pl.Float64}
)
"""Conditions that are on, under stable keys (what is persisted): when their run started, how
many rows it has counted, and the signal that started it."""

CARRY_COND_SCHEMA = pl.Schema(
    dict(STATE_COND_SCHEMA) | {"cond_id": pl.UInt32, "rule_idx": pl.UInt32}
)
""":data:`STATE_COND_SCHEMA` with the ids of the current compilation (:func:`attach_ids`)."""

STATE_EP_SCHEMA = pl.Schema(
    {"patient_id": pl.Utf8, "rule_id": pl.Utf8, "low_side": pl.Boolean, "c_level": pl.Int8}
)
"""Episodes above level 0 and their level, under stable keys."""

CARRY_EP_SCHEMA = pl.Schema(dict(STATE_EP_SCHEMA) | {"ep_id": pl.UInt32, "rule_idx": pl.UInt32})
""":data:`STATE_EP_SCHEMA` with the ids of the current compilation."""

TRANSITION_SCHEMA = pl.Schema(
    {"ep_id": pl.UInt32, "t": pl.Int64, "level": pl.Int8, "prev_level": pl.Int8,
     "signal": pl.Float64, "value": pl.Float64, "device_id": pl.Utf8, "limit": pl.Float64,
     "clear": pl.Float64, "trigger": pl.Float64}
)
"""A change of episode level: ``signal`` and ``value`` of the row where it happened;
``limit`` is the trigger of the new level and ``trigger`` the signal that crossed it (the start
of the sustained run); when the level falls to 0, ``clear`` is level 1's clear threshold."""


_NO_TRANSITIONS = pl.DataFrame(schema=TRANSITION_SCHEMA)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What :func:`evaluate` returns.

    Attributes:
        transitions: Episode level changes in time order (:data:`TRANSITION_SCHEMA`).
        carry_cond: New carried condition state (:data:`CARRY_COND_SCHEMA`).
        carry_ep: New carried episode levels (:data:`CARRY_EP_SCHEMA`).
        rows: Signal rows that went through the condition join (after the pre-filter).
    """

    transitions: pl.DataFrame
    carry_cond: pl.DataFrame
    carry_ep: pl.DataFrame
    rows: int


def attach_ids(conds: pl.DataFrame, episodes: pl.DataFrame, comp: Compiled
               ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Carried state under stable keys -> with the ids of ``comp`` (state of rules that are no
    longer in a plan is dropped)."""
    keys = ["patient_id", "rule_id", "low_side"]
    cond = conds.select(STATE_COND_SCHEMA.names()).join(
        comp.conds.select(*keys, "level", "cond_id", "rule_idx"), on=[*keys, "level"])
    ep = episodes.select(STATE_EP_SCHEMA.names()).join(
        comp.episodes.select(*keys, "ep_id", "rule_idx"), on=keys)
    return cond.cast(CARRY_COND_SCHEMA), ep.cast(CARRY_EP_SCHEMA)


def evaluate(
    signals: pl.DataFrame,
    comp: Compiled,
    carry_cond: pl.DataFrame,
    carry_ep: pl.DataFrame,
) -> Evaluation:
    """Run the conditions of ``comp`` over ``signals`` (see the module docs).

    Args:
        signals: :data:`SIGNAL_SCHEMA` rows.
        comp: Compiled plans (conditions, pre-filter thresholds, night windows, episodes).
        carry_cond: Carried condition state (:data:`CARRY_COND_SCHEMA`).
        carry_ep: Carried episode levels (:data:`CARRY_EP_SCHEMA`).
    """
    if signals.height == 0:
        return Evaluation(_NO_TRANSITIONS, carry_cond, carry_ep, 0)
    s = signals["signal"].to_numpy()
    with np.errstate(invalid="ignore"):
        beyond = (s <= signals["lo_max"].to_numpy()) | (s >= signals["hi_min"].to_numpy())
    rule = signals["rule_idx"].to_numpy()
    flagged = np.unique(np.concatenate([
        rule[beyond], carry_cond["rule_idx"].to_numpy(), carry_ep["rule_idx"].to_numpy()]))
    rows = np.flatnonzero(np.isin(rule, flagged))
    if len(rows) == 0:
        return Evaluation(_NO_TRANSITIONS, carry_cond, carry_ep, 0)
    long, at, sig = _long_rows(signals, rows, comp)
    r = runs(long, comp.night_zones, carry_cond)
    cond = long["cond_id"]
    ends = np.ones(len(cond), dtype=bool)
    ends[:-1] = cond[1:] != cond[:-1]
    on_at_end = np.flatnonzero(ends & r.on)
    untouched = ~np.isin(carry_cond["cond_id"].to_numpy(), cond)
    carry_cond_out = carry_cond
    if len(on_at_end) or not untouched.all():
        keys = comp.cond_keys()[at[on_at_end]]
        new_cond = pl.DataFrame([
            *keys.get_columns()[:4],
            pl.Series("c_start", r.run_start[on_at_end], dtype=pl.Float64).cast(pl.Int64),
            pl.Series("c_count", r.run_n[on_at_end], dtype=pl.Float64).cast(pl.Int64),
            pl.Series("c_value", r.run_val[on_at_end], dtype=pl.Float64),
            keys["cond_id"], keys["rule_idx"],
        ])  # fmt: skip
        carry_cond_out = pl.concat([carry_cond[np.flatnonzero(untouched)], new_cond])

    ep = episode_levels(long, r, carry_ep["ep_id"].to_numpy(),
                        carry_ep["c_level"].to_numpy())
    changed = np.flatnonzero(ep.level != ep.prev_level)
    transitions = _NO_TRANSITIONS
    if len(changed):
        src, first_src = ep.src[changed], ep.first_src[changed]
        seen = signals[sig[src]]
        transitions = pl.DataFrame([
            pl.Series("ep_id", long["ep_id"][src], dtype=pl.UInt32), seen["t"],
            pl.Series("level", ep.level[changed], dtype=pl.Int8),
            pl.Series("prev_level", ep.prev_level[changed], dtype=pl.Int8),
            seen["signal"], seen["value"], seen["device_id"],
            pl.Series("limit", r.trig[src], dtype=pl.Float64),
            pl.Series("clear", r.clear[first_src], dtype=pl.Float64),
            pl.Series("trigger", r.run_val[src], dtype=pl.Float64),
        ])  # fmt: skip
    lasts = np.flatnonzero(ep.last_of_ep)
    up = lasts[ep.level[lasts] > 0]
    kept_ep = ~np.isin(carry_ep["ep_id"].to_numpy(), ep.ep[lasts])
    carry_ep_out = carry_ep
    if len(up) or not kept_ep.all():
        keys = comp.cond_keys()[at[ep.src[up]]]
        new_ep = pl.DataFrame([
            *keys.get_columns()[:3], pl.Series("c_level", ep.level[up], dtype=pl.Int8),
            keys["ep_id"], keys["rule_idx"],
        ])  # fmt: skip
        carry_ep_out = pl.concat([carry_ep[np.flatnonzero(kept_ep)], new_ep])
    return Evaluation(transitions, carry_cond_out, carry_ep_out, len(rows))


def _long_rows(signals: pl.DataFrame, rows: npt.NDArray[np.int64], comp: Compiled
               ) -> tuple[Columns, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """One row per (signal row, condition of its rule) for the signal ``rows``, sorted by
    ``(cond_id, t, sig_row)``; also the ``conds`` row and the signal row of each."""
    sig_rows, at = expand(comp.cond_rules, signals["rule_idx"].to_numpy()[rows])
    conds = comp.cond_arrays()
    sig = rows[sig_rows]
    t = signals["t"].to_numpy()[sig]
    order = np.lexsort((sig_rows, t, conds["cond_id"][at]))
    at, sig, sig_rows = at[order], sig[order], sig_rows[order]
    long = {k: v[at] for k, v in conds.items()}
    long |= {"t": t[order], "sig_row": sig_rows}
    long |= {k: np.asarray(signals[k].to_numpy(), dtype=np.float64)[sig]
             for k in ("signal", "value")}
    return long, at, sig


def naive_breaches(signals: pl.DataFrame, conds: pl.DataFrame) -> pl.DataFrame:
    """The naive policy: every signal row at or beyond the rule's highest level on a side, with
    no sustain and no hysteresis (one alert per row). Returns ``rule_idx, low_side, t``."""
    c = pl.col
    top = conds.sort("level").group_by("rule_idx", "low_side").agg(
        trig=c("trig").last(), inclusive=c("inclusive").last()
    )
    s = c("signal")
    hit = (
        pl.when(c("low_side"))
        .then(pl.when(c("inclusive")).then(s <= c("trig")).otherwise(s < c("trig")))
        .otherwise(pl.when(c("inclusive")).then(s >= c("trig")).otherwise(s > c("trig")))
    )
    return (
        signals.join(top, on="rule_idx", how="inner")
        .filter(hit.fill_null(False))
        .select("rule_idx", "low_side", "t")
    )
