"""Fixtures of the FHIR tests: a real FHIR server (sekmet-fhir) on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fhir.server import SekmetServer


@pytest.fixture
def sekmet(tmp_path: Path) -> Iterator[SekmetServer]:
    """A fresh sekmet-fhir server without auth; ``stop()``/``start()`` keep its data."""
    server = SekmetServer(tmp_path / "sekmet")
    server.start()
    try:
        yield server
    finally:
        server.stop()
