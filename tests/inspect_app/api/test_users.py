"""Logging in for a token, and the admin's users and camera keys, through the real app."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlmodel import Session

from inspect_app.accounts import add_user


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
