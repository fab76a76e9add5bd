"""Image retention: the policy keeps what retraining and evidence need, the sweep removes the
rest and orphans, never a file a kept or in-flight inspection needs, and a dry run changes
nothing."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from inspect_app.accounts import add_user
from inspect_app.cli import app as cli
from inspect_app.domain import Route, TaskReason, TaskStatus
from inspect_app.lines import add_line
from inspect_app.settings import Settings
from inspect_app.storage.db import make_engine
from inspect_app.storage.images import (
    TEMP_PREFIX,
    TRASH_PREFIX,
    DatabaseImageStore,
    ImageStore,
    LocalImageStore,
)
from inspect_app.storage.retention import (
    SWEEP_EVENT,
    ImageUse,
    KeepReason,
    RetentionPolicy,
    SweepReport,
    keep_reason,
    plan_retention,
    sweep_images,
)
from inspect_app.storage.tables import Event, ImageBlob, Inspection, Label, ReviewTask
from inspect_app.timeutil import utcnow
from tests.inspect_app.api.test_images import phone_image, post_raw

POLICY = RetentionPolicy(days=30, labeled_days=365, orphan_grace=timedelta(hours=1))
NOW = utcnow()
DAY = timedelta(days=1)


def _use(days_old: float, **facts: bool) -> ImageUse:
    return ImageUse(
        inspection_id=1, image_sha256="a" * 64, received_at=NOW - days_old * DAY, **facts
    )


# -- the policy (pure) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days_old", "facts", "reason"),
    [
        (29, {}, KeepReason.RECENT),
        (31, {}, None),
        (31, {"labeled": True}, KeepReason.LABELED),
        (31, {"labeled": True, "disagreement": True}, KeepReason.DISAGREEMENT),
        (31, {"audited": True}, KeepReason.AUDITED),
        (364, {"labeled": True}, KeepReason.LABELED),
        (366, {"labeled": True, "disagreement": True, "audited": True}, None),
        (1000, {"awaiting_review": True}, KeepReason.AWAITING_REVIEW),
    ],
)
def test_keep_reason(days_old: float, facts: dict[str, bool], reason: KeepReason | None) -> None:
    assert keep_reason(_use(days_old, **facts), POLICY, NOW) is reason


def test_a_shared_file_goes_only_when_every_inspection_is_past_its_time() -> None:
    a, b, c = "a" * 64, "b" * 64, "c" * 64
    uses = [
        ImageUse(1, a, NOW - 40 * DAY),  # expired, but shares a with a recent part
        ImageUse(2, a, NOW - 1 * DAY),
        ImageUse(3, b, NOW - 40 * DAY),  # expired, and so is the other part with b
        ImageUse(4, b, NOW - 50 * DAY),
        ImageUse(5, c, NOW - 40 * DAY, labeled=True),
    ]
    plan = plan_retention(uses, POLICY, NOW)
    assert plan.remove == {b: (3, 4)}
    assert plan.kept == {KeepReason.RECENT: 1, KeepReason.LABELED: 1}
    assert plan.shared == 1


def test_the_policy_refuses_labeled_images_kept_shorter() -> None:
    with pytest.raises(ValueError, match="labeled_days"):
        RetentionPolicy(days=30, labeled_days=7)
    with pytest.raises(ValueError, match="retention_labeled_days"):
        Settings(retention_days=30, retention_labeled_days=7)


# -- the sweep on a real database and store -------------------------------------------------


class World:
    """Inspections with their image files, labels and tasks, at chosen ages."""

    def __init__(self, engine: Engine, store: ImageStore) -> None:
        self.engine = engine
        self.store = store
        self.ids: dict[str, int] = {}
        with Session(engine, expire_on_commit=False) as session:
            self.user_id = add_user(session, "ina", "inspector", "a long test password").id

    def part(
        self,
        name: str,
        days_old: float,
        *,
        data: bytes | None = None,
        label: str | None = None,
        predicted: str = "ok",
        route: Route = Route.REVIEW,
        task: TaskStatus | None = None,
    ) -> str:
        sha = self.store.put(data if data is not None else name.encode())
        age_file(self.store, sha)
        with Session(self.engine, expire_on_commit=False) as session:
            row = Inspection(
                line_id="line-1", image_sha256=sha, image_format="png",
                received_at=NOW - days_old * DAY, width=8, height=8, brightness=1.0,
                contrast=1.0, sharpness=1.0, level="shadow", pass_threshold=0.98,
                fail_threshold=0.98, route=route.value, decision="pending",
                predicted_class=predicted, model_version="m",
            )  # fmt: skip
            session.add(row)
            session.flush()
            assert row.id is not None
            if task is not None or label is not None:
                reason = TaskReason.AUDIT if route is Route.AUDIT else TaskReason.DECIDE
                status = task or TaskStatus.DONE
                session.add(
                    ReviewTask(
                        inspection_id=row.id, line_id="line-1", reason=reason.value,
                        status=status.value,
                    )
                )  # fmt: skip
            if label is not None:
                session.add(Label(inspection_id=row.id, user_id=self.user_id, label=label))
            session.commit()
            self.ids[name] = row.id
        return sha

    def removed(self) -> dict[str, bool]:
        with Session(self.engine) as session:
            rows = {r.id: r.image_removed_at for r in session.exec(select(Inspection))}
        return {name: rows[i] is not None for name, i in self.ids.items()}


def age_file(store: ImageStore, sha: str, hours: float = 2.0) -> None:
    """The file (or blob) as if written `hours` ago (past the one-hour grace period)."""
    if isinstance(store, DatabaseImageStore):
        with Session(store.engine) as session:
            session.execute(
                update(ImageBlob)
                .where(col(ImageBlob.sha256) == sha)
                .values(stored_at=NOW - timedelta(hours=hours))
            )
            session.commit()
        return
    assert isinstance(store, LocalImageStore)
    then = (NOW - timedelta(hours=hours)).timestamp()
    os.utime(store.path(sha), (then, then))


@pytest.fixture
def world(engine: Engine, tmp_path: Path) -> World:
    with Session(engine) as session:
        add_line(session, "line-1", "shadow")
    return World(engine, LocalImageStore(tmp_path / "images"))


@pytest.fixture(params=["local", "database"])
def any_world(request: pytest.FixtureRequest, engine: Engine, tmp_path: Path) -> World:
    """The world on each image store: the sweep's rules hold whichever the plant chose."""
    with Session(engine) as session:
        add_line(session, "line-1", "shadow")
    if request.param == "database":
        return World(engine, DatabaseImageStore(engine))
    return World(engine, LocalImageStore(tmp_path / "images"))


def _sweep(world: World, *, dry_run: bool = False) -> SweepReport:
    return sweep_images(world.engine, world.store, POLICY, now=NOW, dry_run=dry_run)


def test_the_sweep_keeps_what_it_must_and_removes_the_rest(any_world: World) -> None:
    kept = {
        "recent": any_world.part("recent", 2),
        "labeled": any_world.part("labeled", 100, label="ok"),
        "disagreement": any_world.part("disagreement", 100, label="crack", predicted="ok"),
        "audited": any_world.part("audited", 100, route=Route.AUDIT, task=TaskStatus.OPEN),
        "awaiting": any_world.part("awaiting", 900, task=TaskStatus.ESCALATED),
    }
    gone = {
        "old": any_world.part("old", 40),
        "old-labeled": any_world.part("old-labeled", 400, label="scratch", predicted="pit"),
    }
    report = _sweep(any_world)

    assert any_world.removed() == {name: name in gone for name in any_world.ids}
    for sha in kept.values():
        assert any_world.store.exists(sha)
    for sha in gone.values():
        assert not any_world.store.exists(sha)
    assert (report.removed_images, report.removed_inspections) == (2, 2)
    assert report.removed_bytes == len(b"old") + len(b"old-labeled")
    assert report.kept == {
        KeepReason.LABELED: 1,
        KeepReason.DISAGREEMENT: 1,
        KeepReason.AWAITING_REVIEW: 2,  # the open audit too: an inspector has yet to see it
    }
    assert report.recent == 1
    with Session(any_world.engine) as session:
        events = list(session.exec(select(Event).where(Event.kind == SWEEP_EVENT)))
        assert len(events) == 1 and events[0].details is not None
        assert events[0].details["removed_images"] == 2
        assert events[0].actor == "system"
        assert session.exec(select(Label)).all()  # labels are evidence: never removed
    assert _sweep(any_world).removed_images == 0


def test_a_file_shared_with_a_kept_inspection_stays(any_world: World) -> None:
    shared = any_world.part("old", 40, data=b"same bytes")
    assert any_world.part("new", 1, data=b"same bytes") == shared
    report = _sweep(any_world)
    assert any_world.store.exists(shared)
    assert any_world.removed() == {"old": False, "new": False}
    assert report.shared == 1


def test_orphans_go_once_past_the_grace_period_and_in_flight_ones_stay(world: World) -> None:
    old_orphan = world.store.put(b"commit failed yesterday")
    age_file(world.store, old_orphan)
    young_orphan = world.store.put(b"a write whose row is committing now")
    age_file(world.store, young_orphan, hours=0.1)
    referenced = world.part("old", 2)
    old_temp = world.store.path(old_orphan).parent / f"{TEMP_PREFIX}killed"
    old_temp.write_bytes(b"half an image")
    then = (NOW - timedelta(hours=3)).timestamp()
    os.utime(old_temp, (then, then))
    young_temp = world.store.path(young_orphan).parent / f"{TEMP_PREFIX}writing"
    young_temp.write_bytes(b"being written")

    report = _sweep(world)

    assert world.store.stored() == sorted([young_orphan, referenced])
    assert not old_temp.exists() and young_temp.exists()
    assert (report.orphans, report.young_orphans, report.leftovers) == (1, 1, 1)
    assert report.bytes_freed == len(b"commit failed yesterday") + len(b"half an image")


def test_database_orphans_go_once_past_the_grace_period_and_in_flight_ones_stay(
    engine: Engine,
) -> None:
    """A blob no row points at (only `put` without a row's session makes one) follows the
    files' rule: gone past the grace period, kept while it may be committing."""
    with Session(engine) as session:
        add_line(session, "line-1", "shadow")
    world = World(engine, DatabaseImageStore(engine))
    old_orphan = world.store.put(b"commit failed yesterday")
    age_file(world.store, old_orphan)
    young_orphan = world.store.put(b"a write whose row is committing now")
    age_file(world.store, young_orphan, hours=0.1)
    referenced = world.part("old", 2)

    report = _sweep(world)

    assert world.store.stored() == sorted([young_orphan, referenced])
    assert (report.orphans, report.young_orphans, report.leftovers) == (1, 1, 0)
    assert report.bytes_freed == len(b"commit failed yesterday")


def test_a_dry_run_changes_nothing_and_reports_what_the_sweep_does(world: World) -> None:
    world.part("old", 40)
    world.part("labeled", 100, label="ok")
    orphan = world.store.put(b"orphan")
    age_file(world.store, orphan)
    files = sorted(p.relative_to(world.store.root) for p in world.store.root.rglob("*"))

    dry = _sweep(world, dry_run=True)

    assert sorted(p.relative_to(world.store.root) for p in world.store.root.rglob("*")) == files
    assert world.removed() == {"old": False, "labeled": False}
    with Session(world.engine) as session:
        assert not session.exec(select(Event).where(Event.kind == SWEEP_EVENT)).all()
    real = _sweep(world)
    assert dry.to_dict() | {"dry_run": False} == real.to_dict()
    assert "would free" in "\n".join(dry.summary())


def test_a_file_written_again_during_the_sweep_stays(any_world: World) -> None:
    """An upload of the same bytes refreshes the file (`put`) before its row commits: the
    removal sees the fresh time and leaves the file."""
    sha = any_world.part("old", 40)
    assert any_world.store.remove_if_idle(sha, idle_since=NOW.timestamp() - 3600) is not None
    any_world.store.put(b"old")  # the bytes again
    age_file(any_world.store, sha)
    any_world.store.put(b"old")  # ...and again, refreshing the old file
    assert any_world.store.remove_if_idle(sha, idle_since=NOW.timestamp() - 3600) is None
    assert any_world.store.exists(sha)


def test_an_interrupted_sweep_is_finished_by_the_next(world: World) -> None:
    """Rows are marked before files go: a killed sweep leaves files only marked rows point at
    (removed as orphans next time), or a trashed file, put back if a row needs it."""
    marked = world.part("marked", 40)
    with Session(world.engine) as session:
        row = session.get(Inspection, world.ids["marked"])
        assert row is not None
        row.image_removed_at = NOW
        session.add(row)
        session.commit()
    needed = world.part("needed", 1)
    trash = world.store.path(needed).with_name(TRASH_PREFIX + needed)
    os.replace(world.store.path(needed), trash)

    report = _sweep(world)

    assert not world.store.exists(marked)
    assert world.store.exists(needed) and not trash.exists()
    assert (report.orphans, report.restored) == (1, 1)


def test_images_sweep_on_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INSPECT_DATABASE_URL", raising=False)
    data_dir = tmp_path / "var"
    settings = Settings(data_dir=data_dir)
    runner = CliRunner()
    assert (
        runner.invoke(cli, ["lines", "add", "line-1", "--data-dir", str(data_dir)]).exit_code == 0
    )
    engine = make_engine(settings.resolved_database_url)
    world = World(engine, LocalImageStore(settings.image_dir))
    sha = world.part("old", 40)

    dry = runner.invoke(cli, ["images", "sweep", "--dry-run", "--data-dir", str(data_dir)])
    assert dry.exit_code == 0, dry.output
    assert "would remove 1 images of 1 inspections (3 bytes)" in dry.output
    assert world.store.exists(sha)
    done = runner.invoke(cli, ["images", "sweep", "--data-dir", str(data_dir)])
    assert done.exit_code == 0, done.output
    assert "removed 1 images of 1 inspections" in done.output and "freed 3 bytes" in done.output
    assert not world.store.exists(sha)
    with Session(engine) as session:
        event = session.exec(select(Event).where(Event.kind == SWEEP_EVENT)).one()
        assert event.actor.startswith("cli")
    engine.dispose()


# -- a removed image through the API ---------------------------------------------------------


def test_a_removed_image_is_410_gone_and_its_inspection_stays(
    client: TestClient,
    add_line_with_camera: Callable[..., str],
    user_token: Callable[[str], str],
) -> None:
    key = add_line_with_camera("line-1")
    body = post_raw(client, key, phone_image(3)).json()
    inspection_id = body["inspection_id"]
    engine: Engine = client.app.state.engine  # type: ignore[attr-defined]
    store: ImageStore = client.app.state.image_store  # type: ignore[attr-defined]
    with Session(engine) as session:
        row = session.get(Inspection, inspection_id)
        assert row is not None
        row.received_at = NOW - 40 * DAY
        session.add(row)
        # shadow: the part waits for a human; done, so the policy may let its image go
        for task in session.exec(select(ReviewTask)):
            task.status = TaskStatus.DONE.value
            session.add(task)
        session.commit()
    age_file(store, body["image_sha256"])
    assert sweep_images(engine, store, POLICY, now=NOW).removed_images == 1

    supervisor = {"Authorization": f"Bearer {user_token('supervisor')}"}
    image = client.get(f"/api/v1/inspections/{inspection_id}/image", headers=supervisor)
    assert image.status_code == 410
    assert "retention" in image.json()["detail"]
    assert client.get(f"/api/v1/inspections/{inspection_id}", headers=supervisor).status_code == 200
    responses = client.get("/openapi.json").json()["paths"][
        "/api/v1/inspections/{inspection_id}/image"
    ]["get"]["responses"]
    assert "410" in responses
    with Session(engine) as session:
        assert session.exec(
            select(Inspection).where(col(Inspection.image_removed_at).is_not(None))
        ).all()
