"""Service configuration: the sample loads to the defaults; mistakes name file, key, expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import MqttConfig
from gateway.errors import ConfigError
from vitalwire.commands import parse_broker_url
from vitalwire.config import ServiceConfig, load_config

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "vitalwire.toml"


def test_sample_config_equals_the_embedded_defaults() -> None:
    loaded = load_config(SAMPLE)
    defaults = ServiceConfig()
    assert loaded.mqtt == defaults.mqtt
    assert loaded.store == defaults.store
    assert loaded.batch == defaults.batch
    assert loaded.normalize == defaults.normalize
    assert set(loaded.routes) == set(defaults.routes)
    assert loaded.progress_s == defaults.progress_s


def test_missing_file_is_none_gives_defaults() -> None:
    assert load_config(None) == ServiceConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[mqtt]\nprot = 1883\n", "[mqtt]: unknown key 'prot' (expected one of:"),
        ("[mqtt]\nport = 'x'\n", "[mqtt].port: expected int, got 'x'"),
        ("[mqtt]\nport = 70000\n", "mqtt.port: 70000 is not a TCP port"),
        ("[mqtt]\nqos = 2\n", "mqtt.qos: 2 is not supported (0 or 1)"),
        ("[mqtt]\npassword = 's'\n", "mqtt.password: given without mqtt.username"),
        ("[mqtt]\nca_file = '/etc/hosts'\n", "mqtt.ca_file: set mqtt.tls = true to use it"),
        ("[batch]\nmax_age_ms = 0\n", "batch.max_age_ms: 0.0 must be in (0, 60000]"),
        ("[store]\ncheckpoint_threshold = 'lots'\n", "store.checkpoint_threshold: expected a size"),
        ("[nope]\n", "unknown section [nope]"),
        ("[[routes]]\ntopic = 'a/{device_id}'\nformat = 'profile:missing'\n", "missing"),
        ("[[routes]]\ntopic = 'a/{device_id}'\n", "routes[0]"),
        ("[profiles]\ndirs = ['no-such-folder']\n", "[profiles].dirs:"),
        ("mqtt = [\n", "not valid TOML"),
        ("[service]\nintake = 'thread'\n", "[service].intake: expected one of process, inline"),
        ("[service]\nintakes = 'inline'\n", "[service] takes only"),
    ],
)
def test_bad_config_names_file_key_and_expectation(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        config = load_config(path)
        from vitalwire.service import build_router

        build_router(config)  # routes and profiles are checked when the router is built
    assert message in str(err.value)
    if "routes" not in text:
        assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("url", "host", "port", "tls", "user", "password"),
    [
        ("mqtt://broker.local", "broker.local", 1883, False, None, None),
        ("mqtt://10.0.0.5:1884", "10.0.0.5", 1884, False, None, None),
        ("mqtts://gw:p%40ss@broker:8884", "broker", 8884, True, "gw", "p@ss"),
        ("mqtts://broker", "broker", 8883, True, None, None),
    ],
)
def test_broker_url(
    url: str, host: str, port: int, tls: bool, user: str | None, password: str | None
) -> None:
    cfg = parse_broker_url(url, MqttConfig())
    assert (cfg.host, cfg.port, cfg.tls, cfg.username, cfg.password) == (
        host,
        port,
        tls,
        user,
        password,
    )


@pytest.mark.parametrize("url", ["http://x:1", "mqtt://", "mqtt://h:99999"])
def test_bad_broker_url(url: str) -> None:
    with pytest.raises(ConfigError, match="--broker"):
        parse_broker_url(url, MqttConfig())
