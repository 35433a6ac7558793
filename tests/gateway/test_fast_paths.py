"""The decoders' shortcuts give exactly what the careful decoders give, or step aside.

A shortcut (:data:`~gateway.formats.base.FastDecoder`) may return ``None`` or raise for any
message; whenever it returns a result, that result must equal the careful decoder's, value types
included. The router must give the same answer with and without shortcuts.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from unittest import mock

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gateway.formats.router as router_module
from gateway.errors import DecodeError
from gateway.formats.base import MAX_TIME_US, MIN_TIME_US, DecodeResult, parse_rfc3339
from gateway.formats.paths import compile_path
from gateway.formats.profile_fast import compile_getter
from gateway.formats.profiles import DeviceProfile, load_profile
from gateway.formats.router import DEFAULT_ROUTES, Route, Router, load_default_profiles
from gateway.records import RawMessage
from pipeline.catalogue import catalogue
from simulators import native

KNOWN = catalogue().names
T0_US = 1_740_816_000_000_000  # 2025-03-01T08:00:00Z

CUSTOM_PROFILES = {
    "coded": """
name = "coded"
[[templates]]
each = "$['obs list'][*]"
device_id = "$$.serial"
timestamp = "$.when"
timestamp_format = "rfc3339"
seq = "$$.meta.n"

[[templates.values]]
metric_from = "$.mdc"
metric_map = { "147842" = "heart_rate", "150456" = "spo2" }
unmapped = "skip"
value = "$.v"
unit_from = "$.u"
unit_map = { "bpm" = "/min" }
""",
    "typed": """
name = "typed"
[[templates]]
name = "flagged"
match = { "$.v" = 1, "$.on" = true }
timestamp = "$.t"
timestamp_format = "epoch_s"
values = [{ metric = "heart_rate", value = "$.a.b.c", unit = "/min" }]

[[templates]]
name = "fallback"
match = { "$.v" = 1 }
device_id = "$.dev[0]"
timestamp = "$.t"
timestamp_format = "epoch_ms"
values = [
    { metric = "spo2", value = "$['a'].b", unit = "%", required = false },
    { metric = "heart_rate", value = "$$.hr", unit = "/min", required = false },
]
""",
    "items": """
name = "items"
[[templates]]
each = "$.r[*]"
timestamp = "$$.t"
timestamp_format = "epoch_ms"
seq = "$.s"
values = [{ metric = "body_weight", value = "$", unit = "kg" }]
""",
}

EXTRA_ROUTES = (
    Route("custom/{site}/vw", "vitalwire"),
    Route("custom/{device_id}/coded", "profile:coded"),
    Route("custom/{site}/coded", "profile:coded"),
    Route("custom/{device_id}/typed", "profile:typed"),
    Route("custom/{site}/typed", "profile:typed"),
    Route("custom/{device_id}/items", "profile:items"),
)


@pytest.fixture(scope="module")
def routers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Router, Router]:
    """The same routes and profiles with shortcuts, and without them."""
    folder = tmp_path_factory.mktemp("profiles")
    profiles = dict(load_default_profiles(KNOWN))
    for name, text in CUSTOM_PROFILES.items():
        (folder / f"{name}.toml").write_text(text, encoding="utf-8")
        profiles[name] = load_profile(folder / f"{name}.toml", KNOWN)
    routes = DEFAULT_ROUTES + EXTRA_ROUTES
    fast = Router(routes, profiles)
    with mock.patch.object(router_module, "_fast_for", lambda decoder: None):
        careful = Router(routes, profiles)
    return fast, careful


def _shape(result: DecodeResult) -> list[tuple[type, ...]]:
    return [tuple(map(type, reading)) for reading in result.readings]


def _check(routers: tuple[Router, Router], topic: str, payload: bytes) -> DecodeResult | None:
    """Assert shortcut and careful path agree; return the shortcut's own answer (or ``None``)."""
    fast_router, careful_router = routers
    msg = RawMessage(topic, payload, 5, "mqtt")
    expected = careful_router.decode(msg)
    got = fast_router.decode(msg)
    assert got == expected
    assert _shape(got) == _shape(expected)
    hit = fast_router._lookup(topic)
    assert hit is not None
    compiled, device_id = hit
    try:
        direct = compiled.fast(payload, device_id) if compiled.fast is not None else None
    except Exception:
        direct = None
    if direct is not None:
        assert direct == expected
        assert _shape(direct) == _shape(expected)
    return direct


def _native(kind: str, device_id: str = "D-0002", seq: int = 7) -> tuple[str, dict[str, object]]:
    metrics = native.METRICS_BY_KIND[kind]
    values = {m: 80.0 + i for i, m in enumerate(metrics)}
    if len(metrics) == 1:
        values = {metrics[0]: 5.5 if kind == "glucose_meter" else 90.0}
    topic, payload = native.encode(kind, device_id, seq, T0_US + 123_456, values)
    return topic, orjson.loads(payload)


@pytest.mark.parametrize("kind", ["smartwatch", "bedside_monitor", "cgm", "glucose_meter"])
def test_well_formed_native_payloads_take_the_shortcut(
    routers: tuple[Router, Router], kind: str
) -> None:
    topic, doc = _native(kind)
    result = _check(routers, topic, orjson.dumps(doc))
    assert result is not None
    assert result.readings and not result.rejections


def _with(doc: dict[str, object], *changes: tuple[tuple[str | int, ...], object]) -> bytes:
    """``doc`` with the value at each path replaced (``...`` deletes it)."""
    out = copy.deepcopy(doc)
    for path, value in changes:
        parent: object = out
        for step in path[:-1]:
            parent = parent[step]  # type: ignore[index]
        if value is ...:
            del parent[path[-1]]  # type: ignore[attr-defined]
        else:
            parent[path[-1]] = value  # type: ignore[index]
    return orjson.dumps(out)


W_TOPIC, WATCH = _native("smartwatch")
M_TOPIC, MONITOR = _native("bedside_monitor")
C_TOPIC, CGM = _native("cgm")
V_TOPIC, METER = _native("glucose_meter")
OBS = ("observations", 0)

EDGE_CASES: list[tuple[str, bytes]] = [
    # bedside monitor
    (M_TOPIC, _with(MONITOR, ((*OBS, "code"), "ST_II"))),
    (M_TOPIC, _with(MONITOR, ((*OBS, "code"), ...))),
    (M_TOPIC, _with(MONITOR, ((*OBS, "value"), "n/a"))),
    (M_TOPIC, _with(MONITOR, ((*OBS, "value"), True))),
    (M_TOPIC, _with(MONITOR, ((*OBS, "value"), None))),
    (M_TOPIC, _with(MONITOR, ((*OBS, "unit"), ...))),
    (M_TOPIC, _with(MONITOR, ((*OBS, "unit"), ""))),
    (M_TOPIC, _with(MONITOR, ((*OBS, "unit"), "rpm"))),
    (M_TOPIC, _with(MONITOR, (OBS, 5))),
    (M_TOPIC, _with(MONITOR, (("observations",), []))),
    (M_TOPIC, _with(MONITOR, (("observations",), {"code": "HR"}))),
    (M_TOPIC, _with(MONITOR, (("observations",), ...))),
    (M_TOPIC, _with(MONITOR, (("time",), "2025-03-01T08:00:00"))),
    (M_TOPIC, _with(MONITOR, (("time",), "2025-03-01T08:00:00Z"))),
    (M_TOPIC, _with(MONITOR, (("time",), "2025-03-01T08:00:00.5-05:30"))),
    (M_TOPIC, _with(MONITOR, (("time",), "2025-03-01T08:00:00+01:00:30.25"))),
    (M_TOPIC, _with(MONITOR, (("time",), "0001-01-01T00:30:00+01:00"))),
    (M_TOPIC, _with(MONITOR, (("time",), "9999-12-31T23:59:59.999999-00:01"))),
    (M_TOPIC, _with(MONITOR, (("time",), 1740816000000))),
    (M_TOPIC, _with(MONITOR, (("time",), None))),
    (M_TOPIC, _with(MONITOR, (("seq",), -1))),
    (M_TOPIC, _with(MONITOR, (("seq",), 2**64 - 1))),
    (M_TOPIC, _with(MONITOR, (("seq",), None))),
    (M_TOPIC, _with(MONITOR, (("seq",), ...))),
    (M_TOPIC, _with(MONITOR, (("seq",), 1.0))),
    (M_TOPIC, _with(MONITOR, (("monitor", "serial"), "BM-9999"))),
    (M_TOPIC, _with(MONITOR, (("monitor", "serial"), ...))),
    (M_TOPIC, _with(MONITOR, (("monitor",), "D-0002"))),
    (M_TOPIC, _with(MONITOR, (("msg_type",), "ALARM"))),
    (M_TOPIC, b"[1, 2]"),
    (M_TOPIC, b"{"),
    # smartwatch
    (W_TOPIC, _with(WATCH, (("vitals",), {}))),
    (W_TOPIC, _with(WATCH, (("vitals",), {}), (("activity",), ...))),
    (W_TOPIC, _with(WATCH, (("vitals",), None))),
    (W_TOPIC, _with(WATCH, (("vitals", "hr_bpm"), None))),
    (W_TOPIC, _with(WATCH, (("vitals", "hr_bpm"), False))),
    (W_TOPIC, _with(WATCH, (("vitals", "hr_bpm"), 2**63))),
    (W_TOPIC, _with(WATCH, (("time_ms",), 1740816000000.5))),
    (W_TOPIC, _with(WATCH, (("time_ms",), 1e30))),
    (W_TOPIC, _with(WATCH, (("time_ms",), -62135596800001))),
    (W_TOPIC, _with(WATCH, (("time_ms",), "2025-03-01T08:00:00Z"))),
    (W_TOPIC, _with(WATCH, (("counter",), ...))),
    (W_TOPIC, _with(WATCH, (("counter",), True))),
    (W_TOPIC, _with(WATCH, (("watch", "id"), 17))),
    (W_TOPIC, _with(WATCH, (("watch", "id"), ""))),
    (W_TOPIC, _with(WATCH, (("watch",), ...))),
    (W_TOPIC, _with(WATCH, (("msg",), ...))),
    # cgm
    (C_TOPIC, _with(CGM, (("egvs", 0, "t"), 1740816000.25))),
    (C_TOPIC, _with(CGM, (("egvs", 0, "t"), "soon"))),
    (C_TOPIC, _with(CGM, (("egvs", 0, "seq"), ...))),
    (C_TOPIC, _with(CGM, (("egvs", 0, "mgdl"), ...))),
    (C_TOPIC, _with(CGM, (("egvs",), []))),
    (C_TOPIC, _with(CGM, (("egvs",), [{"seq": 1, "t": 1740816000, "mgdl": 90}] * 3))),
    (C_TOPIC, _with(CGM, (("sensor_id",), ...))),
    (C_TOPIC, _with(CGM, (("sensor_id",), None))),
    # vitalwire
    (V_TOPIC, _with(METER, (("ts",), 1740816000000))),
    (V_TOPIC, _with(METER, (("ts",), 1740816000000.75))),
    (V_TOPIC, _with(METER, (("ts",), None))),
    (V_TOPIC, _with(METER, (("ts",), ...))),
    (V_TOPIC, _with(METER, (("ts",), True))),
    (V_TOPIC, _with(METER, (("seq",), None))),
    (V_TOPIC, _with(METER, (("seq",), ...))),
    (V_TOPIC, _with(METER, (("seq",), 2**64 - 1))),
    (V_TOPIC, _with(METER, (("device_id",), ...))),
    (V_TOPIC, _with(METER, (("device_id",), "other"))),
    (V_TOPIC, _with(METER, (("device_id",), None))),
    (V_TOPIC, _with(METER, (("value",), True))),
    (V_TOPIC, _with(METER, (("value",), 5))),
    (V_TOPIC, _with(METER, (("unit",), ""))),
    (V_TOPIC, _with(METER, (("metric",), 3))),
    (V_TOPIC, orjson.dumps([METER, METER])),
    (V_TOPIC, orjson.dumps([METER, 3])),
    (V_TOPIC, b"[]"),
    (V_TOPIC, b'"text"'),
    ("custom/s1/vw", orjson.dumps(METER)),
    ("custom/s1/vw", _with(METER, (("device_id",), ...))),
    # custom profiles
    *[
        (topic, orjson.dumps(doc))
        for topic in ("custom/4711/coded", "custom/site/coded")
        for doc in (
            {
                "serial": 4711,
                "meta": {"n": 3},
                "obs list": [
                    {"mdc": 147842, "v": 64, "u": "bpm", "when": "2025-03-01T08:00:00Z"},
                    {"mdc": 150456, "v": 97.5, "u": "%", "when": "2025-03-01T09:00:00+01:00"},
                    {"mdc": 1, "v": "x", "u": "%", "when": "2025-03-01T08:00:00Z"},
                ],
            },
            {"serial": "4711", "obs list": [{"mdc": "147842", "v": 1, "u": "bpm", "when": "x"}]},
            {"serial": 4711, "obs list": [{"mdc": None, "v": 1, "u": "bpm"}]},
            {"serial": True, "obs list": [{"mdc": 147842, "v": 1, "u": "b", "when": "2025-03-01"}]},
            {"obs list": [{"mdc": 147842, "v": 1, "u": "bpm", "when": "2025-03-01T08:00Z"}]},
        )
    ],
    *[
        (topic, orjson.dumps(doc))
        for topic in ("custom/d1/typed", "custom/site/typed")
        for doc in (
            {"v": 1, "on": True, "t": 1740816000, "a": {"b": {"c": 70}}},
            {"v": 1.0, "on": True, "t": 1740816000.5, "a": {"b": {"c": 70}}},
            {"v": 1, "on": 1, "t": 1740816000000, "dev": ["d1"], "a": {"b": 97}, "hr": 60},
            {"v": 1, "t": 1740816000000, "dev": ["d2"], "hr": 60},
            {"v": 1, "t": 1740816000000, "dev": [], "a": {"b": 97}},
            {"v": 1, "t": 1740816000000, "dev": "d1", "a": {"b": None}},
            {"v": True, "t": 0, "a": 1},
        )
    ],
    ("custom/d1/items", b'{"t": 1740816000000, "r": [1, 2.5, {"x": 1}]}'),
    ("custom/d1/items", b'{"t": 1740816000000, "r": [1, 2.5]}'),
]


@pytest.mark.parametrize(("topic", "payload"), EDGE_CASES)
def test_edge_cases_agree(routers: tuple[Router, Router], topic: str, payload: bytes) -> None:
    _check(routers, topic, payload)


def test_unusual_messages_leave_the_shortcut(routers: tuple[Router, Router]) -> None:
    assert _check(routers, M_TOPIC, _with(MONITOR, ((*OBS, "code"), "ST_II"))) is None
    assert _check(routers, V_TOPIC, orjson.dumps([METER, 3])) is None


# --------------------------------------------------------------------------- mutations


def _slots(doc: object) -> Iterator[tuple[object, str | int]]:
    """Every ``(container, key)`` of a JSON document, depth first."""
    if type(doc) is dict:
        for key in list(doc):
            yield doc, key
            yield from _slots(doc[key])
    elif type(doc) is list:
        for i, item in enumerate(doc):
            yield doc, i
            yield from _slots(item)


replacements = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([0, 1, -1, 2**63 - 1, 2**64 - 1, 17, 1740816000, 1740816000000]),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [
            "",
            "HR",
            "TEMP",
            "bpm",
            "C",
            "F",
            "x",
            "D-0002",
            "2025-03-01T08:00:00",
            "2025-03-01T08:00:00Z",
            "2025-03-01T08:00:00+14:00",
            "0001-01-01T00:00:00+00:01",
        ]
    ),
    st.text(max_size=6),
    st.just([]),
    st.just({}),
)
documents = st.sampled_from(
    [
        (W_TOPIC, WATCH),
        (M_TOPIC, MONITOR),
        (C_TOPIC, CGM),
        (V_TOPIC, METER),
        ("custom/s1/vw", METER),
        (V_TOPIC, [METER, METER]),
    ]
)


@settings(max_examples=600, deadline=None)
@given(
    document=documents,
    data=st.data(),
    steps=st.integers(1, 3),
    other_device=st.booleans(),
)
def test_mutated_documents_agree(
    routers: tuple[Router, Router],
    document: tuple[str, object],
    data: st.DataObject,
    steps: int,
    other_device: bool,
) -> None:
    topic, doc = document
    doc = copy.deepcopy(doc)
    for _ in range(steps):
        slots = list(_slots(doc))
        if not slots:
            break
        container, key = data.draw(st.sampled_from(slots))
        if data.draw(st.booleans()):
            del container[key]  # type: ignore[attr-defined]
        else:
            container[key] = data.draw(replacements)  # type: ignore[index]
    if other_device:
        topic = topic.replace("D-0002", "D-0003")
    _check(routers, topic, orjson.dumps(doc))


# --------------------------------------------------------------------------- parts


@settings(max_examples=300, deadline=None)
@given(
    when=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    offset_min=st.integers(-23 * 60 - 59, 23 * 60 + 59),
    seconds=st.sampled_from([0, 0, 30]),
)
def test_rfc3339_is_exact_to_the_microsecond(when: datetime, offset_min: int, seconds: int) -> None:
    zone = timezone(timedelta(minutes=offset_min, seconds=seconds))
    dt = when.replace(tzinfo=zone)
    expected = (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    assert parse_rfc3339(dt.isoformat(), "$.t") == expected
    assert parse_rfc3339(dt.isoformat(), "$.t") == expected  # offset now cached


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0001-01-01T00:00:00Z", MIN_TIME_US),
        ("9999-12-31T23:59:59.999999+00:00", MAX_TIME_US),
        ("1970-01-01T01:00:00+01:00", 0),
        ("0001-01-01T00:00:00+00:01", None),
        ("9999-12-31T23:59:59.999999-00:01", None),
    ],
)
def test_rfc3339_range(text: str, expected: int | None) -> None:
    if expected is None:
        with pytest.raises(DecodeError, match="outside years 1-9999"):
            parse_rfc3339(text, "$.t")
    else:
        assert parse_rfc3339(text, "$.t") == expected


@pytest.mark.parametrize("text", ["$", "$$", "$.a", "$$.a", "$.a.b", "$$.a.b", "$.a[0]", "$.a.b.c"])
@pytest.mark.parametrize(
    "doc",
    [{"a": {"b": {"c": 1}}}, {"a": [5]}, {"a": None}, {"a": "text"}, [1], "a", None, {}],
)
def test_compiled_getters_match_path_get(text: str, doc: object) -> None:
    path = compile_path(text)
    get = compile_getter(path)
    item = {"a": {"b": 2}}
    assert get(item, doc) == path.get(item, doc)
    assert get(doc, doc) == path.get(doc)


def test_substitute_decoders_get_no_shortcut() -> None:
    profiles = load_default_profiles(KNOWN)
    assert all(type(p) is DeviceProfile for p in profiles.values())
    router = Router(DEFAULT_ROUTES, profiles)
    assert all(c.fast is not None for c in router._routes[:4])

    class Recorder:
        def decode(self, payload: bytes, ctx: object) -> DecodeResult:
            return DecodeResult([], [])

    other = Router([Route("x/{device_id}", "profile:r")], {"r": Recorder()})  # type: ignore[dict-item]
    assert other._routes[0].fast is None
