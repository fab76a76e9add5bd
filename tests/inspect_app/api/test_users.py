"""Logging in for a token, and the admin's users and camera keys, through the real app."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlmodel import Session, col, select

from inspect_app.accounts import add_user
from inspect_app.settings import Settings
from inspect_app.storage.tables import CameraKey, Event


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_logging_in_gives_a_token_that_names_the_user(client: TestClient) -> None:
    with Session(client.app.state.engine) as db:  # type: ignore[attr-defined]
        add_user(db, "ann", "inspector", "ann's password")
    wrong = client.post("/api/v1/auth/token", json={"name": "ann", "password": "guess"})
    assert wrong.status_code == 401
    response = client.post("/api/v1/auth/token", json={"name": "ann", "password": "ann's password"})
    assert response.status_code == 201
    assert (response.json()["user"], response.json()["role"]) == ("ann", "inspector")
    me = client.get("/api/v1/users/me", headers=_auth(response.json()["token"]))
    assert me.json()["name"] == "ann"


def test_an_admin_adds_users_once(client: TestClient, user_token: Callable[[str], str]) -> None:
    admin = _auth(user_token("admin"))
    body = {"name": "bob", "role": "supervisor", "password": "bob's password"}
    created = client.post("/api/v1/users", json=body, headers=admin)
    assert created.status_code == 201 and created.json()["role"] == "supervisor"
    assert client.post("/api/v1/users", json=body, headers=admin).status_code == 409
    short = client.post("/api/v1/users", json={**body, "password": "short"}, headers=admin)
    assert short.status_code == 422
    bad_name = client.post("/api/v1/users", json={**body, "name": "b o b"}, headers=admin)
    assert bad_name.status_code == 422 and "invalid user name" in bad_name.json()["detail"]
    names = [u["name"] for u in client.get("/api/v1/users", headers=admin).json()]
    assert "bob" in names


def test_a_camera_key_from_the_api_posts_to_its_line(
    client: TestClient,
    add_line_with_camera: Callable[..., str],
    user_token: Callable[[str], str],
) -> None:
    add_line_with_camera("line-1")
    admin = _auth(user_token("admin"))
    created = client.post("/api/v1/lines/line-1/camera-keys", headers=admin)
    assert created.status_code == 201
    key = created.json()["key"]
    assert key.startswith(created.json()["key_prefix"])
    # the key is accepted (a bad image gets 4xx for the image, not 401/403 for the key)
    posted = client.post(
        "/api/v1/lines/line-1/images",
        content=b"not an image",
        headers={"X-Api-Key": key, "Content-Type": "image/png"},
    )
    assert posted.status_code not in (401, 403) and posted.status_code < 500
    missing = client.post("/api/v1/lines/nope/camera-keys", headers=admin)
    assert missing.status_code == 404


# -- credentials that end, over HTTP -------------------------------------------------------

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


class Clock:
    """``app.state.clock``: the API reads its time here, so a test moves it, never sleeps."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock(client: TestClient) -> Clock:
    clock = Clock()
    client.app.state.clock = clock  # type: ignore[attr-defined]
    return clock


def _add(client: TestClient, name: str, role: str, password: str = "a long password") -> None:
    with Session(client.app.state.engine) as db:  # type: ignore[attr-defined]
        add_user(db, name, role, password)


def _log_in(client: TestClient, name: str, password: str = "a long password") -> Response:
    return client.post("/api/v1/auth/token", json={"name": name, "password": password})


def _token(client: TestClient, name: str, password: str = "a long password") -> str:
    response = _log_in(client, name, password)
    assert response.status_code == 201, response.text
    return response.json()["token"]


def _events(client: TestClient, kind: str) -> list[Event]:
    with Session(client.app.state.engine) as db:  # type: ignore[attr-defined]
        return list(db.exec(select(Event).where(Event.kind == kind).order_by(col(Event.id))))


def test_a_token_expires_and_logging_in_again_gives_a_fresh_one(
    client: TestClient, clock: Clock
) -> None:
    _add(client, "ann", "inspector")
    response = _log_in(client, "ann")
    assert response.json()["expires_at"] == "2026-12-06T08:00:00Z"  # 120 h: a working week
    token = response.json()["token"]
    clock.advance(hours=119, minutes=59)
    assert client.get("/api/v1/users/me", headers=_auth(token)).status_code == 200
    clock.advance(minutes=1)
    expired = client.get("/api/v1/users/me", headers=_auth(token))
    assert expired.status_code == 401
    assert "expired at 2026-12-06 08:00 UTC" in expired.json()["detail"]
    assert "log in again" in expired.json()["detail"]
    assert expired.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    fresh = _token(client, "ann")  # refreshed by logging in
    assert client.get("/api/v1/users/me", headers=_auth(fresh)).status_code == 200


def test_the_token_lifetime_is_a_setting(app_settings: Settings) -> None:
    from inspect_app.api.app import create_app

    settings = app_settings.model_copy(update={"token_ttl_hours": 8.0})
    with TestClient(create_app(settings)) as short:
        clock = Clock()
        short.app.state.clock = clock  # type: ignore[attr-defined]
        _add(short, "ann", "inspector")
        response = _log_in(short, "ann")
        assert response.json()["expires_at"] == "2026-12-01T16:00:00Z"
        clock.advance(hours=8)
        refused = short.get("/api/v1/users/me", headers=_auth(response.json()["token"]))
        assert refused.status_code == 401 and "tokens last 8 h" in refused.json()["detail"]


def test_failed_logins_lock_out_with_429_until_the_lockout_ends_by_itself(
    client: TestClient, clock: Clock
) -> None:
    _add(client, "ann", "inspector")
    for _ in range(4):
        assert _log_in(client, "ann", "guess").status_code == 401
    fifth = _log_in(client, "ann", "guess")
    assert fifth.status_code == 429 and fifth.headers["Retry-After"] == "300"
    clock.advance(minutes=4)
    right = _log_in(client, "ann")
    assert right.status_code == 429 and right.headers["Retry-After"] == "60"
    assert "even with the right password" in right.json()["detail"]
    clock.advance(minutes=1)
    assert _log_in(client, "ann").status_code == 201
    assert [e.details["key"] for e in _events(client, "login_locked") if e.details] == ["ann"]
    assert len(_events(client, "login_unlocked")) == 1


def test_one_client_address_guessing_many_names_is_locked_out(
    client: TestClient, clock: Clock
) -> None:
    _add(client, "ann", "inspector")
    codes = [_log_in(client, f"user{i}", "guess").status_code for i in range(20)]
    assert codes == [401] * 19 + [429]
    assert _log_in(client, "ann").status_code == 429  # the same address ("testclient")
    (event,) = _events(client, "login_locked")
    assert event.details is not None and event.details["scope"] == "address"


def test_an_admin_revokes_a_camera_key_and_the_camera_is_refused(
    client: TestClient,
    clock: Clock,
    add_line_with_camera: Callable[..., str],
    user_token: Callable[[str], str],
) -> None:
    key = add_line_with_camera("line-1")
    admin = _auth(user_token("admin"))
    listed = client.get("/api/v1/camera-keys", params={"line": "line-1"}, headers=admin).json()
    assert [k["key_prefix"] for k in listed] == [key[:12]]
    post = {"X-Api-Key": key, "Content-Type": "image/png"}

    inspector = _auth(user_token("inspector"))
    refused = client.post(f"/api/v1/camera-keys/{key[:8]}/revoke", headers=inspector)
    assert refused.status_code == 403
    revoked = client.post(
        f"/api/v1/camera-keys/{key[:8]}/revoke", json={"reason": "camera stolen"}, headers=admin
    )
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] == "2026-12-01T08:00:00Z"
    camera = client.post("/api/v1/lines/line-1/images", content=b"x", headers=post)
    assert camera.status_code == 401 and "revoked" in camera.json()["detail"]
    again = client.post(f"/api/v1/camera-keys/{key[:12]}/revoke", headers=admin)
    assert again.status_code == 409 and "already revoked" in again.json()["detail"]
    assert client.post("/api/v1/camera-keys/cam_zzzz/revoke", headers=admin).status_code == 404
    short = client.post("/api/v1/camera-keys/cam_/revoke", headers=admin)
    assert short.status_code == 422
    (event,) = _events(client, "camera_key_revoked")
    assert (event.reason, event.line_id) == ("camera stolen", "line-1")
    assert event.actor.startswith("admin-")


def test_an_ambiguous_key_prefix_is_refused_naming_the_matches(
    client: TestClient, add_line_with_camera: Callable[..., str], user_token: Callable[[str], str]
) -> None:
    add_line_with_camera("line-1")
    add_line_with_camera("line-2")
    with Session(client.app.state.engine) as db:  # type: ignore[attr-defined]
        rows = db.exec(select(CameraKey).order_by(col(CameraKey.id)))
        for row, prefix in zip(rows, ("cam_same1111", "cam_same2222"), strict=True):
            row.key_prefix = prefix
            db.add(row)
        db.commit()
    refused = client.post("/api/v1/camera-keys/cam_same/revoke", headers=_auth(user_token("admin")))
    assert refused.status_code == 409
    assert "cam_same1111 (line-1), cam_same2222 (line-2)" in refused.json()["detail"]


def test_a_deactivated_user_is_refused_on_the_next_request(
    client: TestClient, clock: Clock, user_token: Callable[[str], str]
) -> None:
    _add(client, "ann", "inspector")
    token = _token(client, "ann")
    admin = _auth(user_token("admin"))
    assert client.post("/api/v1/users/ann/deactivate", headers=_auth(token)).status_code == 403
    done = client.post("/api/v1/users/ann/deactivate", json={"reason": "left"}, headers=admin)
    assert done.status_code == 200 and done.json()["active"] is False
    refused = client.get("/api/v1/users/me", headers=_auth(token))
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    assert _log_in(client, "ann").status_code == 401
    assert client.post("/api/v1/users/ann/deactivate", headers=admin).status_code == 409
    assert client.post("/api/v1/users/nobody/deactivate", headers=admin).status_code == 404
    assert client.post("/api/v1/users/a%20b/deactivate", headers=admin).status_code == 422
    assert client.post("/api/v1/users/ann/activate", headers=admin).status_code == 200
    assert _log_in(client, "ann").status_code == 201
    assert _events(client, "user_deactivated")[0].reason == "left"


def test_passwords_change_by_an_admin_or_by_the_user_with_the_old_one(
    client: TestClient, clock: Clock, user_token: Callable[[str], str]
) -> None:
    _add(client, "ann", "inspector", "ann's password")
    _add(client, "bob", "inspector", "bob's password")
    here, elsewhere = (
        _token(client, "ann", "ann's password"),
        _token(client, "ann", "ann's password"),
    )
    url = "/api/v1/users/ann/password"

    assert (
        client.put(url, json={"new_password": "n3w password"}, headers=_auth(here)).status_code
        == 403
    )
    wrong = client.put(
        url, json={"new_password": "n3w password", "old_password": "guess"}, headers=_auth(here)
    )
    assert wrong.status_code == 403 and "old password is wrong" in wrong.json()["detail"]
    bob = _auth(_token(client, "bob", "bob's password"))
    assert client.put(url, json={"new_password": "n3w password"}, headers=bob).status_code == 403
    short = client.put(
        url, json={"new_password": "short", "old_password": "x"}, headers=_auth(here)
    )
    assert short.status_code == 422
    changed = client.put(
        url,
        json={"new_password": "n3w password", "old_password": "ann's password"},
        headers=_auth(here),
    )
    assert changed.status_code == 200
    assert client.get("/api/v1/users/me", headers=_auth(here)).status_code == 200  # kept
    assert client.get("/api/v1/users/me", headers=_auth(elsewhere)).status_code == 401
    assert _log_in(client, "ann", "ann's password").status_code == 401
    assert _log_in(client, "ann", "n3w password").status_code == 201

    admin = _auth(user_token("admin"))
    reset = client.put(
        url, json={"new_password": "r3set password", "reason": "forgot"}, headers=admin
    )
    assert reset.status_code == 200
    assert client.get("/api/v1/users/me", headers=_auth(here)).status_code == 401  # all revoked
    assert [e.actor for e in _events(client, "password_changed")][-1].startswith("admin-")


def test_users_list_and_revoke_their_tokens_admins_anyones(
    client: TestClient, clock: Clock, user_token: Callable[[str], str]
) -> None:
    _add(client, "ann", "inspector")
    _add(client, "bob", "inspector")
    ann = _token(client, "ann")
    clock.advance(minutes=5)
    other = _token(client, "ann")
    listed = client.get("/api/v1/users/ann/tokens", headers=_auth(ann))
    assert listed.status_code == 200
    rows = listed.json()
    assert [(r["user"], r["state"], r["created_at"], r["expires_at"]) for r in rows] == [
        ("ann", "active", "2026-12-01T08:00:00Z", "2026-12-06T08:00:00Z"),
        ("ann", "active", "2026-12-01T08:05:00Z", "2026-12-06T08:05:00Z"),
    ]
    assert rows[0]["last_used_at"] == "2026-12-01T08:05:00Z"  # the listing itself used it
    bob = _auth(_token(client, "bob"))
    assert client.get("/api/v1/users/ann/tokens", headers=bob).status_code == 403
    assert client.post(f"/api/v1/tokens/{rows[1]['id']}/revoke", headers=bob).status_code == 403

    revoked = client.post(f"/api/v1/tokens/{rows[1]['id']}/revoke", headers=_auth(ann))
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    assert client.get("/api/v1/users/me", headers=_auth(other)).status_code == 401
    admin = _auth(user_token("admin"))
    assert client.post(f"/api/v1/tokens/{rows[1]['id']}/revoke", headers=admin).status_code == 409
    assert client.post(f"/api/v1/tokens/{rows[0]['id']}/revoke", headers=admin).status_code == 200
    assert client.get("/api/v1/users/me", headers=_auth(ann)).status_code == 401
    assert client.post("/api/v1/tokens/999999/revoke", headers=admin).status_code == 404
    assert client.post("/api/v1/tokens/0/revoke", headers=admin).status_code == 422
    assert client.get("/api/v1/users/nobody/tokens", headers=admin).status_code == 404


CREDENTIAL_ROUTES = {
    ("post", "/api/v1/auth/token"): {401, 422, 429},
    ("post", "/api/v1/users/{name}/deactivate"): {401, 403, 404, 409, 422},
    ("post", "/api/v1/users/{name}/activate"): {401, 403, 404, 409, 422},
    ("put", "/api/v1/users/{name}/password"): {401, 403, 404, 422, 429},
    ("get", "/api/v1/users/{name}/tokens"): {401, 403, 404, 422},
    ("post", "/api/v1/tokens/{token_id}/revoke"): {401, 403, 404, 409, 422},
    ("get", "/api/v1/camera-keys"): {401, 403, 422},
    ("post", "/api/v1/camera-keys/{prefix}/revoke"): {401, 403, 404, 409, 422},
}


def test_every_credential_route_declares_its_refusals_and_their_body(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for (method, path), codes in CREDENTIAL_ROUTES.items():
        responses = paths[path][method]["responses"]
        assert {int(c) for c in responses if c.startswith("4")} == codes, path
        for code in codes - {422}:
            schema = responses[str(code)]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, code)
    assert "Retry-After" in paths["/api/v1/auth/token"]["post"]["responses"]["429"]["headers"]
