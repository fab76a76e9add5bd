"""The review UI in a real browser through a round-robin proxy in front of two `inspect-app
serve` processes on one PostgreSQL: no sticky sessions, each request goes to the next
process in turn, and an inspector's page works as against one process (claims, verdicts,
the undo and its correction, the heatmap, the part handed back when the page closes), and
so does a supervisor's (the Lines page and a level change, the Evidence, Monitoring, Models
and Outputs pages). A tab's desk answers only the user who opened it, whichever process is
asked."""

from __future__ import annotations

import hashlib
import itertools
import re
import time
from collections.abc import Iterator

import cv2
import httpx
import pytest
from sqlmodel import Session, col, select

from data.synth import render_sample
from inspect_app import accounts
from inspect_app.lines import add_line
from inspect_app.storage.db import make_engine, upgrade_database
from inspect_app.storage.tables import Label, Line, ReviewTask
from tests.inspect_app.test_several_processes import RoundRobinProxy
from tests.review_ui.conftest import PASSWORD
from tests.review_ui.test_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    UI_TIMEOUT_MS,
    choose_option,
    shown_task,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.review_ui,
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="browser tests need Debian's chromium at /usr/bin/chromium "
        "(apt-get install chromium)",
    ),
]

if CHROMIUM.exists():
    from playwright.sync_api import Page, expect, sync_playwright

RUN = re.compile(r"^/review/gradio_api/run/")
HEARTBEAT = re.compile(r"^/review/gradio_api/heartbeat/([^/?]+)")


@pytest.fixture
def proxy(two_services: list[str]) -> Iterator[RoundRobinProxy]:
    with RoundRobinProxy(two_services) as running:
        yield running


@pytest.fixture
def page() -> Iterator[Page]:
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        yield context.new_page()
        context.close()
        browser.close()


def log_in(page: Page, url: str, name: str) -> None:
    page.goto(f"{url}/review/")
    page.wait_for_selector("input[type=password]", timeout=60_000)
    page.locator("input").first.fill(name)
    page.locator("input[type=password]").fill(PASSWORD)
    page.get_by_role("button", name="Login").click()
    page.wait_for_selector(f"[data-testid=user-name]:has-text('{name}')", timeout=60_000)
    page.wait_for_selector(".part-card", timeout=60_000)  # the desk has opened


def post_parts(url: str, camera_key: str, line_id: str, classes: list[str]) -> list[str]:
    """Parts through the proxy, as a camera posts them; the SHA-256 of each image."""
    sent = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for i, cls in enumerate(classes):
            ok, jpeg = cv2.imencode(".jpg", render_sample(200 + i, cls).image)
            assert ok
            answer = client.post(
                f"/api/v1/lines/{line_id}/images",
                content=jpeg.tobytes(),
                headers={"X-Api-Key": camera_key, "Content-Type": "image/jpeg"},
                params={"part_serial": f"SN-{i:04d}"},
            )
            assert answer.status_code == 201, answer.text
            sent.append(hashlib.sha256(jpeg.tobytes()).hexdigest())
    return sent


def run_upstreams(proxy: RoundRobinProxy, since: int = 0) -> list[int]:
    """Which process answered each of the page's events (Gradio's unqueued ``run`` posts)."""
    return [up for method, path, up in proxy.requests[since:] if RUN.match(path)]


def test_an_inspector_and_a_supervisor_work_through_a_proxy_without_sticky_sessions(
    fresh_postgres_url: str, proxy: RoundRobinProxy, page: Page
) -> None:
    engine = make_engine(fresh_postgres_url)
    upgrade_database(engine)
    with Session(engine, expire_on_commit=False) as db:
        add_line(db, "line-1", "assist")  # the model and its heatmap are shown
        camera = accounts.add_camera_key(db, "line-1")
        accounts.add_user(db, "ines", "inspector", PASSWORD)
        accounts.add_user(db, "sam", "supervisor", PASSWORD)
    post_parts(proxy.url, camera, "line-1", ["scratch", "ok", "crack", "pit"])

    log_in(page, proxy.url, "ines")
    expect(page.locator("#model-box")).to_contain_text("Model says", timeout=UI_TIMEOUT_MS)
    opened = len(proxy.requests)
    assert not [p for _, p, _ in proxy.requests if "/queue/" in p]  # nothing queued

    # Verdicts, an undo and its correction, each event answered by the next process.
    shown = [shown_task(page)]
    for key in ("2", "1"):
        page.keyboard.press(key)
        page.wait_for_function(
            "(task) => document.querySelector('.part-card')?.dataset.taskId !== task",
            arg=shown[-1],
            timeout=UI_TIMEOUT_MS,
        )
        shown.append(shown_task(page))
    page.keyboard.press("u")  # back to the second part, to correct it
    expect(page.locator(".viewer-banner")).to_contain_text("CORRECTING", timeout=UI_TIMEOUT_MS)
    assert shown_task(page) == shown[1]
    page.keyboard.press("3")
    expect(page.locator(".viewer-banner")).to_have_count(0, timeout=UI_TIMEOUT_MS)
    assert shown_task(page) == shown[2]  # back to the part it held
    # The heatmap of the part on screen, made by whichever process was asked for it.
    page.wait_for_function(
        "() => { const v = document.querySelector('.part-viewer.has-overlay'); "
        "const s = document.querySelector('img.overlay-src'); "
        "return v && s && s.dataset.for === v.dataset.key; }",
        timeout=60_000,
    )
    answered = run_upstreams(proxy, opened)
    assert set(answered) == {0, 1}, proxy.requests[opened:]
    assert any(a != b for a, b in itertools.pairwise(answered))
    with Session(engine) as db:
        labels = db.exec(
            select(ReviewTask.id, Label.label, Label.superseded)
            .join(ReviewTask, col(ReviewTask.id) == col(Label.task_id))
            .order_by(col(Label.id))
        ).all()
    assert [(str(t), lb, s) for t, lb, s in labels] == [
        (shown[0], "scratch", False),
        (shown[1], "ok", True),  # corrected: kept as superseded, a counted redo
        (shown[1], "crack", False),
    ]

    # Another login that learns this tab's session hash is refused by either process.
    (stolen,) = {m.group(1) for _, p, _ in proxy.requests if (m := HEARTBEAT.match(p))}
    with httpx.Client(base_url=proxy.url, timeout=60) as http:
        login = http.post("/review/login", data={"username": "sam", "password": PASSWORD})
        assert login.status_code == 200, login.text
        before = len(proxy.requests)
        tries = [
            http.post("/review/gradio_api/run/resume", json={"data": [], "session_hash": stolen})
            for _ in range(2)
        ]
    assert {up for _, _, up in proxy.requests[before:]} == {0, 1}
    for answer in tries:
        assert answer.status_code == 403, answer.text
        assert "belongs to another user" in answer.text

    # Logging out leaves the page: the part on screen goes back to the queue at once.
    held = int(shown[2] or 0)
    page.locator("[data-testid=logout]").click()
    page.wait_for_selector("input[type=password]", timeout=60_000)
    deadline = time.monotonic() + 60
    while True:
        with Session(engine) as db:
            task = db.get(ReviewTask, held)
            assert task is not None
            if task.status == "open":
                break
        assert time.monotonic() < deadline, "the part was not released when the page closed"
        time.sleep(0.2)

    # A supervisor's Lines page: the line's settings, a level change, through both processes.
    log_in(page, proxy.url, "sam")
    before = len(proxy.requests)
    page.get_by_role("tab", name="Lines").click()
    page.wait_for_selector(".lines-table tr[data-line='line-1']", timeout=60_000)
    expect(page.locator("#change-line input")).to_have_value("line-1", timeout=UI_TIMEOUT_MS)
    expect(page.locator("#change-level input")).to_have_value("assist", timeout=UI_TIMEOUT_MS)
    choose_option(page, "change-level", "human_only")
    page.locator("#change-reason textarea, #change-reason input").first.fill("camera moved")
    page.locator("#change-apply").click()
    page.wait_for_selector(".result-ok", timeout=60_000)
    assert set(run_upstreams(proxy, before)) == {0, 1}
    with Session(engine) as db:
        line = db.get(Line, "line-1")
        assert line is not None and line.level == "human_only"

    # The other supervisor pages, each tab's load and a line chosen afresh on another process.
    before = len(proxy.requests)
    page.get_by_role("tab", name="Evidence").click()
    page.wait_for_selector(".evidence-summary", timeout=120_000)
    choose_option(page, "evidence-line", "line-1")
    summary = page.locator(".evidence-summary:not(.monitoring-summary):not(.deployment-summary)")
    expect(summary).to_contain_text("line-1", timeout=UI_TIMEOUT_MS)
    for tab, shown_in in (
        ("Monitoring", ".monitoring-summary"),
        ("Models", ".deployment-summary"),
        ("Outputs", "#outputs-table .panel-title"),
    ):
        page.get_by_role("tab", name=tab).click()
        page.wait_for_selector(shown_in, timeout=UI_TIMEOUT_MS)
    assert set(run_upstreams(proxy, before)) == {0, 1}
    assert page.locator("[data-testid=toast-body]").count() == 0  # no event failed
    engine.dispose()
