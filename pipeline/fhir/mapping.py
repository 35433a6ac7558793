"""Readings -> FHIR R4 Observations: a pure function, vectorized where it counts.

The frame is prepared in polars in one pass (catalogue join, unit check, precision clean-up,
effective time text, care-plan limits and interpretation); then each row (or BP group) becomes
one Observation dict. Nothing here does I/O.

Per Observation (details and sources in ``docs/fhir.md``):

- ``code``: the catalogue's LOINC coding(s) first, then the MDC coding; ``category`` the
  catalogue category plus PHD's ``phd``; vital signs claim ``vitalsigns`` and their specific
  profile in ``meta.profile``, other metrics claim none.
- ``subject`` ``Patient/<patient_id>``; ``effectiveDateTime`` the device time in UTC with an
  explicit ``+00:00`` offset; ``valueQuantity`` in the canonical UCUM unit, or
  ``dataAbsentReason`` when the device sent a special value.
- Systolic, diastolic and mean pressure of one device at one time become one 85354-9 panel
  with components and no value.
- ``identifier``: a deterministic hash of device, patient, code, device time and duration under
  :attr:`FhirConfig.identifier_system`; the bundle uses it for ``ifNoneExist``.
- ``device`` and the gatewayDevice extension point at ``urn:uuid`` Device entries the bundle
  adds (:mod:`pipeline.fhir.bundle`).
- ``interpretation`` and ``referenceRange`` from the :class:`ReferenceRangeProvider`, citing
  the care-plan version; the device's measurement status as a PoCD interpretation; simulated
  readings carry the ``HTEST`` security label.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from pipeline.catalogue import Catalogue, catalogue
from pipeline.fhir import codes
from pipeline.fhir.config import FhirConfig
from pipeline.fhir.ranges import NoReferenceRanges, ReferenceRangeProvider, interpretation_expr
from pipeline.readings import Quality

__all__ = [
    "IDENTIFIER_VERSION",
    "URN_NAMESPACE",
    "MappedObservation",
    "MappingFailure",
    "MappingResult",
    "device_urn",
    "observation_identifier",
    "to_fhir_observations",
]

IDENTIFIER_VERSION = "v1"
"""Part of every identifier hash; bump only with a migration plan (it changes every id)."""

_QUESTIONABLE = int(Quality.QUESTIONABLE)
_CALIBRATING = int(Quality.CALIBRATING)
URN_NAMESPACE = uuid.UUID("6c1f3f2e-4b7a-5d0e-9a51-7f1c2b9e4d10")


@dataclass(frozen=True, slots=True)
class MappedObservation:
    """One Observation ready for a Bundle.

    Attributes:
        outbox_ids: The input rows (outbox ids) it was made from.
        identifier: Value of its identifier under the configured system.
        device_id: The sensor device.
        resource: The Observation as JSON-ready dict.
    """

    outbox_ids: tuple[int, ...]
    identifier: str
    device_id: str
    resource: dict[str, Any]


@dataclass(frozen=True, slots=True)
class MappingFailure:
    """Input rows that could not be mapped, with a stable code and a readable reason."""

    outbox_ids: tuple[int, ...]
    reason_code: str
    reason: str


@dataclass(frozen=True, slots=True)
class MappingResult:
    """Observations and failures of one call."""

    observations: list[MappedObservation] = field(default_factory=list)
    failures: list[MappingFailure] = field(default_factory=list)


def observation_identifier(
    device_id: str, patient_id: str, code: str, observed_us: int, duration_us: int = 0
) -> str:
    """The deterministic identifier value (PHD: device-patient-type-timestamp-duration)."""
    key = f"{IDENTIFIER_VERSION}|{device_id}|{patient_id}|{code}|{observed_us}|{duration_us}"
    return hashlib.sha256(key.encode()).hexdigest()[:40]


@functools.lru_cache(maxsize=65536)
def device_urn(system: str, device_id: str) -> str:
    """The ``urn:uuid`` fullUrl of a Device entry (stable for one device)."""
    return f"urn:uuid:{uuid.uuid5(URN_NAMESPACE, f'{system}|{device_id}')}"


def _spec_table(cat: Catalogue) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "metric": [m.name for m in cat.metrics],
            "canonical": [m.canonical_unit for m in cat.metrics],
            "loinc": [list(m.loinc) for m in cat.metrics],
            "mdc": [m.mdc_code for m in cat.metrics],
            "label": [m.label for m in cat.metrics],
            "category": [m.category for m in cat.metrics],
            "profile": [m.fhir_profile for m in cat.metrics],
        },
        schema_overrides={"loinc": pl.List(pl.Utf8), "mdc": pl.Int64},
    )


def _prepare(
    readings: pl.DataFrame, cat: Catalogue, ranges: ReferenceRangeProvider
) -> pl.DataFrame:
    """One row per reading with everything the dict builder needs (or a ``_fail`` reason)."""
    frame = readings.with_columns(
        pl.col("metric").cast(pl.Utf8),
        pl.col("source").cast(pl.Utf8),
        pl.col("outbox_id").cast(pl.Int64)
        if "outbox_id" in readings.columns
        else pl.int_range(pl.len(), dtype=pl.Int64).alias("outbox_id"),
    )
    units = cat.unit_table().select("metric", "unit", "factor", "offset")
    frame = frame.join(_spec_table(cat), on="metric", how="left", maintain_order="left").join(
        units, on=["metric", "unit"], how="left", maintain_order="left"
    )
    value = (pl.col("value") * pl.col("factor") + pl.col("offset")).round_sig_figs(12)
    frame = frame.with_columns(value=value, unit=pl.col("canonical"), unit_in=pl.col("unit"))
    fail = (
        pl.when(pl.col("canonical").is_null())
        .then(pl.format("metric: '{}' is not in the metric catalogue", pl.col("metric")))
        .when((pl.col("loinc").list.len() == 0) & (pl.col("mdc") == 0))
        .then(pl.format("metric: no LOINC or MDC code for '{}' in the catalogue", pl.col("metric")))
        .when(pl.col("factor").is_null())
        .then(
            pl.format(
                "unit: '{}' cannot be converted to {} ({})",
                pl.col("unit_in"),
                pl.col("canonical"),
                pl.col("metric"),
            )
        )
        .when(pl.col("patient_id").is_null() | pl.col("device_id").is_null())
        .then(pl.lit("patient_id/device_id: missing"))
        .when(pl.col("observed_at").is_null())
        .then(pl.lit("observed_at: missing"))
    )
    code = (
        pl.when(pl.col("canonical").is_null())
        .then(pl.lit("unknown_metric"))
        .when((pl.col("loinc").list.len() == 0) & (pl.col("mdc") == 0))
        .then(pl.lit("no_code"))
        .when(pl.col("factor").is_null())
        .then(pl.lit("unit_not_convertible"))
        .otherwise(pl.lit("incomplete_reading"))
    )
    frame = frame.with_columns(_fail=fail, _fail_code=code)
    limits = ranges.reference_ranges(frame.select("patient_id", "metric", "observed_at"))
    frame = pl.concat([frame, limits], how="horizontal")
    return frame.with_columns(
        interp=interpretation_expr(pl.col("value")),
        effective=pl.col("observed_at").dt.to_string("%Y-%m-%dT%H:%M:%S%.f") + "+00:00",
        observed_us=pl.col("observed_at").dt.epoch("us"),
    )


# -- dict builders -------------------------------------------------------------------------------


def _code(loinc: Iterable[str], mdc: int, label: str) -> dict[str, Any]:
    coding: list[dict[str, Any]] = [{"system": codes.LOINC, "code": c} for c in loinc]
    if mdc:
        coding.append({"system": codes.MDC, "code": str(mdc)})
    return {"coding": coding, "text": label}


def _quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": codes.UCUM, "code": unit}


def _absent(code: str) -> dict[str, Any]:
    return {"coding": [{"system": codes.DATA_ABSENT, "code": code}]}


def _interp(code: str | None, quality: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if code:
        out.append({"coding": [{"system": codes.INTERPRETATION, "code": code}]})
    if quality & _QUESTIONABLE:
        out.append({"coding": [{"system": codes.MEASUREMENT_STATUS, "code": "questionable"}]})
    if quality & _CALIBRATING:
        out.append(
            {"coding": [{"system": codes.MEASUREMENT_STATUS, "code": "calibration-ongoing"}]}
        )
    return out


def _ranges(row: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    version = row["plan_version"] or "unversioned"
    unit = row["unit"]
    for low, high, meaning, what in (
        (row["low"], row["high"], "normal", "alert limits"),
        (row["critical_low"], row["critical_high"], "treatment", "critical limits"),
    ):
        if low is None and high is None:
            continue
        rr: dict[str, Any] = {}
        if low is not None:
            rr["low"] = _quantity(low, unit)
        if high is not None:
            rr["high"] = _quantity(high, unit)
        rr["type"] = {"coding": [{"system": codes.REFERENCE_RANGE_MEANING, "code": meaning}]}
        rr["text"] = f"patient-specific {what}, care plan version {version}"
        out.append(rr)
    return out


def _set_value(target: dict[str, Any], row: dict[str, Any]) -> None:
    if row["value"] is None:
        target["dataAbsentReason"] = _absent("error")
        return
    target["valueQuantity"] = _quantity(row["value"], row["unit"])
    interp = _interp(row["interp"], row["quality"])
    if interp:
        target["interpretation"] = interp
    rr = _ranges(row)
    if rr:
        target["referenceRange"] = rr


def _base(
    row: dict[str, Any],
    config: FhirConfig,
    code: dict[str, Any],
    ident: str,
    category: str,
    profile: str,
    source: str,
) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if profile:
        meta["profile"] = [codes.VITALSIGNS_PROFILE, codes.profile_url(profile)]
    if source == "sim":
        meta["security"] = [codes.HTEST]
    obs: dict[str, Any] = {"resourceType": "Observation"}
    if meta:
        obs["meta"] = meta
    obs["extension"] = [
        {
            "url": codes.GATEWAY_EXT,
            "valueReference": {"reference": device_urn(config.device_system, config.gateway_id)},
        }
    ]
    obs["identifier"] = [{"system": config.identifier_system, "value": ident}]
    obs["status"] = "final"
    obs["category"] = [
        {"coding": [{"system": codes.CATEGORY, "code": category}]},
        {"coding": [{"system": codes.PHD_CATEGORY, "code": "phd"}]},
    ]
    obs["code"] = code
    obs["subject"] = {"reference": f"Patient/{row['patient_id']}"}
    obs["effectiveDateTime"] = row["effective"]
    return obs


def _single(row: dict[str, Any], config: FhirConfig) -> MappedObservation:
    loinc = row["loinc"] or []
    primary = loinc[0] if loinc else f"mdc-{row['mdc']}"
    ident = observation_identifier(row["device_id"], row["patient_id"], primary, row["observed_us"])
    obs = _base(
        row,
        config,
        _code(loinc, row["mdc"], row["label"]),
        ident,
        row["category"],
        row["profile"],
        row["source"],
    )
    _set_value(obs, row)
    obs["device"] = {"reference": device_urn(config.device_system, row["device_id"])}
    return MappedObservation((row["outbox_id"],), ident, row["device_id"], obs)


def _panel_interpretation(components: list[dict[str, Any]]) -> str | None:
    found = [c["interp"] for c in components if c["interp"] is not None]
    if not found:
        return None
    abnormal = {c for c in found if c != "N"}
    if not abnormal:
        return "N"
    return abnormal.pop() if len(abnormal) == 1 else "A"


def _panel(rows: list[dict[str, Any]], config: FhirConfig, cat: Catalogue) -> MappedObservation:
    by_metric = {r["metric"]: r for r in rows}
    first = rows[0]
    quality = 0
    for r in rows:
        quality |= r["quality"]
    ident = observation_identifier(
        first["device_id"], first["patient_id"], codes.BP_PANEL_LOINC, first["observed_us"]
    )
    panel_code = _code([codes.BP_PANEL_LOINC], codes.BP_PANEL_MDC, "Blood pressure panel")
    obs = _base(first, config, panel_code, ident, "vital-signs", "bp", first["source"])
    components = []
    for metric in codes.BP_METRICS:
        spec = cat[metric]
        row = by_metric.get(metric)
        if row is None and metric == "mean_bp":
            continue
        comp: dict[str, Any] = {"code": _code(spec.loinc, spec.mdc_code, spec.label)}
        if row is None:
            comp["dataAbsentReason"] = _absent("unknown")
        else:
            _set_value(comp, row)
        components.append(comp)
    interp = _panel_interpretation(rows)
    if interp is not None:
        obs["interpretation"] = [{"coding": [{"system": codes.INTERPRETATION, "code": interp}]}]
    extra = _interp(None, quality)
    if extra:
        obs.setdefault("interpretation", []).extend(extra)
    obs["component"] = components
    obs["device"] = {"reference": device_urn(config.device_system, first["device_id"])}
    ids = tuple(sorted(r["outbox_id"] for r in rows))
    return MappedObservation(ids, ident, first["device_id"], obs)


def to_fhir_observations(
    readings: pl.DataFrame,
    config: FhirConfig,
    ranges: ReferenceRangeProvider | None = None,
    cat: Catalogue | None = None,
) -> MappingResult:
    """Map readings to Observations.

    Args:
        readings: Rows with the stored reading columns (``patient_id``, ``device_id``,
            ``source``, ``metric``, ``value``, ``unit``, ``observed_at``, ``received_at``,
            ``seq``, ``quality``) and optionally ``outbox_id``; ``ReadingBatch.readings``
            works as is.
        config: Identifier systems and gateway id.
        ranges: Care-plan limits (none by default).
        cat: Metric catalogue (the shipped one by default).

    Returns:
        Observations (BP readings grouped into panels) and the rows that could not be mapped.
    """
    cat = cat or catalogue()
    if readings.height == 0:
        return MappingResult()
    frame = _prepare(readings, cat, ranges or NoReferenceRanges())
    result = MappingResult()
    bad = frame.filter(pl.col("_fail").is_not_null())
    for oid, reason_code, reason in bad.select("outbox_id", "_fail_code", "_fail").iter_rows():
        result.failures.append(MappingFailure((oid,), reason_code, reason))
    good = frame.filter(pl.col("_fail").is_null())
    is_bp = pl.col("metric").is_in(codes.BP_METRICS)
    for row in good.filter(~is_bp).iter_rows(named=True):
        result.observations.append(_single(row, config))
    bp = good.filter(is_bp)
    if bp.height:
        groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
        for row in bp.iter_rows(named=True):
            key = (row["patient_id"], row["device_id"], row["observed_us"])
            groups.setdefault(key, []).append(row)
        for rows in groups.values():
            result.observations.append(_panel(rows, config, cat))
    return result
