"""``vitalwire``: the one command line for every entry point.

Sub-commands: ``run`` (the service), ``demo`` (the live demo), ``simulate`` (virtual devices),
``devices`` (registry and assignments), ``quarantine`` (inspect and replay), ``readings`` (query).
Every command that touches data takes ``--db PATH``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from alerts import cli as alerts_cli
from dashboard import cli as users_cli
from gateway.ble import cli as ble_cli
from gateway.errors import GatewayError
from pipeline.errors import PipelineError
from pipeline.fhir import cli as fhir_cli
from simulators.ble.cli import add_ble_arguments

__all__ = ["main"]


def _add_db(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "--db",
        type=Path,
        required=required,
        default=None,
        help="DuckDB file (default: the config's, else ./vitalwire.duckdb)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(prog="vitalwire", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the service (gateway, pipeline, store)")
    run.add_argument("--config", type=Path, help="TOML config file (embedded defaults without)")
    run.add_argument(
        "--broker", help="override the broker: mqtt://[user:pass@]host:port or mqtts://"
    )
    run.add_argument("--fhir-url", help="override the FHIR endpoint of the EHR")
    run.add_argument("--http", metavar="HOST:PORT", help="dashboard address (127.0.0.1:8000)")
    _add_db(run)

    demo = sub.add_parser("demo", help="live demo: embedded broker, simulated devices, service")
    demo.add_argument("--config", type=Path, help="TOML config file for the service part")
    demo.add_argument("--broker", help="use this broker instead of starting one")
    demo.add_argument("--fhir-url", help="export Observations to this FHIR endpoint")
    demo.add_argument("--http", metavar="HOST:PORT", help="dashboard address (127.0.0.1:8000)")
    demo.add_argument(
        "--embedded-broker",
        choices=("mosquitto", "amqtt"),
        default="mosquitto",
        help="broker to start when --broker is not given (amqtt: pure Python,"
        " MQTT 3.1.1; used anyway when mosquitto is not installed)",
    )
    demo.add_argument("--patients", type=int, default=16, help="simulated patients (default 16)")
    demo.add_argument("--seed", type=int, default=1, help="simulation seed")
    demo.add_argument("--scenario", type=Path, help="scenario file (default: the shipped demo)")
    demo.add_argument("--rate", type=float, help="total messages/s (load generator mode)")
    demo.add_argument("--duration", type=float, help="stop after this many seconds")
    _add_db(demo)

    sim = sub.add_parser("simulate", help="publish simulated devices to a broker")
    sim.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="mqtt://host:port")
    sim.add_argument("--patients", type=int, default=8)
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--scenario", type=Path, help="scenario file with scripted clinical events")
    sim.add_argument(
        "--acceleration",
        type=float,
        default=1.0,
        help="simulated seconds per wall second (needs --duration when > 1)",
    )
    sim.add_argument("--duration", type=float, help="simulated seconds to run")
    sim.add_argument("--rate", type=float, help="total messages/s regardless of device cadence")
    sim.add_argument("--event-log", type=Path, help="write the ground-truth event log (JSON lines)")
    sim.add_argument(
        "--assign", action="store_true", help="also register and assign the fleet's devices in --db"
    )
    _add_db(sim)

    dev = sub.add_parser("devices", help="device registry and time-bounded assignments")
    dsub = dev.add_subparsers(dest="action", required=True)
    a = dsub.add_parser("assign", help="assign DEVICE to PATIENT from --from (now) to --to (open)")
    a.add_argument("device")
    a.add_argument("patient")
    a.add_argument("--from", dest="valid_from", help="RFC 3339 start (default now)")
    a.add_argument("--to", dest="valid_to", help="RFC 3339 end (default open-ended)")
    _add_db(a)
    u = dsub.add_parser("unassign", help="end DEVICE's open assignment at --at (now)")
    u.add_argument("device")
    u.add_argument("--at", help="RFC 3339 end time (default now)")
    _add_db(u)
    ls = dsub.add_parser("list", help="list devices and their assignments")
    ls.add_argument("--device", help="only this device")
    _add_db(ls)

    q = sub.add_parser("quarantine", help="inspect and replay quarantined readings")
    qsub = q.add_subparsers(dest="action", required=True)
    ql = qsub.add_parser("list", help="show quarantined rows with their reasons")
    ql.add_argument("--reason", help="only this reason_code")
    ql.add_argument("--limit", type=int, default=50)
    _add_db(ql)
    qs = qsub.add_parser("summary", help="counts per reason")
    _add_db(qs)
    qr = qsub.add_parser("replay", help="store readings of devices assigned since they arrived")
    _add_db(qr)

    fhir_cli.add_arguments(sub)
    ble_cli.add_arguments(sub)
    users_cli.add_arguments(sub)
    alerts_cli.add_arguments(sub)
    add_ble_arguments(sim)

    r = sub.add_parser("readings", help="query stored readings")
    r.add_argument("--patient")
    r.add_argument("--metric")
    r.add_argument("--limit", type=int, default=20)
    _add_db(r)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vitalwire`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG
        if args.verbose
        else logging.INFO
        if args.command in ("run", "demo", "simulate")
        else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from vitalwire import commands

    try:
        handler = getattr(commands, f"cmd_{args.command}")
        result = handler(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except (GatewayError, PipelineError) as exc:
        print(f"vitalwire: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
