"""``vitalwire ble decode UUID HEX``: print a characteristic value's decoded fields as JSON.

A tool for labs and support. The lead wires it into the ``vitalwire`` parser with
``add_arguments(subparsers)`` and dispatches ``args.command == "ble"`` to :func:`run`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any, TextIO

from gateway.ble.registry import decode
from gateway.ble.uuids import CHARACTERISTIC_NAMES, parse_uuid16
from gateway.errors import DecodeError

__all__ = ["add_arguments", "ble_decode_command", "parse_hex", "run"]

_SEPARATORS = re.compile(r"[\s:_-]+")


def parse_hex(text: str) -> bytes:
    """``"16 48 00:03"``, ``"0x164800"`` or ``"164800"`` -> bytes.

    Raises:
        ValueError: Not an even number of hex digits.
    """
    t = _SEPARATORS.sub("", text.strip())
    if t[:2].lower() == "0x":
        t = t[2:]
    try:
        if len(t) % 2:
            raise ValueError
        return bytes.fromhex(t)
    except ValueError:
        raise ValueError(
            f"HEX {text!r}: expected pairs of hex digits (spaces and colons allowed)"
        ) from None


def ble_decode_command(uuid: str, hex: str) -> dict[str, Any]:
    """Decode ``hex`` as a value of characteristic ``uuid``.

    Returns:
        The decoded value (``uuid``, ``characteristic``, ``fields``, ``readings``,
        ``rejected``), or ``{"uuid", "characteristic", "error": {...}}`` when the bytes do not
        decode; both carry the input as ``hex``.

    Raises:
        ValueError: ``uuid`` is not a 16-bit SIG UUID or ``hex`` is not hex.
    """
    uuid16 = parse_uuid16(uuid)
    data = parse_hex(hex)
    try:
        out = decode(uuid16, data).to_json()
    except DecodeError as exc:
        out = {
            "uuid": f"0x{uuid16:04X}",
            "characteristic": CHARACTERISTIC_NAMES.get(uuid16, "unknown"),
            "error": {"reason_code": exc.reason_code, "field": exc.field, "message": str(exc)},
        }
    out["hex"] = data.hex()
    return out


def add_arguments(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``ble decode UUID HEX`` to the ``vitalwire`` sub-command parsers."""
    ble: argparse.ArgumentParser = subparsers.add_parser(
        "ble", help="BLE tools (decode characteristic values)"
    )
    bsub = ble.add_subparsers(dest="ble_action", required=True)
    dec = bsub.add_parser(
        "decode",
        help="decode one characteristic value and print it as JSON",
        description="Decode one characteristic value and print its fields as JSON. "
        "UUID: 2a37, 0x2A37 or 00002a37-0000-1000-8000-00805f9b34fb.",
    )
    dec.add_argument("uuid", help="characteristic UUID (16-bit or 128-bit form)")
    dec.add_argument("hex", help="the value's bytes in hex (spaces and colons allowed)")
    dec.add_argument("--compact", action="store_true", help="one line instead of indented")
    return ble


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run ``vitalwire ble ...``; 0 decoded, 1 not decodable, 2 bad arguments."""
    out = out or sys.stdout
    if args.ble_action != "decode":
        raise ValueError(f"unknown ble action {args.ble_action!r}")
    try:
        result = ble_decode_command(args.uuid, args.hex)
    except ValueError as exc:
        print(f"vitalwire ble decode: {exc}", file=sys.stderr)
        return 2
    indent = None if getattr(args, "compact", False) else 2
    print(json.dumps(result, indent=indent, ensure_ascii=False), file=out)
    return 1 if "error" in result else 0
