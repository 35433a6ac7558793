"""``vitalwire simulate --ble``: a ward of virtual BLE devices on a TCP virtual link.

The devices run in this process on a Bumble virtual link; one more virtual controller is served
as HCI over TCP (``--hci-port``), which the gateway attaches to with the backend spec
``bumble:tcp-client:HOST:PORT``. The allowed-devices table for the gateway's ``[ble]`` config
is printed at start (or written with ``--ble-devices FILE``).

The lead wires it in: ``add_ble_arguments(simulate_parser)``, and in ``cmd_simulate``
``if args.ble: return run_ble(args)``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import TextIO

from simulators.ble.fleet import BleFleet
from simulators.ble.link import VirtualLink
from simulators.config import FleetConfig

__all__ = ["add_ble_arguments", "devices_toml", "run_ble", "serve_ward"]

log = logging.getLogger(__name__)

DEFAULT_HCI_PORT = 9100


def add_ble_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--ble``, ``--hci-host``, ``--hci-port``, ``--ble-devices`` to ``simulate``."""
    parser.add_argument("--ble", action="store_true",
                        help="run virtual BLE devices on a TCP virtual link instead of MQTT")
    parser.add_argument("--hci-host", default="127.0.0.1",
                        help="address the gateway's virtual controller listens on")
    parser.add_argument("--hci-port", type=int, default=DEFAULT_HCI_PORT,
                        help=f"TCP port of the gateway's virtual controller ({DEFAULT_HCI_PORT})")
    parser.add_argument("--ble-devices", type=Path,
                        help="write the gateway's [[ble.devices]] table to this file")


def devices_toml(fleet: BleFleet, host: str, port: int) -> str:
    """The ``[ble]`` section a gateway needs for this ward."""
    lines = ["[ble]", f'backend = "bumble:tcp-client:{host}:{port}"', ""]
    for address, device_id, bond in fleet.allowed_devices():
        lines += ["[[ble.devices]]", f'address = "{address}"', f'device_id = "{device_id}"',
                  f"require_bond = {'true' if bond else 'false'}", ""]
    return "\n".join(lines)


async def serve_ward(config: FleetConfig, host: str, port: int, duration_s: float | None,
                     devices_file: Path | None, out: TextIO) -> int:
    """Run the ward until ``duration_s`` elapses or the process is interrupted."""
    async with VirtualLink() as link:
        fleet = BleFleet(config, link)
        bound = await link.serve_tcp(host, port)
        text = devices_toml(fleet, host, bound)
        if devices_file is not None:
            devices_file.write_text(text, encoding="utf-8")
        print(text, file=out, flush=True)
        await fleet.start()
        log.info("%d virtual BLE devices; gateway controller on tcp %s:%d",
                 len(fleet.devices), host, bound)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), duration_s)
        await fleet.stop()
    return 0


def run_ble(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Entry of ``vitalwire simulate --ble``."""
    config = FleetConfig(patients=args.patients, seed=args.seed, scenario=args.scenario)
    return asyncio.run(serve_ward(config, args.hci_host, args.hci_port, args.duration,
                                  args.ble_devices, out or sys.stdout))
