"""Run one benchmark function in a fresh process of its own (``spawn``), and get its result.

Each subject and each publisher runs in its own interpreter, so nothing measured shares a GIL
(or a polars/DuckDB thread pool) with the process that feeds it.
"""

from __future__ import annotations

import multiprocessing
import queue
import resource
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

__all__ = ["CTX", "Child", "ChildFailed", "CpuMeter", "CpuUse"]

CTX = multiprocessing.get_context("spawn")
"""The start method of every child (no fork of a process holding threads)."""


class ChildFailed(RuntimeError):
    """A child raised, died, or did not answer in time; the message holds its traceback."""


def _main(results: Any, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        results.put(("ok", fn(*args)))
    except BaseException:
        results.put(("error", traceback.format_exc()))


class Child:
    """``fn(*args)`` running in a new process.

    Args:
        name: For messages.
        fn: A module-level function (it is pickled by reference).
        args: Its arguments (picklable; multiprocessing events and queues are fine).
    """

    def __init__(self, name: str, fn: Callable[..., Any], *args: Any) -> None:
        self.name = name
        self._results = CTX.Queue()
        self._proc = CTX.Process(target=_main, args=(self._results, fn, args), name=name,
                                 daemon=True)
        self._proc.start()

    @property
    def pid(self) -> int:
        """The child's process id."""
        assert self._proc.pid is not None
        return self._proc.pid

    def result(self, timeout: float) -> Any:
        """The function's return value; raises :class:`ChildFailed` if it raised or hung."""
        waited = 0.0
        while True:
            try:
                status, value = self._results.get(timeout=1.0)
                break
            except queue.Empty:
                waited += 1.0
                if not self._proc.is_alive():
                    raise ChildFailed(
                        f"{self.name}: process exited with code {self._proc.exitcode}"
                        " without a result"
                    ) from None
                if waited >= timeout:
                    self._proc.terminate()
                    raise ChildFailed(f"{self.name}: no result within {timeout:.0f} s") from None
        self._proc.join(10)
        if status != "ok":
            raise ChildFailed(f"{self.name} failed:\n{value}")
        return value


@dataclass(frozen=True, slots=True)
class CpuUse:
    """CPU time over an interval.

    Attributes:
        wall_s: Length of the interval.
        machine_s: CPU time spent by the whole machine (all cores, all processes).
        ours_s: CPU time of this process and its waited-for children (broker, subjects).
        cpus: Logical CPUs.
    """

    wall_s: float
    machine_s: float
    ours_s: float
    cpus: int

    @property
    def others_share(self) -> float:
        """Fraction of the machine's capacity used by processes that are not ours."""
        capacity = self.wall_s * self.cpus
        return max(self.machine_s - self.ours_s, 0.0) / capacity if capacity > 0 else 0.0


def _ours() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _machine() -> float:
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0.0)
                 + getattr(t, "softirq", 0.0) + getattr(t, "steal", 0.0))


class CpuMeter:
    """How much of the machine other processes used while the benchmark ran.

    Children count once they have been waited for, so read it after they all ended.
    """

    def __init__(self) -> None:
        self._t0 = time.monotonic()
        self._machine0 = _machine()
        self._ours0 = _ours()

    def read(self) -> CpuUse:
        """CPU use since construction."""
        return CpuUse(time.monotonic() - self._t0, _machine() - self._machine0,
                      _ours() - self._ours0, psutil.cpu_count() or 1)
