"""The fleet: which patients have which devices, and every message they send.

:func:`plan_fleet` decides the patients and devices (the service registers and assigns them);
:func:`generate` produces all messages of a run in time order, as fast as possible, with no
network: the live :class:`~simulators.publisher.Fleet` publishes exactly this sequence, each at
its due wall time. :func:`ground_truth` lists the scripted events with their device times.

Device ids derive from the patient: ``BM-P001`` (bedside monitor), ``PW-P002`` (smartwatch),
``CGM-P003``, ``GM-P003`` (glucose meter), ``SC-P001`` (scale).
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

from gateway.errors import ConfigError
from simulators import native
from simulators.config import CADENCES, FleetConfig, Timeline
from simulators.physiology import METRICS_OF, Excursion, Physiology, draw_profile
from simulators.scenario import EventRecord, Scenario, ScenarioEvent, load_scenario

__all__ = [
    "DEVICE_PREFIX",
    "FleetPlan",
    "SimDevice",
    "SimMessage",
    "SimPatient",
    "SimReading",
    "generate",
    "ground_truth",
    "plan_fleet",
]

US = 1_000_000
DAY_US = 86_400 * US

DEVICE_PREFIX: Mapping[str, str] = MappingProxyType(
    {
        "bedside_monitor": "BM",
        "smartwatch": "PW",
        "cgm": "CGM",
        "glucose_meter": "GM",
        "scale": "SC",
    }
)
"""Device id prefix per kind: ``<prefix>-<patient id>``."""

TIME_RESOLUTION_US: Mapping[str, int] = MappingProxyType({"smartwatch": 1000, "cgm": US})
"""Device clock resolution where the native format truncates (others carry microseconds)."""


class SimPatient(NamedTuple):
    """One virtual patient."""

    patient_id: str
    diabetic: bool


class SimDevice(NamedTuple):
    """One virtual device and the patient wearing it."""

    device_id: str
    kind: str
    patient_id: str


class SimReading(NamedTuple):
    """A value a message carries, as generated (canonical unit, device precision)."""

    metric: str
    observed_at_us: int
    value: float
    seq: int


class SimMessage(NamedTuple):
    """One message a device sends.

    Attributes:
        ts_us: Device time of sending (UTC microseconds); never after its publish wall time.
        topic: MQTT topic.
        payload: The bytes, in the device's native format.
        device_id: Sending device.
        patient_id: Patient wearing it.
        readings: The values encoded in the payload (empty for garbage): the ground truth.
        garbage: The payload is deliberately undecodable.
    """

    ts_us: int
    topic: str
    payload: bytes
    device_id: str
    patient_id: str
    readings: tuple[SimReading, ...] = ()
    garbage: bool = False


@dataclass(frozen=True, slots=True)
class FleetPlan:
    """Patients, devices and scenario of a fleet.

    Attributes:
        patients: ``P001``... in order.
        devices: Every device, by patient then kind.
        scenario: The loaded scenario, or ``None``.
    """

    patients: tuple[SimPatient, ...]
    devices: tuple[SimDevice, ...]
    scenario: Scenario | None

    def devices_of(self, patient_id: str) -> tuple[SimDevice, ...]:
        """The devices of one patient."""
        return tuple(d for d in self.devices if d.patient_id == patient_id)


def _patient_kinds(
    config: FleetConfig, scenario: Scenario | None, pid: str
) -> tuple[bool, tuple[str, ...]]:
    rng = random.Random(f"vitalwire-sim:{config.seed}:{pid}:plan")
    bedside = rng.random() < config.bedside_fraction
    diabetic = rng.random() < config.diabetic_fraction
    scale = rng.random() < config.scale_fraction
    override = scenario.patients.get(pid) if scenario else None
    if override is not None and override.diabetic is not None:
        diabetic = override.diabetic
    if override is not None and override.kinds is not None:
        return diabetic, override.kinds
    if config.kinds is not None:
        return diabetic, tuple(k for k in native.KINDS if k in config.kinds)
    kinds = {"bedside_monitor" if bedside else "smartwatch"}
    if diabetic:
        kinds |= {"cgm", "glucose_meter"}
    if scale:
        kinds.add("scale")
    return diabetic, tuple(k for k in native.KINDS if k in kinds)


def _event_targets(
    plan: FleetPlan, event: ScenarioEvent
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Devices and metrics an event shows in; ConfigError when it would be invisible."""
    source = plan.scenario.source if plan.scenario else "scenario"
    where = f"{source}: [[event]] #{event.index + 1} ({event.kind})"
    devices = plan.devices_of(event.patient_id)
    if not devices:
        raise ConfigError(
            f"{where}: patient {event.patient_id} is not in the fleet of {len(plan.patients)} "
            f"patients ({plan.patients[0].patient_id}..{plan.patients[-1].patient_id}); "
            "raise the patient count"
        )
    if event.device_kind is not None:
        chosen = [d for d in devices if d.kind == event.device_kind]
        if not chosen:
            raise ConfigError(
                f"{where}.device: {event.patient_id} has no {event.device_kind} (has "
                f"{', '.join(d.kind for d in devices)}); set [patient.{event.patient_id}] kinds"
            )
        return (chosen[0].device_id,), native.METRICS_BY_KIND[event.device_kind]
    assert event.variable is not None
    wanted = METRICS_OF[event.variable]
    shown = [d for d in devices if set(wanted) & set(native.METRICS_BY_KIND[d.kind])]
    if not shown:
        raise ConfigError(
            f"{where}: no device of {event.patient_id} reports {' or '.join(wanted)} (has "
            f"{', '.join(d.kind for d in devices)}); set [patient.{event.patient_id}] kinds"
        )
    metrics = tuple(m for m in wanted if any(m in native.METRICS_BY_KIND[d.kind] for d in shown))
    return tuple(d.device_id for d in shown), metrics


def plan_fleet(config: FleetConfig) -> FleetPlan:
    """Patients and devices of ``config``, with the scenario checked against them."""
    scenario = load_scenario(config.scenario) if config.scenario is not None else None
    patients = []
    devices = []
    for n in range(config.first_patient, config.first_patient + config.patients):
        pid = f"P{n:03d}"
        diabetic, kinds = _patient_kinds(config, scenario, pid)
        patients.append(SimPatient(pid, diabetic))
        devices += [SimDevice(f"{DEVICE_PREFIX[k]}-{pid}", k, pid) for k in kinds]
    plan = FleetPlan(tuple(patients), tuple(devices), scenario)
    if scenario is not None:
        known = {p.patient_id for p in patients}
        for pid in scenario.patients:
            if pid not in known:
                raise ConfigError(
                    f"{scenario.source}: [patient.{pid}] is not in the fleet of "
                    f"{config.patients} patients; raise the patient count"
                )
        for event in scenario.events:
            _event_targets(plan, event)
    return plan


def ground_truth(config: FleetConfig, clock_start_us: int) -> tuple[EventRecord, ...]:
    """The event log of a run of ``config`` starting at wall time ``clock_start_us``."""
    plan = plan_fleet(config)
    if plan.scenario is None:
        return ()
    start = Timeline.of(config, clock_start_us).start_us
    return tuple(EventRecord.of(e, start, *_event_targets(plan, e)) for e in plan.scenario.events)


def _ceil_ms(t_us: int) -> int:
    return -(-t_us // 1000) * 1000


class _DeviceSim:
    """The state of one device during a run: schedule, sequence number, pending backfill."""

    def __init__(
        self,
        device: SimDevice,
        physiology: Physiology,
        seed: int,
        start_us: int,
        windows: Mapping[str, list[tuple[int, int]]],
    ) -> None:
        self.device = device
        self.phys = physiology
        self.seed = seed
        self.rng = random.Random(f"vitalwire-sim:{seed}:{device.device_id}:device")
        self.cadence = CADENCES[device.kind]
        self.metrics = native.METRICS_BY_KIND[device.kind]
        self.slow = [
            (group, span)
            for group, span in self.cadence.slow
            if any(m in self.metrics for m in group)
        ]
        slow_metrics = {m for group, _ in self.slow for m in group}
        self.fast = [m for m in self.metrics if m not in slow_metrics]
        self.due = [start_us + round(self.rng.uniform(0.0, span[0]) * US) for _, span in self.slow]
        self.start_us = start_us
        self.seq = 0
        self.last_us: int | None = None
        self.steps_total = 0.0
        self.resolution = TIME_RESOLUTION_US.get(device.kind, 1)
        self.dropouts = windows.get("dropout", [])
        self.garbage = windows.get("garbage", [])
        self.backlog: list[tuple[int, int, float]] = []

    def first_tick(self) -> int:
        if self.cadence.interval_s is None:
            return self._next_daily(self.start_us - 1)
        return _ceil_ms(
            self.start_us + round(self.rng.uniform(0.0, self.cadence.interval_s[0]) * US)
        )

    def next_tick(self, t_us: int) -> int:
        if self.cadence.interval_s is None:
            return self._next_daily(t_us)
        return t_us + round(self.rng.uniform(*self.cadence.interval_s) * 1000) * 1000

    def _next_daily(self, t_us: int) -> int:
        day = t_us // DAY_US
        best = math.inf
        for d in (day - 1, day, day + 1):
            for i, at_h in enumerate(self.cadence.daily_at_h):
                jitter = random.Random(
                    f"vitalwire-sim:{self.seed}:{self.device.device_id}:daily:{d}:{i}"
                ).uniform(-1.0, 1.0)
                slot = d * DAY_US + round(
                    at_h * 3600 * US + jitter * self.cadence.daily_jitter_s * US
                )
                if t_us < slot < best:
                    best = slot
        return _ceil_ms(int(best))

    def _due_metrics(self, t_us: int) -> list[str]:
        due = set(self.fast)
        for i, (group, (low, high)) in enumerate(self.slow):
            if t_us >= self.due[i]:
                due.update(group)
                self.due[i] = t_us + round(self.rng.uniform(low, high) * US)
        return [m for m in self.metrics if m in due]

    def _device_time(self, t_us: int) -> int:
        return t_us - t_us % self.resolution

    def _steps_today(self, t_us: int) -> float:
        """The watch's cumulative step count of the (UTC) day."""
        if self.last_us is None:
            self.steps_total = self.phys.expected_steps_today(t_us)
        elif self.last_us // DAY_US != t_us // DAY_US:
            self.steps_total = 0.0
        else:
            self.steps_total += self.phys.steps_between(self.last_us, t_us, self.rng)
        self.last_us = t_us
        return self.steps_total

    def fire(self, t_us: int) -> list[SimMessage]:
        """Messages the device sends at tick ``t_us`` (none while it drops out)."""
        dev = self.device
        self.seq += 1
        if any(a <= t_us < b for a, b in self.dropouts):
            if dev.kind == "cgm":
                value = self.phys.measure(("cgm_glucose",), t_us, self.rng)["cgm_glucose"]
                self.backlog.append((self.seq, t_us, value))
            return []
        out = []
        if self.backlog:
            topic, payload = native.encode_cgm_backfill(dev.device_id, self.backlog)
            readings = tuple(
                SimReading("cgm_glucose", self._device_time(ts), v, s) for s, ts, v in self.backlog
            )
            out.append(SimMessage(t_us, topic, payload, dev.device_id, dev.patient_id, readings))
            self.backlog = []
        if any(a <= t_us < b for a, b in self.garbage):
            topic, payload = native.encode_garbage(dev.kind, dev.device_id, self.rng)
            out.append(SimMessage(t_us, topic, payload, dev.device_id, dev.patient_id, (), True))
            return out
        metrics = self._due_metrics(t_us)
        values = self.phys.measure([m for m in metrics if m != "steps"], t_us, self.rng)
        if "steps" in metrics:
            values["steps"] = self._steps_today(t_us)
        values = {m: values[m] for m in metrics}
        topic, payload = native.encode(dev.kind, dev.device_id, self.seq, t_us, values)
        observed = self._device_time(t_us)
        readings = tuple(SimReading(m, observed, v, self.seq) for m, v in values.items())
        out.append(SimMessage(t_us, topic, payload, dev.device_id, dev.patient_id, readings))
        return out


def _build(plan: FleetPlan, config: FleetConfig, start_us: int) -> list[_DeviceSim]:
    excursions: dict[str, list[Excursion]] = {}
    windows: dict[str, dict[str, list[tuple[int, int]]]] = {}
    for event in plan.scenario.events if plan.scenario else ():
        start, peak, plateau_end, end = event.times_us(start_us)
        if event.variable is not None and event.target is not None:
            excursions.setdefault(event.patient_id, []).append(
                Excursion(event.variable, event.target, start, peak, plateau_end, end)
            )
        else:
            (device_id,), _ = _event_targets(plan, event)
            windows.setdefault(device_id, {}).setdefault(event.kind, []).append((start, end))
    physiology = {
        p.patient_id: Physiology(
            draw_profile(p.patient_id, diabetic=p.diabetic, seed=config.seed),
            seed=config.seed,
            start_us=start_us,
            excursions=excursions.get(p.patient_id, ()),
        )
        for p in plan.patients
    }
    return [
        _DeviceSim(d, physiology[d.patient_id], config.seed, start_us, windows.get(d.device_id, {}))
        for d in plan.devices
    ]


def _cadence_ticks(sims: list[_DeviceSim]) -> Iterator[tuple[int, int]]:
    heap = [(sim.first_tick(), i) for i, sim in enumerate(sims)]
    heapq.heapify(heap)
    while heap:
        t_us, i = heap[0]
        yield t_us, i
        heapq.heapreplace(heap, (sims[i].next_tick(t_us), i))


def _rate_ticks(n_devices: int, start_us: int, spacing_us: float) -> Iterator[tuple[int, int]]:
    k = 0
    while True:
        yield start_us + math.floor(k * spacing_us), k % n_devices
        k += 1


def generate(config: FleetConfig, clock_start_us: int) -> Iterator[SimMessage]:
    """Every message of a run of ``config`` starting at wall time ``clock_start_us``.

    Pure and fast: no network, no sleeping. Messages come in device-time order (ties by device
    order of the plan). The simulated timeline is :meth:`Timeline.of` ``(config,
    clock_start_us)``; without a duration the iterator never ends. With ``config.rate`` the
    devices take turns at ``rate`` messages per wall second instead of their own cadence.
    """
    plan = plan_fleet(config)
    timeline = Timeline.of(config, clock_start_us)
    sims = _build(plan, config, timeline.start_us)
    if config.rate is not None:
        ticks = _rate_ticks(len(sims), timeline.start_us, config.acceleration * US / config.rate)
    else:
        ticks = _cadence_ticks(sims)
    end = timeline.end_us
    for t_us, i in ticks:
        if end is not None and t_us >= end:
            return
        yield from sims[i].fire(t_us)
