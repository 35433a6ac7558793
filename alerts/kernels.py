"""The array kernels of :func:`alerts.evaluate.evaluate`: hysteresis, runs, sustain and episode
levels over whole columns with numpy (no Python loop over rows).

Once the rows of the conditions to evaluate are known and sorted by ``(cond_id, t, sig_row)``
(:data:`Columns`: one array per column), these steps are a handful of array operations.
Forward fills use the running maximum of "last valid index", which never crosses a condition
boundary because the first row of every condition is always valid (its own verdict, or the
carried state).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

__all__ = ["Columns", "EpisodeRows", "Runs", "episode_levels", "local_minutes", "runs"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]
Columns = Mapping[str, npt.NDArray[Any]]
"""The sorted condition rows: ``cond_id``, ``ep_id``, ``level``, ``low_side``, ``inclusive``,
``t``, ``sig_row``, ``zone``, ``night_start``, ``night_end`` and the floats of
:data:`FLOATS` (NaN for null)."""


def _ffill(values: F64, valid: B) -> F64:
    """Each position takes the value of the last valid position at or before it."""
    idx = np.where(valid, np.arange(len(valid)), 0)
    np.maximum.accumulate(idx, out=idx)
    out: F64 = values[idx]
    return out


def local_minutes(t: I64, zone_of: I64, zones: tuple[str, ...]) -> I64:
    """Minute of the local day of each ``t`` (UTC µs) in its row's time zone
    ``zones[zone_of]``; -1 for rows without a zone (-1), unless UTC is the only zone."""
    if zones == ("UTC",):
        return (t // 60_000_000) % 1440
    out = np.full(len(t), -1, dtype=np.int64)
    for i, zone in enumerate(zones):
        mask = zone_of == i
        if not mask.any():
            continue
        if zone == "UTC":
            out[mask] = (t[mask] // 60_000_000) % 1440
            continue
        local = pl.Series(t[mask]).cast(pl.Datetime("us", "UTC")).dt.convert_time_zone(zone)
        out[mask] = (local.dt.hour().cast(pl.Int64) * 60
                     + local.dt.minute().cast(pl.Int64)).to_numpy()
    return out


@dataclass(frozen=True, slots=True)
class Runs:
    """Per row of the sorted condition frame."""

    trig: F64
    clear: F64
    on: B
    sustained: B
    run_start: F64
    run_n: F64
    run_val: F64


FLOATS = ("signal", "value", "trig", "clear", "n_trig", "n_clear", "gate_below", "gate_above",
          "for_us", "count_n", "cap_us")


def _floats(series: pl.Series) -> F64:
    """Floats with NaN for null (polars gives NaN for the nulls of numeric columns)."""
    return np.asarray(series.to_numpy(), dtype=np.float64)


def _carried(cond: npt.NDArray[np.uint32], carry: pl.DataFrame) -> dict[str, F64]:
    """``c_start``, ``c_count``, ``c_value`` of each row's condition (NaN when not carried)."""
    n = len(cond)
    out = {k: np.full(n, np.nan) for k in ("c_start", "c_count", "c_value")}
    if carry.height == 0:
        return out
    ids = carry["cond_id"].to_numpy()
    order = np.argsort(ids)
    ids = ids[order]
    pos = np.clip(np.searchsorted(ids, cond), 0, len(ids) - 1)
    hit = ids[pos] == cond
    for k in out:
        vals = _floats(carry[k])[order]
        out[k] = np.where(hit, vals[pos], np.nan)
    return out


def runs(long: Columns, zones: tuple[str, ...], carry: pl.DataFrame) -> Runs:
    """Verdicts, hysteresis state, runs and sustain of ``long`` (sorted by cond, t, row);
    ``carry``: the carried condition state (``cond_id``, ``c_start``, ``c_count``,
    ``c_value``)."""
    cond = long["cond_id"]
    n = len(cond)
    t = long["t"]
    cols = {c: long[c] for c in FLOATS} | _carried(cond, carry)
    s, v = cols["signal"], cols["value"]
    low = long["low_side"]
    incl = long["inclusive"]
    n_trig = cols["n_trig"]
    night = np.zeros(n, dtype=bool)
    has_night = ~np.isnan(n_trig)
    if zones and has_night.any():
        m = local_minutes(t, long["zone"], zones)
        ns = long["night_start"]
        ne = long["night_end"]
        inside = np.where(ns < ne, (m >= ns) & (m < ne), (m >= ns) | (m < ne))
        night = has_night & inside & (m >= 0)
    trig = np.where(night, n_trig, cols["trig"])
    clear = np.where(night, cols["n_clear"], cols["clear"])
    with np.errstate(invalid="ignore"):
        beyond_t = np.where(low, np.where(incl, s <= trig, s < trig),
                            np.where(incl, s >= trig, s > trig))
        beyond_c = np.where(low, np.where(incl, s <= clear, s < clear),
                            np.where(incl, s >= clear, s > clear))
        gb, ga = cols["gate_below"], cols["gate_above"]
        gate = (np.isnan(gb) | (v < gb)) & (np.isnan(ga) | (v > ga))
    # verdict: 1 enter, 0 exit, -1 hold (null signal, or between trigger and clear)
    raw = np.select([np.isnan(s), ~gate, beyond_t, ~beyond_c], [-1, 0, 1, 0], default=-1)
    first = np.ones(n, dtype=bool)
    first[1:] = cond[1:] != cond[:-1]
    c_start = cols["c_start"]
    carried = ~np.isnan(c_start)
    val = np.where(raw >= 0, raw, np.where(first, carried.astype(np.int64), -1))
    on = _ffill(val.astype(np.float64), val >= 0) > 0
    prev_on = np.empty(n, dtype=bool)
    prev_on[0] = False
    prev_on[1:] = on[:-1]
    prev_on = np.where(first, carried, prev_on)
    new = on & ~prev_on
    cont = first & on & carried
    starts = new | cont
    idx = np.arange(n, dtype=np.float64)
    run_start = _ffill(np.where(new, t.astype(np.float64), c_start), starts)
    run_idx = _ffill(np.where(new, idx, idx - cols["c_count"]), starts)
    run_val = _ffill(np.where(new, s, cols["c_value"]), starts)
    run_n = idx - run_idx + 1
    dur = t - run_start
    for_us, count, cap = cols["for_us"], cols["count_n"], cols["cap_us"]
    with np.errstate(invalid="ignore"):
        sustained = on & (
            (np.isnan(for_us) & np.isnan(count)) | (dur >= for_us) | (run_n >= count)
            | (dur >= cap)
        )
    return Runs(trig, clear, on, sustained, run_start, run_n, run_val)


@dataclass(frozen=True, slots=True)
class EpisodeRows:
    """One row per (episode, signal row), in ``(ep_id, t, sig_row)`` order.

    ``src`` indexes the row of the condition frame that carries the episode's level (its
    highest sustained condition); ``first_src`` the row of its lowest condition (whose clear
    threshold ends the episode).
    """

    ep: npt.NDArray[np.uint32]
    level: npt.NDArray[np.int8]
    prev_level: npt.NDArray[np.int8]
    src: I64
    first_src: I64
    last_of_ep: B


def episode_levels(long: Columns, r: Runs, carried_ep: npt.NDArray[np.uint32],
                   carried_level: npt.NDArray[np.int8]) -> EpisodeRows:
    """Level of each episode at each of its signal rows, and the level before it."""
    ep = long["ep_id"]
    row = long["sig_row"]
    level = long["level"].astype(np.int8)
    lvl = np.where(r.sustained, level, 0).astype(np.int8)
    order = np.lexsort((level, lvl, row, ep))
    e, w = ep[order], row[order]
    boundary = np.ones(len(order), dtype=bool)
    boundary[1:] = (e[1:] != e[:-1]) | (w[1:] != w[:-1])
    starts = np.flatnonzero(boundary)
    ends = np.append(starts[1:] - 1, len(order) - 1)
    src, first_src = order[ends], order[starts]
    t = long["t"]
    g_ep, g_row, g_t = ep[src], row[src], t[src]
    by_time = np.lexsort((g_row, g_t, g_ep))
    src, first_src, g_ep = src[by_time], first_src[by_time], g_ep[by_time]
    g_level = lvl[src]
    first = np.ones(len(src), dtype=bool)
    first[1:] = g_ep[1:] != g_ep[:-1]
    last = np.ones(len(src), dtype=bool)
    last[:-1] = g_ep[1:] != g_ep[:-1]
    prev = np.empty(len(src), dtype=np.int8)
    prev[0] = 0
    prev[1:] = g_level[:-1]
    if len(carried_ep):
        sort = np.argsort(carried_ep)
        keys, vals = carried_ep[sort], carried_level[sort]
        pos = np.clip(np.searchsorted(keys, g_ep), 0, len(keys) - 1)
        start = np.where(keys[pos] == g_ep, vals[pos], 0).astype(np.int8)
    else:
        start = np.zeros(len(src), dtype=np.int8)
    prev = np.where(first, start, prev).astype(np.int8)
    return EpisodeRows(g_ep, g_level, prev, src, first_src, last)
