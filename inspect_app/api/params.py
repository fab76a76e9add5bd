"""What the API accepts, checked where a value enters: ids, names, free text and times.

Every bound here is also in the OpenAPI schema, so a client (or schemathesis) can tell from
the schema alone which requests the server will take. The numbers are the service's own
limits, not the database's: an id beyond 2^63 - 1 would reach the driver as an integer it
cannot bind, a text with a NUL character is one PostgreSQL refuses to store, and a time
outside the calendar's middle overflows when it is turned into UTC.

The review UI enforces the same text limits in its handlers (`review_ui`), with these
constants.
"""

from __future__ import annotations

import contextlib
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import AfterValidator, BeforeValidator, PlainValidator, WithJsonSchema

from inspect_app.domain import NEVER
from inspect_app.timeutil import as_utc

DB_ID_MAX = 2**63 - 1  # BIGINT; the tables' integer ids never exceed it

# Free text that goes into the audit trail or onto a label.
MAX_REASON_CHARS = 500  # an automation change's reason; the Lines page caps its box at this
MAX_NOTE_CHARS = 2000  # a label's or an escalation's note
MAX_PASSWORD_CHARS = 1024  # scrypt is paid per byte: a 20 MB password is a denial of service
MAX_TAG_CHARS = 128  # capture ids, part serials, model versions, event kinds

# As `inspect_app.lines.add_line` and `inspect_app.accounts.add_user` check them (a test pins
# the two copies together): a name that cannot exist is refused before any query.
LINE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
USER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
# No NUL: PostgreSQL cannot store it in a text column. Other characters are the writer's own.
TEXT_PATTERN = r"^[^\x00]*$"
# ... and at least one character that is not white space (a reason must say something).
REQUIRED_TEXT_PATTERN = r"^[^\x00]*[^\s\x00][^\x00]*$"

# Times the service takes from a client: written with a year from 1970 to 2999, so that any
# offset still converts to UTC (year 1 at +01:00 is before the calendar starts) and no clock
# that is decades off slips into the records.
FIRST_YEAR, LAST_YEAR = 1970, 2999
DATE_TIME_YEAR_PATTERN = r"^(19[7-9][0-9]|2[0-9]{3})-"
_DATE_TIME_FORM = re.compile(
    r"(?P<year>\d{4})-\d\d-\d\d[Tt ]\d\d:\d\d(:\d\d(\.\d+)?)?([Zz]|[+-]\d\d(:?\d\d)?)?"
)
DATE_TIME_EXAMPLE = "2024-05-01T12:30:00Z"


class TimeOutOfRange(ValueError):
    """A time that is not written as an ISO 8601 date-time of a year the service takes."""


def check_time_text(value: str, name: str) -> str:
    """`value` as given, if it is an ISO 8601 date-time with a year in range; else raise."""
    match = _DATE_TIME_FORM.fullmatch(value)
    if match is None:
        raise TimeOutOfRange(
            f"{name} {value[:64]!r} is not an ISO 8601 date-time (for example {DATE_TIME_EXAMPLE})"
        )
    if not FIRST_YEAR <= int(match["year"]) <= LAST_YEAR:
        raise TimeOutOfRange(
            f"{name} {value[:64]!r} is out of range: the year must be from {FIRST_YEAR} "
            f"to {LAST_YEAR}"
        )
    return value


def parse_client_time(value: str, name: str) -> datetime:
    """A time typed by a person (CLI option, UI box) as the API takes it: ISO 8601, a year in
    range, naive meaning UTC. Raises TimeOutOfRange (a ValueError) naming `name`."""
    text = check_time_text(value.strip(), name)
    try:
        return _in_utc(datetime.fromisoformat(text))
    except ValueError as exc:  # the form matched but the date does not exist (Feb 30)
        raise TimeOutOfRange(f"{name} {value[:64]!r}: {exc}") from exc


def _written_form(value: Any) -> Any:
    # Before pydantic parses: it would also take a Unix timestamp ("0") or a bare date.
    if isinstance(value, str):
        return check_time_text(value.strip(), "the time")
    if isinstance(value, datetime):
        return value
    raise TimeOutOfRange(f"expected an ISO 8601 date-time such as {DATE_TIME_EXAMPLE}")


def _in_utc(value: datetime) -> datetime:
    utc = as_utc(value)
    assert utc is not None  # a year in range converts without overflow
    return utc


# An aware UTC time from a query or a body; naive means UTC, as the API documents.
ClientTime = Annotated[datetime, BeforeValidator(_written_form), AfterValidator(_in_utc)]
_TIME_SCHEMA = {"pattern": DATE_TIME_YEAR_PATTERN, "examples": [DATE_TIME_EXAMPLE]}


def time_query(description: str) -> Any:
    """An optional `ClientTime` query parameter; the schema carries the year bound."""
    return Query(default=None, description=description, json_schema_extra=_TIME_SCHEMA)


# Path parameters, one alias each, used by every route that takes one.
RowId = Annotated[int, Path(ge=1, le=DB_ID_MAX, description="a row id (1 to 2^63 - 1)")]
LineIdPath = Annotated[str, Path(pattern=LINE_ID_PATTERN, description="a line id")]


# A partial-automation threshold as a client writes it: a number in (0.5, 1], or "never"
# (that side of partial automation is off: e.g. never auto-pass, only auto-fail when
# confident; `inspect_app.domain.NEVER`). The API writes thresholds back the same way. In a
# JSON body the number must be a JSON number; in a query string it is text. One validator
# rather than a union, so a refusal names the field and says both forms.
THRESHOLD_DESCRIPTION = (
    'a number in (0.5, 1], or "never": at partial that side is never automated and its parts '
    "go to a human"
)
_THRESHOLD_SCHEMA = {
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0.5, "maximum": 1.0},
        {"type": "string", "const": NEVER},
    ]
}


def _threshold(value: Any, *, from_text: bool) -> float | str:
    if value == NEVER:
        return NEVER
    if from_text and isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.5 < value <= 1.0:
        raise ValueError(f'must be a number in (0.5, 1] or "{NEVER}"')
    return float(value)


ThresholdIn = Annotated[
    float | Literal["never"],
    PlainValidator(lambda value: _threshold(value, from_text=False)),
    WithJsonSchema(_THRESHOLD_SCHEMA),
]
ThresholdQuery = Annotated[
    float | Literal["never"],
    PlainValidator(lambda value: _threshold(value, from_text=True)),
    WithJsonSchema(_THRESHOLD_SCHEMA),
]


def _whole_number(value: Any) -> Any:
    """JSON Schema's integer is any whole number, so 260.0 is one; true and "12" are not."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be a whole number")
        return int(value)
    return value


# An integer in a JSON body as the schema means it: 260 or 260.0, never true or "260".
JsonInt = Annotated[int, BeforeValidator(_whole_number)]
