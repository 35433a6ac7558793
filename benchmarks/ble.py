"""BLE gateway benchmark: decoded notifications/s per characteristic, and readings/s from 50
virtual devices (Bumble, in-process link) through bleak, the receiver, the batcher,
normalization and DuckDB.

Run from the repository root: ``.venv/bin/python benchmarks/ble.py [--quick]``. Prints one line
per measurement; nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.ble.config import AllowedDevice, BleConfig
from gateway.ble.receiver import BleReceiver
from gateway.formats import router as router_module
from gateway.formats.base import DecodeContext
from gateway.formats.ble import DEFAULT_TOPIC, FORMAT, decode_ble
from gateway.formats.router import DEFAULT_ROUTES, Route
from pipeline import registry
from pipeline.store import StoreConfig
from simulators.ble import encode
from simulators.ble.backend import BumbleCentral
from simulators.ble.link import VirtualLink
from simulators.ble.meter import GlucoseMeter
from simulators.ble.peripherals import HeartRateSensor, PulseOximeter
from vitalwire.config import ServiceConfig
from vitalwire.service import Service

NOW = 1_767_225_600_000_000
SAMPLES = {
    0x2A37: encode.heart_rate(72, energy_kj=120, rr_1024=(830, 845, 851)),
    0x2A18: encode.glucose_measurement(12, NOW, 0.00101, offset_min=-5, status=0),
    0x2A34: encode.glucose_context(12, meal=1, carbs_kg=0.05, hba1c_pct=6.5),
    0x2AA7: encode.cgm_measurement([encode.CgmRecord(120, 55, -1.5, 95),
                                    encode.CgmRecord(122, 60, -1.0, 96)]),
    0x2A35: encode.blood_pressure(121, 79, 93, time_us=NOW, pulse=70, user=1, status=0),
    0x2A1C: encode.temperature(36.8, time_us=NOW, kind=6),
    0x2A5E: encode.plx_spot_check(97, 71, time_us=NOW),
    0x2A5F: encode.plx_continuous(97, 71),
    0x2A9D: encode.weight(74.8, time_us=NOW),
}


def bench_decoders(n: int) -> None:
    for uuid16, payload in SAMPLES.items():
        ctx = DecodeContext(f"ble/D-1/{uuid16:04x};sst={NOW}", "D-1", NOW)
        readings = 0
        t0 = time.perf_counter()
        for _ in range(n):
            readings += len(decode_ble(payload, ctx).readings)
        dt = time.perf_counter() - t0
        print(f"decode 0x{uuid16:04X} ({len(payload):2d} B): {n / dt:12,.0f} notifications/s "
              f"({readings / dt:12,.0f} readings/s)")


async def bench_ward(per_device: int, records: int) -> None:
    router_module.BUILTIN_FORMATS.setdefault(FORMAT, decode_ble)
    tmp = Path(tempfile.mkdtemp(prefix="vw-ble-bench-"))
    async with VirtualLink() as link:
        hrs = [HeartRateSensor(link.device(f"HR-{i}", f"F1:01:00:00:00:{i:02X}"))
               for i in range(30)]
        oxs = [PulseOximeter(link.device(f"OX-{i}", f"F1:02:00:00:00:{i:02X}"))
               for i in range(10)]
        gms = [GlucoseMeter(link.device(f"GM-{i}", f"F1:03:00:00:00:{i:02X}"))
               for i in range(10)]
        now = time.time_ns() // 1000
        for gm in gms:
            for k in range(records):
                gm.add_record(now - (records - k) * 60_000_000, 90 + k % 50)
        devices = [*hrs, *oxs, *gms]
        for d in devices:
            await d.start()
        config = ServiceConfig(store=StoreConfig(path=tmp / "bench.duckdb"),
                               routes=(*DEFAULT_ROUTES, Route(DEFAULT_TOPIC, FORMAT)))
        ble = BleConfig(devices=tuple(AllowedDevice(d.address, d.name) for d in devices),
                        state_path=tmp / "sync.json", reconnect_min_s=0.05)
        async with BumbleCentral.on_link(link) as central:
            scanner, client = central.backends()
            rx = BleReceiver(ble, scanner_backend=scanner, client_backend=client)
            async with Service(config, source=rx) as svc:
                for d in devices:
                    await asyncio.to_thread(registry.assign, svc.store, d.name, f"P-{d.name}",
                                            datetime.fromtimestamp(0, UTC))
                await svc.refresh_assignments()
                t0 = time.perf_counter()
                async with rx:
                    while not all(s.racp_syncs for s in rx.stats.devices.values()
                                  if s.device_id.startswith("GM")):
                        await asyncio.sleep(0.01)
                    while svc.stats.stored < 10 * records:
                        await asyncio.sleep(0.01)
                    dt = time.perf_counter() - t0
                    print(f"ward: 50 devices connected and {10 * records} glucose records "
                          f"synced through RACP into DuckDB in {dt:.2f} s "
                          f"({10 * records / dt:,.0f} readings/s including connection set-up)")
                    while not all(d.subscribed(0x2A37).is_set() for d in hrs) or not all(
                            d.subscribed(0x2A5F).is_set() for d in oxs):
                        await asyncio.sleep(0.01)
                    base = svc.stats.stored + svc.stats.duplicates
                    expected = per_device * (len(hrs) + 2 * len(oxs))
                    t0 = time.perf_counter()

                    async def drive(d: HeartRateSensor | PulseOximeter) -> None:
                        for k in range(per_device):
                            if isinstance(d, HeartRateSensor):
                                await d.measure(60 + k % 40, (900,))
                            else:
                                await d.measure(95 + k % 4, 60 + k % 40)

                    live: list[HeartRateSensor | PulseOximeter] = [*hrs, *oxs]
                    await asyncio.gather(*(drive(d) for d in live))
                    while svc.stats.stored + svc.stats.duplicates - base < expected:
                        await asyncio.sleep(0.005)
                    dt = time.perf_counter() - t0
                    print(f"ward: 40 live devices, {expected} readings (notifications -> "
                          f"DuckDB) in {dt:.2f} s: {expected / dt:,.0f} readings/s "
                          f"(duplicates {svc.stats.duplicates}, quarantined "
                          f"{svc.stats.quarantined}, dropped {rx.stats.dropped})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args()
    bench_decoders(5_000 if args.quick else 50_000)
    asyncio.run(bench_ward(50 if args.quick else 500, 50 if args.quick else 500))


if __name__ == "__main__":
    main()
