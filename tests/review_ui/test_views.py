"""The review pages' HTML fragments: what they say, and that nobody can inject markup."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from inspect_app.domain import DefectClass
from review_ui import views
from review_ui.app import page_head


def test_one_key_per_class_in_the_models_order() -> None:
    assert {k: c.value for k, c in views.VERDICT_KEYS.items()} == {
        "1": "ok",
        "2": "scratch",
        "3": "crack",
        "4": "pit",
        "5": "discoloration",
    }


def test_the_page_script_and_the_key_badges_come_from_the_same_table() -> None:
    head = page_head()
    mapping = re.search(r"window\.inspectVerdictKeys = (\{.*?\});", head)
    assert mapping is not None
    for key, cls in views.VERDICT_KEYS.items():
        assert f'"{key}": "verdict-{cls.value}"' in mapping.group(1)
        assert f'#verdict-{cls.value}::before {{ content: "{key}"; }}' in head
    assert '#cmd-undo::before { content: "u"; }' in head
    legend = views.hotkey_legend_html()
    for key, _ in views.COMMAND_KEYS:
        assert f"<kbd>{key}</kbd>" in legend


@pytest.mark.parametrize(
    ("seconds", "long", "short"),
    [
        (0, "0 s", "0s"),
        (59.9, "59 s", "59s"),
        (185, "3 min 05 s", "3m05s"),
        (2 * 3600 + 600, "2 h 10 min", "2h10m"),
        (3 * 86400 + 4 * 3600, "3 d 4 h", "3d4h"),
        (-5, "0 s", "0s"),
    ],
)
def test_durations_read_as_people_say_them(seconds: float, long: str, short: str) -> None:
    assert views.format_duration(seconds) == long
    assert views.format_duration(seconds, compact=True) == short


def test_a_part_card_escapes_what_cameras_and_people_typed() -> None:
    now = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    html = views.part_card_html(
        task_id=7,
        inspection_id=42,
        line_id="line-1",
        reason="decide",
        part_serial='<img src=x onerror="alert(1)">',
        captured_at=None,
        received_at=now - timedelta(minutes=11),
        now=now,
        escalated=True,
        escalation_note="<script>steal()</script>",
    )
    assert "<img src=x" not in html and "<script>" not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
    assert 'class="wait-late"' in html  # 11 minutes: the line has waited too long
    assert "ESCALATED" in html and 'data-task-id="7"' in html


def test_the_model_is_shown_only_when_the_claim_carries_it() -> None:
    hidden = views.model_panel_html(None, None, blind_reason="audits are blind")
    assert "Model hidden: audits are blind" in hidden and "heatmap" not in hidden
    shown = views.model_panel_html("scratch", 0.873, blind_reason="-")
    assert "Scratch" in shown and "87.3%" in shown and 'data-action="toggle-heatmap"' in shown


def test_a_refusal_names_each_side_against_its_target() -> None:
    side = {
        "n": 150,
        "errors": 2,
        "rate": 2 / 150,
        "upper_bound": 0.041,
        "target": 0.005,
        "min_labels": 200,
        "passed": False,
        "bound_excess": 0.036,
        "labels_short": 50,
        "more_labels_needed": 1234,
    }
    ok_side = {**side, "n": 400, "errors": 0, "upper_bound": 0.0075, "target": 0.02}
    ok_side |= {"passed": True, "bound_excess": 0.0, "labels_short": 0}
    html = views.refusal_html(
        "Not enough evidence for partial", {"escape": side, "false_reject": ok_side}
    )
    assert "Refused by the evidence gate" in html and "Not enough evidence for partial" in html
    assert "4.10%</b> vs 0.50%" in html
    assert "150 of 200 labeled parts needed" in html and "≈1,234 more labels needed" in html
    assert "✓ met" in html  # the false-reject side passed
    assert "escape.upper_bound" in html  # every figure, folded under "All figures"


def test_a_refusal_with_unknown_figures_still_shows_them_all() -> None:
    html = views.refusal_html("no", {"source": "<b>x</b>", "nested": {"passed": False}})
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "nested.passed" in html
    assert 'class="short"' in html


def test_an_event_summary_reads_as_old_to_new() -> None:
    details = {
        "old": {"level": "shadow", "pass_threshold": 0.98, "fail_threshold": 0.98},
        "new": {"level": "partial", "pass_threshold": 0.99, "fail_threshold": 0.98},
        "gate": {"gated": True, "allowed": False},
    }
    assert views.event_summary("level_change_refused", details) == (
        "level shadow → partial, pass_threshold 0.98 → 0.99 (gate: refused)"
    )
    relabel = {"inspection_id": 5, "old_label": "crack", "new_label": "pit"}
    assert views.event_summary("relabel", relabel) == "inspection 5: crack → pit"


def test_every_class_has_a_title() -> None:
    assert set(views.CLASS_TITLES) == {c.value for c in DefectClass}
    assert views.CLASS_TITLES["ok"] == "OK"
