"""What the simulators send is what the gateway decodes: ground truth and payloads agree."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.formats.router import DEFAULT_ROUTES, Router, load_default_profiles
from gateway.records import RawMessage
from pipeline.catalogue import catalogue
from simulators import native
from simulators.config import FleetConfig
from simulators.fleet import SimMessage, generate
from tests.simulators.conftest import T0

CLINICAL = Path(__file__).resolve().parents[2] / "simulators" / "scenarios" / "clinical-events.toml"

# Half a display step of the device's own unit, in the canonical unit: the meter shows mmol/L
# with one decimal, the scale pounds with one decimal, some monitors Fahrenheit with one decimal.
ROUNDING = {
    "glucose": 0.05 * 18.0156,
    "body_weight": 0.05 * 0.45359237,
    "body_temperature": 0.05 * 5 / 9,
}


@pytest.fixture(scope="module")
def router() -> Router:
    return Router(DEFAULT_ROUTES, load_default_profiles(catalogue().names))


def _check(router: Router, msgs: list[SimMessage]) -> int:
    cat = catalogue()
    checked = 0
    for m in msgs:
        result = router.decode(RawMessage(m.topic, m.payload, m.ts_us, "mqtt"))
        if m.garbage:
            continue
        assert result.rejections == [], m
        got = sorted(result.readings, key=lambda r: r.metric)
        want = sorted(m.readings, key=lambda r: r.metric)
        assert [(r.device_id, r.metric, r.observed_at_us) for r in got] == [
            (m.device_id, r.metric, r.observed_at_us) for r in want
        ]
        for g, w in zip(got, want, strict=True):
            assert g.seq in (w.seq, None)  # Open mHealth (the scale) carries no sequence number
            assert g.value is not None
            value = cat[g.metric].to_canonical(g.value, g.unit)
            assert abs(value - w.value) <= ROUNDING.get(g.metric, 0.0) + 1e-9, (g, w)
            checked += 1
    return checked


def test_clinical_events_decode_to_the_ground_truth(router: Router) -> None:
    msgs = list(generate(FleetConfig(scenario=CLINICAL, duration_s=3600.0), T0))
    assert _check(router, msgs) > 15000
    temperatures = {m.device_id for m in msgs for r in m.readings if r.metric == "body_temperature"}
    units = {native.native_unit("bedside_monitor", d, "body_temperature") for d in temperatures}
    assert units == {"Cel", "[degF]"}
    garbage = [m for m in msgs if m.garbage]
    decoded = [router.decode(RawMessage(m.topic, m.payload, m.ts_us, "mqtt")) for m in garbage]
    # Most garbage fails to decode; the rest carries an implausible value the pipeline rejects.
    assert sum(1 for d in decoded if d.rejections) > len(garbage) // 2
    for d in decoded:
        if not d.rejections:
            assert any(r.metric == "heart_rate" and r.value == 999.0 for r in d.readings)


def test_daily_devices_decode_to_the_ground_truth(router: Router) -> None:
    cfg = FleetConfig(patients=6, kinds=("glucose_meter", "scale"), duration_s=3 * 86400.0)
    assert _check(router, list(generate(cfg, T0))) == 6 * 3 * (4 + 1)
