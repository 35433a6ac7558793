"""The benchmark's message mix: a fleet of simulated devices and the order they publish in.

Every message is a device's native payload from :func:`simulators.native.encode`. The fleet
(:data:`FLEET`) sets how many devices of each kind there are and how often each publishes, in
device time; bedside monitors (seven vitals per message) supply most of the readings, watches
three per message, CGMs, meters and scales one each. The schedule is deterministic for a seed,
so every process derives the same devices, order and counts without shipping payloads around.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from simulators import native

__all__ = [
    "FLEET",
    "Device",
    "KindMix",
    "Workload",
    "backlog_messages",
    "live_messages",
    "sample_values",
]


@dataclass(frozen=True, slots=True)
class KindMix:
    """One device kind of the fleet.

    Attributes:
        kind: A :data:`simulators.native.KINDS` entry.
        share: Fraction of the fleet's devices of this kind.
        period_s: Seconds between two messages of one device (device time).
        metrics: The metrics each message carries.
    """

    kind: str
    share: float
    period_s: float
    metrics: tuple[str, ...]


FLEET: tuple[KindMix, ...] = (
    KindMix("bedside_monitor", 0.20, 1.0, native.METRICS_BY_KIND["bedside_monitor"]),
    KindMix("smartwatch", 0.50, 2.5, ("heart_rate", "spo2", "steps")),
    KindMix("cgm", 0.15, 2.0, ("cgm_glucose",)),
    KindMix("glucose_meter", 0.08, 3.0, ("glucose",)),
    KindMix("scale", 0.07, 3.0, ("body_weight",)),
)
"""The default mix: about 4 readings per message, two thirds of them from bedside monitors.

Periods are compressed (a real scale weighs once a day): they set the message mix, not a
claim about real device rates.
"""

_PREFIX = {"bedside_monitor": "BM", "smartwatch": "PW", "cgm": "CG", "glucose_meter": "GM",
           "scale": "SC"}


@dataclass(frozen=True, slots=True)
class Device:
    """One simulated device and the patient it is assigned to."""

    kind: str
    device_id: str
    patient_id: str
    period_s: float
    metrics: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Workload:
    """A fleet and a seed; everything else is derived from them.

    Attributes:
        devices: Number of devices (split over the kinds by :data:`FLEET` shares).
        seed: Seed of the values and the devices' phases.
    """

    devices: int = 500
    seed: int = 7

    def __post_init__(self) -> None:
        if self.devices < len(FLEET):
            raise ValueError(f"workload.devices: {self.devices} must be >= {len(FLEET)}")

    def fleet(self) -> list[Device]:
        """The devices, kind by kind; each kind gets at least one."""
        out: list[Device] = []
        counts = [max(1, round(self.devices * k.share)) for k in FLEET]
        counts[0] += self.devices - sum(counts)  # rounding remainder goes to the monitors
        for mix, count in zip(FLEET, counts, strict=True):
            for i in range(count):
                device_id = f"{_PREFIX[mix.kind]}-{i:04d}"
                out.append(Device(mix.kind, device_id, f"P-{device_id}", mix.period_s,
                                  mix.metrics))
        return out

    def schedule(self, n_messages: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``n_messages`` of the fleet, in device-time order.

        Returns:
            ``(device_index, offset_us)``: which device sends each message and when, in
            microseconds after the first message. Offsets are non-decreasing.
        """
        fleet = self.fleet()
        rng = np.random.default_rng(self.seed)
        period = np.array([d.period_s for d in fleet])
        phase = rng.uniform(0.0, period)
        rate = float((1.0 / period).sum())
        horizon = n_messages / rate + period.max()
        per_device = np.floor((horizon - phase) / period).astype(np.int64) + 1
        index = np.repeat(np.arange(len(fleet)), per_device)
        k = np.concatenate([np.arange(n) for n in per_device])
        t = phase[index] + k * period[index]
        order = np.argsort(t, kind="stable")[:n_messages]
        if len(order) < n_messages:
            raise AssertionError("schedule horizon too short")  # cannot happen: see horizon
        offset_us = np.round((t[order] - t[order[0]]) * 1e6).astype(np.int64)
        return index[order], offset_us


def sample_values(device: Device, rng: random.Random) -> dict[str, float]:
    """Plausible canonical values for one message (blood pressures consistent)."""
    values: dict[str, float] = {}
    for metric in device.metrics:
        if metric == "systolic_bp":
            values[metric] = rng.uniform(105.0, 150.0)
        elif metric == "diastolic_bp":
            values[metric] = rng.uniform(60.0, 90.0)
        elif metric == "mean_bp":
            values[metric] = 0.0  # filled in below from systolic and diastolic
        else:
            lo, hi = _RANGES[metric]
            values[metric] = rng.uniform(lo, hi)
    if "mean_bp" in values:
        values["mean_bp"] = values["diastolic_bp"] + (values["systolic_bp"]
                                                      - values["diastolic_bp"]) / 3.0
    return values


_RANGES: dict[str, tuple[float, float]] = {
    "heart_rate": (55.0, 110.0),
    "respiratory_rate": (10.0, 22.0),
    "spo2": (92.0, 99.0),
    "body_temperature": (36.2, 38.4),
    "steps": (0.0, 15000.0),
    "cgm_glucose": (70.0, 200.0),
    "glucose": (70.0, 200.0),
    "body_weight": (50.0, 110.0),
}


def backlog_messages(
    workload: Workload, n_messages: int, end_us: int, part: int = 0, parts: int = 1
) -> Iterator[tuple[str, bytes, int]]:
    """Encoded messages of a backlog whose last device time is ``end_us``.

    Only the messages of devices with ``index % parts == part`` are produced, so that several
    publisher processes can share one backlog without overlap.

    Yields:
        ``(topic, payload, readings in it)``, in device-time order.
    """
    fleet = workload.fleet()
    index, offset_us = workload.schedule(n_messages)
    start_us = end_us - int(offset_us[-1])
    rng = random.Random(workload.seed * 1000 + part)
    seq = [0] * len(fleet)
    for i, off in zip(index.tolist(), offset_us.tolist(), strict=True):
        if i % parts != part:
            continue
        device = fleet[i]
        seq[i] += 1
        values = sample_values(device, rng)
        topic, payload = native.encode(device.kind, device.device_id, seq[i], start_us + off,
                                       values)
        yield topic, payload, len(values)


def live_messages(workload: Workload, n_messages: int) -> Iterator[tuple[Device, int]]:
    """Which device sends next, and its sequence number, for a paced live run.

    The caller encodes each message at the moment it publishes it, with that moment as the
    device time.
    """
    fleet = workload.fleet()
    index, _ = workload.schedule(n_messages)
    seq = [0] * len(fleet)
    for i in index.tolist():
        seq[i] += 1
        yield fleet[i], seq[i]
