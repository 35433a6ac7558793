"""The benchmark's printed report: the figures, then the goals next to them.

The report judges nothing by its exit status: a missed goal is printed as ``MISSED``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median

from bench_proc import CpuUse
from bench_subjects import SERVICE, DrainResult, LatencyResult

__all__ = ["GOALS", "Goal", "Report", "render"]


@dataclass(frozen=True, slots=True)
class Goal:
    """One target from the issue.

    Attributes:
        label: What is compared.
        target: The bound.
        higher_is_better: ``>= target`` when true, ``<= target`` otherwise.
        unit: Printed after the numbers (``x`` or ``ms``).
    """

    label: str
    target: float
    higher_is_better: bool
    unit: str

    def met(self, value: float) -> bool:
        """Whether ``value`` meets the target."""
        return value >= self.target if self.higher_is_better else value <= self.target

    def bound(self) -> str:
        """The target as text, e.g. ``>= 40x``."""
        op = ">=" if self.higher_is_better else "<="
        return f"{op} {self.target:g}{self.unit}" if self.unit == "x" else \
            f"{op} {self.target:g} {self.unit}"


GOALS = {
    "vs_naive": Goal("service / naive baseline, readings/s", 40.0, True, "x"),
    "vs_count": Goal("service / paho count-only, messages/s", 0.8, True, "x"),
    "p99": Goal("p99 publish -> committed at the paced rate", 100.0, False, "ms"),
}
"""The issue's goals."""


@dataclass(frozen=True, slots=True)
class Report:
    """Everything one run measured.

    Attributes:
        header: Lines describing the set-up.
        naive: The naive baseline's drain.
        counts: Count-only drains (stock paho), one per round.
        services: Service drains, one per round (paired with ``counts``).
        backlog_readings: Readings in each round's backlog.
        latency: The paced run.
        paced_rate: Target readings per second of the paced run.
        published_rate: Readings per second the paced publisher achieved.
        cpu: CPU use over the whole run (to tell how busy the machine was otherwise).
        counts_buffered: Count-only drains on the service's buffered client, one per round (a
            reference: the transport's own speed, with nothing behind it).
    """

    header: Sequence[str]
    naive: DrainResult
    counts: Sequence[DrainResult]
    services: Sequence[DrainResult]
    backlog_readings: int
    latency: LatencyResult
    paced_rate: float
    published_rate: float
    cpu: CpuUse
    counts_buffered: Sequence[DrainResult] = ()

    def vs_buffered(self) -> list[float]:
        """Service / count-only on the buffered client, messages per second, per round."""
        return [s.messages_per_s / c.messages_per_s
                for s, c in zip(self.services, self.counts_buffered, strict=False)
                if c.messages_per_s > 0]

    def vs_count(self) -> list[float]:
        """Service / count-only messages per second, per round."""
        return [s.messages_per_s / c.messages_per_s
                for s, c in zip(self.services, self.counts, strict=True)
                if c.messages_per_s > 0]

    def cpu_ratio(self) -> float | None:
        """Median count-only CPU per message / median service CPU per message."""
        svc = median(s.cpu_us_per_message for s in self.services)
        return median(c.cpu_us_per_message for c in self.counts) / svc if svc > 0 else None

    def vs_naive(self) -> float | None:
        """Median service readings per second / naive readings per second."""
        if self.naive.readings_per_s <= 0:
            return None
        return median(s.readings_per_s for s in self.services) / self.naive.readings_per_s


def _mb(n: int) -> str:
    return f"{n / 2**20:.0f} MB"


_HEAD = (f"  {'subscriber':<28} {'run':>6} {'messages':>9} {'readings':>9} {'seconds':>8}"
         f" {'msg/s':>9} {'readings/s':>11} {'CPU us/msg':>10} {'peak RSS':>9}")


def _row(d: DrainResult, run: str) -> str:
    readings = f"{d.readings:>9}" if d.readings else f"{'-':>9}"
    rps = f"{d.readings_per_s:>11,.0f}" if d.readings else f"{'-':>11}"
    flag = "" if d.complete else "  INCOMPLETE (timed out)"
    # Baseline processes import the whole benchmark (spawn), so their RSS says nothing.
    rss = _mb(d.peak_rss) if d.readings and d.name == SERVICE else "-"
    return (f"  {d.name:<28} {run:>6} {d.messages:>9} {readings} {d.seconds:>8.2f}"
            f" {d.messages_per_s:>9,.0f} {rps} {d.cpu_us_per_message:>10,.0f} {rss:>9}{flag}")


def _median_row(runs: Sequence[DrainResult]) -> str:
    mps = median(d.messages_per_s for d in runs)
    rps = f"{median(d.readings_per_s for d in runs):>11,.0f}" if runs[0].readings else \
        f"{'-':>11}"
    cpu = median(d.cpu_us_per_message for d in runs)
    return (f"  {runs[0].name:<28} {'median':>6} {'':>9} {'':>9} {'':>8} {mps:>9,.0f} {rps}"
            f" {cpu:>10,.0f}")


def _throughput(r: Report) -> list[str]:
    out = ["", "Throughput: each subscriber drains a backlog queued at the broker while it was"
           " away", _HEAD]
    buffered = list(r.counts_buffered) or [None] * len(r.counts)
    for i, (c, s, b) in enumerate(zip(r.counts, r.services, buffered, strict=True)):
        trio = [c, s, b] if i % 2 == 0 else [b, s, c]
        out += [_row(d, str(i + 1)) for d in trio if d is not None]
    if len(r.counts) > 1:
        out += [_median_row(r.counts), _median_row(r.services)]
        if r.counts_buffered:
            out.append(_median_row(r.counts_buffered))
    out.append(_row(r.naive, "1"))
    ratios = r.vs_count()
    out.append("  service / count-only, messages/s, per round: "
               + ", ".join(f"{x:.2f}" for x in ratios))
    if r.counts_buffered:
        out.append("  service / count-only on the buffered client (reference, not a goal):"
                   " per round " + ", ".join(f"{x:.2f}" for x in r.vs_buffered()))
    cpu = r.cpu_ratio()
    if cpu is not None:
        out.append(f"  the same by CPU time (count-only CPU/msg / service CPU/msg, medians):"
                   f" {cpu:.2f}  (less sensitive to other load than the rates)")
    split = [(s.detail["intake_cpu_us_per_message"],
              s.cpu_us_per_message - s.detail["intake_cpu_us_per_message"])
             for s in r.services if "intake_cpu_us_per_message" in s.detail]
    if split:
        out.append(f"  service CPU per message, medians: intake process"
                   f" {median(i for i, _ in split):.0f} us, service process"
                   f" {median(p for _, p in split):.0f} us")
    lost = sum(r.backlog_readings - s.readings for s in r.services)
    quarantined = sum(int(s.detail.get("quarantined", 0)) for s in r.services)
    duplicates = sum(int(s.detail.get("duplicates", 0)) for s in r.services)
    batches = [int(s.detail.get("batches", 0)) for s in r.services]
    out.append(f"  service: {r.backlog_readings} readings per backlog; batches per drain"
               f" {', '.join(map(str, batches))}; {quarantined} quarantined, {duplicates}"
               f" duplicates, {lost} published readings not stored")
    return out


def _latency(r: Report) -> list[str]:
    lat = r.latency
    out = ["", f"Latency: {r.paced_rate:,.0f} readings/s paced into the running service,"
           f" publish -> committed, after a {lat.warmup_s:g} s warm-up",
           f"  published {lat.messages} messages, achieved {r.published_rate:,.0f} readings/s;"
           f" committed {lat.readings} readings over {lat.commit_span_s:.1f} s in"
           f" {lat.detail.get('batches', 0)} batches"
           + ("" if lat.complete else "  INCOMPLETE (timed out)")]
    for label, pct in (("publish -> committed", lat.percentiles_ms),
                       ("publish -> received", lat.receive_ms),
                       ("committed, warm-up too", lat.whole_run_ms)):
        if pct:
            out.append(f"  {label:<22} p50 {pct['p50']:6.1f} ms   p90 {pct['p90']:6.1f} ms"
                       f"   p99 {pct['p99']:6.1f} ms   max {pct['max']:6.1f} ms")
    out.append(f"  ({lat.timed_readings} readings timed after the warm-up; CGM readings never"
               " are: their device time has whole seconds)")
    drain_rss = max(s.peak_rss for s in r.services)
    out.append(f"  peak RSS of the service (with its intake process): {_mb(lat.peak_rss)} paced,"
               f" {_mb(drain_rss)} draining a backlog")
    return out


def _goal_row(goal: Goal, value: float | None) -> str:
    if value is None:
        shown, verdict = "n/a", "MISSED (not measured)"
    else:
        shown = f"{value:.2f}x" if goal.unit == "x" else f"{value:.1f} ms"
        verdict = "met" if goal.met(value) else "MISSED"
    return f"  {goal.label:<46} {goal.bound():>10} {shown:>10}   {verdict}"


def render(r: Report) -> str:
    """The whole report as text."""
    out = [*r.header, *_throughput(r), *_latency(r)]
    others = r.cpu.others_share
    out += ["", f"Machine: {r.cpu.wall_s:.0f} s wall; other processes used {others:.0%} of the"
            f" {r.cpu.cpus} CPUs meanwhile"
            + (" (figures are disturbed: rerun on a quiet machine)" if others > 0.05 else "")]
    ratios = r.vs_count()
    out += ["", "Goals", f"  {'':<46} {'target':>10} {'measured':>10}",
            _goal_row(GOALS["vs_naive"], r.vs_naive()),
            _goal_row(GOALS["vs_count"], median(ratios) if ratios else None),
            _goal_row(GOALS["p99"], r.latency.percentiles_ms.get("p99"))]
    if len(ratios) > 1:
        out.append("  (service / count-only: median of the per-round ratios)")
    return "\n".join(out)
