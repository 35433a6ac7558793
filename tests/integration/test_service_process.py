"""The service as a process: kill -9 and restart loses nothing and stores nothing twice;
SIGTERM drains; data commands reach a running service through its control socket."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import orjson
import pytest

from tests.support.mqtt import Publisher, wait_until
from vitalwire import control
from vitalwire.broker import MosquittoBroker

pytestmark = pytest.mark.integration

BASE_US = time.time_ns() // 1000 - 3_600_000_000  # an hour ago: all readings in the past


def vitalwire(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vitalwire.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


def start_service(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "vitalwire.cli", "run", "--config", str(config),
             "--http", "127.0.0.1:0"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def answering(db: Path) -> bool:
    """The service's control socket answers (not just a stale file after kill -9)."""
    try:
        control.call(control.socket_path(db), "quarantine.summary", {}, timeout=5)
    except control.ControlError:
        return False
    return True


def write_config(tmp: Path, port: int, db: Path) -> Path:
    cfg = tmp / "vitalwire.toml"
    cfg.write_text(
        f'[mqtt]\nport = {port}\nclient_id = "vw-proc"\n'
        f'[store]\npath = "{db}"\n[service]\nprogress_s = 0.5\n'
    )
    return cfg


def message(i: int, device: str = "GM-1", ts_ms: int | None = None) -> tuple[str, bytes]:
    ts = ts_ms if ts_ms is not None else (BASE_US + i * 1000) // 1000
    body = {
        "device_id": device,
        "metric": "heart_rate",
        "value": 60 + i % 50,
        "unit": "/min",
        "ts": ts,
        "seq": i,
    }
    return f"vitalwire/v1/devices/{device}/readings", orjson.dumps(body)


def wait_ready(db: Path, pub: Publisher, proc: subprocess.Popen[bytes]) -> None:
    """Publish probes until one is stored: the service is connected and subscribed."""
    probe = 10**9

    def stored_probe() -> bool:
        nonlocal probe
        assert proc.poll() is None, "service exited"
        probe += 1
        pub.publish([message(probe, device="PROBE", ts_ms=time.time_ns() // 1_000_000)])
        out = vitalwire("readings", "--db", str(db), "--patient", "PX", check=False)
        return out.returncode == 0 and "PROBE" in out.stdout

    wait_until(stored_probe, 30, "the service to store a probe")


def gone(pid: int) -> bool:
    """Whether a process has exited (a zombie waiting for its reaper counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_kill9_restart_stores_every_reading_once(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    db = tmp_path / "svc.duckdb"
    cfg = write_config(tmp_path, mosquitto.port, db)
    log = tmp_path / "service.log"
    proc = start_service(cfg, log)
    total = 4000
    try:
        wait_until(lambda: answering(db), 30, "the control socket")
        vitalwire(
            "devices", "assign", "GM-1", "P1", "--from", "2000-01-01T00:00:00Z", "--db", str(db)
        )
        vitalwire(
            "devices", "assign", "PROBE", "PX", "--from", "2000-01-01T00:00:00Z", "--db", str(db)
        )
        with Publisher(mosquitto.port) as pub:
            wait_ready(db, pub, proc)
            sent = 0

            def publish_all() -> None:
                nonlocal sent
                for start in range(0, total, 100):
                    pub.publish([message(i) for i in range(start, start + 100)])
                    sent = start + 100
                    time.sleep(0.01)

            publisher = threading.Thread(target=publish_all)
            publisher.start()
            wait_until(lambda: sent >= 1000, 60, "1000 messages published")
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            assert len(children) == 1  # the intake process
            proc.kill()  # kill -9 mid-stream
            proc.wait(10)
            wait_until(lambda: gone(int(children[0])), 10, "the intake process to die with it")
            publisher.join(120)  # the rest is published while the service is down
            assert sent == total
        proc = start_service(cfg, log)
        wait_until(lambda: answering(db), 30, "the restarted service to answer")

        def all_stored() -> bool:
            out = vitalwire(
                "readings", "--db", str(db), "--patient", "P1", "--limit", "100000", check=False
            )
            return out.returncode == 0 and len(out.stdout.splitlines()) - 1 >= total

        wait_until(all_stored, 120, f"{total} readings stored")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    con = duckdb.connect(str(db), read_only=True)
    rows, distinct, dupes = con.execute(
        "SELECT count(*), count(DISTINCT seq), "
        "(SELECT count(*) FROM (SELECT seq FROM readings WHERE device_id = 'GM-1' "
        "  GROUP BY seq HAVING count(*) > 1)) FROM readings WHERE device_id = 'GM-1'"
    ).fetchone()
    seqs = {
        r[0] for r in con.execute("SELECT seq FROM readings WHERE device_id = 'GM-1'").fetchall()
    }
    con.close()
    assert dupes == 0
    assert rows == distinct == total
    assert seqs == set(range(total))


def test_sigterm_drains_and_replay_works_through_the_running_service(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    db = tmp_path / "svc.duckdb"
    cfg = write_config(tmp_path, mosquitto.port, db)
    log = tmp_path / "service.log"
    proc = start_service(cfg, log)
    try:
        wait_until(lambda: answering(db), 30, "the control socket")
        vitalwire(
            "devices", "assign", "PROBE", "PX", "--from", "2000-01-01T00:00:00Z", "--db", str(db)
        )
        with Publisher(mosquitto.port) as pub:
            wait_ready(db, pub, proc)
            # NEW-1 is not assigned yet: its readings wait in quarantine
            pub.publish([message(i, device="NEW-1") for i in range(20)])

            def quarantined() -> bool:
                out = vitalwire("quarantine", "summary", "--db", str(db), check=False)
                return "unassigned_device" in out.stdout and " 20" in out.stdout

            wait_until(quarantined, 30, "20 unassigned readings in quarantine")
            # assign from before the readings, then replay: both through the control socket
            vitalwire(
                "devices",
                "assign",
                "NEW-1",
                "P7",
                "--from",
                "2000-01-01T00:00:00Z",
                "--db",
                str(db),
            )
            out = vitalwire("quarantine", "replay", "--db", str(db))
            assert "replayed 20 quarantined readings: 20 stored" in out.stdout, out.stdout
            again = vitalwire("quarantine", "replay", "--db", str(db))
            assert "replayed 0 quarantined readings" in again.stdout
            # SIGTERM while these may still be in flight: what was received is committed and
            # acknowledged, the rest waits at the broker for the next start
            pub.publish([message(i, device="NEW-1") for i in range(20, 30)])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
        assert "stopped:" in log.read_text()
        assert not Path(f"{db}.sock").exists()
        # the service is gone: the same commands now open the file directly
        first = vitalwire("readings", "--db", str(db), "--patient", "P7", "--limit", "1000")
        assert 20 <= len(first.stdout.splitlines()) - 1 <= 30
        proc = start_service(cfg, log)
        wait_until(lambda: answering(db), 30, "the restarted service")

        def all_thirty() -> bool:
            out = vitalwire("readings", "--db", str(db), "--patient", "P7", "--limit", "1000")
            return len(out.stdout.splitlines()) - 1 >= 30

        wait_until(all_thirty, 30, "the in-flight readings after restart")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = vitalwire("readings", "--db", str(db), "--patient", "P7", "--limit", "1000")
    assert len(out.stdout.splitlines()) - 1 == 30  # each exactly once
    summary = vitalwire("quarantine", "list", "--db", str(db), "--reason", "unassigned_device")
    rows = [ln for ln in summary.stdout.splitlines() if "NEW-1" in ln]
    assert len(rows) == 20
    assert os.path.exists(db)
