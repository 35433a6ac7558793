"""The naive baseline: what ingestion looks like without batching.

A paho subscriber (VERSION2, MQTT v5, QoS 1, automatic ack after the callback) that, for each
message, in ``on_message``: ``json.loads`` the payload, loops over its readings in Python with
dict checks (known metric, accepted unit and conversion from the catalogue, plausible range,
assigned device), and inserts every accepted reading with its own single-row ``INSERT`` into
the same DuckDB ``readings`` table the service uses (autocommit: one transaction per row).

Vendor code tables come from the shipped device profiles and the Open mHealth decoder, unit
factors and ranges from the metric catalogue: nothing is duplicated here.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import duckdb
import paho.mqtt.client as mqtt
from bench_publish import connect_client
from bench_subjects import RECEIVE_MAXIMUM, DrainResult, Stopwatch, peak_rss_bytes

from gateway.formats.openmhealth import UNIT_TO_UCUM
from gateway.formats.router import load_default_profiles
from pipeline.catalogue import catalogue

__all__ = ["NaiveIngest", "drain_naive"]

Row = tuple[str, str, Any, str, datetime, int | None]
"""``(device_id, metric, value, unit, observed_at, seq)`` as found in a payload."""

_INSERT = (
    "INSERT INTO readings (patient_id, device_id, source, metric, value, unit, observed_at,"
    " received_at, seq, quality) VALUES (?, ?, 'mqtt', ?, ?, ?, ?, ?, ?, 0)"
)


class NaiveIngest:
    """Per-message decode, per-reading checks and one INSERT per reading.

    Args:
        conn: An open DuckDB connection (autocommit).
        patients: ``device_id -> patient_id``.
    """

    def __init__(self, conn: duckdb.DuckDBPyConnection, patients: dict[str, str]) -> None:
        cat = catalogue()
        self.conn = conn
        self.patients = patients
        self.units = {(m.name, u.unit): (u.factor, u.offset, m.canonical_unit)
                      for m in cat.metrics for u in m.units}
        self.ranges = {m.name: (m.plausible_low, m.plausible_high) for m in cat.metrics}
        profiles = load_default_profiles(cat.names)
        bedside = profiles["medsys-bedside"].templates[0].values[0]
        self.bedside_metric = bedside.metric_map
        self.bedside_unit = bedside.unit_map
        self.watch = [(v.metric, v.value, v.unit)
                      for v in profiles["pulsewear-watch"].templates[0].values]
        self.stored = 0
        self.rejected = 0

    def rows(self, topic: str, doc: Any) -> Iterator[Row]:
        """The readings of one decoded payload, by the topic's vendor."""
        vendor = topic.split("/", 1)[0]
        if vendor == "medsys":
            ts = datetime.fromisoformat(doc["time"])
            for obs in doc["observations"]:
                yield (doc["monitor"]["serial"], self.bedside_metric[obs["code"]], obs["value"],
                       self.bedside_unit[obs["unit"]], ts, doc["seq"])
        elif vendor == "pulsewear":
            ts = datetime.fromtimestamp(doc["time_ms"] / 1000, UTC)
            for metric, path, unit in self.watch:
                value = path.get(doc)
                if isinstance(value, int | float) and metric is not None and unit is not None:
                    yield doc["watch"]["id"], metric, value, unit, ts, doc["counter"]
        elif vendor == "glucoflow":
            for egv in doc["egvs"]:
                yield (doc["sensor_id"], "cgm_glucose", egv["mgdl"], "mg/dL",
                       datetime.fromtimestamp(egv["t"], UTC), egv["seq"])
        elif vendor == "vitalwire":
            for r in doc if isinstance(doc, list) else [doc]:
                yield (r["device_id"], r["metric"], r["value"], r["unit"],
                       datetime.fromisoformat(r["ts"]), r.get("seq"))
        elif vendor == "openmhealth":
            body = doc["body"]
            weight = body["body_weight"]
            yield (doc["header"]["acquisition_provenance"]["source_name"], "body_weight",
                   weight["value"], UNIT_TO_UCUM.get(weight["unit"], weight["unit"]),
                   datetime.fromisoformat(body["effective_time_frame"]["date_time"]), None)

    def ingest(self, topic: str, payload: bytes | bytearray) -> None:
        """Decode one message and insert its good readings, one row at a time."""
        received = datetime.now(UTC)
        try:
            doc = json.loads(payload)
            rows = list(self.rows(topic, doc))
        except (ValueError, KeyError, TypeError):
            self.rejected += 1
            return
        for device_id, metric, value, unit, observed, seq in rows:
            conv = self.units.get((metric, unit))
            patient = self.patients.get(device_id)
            if conv is None or patient is None or not isinstance(value, int | float):
                self.rejected += 1
                continue
            factor, offset, canonical = conv
            value = value * factor + offset
            low, high = self.ranges[metric]
            if not low <= value <= high:
                self.rejected += 1
                continue
            self.conn.execute(_INSERT, [patient, device_id, metric, value, canonical, observed,
                                        received, seq])
            self.stored += 1


def drain_naive(port: int, client_id: str, db: str, patients: dict[str, str], expected: int,
                timeout_s: float, protocol: str = "5") -> DrainResult:
    """Drain ``expected`` queued messages through :class:`NaiveIngest` on paho's thread."""
    conn = duckdb.connect(db)
    sink = NaiveIngest(conn, patients)
    count = 0
    watch: Stopwatch | None = None

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        nonlocal count
        sink.ingest(msg.topic, msg.payload)
        count += 1
        if count == expected and watch is not None:
            watch.stop()
            client.disconnect()

    watch = Stopwatch()
    client = connect_client(port, client_id, clean_start=False, session_expiry_s=60,
                            receive_maximum=RECEIVE_MAXIMUM, protocol=protocol)
    client.on_message = on_message
    timer = threading.Timer(timeout_s, client.disconnect)
    timer.start()
    client.loop_forever()
    timer.cancel()
    seconds, cpu = watch.seconds()
    conn.close()
    return DrainResult("naive (json + 1-row INSERT)", count, sink.stored, seconds, cpu,
                       watch.stopped, peak_rss_bytes(), {"rejected": sink.rejected})
