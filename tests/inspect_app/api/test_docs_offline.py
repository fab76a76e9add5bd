"""/docs and /redoc on a plant network: every request that leaves the machine is blocked,
and the pages still load their assets from the service and list the operations."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from inspect_app.settings import Settings
from tests.review_ui.conftest import LiveService, serve

# The review UI's browser fixtures (Debian's chromium through Playwright), reused as they are.
from tests.review_ui.test_browser import CHROMIUM, browser, page  # noqa: F401

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"
    ),
]

if CHROMIUM.exists():
    from playwright.sync_api import Browser, Page, Route, expect

IMAGE_UPLOAD = "/api/v1/lines/{line}/images"
UI_TIMEOUT_MS = 60_000


@pytest.fixture
def docs_service(app_settings: Settings) -> Iterator[LiveService]:
    yield from serve(app_settings)


def only_loopback(page: Page) -> list[str]:  # noqa: F811
    """Abort every request that is not to 127.0.0.1; the list of what was aborted."""
    blocked: list[str] = []

    def handle(route: Route) -> None:
        url = route.request.url
        if url.startswith(("http://127.0.0.1", "data:", "blob:")):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    page.route("**/*", handle)
    return blocked


def test_swagger_ui_lists_the_operations_with_no_way_out(
    docs_service: LiveService,
    page: Page,  # noqa: F811
) -> None:
    blocked = only_loopback(page)
    page.goto(f"{docs_service.url}/docs")
    upload = page.locator(f'.opblock-summary-path[data-path="{IMAGE_UPLOAD}"]')
    expect(upload).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(page.locator(".opblock")).not_to_have_count(0)
    assert not blocked, f"/docs asked for {blocked}"


def test_redoc_lists_the_operations_with_no_way_out(
    docs_service: LiveService,
    browser: Browser,  # noqa: F811
) -> None:
    # Not the shared `page`, which fails on any outside request the page makes: ReDoc's
    # bundle always asks cdn.redoc.ly for its logo, and the page's Content-Security-Policy
    # stops that in the browser, before the network (so `only_loopback` never sees it).
    context = browser.new_context()
    try:
        page = context.new_page()
        blocked = only_loopback(page)
        page.goto(f"{docs_service.url}/redoc")
        operation = page.get_by_role("heading", name=re.compile("Post a camera image"))
        expect(operation).to_be_visible(timeout=UI_TIMEOUT_MS)
        assert not blocked, f"/redoc sent {blocked} to the network"
    finally:
        context.close()
