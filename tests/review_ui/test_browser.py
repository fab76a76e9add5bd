"""The review UI in a real browser: Debian's chromium, headless, driven by Playwright,
against the whole service served on a free port. Screenshots of every page go to
tests/artifacts/ (ignored by git) for a person to look at."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import httpx
import pytest
from sqlmodel import Session, col, select

from data.synth import render_sample
from inspect_app.accounts import add_camera_key
from inspect_app.storage.tables import Event, Label, Line
from tests.review_ui.conftest import ARTIFACTS, PASSWORD, LiveService, add_lines, add_people

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
    from playwright.sync_api import Browser, Page, sync_playwright


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
    page.wait_for_selector(".part-viewer", timeout=60_000)
    page.wait_for_selector(f"[data-testid=user-name]:has-text('{name}')", timeout=60_000)


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
    assert "Model hidden" in page.locator("#model-box").inner_text()  # shadow: blind
    shot(page, "inspect")

    timings = [press_and_wait(page, key) for key in ("2", "1", "3")]
    press_and_wait(page, "u")  # back to the third part, to correct it
    assert "CORRECTING" in page.locator(".viewer-banner").inner_text()
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
    assert page.locator("[data-testid=my-labels]").inner_text().strip() == "3"


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
        ("change_automation", ["line-1", "human_only", 0.99, 0.99, 2.0, "lowering by hand"]),
        ("lines", ["line-1"]),
        ("evidence", ["line-1", "current model", "All time"]),
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


def select_option(page: Page, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id} input")
    box.click()
    box.fill(value)
    page.keyboard.press("Enter")


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
    shot(page, "lines")
    select_option(page, "change-level", "partial")
    page.locator("#change-reason textarea, #change-reason input").first.fill("model looks good")
    page.locator("#change-apply").click()
    refusal = page.locator("[data-testid=refusal]")
    refusal.wait_for(timeout=60_000)
    text = refusal.inner_text()
    assert "Refused by the evidence gate" in text
    assert "Escapes" in text and "False rejects" in text and "vs 0.50%" in text
    shot(page, "lines_refused", full_page=True)

    select_option(page, "change-level", "human_only")
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

    page.get_by_role("tab", name="Evidence").click()
    page.wait_for_selector(".evidence-summary", timeout=120_000)
    page.wait_for_timeout(1000)
    shot(page, "evidence", full_page=True)
