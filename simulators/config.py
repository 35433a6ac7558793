"""Simulator configuration: the fleet settings, device cadences and the simulated timeline.

Everything here is a validated frozen value with named defaults. A bad value fails at
construction with a :class:`~gateway.errors.ConfigError` naming the field and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from gateway.errors import ConfigError
from simulators.native import KINDS

__all__ = [
    "CADENCES",
    "DEFAULT_BEDSIDE_FRACTION",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_DIABETIC_FRACTION",
    "DEFAULT_HOST",
    "DEFAULT_MAX_PENDING",
    "DEFAULT_MQTT_VERSION",
    "DEFAULT_PATIENTS",
    "DEFAULT_PORT",
    "DEFAULT_QOS",
    "DEFAULT_SCALE_FRACTION",
    "DEFAULT_SEED",
    "MQTT_VERSIONS",
    "Cadence",
    "FleetConfig",
    "Timeline",
]

DEFAULT_PATIENTS = 8
DEFAULT_SEED = 1
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1883
DEFAULT_QOS = 1
DEFAULT_MQTT_VERSION = "5"
MQTT_VERSIONS = ("5", "3.1.1")
DEFAULT_BEDSIDE_FRACTION = 0.5
DEFAULT_DIABETIC_FRACTION = 0.25
DEFAULT_SCALE_FRACTION = 0.5
DEFAULT_CLIENT_ID = "vitalwire-sim"
DEFAULT_MAX_PENDING = 1000
DEFAULT_CONNECT_TIMEOUT_S = 10.0

US = 1_000_000


@dataclass(frozen=True, slots=True)
class Cadence:
    """When one device kind sends.

    Attributes:
        interval_s: ``(low, high)`` seconds between two messages, drawn uniformly per message;
            ``None`` for devices that measure at fixed times of day.
        daily_at_h: Hours of the day (UTC) of the spot measurements of a daily device.
        daily_jitter_s: A daily measurement happens up to this many seconds either side.
        slow: Metric groups sent only every ``(low, high)`` seconds: they ride along in the
            first message after they fall due. Other metrics of the kind go in every message.
    """

    interval_s: tuple[float, float] | None = None
    daily_at_h: tuple[float, ...] = ()
    daily_jitter_s: float = 0.0
    slow: tuple[tuple[tuple[str, ...], tuple[float, float]], ...] = ()

    def __post_init__(self) -> None:
        if (self.interval_s is None) == (not self.daily_at_h):
            raise ConfigError("Cadence: give exactly one of interval_s or daily_at_h")
        if self.interval_s is not None and not 0 < self.interval_s[0] <= self.interval_s[1]:
            raise ConfigError(
                f"Cadence.interval_s: expected 0 < low <= high, got {self.interval_s}"
            )


CADENCES: Mapping[str, Cadence] = MappingProxyType(
    {
        # Heart rate, SpO2 and steps every 5-15 s; HRV (SDNN) over 5-minute windows.
        "smartwatch": Cadence(interval_s=(5.0, 15.0), slow=((("hrv_sdnn",), (300.0, 300.0)),)),
        # HR, RR and SpO2 every 1-5 s; non-invasive BP every 5-15 min; temperature every ~5 min.
        "bedside_monitor": Cadence(
            interval_s=(1.0, 5.0),
            slow=(
                (("systolic_bp", "diastolic_bp", "mean_bp"), (300.0, 900.0)),
                (("body_temperature",), (270.0, 330.0)),
            ),
        ),
        # One interstitial glucose value every 5 minutes, exactly.
        "cgm": Cadence(interval_s=(300.0, 300.0)),
        # Finger-prick spot checks before meals and at bedtime.
        "glucose_meter": Cadence(daily_at_h=(7.0, 12.0, 18.0, 22.0), daily_jitter_s=1200.0),
        # One weighing a day, in the morning.
        "scale": Cadence(daily_at_h=(7.0,), daily_jitter_s=1800.0),
    }
)


def _fail(name: str, expected: str, value: object) -> ConfigError:
    return ConfigError(f"FleetConfig.{name}: expected {expected}, got {value!r}")


def _check_fraction(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
        raise _fail(name, "a fraction between 0 and 1", value)


@dataclass(frozen=True)
class FleetConfig:
    """Settings of one simulated fleet.

    Attributes:
        patients: Number of virtual patients, ``P001`` upwards.
        first_patient: Number of the first patient; give each process of a multi-process load
            test its own range (``first_patient=1001`` starts at ``P1001``).
        seed: Seed of every random draw; the same seed and scenario give byte-identical output.
        scenario: TOML file of scripted clinical events, or ``None`` for none.
        acceleration: Simulated seconds per wall second (>= 1). Above 1 needs ``duration_s``:
            the simulated timeline then ends at the wall clock, so no timestamp is in the future.
        duration_s: Simulated seconds to run, or ``None`` to run until stopped.
        rate: Load-generator mode: total messages per wall second, round-robin over all
            devices, regardless of device cadence. ``None`` keeps the devices' own cadence.
        host: MQTT broker host.
        port: MQTT broker port.
        username: Broker user name, or ``None`` for anonymous.
        password: Broker password (needs ``username``).
        qos: MQTT QoS of every publish (0, 1 or 2).
        mqtt_version: ``"5"``, or ``"3.1.1"`` for brokers without MQTT 5 (amqtt).
        event_log: Where the live fleet writes the ground-truth event log (JSON lines).
        kinds: When set, every patient gets exactly these device kinds instead of the default
            mix (scenario patient overrides still win).
        bedside_fraction: Default mix: share of patients with a bedside monitor; the others
            wear a smartwatch.
        diabetic_fraction: Default mix: share of diabetic patients (CGM and glucose meter).
        scale_fraction: Default mix: share of patients with a scale.
        client_id: MQTT client id of the publisher.
        max_pending: Most QoS 1/2 messages awaiting the broker's acknowledgement; publishing
            waits beyond that (backpressure instead of unbounded memory).
        connect_timeout_s: How long the publisher waits for the first connection.
    """

    patients: int = DEFAULT_PATIENTS
    first_patient: int = 1
    seed: int = DEFAULT_SEED
    scenario: Path | None = None
    acceleration: float = 1.0
    duration_s: float | None = None
    rate: float | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    qos: int = DEFAULT_QOS
    mqtt_version: str = DEFAULT_MQTT_VERSION
    event_log: Path | None = None
    kinds: tuple[str, ...] | None = None
    bedside_fraction: float = DEFAULT_BEDSIDE_FRACTION
    diabetic_fraction: float = DEFAULT_DIABETIC_FRACTION
    scale_fraction: float = DEFAULT_SCALE_FRACTION
    client_id: str = DEFAULT_CLIENT_ID
    max_pending: int = DEFAULT_MAX_PENDING
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field."""
        if isinstance(self.patients, bool) or not isinstance(self.patients, int):
            raise _fail("patients", "an integer", self.patients)
        if not 1 <= self.patients <= 9999:
            raise _fail("patients", "1..9999", self.patients)
        if isinstance(self.first_patient, bool) or not isinstance(self.first_patient, int):
            raise _fail("first_patient", "an integer", self.first_patient)
        if not 1 <= self.first_patient <= 10000 - self.patients:
            raise _fail(
                "first_patient",
                f"1..{10000 - self.patients} (ids end at P9999)",
                self.first_patient,
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise _fail("seed", "an integer", self.seed)
        if not (isinstance(self.acceleration, int | float) and math.isfinite(self.acceleration)):
            raise _fail("acceleration", "a finite number", self.acceleration)
        if self.acceleration < 1.0:
            raise _fail(
                "acceleration", ">= 1 (simulated seconds per wall second)", self.acceleration
            )
        if self.duration_s is not None and not (
            isinstance(self.duration_s, int | float)
            and math.isfinite(self.duration_s)
            and self.duration_s > 0
        ):
            raise _fail("duration_s", "a positive number of seconds or None", self.duration_s)
        if self.duration_s is None and self.acceleration != 1.0:
            raise _fail(
                "acceleration",
                "1 when duration_s is not set (an accelerated run without an end would "
                "publish timestamps in the future; give a duration)",
                self.acceleration,
            )
        if self.rate is not None and not (
            isinstance(self.rate, int | float) and math.isfinite(self.rate) and self.rate > 0
        ):
            raise _fail("rate", "a positive number of messages per second or None", self.rate)
        if not self.host:
            raise _fail("host", "a host name or address", self.host)
        if (
            isinstance(self.port, bool)
            or not isinstance(self.port, int)
            or not 0 < self.port < 65536
        ):
            raise _fail("port", "a TCP port 1..65535", self.port)
        if self.password is not None and self.username is None:
            raise _fail("username", "a user name when a password is given", self.username)
        if self.qos not in (0, 1, 2):
            raise _fail("qos", "0, 1 or 2", self.qos)
        if self.mqtt_version not in MQTT_VERSIONS:
            raise _fail("mqtt_version", " or ".join(map(repr, MQTT_VERSIONS)), self.mqtt_version)
        if self.kinds is not None:
            unknown = [k for k in self.kinds if k not in KINDS]
            if unknown or not self.kinds:
                raise _fail("kinds", f"a non-empty subset of {', '.join(KINDS)}", self.kinds)
        for name in ("bedside_fraction", "diabetic_fraction", "scale_fraction"):
            _check_fraction(name, getattr(self, name))
        if not self.client_id:
            raise _fail("client_id", "a non-empty MQTT client id", self.client_id)
        if isinstance(self.max_pending, bool) or not (
            isinstance(self.max_pending, int) and self.max_pending >= 1
        ):
            raise _fail("max_pending", "a positive integer", self.max_pending)
        if not (isinstance(self.connect_timeout_s, int | float) and self.connect_timeout_s > 0):
            raise _fail("connect_timeout_s", "a positive number of seconds", self.connect_timeout_s)


@dataclass(frozen=True, slots=True)
class Timeline:
    """Where simulated time sits against the wall clock.

    With a duration ``D`` and acceleration ``X`` the simulated timeline starts at
    ``wall_start - D + D / X``, so it ends exactly at the wall clock and a message's device time
    is never later than the wall time it is published at.

    Attributes:
        wall_start_us: Wall-clock time the run starts (UTC microseconds).
        start_us: Simulated time of the first instant.
        end_us: Simulated end (exclusive), or ``None`` for an open-ended run.
        acceleration: Simulated seconds per wall second.
    """

    wall_start_us: int
    start_us: int
    end_us: int | None
    acceleration: float

    @classmethod
    def of(cls, config: FleetConfig, wall_start_us: int) -> Timeline:
        """The timeline of ``config`` for a run starting at ``wall_start_us``."""
        if config.duration_s is None:
            return cls(wall_start_us, wall_start_us, None, config.acceleration)
        duration_us = round(config.duration_s * US)
        start = wall_start_us - duration_us + math.floor(duration_us / config.acceleration)
        return cls(wall_start_us, start, start + duration_us, config.acceleration)

    def wall_time_us(self, sim_us: int) -> int:
        """Wall-clock time at which simulated instant ``sim_us`` is due (never before it)."""
        wall = self.wall_start_us + math.ceil((sim_us - self.start_us) / self.acceleration)
        return max(wall, sim_us)
