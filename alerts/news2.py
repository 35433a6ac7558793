"""NEWS2 (Royal College of Physicians, 2017): sub-scores, aggregate and clinical risk band.

One implementation, vectorized: :func:`score_frame` adds the sub-scores to a frame of
observations (one row per patient); :func:`score_observation` scores one observation through
the same expressions (``vitalwire news2``).

Cut points are upper-inclusive on the canonical value (RR 8 scores 3, 8.5 scores 1): the chart's
integer bands, with values between two bands going to the next band up. A tolerance of
:data:`EPSILON` absorbs unit-conversion noise (38.000000001 °C scores as 38.0). A missing or
stale parameter has a null sub-score: the aggregate is then a lower bound, and ``complete`` is
false (a stale parameter never silently scores 0).

Risk band: aggregate >= 7 ``high``; 5-6 ``medium``; otherwise ``low-medium`` when any single
parameter scores 3; else ``low``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import polars as pl

from alerts.errors import AlertError
from pipeline.catalogue import catalogue

__all__ = [
    "ACVPU",
    "BANDS",
    "EPSILON",
    "INPUT_KEYS",
    "METRIC_PARAMETERS",
    "SUBSCORE_KEYS",
    "News2InputError",
    "band_of",
    "parse_observation",
    "score_frame",
    "score_observation",
]

EPSILON = 1e-9
BANDS = ("low", "low-medium", "medium", "high")
"""Risk bands; the index is the band's ordinal (used as the alert signal)."""
ACVPU = ("A", "C", "V", "P", "U")
INPUT_KEYS = ("respiration_rate", "spo2", "spo2_scale", "supplemental_oxygen", "systolic_bp",
              "pulse", "consciousness", "temperature_c")  # fmt: skip
SUBSCORE_KEYS = ("respiration_rate", "spo2", "air_or_oxygen", "systolic_bp", "pulse",
                 "consciousness", "temperature")  # fmt: skip
METRIC_PARAMETERS: Mapping[str, str] = {
    "respiratory_rate": "respiration_rate",
    "spo2": "spo2",
    "systolic_bp": "systolic_bp",
    "heart_rate": "pulse",
    "body_temperature": "temperature_c",
}
"""Catalogue metric -> NEWS2 input column, for the measured parameters."""

_MEASURED = ("respiration_rate", "spo2", "systolic_bp", "pulse", "temperature_c")


class News2InputError(AlertError):
    """An observation given to ``vitalwire news2`` is invalid (names the key)."""


def _cuts(x: pl.Expr, cuts: tuple[tuple[float, int], ...], above: int) -> pl.Expr:
    """``cuts`` are (upper inclusive limit, score) in ascending order; ``above`` beyond."""
    expr: Any = pl.when(x.is_null()).then(None)
    for limit, score in cuts:
        expr = expr.when(x <= limit + EPSILON).then(score)
    out: pl.Expr = expr.otherwise(above).cast(pl.Int8)
    return out


def _spo2(spo2: pl.Expr, scale: pl.Expr, oxygen: pl.Expr) -> pl.Expr:
    s1 = _cuts(spo2, ((91, 3), (93, 2), (95, 1)), 0)
    low2 = _cuts(spo2, ((83, 3), (85, 2), (87, 1), (92, 0)), 0)
    on_o2 = _cuts(spo2, ((94, 1), (96, 2)), 3)
    s2 = (
        pl.when(spo2.is_null()).then(None)
        .when(spo2 <= 92 + EPSILON).then(low2)
        .when(oxygen).then(on_o2)
        .otherwise(0)
    )  # fmt: skip
    return pl.when(scale == 2).then(s2).otherwise(s1).cast(pl.Int8)


def _expressions() -> tuple[dict[str, pl.Expr], dict[str, pl.Expr], pl.Expr]:
    c = pl.col
    subs = {
        "s_respiration_rate": _cuts(c("respiration_rate"), ((8, 3), (11, 1), (20, 0), (24, 2)), 3),
        "s_spo2": _spo2(c("spo2"), c("spo2_scale"), c("supplemental_oxygen")),
        "s_air_or_oxygen": pl.when(c("supplemental_oxygen")).then(2).otherwise(0).cast(pl.Int8),
        "s_systolic_bp": _cuts(c("systolic_bp"), ((90, 3), (100, 2), (110, 1), (219, 0)), 3),
        "s_pulse": _cuts(c("pulse"), ((40, 3), (50, 1), (90, 0), (110, 1), (130, 2)), 3),
        "s_consciousness": pl.when(c("consciousness") == "A").then(0).otherwise(3).cast(pl.Int8),
        "s_temperature": _cuts(c("temperature_c"), ((35.0, 3), (36.0, 1), (38.0, 0), (39.0, 1)),
                               2),
    }
    names = [f"s_{k}" for k in SUBSCORE_KEYS]
    aggregate = pl.sum_horizontal(*(c(n).fill_null(0).cast(pl.Int32) for n in names))
    any3 = pl.any_horizontal(*((c(n) == 3).fill_null(False) for n in names))
    complete = pl.all_horizontal(*(c(n).is_not_null() for n in names))
    band = (
        pl.when(aggregate >= 7).then(3)
        .when(aggregate >= 5).then(2)
        .when(any3).then(1)
        .otherwise(0)
        .cast(pl.Int8)
    )  # fmt: skip
    totals = {"aggregate": aggregate, "complete": complete, "any_parameter_3": any3, "band": band}
    risk = pl.col("band").replace_strict(list(range(4)), list(BANDS), return_dtype=pl.Utf8)
    return subs, totals, risk


_SUBSCORES, _TOTALS, _RISK = _expressions()


def score_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """Add NEWS2 columns to ``frame``.

    ``frame`` has the :data:`INPUT_KEYS` columns (nullable floats for the measured ones,
    ``spo2_scale`` int, ``supplemental_oxygen`` bool, ``consciousness`` one of :data:`ACVPU`).
    Adds ``s_<subscore>`` (Int8, null when the parameter is missing), ``aggregate`` (sum of the
    known sub-scores), ``complete``, ``any_parameter_3``, ``band`` (ordinal into
    :data:`BANDS`) and ``risk_band``.
    """
    return frame.with_columns(**_SUBSCORES).with_columns(**_TOTALS).with_columns(risk_band=_RISK)


def band_of(aggregate: int, any_parameter_3: bool) -> str:
    """The risk band of an aggregate (scalar helper for messages and tests)."""
    if aggregate >= 7:
        return "high"
    if aggregate >= 5:
        return "medium"
    return "low-medium" if any_parameter_3 else "low"


def _number(obj: Mapping[str, Any], key: str, metric: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        got = "missing" if value is None else repr(value)
        raise News2InputError(f"{key}: expected a number, got {got}")
    spec = catalogue()[metric]
    if not spec.plausible_low <= value <= spec.plausible_high:
        raise News2InputError(
            f"{key}: {value} {spec.canonical_unit} is outside the plausible range "
            f"{spec.plausible_low:g}-{spec.plausible_high:g} {spec.canonical_unit}"
        )
    return float(value)


def parse_observation(obj: object) -> dict[str, Any]:
    """Validate one observation (the JSON object of ``vitalwire news2``).

    Required: ``respiration_rate``, ``spo2``, ``systolic_bp``, ``pulse``, ``temperature_c``.
    Optional: ``spo2_scale`` (1), ``supplemental_oxygen`` (false), ``consciousness`` ("A").

    Raises:
        News2InputError: Naming the key and what was expected.
    """
    if not isinstance(obj, Mapping):
        raise News2InputError(f"input: expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(INPUT_KEYS))
    if unknown:
        raise News2InputError(f"{unknown[0]}: unknown key (expected: {', '.join(INPUT_KEYS)})")
    metric_of = {v: k for k, v in METRIC_PARAMETERS.items()}
    out: dict[str, Any] = {k: _number(obj, k, metric_of[k]) for k in _MEASURED}
    scale = obj.get("spo2_scale", 1)
    if isinstance(scale, bool) or scale not in (1, 2):
        raise News2InputError(f"spo2_scale: expected 1 or 2, got {scale!r}")
    oxygen = obj.get("supplemental_oxygen", False)
    if not isinstance(oxygen, bool):
        raise News2InputError(f"supplemental_oxygen: expected true or false, got {oxygen!r}")
    avpu = obj.get("consciousness", "A")
    if avpu not in ACVPU:
        raise News2InputError(f"consciousness: expected one of {', '.join(ACVPU)}, got {avpu!r}")
    out.update(spo2_scale=int(scale), supplemental_oxygen=oxygen, consciousness=avpu)
    return out


def score_observation(obj: object) -> dict[str, Any]:
    """Score one observation: ``{"subscores": {...}, "aggregate", "any_parameter_3",
    "risk_band"}``.

    Raises:
        News2InputError: The observation is invalid.
    """
    values = parse_observation(obj)
    frame = pl.DataFrame(
        [values],
        schema={k: pl.Float64 for k in _MEASURED}
        | {"spo2_scale": pl.Int8, "supplemental_oxygen": pl.Boolean, "consciousness": pl.Utf8},
    )
    row = score_frame(frame).row(0, named=True)
    return {
        "subscores": {k: int(row[f"s_{k}"]) for k in SUBSCORE_KEYS},
        "aggregate": int(row["aggregate"]),
        "any_parameter_3": bool(row["any_parameter_3"]),
        "risk_band": str(row["risk_band"]),
    }
