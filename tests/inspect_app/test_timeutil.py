"""Every time becomes aware UTC: naive ones were written as UTC, aware ones are converted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from inspect_app.timeutil import as_utc


def test_a_naive_time_is_taken_as_utc() -> None:
    assert as_utc(datetime(2025, 3, 4, 5, 6, 7)) == datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)


def test_an_aware_time_is_the_same_instant_in_utc() -> None:
    plant = timezone(timedelta(hours=2))
    result = as_utc(datetime(2025, 3, 4, 8, 0, tzinfo=plant))
    assert result == datetime(2025, 3, 4, 6, 0, tzinfo=UTC)
    assert result is not None and result.utcoffset() == timedelta(0)


def test_no_time_stays_none() -> None:
    assert as_utc(None) is None
