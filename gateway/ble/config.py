"""BLE receiver configuration: the allowed devices and the connection policy.

A ``[ble]`` TOML section loads with :func:`load_ble_config`::

    [ble]
    backend = "bumble:tcp-client:127.0.0.1:9100"   # or "system" (the OS Bluetooth stack)
    state_path = "ble-sync.json"                    # highest stored glucose record per device
    max_clock_skew_s = 120

    [[ble.devices]]
    address = "F1:00:00:00:00:01"
    device_id = "GM-P001"
    require_bond = true
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.ble.uuids import HEALTH_SERVICES
from gateway.errors import ConfigError

__all__ = ["AllowedDevice", "BleConfig", "load_ble_config"]

_ADDRESS = re.compile(r"\A[0-9A-F]{2}(:[0-9A-F]{2}){5}\Z")
_DEVICE_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.:-]*\Z")


@dataclass(frozen=True, slots=True)
class AllowedDevice:
    """One device the gateway may connect to.

    Attributes:
        address: Bluetooth address, ``AA:BB:CC:DD:EE:FF`` (stored upper case).
        device_id: The id its readings carry (and the registry assigns to patients).
        require_bond: Pair (bond and encrypt) before reading; glucose meters usually need it.
    """

    address: str
    device_id: str
    require_bond: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", str(self.address).upper())
        if not _ADDRESS.match(self.address):
            raise ConfigError(
                f"ble.devices: address: expected AA:BB:CC:DD:EE:FF, got {self.address!r}"
            )
        if not isinstance(self.device_id, str) or not _DEVICE_ID.match(self.device_id):
            raise ConfigError(
                f"ble.devices[{self.address}]: device_id: expected letters, digits and "
                f"'_.:-' (no '/'), got {self.device_id!r}"
            )


@dataclass(frozen=True, slots=True)
class BleConfig:
    """How the BLE receiver finds, connects and syncs devices.

    Attributes:
        devices: The allowed devices; advertisements of any other address are ignored.
        backend: ``system`` (bleak's platform backend) or ``bumble:<transport>`` for virtual
            devices; the wiring resolves it (see ``simulators.ble.backend.open_backends``).
        state_path: JSON file keeping the highest committed glucose record sequence number
            per device; ``None`` keeps it in memory (a restart then syncs every record).
        scan_services: 16-bit service UUIDs scanned for.
        find_timeout_s: How long to wait for an advertisement before trying again.
        connect_timeout_s: Timeout of one connection attempt.
        connect_attempts: ``max_attempts`` of bleak-retry-connector per connection.
        reconnect_min_s: First delay after a failed connection; doubles, with jitter.
        reconnect_max_s: Largest delay between connection attempts.
        racp_timeout_s: Longest wait for a Record Access Control Point procedure to finish.
        resync_s: While connected, ask a glucose meter for new records this often.
        max_clock_skew_s: Device clocks further than this from the gateway's are flagged.
        queue_size: Messages held for the batcher; beyond it new messages are dropped and
            counted.
    """

    devices: tuple[AllowedDevice, ...] = ()
    backend: str = "system"
    state_path: Path | None = None
    scan_services: tuple[int, ...] = HEALTH_SERVICES
    find_timeout_s: float = 10.0
    connect_timeout_s: float = 10.0
    connect_attempts: int = 4
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    racp_timeout_s: float = 30.0
    resync_s: float = 60.0
    max_clock_skew_s: float = 120.0
    queue_size: int = 100_000
    _by_address: dict[str, AllowedDevice] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self.validate()
        self._by_address.update({d.address: d for d in self.devices})

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field."""
        seen_addr: set[str] = set()
        seen_id: set[str] = set()
        for d in self.devices:
            if d.address in seen_addr or d.device_id in seen_id:
                raise ConfigError(
                    f"ble.devices: {d.address} / {d.device_id} appears twice (addresses and "
                    "device ids must be unique)"
                )
            seen_addr.add(d.address)
            seen_id.add(d.device_id)
        if not (self.backend == "system" or self.backend.startswith("bumble:")):
            raise ConfigError(
                f"ble.backend: expected 'system' or 'bumble:<transport>', got {self.backend!r}"
            )
        for name in ("find_timeout_s", "connect_timeout_s", "reconnect_min_s",
                     "racp_timeout_s", "resync_s", "max_clock_skew_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"ble.{name}: expected seconds > 0, got {getattr(self, name)}")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ConfigError(
                f"ble.reconnect_max_s: {self.reconnect_max_s} is below reconnect_min_s "
                f"{self.reconnect_min_s}"
            )
        if self.connect_attempts < 1 or self.queue_size < 1:
            raise ConfigError("ble.connect_attempts and ble.queue_size: expected integers >= 1")

    def device_for(self, address: str) -> AllowedDevice | None:
        """The allowed device with ``address``, or ``None``."""
        return self._by_address.get(address.upper())


def load_ble_config(table: Mapping[str, Any], where: str = "[ble]",
                    base_dir: Path | None = None) -> BleConfig:
    """A :class:`BleConfig` from a parsed ``[ble]`` TOML table.

    Raises:
        ConfigError: An unknown key or a value of the wrong type, naming it.
    """
    names = {f.name for f in dataclasses.fields(BleConfig) if not f.name.startswith("_")}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key not in names:
            raise ConfigError(
                f"{where}: unknown key {key!r} (expected one of: {', '.join(sorted(names))})"
            )
        if key == "devices":
            if not isinstance(value, list):
                raise ConfigError(f"{where}.devices: expected [[ble.devices]] tables")
            devices = []
            for i, item in enumerate(value):
                if not isinstance(item, dict) or set(item) - {"address", "device_id",
                                                               "require_bond"}:
                    raise ConfigError(
                        f"{where}.devices[{i}]: expected address, device_id and optional "
                        f"require_bond, got {item!r}"
                    )
                try:
                    devices.append(AllowedDevice(**item))
                except TypeError as exc:
                    raise ConfigError(f"{where}.devices[{i}]: {exc}") from None
            kwargs[key] = tuple(devices)
        elif key == "state_path":
            if not isinstance(value, str):
                raise ConfigError(f"{where}.state_path: expected a path string, got {value!r}")
            kwargs[key] = (base_dir or Path()) / value
        elif key == "scan_services":
            if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
                raise ConfigError(f"{where}.scan_services: expected a list of 16-bit UUIDs")
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = value
    return BleConfig(**kwargs)
