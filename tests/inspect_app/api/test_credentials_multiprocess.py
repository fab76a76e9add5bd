"""Revocation, expiry, deactivation and lockouts made by another process (the CLI, another
engine on the same database) hold on a live `inspect-app serve` from its next request:
its API, its camera endpoint and its review UI sessions."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from inspect_app import accounts
from inspect_app.cli import app as cli_app
from inspect_app.lines import add_line
from inspect_app.login_throttle import LoginThrottled, ThrottlePolicy
from inspect_app.settings import Settings
from inspect_app.storage.db import make_engine, upgrade_database
from inspect_app.storage.tables import ApiToken
from inspect_app.timeutil import utcnow
from tests.review_ui.conftest import review_client

pytestmark = pytest.mark.slow

PASSWORD = "a long test password"


def _png() -> bytes:
    image = np.full((120, 160, 3), 90, dtype=np.uint8)
    cv2.circle(image, (80, 60), 30, (200, 180, 170), -1)
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def test_credentials_ended_elsewhere_are_refused_by_the_live_service_at_once(
    tmp_path: Path,
    tiny_checkpoint: Path,
    running_service: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("INSPECT_DATABASE_URL", raising=False)
    # "at once": the service reads the lines' revision for every image (by default it reads it
    # at most every 100 ms; that bound is tested in tests/inspect_app/test_lookups.py)
    monkeypatch.setenv("INSPECT_LOOKUP_MAX_AGE_MS", "0")
    data_dir = tmp_path / "service"
    data_dir.mkdir()
    engine = make_engine(Settings(data_dir=data_dir).resolved_database_url)
    upgrade_database(engine)
    with Session(engine, expire_on_commit=False) as db:
        add_line(db, "line-1", "shadow")
        camera_key = accounts.add_camera_key(db, "line-1")
        ann = accounts.add_user(db, "ann", "inspector", PASSWORD)
        bob = accounts.add_user(db, "bob", "inspector", PASSWORD)
        accounts.add_user(db, "ines", "inspector", PASSWORD)
        to_revoke, to_expire = accounts.issue_token(db, ann), accounts.issue_token(db, ann)
        bobs = accounts.issue_token(db, bob)
        revoke_id, expire_id = db.exec(select(ApiToken.id).order_by(col(ApiToken.id))).all()[:2]

    cli = CliRunner()

    def operator(*args: str) -> str:
        result = cli.invoke(cli_app, [*args, "--data-dir", str(data_dir)])
        assert result.exit_code == 0, result.output
        return result.output

    image = _png()
    with (
        running_service(
            data_dir, weights=tiny_checkpoint, log=tmp_path / "serve.log", review_ui=True
        ) as service,
        httpx.Client(base_url=service.url, timeout=60) as http,
    ):

        def me(token: str) -> httpx.Response:
            return http.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})

        def post_image() -> httpx.Response:
            return http.post(
                "/api/v1/lines/line-1/images",
                content=image,
                headers={"X-Api-Key": camera_key, "Content-Type": "image/png"},
            )

        assert [me(t).status_code for t in (to_revoke, to_expire, bobs)] == [200, 200, 200]
        assert post_image().status_code == 201
        review = review_client(f"{service.url}/review/", "ines", PASSWORD)
        assert review.predict(api_name="/resume")[-1]["mode"] == "task"  # the part just posted

        operator("tokens", "revoke", str(revoke_id), "--reason", "left on a shared screen")
        refused = me(to_revoke)
        assert refused.status_code == 401 and "revoked" in refused.json()["detail"]

        operator("cameras", "revoke", camera_key[:12])
        camera = post_image()
        assert camera.status_code == 401 and "revoked" in camera.json()["detail"]

        with Session(engine) as db:  # another engine: the token's week is over
            row = db.get(ApiToken, expire_id)
            assert row is not None
            row.expires_at = utcnow() - timedelta(minutes=1)
            db.add(row)
            db.commit()
        expired = me(to_expire)
        assert expired.status_code == 401 and "log in again" in expired.json()["detail"]

        operator("users", "deactivate", "bob")
        assert me(bobs).status_code == 401

        operator("users", "deactivate", "ines")
        with pytest.raises(httpx.HTTPStatusError, match="401 Unauthorized"):
            review.predict(api_name="/resume")  # the UI session ended with the account

        # Five wrong passwords counted here lock "ann" out there: the state is shared.
        with Session(engine) as db:
            for _ in range(5):
                with contextlib.suppress(accounts.LoginRefused, LoginThrottled):
                    accounts.log_in(db, "ann", "guess", address=None, policy=ThrottlePolicy())
        locked = http.post("/api/v1/auth/token", json={"name": "ann", "password": PASSWORD})
        assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 250
    engine.dispose()
