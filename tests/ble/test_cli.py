"""``vitalwire ble decode``."""

from __future__ import annotations

import argparse
import io
import json

import pytest

from gateway.ble.cli import add_arguments, ble_decode_command, parse_hex, run


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vitalwire")
    add_arguments(p.add_subparsers(dest="command", required=True))
    return p


@pytest.mark.parametrize("uuid", ["2a37", "0x2A37", "2A37", "00002a37-0000-1000-8000-00805f9b34fb"])
def test_uuid_forms(uuid: str) -> None:
    assert ble_decode_command(uuid, "0048")["fields"]["heart_rate"] == {
        "value": 72, "unit": "/min"
    }


@pytest.mark.parametrize("uuid", ["2a3", "0x12345", "00002a37-0000-1000-8000-00805f9b34fc", "hr"])
def test_bad_uuid(uuid: str) -> None:
    with pytest.raises(ValueError, match="expected a 16-bit UUID"):
        ble_decode_command(uuid, "0048")


def test_hex_forms() -> None:
    assert parse_hex("16 48 00:03") == b"\x16\x48\x00\x03"
    assert parse_hex("0x1648") == b"\x16\x48"
    with pytest.raises(ValueError, match="pairs of hex digits"):
        parse_hex("164")


def test_special_value_reason_is_printed() -> None:
    out = ble_decode_command("2a1c", "00ffff7f00")
    assert out["fields"]["temperature"] == {"value": None, "unit": "Cel", "absent": "NaN"}
    assert out["readings"] == [
        {"metric": "body_temperature", "value": None, "unit": "Cel", "absent": "NaN",
         "device_time_us": None, "seq": None, "quality": ["value_absent"]}
    ]
    assert out["hex"] == "00ffff7f00"


def test_run_prints_json_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    buf = io.StringIO()
    assert run(parser().parse_args(["ble", "decode", "0x2A37", "1048 0003 0004"]), buf) == 0
    printed = json.loads(buf.getvalue())
    assert printed["characteristic"] == "Heart Rate Measurement"
    assert printed["fields"]["rr_intervals_s"] == [0.75, 1]

    buf = io.StringIO()
    args = parser().parse_args(["ble", "decode", "2a37", "01", "--compact"])
    assert run(args, buf) == 1
    assert json.loads(buf.getvalue())["error"] == {
        "reason_code": "truncated", "field": "heart_rate",
        "message": "Heart Rate Measurement: heart_rate: needs 2 byte(s) at offset 1, "
                   "payload has 1 byte(s)",
    }
    assert run(parser().parse_args(["ble", "decode", "zz", "00"]), io.StringIO()) == 2
    assert "UUID 'zz'" in capsys.readouterr().err
