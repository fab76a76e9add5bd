"""Access control on every route of the real app: tokens, roles that nest, camera keys."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from inspect_app.domain import Role

# Every route of the core API with the least role design section 6 gives it.
ROUTES: list[tuple[str, str, Role, dict | None]] = [
    ("GET", "/api/v1/lines", Role.SUPERVISOR, None),
    ("GET", "/api/v1/lines/line-1", Role.SUPERVISOR, None),
    ("PUT", "/api/v1/lines/line-1/automation", Role.SUPERVISOR,
     {"level": "shadow", "reason": "role check"}),
    ("GET", "/api/v1/lines/line-1/events", Role.SUPERVISOR, None),
    ("POST", "/api/v1/reviews/claim", Role.INSPECTOR, None),
    ("POST", "/api/v1/reviews/1/label", Role.INSPECTOR, {"label": "ok"}),
    ("POST", "/api/v1/reviews/1/renew", Role.INSPECTOR, None),
    ("POST", "/api/v1/reviews/1/release", Role.INSPECTOR, None),
    ("POST", "/api/v1/reviews/1/escalate", Role.INSPECTOR, {"note": "unclear"}),
    ("POST", "/api/v1/inspections/1/relabel", Role.INSPECTOR, {"label": "ok"}),
    ("GET", "/api/v1/users/me", Role.INSPECTOR, None),
    ("GET", "/api/v1/users", Role.ADMIN, None),
    ("POST", "/api/v1/users", Role.ADMIN,
     {"name": "new-user", "role": "inspector", "password": "a long password"}),
    ("POST", "/api/v1/lines/line-1/camera-keys", Role.ADMIN, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "needed", "body"), ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES]
)
def test_each_route_lets_in_exactly_the_roles_that_may(
    client: TestClient,
    add_line_with_camera: Callable[..., str],
    user_token: Callable[[str], str],
    method: str,
    path: str,
    needed: Role,
    body: dict | None,
) -> None:
    add_line_with_camera("line-1")
    for role in Role:
        headers = {"Authorization": f"Bearer {user_token(role.value)}"}
        response = client.request(method, path, json=body, headers=headers)
        if role.may(needed):
            assert response.status_code not in (401, 403), (role, response.json())
        else:
            assert response.status_code == 403, (role, response.text)
            assert needed.value in response.json()["detail"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer iat_not-a-token"}, {"Authorization": "Basic YWRtaW46YWRtaW4="}],
    ids=["none", "unknown token", "not bearer"],
)
def test_every_api_route_refuses_a_caller_without_a_valid_credential(
    client: TestClient, add_line_with_camera: Callable[..., str], headers: dict[str, str]
) -> None:
    """Not only the routes listed above: every route under /api/v1 the app has, except
    logging in. (A camera key is a credential too, for its own routes.)"""
    add_line_with_camera("line-1")
    checked = 0
    for template, operations in client.get("/openapi.json").json()["paths"].items():
        if not template.startswith("/api/v1") or template == "/api/v1/auth/token":
            continue
        path = re.sub(r"\{[a-z_]+\}", "1", template.replace("{line}", "line-1"))
        for method in operations:
            response = client.request(method.upper(), path, headers=headers)
            assert response.status_code == 401, (method, path, response.text)
            assert response.json()["detail"]
            checked += 1
    assert checked >= len(ROUTES)


def test_a_camera_key_opens_its_own_line_only(
    client: TestClient, add_line_with_camera: Callable[..., str]
) -> None:
    from inspect_app.api.deps import get_camera_for_path_line

    key_1 = add_line_with_camera("line-1")
    add_line_with_camera("line-2")
    assert get_camera_for_path_line("line-1", "line-1") == "line-1"
    with pytest.raises(Exception, match="belongs to line 'line-1', not 'line-2'"):
        get_camera_for_path_line("line-2", "line-1")
    # and through the real route a key of line-1 cannot post to line-2
    response = client.post(
        "/api/v1/lines/line-2/images",
        content=b"not even an image",
        headers={"X-Api-Key": key_1, "Content-Type": "image/png"},
    )
    assert response.status_code == 403
    response = client.post(
        "/api/v1/lines/line-1/images",
        content=b"x",
        headers={"X-Api-Key": "cam_guessed", "Content-Type": "image/png"},
    )
    assert response.status_code == 401
