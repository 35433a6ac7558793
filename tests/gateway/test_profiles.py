"""Compiled paths, device profile loading and profile decoding."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from gateway.errors import ConfigError, DecodeError
from gateway.formats.base import DecodeContext
from gateway.formats.paths import MISSING, PathSyntaxError, compile_iteration, compile_path
from gateway.formats.profiles import DeviceProfile, load_profile, load_profiles
from gateway.formats.router import DEFAULT_PROFILE_DIR
from gateway.records import RawReading, Rejection
from pipeline.catalogue import catalogue

TESTDATA = Path(__file__).parent.parent / "testdata"
BAD = TESTDATA / "profiles"
PAYLOADS = TESTDATA / "payloads"
KNOWN = catalogue().names
T0_US = 1_740_816_000_000_000  # 2025-03-01T08:00:00Z


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("text", "steps", "from_root"),
    [
        ("$", (), False),
        ("$.a.b_c-d", ("a", "b_c-d"), False),
        ("$['key with spaces'][3]", ("key with spaces", 3), False),
        ('$["it\'s"][-1]', ("it's", -1), False),
        ("$['a\\'b\\\\c']", ("a'b\\c",), False),
        ("$$.serial", ("serial",), True),
    ],
)
def test_compile_path(text: str, steps: tuple[object, ...], from_root: bool) -> None:
    path = compile_path(text)
    assert (path.steps, path.from_root, path.text) == (steps, from_root, text)


@pytest.mark.parametrize(
    ("text", "offset", "expected"),
    [
        ("a.b", 0, "a path starts with '$'"),
        ("$.", 2, "expected a key name after '.'"),
        ("$a", 1, "expected '.' or '[', found 'a'"),
        ("$.a[", 4, "expected a quoted key, an integer or '*'"),
        ("$.a[x]", 4, "expected a quoted key, an integer or '*'"),
        ("$.a[0", 5, "expected ']'"),
        ("$['abc", 2, "unterminated quoted key"),
        ("$['a\\x']", 4, "after a backslash"),
        ("$.a[*]", 3, "'[*]' is only allowed in an 'each' path"),
        ("$.a b", 3, "expected '.' or '[', found ' '"),
    ],
)
def test_path_syntax_errors_name_the_offset(text: str, offset: int, expected: str) -> None:
    with pytest.raises(PathSyntaxError) as info:
        compile_path(text)
    assert info.value.offset == offset
    assert f"at offset {offset}: " in str(info.value)
    assert expected in str(info.value)


def test_path_get_indexes_dicts_and_lists() -> None:
    doc = {"a": {"b c": [10, {"d": None}]}, "n": 5}
    assert compile_path("$['a']['b c'][0]").get(doc) == 10
    assert compile_path("$.a['b c'][-1].d").get(doc) is None
    assert compile_path("$").get(doc) is doc


@pytest.mark.parametrize(
    "text", ["$.x", "$.a['b c'][2]", "$.a['b c'][-3]", "$.n.m", "$.n[0]", "$.a[0]", "$.a['b c'].d"]
)
def test_path_get_yields_missing_where_nothing_is(text: str) -> None:
    doc = {"a": {"b c": [10, {"d": None}]}, "n": 5}
    assert compile_path(text).get(doc) is MISSING


def test_root_path_reads_the_message_root_from_an_item() -> None:
    root = {"serial": "S1", "obs": [{"serial": "item"}]}
    item = root["obs"][0]
    assert compile_path("$$.serial").get(item, root) == "S1"
    assert compile_path("$.serial").get(item, root) == "item"
    assert compile_path("$$.serial").get(root) == "S1"


def test_field_names_render_under_the_item_prefix() -> None:
    assert compile_path("$.v['x y'][1]").field("$.obs[2]") == "$.obs[2].v['x y'][1]"
    assert compile_path("$$.t").field("$.obs[2]") == "$.t"


def test_iteration_path() -> None:
    each = compile_iteration("$.data['read ings'][*]")
    assert each.items({"data": {"read ings": [1, 2]}}) == [1, 2]
    assert each.items({"data": {"read ings": {"a": 1}}}) is None
    assert each.item_field(4) == "$.data['read ings'][4]"
    assert compile_iteration("$[*]").items([7]) == [7]


@pytest.mark.parametrize(
    ("text", "offset"), [("$.a", 3), ("$[*].b", 1), ("$[*][*]", 1), ("$$.a[*]", 0)]
)
def test_iteration_path_errors(text: str, offset: int) -> None:
    with pytest.raises(PathSyntaxError) as info:
        compile_iteration(text)
    assert info.value.offset == offset


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("unknown-metric.toml", "templates[1].values[0].metric: unknown metric 'pulse' (known: "),
        ("missing-timestamp.toml", "templates[0].timestamp: missing key: expected a path"),
        (
            "bad-path.toml",
            "templates[0].values[0].value: bad path '$.vitals[0': at offset 10: expected ']'",
        ),
        (
            "bad-timestamp-format.toml",
            "templates[0].timestamp_format: unknown format 'iso8601' "
            "(expected one of rfc3339, epoch_ms, epoch_s)",
        ),
        (
            "bad-metric-map.toml",
            "templates[0].values[0].metric_map.PR: unknown metric 'pulse_rate'",
        ),
        (
            "wildcard-outside-each.toml",
            "templates[0].device_id: bad path '$.ids[*]': at offset 5: "
            "'[*]' is only allowed in an 'each' path",
        ),
        ("unknown-key.toml", "templates[0].values[0].units: unknown key (expected one of value, "),
        ("not-toml.toml", "cannot read device profile"),
    ],
)
def test_bad_profile_names_file_key_and_expectation(name: str, message: str) -> None:
    path = BAD / name
    with pytest.raises(ConfigError) as info:
        load_profile(path, KNOWN)
    text = str(info.value)
    assert text.startswith(f"{path}: ")
    assert message in text


MINIMAL_TEMPLATE = """
[[templates]]
timestamp = "$.t"
timestamp_format = "epoch_ms"
values = [{ metric = "heart_rate", value = "$.hr", unit = "/min" }]
"""


def _write(tmp_path: Path, text: str, name: str = "p.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('description = "x"\n' + MINIMAL_TEMPLATE, "name: missing key"),
        ('name = "Bad Name"\n' + MINIMAL_TEMPLATE, "name: expected lowercase letters"),
        ('name = "p"\ntemplates = []', "templates: expected at least one [[templates]] table"),
        ('name = "p"\nextra = 1\n' + MINIMAL_TEMPLATE, "extra: unknown key"),
        (
            'name = "p"\n'
            + MINIMAL_TEMPLATE.replace('unit = "/min"', 'unit = "/min", unit_from = "$.u"'),
            "templates[0].values[0].unit: expected exactly one of 'unit'",
        ),
        (
            'name = "p"\n' + MINIMAL_TEMPLATE.replace('unit = "/min"', 'unit_map = { a = "b" }'),
            "templates[0].values[0].unit: expected exactly one of 'unit'",
        ),
        (
            'name = "p"\n'
            + MINIMAL_TEMPLATE.replace('unit = "/min"', 'unit = "/min", unit_map = { a = "b" }'),
            "templates[0].values[0].unit_map: only allowed with unit_from",
        ),
        (
            'name = "p"\n'
            + MINIMAL_TEMPLATE.replace('metric = "heart_rate"', 'metric_from = "$.c"'),
            "templates[0].values[0].metric_map: expected a non-empty metric_map",
        ),
        (
            'name = "p"\n'
            + MINIMAL_TEMPLATE.replace(
                'metric = "heart_rate"', 'metric_map = { HR = "heart_rate" }'
            ),
            "templates[0].values[0].metric: expected exactly one of 'metric' or 'metric_from'",
        ),
        (
            'name = "p"\n'
            + MINIMAL_TEMPLATE.replace('unit = "/min"', 'unit = "/min", unmapped = "skip"'),
            "templates[0].values[0].unmapped: expected 'reject' or 'skip', "
            "and only with metric_from",
        ),
        (
            'name = "p"\n'
            + MINIMAL_TEMPLATE.replace('unit = "/min"', 'unit = "/min", required = 1'),
            "templates[0].values[0].required: expected true or false, got int 1",
        ),
        (
            'name = "p"\n' + MINIMAL_TEMPLATE.replace("values = [", "values = []\nx = ["),
            "templates[0].x: unknown key",
        ),
        (
            'name = "p"\n'
            + MINIMAL_TEMPLATE.replace("values = [{ metric", "values = []\nv = [{ metric"),
            "templates[0].v: unknown key",
        ),
        (
            'name = "p"\n'
            + MINIMAL_TEMPLATE.replace(
                'timestamp = "$.t"', 'timestamp = "$.t"\nmatch = { "$.k" = [1] }'
            ),
            'templates[0].match."$.k": expected a string, number or boolean',
        ),
        (
            'name = "p"\n'
            + MINIMAL_TEMPLATE.replace(
                'timestamp = "$.t"', 'timestamp = "$.t"\nmatch = { "k" = 1 }'
            ),
            "templates[0].match.\"k\": bad path 'k': at offset 0",
        ),
        (
            'name = "p"\n'
            + MINIMAL_TEMPLATE.replace('timestamp = "$.t"', 'timestamp = "$.t"\neach = "$.items"'),
            "templates[0].each: bad path '$.items': at offset 7: "
            "an 'each' path must end with '[*]'",
        ),
        (
            'name = "p"\n' + MINIMAL_TEMPLATE.replace('timestamp = "$.t"', "timestamp = 5"),
            "templates[0].timestamp: expected a path such as '$.a.b', got int 5",
        ),
        (
            'name = "p"\n' + MINIMAL_TEMPLATE.replace('value = "$.hr", ', ""),
            "templates[0].values[0].value: missing key",
        ),
        ('name = "p"\ntemplates = [1]', "templates[0]: expected a table, got 1"),
    ],
)
def test_profile_validation_errors(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_profile(path, KNOWN)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_load_profiles_keys_by_name_and_rejects_duplicates(tmp_path: Path) -> None:
    _write(tmp_path, 'name = "alpha"\n' + MINIMAL_TEMPLATE, "a.toml")
    _write(tmp_path, 'name = "beta"\n' + MINIMAL_TEMPLATE, "b.toml")
    (tmp_path / "notes.txt").write_text("ignored", encoding="utf-8")
    assert sorted(load_profiles(tmp_path, KNOWN)) == ["alpha", "beta"]
    _write(tmp_path, 'name = "alpha"\n' + MINIMAL_TEMPLATE, "c.toml")
    with pytest.raises(ConfigError, match=r"c\.toml: name: profile 'alpha' is already defined in"):
        load_profiles(tmp_path, KNOWN)


def test_load_profiles_needs_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a directory of device profiles"):
        load_profiles(tmp_path / "nope", KNOWN)


def test_shipped_profiles_load() -> None:
    profiles = load_profiles(DEFAULT_PROFILE_DIR, KNOWN)
    assert sorted(profiles) == ["glucoflow-cgm", "medsys-bedside", "pulsewear-watch"]
    assert all(p.description for p in profiles.values())


# --------------------------------------------------------------------------- decoding

SHIPPED = load_profiles(DEFAULT_PROFILE_DIR, KNOWN)


def _ctx(device_id: str | None) -> DecodeContext:
    return DecodeContext("t", device_id, 0)


def test_pulsewear_recorded_payload() -> None:
    payload = (PAYLOADS / "pulsewear-watch.json").read_bytes()
    result = SHIPPED["pulsewear-watch"].decode(payload, _ctx("pw-0001"))
    at = T0_US + 250_000
    assert result.readings == [
        RawReading("pw-0001", "heart_rate", 72.0, "bpm", at, 17),
        RawReading("pw-0001", "spo2", 97.0, "%", at, 17),
        RawReading("pw-0001", "hrv_sdnn", 42.5, "ms", at, 17),
        RawReading("pw-0001", "steps", 5321.0, "{steps}", at, 17),
    ]
    assert result.rejections == []


def test_medsys_recorded_payload_maps_codes_and_units() -> None:
    payload = (PAYLOADS / "medsys-bedside.json").read_bytes()
    result = SHIPPED["medsys-bedside"].decode(payload, _ctx(None))
    assert result.readings == [
        RawReading("MS-0001", "heart_rate", 88.0, "/min", T0_US, 1042),
        RawReading("MS-0001", "respiratory_rate", 18.0, "{breaths}/min", T0_US, 1042),
        RawReading("MS-0001", "spo2", 94.0, "%", T0_US, 1042),
        RawReading("MS-0001", "systolic_bp", 132.0, "mm[Hg]", T0_US, 1042),
        RawReading("MS-0001", "diastolic_bp", 84.0, "mm[Hg]", T0_US, 1042),
        RawReading("MS-0001", "mean_bp", 100.0, "mm[Hg]", T0_US, 1042),
        RawReading("MS-0001", "body_temperature", 100.4, "[degF]", T0_US, 1042),
    ]
    assert result.rejections == []


def test_glucoflow_backfill_has_one_seq_and_time_per_item() -> None:
    payload = (PAYLOADS / "glucoflow-cgm-backfill.json").read_bytes()
    result = SHIPPED["glucoflow-cgm"].decode(payload, _ctx("GF-0001"))
    assert result.readings == [
        RawReading("GF-0001", "cgm_glucose", 112.0, "mg/dL", T0_US, 1001),
        RawReading("GF-0001", "cgm_glucose", 118.0, "mg/dL", T0_US + 300_000_000, 1002),
        RawReading("GF-0001", "cgm_glucose", 127.0, "mg/dL", T0_US + 600_000_000, 1003),
    ]


ONE_HR = [{"code": "HR", "value": 60, "unit": "bpm"}]


def _medsys(observations: object = ONE_HR, **extra: object) -> bytes:
    doc = {
        "msg_type": "VITALS",
        "monitor": {"serial": "MS-1"},
        "time": "2025-03-01T08:00:00Z",
        "seq": 5,
        "observations": observations,
        **extra,
    }
    return orjson.dumps(doc)


def test_medsys_unknown_code_and_bad_value_reject_only_that_item() -> None:
    payload = _medsys(
        [
            {"code": "ST_II", "value": 0.1, "unit": "mV"},
            {"code": "HR", "value": "n/a", "unit": "bpm"},
            {"code": "TEMP", "value": 37.5, "unit": "C"},
            {"code": "RR", "value": 12, "unit": "rpm"},
            {"value": 12, "unit": "bpm"},
            {"code": "SPO2", "value": 97},
        ]
    )
    result = SHIPPED["medsys-bedside"].decode(payload, _ctx("MS-1"))
    assert result.readings == [
        RawReading("MS-1", "body_temperature", 37.5, "Cel", T0_US, 5),
        RawReading("MS-1", "respiratory_rate", 12.0, "rpm", T0_US, 5),  # unmapped unit: as sent
    ]
    assert [(r.reason_code, r.field, r.device_id) for r in result.rejections] == [
        ("bad_value", "$.observations[0].code", "MS-1"),
        ("bad_value", "$.observations[1].value", "MS-1"),
        ("missing_field", "$.observations[4].code", "MS-1"),
        ("missing_field", "$.observations[5].unit", "MS-1"),
    ]
    assert result.rejections[0].reason.startswith(
        "$.observations[0].code: string 'ST_II' is not a code of metric_map (HR, RR, "
    )


@pytest.mark.parametrize(
    ("payload", "code", "field"),
    [
        (_medsys(time="2025-03-01T08:00:00"), "bad_timestamp", "$.time"),
        (_medsys(seq=-4), "bad_value", "$.seq"),
        (_medsys(monitor={"serial": "MS-2"}), "device_mismatch", "$.monitor.serial"),
        (_medsys(monitor={"serial": ["MS-1"]}), "bad_value", "$.monitor.serial"),
        (_medsys({"code": "HR"}), "bad_shape", "$.observations"),
        (_medsys(msg_type="ALARM"), "no_template", ""),
        (b"[1, 2]", "no_template", ""),
        (b"{", "malformed_json", "$"),
    ],
)
def test_message_level_errors_raise_once(payload: bytes, code: str, field: str) -> None:
    with pytest.raises(DecodeError) as info:
        SHIPPED["medsys-bedside"].decode(payload, _ctx("MS-1"))
    assert (info.value.reason_code, info.value.field) == (code, field)


def test_empty_each_array_is_no_readings() -> None:
    assert SHIPPED["medsys-bedside"].decode(_medsys([]), _ctx("MS-1")) == ([], [])


def test_missing_each_array_is_missing_field() -> None:
    payload = orjson.dumps({"msg_type": "VITALS", "time": "2025-03-01T08:00:00Z"})
    with pytest.raises(DecodeError) as info:
        SHIPPED["medsys-bedside"].decode(payload, _ctx("MS-1"))
    assert (info.value.reason_code, str(info.value)) == (
        "missing_field",
        "$.observations: array to iterate is missing",
    )


def test_per_item_time_failure_rejects_only_that_item() -> None:
    payload = orjson.dumps(
        {
            "sensor_id": "GF-1",
            "egvs": [
                {"seq": 1, "t": "soon", "mgdl": 100},
                {"seq": 2, "t": 1740816000, "mgdl": 101},
                {"seq": 3, "mgdl": 102},
            ],
        }
    )
    result = SHIPPED["glucoflow-cgm"].decode(payload, _ctx(None))
    assert result.readings == [RawReading("GF-1", "cgm_glucose", 101.0, "mg/dL", T0_US, 2)]
    assert result.rejections == [
        Rejection(
            "bad_timestamp",
            "$.egvs[0].t",
            "$.egvs[0].t: expected epoch seconds, got string 'soon'",
            "GF-1",
        ),
        Rejection("missing_field", "$.egvs[2].t", "$.egvs[2].t: timestamp is missing", "GF-1"),
    ]


def test_watch_optional_values_are_skipped_but_not_all_of_them() -> None:
    profile = SHIPPED["pulsewear-watch"]
    base = {"msg": "telemetry", "watch": {"id": "pw-1"}, "time_ms": 1740816000000, "counter": 1}
    only_hr = profile.decode(
        orjson.dumps({**base, "vitals": {"hr_bpm": 70, "spo2_pct": None}}), _ctx("pw-1")
    )
    assert only_hr == ([RawReading("pw-1", "heart_rate", 70.0, "bpm", T0_US, 1)], [])
    empty = profile.decode(orjson.dumps({**base, "vitals": {}}), _ctx("pw-1"))
    assert empty.readings == []
    (rejection,) = empty.rejections
    assert (rejection.reason_code, rejection.field) == ("missing_field", "$")
    assert rejection.reason == (
        "$: none of the values is present ($.vitals.hr_bpm, $.vitals.spo2_pct, "
        "$.vitals.hrv_sdnn_ms, $.activity.steps_total)"
    )


def _profile(tmp_path: Path, text: str) -> DeviceProfile:
    return load_profile(_write(tmp_path, 'name = "t"\n' + text), KNOWN)


def test_templates_are_tried_in_order_and_match_is_type_strict(tmp_path: Path) -> None:
    profile = _profile(
        tmp_path,
        """
[[templates]]
name = "flagged"
match = { "$.v" = 1, "$.on" = true }
timestamp = "$.t"
timestamp_format = "epoch_s"
values = [{ metric = "heart_rate", value = "$.a", unit = "/min" }]

[[templates]]
name = "fallback"
match = { "$.v" = 1 }
timestamp = "$.t"
timestamp_format = "epoch_s"
values = [{ metric = "spo2", value = "$.a", unit = "%" }]
""",
    )

    def metric(doc: dict[str, object]) -> str:
        (reading,) = profile.decode(orjson.dumps({"t": 0, "a": 1, **doc}), _ctx("d")).readings
        return reading.metric

    assert metric({"v": 1, "on": True}) == "heart_rate"
    assert metric({"v": 1.0, "on": True}) == "heart_rate"
    assert metric({"v": 1, "on": 1}) == "spo2"
    assert metric({"v": 1}) == "spo2"
    with pytest.raises(
        DecodeError, match=r"matches no template of profile 't' \(flagged, fallback\)"
    ):
        profile.decode(orjson.dumps({"v": True, "t": 0, "a": 1}), _ctx("d"))


def test_skip_unmapped_codes_numeric_codes_and_numeric_device_ids(tmp_path: Path) -> None:
    profile = _profile(
        tmp_path,
        """
[[templates]]
each = "$['obs list'][*]"
device_id = "$$.serial"
timestamp = "$.when"
timestamp_format = "rfc3339"

[[templates.values]]
metric_from = "$.mdc"
metric_map = { "147842" = "heart_rate" }
unmapped = "skip"
value = "$.v"
unit_from = "$.u"
unit_map = { "bpm" = "/min" }
""",
    )
    payload = orjson.dumps(
        {
            "serial": 4711,
            "obs list": [
                {"mdc": 147842, "v": 64, "u": "bpm", "when": "2025-03-01T08:00:00Z"},
                {"mdc": 150456, "v": 97, "u": "%", "when": "2025-03-01T08:00:00Z"},
            ],
        }
    )
    assert profile.decode(payload, _ctx(None)) == (
        [RawReading("4711", "heart_rate", 64.0, "/min", T0_US, None)],
        [],
    )


def test_device_id_from_topic_when_payload_has_none(tmp_path: Path) -> None:
    profile = _profile(tmp_path, MINIMAL_TEMPLATE)
    payload = b'{"t": 1740816000000, "hr": 60}'
    assert profile.decode(payload, _ctx("topic-dev")).readings[0].device_id == "topic-dev"
    with pytest.raises(DecodeError) as info:
        profile.decode(payload, _ctx(None))
    assert info.value.reason_code == "missing_field"
    assert str(info.value) == "$: no device id in the payload or topic"


def test_required_value_missing_and_epoch_ms_out_of_range(tmp_path: Path) -> None:
    profile = _profile(tmp_path, MINIMAL_TEMPLATE)
    result = profile.decode(b'{"t": 1740816000000}', _ctx("d"))
    assert result == (
        [],
        [Rejection("missing_field", "$.hr", "$.hr: required value is missing", "d")],
    )
    with pytest.raises(DecodeError) as info:
        profile.decode(b'{"t": 1e30, "hr": 60}', _ctx("d"))
    assert (info.value.reason_code, info.value.field) == ("bad_timestamp", "$.t")
