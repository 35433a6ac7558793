"""Virtual BLE health devices: Bumble GATT peripherals for every SIG health service.

Each :class:`VirtualDevice` owns a Bumble ``Device`` (see :mod:`simulators.ble.link`),
advertises its service with its name in the advertising data (20 ms interval), and serves
Device Information, Battery and Current Time beside its health service. Its clock is the
injected clock plus ``clock_offset_s``, so a test can give a device a skewed clock.

Measurements are sent the way real devices send them: notifications are dropped while nobody
is subscribed; indicated measurements (blood pressure, temperature, weight, spot-check) wait
in a backlog and are indicated once a collector subscribes; the glucose meter stores records
and serves them through a working Record Access Control Point.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from bumble import gatt
from bumble.core import UUID, AdvertisingData
from bumble.device import Connection, Device

from gateway.ble.glucose import session_start_utc_us
from simulators.ble import encode

__all__ = [
    "BloodPressureMonitor",
    "CgmSensor",
    "HeartRateSensor",
    "Props",
    "PulseOximeter",
    "Thermometer",
    "VirtualDevice",
    "WeightScale",
]

log = logging.getLogger(__name__)

Props = gatt.Characteristic.Properties
READABLE = gatt.Characteristic.READABLE
WRITEABLE = gatt.Characteristic.WRITEABLE
ClockUs = Callable[[], int]


def _system_clock_us() -> int:
    return time.time_ns() // 1000


class VirtualDevice:
    """A virtual peripheral: one health service plus Device Information, Battery, Current Time.

    Args:
        device: A Bumble device (not powered on), e.g. ``VirtualLink.device(...)``.
        clock_us: Wall clock, UTC microseconds.
        clock_offset_s: How far the device's own clock is ahead of ``clock_us``.
    """

    SERVICE: int = 0
    KIND: str = ""

    def __init__(
        self, device: Device, *, clock_us: ClockUs = _system_clock_us, clock_offset_s: int = 0
    ) -> None:
        self.device = device
        self.clock_us = clock_us
        self.clock_offset_s = clock_offset_s
        self.battery = 90
        self._subscribed: dict[int, asyncio.Event] = {}
        self._backlog: list[tuple[gatt.Characteristic[bytes], bytes]] = []
        self._flushing: asyncio.Task[None] | None = None
        self.sent = 0
        self.connections = 0
        self.battery_char = self._char(0x2A19, Props.READ | Props.NOTIFY,
                                       read=lambda _c: encode.battery_level(self.battery))
        self.time_char = self._char(0x2A2B, Props.READ,
                                    read=lambda _c: encode.current_time(self.device_time_us()))
        self._health = self.services()

    @property
    def address(self) -> str:
        """The device's Bluetooth address (``F1:00:00:00:00:01``)."""
        return str(self.device.random_address).split("/")[0]

    @property
    def name(self) -> str:
        """The advertised name."""
        return str(self.device.name)

    def device_time_us(self) -> int:
        """The device's own clock (wall clock plus its offset)."""
        return self.clock_us() + self.clock_offset_s * 1_000_000

    # -- GATT plumbing ---------------------------------------------------------------------------

    def _char(
        self,
        uuid16: int,
        props: gatt.Characteristic.Properties,
        *,
        value: bytes = b"",
        read: Callable[[Connection], bytes] | None = None,
        write: Callable[[Connection, bytes], None] | None = None,
    ) -> gatt.Characteristic[bytes]:
        perms = READABLE | (WRITEABLE if props & (Props.WRITE | Props.WRITE_WITHOUT_RESPONSE)
                            else 0)
        val: gatt.CharacteristicValue[bytes] | bytes = value
        if read is not None or write is not None:
            val = gatt.CharacteristicValue(read=read, write=write)
        char: gatt.Characteristic[bytes] = gatt.Characteristic(
            UUID.from_16_bits(uuid16), props, perms, val
        )
        event = self._subscribed.setdefault(uuid16, asyncio.Event())

        def on_subscription(_conn: Connection, notify: bool, indicate: bool) -> None:
            if notify or indicate:
                event.set()
                if self._backlog and (self._flushing is None or self._flushing.done()):
                    self._flushing = asyncio.get_running_loop().create_task(self._flush())
            else:
                event.clear()

        char.on("subscription", on_subscription)
        return char

    def services(self) -> list[gatt.Service]:
        """The health service(s) of this device kind."""
        raise NotImplementedError

    def _common_services(self) -> list[gatt.Service]:
        return [
            gatt.Service(UUID.from_16_bits(0x180A), [
                self._char(0x2A29, Props.READ, value=b"vitalwire"),
                self._char(0x2A24, Props.READ, value=self.KIND.encode()),
                self._char(0x2A25, Props.READ, value=self.name.encode()),
            ]),
            gatt.Service(UUID.from_16_bits(0x180F), [self.battery_char]),
            gatt.Service(UUID.from_16_bits(0x1805), [self.time_char]),
        ]

    def subscribed(self, uuid16: int) -> asyncio.Event:
        """Set while a collector is subscribed to characteristic ``uuid16``."""
        return self._subscribed.setdefault(uuid16, asyncio.Event())

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Add the services, power on and advertise (restarting after each disconnect)."""
        self.device.add_services([*self._health, *self._common_services()])
        self.device.on("connection", self._on_connection)
        await self.device.power_on()
        adv = AdvertisingData([
            (AdvertisingData.COMPLETE_LOCAL_NAME, self.name.encode()),
            (AdvertisingData.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
             self.SERVICE.to_bytes(2, "little")),
        ])
        await self.device.start_advertising(
            advertising_data=bytes(adv), scan_response_data=b"", auto_restart=True,
            advertising_interval_min=20, advertising_interval_max=20,
        )

    def _on_connection(self, connection: Connection) -> None:
        self.connections += 1

        def on_disconnection(_reason: int) -> None:
            for event in self._subscribed.values():
                event.clear()

        connection.on("disconnection", on_disconnection)

    async def stop(self) -> None:
        """Stop advertising and drop every connection."""
        with contextlib.suppress(Exception):
            await self.device.stop_advertising()
        await self.drop_connections()
        if self._flushing is not None:
            self._flushing.cancel()

    async def drop_connections(self) -> None:
        """Disconnect every collector (a forced drop, as when the device walks out of range)."""
        for conn in list(self.device.connections.values()):
            with contextlib.suppress(Exception):
                await conn.disconnect()

    # -- sending -------------------------------------------------------------------------------

    async def notify(self, char: gatt.Characteristic[bytes], value: bytes) -> bool:
        """Notify ``value`` if someone is subscribed; returns whether it was sent."""
        uuid16 = int.from_bytes(char.uuid.to_bytes(), "little") & 0xFFFF
        if not self.subscribed(uuid16).is_set():
            return False
        await self.device.notify_subscribers(char, value)
        self.sent += 1
        return True

    async def indicate(self, char: gatt.Characteristic[bytes], value: bytes) -> None:
        """Indicate ``value`` now if subscribed, else keep it until a collector subscribes."""
        self._backlog.append((char, value))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush())
        await asyncio.sleep(0)

    async def _flush(self) -> None:
        while self._backlog:
            char, value = self._backlog[0]
            uuid16 = int.from_bytes(char.uuid.to_bytes(), "little") & 0xFFFF
            if not self.subscribed(uuid16).is_set():
                return
            try:
                await self.device.indicate_subscribers(char, value)
            except Exception:  # the link dropped mid-indication: keep it for the next collector
                return
            self._backlog.pop(0)
            self.sent += 1

    @property
    def backlog(self) -> int:
        """Indications waiting for a collector."""
        return len(self._backlog)


class HeartRateSensor(VirtualDevice):
    """Heart Rate service: measurement notifications and a chest sensor location."""

    SERVICE = 0x180D
    KIND = "heart_rate_sensor"

    def services(self) -> list[gatt.Service]:
        self.measurement = self._char(0x2A37, Props.NOTIFY)
        return [gatt.Service(UUID.from_16_bits(self.SERVICE), [
            self.measurement, self._char(0x2A38, Props.READ, value=bytes([1])),
        ])]

    async def measure(self, bpm: int, rr_1024: tuple[int, ...] = ()) -> bool:
        """Notify one heart rate (and RR intervals)."""
        return await self.notify(self.measurement, encode.heart_rate(bpm, rr_1024=rr_1024))


class CgmSensor(VirtualDevice):
    """CGM service: measurements with E2E-CRC, feature, and a Session Start Time."""

    SERVICE = 0x181F
    KIND = "cgm"

    def __init__(self, device: Device, *, session_start_us: int, tz_quarters: int = 0,
                 **kw: object) -> None:
        super().__init__(device, **kw)  # type: ignore[arg-type]
        self.session_start_us = session_start_us
        self.tz_quarters = tz_quarters

    def services(self) -> list[gatt.Service]:
        self.measurement = self._char(0x2AA7, Props.NOTIFY)
        sst = self._char(0x2AAA, Props.READ | Props.WRITE, read=lambda _c: (
            encode.cgm_session_start_time(
                self.session_start_us + self.clock_offset_s * 1_000_000, self.tz_quarters)
        ), write=self._on_sst)
        return [gatt.Service(UUID.from_16_bits(self.SERVICE), [
            self.measurement, self._char(0x2AA8, Props.READ, value=encode.cgm_feature()), sst,
        ])]

    def _on_sst(self, _connection: Connection, value: bytes) -> None:
        start = session_start_utc_us(value)
        if start is not None:
            self.session_start_us = start - self.clock_offset_s * 1_000_000

    def offset_min(self, t_us: int) -> int:
        """Minutes since the session started at wall time ``t_us``."""
        return (t_us - self.session_start_us) // 60_000_000

    async def measure(self, mg_dl: float, t_us: int, trend: float | None = None) -> bool:
        """Notify one CGM record for wall time ``t_us``."""
        record = encode.CgmRecord(round(mg_dl), self.offset_min(t_us), trend)
        return await self.notify(self.measurement, encode.cgm_measurement([record]))


class BloodPressureMonitor(VirtualDevice):
    """Blood Pressure service: indicated measurements, intermediate cuff pressure."""

    SERVICE = 0x1810
    KIND = "blood_pressure_monitor"

    def services(self) -> list[gatt.Service]:
        self.measurement = self._char(0x2A35, Props.INDICATE)
        self.cuff = self._char(0x2A36, Props.NOTIFY)
        return [gatt.Service(UUID.from_16_bits(self.SERVICE), [
            self.measurement, self.cuff,
            self._char(0x2A49, Props.READ, value=(0x0001).to_bytes(2, "little")),
        ])]

    async def measure(self, systolic: float, diastolic: float, mean: float, pulse: float,
                      t_us: int | None = None) -> None:
        """Indicate one measurement stamped with the device clock (or ``t_us`` + offset)."""
        when = (t_us if t_us is not None else self.clock_us()) + self.clock_offset_s * 1_000_000
        await self.indicate(self.measurement, encode.blood_pressure(
            systolic, diastolic, mean, time_us=when, pulse=pulse, status=0))


class Thermometer(VirtualDevice):
    """Health Thermometer service: indicated temperature in °C with time stamp and type."""

    SERVICE = 0x1809
    KIND = "thermometer"

    def services(self) -> list[gatt.Service]:
        self.measurement = self._char(0x2A1C, Props.INDICATE)
        return [gatt.Service(UUID.from_16_bits(self.SERVICE), [
            self.measurement, self._char(0x2A1D, Props.READ, value=bytes([6])),
            self._char(0x2A1E, Props.NOTIFY),
        ])]

    async def measure(self, celsius: float | None, t_us: int | None = None) -> None:
        """Indicate one temperature."""
        when = (t_us if t_us is not None else self.clock_us()) + self.clock_offset_s * 1_000_000
        await self.indicate(self.measurement, encode.temperature(celsius, time_us=when, kind=6))


class PulseOximeter(VirtualDevice):
    """Pulse Oximeter service: continuous notifications and indicated spot checks."""

    SERVICE = 0x1822
    KIND = "pulse_oximeter"

    def services(self) -> list[gatt.Service]:
        self.spot = self._char(0x2A5E, Props.INDICATE)
        self.continuous = self._char(0x2A5F, Props.NOTIFY)
        return [gatt.Service(UUID.from_16_bits(self.SERVICE), [
            self.spot, self.continuous,
            self._char(0x2A60, Props.READ, value=bytes(2)),
        ])]

    async def measure(self, spo2: float, pulse: float) -> bool:
        """Notify one continuous SpO2/PR pair."""
        return await self.notify(self.continuous, encode.plx_continuous(spo2, pulse))

    async def spot_check(self, spo2: float, pulse: float, t_us: int | None = None) -> None:
        """Indicate one spot-check measurement."""
        when = (t_us if t_us is not None else self.clock_us()) + self.clock_offset_s * 1_000_000
        await self.indicate(self.spot, encode.plx_spot_check(spo2, pulse, time_us=when))


class WeightScale(VirtualDevice):
    """Weight Scale service: indicated weight in kg with time stamp."""

    SERVICE = 0x181D
    KIND = "scale"

    def services(self) -> list[gatt.Service]:
        self.measurement = self._char(0x2A9D, Props.INDICATE)
        return [gatt.Service(UUID.from_16_bits(self.SERVICE), [
            self.measurement, self._char(0x2A9E, Props.READ, value=bytes(4)),
        ])]

    async def measure(self, kg: float | None, t_us: int | None = None) -> None:
        """Indicate one weight."""
        when = (t_us if t_us is not None else self.clock_us()) + self.clock_offset_s * 1_000_000
        await self.indicate(self.measurement, encode.weight(kg, time_us=when))
