"""Plausible physiology of one virtual patient over time.

A physiological variable (heart rate, systolic pressure, glucose...) is the sum of

* a per-patient **baseline**, drawn from a realistic adult distribution;
* a **circadian** cosine (time of day in UTC);
* **meals** for glucose: a rise after breakfast, lunch and dinner, larger for diabetic patients;
* a **drift**: a mean-reverting random walk (Ornstein-Uhlenbeck) on a one-minute grid,
  interpolated in between;
* scripted **excursions** (clinical events) that blend the value towards a target.

Devices read the variables through :meth:`Physiology.measure`, which adds measurement noise and
rounds to the device's precision. Every random stream is seeded from the fleet seed, the patient
and the variable, so a patient's physiology does not depend on which devices observe it.
Queries run forward in time; a query may look back at most two hours behind the latest one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from pipeline.catalogue import catalogue

__all__ = [
    "DERIVED_METRICS",
    "METRICS_OF",
    "POPULATION",
    "VARIABLES",
    "Excursion",
    "PatientProfile",
    "Physiology",
    "VariableModel",
    "draw_profile",
    "variable_of",
]

US = 1_000_000
DAY_US = 86_400 * US
DRIFT_STEP_US = 60 * US
DRIFT_HISTORY = 120  # grid points (minutes) a query may look back


@dataclass(frozen=True, slots=True)
class VariableModel:
    """Population and signal parameters of one physiological variable.

    Attributes:
        mean: Population mean of the resting baseline.
        sd: Population standard deviation of the baseline.
        low: Lowest baseline drawn (the draw is clipped).
        high: Highest baseline drawn.
        circadian_amp: Amplitude of the daily cosine.
        circadian_peak_h: Hour of day (UTC) of the cosine's maximum.
        drift_sd: Stationary standard deviation of the random walk.
        drift_tau_s: Mean-reversion time of the random walk.
        noise_sd: Measurement noise (absolute; relative to the value when ``relative_noise``).
        decimals: Device precision in decimal places.
        relative_noise: Whether ``noise_sd`` is a fraction of the value.
    """

    mean: float
    sd: float
    low: float
    high: float
    circadian_amp: float
    circadian_peak_h: float
    drift_sd: float
    drift_tau_s: float
    noise_sd: float
    decimals: int
    relative_noise: bool = False


POPULATION: Mapping[str, VariableModel] = MappingProxyType(
    {
        "heart_rate": VariableModel(72, 9, 55, 98, 5.0, 15.0, 3.5, 1800, 2.0, 0),
        "respiratory_rate": VariableModel(15, 2, 11, 20, 1.0, 14.0, 1.0, 1800, 1.0, 0),
        "spo2": VariableModel(97.5, 1.0, 95, 99.5, 0.3, 14.0, 0.5, 1800, 0.6, 0),
        "systolic_bp": VariableModel(122, 13, 98, 160, 7.0, 14.0, 5.0, 3600, 4.0, 0),
        "body_temperature": VariableModel(36.8, 0.2, 36.3, 37.3, 0.3, 17.0, 0.1, 3600, 0.1, 1),
        "glucose": VariableModel(92, 8, 75, 108, 5.0, 6.0, 5.0, 3600, 0.04, 0, True),
        "body_weight": VariableModel(78, 15, 48, 140, 0.0, 0.0, 0.4, 5 * 86400, 0.1, 1),
        "hrv_sdnn": VariableModel(45, 12, 20, 90, 8.0, 3.0, 6.0, 3600, 4.0, 0),
    }
)
"""Adult population parameters per variable, in the catalogue's canonical units."""

DIABETIC_GLUCOSE = VariableModel(145, 25, 105, 200, 10.0, 6.0, 18.0, 3600, 0.04, 0, True)
"""Glucose of a diabetic patient: higher fasting level, wider drift."""

VARIABLES: tuple[str, ...] = tuple(POPULATION)

METRICS_OF: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "heart_rate": ("heart_rate",),
        "respiratory_rate": ("respiratory_rate",),
        "spo2": ("spo2",),
        "systolic_bp": ("systolic_bp",),
        "body_temperature": ("body_temperature",),
        "glucose": ("cgm_glucose", "glucose"),
        "body_weight": ("body_weight",),
        "hrv_sdnn": ("hrv_sdnn",),
    }
)
"""Metrics that read each variable directly (an excursion's target applies to these)."""

DERIVED_METRICS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"systolic_bp": ("diastolic_bp", "mean_bp")}
)
"""Metrics that move with a variable without taking its value (diastolic follows systolic)."""

_VARIABLE_OF = {m: v for v, ms in METRICS_OF.items() for m in ms} | {
    m: v for v, ms in DERIVED_METRICS.items() for m in ms
}

DIASTOLIC_RATIO = (0.64, 0.04, 0.56, 0.72)  # diastolic / systolic: mean, sd, low, high
MIN_PULSE_PRESSURE = 10.0
DAILY_STEPS = (7000.0, 2500.0, 1500.0, 15000.0)
MEAL_RISE_MG_DL = {False: (25.0, 6.0, 12.0, 35.0), True: (90.0, 20.0, 55.0, 130.0)}
MEALS_AT_H = (7.5, 12.5, 18.5)
MEAL_JITTER_H = 0.75
MEAL_PEAK_S = {False: 45 * 60, True: 70 * 60}
AWAKE_H = (7.0, 22.5)
WALKING_STEPS_PER_S = (1.4, 2.0)


def variable_of(metric: str) -> str:
    """The physiological variable a metric reads (``cgm_glucose`` -> ``glucose``)."""
    try:
        return _VARIABLE_OF[metric]
    except KeyError:
        raise KeyError(f"metric {metric!r} has no physiological variable") from None


def _clamp_ranges() -> dict[str, tuple[float, float]]:
    """True values stay inside every plausible range of the metrics reading them."""
    cat = catalogue()
    out = {}
    for var, metrics in METRICS_OF.items():
        lows = [cat[m].plausible_low for m in metrics]
        highs = [cat[m].plausible_high for m in metrics]
        out[var] = (max(lows), min(highs))
    return out


_CLAMP = _clamp_ranges()


def _draw(rng: random.Random, params: tuple[float, float, float, float]) -> float:
    mean, sd, low, high = params
    return min(high, max(low, rng.gauss(mean, sd)))


def _hour_of_day(t_us: int) -> float:
    return (t_us % DAY_US) / (3600 * US)


@dataclass(frozen=True, slots=True)
class PatientProfile:
    """The fixed traits of one virtual patient.

    Attributes:
        patient_id: ``P001``...
        diabetic: Higher glucose, large meal rises.
        baseline: Resting baseline per variable (canonical units).
        diastolic_ratio: Diastolic over systolic pressure.
        daily_steps: Typical steps per day.
        meal_rise: Peak glucose rise after a typical meal (mg/dL).
    """

    patient_id: str
    diabetic: bool
    baseline: Mapping[str, float]
    diastolic_ratio: float
    daily_steps: float
    meal_rise: float

    def model(self, variable: str) -> VariableModel:
        """Signal parameters of ``variable`` for this patient."""
        if variable == "glucose" and self.diabetic:
            return DIABETIC_GLUCOSE
        return POPULATION[variable]


def draw_profile(patient_id: str, *, diabetic: bool, seed: int) -> PatientProfile:
    """Draw a patient's traits; the same ``(seed, patient_id, diabetic)`` gives the same profile."""
    rng = random.Random(f"vitalwire-sim:{seed}:{patient_id}:profile")
    baseline = {}
    for var, model in POPULATION.items():
        if var == "glucose" and diabetic:
            model = DIABETIC_GLUCOSE
        baseline[var] = _draw(rng, (model.mean, model.sd, model.low, model.high))
    return PatientProfile(
        patient_id=patient_id,
        diabetic=diabetic,
        baseline=MappingProxyType(baseline),
        diastolic_ratio=_draw(rng, DIASTOLIC_RATIO),
        daily_steps=_draw(rng, DAILY_STEPS),
        meal_rise=_draw(rng, MEAL_RISE_MG_DL[diabetic]),
    )


@dataclass(frozen=True, slots=True)
class Excursion:
    """A scripted change of one variable: ramp to ``target``, hold, recover.

    Attributes:
        variable: The physiological variable.
        target: Value held during the plateau (canonical unit).
        start_us: Onset: the ramp begins.
        peak_us: The target is reached; the plateau begins.
        plateau_end_us: The recovery begins.
        end_us: Back at the patient's own value.
    """

    variable: str
    target: float
    start_us: int
    peak_us: int
    plateau_end_us: int
    end_us: int

    def weight(self, t_us: int) -> float:
        """How far the value is pulled to the target at ``t_us``: 0 outside, 1 on the plateau."""
        if t_us <= self.start_us or t_us >= self.end_us:
            return 0.0
        if t_us < self.peak_us:
            return (t_us - self.start_us) / (self.peak_us - self.start_us)
        if t_us <= self.plateau_end_us:
            return 1.0
        return (self.end_us - t_us) / (self.end_us - self.plateau_end_us)


class _Drift:
    """Ornstein-Uhlenbeck walk on a fixed grid, advanced lazily, read by interpolation.

    The last :data:`DRIFT_HISTORY` grid points are kept, so readers that run slightly out of
    step (concurrent live devices) may look back up to that far.
    """

    __slots__ = ("_a", "_k0", "_points", "_rng", "_step")

    def __init__(self, rng: random.Random, sd: float, tau_s: float, start_us: int) -> None:
        self._rng = rng
        self._a = math.exp(-DRIFT_STEP_US / (tau_s * US))
        self._step = math.sqrt(1.0 - self._a * self._a) * sd
        self._k0 = start_us // DRIFT_STEP_US
        self._points = [rng.gauss(0.0, sd)]

    def at(self, t_us: int) -> float:
        k = t_us // DRIFT_STEP_US - self._k0
        if k < 0:
            raise ValueError(
                f"drift queried at {t_us} us, before the {DRIFT_HISTORY} minutes it remembers"
            )
        points = self._points
        while k + 1 >= len(points):
            points.append(self._a * points[-1] + self._rng.gauss(0.0, self._step))
        if len(points) > 2 * DRIFT_HISTORY:
            drop = len(points) - DRIFT_HISTORY - 2
            del points[:drop]
            self._k0 += drop
            k -= drop
        frac = (t_us % DRIFT_STEP_US) / DRIFT_STEP_US
        return points[k] + (points[k + 1] - points[k]) * frac


class Physiology:
    """The physiological state of one patient from ``start_us`` on.

    Args:
        profile: The patient's traits.
        seed: Fleet seed.
        start_us: First instant that will be queried.
        excursions: Scripted excursions, applied in order.
    """

    def __init__(
        self,
        profile: PatientProfile,
        *,
        seed: int,
        start_us: int,
        excursions: Iterable[Excursion] = (),
    ) -> None:
        self.profile = profile
        self._seed = seed
        self._drift = {
            var: _Drift(
                random.Random(f"vitalwire-sim:{seed}:{profile.patient_id}:drift:{var}"),
                profile.model(var).drift_sd,
                profile.model(var).drift_tau_s,
                start_us,
            )
            for var in VARIABLES
        }
        self._excursions: dict[str, list[Excursion]] = {}
        for exc in excursions:
            self._excursions.setdefault(exc.variable, []).append(exc)
        self._meals: dict[int, tuple[tuple[int, float], ...]] = {}

    def _meals_of_day(self, day: int) -> tuple[tuple[int, float], ...]:
        meals = self._meals.get(day)
        if meals is None:
            pid = self.profile.patient_id
            rng = random.Random(f"vitalwire-sim:{self._seed}:{pid}:meals:{day}")
            meals = tuple(
                (
                    day * DAY_US
                    + round((at_h + rng.uniform(-MEAL_JITTER_H, MEAL_JITTER_H)) * 3600 * US),
                    self.profile.meal_rise * rng.lognormvariate(0.0, 0.3),
                )
                for at_h in MEALS_AT_H
            )
            self._meals = {d: m for d, m in self._meals.items() if d >= day - 1}
            self._meals[day] = meals
        return meals

    def _meal_rise(self, t_us: int) -> float:
        peak_s = MEAL_PEAK_S[self.profile.diabetic]
        day = t_us // DAY_US
        rise = 0.0
        for d in (day - 1, day):
            for at_us, size in self._meals_of_day(d):
                tau = (t_us - at_us) / (peak_s * US)
                if tau > 0:
                    rise += size * tau * math.exp(1.0 - tau)
        return rise

    def true_value(self, variable: str, t_us: int) -> float:
        """The variable's value at ``t_us`` (no measurement noise), excursions applied."""
        value = self._own_value(variable, t_us)
        for exc in self._excursions.get(variable, ()):
            w = exc.weight(t_us)
            if w:
                value += w * (exc.target - value)
        low, high = _CLAMP[variable]
        return min(high, max(low, value))

    def _own_value(self, variable: str, t_us: int) -> float:
        model = self.profile.model(variable)
        value = self.profile.baseline[variable] + self._drift[variable].at(t_us)
        if model.circadian_amp:
            phase = 2.0 * math.pi * (_hour_of_day(t_us) - model.circadian_peak_h) / 24.0
            value += model.circadian_amp * math.cos(phase)
        if variable == "glucose":
            value += self._meal_rise(t_us)
        return value

    def measure(self, metrics: Sequence[str], t_us: int, rng: random.Random) -> dict[str, float]:
        """One device reading of each of ``metrics`` at ``t_us``: noisy and rounded.

        Blood pressure metrics are measured together so that diastolic < mean < systolic.
        ``steps`` is not physiology and is not handled here (see :meth:`steps_between`).
        """
        out: dict[str, float] = {}
        for metric in metrics:
            if metric in out:
                continue
            if metric in ("systolic_bp", "diastolic_bp", "mean_bp"):
                out.update(self._measure_bp(t_us, rng))
                continue
            var = variable_of(metric)
            model = self.profile.model(var)
            value = self.true_value(var, t_us)
            sd = model.noise_sd * value if model.relative_noise else model.noise_sd
            low, high = _CLAMP[var]
            out[metric] = round(min(high, max(low, value + rng.gauss(0.0, sd))), model.decimals)
        return {m: out[m] for m in metrics}

    def _measure_bp(self, t_us: int, rng: random.Random) -> dict[str, float]:
        systolic = self.true_value("systolic_bp", t_us)
        noise = self.profile.model("systolic_bp").noise_sd
        sys_m = round(systolic + rng.gauss(0.0, noise))
        dia = systolic * self.profile.diastolic_ratio + rng.gauss(0.0, noise / 2)
        dia_m = min(round(dia), sys_m - MIN_PULSE_PRESSURE)
        mean_m = round(dia_m + (sys_m - dia_m) / 3.0)
        return {"systolic_bp": float(sys_m), "diastolic_bp": float(dia_m), "mean_bp": float(mean_m)}

    def expected_steps_today(self, t_us: int) -> float:
        """Typical step count since midnight (UTC) at ``t_us``: where a day's count starts."""
        hour = min(max(_hour_of_day(t_us), AWAKE_H[0]), AWAKE_H[1])
        share = (hour - AWAKE_H[0]) / (AWAKE_H[1] - AWAKE_H[0])
        return float(round(self.profile.daily_steps * share))

    def steps_between(self, t0_us: int, t1_us: int, rng: random.Random) -> float:
        """Steps taken between two instants: walking bouts while awake, none at night."""
        seconds = (t1_us - t0_us) / US
        hour = _hour_of_day(t1_us)
        if seconds <= 0 or not AWAKE_H[0] <= hour < AWAKE_H[1]:
            return 0.0
        awake_s = (AWAKE_H[1] - AWAKE_H[0]) * 3600
        mean_pace = sum(WALKING_STEPS_PER_S) / 2
        p_walking = min(1.0, self.profile.daily_steps / (mean_pace * awake_s))
        if rng.random() < p_walking:
            return float(round(rng.uniform(*WALKING_STEPS_PER_S) * seconds))
        return 0.0
