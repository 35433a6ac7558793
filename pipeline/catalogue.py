"""The metric catalogue: one table of metrics, units, codes and plausible ranges.

Loaded once from ``pipeline/metrics.toml`` and shared by every stage. The catalogue is
validated on load; a bad file fails with a message naming the metric and key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.errors import ConfigError

__all__ = ["Catalogue", "MetricSpec", "UnitConversion", "catalogue", "load_catalogue"]

DEFAULT_PATH = Path(__file__).with_name("metrics.toml")


@dataclass(frozen=True, slots=True)
class UnitConversion:
    """``canonical = value * factor + offset``."""

    unit: str
    factor: float
    offset: float


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric of the catalogue.

    Attributes:
        name: Stable identifier (``heart_rate``).
        label: Human name.
        canonical_unit: UCUM unit every stored value is in.
        loinc: LOINC codes for the canonical (mass) unit, primary first.
        loinc_molar: LOINC codes for molar units, where the property differs (glucose).
        mdc_code: IEEE 11073-10101 code in decimal (0 when none is assigned).
        mdc_ref: MDC reference id.
        plausible_low: Lowest plausible canonical value (inclusive).
        plausible_high: Highest plausible canonical value (inclusive).
        category: FHIR Observation category.
        fhir_profile: R4 vital-signs profile name, empty when none applies.
        units: Accepted units and their conversion to the canonical unit.
    """

    name: str
    label: str
    canonical_unit: str
    loinc: tuple[str, ...]
    loinc_molar: tuple[str, ...]
    mdc_code: int
    mdc_ref: str
    plausible_low: float
    plausible_high: float
    category: str
    fhir_profile: str
    units: tuple[UnitConversion, ...]

    def accepted_units(self) -> tuple[str, ...]:
        """The units a reading of this metric may arrive in."""
        return tuple(u.unit for u in self.units)

    def to_canonical(self, value: float, unit: str) -> float:
        """Convert one value (scalar helper for tools and tests; stages use the frame)."""
        for conv in self.units:
            if conv.unit == unit:
                return value * conv.factor + conv.offset
        raise KeyError(f"{unit!r} is not an accepted unit for {self.name}")


@dataclass(frozen=True, slots=True)
class Catalogue:
    """All metrics, with the frames the vectorized stages join against."""

    metrics: tuple[MetricSpec, ...]
    source: Path

    @property
    def names(self) -> tuple[str, ...]:
        """Metric identifiers in catalogue order (the order of the ``metric`` Enum)."""
        return tuple(m.name for m in self.metrics)

    def __getitem__(self, name: str) -> MetricSpec:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(self.names)}")

    def __contains__(self, name: object) -> bool:
        return any(m.name == name for m in self.metrics)

    @property
    def metric_dtype(self) -> pl.Enum:
        """The polars Enum of metric identifiers used by the reading schema."""
        return pl.Enum(list(self.names))

    def unit_table(self) -> pl.DataFrame:
        """One row per (metric, accepted unit): factor and offset to the canonical unit."""
        rows = [
            (m.name, c.unit, c.factor, c.offset, m.canonical_unit)
            for m in self.metrics
            for c in m.units
        ]
        return pl.DataFrame(
            rows,
            schema={
                "metric": pl.Utf8,
                "unit": pl.Utf8,
                "factor": pl.Float64,
                "offset": pl.Float64,
                "canonical_unit": pl.Utf8,
            },
            orient="row",
        )

    def range_table(self) -> pl.DataFrame:
        """One row per metric: the plausible range in the canonical unit."""
        return pl.DataFrame(
            {
                "metric": [m.name for m in self.metrics],
                "plausible_low": [m.plausible_low for m in self.metrics],
                "plausible_high": [m.plausible_high for m in self.metrics],
                "canonical_unit": [m.canonical_unit for m in self.metrics],
            }
        )


def _req(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in table:
        raise ConfigError(f"{where}: missing key {key!r}")
    value = table[key]
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: key {key!r} must be {kind}, got {type(value).__name__}")
    return value


def _parse_metric(name: str, table: dict[str, Any], path: Path) -> MetricSpec:
    where = f"{path}: [metric.{name}]"
    low, high = _req(table, "plausible", list, where)
    if not float(low) < float(high):
        raise ConfigError(f"{where}: plausible low {low} must be below high {high}")
    canonical = _req(table, "canonical_unit", str, where)
    units_raw = _req(table, "units", dict, where)
    if canonical not in units_raw:
        raise ConfigError(f"{where}: units must include the canonical unit {canonical!r}")
    units = []
    for unit, pair in units_raw.items():
        if not (isinstance(pair, list) and len(pair) == 2):
            raise ConfigError(f"{where}: units.{unit!r} must be [factor, offset]")
        units.append(UnitConversion(unit, float(pair[0]), float(pair[1])))
    mdc = table.get("mdc", [0, ""])
    return MetricSpec(
        name=name,
        label=_req(table, "label", str, where),
        canonical_unit=canonical,
        loinc=tuple(_req(table, "loinc", list, where)),
        loinc_molar=tuple(table.get("loinc_molar", [])),
        mdc_code=int(mdc[0]),
        mdc_ref=str(mdc[1]),
        plausible_low=float(low),
        plausible_high=float(high),
        category=_req(table, "category", str, where),
        fhir_profile=str(table.get("fhir_profile", "")),
        units=tuple(units),
    )


def load_catalogue(path: Path = DEFAULT_PATH) -> Catalogue:
    """Read and validate a catalogue file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read metric catalogue: {exc}") from exc
    metrics = data.get("metric")
    if not isinstance(metrics, dict) or not metrics:
        raise ConfigError(f"{path}: expected [metric.<name>] tables")
    return Catalogue(
        metrics=tuple(_parse_metric(n, t, path) for n, t in metrics.items()),
        source=path,
    )


@cache
def catalogue() -> Catalogue:
    """The shipped catalogue, loaded once per process."""
    return load_catalogue()
