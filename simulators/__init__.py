"""Virtual medical devices: seeded physiology, scripted clinical events, MQTT publishing.

``plan_fleet`` decides patients and devices, ``generate`` yields every message of a run with no
network, and ``Fleet`` publishes them live to a broker. See ``docs/simulators.md``.
"""

from simulators.config import CADENCES, Cadence, FleetConfig, Timeline
from simulators.fleet import (
    DEVICE_PREFIX,
    FleetPlan,
    SimDevice,
    SimMessage,
    SimPatient,
    SimReading,
    generate,
    ground_truth,
    plan_fleet,
)
from simulators.publisher import Clock, Fleet, MqttPublisher, Publisher, SystemClock
from simulators.scenario import (
    EVENT_KINDS,
    EventRecord,
    Scenario,
    ScenarioEvent,
    load_scenario,
    read_event_log,
    write_event_log,
)

__all__ = [
    "CADENCES",
    "DEVICE_PREFIX",
    "EVENT_KINDS",
    "Cadence",
    "Clock",
    "EventRecord",
    "Fleet",
    "FleetConfig",
    "FleetPlan",
    "MqttPublisher",
    "Publisher",
    "Scenario",
    "ScenarioEvent",
    "SimDevice",
    "SimMessage",
    "SimPatient",
    "SimReading",
    "SystemClock",
    "Timeline",
    "generate",
    "ground_truth",
    "load_scenario",
    "plan_fleet",
    "read_event_log",
    "write_event_log",
]
