"""The review UI in a real browser: Debian's chromium, headless, driven by Playwright,
against the whole service served on a free port. Screenshots of every page go to
tests/artifacts/ (ignored by git) for a person to look at."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from data.synth import render_sample
from inspect_app.accounts import add_camera_key
from inspect_app.monitoring.service import line_rules
from inspect_app.rollout.registry import register_model
from inspect_app.settings import Settings
from inspect_app.storage.images import LocalImageStore
from inspect_app.storage.tables import Event, Inspection, Label, Line, ReviewTask, User
from inspect_app.timeutil import utcnow
from models.checkpoint import load_checkpoint, save_checkpoint
from models.profile import write_profile
from tests.inspect_app.monitoring.monitoring_world import make_profile, seed_monitoring
from tests.review_ui.conftest import (
    ARTIFACTS,
    PASSWORD,
    LiveService,
    add_lines,
    add_people,
    serve,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="browser tests need Debian's chromium at /usr/bin/chromium "
        "(apt-get install chromium)",
    ),
]

if CHROMIUM.exists():
    from playwright.sync_api import Browser, Page, expect, sync_playwright

# How long a step may take to show on screen: generous, for a loaded CI machine. Every wait
# below is for a state a person would wait for (an option listed, a value shown, a result
# drawn), never for a fixed time.
UI_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    outside: list[str] = []
    page.on(
        "request",
        lambda r: (
            outside.append(r.url)
            if not r.url.startswith(("http://127.0.0.1", "data:", "blob:"))
            else None
        ),
    )
    yield page
    context.close()
    assert not outside, f"the page fetched from outside the plant: {outside}"


def shot(page: Page, name: str, *, full_page: bool = False) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"review_{name}.png"), full_page=full_page)


def log_in(page: Page, service: LiveService, name: str, *, screenshot: str | None = None) -> None:
    page.goto(service.review_url)
    page.wait_for_selector("input[type=password]", timeout=60_000)
    if screenshot:
        shot(page, screenshot)
    page.locator("input").first.fill(name)
    page.locator("input[type=password]").fill(PASSWORD)
    page.get_by_role("button", name="Login").click()
    page.wait_for_selector(f"[data-testid=user-name]:has-text('{name}')", timeout=60_000)
    page.wait_for_selector(".part-card", timeout=60_000)  # the desk has opened


def post_parts(service: LiveService, line_id: str, classes: list[str]) -> None:
    """Parts through the real front door: a camera posting images to the service."""
    with Session(service.engine, expire_on_commit=False) as db:
        key = add_camera_key(db, line_id)
    with httpx.Client(base_url=service.url, timeout=60) as client:
        for i, cls in enumerate(classes):
            ok, jpeg = cv2.imencode(".jpg", render_sample(100 + i, cls).image)
            assert ok
            answer = client.post(
                f"/api/v1/lines/{line_id}/images",
                content=jpeg.tobytes(),
                headers={"X-Api-Key": key, "Content-Type": "image/jpeg"},
                params={"part_serial": f"SN-{line_id}-{i:04d}"},
            )
            assert answer.status_code == 201, answer.text


def shown_task(page: Page) -> str | None:
    return page.evaluate(
        "() => { const c = document.querySelector('.part-card'); "
        "return c ? (c.dataset.taskId || null) : null; }"
    )


def press_and_wait(page: Page, key: str, expect: Callable[[Page], bool] | None = None) -> float:
    """Press `key` and wait for the part card to change; the seconds it took."""
    before = shown_task(page)
    mode_before = page.evaluate("() => document.querySelector('.part-viewer')?.className || ''")
    started = time.perf_counter()
    page.keyboard.press(key)
    page.wait_for_function(
        "([task, mode]) => { const c = document.querySelector('.part-card'); "
        "const v = document.querySelector('.part-viewer'); "
        "return (c && c.dataset.taskId !== task) || (v && v.className !== mode); }",
        arg=[before, mode_before],
        timeout=30_000,
    )
    return time.perf_counter() - started


def test_an_inspector_labels_three_parts_by_keyboard_and_undoes_one(
    live_service: LiveService, page: Page
) -> None:
    engine = live_service.engine
    add_people(engine, ("ines", "inspector"))
    add_lines(engine, ("line-1", "shadow"))
    post_parts(live_service, "line-1", ["scratch", "ok", "crack", "pit"])

    log_in(page, live_service, "ines", screenshot="login")
    assert page.get_by_role("tab", name="Lines").count() == 0  # not a supervisor's page
    assert page.get_by_role("tab", name="Evidence").count() == 0
    expect(page.locator("#model-box")).to_contain_text("Model hidden")  # shadow: blind
    shot(page, "inspect")

    timings = [press_and_wait(page, key) for key in ("2", "1", "3")]
    press_and_wait(page, "u")  # back to the third part, to correct it
    expect(page.locator(".viewer-banner")).to_contain_text("CORRECTING", timeout=UI_TIMEOUT_MS)
    shot(page, "inspect_correcting")
    press_and_wait(page, "4")
    shot(page, "inspect_after_correction")
    print(f"\nkey press to next part on screen (s): {', '.join(f'{t:.3f}' for t in timings)}")

    with Session(engine) as db:
        current = db.exec(
            select(Label.inspection_id, Label.label)
            .where(col(Label.superseded).is_(False))
            .order_by(col(Label.inspection_id))
        ).all()
        everything = db.exec(select(Label)).all()
    assert [label for _, label in current] == ["scratch", "ok", "pit"]
    assert len(everything) == 4  # the undone "crack" kept as superseded: a counted redo
    expect(page.locator("[data-testid=my-labels]")).to_have_text("3", timeout=UI_TIMEOUT_MS)

    # Logging out leaves the page: the part still on screen goes back to the queue at once.
    held = int(shown_task(page) or 0)
    assert task_status(engine, held) == "claimed"
    page.locator("[data-testid=logout]").click()
    page.wait_for_selector("input[type=password]", timeout=60_000)
    deadline = time.monotonic() + 30
    while task_status(engine, held) != "open":
        assert time.monotonic() < deadline, "the part was not released when the page closed"
        time.sleep(0.2)


def test_at_assist_the_model_and_its_heatmap_are_shown_on_request(
    live_service: LiveService, page: Page
) -> None:
    add_people(live_service.engine, ("ines", "inspector"))
    add_lines(live_service.engine, ("line-a", "assist"))
    post_parts(live_service, "line-a", ["crack", "pit"])
    log_in(page, live_service, "ines")
    expect(page.locator("#model-box")).to_contain_text("Model says", timeout=UI_TIMEOUT_MS)
    overlay = page.locator(".part-viewer .part-overlay")
    page.wait_for_function(
        "() => !!document.querySelector('.part-viewer.has-overlay .part-overlay[src]')",
        timeout=60_000,
    )
    expect(overlay).to_be_hidden()  # off until asked for
    page.keyboard.press("h")
    expect(overlay).to_be_visible(timeout=UI_TIMEOUT_MS)
    page.keyboard.press("+")
    page.keyboard.press("+")
    shot(page, "inspect_assist_heatmap")
    press_and_wait(page, "3")  # the next part: its own heatmap, never the last one's
    page.wait_for_function(
        "() => { const v = document.querySelector('.part-viewer.has-overlay'); "
        "const s = document.querySelector('img.overlay-src'); "
        "return v && s && s.dataset.for === v.dataset.key; }",
        timeout=60_000,
    )
    expect(overlay).to_be_visible()  # the choice stays on from part to part
    page.keyboard.press("h")
    expect(overlay).to_be_hidden(timeout=UI_TIMEOUT_MS)


def task_status(engine: Engine, task_id: int) -> str:
    with Session(engine) as db:
        task = db.get(ReviewTask, task_id)
        assert task is not None
        return task.status


def test_an_inspector_cannot_reach_the_supervisor_handlers_with_their_session(
    live_service: LiveService, page: Page
) -> None:
    engine = live_service.engine
    add_people(engine, ("ines", "inspector"))
    add_lines(engine, ("line-1", "shadow"))
    log_in(page, live_service, "ines")
    assert page.get_by_role("tab", name="Lines").count() == 0

    # Call the page's own Gradio API with the browser's (the inspector's) login cookie.
    api = f"{live_service.review_url}gradio_api/call"
    for name, data in (
        (
            "change_automation",
            ["line-1", "human_only", 0.99, 0.99, 2.0, False, False, "lowering by hand"],
        ),
        ("change_targets", ["line-1", 1.0, 5.0, 10, True, "looser"]),
        ("lines", ["line-1"]),
        ("evidence", ["line-1", "current model", "All time"]),
        ("monitoring", ["line-1", "All time", None]),
        ("edit_alarm_rule", ["line-1", "input_drift", 0.5, 0.5, False, "off", "All time"]),
        ("models", ["line-1", None]),
        ("rollback_candidate", ["line-1", "stop it", None]),
    ):
        started = page.request.post(
            f"{api}/{name}",
            data=json.dumps({"data": data}),
            headers={"Content-Type": "application/json"},
        )
        assert started.ok, started.text()
        event_id = started.json()["event_id"]
        result = page.request.get(f"{api}/{name}/{event_id}").text()
        assert "event: error" in result and "may not" in result, result
    with Session(engine) as db:
        line = db.get(Line, "line-1")
        assert line is not None and line.level == "shadow"
        assert not db.exec(select(Event).where(col(Event.kind).like("level_change%"))).all()
        assert line_rules(db, "line-1")[1].enabled  # input_drift: still on


def choose_option(page: Page, elem_id: str, label: str) -> None:
    """Choose `label` in the Gradio dropdown `#elem_id` as a person does: open the list, wait
    for the option to be listed, click it, and see the box show it.

    Typing into the box and pressing Enter does not wait for anything the page shows, so on
    a loaded machine the keys can land before the list is ready and the choice silently does
    not take; the wrong level is then applied and the expected result never comes.
    """
    box = page.locator(f"#{elem_id} input")
    box.click()
    option = page.locator(f"#{elem_id} [role=listbox]").get_by_role(
        "option", name=label, exact=True
    )
    option.click(timeout=UI_TIMEOUT_MS)  # waits until it is listed, visible and still
    expect(box).to_have_value(label, timeout=UI_TIMEOUT_MS)


def test_a_supervisor_is_refused_a_raise_with_the_figures_and_lowers_the_line(
    live_service: LiveService, page: Page
) -> None:
    engine = live_service.engine
    add_people(engine, ("sam", "supervisor"))
    add_lines(engine, ("line-1", "shadow"))
    post_parts(live_service, "line-1", ["ok", "scratch", "pit"])
    log_in(page, live_service, "sam")
    shot(page, "inspect_supervisor")
    for key in ("1", "2"):  # a few blind labels, for the Evidence page to show
        press_and_wait(page, key)

    page.get_by_role("tab", name="Lines").click()
    page.wait_for_selector(".lines-table tr[data-line='line-1']", timeout=60_000)
    # The form shows the chosen line's settings before a supervisor changes them; a choice
    # made earlier would be overwritten when they arrive.
    expect(page.locator("#change-line input")).to_have_value("line-1", timeout=UI_TIMEOUT_MS)
    expect(page.locator("#change-level input")).to_have_value("shadow", timeout=UI_TIMEOUT_MS)
    shot(page, "lines")
    choose_option(page, "change-level", "partial")
    page.locator("#change-reason textarea, #change-reason input").first.fill("model looks good")
    page.locator("#change-apply").click()
    refusal = page.locator("[data-testid=refusal]")
    expect(refusal).to_contain_text("Refused by the evidence gate", timeout=UI_TIMEOUT_MS)
    text = refusal.inner_text()
    assert "Escapes" in text and "False rejects" in text and "vs 0.50%" in text
    shot(page, "lines_refused", full_page=True)

    choose_option(page, "change-level", "human_only")
    page.locator("#change-reason textarea, #change-reason input").first.fill("camera realigned")
    page.locator("#change-apply").click()
    page.wait_for_selector(".result-ok", timeout=60_000)
    page.wait_for_selector(".events-table tr.ev-level_change", timeout=60_000)
    shot(page, "lines_lowered", full_page=True)
    with Session(engine) as db:
        line = db.get(Line, "line-1")
        kinds = [e.kind for e in db.exec(select(Event).where(Event.line_id == "line-1"))]
    assert line is not None and line.level == "human_only"
    assert "level_change_refused" in kinds and "level_change" in kinds


def seed_history(
    service: LiveService, line_id: str, add_labeled_parts: Callable[..., list[int]]
) -> int:
    """A line's labeled past, as two inspectors left it in shadow: mostly confident and
    right, some disagreements; the disagreements get real images. Returns how many differ."""
    rng = np.random.default_rng(7)
    n = 1500
    truth_defect = rng.random(n) < 0.3
    p_ok = np.where(truth_defect, rng.beta(1, 30, n), rng.beta(30, 1, n))
    # The test model calls every defect "scratch" (its first defect class). The humans agree
    # on ok/defect except for two false rejects, and name 20 defects differently.
    labels = ["scratch" if d else "ok" for d in truth_defect]
    defects = np.flatnonzero(truth_defect)
    for i in rng.choice(defects, size=22, replace=False)[:20]:
        labels[i] = str(rng.choice(["crack", "pit", "discoloration"]))
    for i in [j for j in defects if labels[j] == "scratch"][:2]:
        labels[i] = "ok"
    version = service.app.state.predictor.version
    store = LocalImageStore(service.settings.image_dir)
    with Session(service.engine, expire_on_commit=False) as db:
        users = {u.name: u for u in db.exec(select(User))}
        ids: list[int] = []
        half = n // 2
        for name, part in (("ines", slice(0, half)), ("sam", slice(half, n))):
            ids += add_labeled_parts(
                db,
                line_id,
                [float(p) for p in p_ok[part]],
                labels[part],
                user_id=users[name].id,
                model_version=version,
            )
        differing = 0
        for inspection_id, label in zip(ids, labels, strict=True):
            inspection = db.get(Inspection, inspection_id)
            assert inspection is not None
            if inspection.predicted_class == label:
                continue
            ok, jpeg = cv2.imencode(".jpg", render_sample(inspection_id, label).image)
            assert ok
            inspection.image_sha256 = store.put(jpeg.tobytes())
            inspection.image_format = "jpeg"
            db.add(inspection)
            differing += 1
        db.commit()
    return differing


def test_the_evidence_page_shows_a_lines_labeled_history(
    live_service: LiveService, page: Page, add_labeled_parts: Callable[..., list[int]]
) -> None:
    engine = live_service.engine
    add_people(engine, ("sam", "supervisor"), ("ines", "inspector"))
    add_lines(engine, ("line-1", "shadow"))
    differing = seed_history(live_service, "line-1", add_labeled_parts)
    log_in(page, live_service, "sam")
    page.get_by_role("tab", name="Evidence").click()
    page.wait_for_selector(".evidence-summary", timeout=120_000)
    page.wait_for_selector("#evidence-curve img", timeout=60_000)
    # The screenshot is for a person: wait until the curve and the part images have loaded.
    page.wait_for_function(
        "() => [...document.querySelectorAll('#evidence-curve img, .dis-card img')]"
        ".every(img => img.complete && img.naturalWidth > 0)",
        timeout=UI_TIMEOUT_MS,
    )
    shot(page, "evidence", full_page=True)

    assert "1,500 labeled" in page.locator(".evidence-summary").inner_text()
    figures = page.locator("#evidence-figures").inner_text()
    assert "Escape rate" in figures and "Cohen's kappa" in figures and "[" in figures
    inspectors = page.locator("#evidence-inspectors").inner_text()
    assert "ines" in inspectors and "sam" in inspectors
    expect(page.locator(".dis-card img")).to_have_count(min(differing, 24))
    assert "1,500" in page.locator("#evidence-recommendation").inner_text()


@pytest.fixture
def profiled_service(app_settings: Settings, tiny_checkpoint: Path) -> Iterator[LiveService]:
    """The service with the tiny model and a reference profile beside it (made-up numbers
    that the seeded parts start inside and drift out of), for the Monitoring page's band."""
    weights = app_settings.data_dir.parent / "profiled" / "tiny.pt"
    weights.parent.mkdir(parents=True)
    shutil.copy(tiny_checkpoint, weights)
    write_profile(make_profile("defect-cnn-tiny-test"), weights)
    yield from serve(app_settings.model_copy(update={"weights": weights}))


def test_the_monitoring_page_shows_a_lines_alarms_drift_and_takes_a_rule_edit(
    profiled_service: LiveService, page: Page
) -> None:
    service = profiled_service
    add_people(service.engine, ("sam", "supervisor"))
    with Session(service.engine, expire_on_commit=False) as db:
        seed_monitoring(
            db, image_dir=service.settings.image_dir, start=utcnow() - timedelta(minutes=30)
        )
    log_in(page, service, "sam")
    page.get_by_role("tab", name="Monitoring").click()
    expect(page.locator(".monitoring-summary")).to_contain_text("1 firing", timeout=UI_TIMEOUT_MS)
    page.wait_for_selector("#monitoring-values img", timeout=UI_TIMEOUT_MS)
    page.wait_for_selector("#monitoring-inputs img", timeout=UI_TIMEOUT_MS)
    page.wait_for_function(
        "() => [...document.querySelectorAll("
        "'#monitoring-values img, #monitoring-inputs img, .responsible-grid img')]"
        ".every(img => img.complete && img.naturalWidth > 0)",
        timeout=UI_TIMEOUT_MS,
    )
    expect(page.locator(".responsible-grid img")).to_have_count(3)
    expect(page.locator("tr.alarm-firing-row")).to_have_count(1)
    shot(page, "monitoring", full_page=True)

    choose_option(page, "rule-name", "input_drift")
    expect(page.locator("#rule-threshold input")).to_have_value("0.0001", timeout=UI_TIMEOUT_MS)
    page.locator("#rule-enabled input").uncheck()
    page.locator("#rule-reason textarea, #rule-reason input").first.fill("lamp being replaced")
    page.locator("#rule-apply").click()
    expect(page.locator("#rule-result .result-ok")).to_contain_text(
        "input_drift", timeout=UI_TIMEOUT_MS
    )
    expect(page.locator("tr[data-alarm=input_drift]")).to_contain_text("edited by sam")
    with Session(service.engine) as db:
        rules = {r.name: r for r in line_rules(db, "line-1")}
    assert rules["input_drift"].enabled is False


def test_the_models_page_lists_the_registry_and_starts_a_shadow(
    live_service: LiveService, page: Page, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    engine = live_service.engine
    add_people(engine, ("sam", "supervisor"))
    add_lines(engine, ("line-1", "shadow"))
    base = load_checkpoint(tiny_checkpoint)
    recalibrated = tmp_path / "recalibrated.pt"
    save_checkpoint(
        recalibrated, base.model, config=base.config, class_names=base.class_names,
        preprocessing=base.preprocessing, temperature=2.0, metrics={"note": "recalibrated"},
        data_seed=None, version="defect-cnn-tiny-recalibrated",
    )  # fmt: skip
    with Session(engine, expire_on_commit=False) as db:
        register_model(
            db, recalibrated, live_service.settings.data_dir, registered_by="sam",
            notes="temperature 2", parent_version="defect-cnn-tiny-test",
        )  # fmt: skip
    log_in(page, live_service, "sam")
    page.get_by_role("tab", name="Models").click()
    registry = page.locator("#models-registry")
    expect(registry.locator("tr[data-version]")).to_have_count(2, timeout=UI_TIMEOUT_MS)
    expect(registry.locator("tr[data-version=defect-cnn-tiny-test]")).to_contain_text(
        "line-1 champion"
    )
    expect(page.locator("#models-card .model-card")).to_contain_text("temperature 2")
    expect(page.locator("#models-deployment")).to_contain_text("no deployment change yet")

    choose_option(page, "models-candidate", "defect-cnn-tiny-recalibrated")
    page.locator("#models-shadow-reason textarea, #models-shadow-reason input").first.fill(
        "compare the recalibration"
    )
    page.locator("#models-shadow").click()
    expect(page.locator("#models-shadow-result .result-ok")).to_contain_text(
        "runs in shadow", timeout=UI_TIMEOUT_MS
    )
    expect(page.locator("#models-deployment")).to_contain_text("shadow (the candidate runs")
    expect(page.locator("#models-events")).to_contain_text("compare the recalibration")
    shot(page, "models", full_page=True)
    rollout = live_service.app.state.rollout
    assert rollout.state("line-1").candidate == "defect-cnn-tiny-recalibrated"  # followed
