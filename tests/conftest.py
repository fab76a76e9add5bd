"""Shared fixtures. Each engineer adds theirs with small targeted edits."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from inspect_app import security

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

    from inspect_app.settings import Settings

# -- the suite on two workers (`make test`: pytest -n 2 --dist loadfile --no-loadscope-reorder)

# Modules that run for a minute or more, dealt out first and longest first (their times on a
# quiet fresh clone, `--durations`): a worker takes a module whole, and a long one that
# started last would run alone at the end while the other worker idles.
LONG_MODULES = (
    "tests/test_readme.py",  # ~165 s
    "tests/review_ui/test_browser_several_processes.py",  # ~105 s
    "tests/inspect_app/api/test_openapi_contract.py",  # ~95 s
    "tests/inspect_app/api/test_crash_recovery.py",  # ~85 s
    "tests/review_ui/test_browser.py",  # ~75 s
    "tests/inspect_app/rollout/test_rollout_multiprocess.py",  # ~60 s
    "tests/inspect_app/api/test_credentials_multiprocess.py",  # ~60 s
    "tests/inspect_app/monitoring/test_prometheus_server.py",  # ~45 s
    "tests/inspect_app/outputs/test_restarts.py",  # ~45 s
    "tests/inspect_app/test_several_processes.py",  # ~45 s
    "tests/inspect_app/api/test_reviews_multiprocess.py",  # ~40 s
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        module = item.nodeid.split("::", 1)[0]
        return LONG_MODULES.index(module) if module in LONG_MODULES else len(LONG_MODULES)

    items.sort(key=rank)  # stable: the order within a module, and of the others, is kept


# -- password hashing: cheap for the users tests make, the product's cost checked apart --------

PRODUCT_SCRYPT_N = security.SCRYPT_N
TEST_SCRYPT_N = 2**10


@pytest.fixture(autouse=True, scope="session")
def _cheap_password_hashing() -> Iterator[None]:
    """Users made in a test process hash their passwords with scrypt at N = 2**10 (1 MB), not
    the product's 2**14 (16 MB): a hash and its login took 0.045 s against 0.81 s at load 12.
    Django's documentation gives the same advice for test suites, where hashing is most of
    making a user.
    A hash carries its own cost and `verify_password` reads it, so logins still check the real
    scrypt; service processes the tests start keep the product's cost. The product's cost
    itself is tested under `product_password_hashing`."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(security, "SCRYPT_N", TEST_SCRYPT_N)
        yield


@pytest.fixture
def product_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The product's own scrypt cost, for the tests of it."""
    monkeypatch.setattr(security, "SCRYPT_N", PRODUCT_SCRYPT_N)


# -- databases (core engineer): SQLite in memory and a real PostgreSQL server ---------------


def _postgres_bin_dir() -> Path | None:
    """Debian's postgresql package installs its server binaries outside PATH."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _PostgresServer:
    """A throwaway PostgreSQL cluster in a temp dir. PostgreSQL refuses to run as root, so
    as root its commands run as the ``postgres`` user (runuser)."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.as_postgres: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                raise RuntimeError("running as root without runuser to drop to 'postgres'")
            self.as_postgres = [runuser, "-u", "postgres", "--"]
        self.root = Path(tempfile.mkdtemp(prefix="inspect-pg-"))
        if self.as_postgres:
            shutil.chown(self.root, user="postgres", group="postgres")
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0

    def _run(self, *args: str) -> None:
        subprocess.run(
            [*self.as_postgres, *args], check=True, capture_output=True, text=True, timeout=120
        )

    def start(self) -> None:
        self._run(
            str(self.bin_dir / "initdb"),
            "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        last_error: Exception | None = None
        for _ in range(5):  # another process may take the free port before the server does
            self.port = _free_port()
            options = (
                f"-c port={self.port} -c listen_addresses=127.0.0.1 "
                f"-c unix_socket_directories={self.root} -c max_connections=200 "
                # a test server: durability off, speed on
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            try:
                self._run(
                    str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                    "-o", options, "-w", "-t", "60", "start",
                )  # fmt: skip
                return
            except subprocess.CalledProcessError as exc:
                last_error = exc
        raise RuntimeError(f"pg_ctl start failed: {last_error}; log: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return self.log.read_text()[-2000:]
        except OSError:
            return "(no log)"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run(
                [*self.as_postgres, str(self.bin_dir / "pg_ctl"), "-D", str(self.data),
                 "-m", "fast", "-w", "stop"],
                capture_output=True, timeout=120, check=False,
            )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)


def _admin_execute(server_url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def _postgres_server() -> Iterator[_PostgresServer]:
    bin_dir = _postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (apt-get install postgresql)")
    try:
        server = _PostgresServer(bin_dir)
    except (RuntimeError, LookupError, OSError) as exc:
        pytest.skip(f"cannot prepare a PostgreSQL server: {exc}")
    try:
        server.start()
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        server.stop()
        pytest.skip(f"cannot start a PostgreSQL server: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_url(_postgres_server: _PostgresServer) -> str:
    """A database on a test PostgreSQL server, shared by the whole session (no tables)."""
    _admin_execute(_postgres_server.url("postgres"), "CREATE DATABASE inspect_test")
    return _postgres_server.url("inspect_test")


@pytest.fixture
def fresh_postgres_url(_postgres_server: _PostgresServer) -> Iterator[str]:
    """An empty database of its own for one test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = _postgres_server.url("postgres")
    _admin_execute(admin, f"CREATE DATABASE {name}")
    yield _postgres_server.url(name)
    _admin_execute(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def _postgres_schema_template(_postgres_server: _PostgresServer) -> str:
    """A database at the newest revision, made once per session, that the workspace is
    copied from (again whenever a test changed its schema): a copy takes a fraction of
    building the schema again (0.37 s against 2.2 s on a loaded machine)."""
    from inspect_app.storage.db import make_engine, upgrade_database

    name = "inspect_schema_template"
    _admin_execute(_postgres_server.url("postgres"), f"CREATE DATABASE {name}")
    db = make_engine(_postgres_server.url(name))
    upgrade_database(db)
    db.dispose()  # CREATE DATABASE ... TEMPLATE needs the template without connections
    return name


@pytest.fixture(scope="session")
def _postgres_workspace(
    _postgres_server: _PostgresServer, _postgres_schema_template: str
) -> Iterator[str]:
    """This worker's database for `engine`'s PostgreSQL tests: a copy of the template made
    once, emptied before each test (`_postgres_at_head`)."""
    name = f"w_{uuid.uuid4().hex[:12]}"
    admin = _postgres_server.url("postgres")
    _admin_execute(admin, f"CREATE DATABASE {name} TEMPLATE {_postgres_schema_template}")
    yield name
    _admin_execute(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _empty_database(url: str, tables: frozenset[str]) -> bool:
    """Whatever a test left connected to `url` cut off (as ``DROP DATABASE ... WITH
    (FORCE)`` would), then every row out of its tables but the revision, sequences back at
    1; False, with no row removed, when its tables are not `tables` (a test changed the
    schema)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        if frozenset(row[0] for row in rows) != tables:
            return False
        names = ", ".join(f'"{table}"' for table in sorted(tables - {"alembic_version"}))
        conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")  # type: ignore[arg-type]
    return True


@pytest.fixture(scope="session")
def _postgres_tables(
    _postgres_server: _PostgresServer, _postgres_schema_template: str
) -> frozenset[str]:
    """The template's tables. Emptying a workspace stands for a fresh copy only while the
    migrations leave no row but their revision's: checked here, once."""
    import psycopg

    with psycopg.connect(_postgres_server.url(_postgres_schema_template)) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = frozenset(row[0] for row in rows)
        seeded = [
            table
            for table in sorted(tables - {"alembic_version"})
            if conn.execute(f'SELECT 1 FROM "{table}" LIMIT 1').fetchone()  # type: ignore[arg-type]
        ]
    assert not seeded, f"the migrations seed rows in {seeded}: emptying would remove them"
    return tables


@pytest.fixture
def _postgres_at_head(
    _postgres_server: _PostgresServer,
    _postgres_schema_template: str,
    _postgres_workspace: str,
    _postgres_tables: frozenset[str],
) -> str:
    """A database with the whole schema and no rows, for one test: the worker's workspace,
    emptied first (TRUNCATE, 60 ms, where a copy of the template and its drop took 0.4 s,
    for about 290 tests). Only the migrations' revision row is kept; the template has no
    other row. A workspace whose tables a test changed is made again from the template."""
    url = _postgres_server.url(_postgres_workspace)
    if not _empty_database(url, _postgres_tables):
        admin = _postgres_server.url("postgres")
        _admin_execute(admin, f"DROP DATABASE {_postgres_workspace} WITH (FORCE)")
        _admin_execute(
            admin, f"CREATE DATABASE {_postgres_workspace} TEMPLATE {_postgres_schema_template}"
        )
    return url


@pytest.fixture(scope="session")
def _sqlite_schema_template() -> Iterator[sqlite3.Connection]:
    """An in-memory SQLite database at the newest revision, made once per session; each
    test's in-memory database is a copy of it (sqlite3's backup: 10 ms against 210 ms to
    build the schema, for about 1,000 tests)."""
    from inspect_app.storage.db import make_engine, upgrade_database

    db = make_engine("sqlite://")
    upgrade_database(db)
    raw = db.raw_connection()
    yield raw.dbapi_connection
    raw.close()
    db.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """An initialised, empty database: SQLite in memory (a copy of one built at head once
    per session), then a real PostgreSQL (the worker's workspace, emptied)."""
    from inspect_app.storage.db import make_engine, upgrade_database

    if request.param == "sqlite":
        db = make_engine("sqlite://")  # one connection (StaticPool): the copy is the database
        with db.connect() as conn:
            request.getfixturevalue("_sqlite_schema_template").backup(
                conn.connection.dbapi_connection
            )
    else:
        db = make_engine(request.getfixturevalue("_postgres_at_head"))
    upgrade_database(db)  # at head already: only checks
    yield db
    db.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as s:
        yield s


@pytest.fixture
def seed_review_task() -> Callable[..., int]:
    """Add an inspection and its review task as the pipeline would; returns the task id.

    For queue tests that need tasks without running the model.
    """
    from inspect_app.domain import Decision, Route, TaskReason
    from inspect_app.storage.tables import Inspection, ReviewTask

    def seed(
        session: Session,
        line_id: str,
        *,
        reason: TaskReason = TaskReason.DECIDE,
        show_model: bool = False,
        probabilities: dict[str, float] | None = None,
        created_at: datetime | None = None,
        true_class: str | None = None,
    ) -> int:
        decide = reason == TaskReason.DECIDE
        predicted = max(probabilities, key=probabilities.__getitem__) if probabilities else None
        inspection = Inspection(
            line_id=line_id,
            image_sha256=uuid.uuid4().hex * 2,
            image_format="png",
            width=64, height=64, brightness=120.0, contrast=30.0, sharpness=200.0,
            true_class=true_class,
            model_version="test" if probabilities else None,
            probabilities=probabilities,
            predicted_class=predicted,
            confidence=probabilities[predicted] if probabilities and predicted else None,
            level="assist" if show_model else "shadow",
            pass_threshold=0.98, fail_threshold=0.98,
            route=Route.REVIEW.value if decide else Route.AUDIT.value,
            show_model=show_model,
            decision=Decision.PENDING.value if decide else Decision.PASS.value,
            decided_by=None if decide else "model",
        )  # fmt: skip
        session.add(inspection)
        session.flush()
        assert inspection.id is not None
        task = ReviewTask(
            inspection_id=inspection.id,
            line_id=line_id,
            reason=reason.value,
            priority=0 if decide else 1,
            show_model=show_model,
        )
        if created_at is not None:
            task.created_at = created_at
        session.add(task)
        session.commit()
        assert task.id is not None
        return task.id

    return seed


# -- the model (model engineer): a real, tiny checkpoint in the bundled format ----------------


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real checkpoint of a narrow, randomly initialised network (made in well under a
    second): loads with ``Predictor.from_checkpoint`` exactly like the bundled weights, but
    its predictions are meaningless. Deterministic: the same weights every session."""
    import torch

    from inspect_app.domain import CLASS_NAMES
    from models.checkpoint import save_checkpoint
    from models.defect_cnn import DefectCNNConfig, build_model
    from models.preprocess import Preprocessing

    config = DefectCNNConfig(width_mult=0.1)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(config)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(
        path,
        model,
        config=config,
        class_names=CLASS_NAMES,
        preprocessing=Preprocessing(input_size=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
        temperature=1.0,
        metrics={"note": "tiny random test model"},
        data_seed=None,
        version="defect-cnn-tiny-test",
    )
    export_onnx_beside(path)
    return path


def export_onnx_beside(checkpoint: Path) -> None:
    """The checked ONNX export beside a session's test checkpoint, made once as the bundled
    weights' is at build: every service start loads it, and every registration takes it with
    its parity figure instead of exporting anew (``models/onnx_export.py``)."""
    from models.onnx_export import export_checked, write_export

    graph, record = export_checked(checkpoint)
    assert record.accepted, record.reason
    write_export(checkpoint, graph, record)


@pytest.fixture(scope="session")
def tiny_candidate(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """A second tiny checkpoint (other random weights, another version name): a candidate
    for rollout tests that loads like any registered model."""
    import torch

    from models.checkpoint import load_checkpoint, save_checkpoint

    base = load_checkpoint(tiny_checkpoint)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        for parameter in base.model.parameters():
            parameter.data.add_(0.01 * torch.randn_like(parameter))
    path = tmp_path_factory.mktemp("candidate") / "candidate.pt"
    save_checkpoint(
        path,
        base.model,
        config=base.config,
        class_names=base.class_names,
        preprocessing=base.preprocessing,
        temperature=1.0,
        metrics={"note": "tiny random candidate"},
        data_seed=None,
        version="defect-cnn-tiny-candidate",
    )
    export_onnx_beside(path)
    return path


# -- the service (pipeline engineer): an app built by create_app on a temp data dir ---------


@pytest.fixture
def app_settings(tmp_path: Path, tiny_checkpoint: Path, request: pytest.FixtureRequest) -> Settings:
    """Settings for one test's own service: SQLite and images under tmp_path, the tiny model,
    no cameras, and no review UI unless the test is marked ``review_ui``: building the Gradio
    app is most of an app's start (about 1 s of ~330 tests' setup), and only the review UI's
    tests (``tests/review_ui/conftest.py`` turns it on for all of them) and the few elsewhere
    that reach ``/review`` need it. Tests change what they need with
    ``app_settings.model_copy(update=...)``."""
    from inspect_app.settings import Settings

    return Settings(
        data_dir=tmp_path / "service",
        database_url=None,
        weights=tiny_checkpoint,
        batch_max_wait_ms=2.0,
        cameras=[],
        demo=False,
        review_ui=request.node.get_closest_marker("review_ui") is not None,
    )


@pytest.fixture
def client(app_settings: Settings) -> Iterator[TestClient]:
    """A TestClient on create_app(app_settings), its lifespan running for the whole test."""
    from fastapi.testclient import TestClient

    from inspect_app.api.app import create_app

    with TestClient(create_app(app_settings)) as test_client:
        yield test_client


@pytest.fixture
def add_line_with_camera(client: TestClient) -> Callable[..., str]:
    """Create a line on the client's database; returns a new camera key for it."""
    from inspect_app.accounts import add_camera_key
    from inspect_app.lines import add_line

    def add(line_id: str = "line-1", level: str = "shadow", **line_settings: object) -> str:
        with Session(client.app.state.engine, expire_on_commit=False) as db:  # type: ignore[attr-defined]
            add_line(db, line_id, level, **line_settings)
            return add_camera_key(db, line_id)

    return add


@pytest.fixture
def user_token(client: TestClient) -> Callable[[str], str]:
    """A bearer token for a new user of the given role on the client's database."""
    from inspect_app.accounts import add_user, issue_token

    def token(role: str) -> str:
        with Session(client.app.state.engine, expire_on_commit=False) as db:  # type: ignore[attr-defined]
            user = add_user(db, f"{role}-{uuid.uuid4().hex[:8]}", role, "a long test password")
            return issue_token(db, user)

    return token


# -- evidence (evidence engineer): many labeled inspections without running the model -------


@pytest.fixture
def add_labeled_parts() -> Callable[..., list[int]]:
    """Add inspections with a prediction as the pipeline would route them, and their labels
    as the review queue would save them; returns the inspection ids (in order).

    A part whose label is None gets an open review task instead (to claim and label through
    `review_queue`). Decisions default to what routing gives: a human's verdict for review
    routes, the model's (P(ok) >= 0.5) for audits. Rows go in as batched core inserts, so
    thousands of labeled parts take well under a second.
    """
    from sqlalchemy import insert

    from inspect_app.domain import DefectClass, Route, TaskReason, decision_for_class
    from inspect_app.storage.tables import Inspection, Label, ReviewTask, utcnow

    def add(
        session: Session,
        line_id: str,
        p_ok: list[float],
        labels: list[str | None],
        *,
        user_id: int,
        level: str = "shadow",
        route: str = "review",
        pass_threshold: float = 0.98,
        fail_threshold: float = 0.98,
        model_version: str = "test",
        model_shown: bool = False,
        decisions: list[str] | None = None,
        received_at: datetime | None = None,
    ) -> list[int]:
        if len(p_ok) != len(labels):
            raise ValueError("one label (or None) per part")
        if not p_ok:
            return []
        audit = route == Route.AUDIT
        now = received_at or utcnow()
        inspections = []
        for i, (p, label) in enumerate(zip(p_ok, labels, strict=True)):
            rest = (1.0 - p) / 4
            probabilities = {c.value: rest for c in DefectClass} | {"ok": p}
            predicted = max(probabilities, key=probabilities.__getitem__)
            if decisions is not None:
                decision = decisions[i]
            elif audit:
                decision = "pass" if p >= 0.5 else "fail"
            else:
                decision = decision_for_class(label).value if label else "pending"
            inspections.append(
                dict(
                    line_id=line_id, source="http", received_at=now,
                    image_sha256=uuid.uuid4().hex * 2, image_format="png",
                    width=64, height=64, brightness=120.0, contrast=30.0, sharpness=200.0,
                    model_version=model_version, probabilities=probabilities,
                    predicted_class=predicted, confidence=probabilities[predicted],
                    p_defect=1.0 - p, level=level, pass_threshold=pass_threshold,
                    fail_threshold=fail_threshold, route=route, show_model=model_shown,
                    decision=decision,
                    decided_by=("model" if audit else "human") if label else None,
                    decode_ms=0.0, queue_ms=0.0, model_ms=0.0, persist_ms=0.0, total_ms=0.0,
                )
            )  # fmt: skip
        ids = list(
            session.scalars(
                insert(Inspection).returning(Inspection.id, sort_by_parameter_order=True),
                inspections,
            )
        )
        tasks = [
            dict(
                inspection_id=inspection_id, line_id=line_id,
                reason=(TaskReason.AUDIT if audit else TaskReason.DECIDE).value,
                priority=1 if audit else 0, show_model=model_shown,
                status="done" if label else "open", created_at=now,
            )
            for inspection_id, label in zip(ids, labels, strict=True)
        ]  # fmt: skip
        task_ids = list(
            session.scalars(
                insert(ReviewTask).returning(ReviewTask.id, sort_by_parameter_order=True), tasks
            )
        )
        saved = [
            dict(
                inspection_id=inspection_id, task_id=task_id, user_id=user_id, label=label,
                model_shown=model_shown, duration_ms=1000 + position, created_at=utcnow(),
                superseded=False,
            )
            for position, (inspection_id, task_id, label) in enumerate(
                zip(ids, task_ids, labels, strict=True)
            )
            if label
        ]  # fmt: skip
        if saved:
            session.execute(insert(Label), saved)
        session.commit()
        return ids

    return add


# -- model maintenance (issue 12): a plant's labeled parts with real images in the store ------


def toy_part_png(label: str, seed: int, size: int = 64) -> bytes:
    """A small PNG of a grey plate; a defect class draws a dark diagonal line (learnable)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    image = np.clip(rng.normal(140, 6, size=(size, size, 3)), 0, 255).astype(np.uint8)
    if label != "ok":
        offset = int(rng.integers(-8, 8))
        for r in range(6, size - 6):
            c = int(np.clip(r + offset, 0, size - 2))
            image[r, c : c + 2] = 80
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()


@pytest.fixture
def toy_png() -> Callable[..., bytes]:
    """`toy_part_png`, for tests that write image folders of their own."""
    return toy_part_png


@pytest.fixture
def add_plant_parts() -> Callable[..., list[int]]:
    """Add a line's inspections with real PNGs in `store` and, per part, a standing label
    (None: unlabeled) given through a done review task; received one `step` apart from
    `start`. Returns the inspection ids in order."""
    from datetime import timedelta

    from inspect_app.domain import Route, TaskReason
    from inspect_app.storage.tables import Inspection, Label, ReviewTask

    def add(
        session: Session,
        store: object,
        line_id: str,
        labels: list[str | None],
        *,
        user_id: int,
        start: datetime,
        step: timedelta = timedelta(minutes=1),
        route: str = "review",
        model_shown: bool = False,
        seed: int = 0,
    ) -> list[int]:
        ids = []
        for i, label in enumerate(labels):
            data = toy_part_png(label or "ok", seed + i)
            sha = store.put(data)  # type: ignore[attr-defined]
            when = start + i * step
            inspection = Inspection(
                line_id=line_id, captured_at=when, received_at=when, image_sha256=sha,
                image_format="png", width=64, height=64, brightness=138.0, contrast=8.0,
                sharpness=50.0, model_version="defect-cnn-tiny-test",
                predicted_class="ok", confidence=0.6, p_defect=0.4, level="shadow",
                pass_threshold=0.98, fail_threshold=0.98, route=route,
                show_model=model_shown, decision="pending" if label is None else "pass",
            )  # fmt: skip
            session.add(inspection)
            session.flush()
            assert inspection.id is not None
            task = ReviewTask(
                inspection_id=inspection.id, line_id=line_id,
                reason=(TaskReason.AUDIT if route == Route.AUDIT else TaskReason.DECIDE).value,
                status="open" if label is None else "done", show_model=model_shown,
            )  # fmt: skip
            session.add(task)
            session.flush()
            if label is not None:
                session.add(
                    Label(
                        inspection_id=inspection.id,
                        task_id=task.id,
                        user_id=user_id,
                        label=label,
                        model_shown=model_shown,
                        created_at=when,
                    )
                )
            ids.append(inspection.id)
        session.commit()
        return ids

    return add


# ----------------------------------------------------------------------------- live services

# A hang guard only: cold processes import torch on a busy machine (180 s ran out at load ~18)
SERVICE_START_GUARD_S = 300.0


@dataclass(frozen=True)
class ServiceProcess:
    process: subprocess.Popen[bytes]
    url: str
    log: Path


def _start_service(
    data_dir: Path, *, weights: Path, log: Path, database_url: str | None, review_ui: bool
) -> ServiceProcess:
    port = _free_port()
    command = [sys.executable, "-m", "inspect_app.cli", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--data-dir", str(data_dir), "--log-level", "warning"]
    if database_url:
        command += ["--database-url", database_url]
    env = {
        **os.environ,
        "INSPECT_WEIGHTS": str(weights),
        "OMP_NUM_THREADS": "1",
        "INSPECT_REVIEW_UI": "true" if review_ui else "false",
    }
    with log.open("ab") as log_file:
        process = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    return ServiceProcess(process=process, url=f"http://127.0.0.1:{port}", log=log)


def _wait_ready(service: ServiceProcess, deadline: float) -> None:
    while True:
        if service.process.poll() is not None:
            code = service.process.returncode
            pytest.fail(f"serve exited with {code}:\n{service.log.read_text()}")
        try:
            if httpx.get(f"{service.url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"serve did not get ready:\n{service.log.read_text()}")
        time.sleep(0.2)


def _stop(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """Terminate all, then wait for each (their shutdowns overlap), killing one that does
    not stop; nothing to do for a process the test already killed."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)


@contextmanager
def _running_services(
    data_dirs: Sequence[Path],
    *,
    weights: Path,
    logs: Sequence[Path],
    database_url: str | None = None,
    review_ui: bool = False,
) -> Iterator[list[ServiceProcess]]:
    """`inspect-app serve` processes, one per data dir, each on a free port (real HTTP), all
    started before any is waited for, so their cold starts overlap (two on one database
    also start as a plant's do: together, the schema's upgrade taken under its lock); ready
    when yielded; stopped on exit, unless the test already killed them. Without the review
    UI unless asked (`INSPECT_REVIEW_UI`): importing Gradio and building its app is 9 s of a
    43 s cold start at load 5 (`python -X importtime`), and most of these tests use the API
    only."""
    services: list[ServiceProcess] = []
    try:
        for data_dir, log in zip(data_dirs, logs, strict=True):
            services.append(
                _start_service(
                    data_dir, weights=weights, log=log, database_url=database_url,
                    review_ui=review_ui,
                )
            )  # fmt: skip
        deadline = time.monotonic() + SERVICE_START_GUARD_S
        for service in services:
            _wait_ready(service, deadline)
        yield services
    finally:
        _stop([service.process for service in services])


@contextmanager
def _running_service(
    data_dir: Path,
    *,
    weights: Path,
    log: Path,
    database_url: str | None = None,
    review_ui: bool = False,
) -> Iterator[ServiceProcess]:
    """One `inspect-app serve` process (see `_running_services`)."""
    with _running_services(
        [data_dir], weights=weights, logs=[log], database_url=database_url, review_ui=review_ui
    ) as (service,):
        yield service


@pytest.fixture(scope="session")
def running_service() -> Callable[..., AbstractContextManager[ServiceProcess]]:
    """The one way tests start a live `inspect-app serve` process (see `_running_service`)."""
    return _running_service


@pytest.fixture
def two_services(
    fresh_postgres_url: str,
    tiny_checkpoint: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[list[str]]:
    """Base URLs of two `inspect-app serve` processes on one PostgreSQL database, started
    together (with the review UI for a test marked ``review_ui``)."""
    review_ui = request.node.get_closest_marker("review_ui") is not None
    with _running_services(
        [tmp_path / f"service-{i}" for i in range(2)],
        weights=tiny_checkpoint,
        logs=[tmp_path / f"serve-{i}.log" for i in range(2)],
        database_url=fresh_postgres_url,
        review_ui=review_ui,
    ) as services:
        yield [service.url for service in services]
