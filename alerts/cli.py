"""The ``vitalwire news2``, ``vitalwire careplan`` and ``vitalwire evaluate`` commands.

Each command has ``add_<name>_arguments(subparsers)`` and ``run_<name>(args) -> int``;
:func:`add_arguments` adds all three and :func:`run` dispatches on ``args.command``. Errors are
printed as ``vitalwire <command>: error: ...`` on stderr with exit status 2.

``careplan`` runs its operation (:data:`alerts.operations.OPERATIONS`) through ``data_op`` when
given, the service's ``run_data_op(db, op, **kwargs)``, which uses the control socket while a
service holds the database; without it, on the database file directly.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from alerts.errors import AlertError
from alerts.news2 import score_observation
from alerts.operations import OPERATIONS
from alerts.replay import DEFAULT_BATCH_S, ReplayConfig, replay
from alerts.scoring import render, score
from gateway.errors import GatewayError
from pipeline.errors import PipelineError
from pipeline.store import DEFAULT_DB_PATH, DuckDbStore, StoreConfig

__all__ = [
    "DEFAULT_DB",
    "DataOp",
    "add_arguments",
    "add_careplan_arguments",
    "add_evaluate_arguments",
    "add_news2_arguments",
    "run",
    "run_careplan",
    "run_evaluate",
    "run_news2",
]

DEFAULT_DB = DEFAULT_DB_PATH
"""The service's default database file (``vitalwire.config.DEFAULT_DB``)."""

DataOp = Callable[..., Any]
"""``data_op(db, op, *, must_exist=True, **kwargs)``: run one operation against ``db``."""

COMMANDS = ("news2", "careplan", "evaluate")


def add_news2_arguments(sub: Any) -> argparse.ArgumentParser:
    """``vitalwire news2``: one observation as JSON on stdin, the score as JSON on stdout."""
    p: argparse.ArgumentParser = sub.add_parser(
        "news2", help="NEWS2 of one observation (JSON on stdin -> JSON on stdout)",
        description="Reads one JSON object with respiration_rate, spo2, spo2_scale (1 or 2), "
        "supplemental_oxygen, systolic_bp, pulse, consciousness (A, C, V, P, U) and "
        "temperature_c; prints subscores, aggregate, any_parameter_3 and risk_band.",
    )
    p.add_argument("--indent", type=int, default=None, help="pretty-print with this indent")
    return p


def add_careplan_arguments(sub: Any) -> argparse.ArgumentParser:
    """``vitalwire careplan show|set|apply-template|history|templates``."""
    p: argparse.ArgumentParser = sub.add_parser(
        "careplan", help="show, set and version per-patient care plans")
    actions = p.add_subparsers(dest="action", required=True)

    def db(q: argparse.ArgumentParser) -> None:
        q.add_argument("--db", type=Path, default=None,
                       help=f"DuckDB file (default: the service's, {DEFAULT_DB})")

    show = actions.add_parser("show", help="the patient's current plan (TOML, or --json)")
    show.add_argument("patient")
    show.add_argument("--version", type=int, help="an older version")
    show.add_argument("--json", action="store_true", help="print JSON")
    db(show)
    put = actions.add_parser("set", help="store a new version from a TOML plan file")
    put.add_argument("patient")
    put.add_argument("--file", required=True, help="TOML plan file, or - for stdin")
    put.add_argument("--reason", required=True, help="why this version")
    put.add_argument("--author", default=None, help="who makes it (default: login name)")
    db(put)
    apply = actions.add_parser("apply-template",
                               help="store a new version made from one or more templates")
    apply.add_argument("patient")
    apply.add_argument("template", nargs="+", help="template name(s), e.g. adult-ward t1d-cgm")
    apply.add_argument("--reason", required=True, help="why this version")
    apply.add_argument("--author", default=None, help="who makes it (default: login name)")
    db(apply)
    hist = actions.add_parser("history", help="every version of the patient's plan")
    hist.add_argument("patient")
    hist.add_argument("--json", action="store_true", help="print JSON")
    db(hist)
    actions.add_parser("templates", help="list the shipped templates")
    return p


def add_evaluate_arguments(sub: Any) -> argparse.ArgumentParser:
    """``vitalwire evaluate --scenario FILE``."""
    p: argparse.ArgumentParser = sub.add_parser(
        "evaluate", help="replay a scenario through the pipeline and score the alerts",
        description="Replays a simulator scenario faster than real time through decoding, "
        "batching, normalization and the alert engine, and compares the alerts (and a naive "
        "policy's) with the scenario's ground truth.",
    )
    p.add_argument("--scenario", type=Path, required=True, help="simulator scenario TOML file")
    p.add_argument("--seed", type=int, default=1, help="simulation seed (default 1)")
    p.add_argument("--patients", type=int, default=None,
                   help="fleet size (default: at least 8 and every patient named)")
    p.add_argument("--duration", type=float, default=None,
                   help="simulated seconds (default: the scenario's duration)")
    p.add_argument("--batch-s", type=float, default=DEFAULT_BATCH_S,
                   help=f"simulated seconds per batch (default {DEFAULT_BATCH_S:g})")
    p.add_argument("--plan", action="append", default=[], metavar="PATIENT=TEMPLATE[+TEMPLATE]",
                   help="care-plan template(s) of one patient (repeatable)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--check", action="store_true",
                   help="exit 1 when an event was missed or alerts were not halved")
    return p


def add_arguments(sub: Any) -> None:
    """Add ``news2``, ``careplan`` and ``evaluate`` to the ``vitalwire`` sub-commands."""
    add_news2_arguments(sub)
    add_careplan_arguments(sub)
    add_evaluate_arguments(sub)


def _fail(command: str, message: object) -> int:
    print(f"vitalwire {command}: error: {message}", file=sys.stderr)
    return 2


def run_news2(args: argparse.Namespace, stdin: TextIO | None = None,
              stdout: TextIO | None = None) -> int:
    """Score the observation on stdin."""
    text = (stdin or sys.stdin).read()
    try:
        obj = json.loads(text)
    except ValueError as exc:
        return _fail("news2", f"input: not valid JSON: {exc}")
    try:
        result = score_observation(obj)
    except AlertError as exc:
        return _fail("news2", exc)
    print(json.dumps(result, indent=getattr(args, "indent", None)), file=stdout or sys.stdout)
    return 0


@dataclass(frozen=True, slots=True)
class _LocalContext:
    store: DuckDbStore
    clock_us: Callable[[], int]


def _local_op(db: Path, op: str, *, must_exist: bool = True, **kwargs: Any) -> Any:
    if must_exist and not db.exists():
        raise AlertError(f"--db: no database at {db}")

    async def go() -> Any:
        async with DuckDbStore(StoreConfig(path=db, idle_checkpoint_s=0)) as store:
            ctx = _LocalContext(store, lambda: time.time_ns() // 1000)
            return await OPERATIONS[op](ctx, **kwargs)

    return asyncio.run(go())


def _print_history(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("(no versions)")
        return
    print(f"{'version':>7}  {'created_at':<27} {'author':<12} {'template':<20} reason")
    for r in rows:
        print(f"{r['version']:>7}  {r['created_at']:<27} {r['author']:<12} "
              f"{r['template'] or '-':<20} {r['reason']}")


def run_careplan(args: argparse.Namespace, data_op: DataOp | None = None) -> int:
    """``careplan`` actions; ``data_op`` is the service's ``run_data_op`` (control socket)."""
    op = data_op or _local_op
    db = getattr(args, "db", None) or DEFAULT_DB
    author = getattr(args, "author", None) or getpass.getuser()
    try:
        if args.action == "templates":
            for t in asyncio.run(_templates()):
                print(f"{t['template']:<16} {t['rules']:>2} rules  {t['description']}")
        elif args.action == "show":
            out = op(db, "careplan.show", patient=args.patient, version=args.version)
            print(json.dumps(_without(out, "toml"), indent=2) if args.json else out["toml"],
                  end="\n" if args.json else "")
        elif args.action == "history":
            rows = op(db, "careplan.history", patient=args.patient)
            if args.json:
                print(json.dumps(rows, indent=2))
            else:
                _print_history(rows)
        elif args.action == "set":
            text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text("utf-8")
            out = op(db, "careplan.set", must_exist=False, patient=args.patient, text=text,
                     author=author, reason=args.reason)
            print(f"care plan of {out['patient_id']}: version {out['version']} stored")
        else:
            out = op(db, "careplan.apply_template", must_exist=False, patient=args.patient,
                     templates=list(args.template), author=author, reason=args.reason)
            print(f"care plan of {out['patient_id']}: version {out['version']} stored "
                  f"from {out['template']}")
    except OSError as exc:
        return _fail("careplan", f"--file: cannot read {args.file}: {exc.strerror or exc}")
    except (GatewayError, PipelineError) as exc:
        return _fail("careplan", exc)
    return 0


async def _templates() -> list[dict[str, Any]]:
    return list(await OPERATIONS["careplan.templates"](None))


def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


def _plan_overrides(items: list[str]) -> dict[str, tuple[str, ...]]:
    out = {}
    for item in items:
        patient, sep, names = item.partition("=")
        if not sep or not patient or not names:
            raise AlertError(f"--plan: expected PATIENT=TEMPLATE[+TEMPLATE], got {item!r}")
        out[patient] = tuple(names.split("+"))
    return out


def run_evaluate(args: argparse.Namespace, stdout: TextIO | None = None) -> int:
    """Replay the scenario and print the figures."""
    try:
        cfg = ReplayConfig(args.scenario, seed=args.seed, patients=args.patients,
                           duration_s=args.duration, batch_s=args.batch_s,
                           plans=_plan_overrides(args.plan))
        figures = score(replay(cfg))
    except (GatewayError, PipelineError) as exc:
        return _fail("evaluate", exc)
    out = stdout or sys.stdout
    print(json.dumps(figures.to_json(), indent=2) if args.json else render(figures), file=out)
    return 1 if args.check and not figures.goal_met else 0


def run(args: argparse.Namespace, *, data_op: DataOp | None = None) -> int:
    """Run ``args.command`` (one of ``news2``, ``careplan``, ``evaluate``)."""
    if args.command == "news2":
        return run_news2(args)
    if args.command == "careplan":
        return run_careplan(args, data_op)
    if args.command == "evaluate":
        return run_evaluate(args)
    raise ValueError(f"not an alerts command: {args.command!r}")
