"""The sub-commands behind ``vitalwire.cli``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from gateway.config import MqttConfig
from gateway.errors import ConfigError
from pipeline.errors import PipelineError
from pipeline.normalize import Normalizer
from pipeline.store import DuckDbStore, StoreConfig
from pipeline.text_table import print_table
from vitalwire.config import ServiceConfig, load_config
from vitalwire.operations import OPERATIONS, DataContext
from vitalwire.service import Service, freeze_startup_objects

__all__ = [
    "cmd_ble",
    "cmd_careplan",
    "cmd_demo",
    "cmd_devices",
    "cmd_evaluate",
    "cmd_fhir",
    "cmd_news2",
    "cmd_quarantine",
    "cmd_readings",
    "cmd_run",
    "cmd_simulate",
    "cmd_users",
    "parse_broker_url",
]

log = logging.getLogger("vitalwire")


def parse_broker_url(url: str, base: MqttConfig) -> MqttConfig:
    """``mqtt://[user[:pass]@]host[:port]`` or ``mqtts://...`` over ``base``."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError(f"--broker: {url!r} is not mqtt://host:port or mqtts://host:port")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise ConfigError(f"--broker: bad port in {url!r}") from exc
    changes: dict[str, object] = {"host": parts.hostname, "port": port, "tls": tls or base.tls}
    if parts.username is not None:
        changes["username"] = unquote(parts.username)
        changes["password"] = unquote(parts.password) if parts.password is not None else None
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def service_config(args: argparse.Namespace) -> ServiceConfig:
    """The config file (or defaults) with ``--broker`` and ``--db`` applied."""
    config = load_config(getattr(args, "config", None))
    if getattr(args, "broker", None):
        config = config.with_overrides(mqtt=parse_broker_url(args.broker, config.mqtt))
    if getattr(args, "db", None):
        config = config.with_overrides(store=dataclasses.replace(config.store, path=args.db))
    if getattr(args, "fhir_url", None):
        config = config.with_overrides(fhir=config.fhir.with_url(args.fhir_url))
    return config


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


def progress_line(
    svc: Service, started: float, last: tuple[float, int], outbox: int | None = None
) -> tuple[str, tuple[float, int]]:
    """One status line: current and average rate, totals."""
    now = time.monotonic()
    s = svc.stats
    dt = max(now - last[0], 1e-9)
    current = (s.stored - last[1]) / dt
    line = (
        f"readings/s {current:8.0f} | stored {s.stored:9d} | quarantined {s.quarantined:6d}"
        f" | duplicates {s.duplicates:5d} | messages {s.messages:8d}"
    )
    if outbox is not None:
        line += f" | fhir outbox {outbox}" + ("" if svc.config.fhir.url else " (no EHR)")
    line += f" | up {now - started:6.0f}s"
    return line, (now, s.stored)


async def _run_until_stopped(
    svc: Service, stop: asyncio.Event, progress_s: float, live: bool
) -> None:
    started = time.monotonic()
    last = (started, 0)
    freeze_startup_objects()
    waiter = asyncio.create_task(svc.wait())
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), progress_s if progress_s > 0 else None)
            if waiter.done():
                waiter.result()  # re-raise a failure of the service
                return
            if progress_s > 0 and not stop.is_set():
                outbox = await svc.fhir.outbox_size() if svc.fhir is not None else None
                line, last = progress_line(svc, started, last, outbox)
                if live:
                    print("\r" + line, end="", file=sys.stderr, flush=True)
                else:
                    log.info(line)
    finally:
        if live:
            print(file=sys.stderr)
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter


async def cmd_run(args: argparse.Namespace) -> int:
    """The service: runs until SIGTERM/SIGINT, then drains, commits and exits 0."""
    config = service_config(args)
    stop = asyncio.Event()
    _stop_on_signals(stop)
    from vitalwire.control import ControlServer
    from vitalwire.live import alerts_and_dashboard

    async with (
        Service(config) as svc,
        ControlServer(svc),
        alerts_and_dashboard(svc, args.http) as server,
    ):
        log.info(
            "vitalwire running: broker %s:%d, database %s, dashboard %s",
            config.mqtt.host,
            config.mqtt.port,
            config.store.path,
            server.url,
        )
        await _run_until_stopped(svc, stop, config.progress_s, live=False)
        log.info("stopping: draining and committing")
    s = svc.stats
    log.info(
        "stopped: %d stored, %d quarantined, %d duplicates", s.stored, s.quarantined, s.duplicates
    )
    return 0


# -- data commands --------------------------------------------------------------------------


def _db_path(args: argparse.Namespace) -> Path:
    if getattr(args, "db", None):
        return Path(args.db)
    return Path(load_config(None).store.path)


def run_data_op(db: Path, op: str, *, must_exist: bool = True, **kwargs: Any) -> Any:
    """Run ``op`` in the service holding ``db`` (control socket) or on the file directly."""
    from vitalwire import control

    sock = control.socket_path(db)
    if sock.exists():
        with contextlib.suppress(control.ControlError):
            return control.call(sock, op, kwargs)
    if must_exist and not db.exists():
        raise ConfigError(f"--db: no database at {db}")

    async def local() -> Any:
        store = DuckDbStore(StoreConfig(path=db, idle_checkpoint_s=0))
        async with store:

            async def unchanged() -> None:
                return None

            ctx = DataContext(store, Normalizer.from_catalogue(), unchanged)
            return await OPERATIONS[op](ctx, **kwargs)

    return asyncio.run(local())


def cmd_devices(args: argparse.Namespace) -> int:
    """``devices assign|unassign|list``."""
    db = _db_path(args)
    if args.action == "assign":
        out = run_data_op(
            db,
            "devices.assign",
            must_exist=False,
            device=args.device,
            patient=args.patient,
            valid_from=args.valid_from,
            valid_to=args.valid_to,
        )
        print(f"assigned {out['device']} to {out['patient']} (assignment {out['assignment_id']})")
    elif args.action == "unassign":
        run_data_op(db, "devices.unassign", device=args.device, at=args.at)
        print(f"unassigned {args.device}")
    else:
        print_table(run_data_op(db, "devices.list", device=args.device))
    return 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    """``quarantine list|summary|replay``."""
    db = _db_path(args)
    if args.action == "list":
        print_table(
            run_data_op(db, "quarantine.list", reason=args.reason, limit=args.limit),
            ["id", "received_at", "topic", "device_id", "reason_code", "reason", "payload"],
        )
    elif args.action == "summary":
        print_table(run_data_op(db, "quarantine.summary"))
    else:
        out = run_data_op(db, "quarantine.replay")
        print(
            f"replayed {out['replayed']} quarantined readings: {out['stored']} stored, "
            f"{out['duplicates']} already stored, {out['quarantined_again']} quarantined again"
        )
    return 0


def _alerts_command(args: argparse.Namespace) -> int:
    from alerts import cli as alerts_cli

    return alerts_cli.run(args, data_op=run_data_op)


cmd_news2 = cmd_careplan = cmd_evaluate = _alerts_command
"""``news2`` (stdin JSON -> NEWS2), ``careplan show|set|apply-template|history``, ``evaluate``."""


def cmd_users(args: argparse.Namespace) -> int:
    """``users add|list|passwd``: dashboard accounts."""
    from dashboard import cli as users_cli

    return users_cli.run(args, run_data_op=run_data_op)


def cmd_fhir(args: argparse.Namespace) -> int:
    """``fhir status|retry|dead-letter``."""
    from pipeline.fhir import cli as fhir_cli

    return fhir_cli.run(args, run_data_op=run_data_op)


def cmd_readings(args: argparse.Namespace) -> int:
    """``readings``: the newest stored readings."""
    print_table(
        run_data_op(
            _db_path(args), "readings", patient=args.patient, metric=args.metric, limit=args.limit
        )
    )
    return 0


# -- simulators and the demo ----------------------------------------------------------------

SHIPPED_SCENARIOS = Path(__file__).resolve().parent.parent / "simulators" / "scenarios"
DEMO_DB = Path("demo.duckdb")
ASSIGNED_SINCE = "2000-01-01T00:00:00Z"


def fleet_config(
    args: argparse.Namespace,
    host: str,
    port: int,
    *,
    user: str | None = None,
    password: str | None = None,
    **extra: Any,
) -> Any:
    """A FleetConfig from the simulate/demo options."""
    from simulators import FleetConfig

    options: dict[str, Any] = {
        "patients": args.patients,
        "seed": args.seed,
        "scenario": args.scenario,
        "rate": args.rate,
    }
    options.update(extra)
    return FleetConfig(host=host, port=port, username=user, password=password, **options)


async def assign_fleet(store: DuckDbStore, plan: Any) -> int:
    """Register and assign every simulated device to its patient (idempotent)."""
    from pipeline import registry

    current = await asyncio.to_thread(registry.assignments_frame, store)
    have = set(zip(current["device_id"].to_list(), current["patient_id"].to_list(), strict=True))
    since = datetime.fromisoformat(ASSIGNED_SINCE)
    made = 0
    for device in plan.devices:
        if (device.device_id, device.patient_id) in have:
            continue
        await asyncio.to_thread(registry.register_device, store, device.device_id, device.kind)
        await asyncio.to_thread(registry.assign, store, device.device_id, device.patient_id, since)
        made += 1
    return made


def cmd_ble(args: argparse.Namespace) -> int:
    """``ble decode UUID HEX``."""
    from gateway.ble import cli as ble_cli

    return ble_cli.run(args)


def cmd_simulate(args: argparse.Namespace) -> Any:
    """Virtual devices: MQTT publishers, or BLE peripherals with ``--ble``."""
    if args.ble:
        from simulators.ble.cli import run_ble

        return run_ble(args)
    return _simulate_mqtt(args)


async def _simulate_mqtt(args: argparse.Namespace) -> int:
    """Publish a simulated fleet until its duration ends or Ctrl-C."""
    from simulators import Fleet, plan_fleet

    mqtt = parse_broker_url(args.broker, MqttConfig())
    config = fleet_config(
        args,
        mqtt.host,
        mqtt.port,
        user=mqtt.username,
        password=mqtt.password,
        acceleration=args.acceleration,
        duration_s=args.duration,
        event_log=args.event_log,
        client_id="vitalwire-simulator",
    )
    plan = plan_fleet(config)
    if args.assign:
        db = _db_path(args)
        for device in plan.devices:
            try:
                run_data_op(
                    db,
                    "devices.assign",
                    must_exist=False,
                    device=device.device_id,
                    patient=device.patient_id,
                    valid_from=ASSIGNED_SINCE,
                )
            except PipelineError as exc:
                if "overlap" not in str(exc):
                    raise
        print(f"assigned {len(plan.devices)} devices in {db}", file=sys.stderr)
    stop = asyncio.Event()
    _stop_on_signals(stop)
    async with Fleet(config) as fleet:
        print(
            f"simulating {len(plan.patients)} patients, {len(plan.devices)} devices -> "
            f"{mqtt.host}:{mqtt.port}",
            file=sys.stderr,
        )
        await fleet.run_until(stop)
    print(f"published {fleet.published} messages ({fleet.errors} failed)", file=sys.stderr)
    return 0 if fleet.errors == 0 else 1


async def cmd_demo(args: argparse.Namespace) -> int:
    """Embedded broker + simulated fleet + service, with a live progress line."""
    from simulators import Fleet
    from vitalwire.broker import start_embedded_broker
    from vitalwire.control import ControlServer
    from vitalwire.live import alerts_and_dashboard, apply_demo_plans

    broker = None
    if args.broker:
        mqtt = parse_broker_url(args.broker, MqttConfig(client_id="vitalwire-demo"))
    else:
        broker = await asyncio.to_thread(start_embedded_broker, 1883, None, args.embedded_broker)
        mqtt = MqttConfig(
            host=broker.host,
            port=broker.port,
            client_id="vitalwire-demo",
            protocol=broker.mqtt_version,
        )
        print(
            f"embedded MQTT broker ({type(broker).__name__}, MQTT {broker.mqtt_version}) on "
            f"{broker.host}:{broker.port}",
            file=sys.stderr,
        )
    db = Path(args.db) if args.db else DEMO_DB
    config = load_config(args.config).with_overrides(
        mqtt=mqtt, store=StoreConfig(path=db), progress_s=1.0
    )
    if args.fhir_url:
        config = config.with_overrides(fhir=config.fhir.with_url(args.fhir_url))
    scenario = args.scenario or SHIPPED_SCENARIOS / "demo.toml"
    fleet_cfg = fleet_config(
        args,
        mqtt.host,
        mqtt.port,
        scenario=scenario,
        event_log=db.with_suffix(".events.jsonl"),
        client_id="vitalwire-demo-devices",
        mqtt_version=mqtt.protocol,
    )
    stop = asyncio.Event()
    _stop_on_signals(stop)
    try:
        async with (
            Service(config) as svc,
            ControlServer(svc),
            alerts_and_dashboard(svc, args.http, demo_users=True) as server,
        ):
            fleet = Fleet(fleet_cfg)
            await assign_fleet(svc.store, fleet.plan)
            await svc.refresh_assignments()
            await apply_demo_plans(svc, server, fleet.plan)
            if svc.receiver is not None and not await svc.receiver.wait_connected(15):
                raise ConfigError(f"demo: cannot reach the broker at {mqtt.host}:{mqtt.port}")
            async with fleet:
                print(
                    f"demo: {len(fleet.plan.patients)} patients, {len(fleet.plan.devices)} devices,"
                    f" scenario {scenario.name}; data in {db} (Ctrl-C to stop)\n"
                    f"  dashboard: {server.url}  (clinician / clinician-demo,"
                    f" coordinator / coordinator-demo, admin / admin-demo)\n"
                    f"  in another terminal: vitalwire readings --db {db}\n"
                    f"                       vitalwire quarantine summary --db {db}",
                    file=sys.stderr,
                )
                runner = asyncio.create_task(fleet.run_until(stop))
                if args.duration:
                    asyncio.get_running_loop().call_later(args.duration, stop.set)
                await _run_until_stopped(svc, stop, 1.0, live=sys.stderr.isatty())
                stop.set()
                await runner
            print(f"demo: published {fleet.published} messages; draining", file=sys.stderr)
        s = svc.stats
        print(
            f"demo: stored {s.stored} readings, quarantined {s.quarantined} "
            f"({', '.join(f'{k} {v}' for k, v in sorted(s.by_reason.items())) or 'none'})",
            file=sys.stderr,
        )
    finally:
        if broker is not None:
            broker.stop()
    return 0
