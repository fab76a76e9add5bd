from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session, col, select

from inspect_app import accounts
from inspect_app.domain import Role
from inspect_app.lines import LineNotFound, add_line
from inspect_app.login_throttle import LoginThrottled
from inspect_app.security import hash_secret
from inspect_app.storage.tables import ApiToken, CameraKey, Event, User, utcnow
from inspect_app.timeutil import as_utc

MINUTE = timedelta(minutes=1)


def test_a_user_logs_in_with_the_right_password_only(session: Session) -> None:
    accounts.add_user(session, "ann", Role.INSPECTOR, "s3cret-pass")
    user = accounts.authenticate(session, "ann", "s3cret-pass")
    assert user is not None and user.role == "inspector"
    assert accounts.authenticate(session, "ann", "wrong-pass") is None
    assert accounts.authenticate(session, "nobody", "s3cret-pass") is None


def test_the_password_is_stored_only_as_a_salted_hash(session: Session) -> None:
    accounts.add_user(session, "ann", Role.INSPECTOR, "s3cret-pass")
    stored = session.exec(select(User.password_hash)).one()
    assert stored.startswith("scrypt$") and "s3cret-pass" not in stored


def test_a_deactivated_user_can_neither_log_in_nor_use_a_token(session: Session) -> None:
    user = accounts.add_user(session, "ann", Role.INSPECTOR, "s3cret-pass")
    token = accounts.issue_token(session, user)
    user.active = False
    session.add(user)
    session.commit()
    assert accounts.authenticate(session, "ann", "s3cret-pass") is None
    assert accounts.user_for_token(session, token) is None


def test_adding_a_user_is_recorded(session: Session) -> None:
    accounts.add_user(session, "ann", "supervisor", "s3cret-pass", actor="root")
    event = session.exec(select(Event).where(Event.kind == "user_added")).one()
    assert event.actor == "root"
    assert event.details == {"user": "ann", "role": "supervisor"}


@pytest.mark.parametrize(
    ("name", "role", "password", "message"),
    [
        ("", "inspector", "s3cret-pass", "invalid user name"),
        ("ann smith", "inspector", "s3cret-pass", "invalid user name"),
        ("ann", "boss", "s3cret-pass", "unknown role 'boss'"),
        ("ann", "inspector", "short", "at least 8 characters"),
    ],
)
def test_bad_account_input_is_refused_with_a_clear_message(
    session: Session, name: str, role: str, password: str, message: str
) -> None:
    with pytest.raises(accounts.AccountError, match=message):
        accounts.add_user(session, name, role, password)


def test_a_name_is_taken_once(session: Session) -> None:
    accounts.add_user(session, "ann", Role.INSPECTOR, "s3cret-pass")
    with pytest.raises(accounts.UserExists, match="already exists"):
        accounts.add_user(session, "ann", Role.ADMIN, "other-pass")


def test_a_token_names_its_user_and_only_its_hash_is_stored(session: Session) -> None:
    user = accounts.add_user(session, "ann", Role.INSPECTOR, "s3cret-pass")
    token = accounts.issue_token(session, user)
    found = accounts.user_for_token(session, token)
    assert found is not None and found.name == "ann"
    stored = session.exec(select(ApiToken.token_hash)).one()
    assert token not in stored
    assert accounts.user_for_token(session, token + "x") is None
    assert accounts.user_for_token(session, "") is None


def test_a_revoked_token_no_longer_works(session: Session) -> None:
    user = accounts.add_user(session, "ann", Role.INSPECTOR, "s3cret-pass")
    token = accounts.issue_token(session, user)
    row = session.exec(select(ApiToken)).one()
    row.revoked_at = utcnow()
    session.add(row)
    session.commit()
    assert accounts.user_for_token(session, token) is None


def test_a_camera_key_belongs_to_its_line_only(session: Session) -> None:
    add_line(session, "line-1")
    add_line(session, "line-2")
    key_1 = accounts.add_camera_key(session, "line-1")
    key_2 = accounts.add_camera_key(session, "line-2")
    assert accounts.line_for_camera_key(session, key_1) == "line-1"
    assert accounts.line_for_camera_key(session, key_2) == "line-2"
    assert accounts.line_for_camera_key(session, "cam_guess") is None
    stored = session.exec(select(CameraKey).where(CameraKey.line_id == "line-1")).one()
    assert key_1 not in stored.key_hash and key_1.startswith(stored.key_prefix)
    assert [k.line_id for k in accounts.list_camera_keys(session, "line-2")] == ["line-2"]


def test_a_revoked_camera_key_no_longer_works(session: Session) -> None:
    add_line(session, "line-1")
    key = accounts.add_camera_key(session, "line-1")
    row = session.exec(select(CameraKey)).one()
    row.revoked_at = utcnow()
    session.add(row)
    session.commit()
    assert accounts.line_for_camera_key(session, key) is None


def test_a_camera_key_needs_an_existing_line(session: Session) -> None:
    with pytest.raises(LineNotFound, match="no line 'line-9'"):
        accounts.add_camera_key(session, "line-9")


# -- credentials that end: expiry, revocation, deactivation, password changes ---------------

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _events(session: Session, kind: str) -> list[Event]:
    return list(session.exec(select(Event).where(Event.kind == kind).order_by(col(Event.id))))


def _token_id(session: Session, user: User) -> int:
    ids = session.exec(select(ApiToken.id).where(ApiToken.user_id == user.id)).all()
    return max(i for i in ids if i is not None)


def test_a_token_expires_after_its_ttl_and_says_so(session: Session) -> None:
    user = accounts.add_user(session, "ann", Role.INSPECTOR, "s3cret-pass")
    token = accounts.issue_token(session, user, ttl=8 * HOUR, now=T0)
    row = session.exec(select(ApiToken)).one()
    assert as_utc(row.expires_at) == T0 + 8 * HOUR
    found, _ = accounts.check_token(session, token, ttl=8 * HOUR, now=T0 + 8 * HOUR - MINUTE)
    assert found.name == "ann"
    with pytest.raises(accounts.TokenExpired, match=r"expired at 2026-12-01 16:00 UTC") as caught:
        accounts.check_token(session, token, ttl=8 * HOUR, now=T0 + 8 * HOUR)
    assert "tokens last 8 h" in str(caught.value) and "log in again" in str(caught.value)
    issued = _events(session, "token_issued")[-1]
    assert issued.details is not None and issued.details["expires_at"].startswith("2026-12-01 16")


def test_a_token_from_before_expiry_lasts_the_ttl_from_its_creation(session: Session) -> None:
    """Revision 0003 leaves old tokens' expires_at NULL: the configured TTL decides."""
    user = accounts.add_user(session, "ann", Role.INSPECTOR, "s3cret-pass")
    token = accounts.issue_token(session, user, now=T0)
    row = session.exec(select(ApiToken)).one()
    row.expires_at = None
    session.add(row)
    session.commit()
    assert accounts.DEFAULT_TOKEN_TTL == 120 * HOUR  # a working week
    assert accounts.token_expiry(row, accounts.DEFAULT_TOKEN_TTL) == T0 + 120 * HOUR
    assert accounts.user_for_token(session, token, now=T0 + 119 * HOUR) is not None
    assert accounts.user_for_token(session, token, now=T0 + 121 * HOUR) is None
    assert accounts.token_state(row, 24 * HOUR, T0 + 25 * HOUR) == "expired"


def test_a_tokens_last_use_is_recorded_to_the_minute(session: Session) -> None:
    user = accounts.add_user(session, "ann", Role.INSPECTOR, "s3cret-pass")
    token = accounts.issue_token(session, user, now=T0)
    for seconds in (0, 30, 59):
        accounts.check_token(session, token, now=T0 + timedelta(seconds=seconds))
    row = session.exec(select(ApiToken)).one()
    session.refresh(row)
    assert as_utc(row.last_used_at) == T0
    accounts.check_token(session, token, now=T0 + MINUTE)
    session.refresh(row)
    assert as_utc(row.last_used_at) == T0 + MINUTE


def test_a_refused_token_says_why(session: Session) -> None:
    ann = accounts.add_user(session, "ann", Role.INSPECTOR, "s3cret-pass")
    accounts.add_user(session, "root", Role.ADMIN, "s3cret-pass")
    token = accounts.issue_token(session, ann)
    with pytest.raises(accounts.TokenUnknown, match="unknown"):
        accounts.check_token(session, token + "x")
    accounts.revoke_token(session, _token_id(session, ann), actor="root", now=T0)
    with pytest.raises(accounts.TokenRevoked, match="revoked at 2026-12-01 08:00 UTC"):
        accounts.check_token(session, token)
    fresh = accounts.issue_token(session, ann)
    ann.active = False
    session.add(ann)
    session.commit()
    with pytest.raises(accounts.UserDeactivated, match="'ann' is deactivated"):
        accounts.check_token(session, fresh)


def test_tokens_are_listed_and_revoked_by_id_with_who_and_why(session: Session) -> None:
    ann = accounts.add_user(session, "ann", Role.INSPECTOR, "s3cret-pass")
    bob = accounts.add_user(session, "bob", Role.SUPERVISOR, "s3cret-pass")
    root = accounts.add_user(session, "root", Role.ADMIN, "s3cret-pass")
    first = accounts.issue_token(session, ann, now=T0)
    second = accounts.issue_token(session, ann, now=T0 + HOUR)
    listed = accounts.list_tokens(session, "ann", by=ann)
    assert [accounts.token_state(t, 120 * HOUR, T0 + 2 * HOUR) for t in listed] == ["active"] * 2
    first_id = listed[0].id
    assert first_id is not None

    with pytest.raises(accounts.NotPermitted, match=r"bob \(supervisor\) may not"):
        accounts.revoke_token(session, first_id, actor="bob", by=bob)
    with pytest.raises(accounts.NotPermitted):
        accounts.list_tokens(session, "ann", by=bob)
    revoked = accounts.revoke_token(
        session, first_id, actor="root", reason="laptop stolen", by=root, now=T0 + 2 * HOUR
    )
    assert as_utc(revoked.revoked_at) == T0 + 2 * HOUR
    assert accounts.user_for_token(session, first) is None
    assert accounts.user_for_token(session, second) is not None
    states = [
        accounts.token_state(t, 120 * HOUR, T0 + 2 * HOUR)
        for t in accounts.list_tokens(session, "ann")
    ]
    assert states == ["revoked", "active"]
    (event,) = _events(session, "token_revoked")
    assert (event.actor, event.reason) == ("root", "laptop stolen")
    assert event.details == {"user": "ann", "token_id": first_id}

    with pytest.raises(accounts.AccountConflict, match="already revoked"):
        accounts.revoke_token(session, first_id, actor="root")
    with pytest.raises(accounts.CredentialNotFound, match="no token with id 999"):
        accounts.revoke_token(session, 999, actor="root")
    accounts.revoke_token(session, _token_id(session, ann), actor="ann", by=ann)  # their own
    assert accounts.user_for_token(session, second) is None


def test_a_deactivated_user_loses_tokens_logins_and_may_come_back(session: Session) -> None:
    ann = accounts.add_user(session, "ann", Role.INSPECTOR, "s3cret-pass")
    token = accounts.issue_token(session, ann)
    accounts.deactivate_user(session, "ann", actor="root", reason="left the company", now=T0)
    assert accounts.user_for_token(session, token) is None
    assert accounts.authenticate(session, "ann", "s3cret-pass") is None
    (event,) = _events(session, "user_deactivated")
    assert (event.actor, event.reason) == ("root", "left the company")
    assert event.details == {"user": "ann", "tokens_revoked": 1, "ui_sessions_ended": 0}
    with pytest.raises(accounts.AccountConflict, match="already deactivated"):
        accounts.deactivate_user(session, "ann", actor="root")

    accounts.activate_user(session, "ann", actor="root", reason="rehired")
    assert accounts.authenticate(session, "ann", "s3cret-pass") is not None
    assert accounts.user_for_token(session, token) is None  # old tokens stay revoked
    assert _events(session, "user_activated")[0].reason == "rehired"
    with pytest.raises(accounts.UserNotFound):
        accounts.deactivate_user(session, "nobody", actor="root")


def test_the_last_active_admin_cannot_be_deactivated(session: Session) -> None:
    accounts.add_user(session, "root", Role.ADMIN, "s3cret-pass")
    with pytest.raises(accounts.AccountConflict, match="last active admin"):
        accounts.deactivate_user(session, "root", actor="root")
    accounts.add_user(session, "root2", Role.ADMIN, "s3cret-pass")
    accounts.deactivate_user(session, "root", actor="root2")
    with pytest.raises(accounts.AccountConflict, match="last active admin"):
        accounts.deactivate_user(session, "root2", actor="root2")


def test_an_admins_password_reset_revokes_every_token(session: Session) -> None:
    ann = accounts.add_user(session, "ann", Role.INSPECTOR, "old password")
    root = accounts.add_user(session, "root", Role.ADMIN, "s3cret-pass")
    tokens = [accounts.issue_token(session, ann) for _ in range(2)]
    accounts.change_password(
        session, "ann", "new password", actor="root", by=root, reason="forgotten", now=T0
    )
    assert accounts.authenticate(session, "ann", "old password") is None
    assert accounts.authenticate(session, "ann", "new password") is not None
    assert all(accounts.user_for_token(session, t) is None for t in tokens)
    assert as_utc(accounts.get_user(session, "ann").password_changed_at) == T0
    (event,) = _events(session, "password_changed")
    assert (event.actor, event.reason) == ("root", "forgotten")
    assert event.details == {
        "user": "ann",
        "tokens_revoked": 2,
        "ui_sessions_ended": 0,
    }  # no password
    with pytest.raises(accounts.AccountError, match="at least 8"):
        accounts.change_password(session, "ann", "short", actor="root", by=root)


def test_users_change_their_own_password_with_the_old_one(session: Session) -> None:
    ann = accounts.add_user(session, "ann", Role.INSPECTOR, "old password")
    bob = accounts.add_user(session, "bob", Role.SUPERVISOR, "bob password")
    here, elsewhere = accounts.issue_token(session, ann), accounts.issue_token(session, ann)
    here_id = session.exec(
        select(ApiToken.id).where(ApiToken.token_hash == hash_secret(here))
    ).one()
    with pytest.raises(accounts.NotPermitted, match="needs your old password"):
        accounts.change_password(session, "ann", "new password", actor="ann", by=ann)
    with pytest.raises(accounts.NotPermitted, match="old password is wrong"):
        accounts.change_password(
            session, "ann", "new password", actor="ann", by=ann, old_password="guess"
        )
    with pytest.raises(accounts.NotPermitted, match=r"bob \(supervisor\) may not"):
        accounts.change_password(session, "ann", "new password", actor="bob", by=bob)
    accounts.change_password(
        session, "ann", "new password", actor="ann", by=ann, old_password="old password",
        keep_token_id=here_id,
    )  # fmt: skip
    assert accounts.user_for_token(session, here) is not None  # the one it was changed with
    assert accounts.user_for_token(session, elsewhere) is None


def test_guessing_the_old_password_is_throttled_like_a_login(session: Session) -> None:
    ann = accounts.add_user(session, "ann", Role.INSPECTOR, "old password")
    for i in range(4):
        with pytest.raises(accounts.NotPermitted):
            accounts.change_password(
                session, "ann", "new password", actor="ann", by=ann, old_password=f"guess{i}",
                now=T0,
            )  # fmt: skip
    with pytest.raises(LoginThrottled):
        accounts.change_password(
            session, "ann", "new password", actor="ann", by=ann, old_password="guess", now=T0
        )
    with pytest.raises(LoginThrottled):  # the right one too, until the lockout ends
        accounts.change_password(
            session, "ann", "new password", actor="ann", by=ann, old_password="old password",
            now=T0 + MINUTE,
        )  # fmt: skip


def test_a_camera_key_is_revoked_by_its_prefix_with_who_and_why(session: Session) -> None:
    add_line(session, "line-1")
    key = accounts.add_camera_key(session, "line-1")
    accounts.revoke_camera_key(
        session, key[:12] + "...", actor="root", reason="camera replaced", now=T0
    )
    assert accounts.line_for_camera_key(session, key) is None
    (event,) = _events(session, "camera_key_revoked")
    assert (event.actor, event.reason, event.line_id) == ("root", "camera replaced", "line-1")
    assert event.details == {"key_prefix": key[:12]}
    with pytest.raises(accounts.AccountConflict, match="already revoked at 2026-12-01 08:00"):
        accounts.revoke_camera_key(session, key[:10], actor="root")
    with pytest.raises(accounts.CredentialNotFound, match="no camera key starts with"):
        accounts.revoke_camera_key(session, "cam_zzzzzzzz", actor="root")
    with pytest.raises(accounts.AccountError, match="at least 8 characters"):
        accounts.revoke_camera_key(session, "cam_", actor="root")


def test_the_whole_key_names_its_key_too(session: Session) -> None:
    add_line(session, "line-1")
    key = accounts.add_camera_key(session, "line-1")
    assert accounts.revoke_camera_key(session, key, actor="root").line_id == "line-1"
    assert accounts.line_for_camera_key(session, key) is None


def test_an_ambiguous_prefix_is_refused_naming_the_keys(session: Session) -> None:
    add_line(session, "line-1")
    add_line(session, "line-2")
    keys = [accounts.add_camera_key(session, line) for line in ("line-1", "line-2")]
    for row, prefix in zip(
        session.exec(select(CameraKey).order_by(col(CameraKey.id))),
        ("cam_abcd1234", "cam_abcd5678"),
        strict=True,
    ):
        row.key_prefix = prefix
        session.add(row)
    session.commit()
    with pytest.raises(accounts.AccountConflict) as caught:
        accounts.revoke_camera_key(session, "cam_abcd", actor="root")
    assert "matches 2 live camera keys: cam_abcd1234 (line-1), cam_abcd5678 (line-2)" in str(
        caught.value
    )
    assert all(accounts.line_for_camera_key(session, k) is not None for k in keys)
    # case matters in keys, even where the database's LIKE ignores it
    with pytest.raises(accounts.CredentialNotFound):
        accounts.revoke_camera_key(session, "cam_ABCD1234", actor="root")
    accounts.revoke_camera_key(session, "cam_abcd1", actor="root")
    assert accounts.line_for_camera_key(session, keys[0]) is None
