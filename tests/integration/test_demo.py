"""The README's main job: ``vitalwire demo`` runs, stores readings, and stops cleanly."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("broker", ["mosquitto", "amqtt"])
def test_demo_runs_and_drains(tmp_path: Path, broker: str) -> None:
    db = tmp_path / "demo.duckdb"
    out = subprocess.run(
        [sys.executable, "-m", "vitalwire.cli", "demo", "--duration", "6", "--patients", "5",
         "--db", str(db), "--embedded-broker", broker, "--http", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    match = re.search(r"demo: stored (\d+) readings", out.stderr)
    assert match, out.stderr
    stored = int(match.group(1))
    assert stored > 0
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT count(*), count(DISTINCT patient_id) FROM readings").fetchone()
    assigned = con.execute("SELECT count(DISTINCT device_id) FROM assignments").fetchone()
    con.close()
    assert rows is not None and rows[0] == stored
    assert assigned is not None and assigned[0] >= 5
    assert f"MQTT {'5' if broker == 'mosquitto' else '3.1.1'}" in out.stderr
    assert (tmp_path / "demo.events.jsonl").exists() or db.with_suffix(".events.jsonl").exists()
