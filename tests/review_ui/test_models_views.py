"""The Models page's handlers and views, called without a browser against a real database:
the registry with its model cards, a line's deployment and its champion/candidate
comparison on blind labels, the rollout buttons (their refusals shown with the reason and
figures, never raised), and the supervisor role checked in every handler."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI
from matplotlib.figure import Figure
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from inspect_app.accounts import get_user
from inspect_app.domain import DefectClass
from inspect_app.rollout import deployments, registry
from inspect_app.rollout.deployments import DeploymentRequest
from inspect_app.rollout.policy import Mode
from inspect_app.rollout.queries import TrafficBucket
from inspect_app.settings import Settings
from inspect_app.storage.tables import Deployment, Event, Inspection, Line, ModelPrediction
from inspect_app.timeutil import utcnow
from models.checkpoint import load_checkpoint, save_checkpoint
from review_ui import models_views as mv
from review_ui.auth import AccessDenied, NotLoggedIn
from review_ui.context import ReviewContext
from review_ui.models_page import (
    PAGE_OUTPUTS,
    apply_action,
    export_labels,
    run_action,
    select_version,
    show_models,
    start_shadow,
)
from tests.conftest import export_onnx_beside
from tests.review_ui.conftest import add_lines, add_people

SAM = SimpleNamespace(username="sam")  # what a handler reads of Gradio's request
INES = SimpleNamespace(username="ines")
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "models" / "weights" / "default.pt"
CANDIDATE = "defect-cnn-test-recalibrated"
SKIP = {"__type__": "update"}  # gr.skip(): the reason box keeps what was typed


@pytest.fixture(scope="module")
def candidate_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped weights recalibrated (another temperature, another version name, its
    figures grouped under "validation", no reference profile): a second valid version, with
    its checked ONNX export beside it, as a trained version has; exporting it again in each
    test's registration was 1.3 s of its ~2.5 s set-up."""
    base = load_checkpoint(DEFAULT_WEIGHTS)
    path = tmp_path_factory.mktemp("candidate") / "recalibrated.pt"
    save_checkpoint(
        path,
        base.model,
        config=base.config,
        class_names=base.class_names,
        preprocessing=base.preprocessing,
        temperature=base.temperature * 1.25,
        metrics={"validation": {"binary_accuracy": 0.99, "defect_recall": 0.985, "ece": 0.021}},
        data_seed=7,
        version=CANDIDATE,
    )
    export_onnx_beside(path)
    return path


@dataclass
class FakeRollout:
    """What the page uses of `rollout.serving.Rollout`: the configured model, loading a
    version (`broken` ones fail as a failed load does), and following a change."""

    default_version: str
    broken: set[str] = field(default_factory=set)
    warmed: list[str] = field(default_factory=list)
    refreshes: int = 0

    def warm(self, version: str) -> None:
        if version in self.broken:
            raise RuntimeError(f"out of memory loading {version}")
        self.warmed.append(version)

    def refresh(self) -> None:
        self.refreshes += 1


@dataclass
class ModelsWorld:
    context: ReviewContext
    rollout: FakeRollout
    champion: str
    candidate: str
    sam_id: int


def _probabilities(p_ok: float) -> dict[str, float]:
    rest = (1.0 - p_ok) / 4
    return {c.value: rest for c in DefectClass} | {"ok": p_ok}


def add_decided_parts(
    db: Session,
    add_labeled_parts: Any,
    world: ModelsWorld,
    parts: list[tuple[str, float, float]],
    *,
    decider: str = "champion",
) -> list[int]:
    """Blind-labeled parts on line-1 as the pipeline records them under a deployment: one
    prediction per version that ran (label, champion's P(ok), candidate's P(ok)), the
    decider's on the inspection row with its arm."""
    decided_by = world.champion if decider == "champion" else world.candidate
    index = 1 if decider == "champion" else 2
    ids = add_labeled_parts(
        db, "line-1", [p[index] for p in parts], [p[0] for p in parts],
        user_id=world.sam_id, model_version=decided_by,
    )  # fmt: skip
    for inspection_id, (_label, champion_p, candidate_p) in zip(ids, parts, strict=True):
        inspection = db.get(Inspection, inspection_id)
        assert inspection is not None
        inspection.arm = decider
        inspection.assignment_p = 1.0
        db.add(inspection)
        for version, p_ok in ((world.champion, champion_p), (world.candidate, candidate_p)):
            db.add(
                ModelPrediction(
                    inspection_id=inspection_id,
                    model_version=version,
                    role="decided" if version == decided_by else "shadow",
                    probabilities=_probabilities(p_ok),
                    predicted_class="ok" if p_ok >= 0.5 else "scratch",
                    p_defect=1.0 - p_ok,
                )
            )
    db.commit()
    return ids


# 20 blind-labeled parts: both right on 14; only the candidate right on 4 defects the
# champion passed; only the champion right on 2 ok parts the candidate failed.
SHADOW_PARTS = (
    [("ok", 0.99, 0.99)] * 8
    + [("scratch", 0.01, 0.01)] * 6
    + [("crack", 0.7, 0.2)] * 4
    + [("ok", 0.9, 0.3)] * 2
)


@pytest.fixture
def world(
    engine: Engine, tmp_path: Path, candidate_checkpoint: Path, add_labeled_parts: Any
) -> ModelsWorld:
    """Two registered versions (the shipped one, the service's, and its recalibration by
    sam), line-1 with the recalibration in shadow and 20 blind-labeled parts, line-2 with
    the champion alone."""
    add_people(engine, ("ines", "inspector"), ("sam", "supervisor"))
    add_lines(engine, ("line-1", "shadow"), ("line-2", "shadow"))
    data_dir = tmp_path / "service"
    with Session(engine, expire_on_commit=False) as db:
        champion = registry.ensure_registered(db, DEFAULT_WEIGHTS, data_dir).version
        candidate = registry.register_model(
            db, candidate_checkpoint, data_dir, registered_by="sam",
            notes="temperature refitted on March's images", parent_version=champion,
        ).version.version  # fmt: skip
        sam = get_user(db, "sam")
        assert sam.id is not None
        deployments.set_deployment(
            db, "line-1", DeploymentRequest(candidate, Mode.SHADOW), actor=sam,
            reason="try the recalibration", default_version=champion,
        )  # fmt: skip
    rollout = FakeRollout(champion)
    app = FastAPI()
    app.state.settings = Settings(data_dir=data_dir)
    app.state.engine = engine
    app.state.predictor = SimpleNamespace(version=champion)
    app.state.rollout = rollout
    built = ModelsWorld(ReviewContext(app), rollout, champion, candidate, sam.id)
    with Session(engine, expire_on_commit=False) as db:
        add_decided_parts(db, add_labeled_parts, built, SHADOW_PARTS)
    return built


def outputs_by_name(outputs: tuple[Any, ...] | list[Any]) -> dict[str, Any]:
    names = ["line", "registry", "version", "card", "deployment", "comparison", "traffic",
             "events", "candidate", "promote", "rollback", "rearm", "finalize"]  # fmt: skip
    assert len(outputs) == len(names) == PAGE_OUTPUTS
    return dict(zip(names, outputs, strict=True))


def interactive(page: dict[str, Any]) -> dict[str, bool]:
    return {b: page[b]["interactive"] for b in ("promote", "rollback", "rearm", "finalize")}


def deployment_row(world: ModelsWorld, line_id: str = "line-1") -> Deployment | None:
    with Session(world.context.engine) as db:
        return db.get(Deployment, line_id)


# -- reading ---------------------------------------------------------------------------------


def test_the_registry_lists_every_version_with_its_model_card(world: ModelsWorld) -> None:
    page = outputs_by_name(show_models(world.context, None, None, SAM))
    table = page["registry"]
    assert table.count("data-version=") == 2
    champion_row, candidate_row = (
        table.split(f'data-version="{name}"')[1].split("</tr>")[0]
        for name in (world.champion, world.candidate)
    )
    # the shipped card has its figures at the top of metrics, the candidate's under validation
    assert "97.38%" in champion_row and "96.25%" in champion_row and "0.0132" in champion_row
    assert "<td>system</td>" in champion_row and "<td>yes</td>" in champion_row
    assert "line-1 champion, line-2 champion" in champion_row
    assert "99.00%" in candidate_row and "98.50%" in candidate_row and "0.0210" in candidate_row
    assert "<td>sam</td>" in candidate_row and "<td>no</td>" in candidate_row
    assert f"<code>{world.champion}</code>" in candidate_row  # its parent
    assert "<td>7</td>" in candidate_row and "line-1 candidate (shadow)" in candidate_row
    assert "March&#x27;s images" in candidate_row
    # the newest version's card is shown first; choosing another shows its card
    assert page["version"]["value"] == world.candidate
    assert page["version"]["choices"] == [world.candidate, world.champion]
    assert f'data-version="{world.candidate}"' in page["card"]
    assert f"{1.2798137908999367 * 1.25:.4f}" in page["card"]
    card = select_version(world.context, world.champion, SAM)
    assert f'data-version="{world.champion}"' in card and "Binary accuracy" in card
    assert "&quot;binary_accuracy&quot;: 0.97375" in card  # the whole card, folded
    assert "mobilenet_v3_small" in card or "width_mult" in card
    with pytest.raises(Exception, match="no registered model version"):
        select_version(world.context, "defect-cnn-nobody", SAM)


def test_a_line_in_shadow_shows_what_runs_and_the_paired_comparison(world: ModelsWorld) -> None:
    page = outputs_by_name(show_models(world.context, "line-1", None, SAM))
    assert page["line"] == {
        "choices": ["line-1", "line-2"],
        "value": "line-1",
        "__type__": "update",
    }
    runs = page["deployment"]
    assert f"<code>{world.champion}</code> decides 100.0% of parts" in runs
    assert f"<code>{world.candidate}</code>" in runs and "armed" in runs
    assert "shadow (the candidate runs hidden" in runs and "revision 1, by sam" in runs
    compared = page["comparison"]
    for role in ("champion", "candidate"):
        block = compared.split(f'data-role="{role}"')[1].split('data-role="')[0]
        assert "Blind labels</th><td>20</td>" in block
        assert "does not pass the gate" in block and "95% upper bound" in block
        assert "labeled parts" in block  # the gate's reason: too few labels yet
    assert "champion right 80.0%, candidate right 90.0%" in compared
    assert "2 only the champion got right, 4 only the candidate did" in compared
    assert "McNemar exact p = 0.688" in compared  # binomial test of 4 of 6 discordant
    assert "Canary" not in compared  # no step verdict outside a canary
    # the traffic: every part decided by the champion
    assert isinstance(page["traffic"], Figure)
    (share,) = [ln for ln in page["traffic"].axes[0].lines if ln.get_label() == "candidate share"]
    assert list(share.get_ydata()) == [0.0]
    # the events: the shadow start with who and why, and both registrations
    events = page["events"]
    assert events.count('data-kind="model_registered"') == 2
    started = events.split('data-kind="deployment_change"')[1].split("</tr>")[0]
    assert "<td>sam</td><td>try the recalibration</td>" in started
    assert f"candidate — → {world.candidate}, mode none → shadow" in started
    assert page["candidate"]["choices"] == [world.candidate]  # never the champion
    assert interactive(page) == {
        "promote": True,
        "rollback": True,
        "rearm": False,
        "finalize": True,
    }
    # a line without a candidate compares nothing and offers no buttons but the shadow
    other = outputs_by_name(show_models(world.context, "line-2", None, SAM))
    assert "No candidate on this line" in other["comparison"]
    assert "the service's configured model; no deployment change yet" in other["deployment"]
    assert not any(interactive(other).values())


def test_no_lines_and_no_versions(engine: Engine, tmp_path: Path) -> None:
    add_people(engine, ("sam", "supervisor"))
    app = FastAPI()
    app.state.settings = Settings(data_dir=tmp_path / "service")
    app.state.engine = engine
    app.state.rollout = FakeRollout("defect-cnn-none")
    page = outputs_by_name(show_models(ReviewContext(app), "line-9", None, SAM))
    assert "No version is registered yet" in page["registry"]
    assert "No lines yet" in page["deployment"] and page["traffic"] is None


# -- the buttons -----------------------------------------------------------------------------


def test_promote_to_a_canary_then_the_step_holds_on_too_few_labels(
    world: ModelsWorld, add_labeled_parts: Any
) -> None:
    ctx = world.context
    result, reason, *rest = run_action(ctx, "promote", "line-1", " shadow agrees ", None, SAM)
    assert "result-ok" in result and "canary step 1 of 4: it decides 5% of parts" in result
    assert reason == ""  # cleared once applied
    assert (world.rollout.warmed, world.rollout.refreshes) == ([world.candidate], 1)
    page = outputs_by_name(rest)
    assert "step 1 of 4 (5%)" in page["deployment"]
    assert "0 of 50 labels" in page["comparison"]
    # no evidence of its own to recommend thresholds on: it decides at the line's
    assert "<th>Its thresholds</th><td>the line's</td>" in page["deployment"]
    assert "Candidate at its own thresholds</b> pass ≥ 0.98 / fail ≥ 0.98" in page["comparison"]

    # five parts the candidate decided, blind-labeled: the step holds at 5 of 50
    with Session(ctx.engine, expire_on_commit=False) as db:
        add_decided_parts(db, add_labeled_parts, world, [("ok", 0.99, 0.99)] * 5,
                          decider="candidate")  # fmt: skip
    page = outputs_by_name(show_models(ctx, "line-1", None, SAM))
    step = page["comparison"].split("step-verdict")[1].split("comparison-grid")[0]
    assert 'data-outcome="hold"' in step and "5 of 50 labels" in step
    assert "Holding on 5 of 50 labels" in step
    (share,) = [ln for ln in page["traffic"].axes[0].lines if ln.get_label() == "candidate share"]
    assert list(share.get_ydata()) == [20.0]  # 5 of the line's 25 decided parts
    assert [ln.get_ydata()[0] for ln in page["traffic"].axes[0].lines][1] == pytest.approx(5.0)

    # promoting again is refused with the reason and the step's figures, on the page
    revision = deployment_row(world).revision  # type: ignore[union-attr]
    result, reason, *_ = run_action(ctx, "promote", "line-1", "hurry", None, SAM)
    assert 'data-testid="refusal"' in result
    assert "step 1 of 4 has not passed: Holding on 5 of 50 labels" in result
    assert "gate-table" in result and "All figures" in result
    assert reason == SKIP and world.rollout.refreshes == 1
    assert deployment_row(world).revision == revision  # type: ignore[union-attr]


def test_rollback_quarantines_rearm_lifts_it_and_finalize_makes_the_champion(
    world: ModelsWorld,
) -> None:
    ctx = world.context
    run_action(ctx, "promote", "line-1", "shadow agrees", None, SAM)
    result, _reason, *rest = run_action(
        ctx, "rollback", "line-1", "odd rejects at night", None, SAM
    )
    assert "rolled back and quarantined" in result
    page = outputs_by_name(rest)
    assert "quarantined" in page["deployment"] and "odd rejects at night" in page["deployment"]
    assert "line-1 candidate (quarantined)" in page["registry"]
    assert interactive(page) == {
        "promote": False,
        "rollback": False,
        "rearm": True,
        "finalize": False,
    }
    again, *_ = run_action(ctx, "rollback", "line-1", "twice", None, SAM)
    assert "Not applied" in again and "already rolled back (odd rejects at night)" in again
    promoted, *_ = run_action(ctx, "promote", "line-1", "anyway", None, SAM)
    assert "is quarantined (odd rejects at night); re-arm it first" in promoted

    rearmed, *_ = run_action(ctx, "rearm", "line-1", "lamp fixed", None, SAM)
    assert "re-armed; the canary starts again at step 1 (5% of parts)" in rearmed
    twice, *_ = run_action(ctx, "rearm", "line-1", "again", None, SAM)
    assert f"candidate {world.candidate} is not quarantined" in twice

    done, _reason, *rest = run_action(ctx, "finalize", "line-1", "a week clean", None, SAM)
    assert f"{world.candidate} is now the line&#x27;s champion" in done
    page = outputs_by_name(rest)
    assert f"<code>{world.candidate}</code> decides 100.0% of parts" in page["deployment"]
    kinds = [chunk.split('"')[0] for chunk in page["events"].split('data-kind="')[1:]]
    assert kinds[:5] == [
        "model_switch", "rollout_rearm", "rollout_rollback", "rollout_promote",
        "deployment_change",
    ]  # fmt: skip
    assert "Champion replaced" in page["events"] and "a week clean" in page["events"]
    assert world.rollout.refreshes == 4  # promote, rollback, rearm, finalize


def test_a_shadow_is_started_from_the_page_and_bad_choices_say_why(world: ModelsWorld) -> None:
    ctx = world.context
    result, reason, *rest = start_shadow(ctx, "line-2", world.candidate, "line 2 too", None, SAM)
    assert f"{world.candidate} runs in shadow beside {world.champion}" in result
    assert reason == "" and world.rollout.warmed == [world.candidate]
    row = deployment_row(world, "line-2")
    assert row is not None and (row.candidate, row.mode) == (world.candidate, "shadow")
    assert "line-2 candidate (shadow)" in outputs_by_name(rest)["registry"]
    for candidate, why, message in [
        (world.champion, "x", "is already the line&#x27;s champion"),
        ("defect-cnn-nobody", "x", "no registered model version &#x27;defect-cnn-nobody"),
        (None, "x", "choose a registered version"),
        (world.candidate, "   ", "a reason is required"),
        (world.candidate, "x" * 501, "at most 500 characters"),
    ]:
        refused, kept, *_ = start_shadow(ctx, "line-1", candidate, why, None, SAM)
        assert "Not applied" in refused and message in refused, refused
        assert kept == SKIP
    unknown, *_ = start_shadow(ctx, "line-9", world.candidate, "x", None, SAM)
    assert "no line &#x27;line-9&#x27;" in unknown
    assert world.rollout.refreshes == 1


def test_a_version_that_fails_to_load_is_refused_and_nothing_changes(world: ModelsWorld) -> None:
    world.rollout.broken.add(world.candidate)
    result, *_ = start_shadow(world.context, "line-2", world.candidate, "try", None, SAM)
    assert 'data-testid="refusal"' in result
    assert f"model {world.candidate} could not be loaded, so no traffic moves to it" in result
    assert "out of memory" in result
    assert deployment_row(world, "line-2") is None  # the row the change began is rolled back
    assert world.rollout.refreshes == 0
    with Session(world.context.engine) as db:
        changes = select(Event).where(Event.line_id == "line-2", Event.kind == "deployment_change")
        assert not db.exec(changes).all()


def test_at_partial_the_candidate_needs_the_gate_and_the_refusal_shows_its_figures(
    world: ModelsWorld,
) -> None:
    with Session(world.context.engine) as db:
        line = db.get(Line, "line-1")
        assert line is not None
        line.level = "partial"
        db.add(line)
        db.commit()
    result, *_ = run_action(world.context, "promote", "line-1", "go", None, SAM)
    assert 'data-testid="refusal"' in result
    assert "has not passed the line&#x27;s gate on its own shadow evidence" in result
    assert "Escapes (auto-passed, human: defect)" in result  # each side against its target
    assert deployment_row(world).mode == "shadow"  # type: ignore[union-attr]


# -- an export for retraining ---------------------------------------------------------------


def test_an_export_from_the_page_lands_in_the_data_folder_and_is_logged(
    world: ModelsWorld, add_plant_parts: Any
) -> None:
    """The page's button runs the CLI's export into the service's data folder: the dataset
    loader reads it back with the parts' labels, the event says who asked and what it holds,
    and the result names the command that retrains from it."""
    from data.dataset import load_dataset

    start = utcnow() + timedelta(hours=1)  # after the fixture's parts (whose images are absent)
    labels = ["ok", "crack", "ok", "scratch", None]
    with Session(world.context.engine) as db:
        add_plant_parts(
            db, world.context.image_store, "line-2", labels, user_id=world.sam_id, start=start
        )
    html = export_labels(world.context, "line-2", start.isoformat(), True, SAM)
    assert "Exported 4 labeled images of line-2" in html
    folders = list(world.context.settings.exports_dir.iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("line-2-")
    assert f"--init-from {world.champion}" in html and f"--data {folders[0]}" in html
    assert "--shadow-on line-2" in html
    assert sorted(item.label for item in load_dataset(folders[0])) == [
        "crack",
        "ok",
        "ok",
        "scratch",
    ]

    again = export_labels(world.context, "line-2", start.isoformat(), True, SAM)
    assert "Exported 4" in again and len(list(world.context.settings.exports_dir.iterdir())) == 2
    with Session(world.context.engine) as db:
        events = db.exec(select(Event).where(Event.kind == "labels_exported")).all()
    assert [(e.actor, e.line_id) for e in events] == [("sam", "line-2")] * 2
    assert events[0].details["images"] == 4 and events[0].details["folder"] == str(folders[0])


@pytest.mark.parametrize(
    ("line_id", "since", "why"),
    [
        ("line-9", "", "line-9"),
        ("../etc", "", "no line '../etc'"),
        ("line-1", "yesterday", "is not an ISO 8601 date-time"),
        ("line-1", "0001-01-01T00:00:00", "out of range"),
    ],
)
def test_a_bad_export_request_says_why_and_writes_nothing(
    world: ModelsWorld, line_id: str, since: str, why: str
) -> None:
    html = export_labels(world.context, line_id, since, True, SAM)
    assert "Not applied" in html and mv.esc(why) in html
    assert not world.context.settings.exports_dir.exists()


# -- the role, in every handler --------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda w: show_models(w.context, "line-1", None, INES),
        lambda w: select_version(w.context, w.champion, INES),
        lambda w: run_action(w.context, "promote", "line-1", "x", None, INES),
        lambda w: run_action(w.context, "rollback", "line-1", "x", None, INES),
        lambda w: run_action(w.context, "rearm", "line-1", "x", None, INES),
        lambda w: run_action(w.context, "finalize", "line-1", "x", None, INES),
        lambda w: start_shadow(w.context, "line-2", w.candidate, "x", None, INES),
        lambda w: export_labels(w.context, "line-1", "", True, INES),
        lambda w: run_action(w.context, "finalize", "line-1", "x", None, None),  # logged out
    ],
)
def test_every_handler_refuses_an_inspector(world: ModelsWorld, call: Any) -> None:
    with pytest.raises((AccessDenied, NotLoggedIn), match=r"may not|not logged in"):
        call(world)
    row = deployment_row(world)
    assert row is not None and (row.revision, row.mode) == (1, "shadow")
    assert deployment_row(world, "line-2") is None
    assert world.rollout.refreshes == 0 and world.rollout.warmed == []
    assert not world.context.settings.exports_dir.exists()


def test_the_change_function_checks_the_role_itself(world: ModelsWorld) -> None:
    from review_ui.models_page import serving

    with Session(world.context.engine, expire_on_commit=False) as db:
        ines = get_user(db, "ines")
        with pytest.raises(AccessDenied, match="may not finalize a rollout"):
            apply_action(db, ines, "line-1", "finalize", "why not", serving(world.context))
    assert deployment_row(world).mode == "shadow"  # type: ignore[union-attr]


# -- the views, with plain values ------------------------------------------------------------


def test_validation_figures_come_from_either_shape_of_model_card() -> None:
    assert mv.validation_figures({"binary_accuracy": 0.9, "ece": 0.01, "n": 800}) == {
        "binary_accuracy": 0.9,
        "ece": 0.01,
    }
    grouped = {"validation": {"defect_recall": 0.8, "ece": True}, "binary_accuracy": 0.5}
    assert mv.validation_figures(grouped) == {"defect_recall": 0.8}  # a flag is no figure
    assert mv.validation_figures(None) == {}


def test_an_events_change_reads_as_before_and_after() -> None:
    event = Event(
        kind="rollout_rollback",
        actor="system",
        details={
            "before": {"mode": "canary", "share": 0.25, "quarantined": False, "step": 1},
            "after": {"mode": "canary", "share": 0.0, "quarantined": True, "step": 1},
            "automatic": True,
        },
    )
    assert mv.event_change_text(event) == "share 0.25 → 0, quarantined False → True (automatic)"
    registered = Event(
        kind="model_registered", actor="sam", details={"version": "v2", "has_profile": True}
    )
    assert mv.event_change_text(registered) == "v2 (with a profile)"


def test_the_traffic_plot_says_when_nothing_was_decided_yet() -> None:
    empty = mv.traffic_figure([], None)
    assert "no parts decided under a deployment yet" in [t.get_text() for t in empty.axes[0].texts]
    at = utcnow()
    buckets = [
        TrafficBucket(1, 50, at, at + timedelta(minutes=5), 50, 3, ("v2",)),
        TrafficBucket(51, 60, at + timedelta(minutes=6), at + timedelta(minutes=7), 10, 5, ()),
    ]
    fig = mv.traffic_figure(buckets, 0.05)
    assert list(fig.axes[0].lines[0].get_ydata()) == [6.0, 50.0]
    assert "each 50 parts" in fig.axes[0].get_title()


def test_no_candidate_events_on_another_line_show(world: ModelsWorld) -> None:
    with Session(world.context.engine) as db:
        events = db.exec(select(Event).where(col(Event.kind) == "deployment_change")).all()
    assert [e.line_id for e in events] == ["line-1"]
    page = outputs_by_name(show_models(world.context, "line-2", None, SAM))
    assert 'data-kind="deployment_change"' not in page["events"]
    assert page["events"].count('data-kind="model_registered"') == 2
