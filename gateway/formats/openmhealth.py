"""Open mHealth data points (format name ``openmhealth``).

A message is a data point ``{"header": {...}, "body": {...}}``, a bare body, or an array of
those. Supported schemas (``omh`` namespace): heart-rate, blood-pressure, oxygen-saturation,
body-temperature, blood-glucose, respiratory-rate, step-count and body-weight. The schema is
taken from ``header.schema_id.name`` when present, else from the body's measure key.

Open mHealth unit spellings are mapped to UCUM (``beats/min`` -> ``/min``, ``mmHg`` ->
``mm[Hg]``, ``C`` -> ``Cel``, ``lb`` -> ``[lb_av]``...); values are never converted. The device
id comes from the topic capture, else ``header.acquisition_provenance.source_name``. Open mHealth
has no sequence numbers, so ``seq`` is ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from gateway.errors import DecodeError
from gateway.formats.base import (
    DecodeContext,
    DecodeResult,
    check_time,
    describe,
    json_items,
    parse_rfc3339,
    require_number,
)
from gateway.records import RawReading, Rejection

__all__ = [
    "DEFAULT_TOPIC",
    "FORMAT",
    "SCHEMAS",
    "UNIT_TO_UCUM",
    "decode_openmhealth",
]

FORMAT = "openmhealth"
DEFAULT_TOPIC = "openmhealth/v1/devices/{device_id}"

UNIT_TO_UCUM: dict[str, str] = {
    "beats/min": "/min",
    "breaths/min": "{breaths}/min",
    "mmHg": "mm[Hg]",
    "kPa": "kPa",
    "%": "%",
    "C": "Cel",
    "F": "[degF]",
    "K": "K",
    "mg/dL": "mg/dL",
    "mmol/L": "mmol/L",
    "steps": "{steps}",
    "kg": "kg",
    "g": "g",
    "lb": "[lb_av]",
    "oz": "[oz_av]",
}
"""Open mHealth unit spelling -> UCUM. Spellings not listed pass through unchanged."""

_DURATION_US: dict[str, int] = {
    "ms": 1_000,
    "sec": 1_000_000,
    "min": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
    "wk": 604_800_000_000,
}

_GLUCOSE_BY_SPECIMEN: dict[str, str] = {
    "capillary blood": "glucose",
    "interstitial fluid": "cgm_glucose",
}

Value = tuple[str, float, str]
"""One extracted ``(metric, value, unit)``."""
Extractor = Callable[[dict[str, object], str], list[Value | DecodeError]]
"""Body and its JSON path -> one value, or the error that value hit, per measure in the body."""


def _missing(field: str) -> DecodeError:
    return DecodeError("missing_field", f"{field}: required field is missing", field)


def _unit_value(body: dict[str, object], key: str, at: str) -> tuple[float, str]:
    """The ``{"value", "unit"}`` object under ``body[key]``, unit mapped to UCUM."""
    field = f"{at}.{key}"
    if key not in body:
        raise _missing(field)
    uv = body[key]
    if type(uv) is not dict:
        raise DecodeError(
            "bad_value", f"{field}: expected a unit-value object, got {describe(uv)}", field
        )
    if "value" not in uv:
        raise _missing(f"{field}.value")
    value = require_number(uv["value"], f"{field}.value")
    if "unit" not in uv:
        raise _missing(f"{field}.unit")
    unit = uv["unit"]
    if type(unit) is not str or not unit:
        raise DecodeError(
            "bad_value",
            f"{field}.unit: expected a unit string, got {describe(unit)}",
            f"{field}.unit",
        )
    return value, UNIT_TO_UCUM.get(unit, unit)


def _single(metric: str, key: str) -> Extractor:
    """Extractor for a schema whose body carries one required unit-value under ``key``."""

    def extract(body: dict[str, object], at: str) -> list[Value | DecodeError]:
        value, unit = _unit_value(body, key, at)
        return [(metric, value, unit)]

    return extract


def _blood_pressure(body: dict[str, object], at: str) -> list[Value | DecodeError]:
    """Systolic and diastolic, each optional but not both absent; each fails on its own."""
    out: list[Value | DecodeError] = []
    for metric, key in _BP_PARTS:
        if key in body:
            try:
                out.append((metric, *_unit_value(body, key, at)))
            except DecodeError as exc:
                out.append(exc)
    if not out:
        field = f"{at}.systolic_blood_pressure"
        raise DecodeError(
            "missing_field",
            f"{field}: neither systolic_blood_pressure nor diastolic_blood_pressure is present",
            field,
        )
    return out


_BP_PARTS = (
    ("systolic_bp", "systolic_blood_pressure"),
    ("diastolic_bp", "diastolic_blood_pressure"),
)


def _blood_glucose(body: dict[str, object], at: str) -> list[Value | DecodeError]:
    specimen = body.get("specimen_source")
    if specimen is None:
        metric: str | None = "glucose"
    else:
        metric = _GLUCOSE_BY_SPECIMEN.get(specimen) if type(specimen) is str else None
    if metric is None:
        field = f"{at}.specimen_source"
        raise DecodeError(
            "bad_value",
            f"{field}: expected 'capillary blood' or 'interstitial fluid', "
            f"got {describe(specimen)}",
            field,
        )
    value, unit = _unit_value(body, "blood_glucose", at)
    return [(metric, value, unit)]


def _step_count(body: dict[str, object], at: str) -> list[Value | DecodeError]:
    """``step_count`` as a bare number (schema 1.0) or a unit-value (2.0)."""
    if "step_count" not in body:
        raise _missing(f"{at}.step_count")
    raw = body["step_count"]
    if type(raw) is dict:
        value, unit = _unit_value(body, "step_count", at)
        return [("steps", value, unit)]
    return [("steps", require_number(raw, f"{at}.step_count"), "{steps}")]


SCHEMAS: dict[str, Extractor] = {
    "heart-rate": _single("heart_rate", "heart_rate"),
    "blood-pressure": _blood_pressure,
    "oxygen-saturation": _single("spo2", "oxygen_saturation"),
    "body-temperature": _single("body_temperature", "body_temperature"),
    "blood-glucose": _blood_glucose,
    "respiratory-rate": _single("respiratory_rate", "respiratory_rate"),
    "step-count": _step_count,
    "body-weight": _single("body_weight", "body_weight"),
}
"""Supported schema name -> its extractor."""

_SCHEMA_BY_KEY: dict[str, str] = {
    "heart_rate": "heart-rate",
    "systolic_blood_pressure": "blood-pressure",
    "diastolic_blood_pressure": "blood-pressure",
    "oxygen_saturation": "oxygen-saturation",
    "body_temperature": "body-temperature",
    "blood_glucose": "blood-glucose",
    "respiratory_rate": "respiratory-rate",
    "step_count": "step-count",
    "body_weight": "body-weight",
}


def _get_dict(parent: dict[str, object], key: str, at: str) -> dict[str, object] | None:
    """``parent[key]`` when it is an object, ``None`` when absent or null, else ``bad_value``."""
    value = parent.get(key)
    if value is None or type(value) is dict:
        return value
    field = f"{at}.{key}"
    raise DecodeError("bad_value", f"{field}: expected an object, got {describe(value)}", field)


def _time_string(parent: dict[str, object], key: str, at: str) -> int | None:
    """RFC 3339 ``parent[key]`` as UTC microseconds; ``None`` when absent."""
    value = parent.get(key)
    if value is None:
        return None
    field = f"{at}.{key}"
    if type(value) is not str:
        raise DecodeError(
            "bad_timestamp", f"{field}: expected an RFC 3339 string, got {describe(value)}", field
        )
    return parse_rfc3339(value, field)


def _duration_us(interval: dict[str, object], at: str) -> int:
    duration = _get_dict(interval, "duration", at)
    if duration is None:
        raise DecodeError(
            "missing_field", f"{at}: needs end_date_time, or start_date_time and duration", at
        )
    field = f"{at}.duration"
    value = require_number(duration.get("value"), f"{field}.value")
    unit = duration.get("unit")
    scale = _DURATION_US.get(unit) if type(unit) is str else None
    if scale is None:
        raise DecodeError(
            "bad_value",
            f"{field}.unit: expected one of {', '.join(_DURATION_US)}, got {describe(unit)}",
            f"{field}.unit",
        )
    us = value * scale
    if not math.isfinite(us):  # a finite float so large that scaling overflows
        raise DecodeError(
            "bad_timestamp", f"{at}: a {value!r} {unit} duration ends outside years 1-9999", at
        )
    return round(us)


def _effective_time(body: dict[str, object], at: str) -> int:
    """``effective_time_frame.date_time``, else the end of its ``time_interval``."""
    frame_at = f"{at}.effective_time_frame"
    frame = _get_dict(body, "effective_time_frame", at)
    if frame is None:
        raise _missing(frame_at)
    instant = _time_string(frame, "date_time", frame_at)
    if instant is not None:
        return instant
    interval = _get_dict(frame, "time_interval", frame_at)
    if interval is None:
        raise DecodeError(
            "missing_field", f"{frame_at}: needs date_time or time_interval", frame_at
        )
    interval_at = f"{frame_at}.time_interval"
    end = _time_string(interval, "end_date_time", interval_at)
    if end is not None:
        return end
    start = _time_string(interval, "start_date_time", interval_at)
    if start is None:
        raise DecodeError(
            "missing_field",
            f"{interval_at}: needs end_date_time, or start_date_time and duration",
            interval_at,
        )
    return check_time(start + _duration_us(interval, interval_at), interval_at)


def _schema(header: dict[str, object] | None, body: dict[str, object], at: str) -> Extractor:
    """The extractor named by ``header.schema_id.name``, else by the body's measure key."""
    schema_id = _get_dict(header, "schema_id", f"{at}.header") if header is not None else None
    name = schema_id.get("name") if schema_id is not None else None
    if name is None:
        for key in body:
            found = _SCHEMA_BY_KEY.get(key)
            if found is not None:
                return SCHEMAS[found]
        raise DecodeError(
            "bad_shape",
            f"{at}: no supported Open mHealth measure "
            f"(expected one of {', '.join(_SCHEMA_BY_KEY)})",
            at,
        )
    extractor = SCHEMAS.get(name) if type(name) is str else None
    if extractor is None:
        field = f"{at}.header.schema_id.name"
        raise DecodeError(
            "bad_value",
            f"{field}: unsupported schema {describe(name)} (supported: {', '.join(SCHEMAS)})",
            field,
        )
    return extractor


def _source_name(item: object) -> str:
    """``header.acquisition_provenance.source_name`` when it is a non-empty string, else ``""``."""
    header = item.get("header") if type(item) is dict else None
    provenance = header.get("acquisition_provenance") if type(header) is dict else None
    name = provenance.get("source_name") if type(provenance) is dict else None
    return name if type(name) is str else ""


def _data_point(item: object, at: str, ctx: DecodeContext) -> DecodeResult:
    """Readings of one data point or body; raises when nothing in it is usable."""
    if type(item) is not dict:
        raise DecodeError(
            "bad_shape", f"{at}: expected a data point or body object, got {describe(item)}", at
        )
    header: dict[str, object] | None = None
    body: dict[str, object] = item
    body_at = at
    if "body" in item:
        header = _get_dict(item, "header", at)
        body_at = f"{at}.body"
        found = _get_dict(item, "body", at)
        if found is None:
            raise _missing(body_at)
        body = found
    device_id = ctx.device_id or _source_name(item)
    if not device_id:
        field = f"{at}.header.acquisition_provenance.source_name"
        raise DecodeError(
            "missing_field", f"{field}: no device id in the topic or the data point", field
        )
    extract = _schema(header, body, at)
    observed_at_us = _effective_time(body, body_at)
    result = DecodeResult([], [])
    for value in extract(body, body_at):
        if isinstance(value, DecodeError):
            result.rejections.append(_rejection(value, device_id))
        else:
            result.readings.append(RawReading(device_id, *value, observed_at_us, None))
    return result


def _rejection(exc: DecodeError, device_id: str) -> Rejection:
    return Rejection(exc.reason_code, exc.field, str(exc), device_id)


def decode_openmhealth(payload: bytes, ctx: DecodeContext) -> DecodeResult:
    """Decode one Open mHealth message.

    Raises:
        DecodeError: ``malformed_json`` when the payload is not JSON, ``bad_shape`` when it is
            neither an object nor an array.
    """
    items, single = json_items(payload, "a data point, a body or an array of them")
    result = DecodeResult([], [])
    for i, item in enumerate(items):
        try:
            one = _data_point(item, "$" if single else f"$[{i}]", ctx)
        except DecodeError as exc:
            result.rejections.append(_rejection(exc, ctx.device_id or _source_name(item)))
        else:
            result.readings.extend(one.readings)
            result.rejections.extend(one.rejections)
    return result
