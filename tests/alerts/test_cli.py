"""The ``news2``, ``careplan`` and ``evaluate`` commands (parser and handlers)."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import pytest

from alerts import cli

SCENARIO = """
[scenario]
name = "tiny"
duration = "20m"

[patient.P001]
kinds = ["bedside_monitor"]
[patient.P002]
diabetic = true
kinds = ["cgm"]
[patient.P003]
kinds = ["smartwatch"]

[[event]]
kind = "tachycardia"
patient = "P001"
at = "3m"
ramp = "1m"
plateau = "5m"
recovery = "2m"
target = 150

[[event]]
kind = "dropout"
patient = "P002"
device = "cgm"
at = "1m"
duration = "18m"

[[event]]
kind = "garbage"
patient = "P003"
device = "smartwatch"
at = "5m"
duration = "3m"
"""


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vitalwire")
    cli.add_arguments(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_news2_reads_stdin_and_prints_the_documented_json() -> None:
    obs = {"respiration_rate": 25, "spo2": 95, "spo2_scale": 1, "supplemental_oxygen": False,
           "systolic_bp": 120, "pulse": 80, "consciousness": "A", "temperature_c": 37.0}
    out = io.StringIO()
    assert cli.run_news2(parse("news2"), io.StringIO(json.dumps(obs)), out) == 0
    assert json.loads(out.getvalue()) == {
        "subscores": {"respiration_rate": 3, "spo2": 1, "air_or_oxygen": 0, "systolic_bp": 0,
                      "pulse": 0, "consciousness": 0, "temperature": 0},
        "aggregate": 4, "any_parameter_3": True, "risk_band": "low-medium",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ("{not json", "vitalwire news2: error: input: not valid JSON: "),
        ('{"spo2": 97}', "vitalwire news2: error: respiration_rate: expected a number, got "
                         "missing"),
        ('{"respiration_rate": 12, "spo2": 97, "systolic_bp": 120, "pulse": 70, '
         '"temperature_c": 37, "consciousness": "confused"}',
         "vitalwire news2: error: consciousness: expected one of A, C, V, P, U, got 'confused'"),
    ],
)
def test_news2_rejects_invalid_input_with_status_2(stdin: str, message: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    assert cli.run_news2(parse("news2"), io.StringIO(stdin), out) == 2
    assert out.getvalue() == ""
    assert capsys.readouterr().err.startswith(message)


def test_careplan_apply_show_set_history_on_a_database(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "vw.duckdb")
    assert cli.run(parse("careplan", "show", "P1", "--db", db)) == 2
    assert capsys.readouterr().err == f"vitalwire careplan: error: --db: no database at {db}\n"
    assert cli.run(parse("careplan", "apply-template", "P1", "adult-ward", "--reason",
                         "admitted", "--author", "dr.lee", "--db", db)) == 0
    assert capsys.readouterr().out == ("care plan of P1: version 1 stored from adult-ward\n")
    assert cli.run(parse("careplan", "show", "P1", "--db", db)) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("# care plan of P1, version 1\n")
    edited = shown.replace("low = 50\n", "low = 45\n", 1)
    plan_file = tmp_path / "p1.toml"
    plan_file.write_text(edited, encoding="utf-8")
    assert cli.run(parse("careplan", "set", "P1", "--file", str(plan_file), "--reason",
                         "athlete", "--author", "dr.kim", "--db", db)) == 0
    assert capsys.readouterr().out == "care plan of P1: version 2 stored\n"
    assert cli.run(parse("careplan", "show", "P1", "--json", "--db", db)) == 0
    doc = json.loads(capsys.readouterr().out)
    hr = next(r for r in doc["rule"] if r["id"] == "hr")
    assert (doc["version"], doc["author"], hr["low"]) == (2, "dr.kim", 45)
    assert cli.run(parse("careplan", "show", "P1", "--version", "1", "--json", "--db", db)) == 0
    assert json.loads(capsys.readouterr().out)["template"] == "adult-ward"
    assert cli.run(parse("careplan", "history", "P1", "--json", "--db", db)) == 0
    history = json.loads(capsys.readouterr().out)
    assert [(h["version"], h["author"], h["reason"]) for h in history] == [
        (1, "dr.lee", "admitted"), (2, "dr.kim", "athlete")]


def test_careplan_set_reports_the_rule_and_field(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nid = "g"\nkind = "threshold"\nmetric = "cgm_glucose"\n'
                   'unit = "mmHg"\nlow = 70\n', encoding="utf-8")
    assert cli.run(parse("careplan", "set", "P1", "--file", str(bad), "--reason", "x",
                         "--db", str(tmp_path / "vw.duckdb"))) == 2
    assert capsys.readouterr().err == (
        "vitalwire careplan: error: care plan for P1: rule 'g': unit: 'mmHg' is not "
        "convertible to mg/dL for cgm_glucose (accepted: mg/dL, mmol/L)\n")
    assert cli.run(parse("careplan", "apply-template", "P1", "icu", "--reason", "x",
                         "--db", str(tmp_path / "vw.duckdb"))) == 2
    assert "no template 'icu'" in capsys.readouterr().err


def test_careplan_goes_through_the_given_data_op(capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[Path, str, dict[str, Any]]] = []

    def data_op(db: Path, op: str, **kwargs: Any) -> Any:
        calls.append((db, op, kwargs))
        return [{"version": 1, "created_at": "2025-03-03T08:00:00Z", "author": "a",
                 "reason": "r", "template": "t1d-cgm", "rules": ["glucose_low"]}]

    assert cli.run(parse("careplan", "history", "P7", "--db", "x.duckdb"), data_op=data_op) == 0
    assert calls == [(Path("x.duckdb"), "careplan.history", {"patient": "P7"})]
    assert "t1d-cgm" in capsys.readouterr().out


def test_evaluate_a_small_scenario(tmp_path: Path) -> None:
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(SCENARIO, encoding="utf-8")
    out = io.StringIO()
    args = parse("evaluate", "--scenario", str(scenario), "--patients", "3", "--json",
                 "--check", "--batch-s", "5")
    assert cli.run_evaluate(args, out) == 0
    fig = json.loads(out.getvalue())
    overall = fig["overall"]
    assert (fig["patients"], fig["duration_s"]) == (3, 1200.0)
    assert (overall["events"], overall["detected"], overall["goal_met"]) == (3, 3, True)
    assert overall["alerts"] < overall["naive_alerts"]
    by_rule = {r["rule_id"]: r for r in fig["rules"]}
    assert by_rule["hr"]["detected"] == 1
    assert by_rule["cgm_stale"]["detected"] == 1
    assert by_rule["payload_errors"]["detected"] == 1


def test_evaluate_rejects_a_bad_plan_option(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(SCENARIO, encoding="utf-8")
    args = parse("evaluate", "--scenario", str(scenario), "--plan", "P001")
    assert cli.run_evaluate(args, io.StringIO()) == 2
    assert capsys.readouterr().err == (
        "vitalwire evaluate: error: --plan: expected PATIENT=TEMPLATE[+TEMPLATE], got 'P001'\n")
