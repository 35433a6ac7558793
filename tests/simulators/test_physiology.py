"""Physiology: plausible values over a day, circadian and meal effects, excursions, seeding."""

from __future__ import annotations

import random
import statistics
from functools import cache

import pytest

from pipeline.catalogue import catalogue
from simulators.native import METRICS_BY_KIND
from simulators.physiology import Excursion, Physiology, draw_profile
from tests.simulators.conftest import T0, US

MINUTE = 60 * US
HOUR = 60 * MINUTE
PHYSIO_METRICS = tuple(
    dict.fromkeys(m for ms in METRICS_BY_KIND.values() for m in ms if m != "steps")
)

# Tighter than the catalogue's plausible ranges: what a resting adult without events shows.
REALISTIC = {
    "heart_rate": (35, 125),
    "respiratory_rate": (6, 28),
    "spo2": (90, 100),
    "systolic_bp": (70, 190),
    "diastolic_bp": (40, 125),
    "mean_bp": (55, 145),
    "body_temperature": (35.5, 38.2),
    "cgm_glucose": (50, 420),
    "glucose": (50, 420),
    "body_weight": (40, 150),
    "hrv_sdnn": (1, 150),
}


@cache
def _day(pid: str, diabetic: bool, seed: int = 1) -> list[tuple[int, dict[str, float]]]:
    phys = Physiology(draw_profile(pid, diabetic=diabetic, seed=seed), seed=seed, start_us=T0)
    rng = random.Random(pid)
    return [(t, phys.measure(PHYSIO_METRICS, t, rng)) for t in range(T0, T0 + 24 * HOUR, MINUTE)]


def test_a_day_of_20_patients_stays_plausible_and_realistic() -> None:
    cat = catalogue()
    for n in range(1, 21):
        for _, values in _day(f"P{n:03d}", diabetic=n % 3 == 0):
            for metric, value in values.items():
                spec = cat[metric]
                assert spec.plausible_low <= value <= spec.plausible_high, (n, metric, value)
                low, high = REALISTIC[metric]
                assert low <= value <= high, (n, metric, value)
            assert values["diastolic_bp"] < values["mean_bp"] < values["systolic_bp"]


def test_heart_rate_and_temperature_follow_the_day() -> None:
    afternoon_hr, night_hr, evening_temp, morning_temp = [], [], [], []
    for n in range(1, 21):
        for t, v in _day(f"P{n:03d}", diabetic=False):
            hour = (t - T0) / HOUR
            if 14 <= hour < 16:
                afternoon_hr.append(v["heart_rate"])
            elif 2 <= hour < 4:
                night_hr.append(v["heart_rate"])
            if 16 <= hour < 18:
                evening_temp.append(v["body_temperature"])
            elif 4 <= hour < 6:
                morning_temp.append(v["body_temperature"])
    assert statistics.mean(afternoon_hr) - statistics.mean(night_hr) > 5.0
    assert statistics.mean(evening_temp) - statistics.mean(morning_temp) > 0.3


def test_diabetic_glucose_rises_after_meals() -> None:
    fasting, after_breakfast, non_diabetic_peak = [], [], []
    for n in range(1, 11):
        for t, v in _day(f"P{n:03d}", diabetic=True):
            hour = (t - T0) / HOUR
            if 5 <= hour < 6:
                fasting.append(v["cgm_glucose"])
            elif 8 <= hour < 9:
                after_breakfast.append(v["cgm_glucose"])
        non_diabetic_peak.append(max(v["cgm_glucose"] for _, v in _day(f"P{n:03d}", False)))
    assert statistics.mean(after_breakfast) - statistics.mean(fasting) > 40.0
    assert statistics.mean(fasting) > 100.0
    assert max(non_diabetic_peak) < 180.0


def test_excursion_weight_ramps_holds_and_recovers() -> None:
    exc = Excursion("spo2", 84.0, 1000, 2000, 5000, 7000)
    assert [exc.weight(t) for t in (0, 1000, 1500, 2000, 3500, 5000, 6000, 7000, 9000)] == [
        0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0, 0.0,
    ]  # fmt: skip


def test_excursion_holds_the_target_on_the_plateau() -> None:
    profile = draw_profile("P003", diabetic=True, seed=1)
    exc = Excursion(
        "glucose", 48.0, T0 + 10 * MINUTE, T0 + 20 * MINUTE, T0 + 35 * MINUTE, T0 + HOUR
    )
    phys = Physiology(profile, seed=1, start_us=T0, excursions=[exc])
    base = Physiology(profile, seed=1, start_us=T0)
    times = range(T0, T0 + 2 * HOUR, MINUTE)
    with_event = [phys.true_value("glucose", t) for t in times]
    without = [base.true_value("glucose", t) for t in times]
    assert with_event[:11] == without[:11]  # identical up to the onset
    assert with_event[20:36] == [48.0] * 16  # the plateau
    assert with_event[60:] == without[60:]  # recovered: the patient's own value again
    assert without[15] - with_event[15] > 20.0  # half way down the ramp


def test_same_seed_same_physiology_other_seed_differs() -> None:
    assert _day("P001", False, seed=7) == _day("P001", False, seed=7)
    assert _day("P001", False, seed=7) != _day("P001", False, seed=8)
    assert draw_profile("P001", diabetic=False, seed=7) != draw_profile(
        "P002", diabetic=False, seed=7
    )


def test_steps_only_while_awake_and_counted_from_midnight() -> None:
    phys = Physiology(draw_profile("P001", diabetic=False, seed=1), seed=1, start_us=T0)
    rng = random.Random(1)
    night = [phys.steps_between(T0 + t, T0 + t + 10 * US, rng) for t in range(0, 6 * HOUR, MINUTE)]
    assert night == [0.0] * 360
    day = [
        phys.steps_between(T0 + t, T0 + t + 10 * US, rng)
        for t in range(8 * HOUR, 20 * HOUR, 10 * US)
    ]
    assert max(day) <= 20.0  # at most 2 steps/s
    assert sum(1 for s in day if s > 0) > 100
    assert phys.expected_steps_today(T0 + 3 * HOUR) == 0.0
    assert phys.expected_steps_today(T0 + 23 * HOUR) == round(phys.profile.daily_steps)


def test_queries_may_look_back_two_hours_but_not_further() -> None:
    profile = draw_profile("P002", diabetic=False, seed=3)
    ahead = Physiology(profile, seed=3, start_us=T0)
    in_order = Physiology(profile, seed=3, start_us=T0)
    later, earlier = T0 + 5 * HOUR, T0 + 5 * HOUR - 119 * MINUTE
    first = ahead.true_value("heart_rate", later)
    assert ahead.true_value("heart_rate", earlier) == in_order.true_value("heart_rate", earlier)
    assert first == in_order.true_value("heart_rate", later)
    with pytest.raises(ValueError, match="before the 120 minutes it remembers"):
        ahead.true_value("heart_rate", T0 + 2 * HOUR)
