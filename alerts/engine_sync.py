"""Saving and restoring an :class:`~alerts.engine.AlertEngine` through the store's thread.

A mix-in of the engine: :meth:`EngineSync.from_store` (create tables, load), :meth:`load`,
:meth:`snapshot` (what changed since the last one) and :meth:`sync` (save it, then put plan
versions stored meanwhile in force). The rows themselves are written by :mod:`alerts.persist`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Self

import polars as pl

from alerts.compile import Compiled, compile_plans
from alerts.config import AlertConfig
from alerts.episodes import EpisodeBook
from alerts.errors import AlertError
from alerts.evaluate import STATE_COND_SCHEMA, STATE_EP_SCHEMA, attach_ids
from alerts.lifecycle import AlertEvent
from alerts.persist import Loaded, Observation, Snapshot, load, save
from alerts.plan_store import load_current_plans
from alerts.plans import CarePlan
from alerts.schema import migrate
from alerts.signals import HISTORY_SCHEMA
from alerts.streams import LatestValues, stream_key
from pipeline.catalogue import Catalogue
from pipeline.store import DuckDbStore

if TYPE_CHECKING:
    pass

__all__ = ["EngineSync"]

log = logging.getLogger(__name__)


class EngineSync:
    """Persistence of the engine's state (the attributes below are the engine's)."""

    cat: Catalogue
    book: EpisodeBook
    _plans: dict[str, CarePlan]
    _codes: dict[str, int]
    _comp: Compiled
    _carry_cond: pl.DataFrame
    _carry_ep: pl.DataFrame
    _latest: LatestValues
    _history: pl.DataFrame
    _history_new: pl.DataFrame
    _history_before: int | None
    _manual: pl.DataFrame
    _observations: list[Observation]
    _last_check_us: int | None
    _plan_mark: int

    def set_plans(self, plans: Iterable[CarePlan], now_us: int) -> list[AlertEvent]:
        """Put plan versions in force (the engine's)."""
        raise NotImplementedError

    def set_assignments(self, assignments: pl.DataFrame) -> None:
        """Device -> patient of open assignments (the engine's)."""
        raise NotImplementedError

    def _patient_ids(self) -> list[str]:
        raise NotImplementedError

    @classmethod
    async def from_store(cls, store: DuckDbStore, config: AlertConfig | None = None,
                         cat: Catalogue | None = None) -> Self:
        """Create the alerting tables if needed, then load plans and state from ``store``."""
        await store.call(migrate)
        engine = cls(config, cat=cat)  # type: ignore[call-arg]
        await engine.load(store)
        return engine

    async def load(self, store: DuckDbStore) -> None:
        """Restore plans and carried state (after a restart)."""
        loaded: Loaded = await store.call(load)
        plans, mark = await store.call(load_current_plans, 0)
        self._plan_mark = mark
        self._plans = {p.patient_id: p for p in plans}
        self._comp = compile_plans(self._plans, self.cat, self._codes)
        self._carry_cond, self._carry_ep = attach_ids(loaded.carry_cond, loaded.carry_ep,
                                                      self._comp)
        codes = self._comp.codes
        self._latest = LatestValues()
        self._latest.ensure(len(self._codes))
        rows = loaded.latest.join(codes, on="patient_id").with_columns(pk=stream_key())
        self._latest.load(rows["pk"].to_numpy(), rows["t"].to_numpy(),
                          rows["value"].fill_null(float("nan")).to_numpy())
        self._history = loaded.history.join(codes, on="patient_id").with_columns(
            pk=stream_key()).select(HISTORY_SCHEMA.names())
        self._manual = loaded.manual
        self.book.restore(loaded.alerts, loaded.snoozes)
        self.book.seq = max(self.book.seq, loaded.last_event, loaded.meta.get("seq", 0))
        self._last_check_us = loaded.meta.get("last_check_us")
        self.set_assignments(await store.assignments())

    def snapshot(self) -> Snapshot:
        """Everything changed since the last snapshot (taken: the next one starts empty)."""
        events, alerts, snoozes = self.book.take()
        meta = {"seq": self.book.seq}
        if self._last_check_us is not None:
            meta["last_check_us"] = self._last_check_us
        latest = self._latest.frame(self._latest.take_dirty(), self._patient_ids())
        snap = Snapshot(events, alerts, snoozes,
                        self._carry_cond.select(STATE_COND_SCHEMA.names()),
                        self._carry_ep.select(STATE_EP_SCHEMA.names()), latest,
                        self._history_new, self._history_before, list(self._observations), meta)
        self._history_new = pl.DataFrame(schema=HISTORY_SCHEMA)
        self._history_before = None
        self._observations = []
        return snap

    def _requeue(self, snap: Snapshot) -> None:
        self.book.pending[:0] = snap.events
        for a in snap.alerts:
            self.book.dirty.setdefault(a.alert_id, a)
        if snap.snoozes is not None:
            self.book.snoozes_dirty = True
        self._latest.restore_dirty(snap.latest["pk"].to_numpy())
        self._history_new = pl.concat([snap.history, self._history_new])
        self._history_before = self._history_before or snap.history_before_us
        self._observations[:0] = snap.observations

    async def sync(self, store: DuckDbStore, now_us: int) -> list[AlertEvent]:
        """Persist what changed, then put plan versions stored since the last sync in force.

        Returns:
            Events caused by the plan changes (alerts retired).

        Raises:
            StoreError: Nothing was lost: the changes are saved again on the next sync.
            asyncio.CancelledError: The save itself goes on; should it fail, its changes are
                saved on the next sync.
        """
        snap = self.snapshot()
        job = asyncio.ensure_future(store.call(save, snap))
        try:
            await asyncio.shield(job)
        except asyncio.CancelledError:
            # The save goes on in the store's thread; if it fails, save these changes next time.
            job.add_done_callback(lambda j: None if not j.cancelled() and j.exception() is None
                                  else self._requeue(snap))
            raise
        except BaseException:
            self._requeue(snap)
            raise
        plans, mark = await store.call(load_current_plans, self._plan_mark)
        self._plan_mark = mark
        try:
            return self.set_plans(plans, now_us)
        except AlertError:
            log.exception("a stored care plan could not be put in force")
            return []
