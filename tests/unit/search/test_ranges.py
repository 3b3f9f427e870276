"""FHIR implicit precision: dates and numbers as half-open ranges (search.html#date, search.html#number)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_server.search.ranges import date_range, days_from_civil, number_range, number_range_of
from resources.jsonio import FhirDecimal, loads

US = 1_000_000


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _us(*args: int) -> int:
    """Epoch microseconds of a UTC datetime, by exact integer arithmetic (timestamp() is a float)."""
    return (datetime(*args, tzinfo=timezone.utc) - _EPOCH) // timedelta(microseconds=1)  # type: ignore[misc]


# ---- dates ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "lo", "hi"), [
    ("2021", _us(2021, 1, 1), _us(2022, 1, 1)),
    ("2021-02", _us(2021, 2, 1), _us(2021, 3, 1)),
    ("2020-02", _us(2020, 2, 1), _us(2020, 3, 1)),
    ("2021-12", _us(2021, 12, 1), _us(2022, 1, 1)),
    ("2021-03-04", _us(2021, 3, 4), _us(2021, 3, 5)),
    ("2021-03-04T10:20", _us(2021, 3, 4, 10, 20), _us(2021, 3, 4, 10, 21)),
    ("2021-03-04T10:20:30", _us(2021, 3, 4, 10, 20, 30), _us(2021, 3, 4, 10, 20, 31)),
    ("2021-03-04T10:20:30Z", _us(2021, 3, 4, 10, 20, 30), _us(2021, 3, 4, 10, 20, 31)),
    ("2021-03-04T10:20:30.5Z", _us(2021, 3, 4, 10, 20, 30) + 500_000, _us(2021, 3, 4, 10, 20, 30) + 600_000),
    ("2021-03-04T10:20:30.123Z", _us(2021, 3, 4, 10, 20, 30) + 123_000, _us(2021, 3, 4, 10, 20, 30) + 124_000),
    ("2021-03-04T10:20:30.123456Z", _us(2021, 3, 4, 10, 20, 30) + 123_456, _us(2021, 3, 4, 10, 20, 30) + 123_457),
    # finer than a microsecond: one microsecond wide, still containing the instant
    ("2021-03-04T10:20:30.1234567Z", _us(2021, 3, 4, 10, 20, 30) + 123_456, _us(2021, 3, 4, 10, 20, 30) + 123_457),
    ("2021-03-04T10:20:30+01:00", _us(2021, 3, 4, 9, 20, 30), _us(2021, 3, 4, 9, 20, 31)),
    ("2021-03-04T00:20:30+05:30", _us(2021, 3, 3, 18, 50, 30), _us(2021, 3, 3, 18, 50, 31)),
    ("2021-03-04T23:20:30-03:00", _us(2021, 3, 5, 2, 20, 30), _us(2021, 3, 5, 2, 20, 31)),
    ("2021-03-04T10:20:30-00:00", _us(2021, 3, 4, 10, 20, 30), _us(2021, 3, 4, 10, 20, 31)),
    ("1969-12-31", _us(1969, 12, 31), _us(1970, 1, 1)),
    ("1850-06-01", _us(1850, 6, 1), _us(1850, 6, 2)),
    ("2000-02-29", _us(2000, 2, 29), _us(2000, 3, 1)),
    ("0001", _us(1, 1, 1), _us(2, 1, 1)),
    ("9999-12-31T23:59:59Z", _us(9999, 12, 31, 23, 59, 59), _us(9999, 12, 31, 23, 59, 59) + US),
])
def test_date_range(text: str, lo: int, hi: int) -> None:
    assert date_range(text) == (lo, hi)


@pytest.mark.parametrize("text", [
    "", "21", "2021-2", "2021-02-3", "2021-13", "2021-00", "2021-02-29", "1900-02-29", "2021-04-31", "2021-01-00",
    "2021-01-01T24:00:00Z", "2021-01-01T23:60", "2021-01-01T23:59:60Z", "2021-01-01T10", "2021-01-01T10:00:00+15:00",
    "2021-01-01T10:00:00+01:60", "2021-01-01T10:00:00.Z", "2021-01-01Z", "2021-01-01 10:00", "0000", "now",
    " 2021", "2021-01-01T10:00:00+0100", "٢٠٢١",
])
def test_date_range_invalid(text: str) -> None:
    assert date_range(text) is None


def test_month_lengths_and_leap_years() -> None:
    lo, hi = date_range("2024-02")  # type: ignore[misc]
    assert (hi - lo) == 29 * 86_400 * US
    lo, hi = date_range("2100-02")  # type: ignore[misc]
    assert (hi - lo) == 28 * 86_400 * US
    lo, hi = date_range("2024")  # type: ignore[misc]
    assert (hi - lo) == 366 * 86_400 * US


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
def test_agrees_with_datetime(moment: datetime) -> None:
    assert days_from_civil(moment.year, moment.month, moment.day) == (moment.date() - date(1970, 1, 1)).days
    text = f"{moment.year:04d}" + moment.strftime("-%m-%dT%H:%M:%S") + f".{moment.microsecond:06d}Z"
    lo = (moment.replace(tzinfo=timezone.utc) - _EPOCH) // timedelta(microseconds=1)
    assert date_range(text) == (lo, lo + 1)


@given(st.dates(min_value=date(1, 1, 1), max_value=date(9998, 12, 31)))
def test_precisions_nest(day: date) -> None:
    text = f"{day.year:04d}-{day.month:02d}-{day.day:02d}"
    year, month, whole_day = date_range(text[:4]), date_range(text[:7]), date_range(text)
    assert year is not None and month is not None and whole_day is not None
    assert year[0] <= month[0] <= whole_day[0] < whole_day[1] <= month[1] <= year[1]


# ---- numbers --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("100", (100.0, 99.5, 100.5)),
    ("100.00", (100.0, 99.995, 100.005)),
    ("1e2", (100.0, 50.0, 150.0)),  # precision of the mantissa: one significant figure
    ("1.00e2", (100.0, 99.5, 100.5)),
    ("1.0E+2", (100.0, 95.0, 105.0)),
    ("0.1", (0.1, 0.05, 0.15)),
    ("-5", (-5.0, -5.5, -4.5)),
    ("+5", (5.0, 4.5, 5.5)),
    ("0", (0.0, -0.5, 0.5)),
    ("2.0", (2.0, 1.95, 2.05)),
    ("5.4e-3", (0.0054, 0.00535, 0.00545)),
])
def test_number_range(text: str, expected: tuple[float, float, float]) -> None:
    assert number_range(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "1,5", "1.", ".5", "1e", "NaN", "Infinity", "1 0", "0x10", "1_000"])
def test_number_range_invalid(text: str) -> None:
    assert number_range(text) is None


def test_number_range_of_stored_values() -> None:
    assert number_range_of(72) == (72.0, 71.5, 72.5)
    assert number_range_of(Decimal("72.50")) == (72.5, 72.495, 72.505)
    # the JSON reader keeps the written precision
    value = loads('{"v": 1.20E+3}')["v"]
    assert isinstance(value, FhirDecimal)
    assert number_range_of(value) == (1200.0, 1195.0, 1205.0)
    assert number_range_of(loads('{"v": 0.000}')["v"]) == (0.0, -0.0005, 0.0005)
    with pytest.raises(ValueError):
        number_range_of(Decimal("NaN"))
    with pytest.raises(TypeError):
        number_range_of(True)


@given(st.integers(0, 6).flatmap(lambda places: st.decimals(
    min_value=-10**9, max_value=10**9, allow_nan=False, allow_infinity=False, places=places)))
def test_query_and_stored_numbers_agree(value: Decimal) -> None:
    """The binder parses query text and extraction reads stored decimals: the same text means the same range."""
    text = str(value)
    assert number_range(text) == number_range_of(Decimal(text))
    v, lo, hi = number_range_of(Decimal(text))
    assert lo <= v <= hi and lo < hi
