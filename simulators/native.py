"""Encoders for the simulated devices' native payloads.

Each simulated device kind publishes in its own format on its own topic (see
``docs/payload-formats.md``):

=================  ====================================  ==========================================
kind               format                                native units and time
=================  ====================================  ==========================================
smartwatch         PulseWear JSON (profile)              bpm, %, ms, steps; epoch ms
bedside_monitor    MedSys coded observations (profile)   bpm, br/min, %, mmHg, F or C; RFC 3339
cgm                GlucoFlow EGVs (profile)              mg/dL; epoch seconds
glucose_meter      vitalwire reading JSON                mmol/L; RFC 3339 (UTC)
scale              Open mHealth body-weight data point   lb; RFC 3339 (UTC)
=================  ====================================  ==========================================

Encoders take values in the catalogue's canonical unit, convert them with the catalogue's own
factors and round to the device's precision, as a real device would. Times are truncated to the
device's resolution (milliseconds for the watch, seconds for the CGM).
"""

from __future__ import annotations

import math
import random
import uuid
import zlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import NamedTuple

import orjson

from gateway.formats.router import DEFAULT_ROUTES
from pipeline.catalogue import catalogue

__all__ = [
    "GARBAGE_FAULTS",
    "KINDS",
    "METRICS_BY_KIND",
    "encode",
    "encode_cgm_backfill",
    "encode_garbage",
    "native_unit",
    "topic_for",
]

KINDS: tuple[str, ...] = ("smartwatch", "bedside_monitor", "cgm", "glucose_meter", "scale")

METRICS_BY_KIND: dict[str, tuple[str, ...]] = {
    "smartwatch": ("heart_rate", "spo2", "steps", "hrv_sdnn"),
    "bedside_monitor": (
        "heart_rate",
        "respiratory_rate",
        "spo2",
        "systolic_bp",
        "diastolic_bp",
        "mean_bp",
        "body_temperature",
    ),
    "cgm": ("cgm_glucose",),
    "glucose_meter": ("glucose",),
    "scale": ("body_weight",),
}
"""The catalogue metrics each kind reports."""

_FORMAT_BY_KIND = {
    "smartwatch": "profile:pulsewear-watch",
    "bedside_monitor": "profile:medsys-bedside",
    "cgm": "profile:glucoflow-cgm",
    "glucose_meter": "vitalwire",
    "scale": "openmhealth",
}
_TOPIC_BY_FORMAT = {route.format: route.topic for route in DEFAULT_ROUTES}

# metric -> (payload key or vendor code, UCUM unit, decimals) per kind; the bedside monitor's
# temperature unit depends on the device (see native_unit).
_WATCH = {
    "heart_rate": ("hr_bpm", "/min", 0),
    "spo2": ("spo2_pct", "%", 0),
    "hrv_sdnn": ("hrv_sdnn_ms", "ms", 1),
    "steps": ("steps_total", "{steps}", 0),
}
_BEDSIDE = {
    "heart_rate": ("HR", "/min", 0),
    "respiratory_rate": ("RR", "{breaths}/min", 0),
    "spo2": ("SPO2", "%", 0),
    "systolic_bp": ("NIBP_SYS", "mm[Hg]", 0),
    "diastolic_bp": ("NIBP_DIA", "mm[Hg]", 0),
    "mean_bp": ("NIBP_MEAN", "mm[Hg]", 0),
    "body_temperature": ("TEMP", "Cel", 1),
}
_BEDSIDE_UNIT_LABEL = {
    "/min": "bpm",
    "{breaths}/min": "br/min",
    "%": "%",
    "mm[Hg]": "mmHg",
    "Cel": "C",
    "[degF]": "F",
}
_BEDSIDE_OFFSET = timezone(timedelta(hours=1))
"""The monitors report local time of a hospital at UTC+01:00."""

_SINGLE_UNIT = {"cgm_glucose": "mg/dL", "glucose": "mmol/L", "body_weight": "[lb_av]"}
_SINGLE_DECIMALS = {"cgm_glucose": 0, "glucose": 1, "body_weight": 1}
_SCALE_NAMESPACE = uuid.UUID("5d6b1f0e-8c1a-4c1e-9a57-3f1f5b0f7a11")


def _check_kind(kind: str) -> None:
    if kind not in METRICS_BY_KIND:
        raise ValueError(f"unknown device kind {kind!r} (expected one of {', '.join(KINDS)})")


def native_unit(kind: str, device_id: str, metric: str) -> str:
    """The UCUM unit ``kind`` reports ``metric`` in (a bedside monitor's ``[degF]`` or ``Cel``)."""
    _check_kind(kind)
    if metric not in METRICS_BY_KIND[kind]:
        raise ValueError(f"a {kind} does not report {metric!r}")
    if kind == "smartwatch":
        return _WATCH[metric][1]
    if kind == "bedside_monitor":
        if metric == "body_temperature" and zlib.crc32(device_id.encode()) % 2 == 0:
            return "[degF]"
        return _BEDSIDE[metric][1]
    return _SINGLE_UNIT[metric]


def topic_for(kind: str, device_id: str) -> str:
    """The MQTT topic a device of ``kind`` publishes on."""
    _check_kind(kind)
    if not device_id or any(c in device_id for c in "/+#\0"):
        raise ValueError(f"device id {device_id!r} is not a single MQTT topic level")
    return _TOPIC_BY_FORMAT[_FORMAT_BY_KIND[kind]].format(device_id=device_id)


def _native(metric: str, canonical: float, unit: str, decimals: int) -> float | int:
    """``canonical`` converted to ``unit`` with the catalogue's factors, at device precision."""
    if not math.isfinite(canonical):
        raise ValueError(f"{metric}: value {canonical!r} is not finite")
    spec = catalogue()[metric]
    conv = next(c for c in spec.units if c.unit == unit)
    value = (canonical - conv.offset) / conv.factor
    return round(value) if decimals == 0 else round(value, decimals)


def _rfc3339(ts_us: int, tz: timezone = UTC) -> str:
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ts_us)
    text = dt.astimezone(tz).isoformat()
    return text.replace("+00:00", "Z") if tz is UTC else text


def _check(kind: str, seq: int, values: Mapping[str, float]) -> None:
    if not values:
        raise ValueError(f"a {kind} message needs at least one value")
    unknown = [m for m in values if m not in METRICS_BY_KIND[kind]]
    if unknown:
        raise ValueError(
            f"a {kind} does not report {', '.join(map(repr, unknown))} "
            f"(it reports {', '.join(METRICS_BY_KIND[kind])})"
        )
    if not 0 <= seq < 2**64:
        raise ValueError(f"seq {seq} is outside 0..2**64-1")


def _document(
    kind: str, device_id: str, seq: int, ts_us: int, values: Mapping[str, float]
) -> dict[str, object]:
    """The native JSON document of one message."""
    _check_kind(kind)
    _check(kind, seq, values)
    if kind == "smartwatch":
        vitals: dict[str, float | int] = {}
        activity: dict[str, float | int] = {}
        for metric, v in values.items():
            key, unit, decimals = _WATCH[metric]
            (activity if metric == "steps" else vitals)[key] = _native(metric, v, unit, decimals)
        doc: dict[str, object] = {
            "msg": "telemetry",
            "watch": {"id": device_id, "fw": "3.2.1"},
            "time_ms": ts_us // 1000,
            "counter": seq,
            "vitals": vitals,
        }
        if activity:
            doc["activity"] = activity
        return doc
    if kind == "bedside_monitor":
        observations = []
        for metric, v in values.items():
            code, _, decimals = _BEDSIDE[metric]
            unit = native_unit(kind, device_id, metric)
            observations.append(
                {
                    "code": code,
                    "value": _native(metric, v, unit, decimals),
                    "unit": _BEDSIDE_UNIT_LABEL[unit],
                }
            )
        return {
            "msg_type": "VITALS",
            "monitor": {
                "serial": device_id,
                "bed": f"BED-{zlib.crc32(device_id.encode()) % 40:02d}",
            },
            "time": _rfc3339(ts_us, _BEDSIDE_OFFSET),
            "seq": seq,
            "observations": observations,
        }
    ((metric, v),) = values.items()
    native = _native(metric, v, _SINGLE_UNIT[metric], _SINGLE_DECIMALS[metric])
    if kind == "cgm":
        return _cgm(device_id, [(seq, ts_us, native)])
    if kind == "glucose_meter":
        return {
            "device_id": device_id,
            "metric": "glucose",
            "value": native,
            "unit": "mmol/L",
            "ts": _rfc3339(ts_us),
            "seq": seq,
        }
    return {
        "header": {
            "id": str(uuid.uuid5(_SCALE_NAMESPACE, f"{device_id}/{seq}")),
            "creation_date_time": _rfc3339(ts_us),
            "schema_id": {"namespace": "omh", "name": "body-weight", "version": "2.0"},
            "acquisition_provenance": {"source_name": device_id, "modality": "sensed"},
        },
        "body": {
            "body_weight": {"value": native, "unit": "lb"},
            "effective_time_frame": {"date_time": _rfc3339(ts_us)},
        },
    }


def _cgm(device_id: str, points: Sequence[tuple[int, int, float]]) -> dict[str, object]:
    egvs = []
    for seq, ts_us, mg_dl in points:
        if not 0 <= seq < 2**64 or not math.isfinite(mg_dl):
            raise ValueError(f"bad CGM point seq={seq} value={mg_dl!r}")
        egvs.append({"seq": seq, "t": ts_us // 1_000_000, "mgdl": round(mg_dl), "trend": "flat"})
    return {"sensor_id": device_id, "egvs": egvs}


def encode(
    kind: str, device_id: str, seq: int, ts_us: int, values: Mapping[str, float]
) -> tuple[str, bytes]:
    """One native message of ``kind``: ``(topic, payload)``.

    Args:
        kind: One of :data:`KINDS`.
        device_id: Device id (one topic level); also written into the payload.
        seq: Device sequence number (a per-message counter; the scale's data point id).
        ts_us: Device time, UTC microseconds.
        values: Metric -> value in the catalogue's canonical unit; a subset of
            ``METRICS_BY_KIND[kind]``. A cgm, meter or scale message holds exactly one value.

    Raises:
        ValueError: Unknown kind, a metric the kind does not report, no values, a bad seq.
    """
    if kind in ("cgm", "glucose_meter", "scale") and len(values) > 1:
        raise ValueError(f"a {kind} message holds one value, got {len(values)}")
    doc = _document(kind, device_id, seq, ts_us, values)
    return topic_for(kind, device_id), orjson.dumps(doc)


def encode_cgm_backfill(
    device_id: str, points: Sequence[tuple[int, int, float]]
) -> tuple[str, bytes]:
    """Several ``(seq, ts_us, mg/dL)`` CGM points in one message (backfill after a dropout)."""
    if not points:
        raise ValueError("a backfill message needs at least one point")
    return topic_for("cgm", device_id), orjson.dumps(_cgm(device_id, points))


# --------------------------------------------------------------------------- garbage

GARBAGE_FAULTS: tuple[str, ...] = (
    "broken_json",
    "random_bytes",
    "wrong_type",
    "missing_field",
    "implausible_value",
    "wrong_unit",
)
"""The faults :func:`encode_garbage` chooses from (``wrong_unit`` only where a unit is sent)."""

_Path = tuple[str | int, ...]


class _Targets(NamedTuple):
    """Where :func:`encode_garbage` breaks a kind's document."""

    value: _Path  # the first value
    time: _Path
    unit: _Path | None  # None when the payload carries no unit
    absurd: float  # an implausible value in the native unit


_TARGETS: dict[str, _Targets] = {
    "smartwatch": _Targets(("vitals", "hr_bpm"), ("time_ms",), None, 999),
    "bedside_monitor": _Targets(
        ("observations", 0, "value"), ("time",), ("observations", 0, "unit"), 999
    ),
    "cgm": _Targets(("egvs", 0, "mgdl"), ("egvs", 0, "t"), None, 2000),
    "glucose_meter": _Targets(("value",), ("ts",), ("unit",), 99.9),
    "scale": _Targets(
        ("body", "body_weight", "value"),
        ("body", "effective_time_frame"),
        ("body", "body_weight", "unit"),
        2000,
    ),
}
_WRONG_UNITS = ("K", "furlong", "mg/mL", "stone")

_TYPICAL: dict[str, dict[str, tuple[float, float]]] = {
    "smartwatch": {
        "heart_rate": (55, 110),
        "spo2": (94, 99),
        "steps": (0, 15000),
        "hrv_sdnn": (20, 90),
    },
    "bedside_monitor": {
        "heart_rate": (55, 110),
        "respiratory_rate": (10, 22),
        "spo2": (92, 99),
        "systolic_bp": (100, 150),
        "diastolic_bp": (60, 90),
        "mean_bp": (75, 105),
        "body_temperature": (36.0, 38.5),
    },
    "cgm": {"cgm_glucose": (70, 200)},
    "glucose_meter": {"glucose": (70, 200)},
    "scale": {"body_weight": (50, 110)},
}


def _parent(doc: object, path: _Path) -> tuple[dict[str, object], str]:
    """The dict holding ``path``'s last key, and that key."""
    for step in path[:-1]:
        doc = doc[step]  # type: ignore[index]
    assert isinstance(doc, dict) and isinstance(path[-1], str)
    return doc, path[-1]


def encode_garbage(kind: str, device_id: str, rng: random.Random) -> tuple[str, bytes]:
    """A malformed or implausible message on the device's topic.

    One fault from :data:`GARBAGE_FAULTS`, chosen by ``rng``: broken JSON, random bytes, a value
    of the wrong type, the time field missing, an implausible value or an unaccepted unit. The
    first four are rejected by the decoder, the last two by the pipeline.
    """
    _check_kind(kind)
    values = {m: rng.uniform(lo, hi) for m, (lo, hi) in _TYPICAL[kind].items()}
    seq = rng.randrange(0, 1_000_000)
    ts_us = 1_740_000_000_000_000 + rng.randrange(0, 10**13)
    doc = _document(kind, device_id, seq, ts_us, values)
    targets = _TARGETS[kind]
    faults = GARBAGE_FAULTS if targets.unit is not None else GARBAGE_FAULTS[:-1]
    fault = rng.choice(faults)
    topic = topic_for(kind, device_id)
    if fault == "broken_json":
        valid = orjson.dumps(doc)
        return topic, valid[: rng.randrange(len(valid))]
    if fault == "random_bytes":
        # A leading 0xFF is never valid UTF-8, so the payload can never parse by chance.
        return topic, b"\xff" + rng.randbytes(rng.randrange(0, 64))
    if fault == "wrong_type":
        parent, key = _parent(doc, targets.value)
        parent[key] = str(parent[key])
    elif fault == "missing_field":
        parent, key = _parent(doc, targets.time)
        del parent[key]
    elif fault == "implausible_value":
        parent, key = _parent(doc, targets.value)
        parent[key] = targets.absurd
    else:
        assert targets.unit is not None
        parent, key = _parent(doc, targets.unit)
        parent[key] = rng.choice(_WRONG_UNITS)
    return topic, orjson.dumps(doc)
