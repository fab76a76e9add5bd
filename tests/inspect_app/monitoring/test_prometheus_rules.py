"""The alarm rules as a Prometheus rules file: rendered from the same definitions, shipped as
rendered, accepted by `promtool check rules`, and behaving as written under `promtool test
rules` (tests/inspect_app/monitoring/promtool/)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from inspect_app.cli import app
from inspect_app.monitoring.alarms import DEFAULT_RULES, AlarmRule
from inspect_app.monitoring.prometheus_rules import (
    alert_name,
    duration,
    range_seconds,
    render_rules,
    rule_expr,
)

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "deploy" / "prometheus" / "inspect_app.rules.yml"
PROMTOOL_TESTS = Path(__file__).parent / "promtool" / "inspect_app.rules.test.yml"
RULES = {rule.name: rule for rule in DEFAULT_RULES}


def _promtool() -> str:
    found = shutil.which("promtool") or shutil.which("/usr/bin/promtool")
    if found is None:
        pytest.skip("promtool not found (apt-get install prometheus, or scripts/system-deps.sh)")
    return found


def _promtool_run(*args: str) -> str:
    result = subprocess.run([_promtool(), *args], capture_output=True, text=True, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def _alerts(text: str) -> dict[str, dict]:
    (group,) = yaml.safe_load(text)["groups"]
    return {entry["alert"]: entry for entry in group["rules"]}


def test_the_shipped_file_is_what_the_rules_render() -> None:
    assert SHIPPED.read_text() == render_rules(DEFAULT_RULES), (
        "deploy/prometheus/inspect_app.rules.yml is stale: run `inspect-app monitoring"
        " prometheus-rules --out deploy/prometheus/inspect_app.rules.yml`"
    )


def test_the_cli_writes_the_same_file(tmp_path: Path) -> None:
    out = tmp_path / "rules" / "inspect_app.rules.yml"
    result = CliRunner().invoke(app, ["monitoring", "prometheus-rules", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text() == SHIPPED.read_text()
    printed = CliRunner().invoke(app, ["monitoring", "prometheus-rules"])
    assert printed.exit_code == 0 and printed.output == SHIPPED.read_text()


def test_one_alert_per_rule_with_its_severity_hold_and_clear_hold() -> None:
    alerts = _alerts(SHIPPED.read_text())
    assert list(alerts) == [alert_name(rule) for rule in DEFAULT_RULES]
    gate = alerts["InspectGateRefusalsHigh"]
    assert gate["labels"] == {"severity": "critical", "alarm": "gate_refusals_high"}
    assert "for" not in gate  # hold 0: fires at once
    assert gate["keep_firing_for"] == "2m"  # clear hold 2 evaluations of a minute
    assert alerts["InspectInputDrift"]["for"] == "1m"  # hold 1
    for entry in alerts.values():
        assert "{{ $labels.line }}" in entry["annotations"]["summary"]
        assert entry["annotations"]["description"]


def test_count_windows_map_to_time_ranges_at_the_nominal_line_speed() -> None:
    gate = RULES["gate_refusals_high"]  # 50 parts
    assert range_seconds(gate) == 300  # 10 parts a minute
    assert range_seconds(replace(gate, window_parts=200)) == 1200
    assert range_seconds(gate, parts_per_minute=60.0) == 60
    assert range_seconds(replace(gate, window_parts=2)) == 60  # never under a minute
    assert range_seconds(replace(gate, window_seconds=120.0)) == 120  # seconds bound parts
    assert range_seconds(replace(gate, window_parts=None, window_seconds=10.0)) == 10
    assert [duration(s) for s in (10, 60, 90, 300, 3600, 5400)] == [
        "10s", "1m", "90s", "5m", "1h", "90m",
    ]  # fmt: skip


def test_the_gate_refusal_rate_is_computed_from_the_counters() -> None:
    expr = rule_expr(replace(RULES["gate_refusals_high"], clear_threshold=0.2))
    assert " ".join(expr.split()) == (
        "sum by (line) (rate(inspect_gate_refusals_total[5m]))"
        " / sum by (line) (rate(inspect_decisions_total[5m])) > 0.2"
    )


def test_other_metrics_alert_on_the_gauge_the_service_alarms_on() -> None:
    expr = " ".join(rule_expr(RULES["input_drift"]).split())
    assert 'min by (line) (inspect_monitor_value{metric="input_drift"}) < 0.0001' in expr
    assert 'ALERTS{alertname="InspectInputDrift", alertstate="firing"}' in expr  # hysteresis
    assert "<= 0.01" in expr


def test_disabled_rules_are_left_out_and_a_line_gets_its_own_group() -> None:
    rules = [replace(rule, enabled=rule.name != "review_backlog_old") for rule in DEFAULT_RULES]
    text = render_rules(rules, line="line-7")
    alerts = _alerts(text)
    assert "InspectReviewBacklogOld" not in alerts and len(alerts) == len(DEFAULT_RULES) - 1
    assert yaml.safe_load(text)["groups"][0]["name"] == "inspect_app_line_line-7"
    assert 'inspect_gate_refusals_total{line="line-7"}' in alerts["InspectGateRefusalsHigh"]["expr"]


def test_promtool_accepts_the_shipped_file() -> None:
    output = _promtool_run("check", "rules", str(SHIPPED))
    assert f"SUCCESS: {len(DEFAULT_RULES)} rules found" in output


def test_promtool_accepts_a_lines_own_rules(tmp_path: Path) -> None:
    rules: list[AlarmRule] = [replace(rule, hold=3, clear_hold=0) for rule in DEFAULT_RULES]
    path = tmp_path / "line.rules.yml"
    path.write_text(render_rules(rules, line='line "A"', evaluation_interval_s=15))
    _promtool_run("check", "rules", str(path))


def test_promtool_unit_tests_of_the_shipped_rules() -> None:
    """The gate alarm fires when a camera goes dark and not on a clean line; input drift
    fires after its `for:`, holds through the hysteresis band and the clear hold."""
    output = _promtool_run("test", "rules", str(PROMTOOL_TESTS))
    assert "SUCCESS" in output
