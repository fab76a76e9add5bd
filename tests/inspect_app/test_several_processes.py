"""Two `inspect-app serve` processes on one PostgreSQL behind a round-robin proxy behave as
one: a part posted through either has its image in both (the database image store, the
default on PostgreSQL), a review-UI login made through one is known to the other and ends
in both (logout, deactivation), and an inspector's claim, image and label work whichever
process answers each request. No sticky sessions: the proxy sends each request to the next
process in turn.

This test drives the review queue with the HTTP calls the API offers for it, the login with
the UI's own login and user routes; the review UI's pages themselves, in a browser through
the same proxy, are tests/review_ui/test_browser_several_processes.py.
"""

from __future__ import annotations

import hashlib
import http.client
import itertools
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import httpx
import pytest
from sqlmodel import Session

from inspect_app import accounts
from inspect_app.lines import add_line
from inspect_app.storage.db import make_engine, upgrade_database
from review_ui.auth import COOKIE_ID
from tests.inspect_app.api.test_images import phone_image

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.review_ui]

PASSWORD = "inspector password"
UPSTREAM_HEADER = "X-Test-Upstream"  # which process answered: the proxy adds it
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te"}
)


class RoundRobinProxy:
    """A loopback HTTP proxy that sends each request to the next upstream in turn.

    One request per client connection (HTTP/1.0, closed after the answer), so the turn is
    per request, as a load balancer without sticky sessions does it. The answer's body is
    passed on as it arrives (an event stream too), and `UPSTREAM_HEADER` says who answered.
    """

    def __init__(self, upstreams: list[str]) -> None:
        self.upstreams = [urlsplit(u) for u in upstreams]
        self._turn = itertools.count()
        self._lock = threading.Lock()
        self.answered: list[int] = []
        self.requests: list[tuple[str, str, int]] = []  # method, path, upstream: in turn
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: object) -> None:  # quiet
                return

            def _forward(self) -> None:
                index = proxy._next(self.command, self.path)
                upstream = proxy.upstreams[index]
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    answer = conn.getresponse()
                    self.send_response(answer.status, answer.reason)
                    for key, value in answer.getheaders():
                        if key.lower() not in _HOP_BY_HOP | {"content-length"}:
                            self.send_header(key, value)
                    self.send_header(UPSTREAM_HEADER, str(index))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    while chunk := answer.read1(65536):
                        self.wfile.write(chunk)
                        self.wfile.flush()
                finally:
                    conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _next(self, method: str, path: str) -> int:
        with self._lock:
            index = next(self._turn) % len(self.upstreams)
            self.answered.append(index)
            self.requests.append((method, path, index))
            return index

    def __enter__(self) -> RoundRobinProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(two_services: list[str]) -> Iterator[RoundRobinProxy]:
    with RoundRobinProxy(two_services) as running:
        yield running


def _upstream(answer: httpx.Response) -> int:
    return int(answer.headers[UPSTREAM_HEADER])


def _ui_cookie(answer: httpx.Response) -> str:
    """The review UI's login cookie (the one sent over plain HTTP), to send by hand."""
    name = f"access-token-unsecure-{COOKIE_ID}"
    for header in answer.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            return header.split(";", 1)[0]
    raise AssertionError(f"no {name} cookie in {answer.headers}")


def test_two_processes_behind_a_round_robin_proxy_behave_as_one(
    fresh_postgres_url: str, proxy: RoundRobinProxy
) -> None:
    engine = make_engine(fresh_postgres_url)
    upgrade_database(engine)
    with Session(engine, expire_on_commit=False) as db:
        add_line(db, "line-1")  # shadow: every part goes to a human
        camera = accounts.add_camera_key(db, "line-1")
        accounts.add_user(db, "ines", "inspector", PASSWORD)

    with httpx.Client(base_url=proxy.url, timeout=60) as http:
        # Parts arrive through both processes; each one's image is read through both.
        sent: dict[int, str] = {}
        for seed in range(4):
            answer = http.post(
                "/api/v1/lines/line-1/images",
                content=phone_image(seed),
                headers={"X-Api-Key": camera, "Content-Type": "image/jpeg"},
            )
            assert answer.status_code == 201, answer.text
            sent[answer.json()["inspection_id"]] = hashlib.sha256(phone_image(seed)).hexdigest()
        assert sorted(proxy.answered) == [0, 0, 1, 1]

        # A review-UI login through one process is known to both.
        login = http.post("/review/login", data={"username": "ines", "password": PASSWORD})
        assert login.status_code == 200, login.text
        cookie = {"Cookie": _ui_cookie(login)}
        http.cookies.clear()  # the cookie goes by hand: a request without it has none
        seen = [http.get("/review/gradio_api/user", headers=cookie) for _ in range(2)]
        assert {_upstream(a) for a in seen} == {0, 1}
        assert [a.json() for a in seen] == ["ines", "ines"]
        assert http.get("/review/gradio_api/user").json() is None  # no cookie, nobody

        # The inspector's claim, image and label, each answered by whichever process is next.
        token = http.post("/api/v1/auth/token", json={"name": "ines", "password": PASSWORD})
        assert token.status_code == 201, token.text
        bearer = {"Authorization": f"Bearer {token.json()['token']}"}
        labeled: set[int] = set()
        for _ in range(len(sent)):
            claim = http.post("/api/v1/reviews/claim", headers=bearer)
            assert claim.status_code == 200, claim.text
            part = claim.json()
            image = http.get(part["image_url"], headers=bearer)
            assert image.status_code == 200, image.text
            assert _upstream(image) != _upstream(claim)  # the other process serves it
            assert hashlib.sha256(image.content).hexdigest() == sent[part["inspection_id"]]
            label = http.post(
                f"/api/v1/reviews/{part['task_id']}/label", json={"label": "ok"}, headers=bearer
            )
            assert label.status_code == 200, label.text
            labeled.add(part["inspection_id"])
        assert labeled == set(sent)
        assert http.post("/api/v1/reviews/claim", headers=bearer).status_code == 204
        for inspection_id in sent:  # every decision, read through both processes
            for _ in range(2):
                state = http.get(f"/api/v1/inspections/{inspection_id}", headers=bearer)
                assert state.json()["decision"] == "pass", state.text

        # A logout through one process ends the login in both.
        http.get("/review/logout", headers=cookie)
        assert [http.get("/review/gradio_api/user", headers=cookie).json() for _ in range(2)] == [
            None,
            None,
        ]

        # A deactivation (here the CLI's way: straight on the database) ends everything.
        login = http.post("/review/login", data={"username": "ines", "password": PASSWORD})
        cookie = {"Cookie": _ui_cookie(login)}
        http.cookies.clear()
        assert http.get("/review/gradio_api/user", headers=cookie).json() == "ines"
        with Session(engine) as db:
            accounts.deactivate_user(db, "ines", actor="root", reason="left the plant")
        for _ in range(2):
            assert http.get("/review/gradio_api/user", headers=cookie).json() is None
            assert http.post("/api/v1/reviews/claim", headers=bearer).status_code == 401
    engine.dispose()
