"""UTCDate formatting of POSIX timestamps (CORE-TYPE-03): the fast path every Email's
``receivedAt`` takes gives what formatting a ``datetime`` gives."""

from __future__ import annotations

import datetime as dt

import pytest

from imapjmap.jmap.wire import utc_date, utc_date_of_timestamp

CASES = [
    (0, "1970-01-01T00:00:00Z"),
    (0.999, "1970-01-01T00:00:00Z"),
    (1_700_000_000.7, "2023-11-14T22:13:20Z"),
    (-0.5, "1969-12-31T23:59:59Z"),  # rounded down, as datetime drops the fraction
    (-86_400 * 365, "1969-01-01T00:00:00Z"),
    (951_782_400, "2000-02-29T00:00:00Z"),
    (2**31, "2038-01-19T03:14:08Z"),
    (253_402_300_799, "9999-12-31T23:59:59Z"),
    (-62_135_596_795, "0001-01-01T00:00:05Z"),  # four digits, which strftime does not pad
]


@pytest.mark.parametrize(("seconds", "expected"), CASES)
def test_core_type_03_utc_date_of_timestamp(seconds: float, expected: str) -> None:
    assert utc_date_of_timestamp(seconds) == expected


# the last case is the year below 1000, which datetime.strftime does not pad
@pytest.mark.parametrize("seconds", [seconds for seconds, _ in CASES[:-1]])
def test_core_type_03_same_as_formatting_a_datetime(seconds: float) -> None:
    as_datetime = utc_date(dt.datetime.fromtimestamp(seconds, dt.UTC))
    assert utc_date_of_timestamp(seconds) == as_datetime
