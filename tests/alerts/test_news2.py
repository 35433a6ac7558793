"""NEWS2: both sides of every band edge, SpO2 scales, aggregate bands, input validation."""

from __future__ import annotations

import polars as pl
import pytest

from alerts.news2 import News2InputError, band_of, score_frame, score_observation

NORMAL = {
    "respiration_rate": 16, "spo2": 97, "spo2_scale": 1, "supplemental_oxygen": False,
    "systolic_bp": 120, "pulse": 70, "consciousness": "A", "temperature_c": 37.0,
}  # fmt: skip


def sub(key: str, **changes: object) -> int:
    result = score_observation({**NORMAL, **changes})
    return int(result["subscores"][key])


@pytest.mark.parametrize(
    ("value", "score"),
    [(8, 3), (9, 1), (11, 1), (12, 0), (20, 0), (21, 2), (24, 2), (25, 3), (8.5, 1)],
)
def test_respiration_rate_edges(value: float, score: int) -> None:
    assert sub("respiration_rate", respiration_rate=value) == score


@pytest.mark.parametrize(
    ("value", "score"), [(91, 3), (92, 2), (93, 2), (94, 1), (95, 1), (96, 0), (100, 0)]
)
def test_spo2_scale_1_edges(value: float, score: int) -> None:
    assert sub("spo2", spo2=value) == score
    assert sub("spo2", spo2=value, supplemental_oxygen=True) == score


@pytest.mark.parametrize(
    ("value", "oxygen", "score"),
    [
        (83, False, 3), (84, False, 2), (85, False, 2), (86, False, 1), (87, False, 1),
        (88, False, 0), (92, False, 0), (93, False, 0), (97, False, 0),
        (88, True, 0), (92, True, 0), (93, True, 1), (94, True, 1), (95, True, 2),
        (96, True, 2), (97, True, 3), (100, True, 3), (83, True, 3),
    ],
)  # fmt: skip
def test_spo2_scale_2_edges(value: float, oxygen: bool, score: int) -> None:
    assert sub("spo2", spo2=value, spo2_scale=2, supplemental_oxygen=oxygen) == score


def test_air_or_oxygen() -> None:
    assert sub("air_or_oxygen") == 0
    assert sub("air_or_oxygen", supplemental_oxygen=True) == 2


@pytest.mark.parametrize(
    ("value", "score"),
    [(90, 3), (91, 2), (100, 2), (101, 1), (110, 1), (111, 0), (219, 0), (220, 3)],
)
def test_systolic_bp_edges(value: float, score: int) -> None:
    assert sub("systolic_bp", systolic_bp=value) == score


@pytest.mark.parametrize(
    ("value", "score"),
    [(40, 3), (41, 1), (50, 1), (51, 0), (90, 0), (91, 1), (110, 1), (111, 2), (130, 2),
     (131, 3)],
)
def test_pulse_edges(value: float, score: int) -> None:
    assert sub("pulse", pulse=value) == score


@pytest.mark.parametrize(
    ("value", "score"),
    [(35.0, 3), (35.1, 1), (36.0, 1), (36.1, 0), (38.0, 0), (38.1, 1), (39.0, 1), (39.1, 2),
     (38.000000001, 0)],
)
def test_temperature_edges(value: float, score: int) -> None:
    assert sub("temperature", temperature_c=value) == score


@pytest.mark.parametrize(("avpu", "score"), [("A", 0), ("C", 3), ("V", 3), ("P", 3), ("U", 3)])
def test_consciousness(avpu: str, score: int) -> None:
    assert sub("consciousness", consciousness=avpu) == score


def test_output_is_exactly_the_documented_object() -> None:
    result = score_observation({**NORMAL, "respiration_rate": 21, "spo2": 95, "pulse": 95,
                                "systolic_bp": 105, "temperature_c": 38.2})
    assert result == {
        "subscores": {"respiration_rate": 2, "spo2": 1, "air_or_oxygen": 0, "systolic_bp": 1,
                      "pulse": 1, "consciousness": 0, "temperature": 1},
        "aggregate": 6, "any_parameter_3": False, "risk_band": "medium",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "aggregate", "band"),
    [
        ({}, 0, "low"),
        ({"respiration_rate": 21, "pulse": 91, "temperature_c": 38.1}, 4, "low"),
        ({"respiration_rate": 25}, 3, "low-medium"),
        ({"respiration_rate": 21, "pulse": 111, "temperature_c": 38.1}, 5, "medium"),
        ({"respiration_rate": 21, "pulse": 111, "spo2": 95, "temperature_c": 38.1}, 6, "medium"),
        ({"respiration_rate": 25, "pulse": 111, "spo2": 95, "temperature_c": 38.1}, 7, "high"),
        ({"respiration_rate": 25, "consciousness": "V"}, 6, "medium"),
        ({"respiration_rate": 8, "spo2": 91, "spo2_scale": 1, "supplemental_oxygen": True,
          "systolic_bp": 90, "pulse": 131, "consciousness": "U", "temperature_c": 35.0}, 20,
         "high"),
    ],
)
def test_aggregate_and_risk_band(changes: dict[str, object], aggregate: int, band: str) -> None:
    result = score_observation({**NORMAL, **changes})
    assert (result["aggregate"], result["risk_band"]) == (aggregate, band)


def test_band_of_matches_the_frame() -> None:
    assert [band_of(a, False) for a in (0, 4, 5, 6, 7)] == ["low", "low", "medium", "medium",
                                                            "high"]
    assert band_of(3, True) == "low-medium"
    assert band_of(5, True) == "medium"


def test_missing_parameters_do_not_score_zero_silently() -> None:
    frame = pl.DataFrame(
        {"respiration_rate": [25.0], "spo2": [None], "spo2_scale": [1],
         "supplemental_oxygen": [False], "systolic_bp": [None], "pulse": [None],
         "consciousness": ["A"], "temperature_c": [None]},
        schema_overrides={"spo2": pl.Float64, "systolic_bp": pl.Float64, "pulse": pl.Float64,
                          "temperature_c": pl.Float64},
    )
    row = score_frame(frame).row(0, named=True)
    assert row["s_spo2"] is None
    assert (row["aggregate"], row["complete"], row["risk_band"]) == (3, False, "low-medium")


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([1, 2], "input: expected a JSON object, got list"),
        ({k: v for k, v in NORMAL.items() if k != "pulse"}, "pulse: expected a number, got "
                                                            "missing"),
        ({**NORMAL, "pulse": "fast"}, "pulse: expected a number, got 'fast'"),
        ({**NORMAL, "pulse": True}, "pulse: expected a number, got True"),
        ({**NORMAL, "spo2": 120}, "spo2: 120 % is outside the plausible range 50-100 %"),
        ({**NORMAL, "spo2_scale": 3}, "spo2_scale: expected 1 or 2, got 3"),
        ({**NORMAL, "supplemental_oxygen": "yes"},
         "supplemental_oxygen: expected true or false, got 'yes'"),
        ({**NORMAL, "consciousness": "alert"},
         "consciousness: expected one of A, C, V, P, U, got 'alert'"),
        ({**NORMAL, "heart_rate": 70}, "heart_rate: unknown key (expected: respiration_rate, "
                                       "spo2, spo2_scale, supplemental_oxygen, systolic_bp, "
                                       "pulse, consciousness, temperature_c)"),
    ],
)
def test_invalid_observations_name_the_key(obj: object, message: str) -> None:
    with pytest.raises(News2InputError) as info:
        score_observation(obj)
    assert str(info.value) == message


def test_optional_keys_default_to_scale_1_air_and_alert() -> None:
    minimal = {k: NORMAL[k] for k in ("respiration_rate", "spo2", "systolic_bp", "pulse",
                                      "temperature_c")}
    assert score_observation(minimal) == score_observation(NORMAL)
