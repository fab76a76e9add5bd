"""The demo world `inspect-app serve --demo` (``make run``) starts with.

Line ``line-1`` at ``shadow``, users ``inspector``/``supervisor``/``admin``, a camera key for
line-1 and a replay camera feeding line-1 from ``data/samples/`` at one image a second. The
camera waits while line-1's review queue holds ``demo_max_queue`` (``INSPECT_DEMO_MAX_QUEUE``,
default 50) unlabeled tasks, and goes on when inspectors bring it below.

Passwords and the camera key are random, created on the first start only, shown once in the
log and kept in ``<data dir>/demo-credentials.txt`` (readable by its owner only). A restart
on the same data keeps them and says where to find them, instead of minting new ones.
"""

from __future__ import annotations

import logging
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from inspect_app.accounts import add_camera_key, add_user, list_camera_keys
from inspect_app.domain import AutomationLevel, Role
from inspect_app.lines import LineNotFound, add_line, get_line
from inspect_app.settings import SAMPLES_DIR, CameraSourceConfig, Settings
from inspect_app.storage.tables import User

logger = logging.getLogger(__name__)

DEMO_LINE = "line-1"
DEMO_USERS: tuple[tuple[str, Role], ...] = (
    ("inspector", Role.INSPECTOR),
    ("supervisor", Role.SUPERVISOR),
    ("admin", Role.ADMIN),
)
CREDENTIALS_FILE = "demo-credentials.txt"
DEMO_ACTOR = "demo"


def credentials_path(settings: Settings) -> Path:
    return settings.data_dir / CREDENTIALS_FILE


def _write_credentials(path: Path, passwords: dict[str, str], camera_key: str | None) -> None:
    lines = [f"# inspect-app demo credentials, created {datetime.now(UTC).isoformat()}"]
    lines += [f"user {name} password {password}" for name, password in passwords.items()]
    if camera_key is not None:
        lines.append(f"camera key for {DEMO_LINE}: {camera_key}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as handle:  # append: a later start may add what was missing
        handle.write("\n".join(lines) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def seed_demo(engine: Engine, settings: Settings) -> list[CameraSourceConfig]:
    """Create what is missing of the demo world; return the demo's camera sources."""
    passwords: dict[str, str] = {}
    camera_key: str | None = None
    with Session(engine, expire_on_commit=False) as session:
        try:
            get_line(session, DEMO_LINE)
        except LineNotFound:
            add_line(session, DEMO_LINE, AutomationLevel.SHADOW, actor=DEMO_ACTOR)
            logger.info("demo: created line %s at level shadow", DEMO_LINE)
        for name, role in DEMO_USERS:
            if session.exec(select(User).where(User.name == name)).first() is None:
                password = secrets.token_urlsafe(12)
                add_user(session, name, role, password, actor=DEMO_ACTOR)
                passwords[name] = password
        if not list_camera_keys(session, DEMO_LINE):
            camera_key = add_camera_key(session, DEMO_LINE, actor=DEMO_ACTOR)

    path = credentials_path(settings)
    if passwords or camera_key is not None:
        _write_credentials(path, passwords, camera_key)
        shown = [
            f"  user {n!r} ({r.value}) password: {passwords[n]}"
            for n, r in DEMO_USERS
            if n in passwords
        ]
        if camera_key is not None:
            shown.append(f"  camera key for {DEMO_LINE} (X-Api-Key): {camera_key}")
        logger.warning(
            "demo credentials, shown once (also saved in %s):\n%s", path.resolve(), "\n".join(shown)
        )
    elif path.is_file():
        logger.info("demo users and camera key exist; their credentials are in %s", path.resolve())
    else:
        logger.info(
            "demo users and camera key exist (created by an earlier start; %s is not in this "
            "data dir); add accounts with `inspect-app users add`.",
            CREDENTIALS_FILE,
        )

    samples = Path(SAMPLES_DIR)
    if not samples.is_dir() or not any(samples.iterdir()):
        logger.warning("demo: no sample images in %s, so no replay camera", samples)
        return []
    return [
        CameraSourceConfig(
            line=DEMO_LINE,
            kind="replay",
            uri=str(samples),
            rate=1.0,
            max_queue=settings.demo_max_queue,
        )
    ]
