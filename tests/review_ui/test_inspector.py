"""The Inspect page's rendering: the stored image on screen, the model only where shown, and
the heatmap made by the real model, sent once per part and only for parts that show it."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from sqlmodel import Session

from inspect_app.settings import Settings
from inspect_app.storage.db import make_engine, upgrade_database
from inspect_app.storage.tables import Inspection
from models.runtime import load_predictor
from review_ui.context import ReviewContext
from review_ui.desk import InspectorDesk
from review_ui.inspector import heatmap_source, render
from tests.review_ui.conftest import add_lines, add_people, part_image

PROBABILITIES = {"ok": 0.1, "scratch": 0.6, "crack": 0.1, "pit": 0.1, "discoloration": 0.1}


@pytest.fixture
def engine() -> Engine:
    db = make_engine("sqlite://")
    upgrade_database(db)
    return db


@pytest.fixture
def context(engine: Engine, tmp_path: Path, tiny_checkpoint: Path) -> ReviewContext:
    torch.set_num_threads(1)
    app = FastAPI()
    app.state.settings = Settings(data_dir=tmp_path, weights=tiny_checkpoint)
    app.state.engine = engine
    app.state.predictor = load_predictor(tiny_checkpoint)  # the service default: ONNX Runtime
    add_people(engine, ("ines", "inspector"))
    add_lines(engine, ("line-1", "assist"))
    return ReviewContext(app)


def test_a_blind_part_shows_its_image_and_no_model(
    context: ReviewContext, add_parts: Callable[..., list[int]]
) -> None:
    add_parts(context.engine, context.settings.image_dir, "line-1", 1)
    desk = InspectorDesk(context)
    view = desk.open("tab", "ines")
    viewer, card, model, _feedback, counters, _note, state = render(view, context)
    with Session(context.engine) as db:
        inspection = db.get(Inspection, view.part.inspection_id)  # type: ignore[union-attr]
        assert inspection is not None
        stored = context.image_bytes(inspection.image_sha256)
    assert f"data:image/png;base64,{base64.b64encode(stored).decode()}" in viewer
    assert 'class="part-viewer"' in viewer and "line-1" in card
    assert "Model hidden" in model and "blind at this line" in model
    assert 'data-testid="queue-waiting">1<' in counters
    assert state["model_shown"] is False
    assert desk.heatmap_due("tab", "ines") is None  # nothing of the model for a blind part


def test_a_part_that_shows_the_model_gets_its_heatmap_once(
    context: ReviewContext, add_parts: Callable[..., list[int]]
) -> None:
    add_parts(
        context.engine,
        context.settings.image_dir,
        "line-1",
        1,
        show_model=True,
        probabilities=PROBABILITIES,
    )
    desk = InspectorDesk(context)
    view = desk.open("tab", "ines")
    _viewer, _card, model, *_rest, state = render(view, context)
    assert "Scratch" in model and "60.0%" in model and state["model_shown"] is True

    due = desk.heatmap_due("tab", "ines")
    assert due is not None
    overlay = heatmap_source(context, due)
    key = f"task-{view.part.inspection_id}"  # type: ignore[union-attr]
    assert overlay.startswith(f'<img class="overlay-src" data-for="{key}"')
    assert "data:image/jpeg;base64," in overlay
    assert desk.heatmap_due("tab", "ines") is None  # the tab holds it already


def test_a_missing_image_says_so_instead_of_failing(
    context: ReviewContext, add_parts: Callable[..., list[int]]
) -> None:
    (task_id,) = add_parts(context.engine, context.settings.image_dir, "line-1", 1)
    view = InspectorDesk(context).open("tab", "ines")
    assert view.part is not None and view.part.task_id == task_id
    context.image_store.path(view.part.image_sha256).unlink()
    viewer = render(view, context)[0]
    assert "Image missing" in viewer and "Press s" in viewer


def test_an_unchanged_view_leaves_the_part_alone(
    context: ReviewContext, add_parts: Callable[..., list[int]]
) -> None:
    add_parts(context.engine, context.settings.image_dir, "line-1", 1, first_seed=5)
    desk = InspectorDesk(context)
    desk.open("tab", "ines")
    quiet = desk.tick("tab", "ines", idle_ms=1000)
    viewer, card, model, *_ = render(quiet, context)
    assert viewer == card == model == {"__type__": "update"}  # gr.skip()


def test_image_bytes_come_from_the_service_store(context: ReviewContext) -> None:
    sha = context.image_store.put(part_image(1))
    assert context.image_bytes(sha) == part_image(1)
