"""FleetConfig validation and the simulated timeline."""

from __future__ import annotations

import pytest

from gateway.errors import ConfigError
from simulators.config import FleetConfig, Timeline
from tests.simulators.conftest import T0, US


def test_defaults_are_valid_and_named() -> None:
    cfg = FleetConfig()
    assert (cfg.patients, cfg.seed, cfg.acceleration, cfg.duration_s, cfg.rate) == (
        8,
        1,
        1.0,
        None,
        None,
    )
    assert (cfg.host, cfg.port, cfg.qos, cfg.username, cfg.password) == (
        "127.0.0.1",
        1883,
        1,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"acceleration": 10.0}, "FleetConfig.acceleration: expected 1 when duration_s is not set"),
        ({"acceleration": 0.5, "duration_s": 60.0}, "FleetConfig.acceleration: expected >= 1"),
        ({"patients": 0}, "FleetConfig.patients: expected 1..9999, got 0"),
        ({"duration_s": -5.0}, "FleetConfig.duration_s: expected a positive number"),
        ({"rate": 0.0}, "FleetConfig.rate: expected a positive number"),
        ({"port": 70000}, "FleetConfig.port: expected a TCP port 1..65535, got 70000"),
        ({"qos": 3}, "FleetConfig.qos: expected 0, 1 or 2, got 3"),
        ({"kinds": ("toaster",)}, "FleetConfig.kinds: expected a non-empty subset of smartwatch"),
        ({"password": "secret"}, "FleetConfig.username: expected a user name when a password"),
        ({"diabetic_fraction": 1.5}, "FleetConfig.diabetic_fraction: expected a fraction"),
        ({"max_pending": 0}, "FleetConfig.max_pending: expected a positive integer, got 0"),
        ({"first_patient": 9990, "patients": 20}, "FleetConfig.first_patient: expected 1..9980"),
        ({"mqtt_version": "3"}, "FleetConfig.mqtt_version: expected '5' or '3.1.1', got '3'"),
    ],
)
def test_invalid_values_name_the_field(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        FleetConfig(**kwargs)  # type: ignore[arg-type]
    assert fragment in str(err.value)


def test_password_is_not_in_repr() -> None:
    assert "hunter2" not in repr(FleetConfig(username="sim", password="hunter2"))


def test_accelerated_timeline_ends_at_the_wall_clock() -> None:
    tl = Timeline.of(FleetConfig(duration_s=3600.0, acceleration=60.0), T0)
    assert tl.start_us == T0 - 3600 * US + 60 * US
    assert tl.end_us == T0 + 60 * US
    assert tl.wall_time_us(tl.start_us) == T0
    assert tl.wall_time_us(tl.start_us + 1800 * US) == T0 + 30 * US
    assert tl.wall_time_us(tl.end_us) == T0 + 60 * US


def test_real_time_timeline_starts_now() -> None:
    tl = Timeline.of(FleetConfig(), T0)
    assert (tl.start_us, tl.end_us) == (T0, None)
    assert tl.wall_time_us(T0 + 5 * US) == T0 + 5 * US
    tl = Timeline.of(FleetConfig(duration_s=90.0), T0)
    assert (tl.start_us, tl.end_us) == (T0, T0 + 90 * US)


@pytest.mark.parametrize("acceleration", [1.0, 3.0, 7.5, 60.0, 1000.0])
def test_device_time_is_never_after_its_wall_time(acceleration: float) -> None:
    tl = Timeline.of(FleetConfig(duration_s=7200.0, acceleration=acceleration), T0 + 123)
    assert tl.end_us is not None
    step = (tl.end_us - tl.start_us) // 997
    for sim in range(tl.start_us, tl.end_us + 1, step):
        assert sim <= tl.wall_time_us(sim)
    assert tl.wall_time_us(tl.end_us) - tl.end_us <= 1
