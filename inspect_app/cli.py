"""The one command line: ``inspect-app``.

Heavy imports (torch, the web stack) happen inside the commands so that
``inspect-app users add`` stays quick.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.engine import Engine
    from sqlmodel import Session

    from inspect_app.settings import Settings
    from inspect_app.storage.db import SchemaState, UpgradeReport
    from inspect_app.storage.tables import User

app = typer.Typer(no_args_is_help=True, help="Human-in-the-loop visual inspection of phones.")
data_app = typer.Typer(no_args_is_help=True, help="Synthetic line-camera data.")
app.add_typer(data_app, name="data")


@data_app.command("generate")
def data_generate(
    out: Path = typer.Option(..., help="Folder to write (one sub-folder per class + manifest.csv)"),
    n: int = typer.Option(1000, help="Number of images"),
    seed: int = typer.Option(0, help="Seed; the same seed gives the same images"),
) -> None:
    """Generate line-camera photos of phones with labeled defects."""
    from data.synth import generate_dataset

    generate_dataset(out, n=n, seed=seed, progress=True)


@app.command()
def train(
    data: list[Path] = typer.Option(
        ...,
        help="Dataset folder (class folders or manifest.csv); repeat to train on several. "
        "A folder written by `inspect-app export` is the plant's: weighted --plant-weight and "
        "split by time (validation the newest parts)",
    ),
    out: Path = typer.Option(..., help="Checkpoint file to write"),
    epochs: int = typer.Option(16, help="Maximum epochs (early stopping may end sooner)"),
    patience: int = typer.Option(6, help="Epochs without a better validation loss to stop"),
    seed: int = typer.Option(0, help="Training seed"),
    data_seed: int | None = typer.Option(
        None, help="Seed the (base) dataset was generated with, recorded in the checkpoint"
    ),
    batch_size: int = typer.Option(32, help="Images per optimisation step"),
    lr: float | None = typer.Option(
        None, help="Peak learning rate of the one-cycle schedule (default 3e-3; 3e-4 fine-tuning)"
    ),
    threads: int | None = typer.Option(None, help="Torch threads (default: one per core)"),
    init_from: str | None = typer.Option(
        None, help="Fine-tune from this registered model version (its weights and input)"
    ),
    plant_weight: float = typer.Option(
        3.0, help="Weight of each plant label (export folders) in the loss, base images 1"
    ),
    keep_prior: bool = typer.Option(
        True,
        help="Re-weight the classes so that the weighted class mix of training is the base "
        "data's: a plant's labels are mostly ok, and without this their weight moves every "
        "P(ok) up and lets more defects pass on normal parts",
    ),
    distill_weight: float = typer.Option(
        1.0,
        help="With --init-from: weight of the parent's own answers on the base images as a "
        "second target, against the labels' 1 (0 turns it off), so that the new version keeps "
        "what the parent got right on normal parts",
    ),
    base_share: float = typer.Option(
        0.75,
        help="Rehearsal, with an export among --data: this share of every batch is base "
        "images, the rest the plant's, so that the new version keeps seeing normal parts as "
        "often as it sees the plant's (0: batches drawn from all training images alike)",
    ),
    register: bool = typer.Option(
        False, "--register", help="Register the result, with its lineage, in the registry"
    ),
    shadow_on: str | None = typer.Option(
        None,
        help="Start the registered result as this line's shadow candidate (implies --register)",
    ),
    notes: str = typer.Option("", help="Why this version exists, for the registry"),
    act_as: str | None = typer.Option(
        None, "--as", help="Register and deploy as this supervisor (default: cli:<os user>)"
    ),
    data_dir: Path | None = typer.Option(None, help="Data folder (default: $INSPECT_DATA_DIR)"),
    database_url: str | None = typer.Option(None, help="Database URL (default: the data folder's)"),
) -> None:
    """Train the defect CNN (from scratch, or fine-tuned from a registered version on the
    base data plus the plant's exported labels), calibrate it, write checkpoint + model card
    + reference profile; optionally register it and start it in shadow on a line."""
    _log_to_stderr()
    from inspect_app.retrain import RetrainError, effective_base_share, lineage, plan_data
    from models.train import TrainConfig, train_model

    register = register or shadow_on is not None
    try:
        plan = plan_data(data, plant_weight=plant_weight)
    except RetrainError as exc:
        raise typer.BadParameter(str(exc), param_hint="--data") from exc
    try:
        rehearsal = effective_base_share(plan, base_share)
    except RetrainError as exc:
        raise typer.BadParameter(str(exc), param_hint="--base-share") from exc
    checkpoint, parent = None, None
    if init_from is not None or register:
        from inspect_app.rollout.registry import get_version, materialize

        with _rollout_session(data_dir, database_url) as (session, settings):
            if register:  # refused now, not after an hour of training
                _acting_rollout_supervisor(session, act_as)
            if shadow_on is not None:
                from inspect_app.lines import get_line

                get_line(session, shadow_on)
            if init_from is not None:
                parent = get_version(session, init_from).version
                checkpoint = materialize(session, settings.data_dir, get_version(session, parent))
    distill_weight = distill_weight if checkpoint is not None else 0.0
    made_of = lineage(
        plan, parent_version=parent, base_data_seed=data_seed, plant_weight=plant_weight,
        keep_prior=keep_prior, distill_weight=distill_weight, base_share=rehearsal,
    )  # fmt: skip
    try:
        config = TrainConfig(
            data=plan.base, out=out, epochs=epochs, patience=patience, seed=seed,
            data_seed=data_seed, batch_size=batch_size,
            lr=lr if lr is not None else (3e-4 if checkpoint is not None else 3e-3),
            threads=threads, init_from=checkpoint, sources=plan.sources, keep_prior=keep_prior,
            distill_weight=distill_weight, base_share=rehearsal,
            notes={"parent_version": parent, "lineage": made_of} if plan.sources or parent else {},
        )  # fmt: skip
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    from data.dataset import DatasetError
    from inspect_app.imaging import input_stats

    try:
        result = train_model(
            config, progress=True, input_metrics=lambda image: input_stats(image).metrics()
        )
    except (DatasetError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(f"wrote {result.checkpoint} ({result.version}) and {result.model_card}")
    if result.profile is not None:
        typer.echo(f"wrote the reference profile {result.profile}")
    if result.report is not None:
        typer.echo("validation split, calibrated:")
        typer.echo(result.report.summary())
    if not register:
        return
    from inspect_app.retrain import register_retrained

    with _rollout_session(data_dir, database_url) as (session, settings):
        actor = _acting_rollout_supervisor(session, act_as)
        version, created = register_retrained(
            session, result.checkpoint, settings.data_dir, actor=actor, parent_version=parent,
            lineage=made_of, notes=notes or f"fine-tuned from {parent or 'scratch'}",
            shadow_on=shadow_on,
            default_version=None if shadow_on is None else _configured_version(session, settings),
            warm=None if shadow_on is None else _loads(session, settings.data_dir),
        )  # fmt: skip
        typer.echo(
            f"{'registered' if created else 'already registered:'} {version.version} "
            f"(parent {version.parent_version or '-'}, by {actor.name})"
        )
        if shadow_on is not None:
            _echo_deployment(session, shadow_on, _configured_version(session, settings))


@app.command("export")
def export_line(
    line: str = typer.Option(..., help="Line id"),
    out: Path = typer.Option(..., help="Folder to write (new or empty)"),
    since: str | None = typer.Option(None, help="Received at or after (ISO 8601; naive is UTC)"),
    until: str | None = typer.Option(None, help="Received before (ISO 8601), after --since"),
    labeled_only: bool = typer.Option(
        False, "--labeled-only", help="Leave out parts without a human label"
    ),
    exclude_flagged: bool = typer.Option(
        False,
        "--exclude-flagged",
        help="Leave out labels of inspectors flagged on reference parts (listed as excluded)",
    ),
    data_dir: Path | None = typer.Option(None, help="Data folder (default: $INSPECT_DATA_DIR)"),
    database_url: str | None = typer.Option(None, help="Database URL (default: the data folder's)"),
) -> None:
    """Write a line's labeled parts as a dataset folder (`train --data` reads it): one folder
    per class, manifest.csv with how each label was given, missing.csv for images removed by
    retention or lost, unlabeled.csv, export.json with the counts and the manifest's hash."""
    import sys

    from inspect_app.export import ExportError, ExportRequest, count_parts, export_to_folder
    from inspect_app.storage.images import open_image_store

    when = _option_time

    request = ExportRequest(
        line, when("since", since), when("until", until), labeled_only, exclude_flagged
    )
    settings = _settings(data_dir, database_url)
    with _operator_session(data_dir, database_url) as session:
        try:
            request.check(session)
            total = count_parts(session, request)
            done = [0]

            def tick() -> None:  # a counter on stderr: stdout stays the summary
                done[0] += 1
                if done[0] == total or done[0] % 50 == 0:
                    sys.stderr.write(f"\rexport {done[0]}/{total} parts")
                    sys.stderr.flush()

            summary = export_to_folder(
                session,
                open_image_store(settings, session.get_bind()),  # type: ignore[arg-type]
                request,
                out,
                on_item=tick,
            )
        except ExportError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
    if total:
        sys.stderr.write("\n")
    typer.echo(f"wrote {out}")
    for text in summary.lines():
        typer.echo(text)


@app.command()
def evaluate(
    data: Path = typer.Option(..., help="Labeled dataset folder (class folders or manifest.csv)"),
    checkpoint: Path | None = typer.Option(None, help="Checkpoint (default: bundled weights)"),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the figures as JSON"),
    card: bool = typer.Option(
        False, help="Record the figures in the checkpoint's model card as a fresh test set"
    ),
) -> None:
    """Binary accuracy, defect recall, calibration and per-class figures on a labeled set."""
    _log_to_stderr()
    import json

    from data.dataset import DatasetError
    from models.checkpoint import CheckpointError
    from models.evaluate import add_test_result, evaluate_predictor
    from models.predictor import Predictor

    try:
        predictor = Predictor.from_checkpoint(checkpoint)
        report = evaluate_predictor(predictor, data, progress=True)
    except (CheckpointError, DatasetError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    version = predictor.version
    typer.echo(f"model {version} on {data}:")
    typer.echo(report.summary())
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(
            json.dumps({"model_version": version, "data": str(data), **report.to_dict()}, indent=2)
        )
        typer.echo(f"wrote {json_out}")
    if card:
        from models import DEFAULT_WEIGHTS

        md = add_test_result(checkpoint or DEFAULT_WEIGHTS, str(data), report, version)
        typer.echo(f"recorded in {md}")


@app.command()
def profile(
    checkpoint: Path = typer.Option(..., help="Checkpoint whose reference profile to (re)make"),
    data: Path = typer.Option(..., help="The dataset folder it was trained on"),
) -> None:
    """Re-derive a checkpoint's calibration split of its training data (from the seeds it
    records) and write its reference profile beside it, without retraining."""
    _log_to_stderr()
    from data.dataset import DatasetError
    from inspect_app.imaging import input_stats
    from models.checkpoint import CheckpointError
    from models.train import profile_checkpoint

    try:
        made, path = profile_checkpoint(
            checkpoint, data, lambda image: input_stats(image).metrics(), progress=True
        )
    except (CheckpointError, DatasetError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(f"wrote {path}: {made.source}, model {made.model_version}")


def _log_to_stderr() -> None:
    """INFO logs of the long model commands (train, evaluate, batch) go to stderr."""
    import logging

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@app.command()
def batch(
    input: Path = typer.Option(..., help="Folder of images (searched recursively)"),
    output: Path = typer.Option(Path("results.csv"), help="CSV to write, one row per file"),
    checkpoint: Path | None = typer.Option(None, help="Checkpoint (default: bundled weights)"),
    pass_threshold: float = typer.Option(
        0.98, help="For decision_if_automated: auto-pass when P(ok) >= this"
    ),
    fail_threshold: float = typer.Option(
        0.98, help="For decision_if_automated: auto-fail when P(defect) >= this"
    ),
) -> None:
    """Run every image in a folder through the model; broken images get an error row, other
    files (README, CSV) are skipped."""
    _log_to_stderr()
    from inspect_app.batch import run_batch_inspection
    from models.checkpoint import CheckpointError

    try:
        summary = run_batch_inspection(
            input, output, checkpoint=checkpoint, progress=True,
            pass_threshold=pass_threshold, fail_threshold=fail_threshold,
        )  # fmt: skip
    except (CheckpointError, NotADirectoryError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(
        f"{summary.files} files: {summary.inspected} inspected, {summary.errors} errors "
        f"-> {summary.output_csv} (model {summary.model_version}); "
        f"{summary.skipped} other files skipped (not images)"
    )
    typer.echo(f"predicted: {summary.predicted}; if automated: {summary.decisions}")


@app.command()
def simulate(
    line: str = typer.Option(..., help="Line to post to"),
    rate: float = typer.Option(1.0, help="Images per second (open loop); 0 = as fast as possible"),
    data: Path = typer.Option(..., help="Dataset folder (class folders or manifest.csv)"),
    url: str = typer.Option("http://127.0.0.1:8000", help="The running service"),
    key: str = typer.Option(..., envvar="INSPECT_CAMERA_KEY", help="The line's camera key"),
    count: int | None = typer.Option(None, help="Images to send (default: the dataset once)"),
    concurrency: int = typer.Option(4, help="Requests in flight at most"),
) -> None:
    """Post a dataset to a running service over HTTP as a line camera would; print a summary."""
    from inspect_app.ingest.simulate import format_summary, simulate_line_camera

    try:
        summary = simulate_line_camera(
            url=url, line=line, key=key, data=data, rate=rate, count=count, concurrency=concurrency
        )
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(format_summary(summary))
    if summary.accepted == 0:
        raise typer.Exit(1)


# -- users, camera keys, lines: the operator's side of accounts (inspect_app.accounts, .lines)

users_app = typer.Typer(no_args_is_help=True, help="Users of the review UI and the API.")
cameras_app = typer.Typer(no_args_is_help=True, help="Camera keys (one line each).")
lines_app = typer.Typer(no_args_is_help=True, help="Inspection lines.")
app.add_typer(users_app, name="users")
app.add_typer(cameras_app, name="cameras")
app.add_typer(lines_app, name="lines")

DATA_DIR_OPTION = typer.Option(None, help="Data folder (default: $INSPECT_DATA_DIR or ./var)")
DATABASE_URL_OPTION = typer.Option(
    None, help="Database URL (default: $INSPECT_DATABASE_URL or SQLite in the data folder)"
)


def _settings(data_dir: Path | None, database_url: str | None) -> Settings:
    """Settings from the environment, overridden by the options actually given."""
    from inspect_app.settings import Settings

    overrides: dict[str, object] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if database_url is not None:
        overrides["database_url"] = database_url
    return Settings(**overrides)  # type: ignore[arg-type]


def _database_engine(settings: Settings) -> Engine:
    """The engine of `settings`' database (the data folder made first if it is SQLite's)."""
    from inspect_app.storage.db import make_engine

    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    return make_engine(settings.resolved_database_url)


def _upgrade_or_exit(engine: Engine) -> UpgradeReport:
    """Upgrade to head (see `upgrade_database`); a failure is exit code 1, not a traceback."""
    from inspect_app.storage.db import SchemaError, upgrade_database

    try:
        return upgrade_database(engine)
    except SchemaError as exc:
        engine.dispose()
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


def _open_database(settings: Settings) -> Engine:
    """The engine of `settings`' database, upgraded to the current schema (created if new)."""
    engine = _database_engine(settings)
    _upgrade_or_exit(engine)
    return engine


def _option_time(name: str, value: str | None) -> datetime | None:
    """An ISO 8601 option as UTC (naive means UTC), refused as the API refuses it."""
    from inspect_app.api.params import parse_client_time

    if value is None:
        return None
    try:
        return parse_client_time(value, f"--{name}")
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=f"--{name}") from exc


@contextmanager
def _operator_session(data_dir: Path | None, database_url: str | None) -> Iterator[Session]:
    """A session on the database, turning the service layer's input errors into exit code 1."""
    from sqlmodel import Session

    from inspect_app.accounts import AccountError
    from inspect_app.lines import LineError

    engine = _open_database(_settings(data_dir, database_url))
    try:
        with Session(engine, expire_on_commit=False) as session:
            yield session
    except (AccountError, LineError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        engine.dispose()


def _operator() -> str:
    """Who ran the command, for the audit trail."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


@users_app.command("add")
def users_add(
    name: str = typer.Argument(..., help="Login name"),
    role: str = typer.Option(..., help="inspector | supervisor | admin"),
    password: str | None = typer.Option(None, help="Password (default: a random one, printed)"),
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Add a user; without --password a random password is printed once."""
    import secrets

    from inspect_app.accounts import add_user

    generated = password is None
    password = password if password is not None else secrets.token_urlsafe(12)
    with _operator_session(data_dir, database_url) as session:
        user = add_user(session, name, role, password, actor=_operator())
    typer.echo(f"added {user.name} ({user.role})")
    if generated:
        typer.echo(f"password (shown once): {password}")


@users_app.command("token")
def users_token(
    name: str = typer.Argument(..., help="Login name"),
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Issue an API bearer token for a user; it is printed once (only its hash is kept).

    It lasts $INSPECT_TOKEN_TTL_HOURS (default 120 h, a working week)."""
    from datetime import timedelta

    from inspect_app.accounts import get_user, issue_token

    ttl = timedelta(hours=_settings(data_dir, database_url).token_ttl_hours)
    with _operator_session(data_dir, database_url) as session:
        token = issue_token(session, get_user(session, name), ttl=ttl, actor=_operator())
    typer.echo(token)


@users_app.command("list")
def users_list(
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """List users with their roles."""
    from inspect_app.accounts import list_users

    with _operator_session(data_dir, database_url) as session:
        for user in list_users(session):
            state = "active" if user.active else "deactivated"
            typer.echo(f"{user.name}\t{user.role}\t{state}\t{user.created_at:%Y-%m-%d %H:%M}")


REASON_OPTION = typer.Option("", help="Why, for the audit trail")


@users_app.command("deactivate")
def users_deactivate(
    name: str = typer.Argument(..., help="Login name"),
    reason: str = REASON_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Deactivate a user: their tokens are revoked and their review UI sessions end.

    Every running process refuses them from their next request."""
    from inspect_app.accounts import deactivate_user

    with _operator_session(data_dir, database_url) as session:
        deactivate_user(session, name, actor=_operator(), reason=reason)
    typer.echo(f"deactivated {name}")


@users_app.command("activate")
def users_activate(
    name: str = typer.Argument(..., help="Login name"),
    reason: str = REASON_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Let a deactivated user log in again (their old tokens stay revoked)."""
    from inspect_app.accounts import activate_user

    with _operator_session(data_dir, database_url) as session:
        activate_user(session, name, actor=_operator(), reason=reason)
    typer.echo(f"activated {name}")


@users_app.command("password")
def users_password(
    name: str = typer.Argument(..., help="Login name"),
    password: str | None = typer.Option(
        None, help="The new password, for scripts (default: asked twice, not echoed)"
    ),
    reason: str = REASON_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Set a user's password; their tokens are revoked and their review UI sessions end."""
    from inspect_app.accounts import change_password

    if password is None:
        password = typer.prompt(
            f"New password for {name}", hide_input=True, confirmation_prompt=True
        )
    with _operator_session(data_dir, database_url) as session:
        change_password(session, name, password, actor=_operator(), reason=reason)
    typer.echo(f"changed the password of {name}; their tokens are revoked")


@users_app.command("tokens")
def users_tokens(
    name: str = typer.Argument(..., help="Login name"),
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """List a user's tokens: id, state, created, expires, last used, revoked (UTC).

    Revoke one with `inspect-app tokens revoke ID`."""
    from datetime import timedelta

    from inspect_app.accounts import list_tokens, token_expiry, token_state
    from inspect_app.timeutil import as_utc, utcnow

    ttl = timedelta(hours=_settings(data_dir, database_url).token_ttl_hours)
    now = utcnow()

    def when(value: datetime | None) -> str:
        return f"{as_utc(value):%Y-%m-%d %H:%M}" if value is not None else "-"

    with _operator_session(data_dir, database_url) as session:
        tokens = list_tokens(session, name)
    typer.echo("id\tstate\tcreated\texpires\tlast used\trevoked")
    for token in tokens:
        typer.echo(
            f"{token.id}\t{token_state(token, ttl, now)}\t{when(token.created_at)}\t"
            f"{when(token_expiry(token, ttl))}\t{when(token.last_used_at)}\t"
            f"{when(token.revoked_at)}"
        )


tokens_app = typer.Typer(no_args_is_help=True, help="API bearer tokens (list: users tokens).")
app.add_typer(tokens_app, name="tokens")


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: int = typer.Argument(..., help="The token's id, from `inspect-app users tokens`"),
    reason: str = REASON_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Revoke a bearer token; every running process refuses it from its next request."""
    from inspect_app.accounts import revoke_token, token_owner

    with _operator_session(data_dir, database_url) as session:
        token = revoke_token(session, token_id, actor=_operator(), reason=reason)
        owner = token_owner(session, token).name
    typer.echo(f"revoked token {token_id} of {owner}")


@cameras_app.command("add")
def cameras_add(
    line: str = typer.Option(..., help="The line the camera feeds"),
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Create a camera key for a line; it is printed once and works for that line only."""
    from inspect_app.accounts import add_camera_key

    with _operator_session(data_dir, database_url) as session:
        key = add_camera_key(session, line, actor=_operator())
    typer.echo(key)


@cameras_app.command("list")
def cameras_list(
    line: str | None = typer.Option(None, help="Only this line's keys"),
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """List camera keys by their prefix (the keys themselves are not stored)."""
    from inspect_app.accounts import list_camera_keys

    with _operator_session(data_dir, database_url) as session:
        for key in list_camera_keys(session, line):
            state = "revoked" if key.revoked_at else "active"
            typer.echo(f"{key.line_id}\t{key.key_prefix}...\t{state}\t{key.created_at:%Y-%m-%d}")


@cameras_app.command("revoke")
def cameras_revoke(
    key_prefix: str = typer.Argument(
        ..., help="The key's prefix as `cameras list` shows it (or more of the key)"
    ),
    reason: str = REASON_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Revoke a camera key; the camera's next image is refused by every running process.

    A prefix that matches several live keys is refused, naming them."""
    from inspect_app.accounts import revoke_camera_key

    with _operator_session(data_dir, database_url) as session:
        key = revoke_camera_key(session, key_prefix, actor=_operator(), reason=reason)
    typer.echo(f"revoked camera key {key.key_prefix}... of {key.line_id}")


@lines_app.command("add")
def lines_add(
    line: str = typer.Argument(..., help="Line id, e.g. line-1 (used in URLs)"),
    level: str = typer.Option("shadow", help="human_only | shadow | assist"),
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Add a line. Partial and full need evidence, so a new line starts at most at assist."""
    from inspect_app.lines import add_line

    with _operator_session(data_dir, database_url) as session:
        added = add_line(session, line, level, actor=_operator())
    typer.echo(f"added {added.id} at {added.level}")


@lines_app.command("list")
def lines_list(
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """List lines with their level, thresholds, audit rate, targets and review queue."""
    from inspect_app.domain import threshold_text
    from inspect_app.lines import list_lines
    from inspect_app.review_queue import queue_depth

    with _operator_session(data_dir, database_url) as session:
        for found in list_lines(session):
            typer.echo(
                f"{found.id}\t{found.level}\tpass>={threshold_text(found.pass_threshold)}\t"
                f"fail>={threshold_text(found.fail_threshold)}\taudit={found.audit_rate:g}\t"
                f"queue={queue_depth(session, found.id)}\t"
                f"targets: escape<={found.max_escape_rate:g} "
                f"false-reject<={found.max_false_reject_rate:g} min-labels={found.min_labels} "
                f"auto-demote={'on' if found.auto_demote else 'off'}"
            )


ACT_AS_OPTION = typer.Option(
    None,
    "--as",
    help="Act as this supervisor (or admin) account; default: the operator cli:<os user>",
)


def _acting_supervisor(session: Session, name: str | None) -> User:
    """Who a line command acts as, through the same rules as the API and the UI.

    With ``--as NAME``: that account, which must be active, and whose role the service checks
    (an inspector is refused). Without: the operator ``cli:<os user>`` with a supervisor's
    role. Whoever can run this command against the plant's database can already add users and
    issue tokens, so demanding an account would add a step, not security; the evidence gate
    applies either way, and the event names the operating-system user who ran it. The
    operator is never stored as a user.
    """
    from inspect_app.accounts import AccountError, get_user
    from inspect_app.domain import Role
    from inspect_app.storage.tables import User

    if name is None:
        return User(name=_operator(), role=Role.SUPERVISOR.value, password_hash="")
    user = get_user(session, name)
    if not user.active:
        raise AccountError(f"user {name!r} is deactivated")
    return user


def _echo_gate_sides(evidence: dict[str, Any]) -> None:
    """Each side of the gate's figures, one line each, on stderr beside the refusal."""
    for key, words in (("escape", "escape rate"), ("false_reject", "false-reject rate")):
        side = evidence.get(key)
        if not isinstance(side, dict):
            continue
        if side.get("automated") is False:
            typer.echo(f"  {words}: that side is never automated (not gated)", err=True)
            continue
        verdict = "met" if side.get("passed") else "SHORT"
        more = side.get("more_labels_needed")
        need = f", about {more:,} more labeled parts needed" if more else ""
        typer.echo(
            f"  {words}: {verdict}: {side.get('errors', 0):,} errors in {side.get('n', 0):,} "
            f"parts (at least {side.get('min_labels', 0):,} needed), 95% bound "
            f"{100 * side.get('upper_bound', 1.0):.2f}% vs target "
            f"{100 * side.get('target', 0.0):.2f}%{need}",
            err=True,
        )


@lines_app.command("set")
def lines_set(
    line: str = typer.Argument(..., help="Line id"),
    level: str = typer.Option(..., help="human_only | shadow | assist | partial | full"),
    pass_threshold: str | None = typer.Option(
        None, help='Auto-pass when P(ok) >= this, in (0.5, 1], or "never" (default: keep)'
    ),
    fail_threshold: str | None = typer.Option(
        None, help='Auto-fail when P(defect) >= this, in (0.5, 1], or "never" (default: keep)'
    ),
    audit_rate: float | None = typer.Option(
        None, help="Share of auto-decisions audited blind, 0 to 1 (default: keep)"
    ),
    reason: str = typer.Option(..., help="Why, for the audit trail (required)"),
    act_as: str | None = ACT_AS_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Change a line's level and settings through the evidence gate, as the API does.

    Lowering is always allowed; raising to partial or full, or loosening a threshold there,
    needs the evidence. A refusal prints the figures that fell short and exits 1."""
    from inspect_app.domain import threshold_text
    from inspect_app.lines import AutomationRefused, change_automation

    with _operator_session(data_dir, database_url) as session:
        actor = _acting_supervisor(session, act_as)
        try:
            changed = change_automation(
                session,
                line,
                level=level,
                pass_threshold=pass_threshold,
                fail_threshold=fail_threshold,
                audit_rate=audit_rate,
                reason=reason,
                actor=actor,
            )
        except AutomationRefused as exc:
            typer.echo(f"refused: {exc}", err=True)
            _echo_gate_sides(exc.verdict.evidence)
            raise typer.Exit(1) from exc
    typer.echo(
        f"{changed.id} is now {changed.level}: pass>={threshold_text(changed.pass_threshold)} "
        f"fail>={threshold_text(changed.fail_threshold)} audit={changed.audit_rate:g} "
        f"(by {actor.name})"
    )


@lines_app.command("targets")
def lines_targets(
    line: str = typer.Argument(..., help="Line id"),
    max_escape_rate: float | None = typer.Option(
        None, help="Target escape rate, e.g. 0.005 for 0.5% (default: keep)"
    ),
    max_false_reject_rate: float | None = typer.Option(
        None, help="Target false-reject rate, e.g. 0.02 (default: keep)"
    ),
    min_labels: int | None = typer.Option(
        None, help="Labeled parts each automated side needs (default: keep)"
    ),
    auto_demote: bool | None = typer.Option(
        None, "--auto-demote/--no-auto-demote", help="Drop a level on bad live audits"
    ),
    reason: str = typer.Option(..., help="Why, for the audit trail (required)"),
    act_as: str | None = ACT_AS_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Change a line's targets. Never raises it; at partial or full its live audits are
    judged against the new targets at once and may lower it one level (printed)."""
    from inspect_app.lines import set_targets

    with _operator_session(data_dir, database_url) as session:
        outcome = set_targets(
            session,
            line,
            max_escape_rate=max_escape_rate,
            max_false_reject_rate=max_false_reject_rate,
            min_labels=min_labels,
            auto_demote=auto_demote,
            reason=reason,
            actor=_acting_supervisor(session, act_as),
        )
    changed = ", ".join(
        f"{name} {outcome.old[name]} -> {outcome.new[name]}"
        for name in outcome.new
        if outcome.old[name] != outcome.new[name]
    )
    typer.echo(f"{line}: {changed or 'no change'}; level {outcome.line.level}")
    typer.echo(outcome.message)


# -- model versions and their rollout (inspect_app.rollout: registry, deployments)

models_app = typer.Typer(no_args_is_help=True, help="The model registry: versions a line may run.")
deploy_app = typer.Typer(
    no_args_is_help=True, help="A line's deployment: champion, candidate and rollout."
)
app.add_typer(models_app, name="models")
app.add_typer(deploy_app, name="deploy")

MODEL_ACT_AS_OPTION = typer.Option(
    None,
    "--as",
    "--by",
    help="Act as this supervisor (or admin) account; default: the operator cli:<os user>",
)


@contextmanager
def _rollout_session(
    data_dir: Path | None, database_url: str | None
) -> Iterator[tuple[Session, Settings]]:
    """`_operator_session` that also turns the registry's and the deployments' refusals into
    exit code 1: a refusal on the evidence prints its figures first."""
    from inspect_app.rollout.deployments import DeploymentError, RolloutRefused
    from inspect_app.rollout.registry import RegistryError

    settings = _settings(data_dir, database_url)
    try:
        with _operator_session(data_dir, database_url) as session:
            yield session, settings
    except RolloutRefused as exc:
        typer.echo(f"refused: {exc}", err=True)
        # The gate's figures come as they are, a canary step's under "step".
        for figures in (exc.evidence, exc.evidence.get("gate"), exc.evidence.get("step")):
            if isinstance(figures, dict):
                _echo_gate_sides(figures)
        raise typer.Exit(1) from exc
    except (DeploymentError, RegistryError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


def _configured_version(session: Session, settings: Settings) -> str:
    """The registered version of the service's configured weights ($INSPECT_WEIGHTS): what a
    line without a deployment runs. Registered here if the service has not done it yet."""
    from inspect_app.rollout.registry import ensure_registered

    return ensure_registered(session, settings.weights, settings.data_dir).version


def _loads(session: Session, data_dir: Path) -> Callable[[str], None]:
    """`warm` for the use cases, in a process with no model pool: load the version once, so
    a checkpoint that cannot be served is refused here. The running services load it
    themselves (within a poll of the change) before they move any part to it."""
    from inspect_app.rollout.registry import get_version, materialize
    from models.predictor import Predictor

    def load(version: str) -> None:
        predictor = Predictor.from_checkpoint(
            materialize(session, data_dir, get_version(session, version))
        )
        if predictor.version != version:
            raise ValueError(f"the registry's file holds model {predictor.version}")

    return load


def _acting_rollout_supervisor(session: Session, name: str | None) -> User:
    """As `_acting_supervisor`; the registry has no role rules of its own, so the role is
    checked here as the API does (supervisors and admins)."""
    from inspect_app.accounts import AccountError
    from inspect_app.domain import Role

    actor = _acting_supervisor(session, name)
    if not Role(actor.role).may(Role.SUPERVISOR):
        raise AccountError(
            f"user {actor.name!r} ({actor.role}) may not register models: supervisors and "
            "admins only"
        )
    return actor


def _when(value: Any) -> str:
    from inspect_app.timeutil import as_utc

    return "-" if value is None else f"{as_utc(value):%Y-%m-%d %H:%M:%S} UTC"


# The model card's headline figures, as `inspect-app models list|show` print them.
CARD_FIGURES = ("binary_accuracy", "defect_recall", "false_reject_rate", "ece")


def _card_figures(metrics: dict[str, Any] | None) -> dict[str, Any]:
    """The validation figures of a model card: at the top of a checkpoint's metrics, or
    grouped under "validation" (as the card's JSON file writes them)."""
    metrics = metrics or {}
    grouped = metrics.get("validation")
    figures = grouped if isinstance(grouped, dict) else metrics
    return {name: figures[name] for name in CARD_FIGURES if name in figures}


def _roles_text(roles: list[tuple[str, str]]) -> str:
    return ", ".join(f"{line_id} ({role})" for line_id, role in roles) or "-"


@models_app.command("add")
def models_add(
    checkpoint: Path = typer.Argument(..., help="The checkpoint file (its profile beside it)"),
    notes: str = typer.Option("", help="Why this version exists, for the registry"),
    parent: str | None = typer.Option(
        None, help="The registered version it was trained from (default: its model card's)"
    ),
    act_as: str | None = MODEL_ACT_AS_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Register a checkpoint as a model version: validated as the service loads it, copied
    into the registry under the hash of its bytes, never changed afterwards. The same file
    again answers the version it already is."""
    from inspect_app.rollout.registry import register_model

    with _rollout_session(data_dir, database_url) as (session, settings):
        actor = _acting_rollout_supervisor(session, act_as)
        outcome = register_model(
            session,
            checkpoint,
            settings.data_dir,
            registered_by=actor.name,
            notes=notes,
            parent_version=parent,
        )
    version = outcome.version
    if outcome.created:
        typer.echo(f"registered {version.version} (sha256 {version.sha256[:12]}, by {actor.name})")
        typer.echo(f"serving runtime: {_onnx_text(version.metrics)}")
    else:
        typer.echo(
            f"already registered: {checkpoint} is {version.version} "
            f"(by {version.registered_by}, {_when(version.registered_at)})"
        )


def _onnx_text(metrics: dict[str, Any] | None) -> str:
    """The model card's statement of the ONNX export's parity check, in one line."""
    from models.onnx_export import OnnxExportError, OnnxRecord

    raw = (metrics or {}).get("onnx")
    if not isinstance(raw, dict):
        return "no ONNX export recorded (exported when loaded)"
    try:
        return OnnxRecord.from_dict(raw).summary()
    except OnnxExportError as exc:
        return f"unreadable ONNX record ({exc})"


@models_app.command("export-onnx")
def models_export_onnx(
    checkpoint: Path | None = typer.Option(None, help="Checkpoint (default: bundled weights)"),
) -> None:
    """Export a checkpoint to ONNX for serving and check its parity with torch; writes
    <name>.onnx (only when accepted) and <name>.onnx.json (the figure) beside it. For the
    bundled weights, run at build: `make weights` does, and both files are committed."""
    _log_to_stderr()
    from models import DEFAULT_WEIGHTS
    from models.checkpoint import CheckpointError
    from models.evaluate import add_serving_runtime, card_paths
    from models.onnx_export import export_checked, onnx_path, write_export

    path = checkpoint or DEFAULT_WEIGHTS
    try:
        graph, record = export_checked(path)
    except CheckpointError as exc:
        raise typer.BadParameter(str(exc)) from exc
    written = write_export(path, graph, record)
    typer.echo(f"model {record.model_version}: {record.summary()}")
    if card_paths(path)[1].is_file():
        card = add_serving_runtime(path, record.to_dict(), record.model_version)
        typer.echo(f"recorded in {card}")
    if graph is not None:
        typer.echo(f"wrote {onnx_path(path)} ({len(graph):,} bytes) and {written}")
    else:
        typer.echo(f"wrote {written}; torch serves this checkpoint")
        raise typer.Exit(1)


@models_app.command("list")
def models_list(
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """List the registered versions, newest first, with the lines that run them."""
    from inspect_app.rollout.deployments import running_lines
    from inspect_app.rollout.registry import list_versions

    with _rollout_session(data_dir, database_url) as (session, settings):
        running = running_lines(session, _configured_version(session, settings))
        versions = list_versions(session)
    typer.echo("version\tregistered\tby\tparent\tvalidation accuracy\tlines")
    for row in versions:
        accuracy = _card_figures(row.metrics).get("binary_accuracy")
        typer.echo(
            f"{row.version}\t{_when(row.registered_at)}\t{row.registered_by}\t"
            f"{row.parent_version or '-'}\t{'-' if accuracy is None else f'{accuracy:.4f}'}\t"
            f"{_roles_text(running.get(row.version, []))}"
        )


@models_app.command("show")
def models_show(
    version: str = typer.Argument(..., help="A registered version"),
    as_json: bool = typer.Option(False, "--json", help="The whole record as JSON"),
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """One version: hash, architecture, classes, calibration, model card figures, lineage,
    who registered it and which lines run it."""
    import json

    from inspect_app.rollout.deployments import running_lines
    from inspect_app.rollout.registry import get_version

    with _rollout_session(data_dir, database_url) as (session, settings):
        running = running_lines(session, _configured_version(session, settings))
        row = get_version(session, version)
    roles = running.get(row.version, [])
    if as_json:
        record = row.model_dump(mode="json")
        record["lines"] = [{"line_id": line_id, "role": role} for line_id, role in roles]
        typer.echo(json.dumps(record, indent=2, default=str))
        return
    figures = _card_figures(row.metrics)
    evaluated_on = (row.metrics or {}).get("evaluated_on")
    for name, value in (
        ("version", row.version),
        ("sha256", row.sha256),
        ("registered", f"{_when(row.registered_at)} by {row.registered_by}"),
        ("parent", row.parent_version or "-"),
        ("architecture", json.dumps(row.architecture)),
        ("classes", ", ".join(str(c) for c in row.class_names)),
        ("temperature", f"{row.temperature:g}"),
        ("data seed", "-" if row.data_seed is None else row.data_seed),
        ("reference profile", "yes" if row.profile_sha256 else "no (no image gate)"),
        ("serving runtime", _onnx_text(row.metrics)),
        (
            "model card",
            ", ".join(f"{k.replace('_', ' ')} {v:.4g}" for k, v in figures.items()) or "-",
        ),
        ("evaluated on", evaluated_on or "-"),
        ("lineage", json.dumps(row.lineage)),
        ("notes", row.notes or "-"),
        ("lines", _roles_text(roles)),
    ):
        typer.echo(f"{name}: {value}")


def _echo_deployment(session: Session, line: str, default_version: str) -> None:
    from inspect_app.rollout.deployments import comparison, view

    shown = view(session, line, default_version)
    typer.echo(f"line {shown.line_id}: champion {shown.champion}")
    if shown.candidate is None:
        typer.echo("  no candidate (the champion decides every part)")
    else:
        state = f"QUARANTINED ({shown.quarantine_reason})" if shown.quarantined else "armed"
        typer.echo(
            f"  candidate {shown.candidate}: mode {shown.mode}, {state}, decides "
            f"{100 * shown.share:g}% of parts"
        )
        if shown.mode == "shadow":
            typer.echo(f"  shadow: runs hidden on {100 * shown.shadow_share:g}% of parts")
        if shown.mode == "canary":
            steps = ", ".join(f"{100 * s:g}%" for s in shown.steps)
            typer.echo(
                f"  canary: step {shown.step + 1} of {len(shown.steps)} ({steps}), "
                f"{shown.step_min_labels} blind labels a step, since {_when(shown.step_started_at)}"
            )
        if shown.mode == "bandit":
            arms = ", ".join(
                f"{v}: {a['successes']} agreed / {a['failures']} not"
                for v, a in shown.bandit.items()
            )
            typer.echo(f"  bandit: exploration {shown.exploration:g}; {arms or 'no rewards yet'}")
        typer.echo(f"  audit rate of the candidate's decisions: {shown.candidate_audit_rate:g}")
        own = shown.candidate_thresholds
        typer.echo(
            "  it decides at the line's thresholds"
            if own is None
            else f"  it decides at its own thresholds: pass {own['pass_threshold']} / fail "
            f"{own['fail_threshold']} ({own['source']}); the line's at finalize"
        )
    if shown.revision == 0:
        typer.echo("  never changed: the service's configured model ($INSPECT_WEIGHTS)")
    else:
        typer.echo(
            f"  revision {shown.revision}, by {shown.updated_by} at {_when(shown.updated_at)}"
        )
    compared = comparison(session, line, default_version)
    if compared is None:
        return
    for role in ("champion", "candidate"):
        report = compared[role]
        escape, false_reject = report["escape"], report["false_reject"]
        typer.echo(
            f"  {role} {report['model_version']}: {report['n_labeled']} blind labels, gate "
            f"{'passed' if report['passes_gate'] else 'not passed'}; escape bound "
            f"{100 * escape['upper_bound']:.2f}% (target {100 * escape['target']:.2f}%), "
            f"false-reject bound {100 * false_reject['upper_bound']:.2f}% "
            f"(target {100 * false_reject['target']:.2f}%)"
        )
    paired = compared["paired"]
    typer.echo(
        f"  paired on {paired['n']} parts: champion alone right {paired['champion_only']}, "
        f"candidate alone right {paired['candidate_only']}, McNemar p = {paired['p_value']:.3g}"
    )
    own_gate = compared.get("candidate_own")
    if own_gate is not None:
        typer.echo(
            f"  candidate at its own thresholds pass {own_gate['pass_threshold']} / fail "
            f"{own_gate['fail_threshold']} ({own_gate['source']}): gate "
            f"{'passed' if own_gate['passed'] else 'not passed'}; {own_gate['reason']}"
        )
    if "step" in compared:
        step = compared["step"]
        typer.echo(f"  this canary step: {step['outcome']}: {step['reason']}")


@deploy_app.command("show")
def deploy_show(
    line: str = typer.Argument(..., help="Line id"),
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """The line's champion and candidate, its rollout, and the two compared on the same
    blind-labeled parts."""
    with _rollout_session(data_dir, database_url) as (session, settings):
        _echo_deployment(session, line, _configured_version(session, settings))


def _steps(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"{text!r}: shares separated by commas, e.g. 0.05,0.25,0.5,1", param_hint="--steps"
        ) from None


DEPLOY_REASON_OPTION = typer.Option(..., help="Why, for the audit trail (required)")


@deploy_app.command("set")
def deploy_set(
    line: str = typer.Argument(..., help="Line id"),
    mode: str = typer.Option(..., help="none | shadow | canary | blue_green | ab | bandit"),
    candidate: str | None = typer.Option(
        None, help="A registered version (none with --mode none: the champion alone)"
    ),
    share: float | None = typer.Option(None, help="ab: the candidate's share (default 0.5)"),
    shadow_share: float | None = typer.Option(
        None, help="shadow: the share of parts the candidate runs on (default: keep, 1)"
    ),
    steps: str | None = typer.Option(
        None, help="canary: increasing shares ending at 1, e.g. 0.05,0.25,0.5,1"
    ),
    min_labels: int | None = typer.Option(
        None, help="canary: blind labels of the candidate's decisions each step needs"
    ),
    audit_rate: float | None = typer.Option(
        None, help="Audit rate of the parts the candidate decides (default: keep, 0.1)"
    ),
    exploration: float | None = typer.Option(None, help="bandit: the exploration floor"),
    reason: str = DEPLOY_REASON_OPTION,
    act_as: str | None = ACT_AS_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Start, change or end a rollout, through the same rules as the API: the candidate is
    loaded once here to check it can be served, and at partial or full a candidate that would
    decide parts must first pass the line's gate on its own shadow evidence. The running
    services follow the change within a poll (about a second)."""
    from inspect_app.rollout.deployments import DeploymentRequest, set_deployment
    from inspect_app.rollout.policy import Mode

    try:
        chosen = Mode(mode)
    except ValueError:
        allowed = " | ".join(m.value for m in Mode)
        raise typer.BadParameter(f"{mode!r}: one of {allowed}", param_hint="--mode") from None
    request = DeploymentRequest(
        candidate=candidate,
        mode=chosen,
        share=share,
        shadow_share=shadow_share,
        steps=_steps(steps),
        step_min_labels=min_labels,
        candidate_audit_rate=audit_rate,
        exploration=exploration,
    )
    with _rollout_session(data_dir, database_url) as (session, settings):
        actor = _acting_supervisor(session, act_as)
        default_version = _configured_version(session, settings)
        set_deployment(
            session,
            line,
            request,
            actor=actor,
            reason=reason,
            default_version=default_version,
            warm=_loads(session, settings.data_dir),
        )
        _echo_deployment(session, line, default_version)


def _deploy_action(
    line: str,
    action: str,
    reason: str,
    act_as: str | None,
    data_dir: Path | None,
    database_url: str | None,
    thresholds: tuple[str, str] | None = None,
) -> None:
    from inspect_app.rollout import deployments

    with _rollout_session(data_dir, database_url) as (session, settings):
        actor = _acting_supervisor(session, act_as)
        default_version = _configured_version(session, settings)
        if action == "promote":
            deployments.promote(
                session, line, actor=actor, reason=reason, default_version=default_version,
                warm=_loads(session, settings.data_dir), thresholds=thresholds,
            )  # fmt: skip
        elif action == "rollback":
            deployments.rollback_by(session, line, actor=actor, reason=reason)
        elif action == "rearm":
            deployments.rearm(
                session, line, actor=actor, reason=reason, default_version=default_version
            )
        else:
            deployments.finalize(
                session, line, actor=actor, reason=reason, default_version=default_version,
                warm=_loads(session, settings.data_dir),
            )  # fmt: skip
        _echo_deployment(session, line, default_version)


@deploy_app.command("promote")
def deploy_promote(
    line: str = typer.Argument(..., help="Line id"),
    reason: str = DEPLOY_REASON_OPTION,
    pass_threshold: str | None = typer.Option(
        None,
        help="Leaving shadow: the candidate auto-passes at P(ok) >= this, or 'never' "
        "(with --fail-threshold; neither: recommended on its own shadow evidence)",
    ),
    fail_threshold: str | None = typer.Option(
        None, help="Leaving shadow: the candidate auto-fails at P(defect) >= this, or 'never'"
    ),
    act_as: str | None = ACT_AS_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Shadow -> canary at its first step, or a canary to its next step once the current
    step passed on the candidate's blind labels (refused with the figures otherwise).
    Leaving shadow the candidate decides at thresholds of its own, gated on its evidence:
    recommended on it, or the two given here; they become the line's at finalize."""
    if (pass_threshold is None) != (fail_threshold is None):
        raise typer.BadParameter(
            "give both --pass-threshold and --fail-threshold, or neither (recommended)",
            param_hint="--pass-threshold",
        )
    given = None if pass_threshold is None or fail_threshold is None else (
        pass_threshold, fail_threshold
    )  # fmt: skip
    _deploy_action(line, "promote", reason, act_as, data_dir, database_url, given)


@deploy_app.command("rollback")
def deploy_rollback(
    line: str = typer.Argument(..., help="Line id"),
    reason: str = DEPLOY_REASON_OPTION,
    act_as: str | None = ACT_AS_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """The champion decides every part again; the candidate is quarantined until re-armed."""
    _deploy_action(line, "rollback", reason, act_as, data_dir, database_url)


@deploy_app.command("rearm")
def deploy_rearm(
    line: str = typer.Argument(..., help="Line id"),
    reason: str = DEPLOY_REASON_OPTION,
    act_as: str | None = ACT_AS_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Lift a quarantine (a canary starts again at its first step)."""
    _deploy_action(line, "rearm", reason, act_as, data_dir, database_url)


@deploy_app.command("finalize")
def deploy_finalize(
    line: str = typer.Argument(..., help="Line id"),
    reason: str = DEPLOY_REASON_OPTION,
    act_as: str | None = ACT_AS_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """The candidate becomes the line's champion and the rollout ends."""
    _deploy_action(line, "finalize", reason, act_as, data_dir, database_url)


# -- inspections in bulk (inspect_app.inspections)

inspections_app = typer.Typer(no_args_is_help=True, help="Inspections: list and export.")
app.add_typer(inspections_app, name="inspections")


@inspections_app.command("list")
def inspections_list(
    line: str | None = typer.Option(None, help="Only this line's parts"),
    since: str | None = typer.Option(None, help="Received at or after (ISO 8601; naive is UTC)"),
    until: str | None = typer.Option(None, help="Received before (ISO 8601), after --since"),
    decision: str | None = typer.Option(None, help="pass | fail | pending"),
    route: str | None = typer.Option(None, help="auto | review | audit"),
    model: str | None = typer.Option(None, help="Only parts this model version judged"),
    labeled: bool | None = typer.Option(
        None, "--labeled/--unlabeled", help="Only parts with (or without) a human label"
    ),
    limit: int | None = typer.Option(None, min=1, help="At most this many parts (default: all)"),
    output_format: str = typer.Option("csv", "--format", help="csv | json"),
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Write the matching inspections to standard output, oldest first, every page of them
    (memory stays one page): CSV with a header, or one JSON array."""
    import csv
    import json
    import sys
    from dataclasses import asdict, fields
    from datetime import datetime
    from itertools import islice

    from inspect_app.domain import Decision, Route, threshold_json
    from inspect_app.inspections import (
        InspectionFilter,
        InspectionRecord,
        InvalidQuery,
        iter_inspections,
    )

    when = _option_time

    def choice(name: str, value: str | None, kind: type[Decision] | type[Route]) -> Any:
        try:
            return None if value is None else kind(value)
        except ValueError:
            allowed = " | ".join(k.value for k in kind)
            raise typer.BadParameter(f"{value!r}: one of {allowed}", param_hint=name) from None

    if output_format not in ("csv", "json"):
        raise typer.BadParameter(f"{output_format!r}: csv or json", param_hint="--format")
    filters = InspectionFilter(
        line_id=line,
        since=when("since", since),
        until=when("until", until),
        decision=choice("--decision", decision, Decision),
        route=choice("--route", route, Route),
        model_version=model,
        labeled=labeled,
    )

    def plain(record: InspectionRecord) -> dict[str, Any]:
        row = asdict(record)
        for name in ("pass_threshold", "fail_threshold"):
            row[name] = threshold_json(row[name])
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}

    out = sys.stdout
    with _operator_session(data_dir, database_url) as session:
        try:
            records = islice(iter_inspections(session, filters), limit)
            if output_format == "csv":
                writer = csv.DictWriter(out, [f.name for f in fields(InspectionRecord)])
                writer.writeheader()
                for record in records:
                    writer.writerow(plain(record))
            else:
                out.write("[")
                for i, record in enumerate(records):
                    out.write(("," if i else "") + "\n" + json.dumps(plain(record)))
                out.write("\n]\n")
        except InvalidQuery as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc


# -- monitoring: the alarm rules for a plant's Prometheus (inspect_app.monitoring)

monitoring_app = typer.Typer(no_args_is_help=True, help="Alarms and the plant's Prometheus.")
app.add_typer(monitoring_app, name="monitoring")


@monitoring_app.command("prometheus-rules")
def monitoring_prometheus_rules(
    out: Path | None = typer.Option(None, help="File to write (default: standard output)"),
    parts_per_minute: float = typer.Option(
        10.0, min=0.01, help="Line speed that maps windows of parts to time ranges"
    ),
    evaluation_interval_s: float = typer.Option(
        60.0, min=0.01, help="Seconds per evaluation, mapping holds to for: durations"
    ),
) -> None:
    """Write the shipped alarm rules as a Prometheus rules file (`promtool check rules` it)."""
    from inspect_app.monitoring.alarms import DEFAULT_RULES
    from inspect_app.monitoring.prometheus_rules import render_rules

    text = render_rules(
        DEFAULT_RULES,
        parts_per_minute=parts_per_minute,
        evaluation_interval_s=evaluation_interval_s,
    )
    if out is None:
        typer.echo(text, nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    typer.echo(f"wrote {out}")


@monitoring_app.command("rebaseline")
def monitoring_rebaseline(
    line: str = typer.Argument(..., help="Line id"),
    since: str = typer.Option(..., help="The known-good window's start (ISO 8601; naive: UTC)"),
    until: str = typer.Option(..., help="... and its end"),
    reason: str = typer.Option(..., help="Why this window is known good (the audit trail)"),
    act_as: str | None = ACT_AS_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Compare the line's drift tests with a window of its own parts (at least 200 usable ones
    of its current model) instead of the model's calibration images; the image gate keeps the
    model's reference. A running service uses it from its next evaluation."""
    from inspect_app.agreement import current_model_version
    from inspect_app.monitoring.baseline import BaselineError, rebaseline
    from inspect_app.rollout.registry import get_version, materialize
    from models.profile import load_profile

    start, end = _option_time("since", since), _option_time("until", until)
    assert start is not None and end is not None
    settings = _settings(data_dir, database_url)
    with _operator_session(data_dir, database_url) as session:
        version = current_model_version(session, line)
        profile = None
        if version is not None:
            path = materialize(session, settings.data_dir, get_version(session, version))
            profile = load_profile(path, version=version)
        if profile is None:
            typer.echo(f"error: line {line}'s model {version or '-'} has no profile", err=True)
            raise typer.Exit(1)
        try:
            made = rebaseline(
                session,
                line,
                since=start,
                until=end,
                actor=_acting_supervisor(session, act_as),
                reason=reason,
                profile=profile,
            )
        except (BaselineError, PermissionError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
    typer.echo(
        f"line {line} re-baselined on {made.n_parts} parts of {made.model_version} "
        f"received {made.window_since:%Y-%m-%d %H:%M} to {made.window_until:%Y-%m-%d %H:%M} UTC"
    )


# -- stored images: retention (inspect_app.storage.retention)

images_app = typer.Typer(no_args_is_help=True, help="Stored image bytes: retention.")
app.add_typer(images_app, name="images")


@images_app.command("sweep")
def images_sweep(
    dry_run: bool = typer.Option(False, "--dry-run", help="Report what would go; change nothing"),
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Remove image files past the retention policy ($INSPECT_RETENTION_DAYS, and
    $INSPECT_RETENTION_LABELED_DAYS for labeled, disagreement and audited parts) and orphan
    files; the inspections and their labels stay. Also deletes outbox messages older than
    $INSPECT_OUTBOX_RETENTION_DAYS that every destination has delivered (never an undelivered
    one). Safe while the service runs (cron it)."""
    from inspect_app.storage.images import open_image_store
    from inspect_app.storage.retention import RetentionPolicy, sweep_images

    settings = _settings(data_dir, database_url)
    engine = _open_database(settings)
    try:
        report = sweep_images(
            engine,
            open_image_store(settings, engine),
            RetentionPolicy.from_settings(settings),
            dry_run=dry_run,
            actor=_operator(),
        )
    finally:
        engine.dispose()
    for line in report.summary():
        typer.echo(line)


# -- the database's schema (inspect_app.storage.db, inspect_app.storage.migrations)

db_app = typer.Typer(no_args_is_help=True, help="The database's schema revisions.")
app.add_typer(db_app, name="db")


def _describe_schema(state: SchemaState) -> str:
    if state.revision is None:
        return "empty database (no schema)"
    if not state.stamped:
        return "round-1 schema (unstamped)"
    return f"{state.revision} (head)" if state.at_head else state.revision


@db_app.command("upgrade")
def db_upgrade(
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Upgrade the database to this version's schema (serve and the other commands do it
    too at start); a SQLite database is copied first."""
    engine = _database_engine(_settings(data_dir, database_url))
    try:
        report = _upgrade_or_exit(engine)
    finally:
        engine.dispose()
    if not report.applied:
        typer.echo(f"already at {_describe_schema(report.before)}")
        return
    typer.echo(f"before: {_describe_schema(report.before)}")
    typer.echo(f"after: {report.after} (head)")
    typer.echo(f"applied: {', '.join(report.applied)}")
    if report.backup is not None:
        typer.echo(f"backup: {report.backup}")


@db_app.command("current")
def db_current(
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Print the database's revision and whether it is this version's head; changes nothing."""
    from inspect_app.storage.db import SchemaError, current_revision, make_engine, sqlite_path

    engine = make_engine(_settings(data_dir, database_url).resolved_database_url)
    path = sqlite_path(engine)
    if path is not None and not path.exists():  # connecting would create an empty file
        typer.echo(f"no database at {path} yet: `inspect-app db upgrade` makes one")
        return
    try:
        state = current_revision(engine)
    except SchemaError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        engine.dispose()
    if state.at_head:
        typer.echo(_describe_schema(state))
    else:
        typer.echo(f"{_describe_schema(state)}, upgrade needed (head is {state.head})")


# -- the service (inspect_app.api.app)


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Address to listen on (default: 127.0.0.1)"),
    port: int | None = typer.Option(None, help="Port to listen on (default: 8000)"),
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
    demo: bool = typer.Option(
        False,
        "--demo",
        help="Seed line-1 (shadow), demo users, a camera key and a replay camera on data/samples",
    ),
    log_level: str = typer.Option("info", help="debug | info | warning | error"),
) -> None:
    """Run the inspection service: the JSON API, the review UI, metrics and camera sources."""
    import logging

    import uvicorn

    from inspect_app.api.app import create_app

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = _settings(data_dir, database_url)
    updates: dict[str, object] = {"demo": demo or settings.demo}
    if host is not None:
        updates["host"] = host
    if port is not None:
        updates["port"] = port
    settings = settings.model_copy(update=updates)
    # log_config=None: uvicorn's loggers go through the root logger configured above, so
    # the service and the server log in one format.
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=log_level.lower(),
    )


# -- line outputs (inspect_app.outputs): destinations, delivery state, replay

outputs_app = typer.Typer(
    no_args_is_help=True, help="Line outputs: webhooks and MQTT brokers a line pushes to."
)
app.add_typer(outputs_app, name="outputs")


@contextmanager
def _outputs_session(data_dir: Path | None, database_url: str | None) -> Iterator[Session]:
    """`_operator_session`, with the outputs' refusals as exit code 1 too."""
    from inspect_app.outputs.core import DestinationError
    from inspect_app.outputs.outbox import OutputNotFound

    try:
        with _operator_session(data_dir, database_url) as session:
            yield session
    except (DestinationError, OutputNotFound) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


@outputs_app.command("add")
def outputs_add(
    line: str = typer.Argument(..., help="Line id"),
    kind: str = typer.Option(..., help="webhook | mqtt"),
    url: str = typer.Option(..., help="http(s)://... for a webhook, mqtt://host:port for MQTT"),
    secret: str | None = typer.Option(
        None, envvar="INSPECT_OUTPUT_SECRET", help="Webhook: the shared HMAC-SHA256 key"
    ),
    topic_prefix: str = typer.Option("inspect", help="MQTT: topics are <prefix>/<line>/<kind>"),
    from_seq: int | None = typer.Option(None, help="Also deliver the line's messages from here"),
    reason: str = typer.Option(..., help="Why (the audit trail)"),
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Push a line's final decisions and alarm changes to a webhook or an MQTT broker."""
    from inspect_app.outputs.outbox import add_destination

    with _outputs_session(data_dir, database_url) as session:
        added = add_destination(
            session, line, kind=kind, url=url, secret=secret, topic_prefix=topic_prefix,
            from_seq=from_seq, actor=_operator(), reason=reason,
        )  # fmt: skip
    typer.echo(f"output {added.id}: {added.kind} {added.url} for {added.line_id}, "
               f"from message {added.pending_from_seq}")  # fmt: skip


@outputs_app.command("set")
def outputs_set(
    destination: int = typer.Argument(..., help="Destination id (outputs list)"),
    enabled: bool | None = typer.Option(None, "--enabled/--paused", help="Resume or pause it"),
    url: str | None = typer.Option(None, help="A new URL"),
    secret: str | None = typer.Option(None, envvar="INSPECT_OUTPUT_SECRET", help="A new secret"),
    reason: str = typer.Option(..., help="Why (the audit trail)"),
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Pause or resume a destination, or give it a new URL or secret."""
    from inspect_app.outputs.outbox import update_destination

    with _outputs_session(data_dir, database_url) as session:
        changed = update_destination(
            session, destination, actor=_operator(), reason=reason, enabled=enabled,
            url=url, secret=secret,
        )  # fmt: skip
    typer.echo(f"output {changed.id}: {'enabled' if changed.enabled else 'paused'}, {changed.url}")


@outputs_app.command("list")
def outputs_list(
    line: str | None = typer.Option(None, help="Only this line"),
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Each destination: where, whether it is behind, and its last error if it is failing."""
    from inspect_app.outputs.outbox import list_destinations

    with _outputs_session(data_dir, database_url) as session:
        views = list_destinations(session, line)
    for v in views:
        state = "enabled" if v.enabled else "paused"
        failing = f", failing since {v.failing_since:%Y-%m-%d %H:%M:%S}: {v.last_error}" if (
            v.failing_since is not None) else ""  # fmt: skip
        typer.echo(f"{v.id}\t{v.line_id}\t{v.kind}\t{v.url}\t{state}\t"
                   f"{v.undelivered} undelivered{failing}")  # fmt: skip


@outputs_app.command("messages")
def outputs_messages(
    line: str | None = typer.Option(None, help="Only this line"),
    state: str | None = typer.Option(None, help="delivered | waiting | failing"),
    limit: int = typer.Option(20, min=1, max=1000),
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """The newest messages with their delivery at each destination."""
    from inspect_app.outputs.core import DeliveryState
    from inspect_app.outputs.outbox import list_messages

    try:
        wanted = DeliveryState(state) if state is not None else None
    except ValueError as exc:
        raise typer.BadParameter("delivered | waiting | failing", param_hint="--state") from exc
    with _outputs_session(data_dir, database_url) as session:
        views = list_messages(session, line_id=line, state=wanted, limit=limit)
    for m in views:
        what = m.payload.get("decision") or m.payload.get("to_status")
        deliveries = " ".join(
            f"{d.destination_id}:{d.state.value}({d.attempts})" for d in m.deliveries
        )
        typer.echo(f"{m.line_id}\t{m.seq}\t{m.kind}\t{what}\t{m.delivery_id}\t{deliveries}")


@outputs_app.command("replay")
def outputs_replay(
    line: str = typer.Argument(..., help="Line id"),
    from_seq: int = typer.Option(..., help="First message to send again"),
    to_seq: int | None = typer.Option(None, help="Last one (default: the newest)"),
    destination: int | None = typer.Option(None, help="Only this destination"),
    reason: str = typer.Option(..., help="Why (the audit trail)"),
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Send a line's messages again, in order, with their own delivery ids."""
    from inspect_app.outputs.outbox import replay

    with _outputs_session(data_dir, database_url) as session:
        queued = replay(
            session, line, from_seq=from_seq, to_seq=to_seq, destination_id=destination,
            actor=_operator(), reason=reason,
        )  # fmt: skip
    typer.echo(f"{queued} deliveries queued again; a running service sends them next")


# -- known-answer parts (inspect_app.reference) ------------------------------------------------

reference_app = typer.Typer(
    no_args_is_help=True, help="Reference parts: known answers served blind to inspectors."
)
app.add_typer(reference_app, name="reference")


@contextmanager
def _reference_session(
    data_dir: Path | None, database_url: str | None
) -> Iterator[tuple[Session, Any]]:
    """A session and the reference service, its refusals turned into exit code 1."""
    from inspect_app.reference import service

    try:
        with _operator_session(data_dir, database_url) as session:
            yield session, service
    except service.ReferenceError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


@reference_app.command("add")
def reference_add(
    inspection: int = typer.Argument(..., help="Inspection id"),
    label: str = typer.Option(..., help="The verified class: ok, scratch, crack, pit, ..."),
    reason: str = typer.Option(..., help="How it was verified (the audit trail)"),
    act_as: str | None = ACT_AS_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Mark an inspection as a reference part with its verified label."""
    with _reference_session(data_dir, database_url) as (session, service):
        part = service.add_reference(
            session, inspection, label, reason=reason, actor=_acting_supervisor(session, act_as)
        )
    typer.echo(
        f"reference part {part.id}: inspection {part.inspection_id} ({part.line_id}) "
        f"is {part.label}"
    )


@reference_app.command("list")
def reference_list(
    line: str | None = typer.Option(None, help="Only this line"),
    include_removed: bool = typer.Option(False, "--include-removed", help="Also removed ones"),
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Reference parts: id, inspection, line, verified label, by whom, removed."""
    with _reference_session(data_dir, database_url) as (session, service):
        parts = service.list_references(session, line_id=line, include_removed=include_removed)
        for p in parts:
            removed = f"\tremoved {p.removed_at:%Y-%m-%d} by {p.removed_by}" if p.removed_at else ""
            typer.echo(
                f"{p.id}\t{p.inspection_id}\t{p.line_id}\t{p.label}\t{p.created_by}{removed}"
            )


@reference_app.command("remove")
def reference_remove(
    reference: int = typer.Argument(..., help="Reference part id (from `reference list`)"),
    reason: str = typer.Option(..., help="Why (the audit trail)"),
    act_as: str | None = ACT_AS_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Stop serving a reference part; the answers already given still count."""
    with _reference_session(data_dir, database_url) as (session, service):
        service.remove_reference(
            session, reference, reason=reason, actor=_acting_supervisor(session, act_as)
        )
    typer.echo(f"reference part {reference} removed")


@reference_app.command("rate")
def reference_rate(
    line: str = typer.Argument(..., help="Line id"),
    rate: float = typer.Argument(..., help="Chance a claim serves a reference part, 0 to 0.5"),
    reason: str = typer.Option(..., help="Why (the audit trail)"),
    act_as: str | None = ACT_AS_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Set how often a line's claims serve a reference part in place of the next task."""
    with _reference_session(data_dir, database_url) as (session, service):
        changed = service.set_reference_settings(
            session,
            line,
            reference_rate=rate,
            reason=reason,
            actor=_acting_supervisor(session, act_as),
        )
    typer.echo(f"{changed.id}: reference_rate {changed.reference_rate:g}")


@reference_app.command("gate")
def reference_gate(
    line: str = typer.Argument(..., help="Line id"),
    exclude_flagged: bool = typer.Option(
        ...,
        "--exclude-flagged/--include-flagged",
        help="Leave flagged inspectors' labels out of the line's evidence gate, or count them",
    ),
    reason: str = typer.Option(..., help="Why (the audit trail)"),
    act_as: str | None = ACT_AS_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Whether the line's evidence gate counts the labels of flagged inspectors."""
    with _reference_session(data_dir, database_url) as (session, service):
        changed = service.set_reference_settings(
            session,
            line,
            gate_excludes_flagged=exclude_flagged,
            reason=reason,
            actor=_acting_supervisor(session, act_as),
        )
    words = "leaves out" if changed.gate_excludes_flagged else "counts"
    typer.echo(f"{changed.id}: the evidence gate {words} flagged inspectors' labels")


@reference_app.command("accuracy")
def reference_accuracy(
    data_dir: Path | None = DATA_DIR_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Each inspector's accuracy on reference parts with its 95% interval."""
    with _reference_session(data_dir, database_url) as (session, service):
        flagged = set(service.flagged_users(session).values())
        for f in service.inspector_accuracies(session):
            b = f.binary
            mark = "\tFLAGGED" if f.inspector in flagged else ""
            typer.echo(
                f"{f.inspector}\t{b.count}/{b.n}\t{100 * (b.rate or 0):.1f}% "
                f"[{100 * b.lower:.1f}%-{100 * b.upper:.1f}%]{mark}"
            )


if __name__ == "__main__":
    app()
