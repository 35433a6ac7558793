"""BLE receiver configuration and the persisted RACP sync state."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from gateway.ble.config import AllowedDevice, BleConfig, load_ble_config
from gateway.ble.receiver import BleReceiver, SeqToken
from gateway.ble.state import SyncState
from gateway.errors import ConfigError
from gateway.records import RawMessage

SAMPLE = """
[ble]
backend = "bumble:tcp-client:127.0.0.1:9100"
state_path = "sync.json"
max_clock_skew_s = 60

[[ble.devices]]
address = "f1:00:00:00:00:01"
device_id = "GM-P001"
require_bond = true
"""


def test_load_sample(tmp_path: Path) -> None:
    cfg = load_ble_config(tomllib.loads(SAMPLE)["ble"], base_dir=tmp_path)
    assert cfg.devices == (AllowedDevice("F1:00:00:00:00:01", "GM-P001", True),)
    assert cfg.state_path == tmp_path / "sync.json"
    assert cfg.max_clock_skew_s == 60
    assert cfg.device_for("F1:00:00:00:00:01") == cfg.devices[0]
    assert cfg.device_for("F1:00:00:00:00:02") is None


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"colour": 1}, "unknown key 'colour'"),
        ({"devices": [{"address": "nope", "device_id": "A"}]}, "address: expected AA:BB"),
        ({"devices": [{"address": "F1:00:00:00:00:01", "device_id": "a/b"}]}, "device_id"),
        ({"devices": [{"address": "F1:00:00:00:00:01", "device_id": "A", "pin": 1}]},
         "expected address, device_id"),
        ({"backend": "bluez"}, "ble.backend"),
        ({"racp_timeout_s": 0}, "ble.racp_timeout_s"),
        ({"reconnect_min_s": 5.0, "reconnect_max_s": 1.0}, "reconnect_max_s"),
    ],
)
def test_bad_config(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_ble_config(table)


def test_duplicate_devices_rejected() -> None:
    with pytest.raises(ConfigError, match="appears twice"):
        BleConfig(devices=(AllowedDevice("F1:00:00:00:00:01", "A"),
                           AllowedDevice("F1:00:00:00:00:01", "B")))


def test_sync_state_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sync.json"
    state = SyncState(path)
    assert state.last("GM-1") is None
    assert state.commit([("GM-1", 4), ("GM-1", 9), ("GM-2", 1)])
    assert not state.commit([("GM-1", 7)])  # never goes back
    assert json.loads(path.read_text()) == {"GM-1": 9, "GM-2": 1}
    assert SyncState(path).last("GM-1") == 9


def test_sync_state_rejects_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "sync.json"
    path.write_text('{"GM-1": "nine"}')
    with pytest.raises(ConfigError, match="device id -> integer"):
        SyncState(path)


async def test_receiver_source_interface_without_radio(tmp_path: Path) -> None:
    """Queueing, bounded buffer, receive timeout and ack, with no scanner started."""
    cfg = BleConfig(devices=(AllowedDevice("F1:00:00:00:00:01", "GM-1"),),
                    state_path=tmp_path / "s.json", queue_size=2)
    rx = BleReceiver(cfg, clock_us=lambda: 5)
    assert await rx.receive(10, 0.0) == []
    msgs = [RawMessage("ble/GM-1/2a18", bytes([0, n, 0]), 5, "ble", rx.seq_token("GM-1", n))
            for n in (1, 2, 3)]
    assert [rx.enqueue(m) for m in msgs] == [True, True, False]
    assert rx.stats.dropped == 1
    assert rx.received_max == {"GM-1": 3}
    got = await rx.receive(10, 0.0)
    assert got == msgs[:2]
    rx.ack([m.ack for m in got] + [None])
    assert rx.stats.acked == 2
    assert json.loads((tmp_path / "s.json").read_text()) == {"GM-1": 2}
    assert got[0].ack == SeqToken("GM-1", 1)
