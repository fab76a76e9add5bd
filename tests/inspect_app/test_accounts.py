from __future__ import annotations

import pytest
from sqlmodel import Session, select

from inspect_app import accounts
from inspect_app.domain import Role
from inspect_app.lines import LineNotFound, add_line
from inspect_app.storage.tables import ApiToken, CameraKey, Event, User, utcnow


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
