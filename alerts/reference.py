"""A per-reading Python evaluator with the semantics of :func:`alerts.evaluate.evaluate`.

Not used by the engine: it is the oracle of the property tests (the vectorized evaluation must
give the same level changes on any input, split into batches anyhow) and the per-reading loop
the benchmark measures the vectorized stage against. It ignores night windows.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from alerts.compile import Compiled

__all__ = ["ReferenceEvaluator"]


@dataclass(slots=True)
class _Cond:
    cond_id: int
    ep_id: int
    level: int
    low_side: bool
    trig: float
    clear: float
    inclusive: bool
    for_us: int | None
    count: int | None
    cap_us: int | None
    gate_below: float | None
    gate_above: float | None


@dataclass(slots=True)
class _State:
    on: bool = False
    start: int = 0
    n: int = 0
    value: float | None = None


@dataclass(slots=True)
class ReferenceEvaluator:
    """Carries condition and episode state in dicts; :meth:`run` takes rows one by one.

    Args:
        comp: Compiled plans.
    """

    comp: Compiled
    conds: dict[int, list[_Cond]] = field(default_factory=dict)
    state: dict[int, _State] = field(default_factory=lambda: defaultdict(_State))
    levels: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        by_rule: dict[int, list[_Cond]] = defaultdict(list)
        for row in self.comp.conds.iter_rows(named=True):
            by_rule[row["rule_idx"]].append(_Cond(
                row["cond_id"], row["ep_id"], row["level"], row["low_side"], row["trig"],
                row["clear"], row["inclusive"], row["for_us"], row["count_n"], row["cap_us"],
                row["gate_below"], row["gate_above"],
            ))  # fmt: skip
        self.conds = dict(by_rule)

    @staticmethod
    def _beyond(c: _Cond, s: float, limit: float) -> bool:
        if c.low_side:
            return s <= limit if c.inclusive else s < limit
        return s >= limit if c.inclusive else s > limit

    def run(self, rows: list[tuple[int, int, float | None, float | None]]) -> list[dict[str, Any]]:
        """Rows ``(rule_idx, t, signal, value)`` in time order (ties: given order); returns
        the episode level changes ``{ep_id, t, level, prev_level}``."""
        out = []
        for rule_idx, t, s, v in rows:
            best: dict[int, int] = {}
            for c in self.conds.get(rule_idx, ()):
                st = self.state[c.cond_id]
                if s is not None:
                    gate = ((c.gate_below is None or (v is not None and v < c.gate_below))
                            and (c.gate_above is None or (v is not None and v > c.gate_above)))
                    if not gate:
                        verdict: bool | None = False
                    elif self._beyond(c, s, c.trig):
                        verdict = True
                    elif not self._beyond(c, s, c.clear):
                        verdict = False
                    else:
                        verdict = None
                    if verdict is not None and verdict != st.on:
                        st.on, st.start, st.n, st.value = verdict, t, 0, s
                if st.on:
                    st.n += 1
                    dur = t - st.start
                    sustained = (
                        (c.for_us is None and c.count is None)
                        or (c.for_us is not None and dur >= c.for_us)
                        or (c.count is not None and st.n >= c.count)
                        or (c.cap_us is not None and dur >= c.cap_us)
                    )
                    if sustained:
                        best[c.ep_id] = max(best.get(c.ep_id, 0), c.level)
                best.setdefault(c.ep_id, 0)
            for ep_id, level in best.items():
                prev = self.levels.get(ep_id, 0)
                if level != prev:
                    out.append({"ep_id": ep_id, "t": t, "level": level, "prev_level": prev})
                    self.levels[ep_id] = level
        return out

    def run_frame(self, signals: pl.DataFrame) -> list[dict[str, Any]]:
        """:meth:`run` over a signal frame (sorted by ``t``, stable)."""
        ordered = signals.with_row_index("_i").sort("t", "_i")
        return self.run(list(ordered.select("rule_idx", "t", "signal", "value").iter_rows()))
