"""A ward of virtual BLE devices driven by the simulators' physiology and scenario files.

The fleet plan (:func:`simulators.fleet.plan_fleet`) decides patients and device kinds as for
the MQTT simulators; each kind becomes BLE devices: a smartwatch is a heart-rate strap, a
bedside monitor a blood-pressure cuff, a pulse oximeter and a thermometer, ``cgm`` a CGM sensor,
``glucose_meter`` a glucose meter with a day of stored records, ``scale`` a weight scale. Every
device reads its patient's :class:`~simulators.physiology.Physiology` (scripted excursions
applied) at the wall clock and sends at its own interval.

Device ids are ``BLE-<prefix>-<patient>`` (``BLE-GM-P003``); addresses are derived from the
patient number and kind, so a run with the same plan always has the same addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from simulators.ble.link import VirtualLink
from simulators.ble.meter import GlucoseMeter
from simulators.ble.peripherals import (
    BloodPressureMonitor,
    CgmSensor,
    HeartRateSensor,
    PulseOximeter,
    Thermometer,
    VirtualDevice,
    WeightScale,
)
from simulators.config import FleetConfig
from simulators.fleet import plan_fleet
from simulators.physiology import Excursion, Physiology, draw_profile

__all__ = ["BLE_KINDS", "DEFAULT_INTERVALS_S", "BleFleet", "BleSimDevice"]

US: Final = 1_000_000

BLE_KINDS: Final[Mapping[str, tuple[tuple[str, type[VirtualDevice]], ...]]] = MappingProxyType({
    "smartwatch": (("HR", HeartRateSensor),),
    "bedside_monitor": (("BP", BloodPressureMonitor), ("OX", PulseOximeter),
                        ("TH", Thermometer)),
    "cgm": (("CGM", CgmSensor),),
    "glucose_meter": (("GM", GlucoseMeter),),
    "scale": (("SC", WeightScale),),
})
"""Simulator device kind -> BLE devices (id prefix, class)."""

DEFAULT_INTERVALS_S: Final[Mapping[str, float]] = MappingProxyType({
    "HR": 1.0, "OX": 1.0, "BP": 300.0, "TH": 300.0, "CGM": 300.0, "GM": 4 * 3600.0,
    "SC": 24 * 3600.0,
})
"""Seconds between measurements per BLE device kind."""

_PREFIX_INDEX: Final = {p: i for i, p in enumerate(DEFAULT_INTERVALS_S, start=1)}


@dataclass(frozen=True, slots=True)
class BleSimDevice:
    """One virtual BLE device of the fleet and the patient wearing it."""

    device_id: str
    address: str
    patient_id: str
    prefix: str
    device: VirtualDevice


class BleFleet:
    """Virtual BLE devices for a fleet config, on one :class:`VirtualLink`.

    Args:
        config: Patients, seed and scenario (the MQTT fields are ignored).
        link: The virtual radio.
        clock_us: Wall clock (UTC microseconds).
        intervals_s: Seconds between measurements per prefix (defaults per kind).
        backlog_records: Glucose records each meter holds at start (the past day).
    """

    def __init__(
        self,
        config: FleetConfig,
        link: VirtualLink,
        *,
        clock_us: Callable[[], int] = lambda: time.time_ns() // 1000,
        intervals_s: Mapping[str, float] | None = None,
        backlog_records: int = 6,
    ) -> None:
        self.config = config
        self.clock_us = clock_us
        self.intervals = {**DEFAULT_INTERVALS_S, **(intervals_s or {})}
        self.start_us = clock_us()
        plan = plan_fleet(config)
        excursions = self._excursions(plan)
        self.physiology = {
            p.patient_id: Physiology(
                draw_profile(p.patient_id, diabetic=p.diabetic, seed=config.seed),
                seed=config.seed, start_us=self.start_us - 86_400 * US,
                excursions=excursions.get(p.patient_id, ()),
            )
            for p in plan.patients
        }
        self.devices: list[BleSimDevice] = []
        for sim in plan.devices:
            n = int(sim.patient_id[1:])
            for prefix, cls in BLE_KINDS[sim.kind]:
                device_id = f"BLE-{prefix}-{sim.patient_id}"
                address = f"F1:{_PREFIX_INDEX[prefix]:02X}:00:00:{n >> 8:02X}:{n & 0xFF:02X}"
                bumble = link.device(device_id, address)
                if cls is CgmSensor:
                    dev: VirtualDevice = CgmSensor(
                        bumble, clock_us=clock_us, session_start_us=self.start_us - 3600 * US)
                else:
                    dev = cls(bumble, clock_us=clock_us)
                self.devices.append(BleSimDevice(device_id, address, sim.patient_id, prefix, dev))
        for d in self.devices:
            if isinstance(d.device, GlucoseMeter):
                self._fill_meter(d, backlog_records)
        self._tasks: list[asyncio.Task[None]] = []

    def _excursions(self, plan: object) -> dict[str, list[Excursion]]:
        out: dict[str, list[Excursion]] = {}
        scenario = getattr(plan, "scenario", None)
        for event in scenario.events if scenario is not None else ():
            if event.variable is not None and event.target is not None:
                start, peak, plateau_end, end = event.times_us(self.start_us)
                out.setdefault(event.patient_id, []).append(
                    Excursion(event.variable, event.target, start, peak, plateau_end, end))
        return out

    def _fill_meter(self, d: BleSimDevice, count: int) -> None:
        assert isinstance(d.device, GlucoseMeter)
        phys = self.physiology[d.patient_id]
        rng = random.Random(f"vitalwire-sim-ble:{self.config.seed}:{d.device_id}")
        step = 86_400 * US // max(count, 1)
        for i in range(count):
            t = self.start_us - (count - i) * step
            value = phys.measure(("glucose",), t, rng)["glucose"]
            d.device.add_record(t, value, meal=rng.choice((1, 2, None)))

    def allowed_devices(self) -> list[tuple[str, str, bool]]:
        """``(address, device_id, require_bond)`` of every device, for the gateway config."""
        return [(d.address, d.device_id, d.prefix == "GM") for d in self.devices]

    async def start(self) -> None:
        """Power on and advertise every device, then start measuring."""
        for d in self.devices:
            await d.device.start()
        self._tasks = [asyncio.create_task(self._drive(d), name=f"ble-sim-{d.device_id}")
                       for d in self.devices]

    async def stop(self) -> None:
        """Stop measuring and disconnect every device."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for d in self.devices:
            await d.device.stop()

    async def _drive(self, d: BleSimDevice) -> None:
        rng = random.Random(f"vitalwire-sim-ble:{self.config.seed}:{d.device_id}:drive")
        interval = self.intervals[d.prefix]
        await asyncio.sleep(rng.uniform(0.0, min(interval, 5.0)))
        while True:
            await self.measure_once(d, rng)
            await asyncio.sleep(interval)

    async def measure_once(self, d: BleSimDevice, rng: random.Random) -> None:
        """One measurement of ``d`` at the current clock."""
        t = self.clock_us()
        phys = self.physiology[d.patient_id]
        dev = d.device
        if isinstance(dev, HeartRateSensor):
            bpm = round(phys.measure(("heart_rate",), t, rng)["heart_rate"])
            await dev.measure(bpm, (round(60 / bpm * 1024),))
        elif isinstance(dev, PulseOximeter):
            m = phys.measure(("spo2", "heart_rate"), t, rng)
            await dev.measure(m["spo2"], m["heart_rate"])
        elif isinstance(dev, BloodPressureMonitor):
            m = phys.measure(("systolic_bp", "diastolic_bp", "mean_bp", "heart_rate"), t, rng)
            await dev.measure(m["systolic_bp"], m["diastolic_bp"], m["mean_bp"],
                              m["heart_rate"], t)
        elif isinstance(dev, Thermometer):
            await dev.measure(phys.measure(("body_temperature",), t, rng)["body_temperature"], t)
        elif isinstance(dev, CgmSensor):
            await dev.measure(phys.measure(("cgm_glucose",), t, rng)["cgm_glucose"], t)
        elif isinstance(dev, GlucoseMeter):
            dev.add_record(t, phys.measure(("glucose",), t, rng)["glucose"])
        elif isinstance(dev, WeightScale):
            await dev.measure(phys.measure(("body_weight",), t, rng)["body_weight"], t)
