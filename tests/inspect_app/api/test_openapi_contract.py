"""The OpenAPI schema is the contract: schemathesis generates requests from it (valid and
invalid), sends them to the app built by `create_app`, and runs its default checks on every
answer: no 5xx, only declared statuses, bodies that match the declared models, requests the
schema allows are accepted and ones it forbids are refused.

It runs the way ``schemathesis run`` does (its engine, all phases but the stateful one), in
process against the ASGI app. Real credentials go with every request (an admin's bearer
token, which every role check lets through, and a camera key of ``line-1``), so the routes
are exercised past their 401; half of the ``{line}`` path values are ``line-1``, so past
their 404 too. Generation is deterministic with no example database: the same cases every
run, offline.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis.engine import Status
from schemathesis.engine.events import NonFatalError, ScenarioFinished
from sqlmodel import Session

from inspect_app.settings import Settings

EXAMPLES_PER_OPERATION = 25
# The token's id is one no generated "revoke token {id}" will guess, so the run keeps it.
ADMIN_TOKEN_ID = 7_340_033


NO_CACHE = {"cache": {"enabled": False}}  # nothing written to a .schemathesis/ folder
# What a request the schema allows may get where a rule needs the server's state.
_STATE_STATUSES = ["2xx", "401", "403", "404", "409", "422"]


def contract_config(token: str, camera_key: str) -> dict[str, Any]:
    return {
        **NO_CACHE,
        "auth": {
            "openapi": {
                "HTTPBearer": {"bearer": token},
                "APIKeyHeader": {"api_key": camera_key},
            }
        },
        "dictionaries": {"lines": {"values": ["line-1"]}},
        "parameters": {"path.line": {"dictionary": "lines", "probability": 0.5}},
        "generation": {
            "max-examples": EXAMPLES_PER_OPERATION,
            "deterministic": True,
            "database": "none",
        },
        # The stateful phase chains calls through links it infers; its order depends on what
        # earlier calls left in the database, which a per-call contract does not need.
        "phases": {"stateful": {"enabled": False}},
        "operations": [
            {
                # Random bytes are not an image: refusing them (415/422) is right, and tested
                # with real images in test_images.py and test_bad_input.py.
                "include-path": "/api/v1/lines/{line}/images",
                "include-method": "POST",
                "checks": {"positive_data_acceptance": {"enabled": False}},
            },
            {
                # `until` must be after `since`: a rule across two parameters, which a schema
                # cannot state; the route declares its 422 for it.
                "include-path": "/api/v1/lines/{line}/agreement",
                "include-method": "GET",
                "checks": {
                    "positive_data_acceptance": {
                        "expected-statuses": ["2xx", "401", "403", "404", "409", "422"]
                    }
                },
            },
            {
                # The checkpoint is a file on the server's disk: whether a path names one the
                # service can serve is the loader's to say (422 with its reason), not a schema's.
                "include-path": "/api/v1/models",
                "include-method": "POST",
                "checks": {"positive_data_acceptance": {"expected-statuses": _STATE_STATUSES}},
            },
            {
                # A deployment change depends on the registry (is the candidate registered?)
                # and on the line's rollout as it stands (is there a candidate to promote?):
                # a request the schema allows may still be one the line cannot take now (422).
                "include-path": "/api/v1/lines/{line}/deployment",
                "include-method": "PUT",
                "checks": {"positive_data_acceptance": {"expected-statuses": _STATE_STATUSES}},
            },
            {
                "include-path-regex": r"^/api/v1/lines/\{line\}/deployment/",
                "include-method": "POST",
                "checks": {"positive_data_acceptance": {"expected-statuses": _STATE_STATUSES}},
            },
        ],
    }


@pytest.fixture(scope="module")
def contract_app(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Iterator:
    """One app for the module (as conftest's `app_settings`, on a module-wide data dir). Its
    lifespan is run by schemathesis's ASGI transport, which keeps it until it is shut down."""
    from schemathesis.python.asgi import shutdown_lifespans

    from inspect_app.api.app import create_app

    settings = Settings(
        data_dir=tmp_path_factory.mktemp("contract") / "service",
        database_url=None,
        weights=tiny_checkpoint,
        batch_max_wait_ms=2.0,
        cameras=[],
        demo=False,
    )
    yield create_app(settings)
    shutdown_lifespans()


def _seed(app: FastAPI) -> tuple[str, str]:
    """A line, its camera key and an admin's token: what the generated requests meet."""
    from inspect_app.accounts import TOKEN_PREFIX, add_camera_key, add_user
    from inspect_app.lines import add_line
    from inspect_app.security import hash_secret, new_secret
    from inspect_app.storage.tables import ApiToken

    with Session(app.state.engine, expire_on_commit=False) as db:
        add_line(db, "line-1", "shadow")
        camera_key = add_camera_key(db, "line-1")
        admin = add_user(db, f"contract-admin-{uuid.uuid4().hex[:8]}", "admin", "a long password")
        assert admin.id is not None
        token = new_secret(TOKEN_PREFIX)
        db.add(ApiToken(id=ADMIN_TOKEN_ID, user_id=admin.id, token_hash=hash_secret(token)))
        db.commit()
    return token, camera_key


def _report(event: ScenarioFinished) -> Iterator[str]:
    for checks in event.recorder.checks.values():
        for check in checks:
            if check.status == Status.FAILURE and check.failure_info is not None:
                failure = check.failure_info.failure
                message = failure.message.strip().replace("\n", " | ")[:400]
                yield (
                    f"{event.label} [{event.phase.value}] {check.name}: {failure.title}: "
                    f"{message}\n    {check.failure_info.code_sample[:600]}"
                )


def test_every_operation_keeps_its_schema(contract_app: FastAPI) -> None:
    # Loading the schema starts the app (its lifespan), so the database is there to seed.
    schemathesis.openapi.from_asgi(
        "/openapi.json", contract_app, config=schemathesis.Config.from_dict(NO_CACHE)
    )
    token, camera_key = _seed(contract_app)
    config = schemathesis.Config.from_dict(contract_config(token, camera_key))
    schema = schemathesis.openapi.from_asgi("/openapi.json", contract_app, config=config)

    failures: list[str] = []
    operations = set()
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, ScenarioFinished) and event.label:
            operations.add(event.label)
            failures.extend(_report(event))
        elif isinstance(event, NonFatalError):
            failures.append(f"{event.label}: error: {event.value!r}"[:600])
    assert len(operations) >= 25, sorted(operations)
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(sorted(set(failures)))
