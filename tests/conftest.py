"""Shared fixtures: a real mosquitto broker on a free loopback port."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from vitalwire.broker import MosquittoBroker, find_mosquitto


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A fresh mosquitto process (Debian package) for one test; persistence on disk."""
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed: run `make test`, which installs it")
    broker = MosquittoBroker(persistence=True, workdir=tmp_path / "broker")
    broker.start()
    try:
        yield broker
    finally:
        broker.cleanup()


@pytest.fixture
def password_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A mosquitto that refuses anonymous clients and knows one user, ``gateway``, whose
    password is ``right``."""
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed: run `make test`, which installs it")
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "gateway", "right"], check=True)
    passwd.chmod(0o600)
    broker = MosquittoBroker(workdir=tmp_path / "password-broker", password_file=passwd)
    broker.start()
    try:
        yield broker
    finally:
        broker.cleanup()
