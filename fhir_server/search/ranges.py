"""FHIR values with their implicit precision, as half-open ranges ``[lo, hi)``.

Shared by extraction (what is stored) and the query binder (what is asked for), so both sides agree on what a
value *means*: ``2021-03`` is all of March 2021, ``100`` is ``[99.5, 100.5)`` and ``100.00`` is
``[99.995, 100.005)`` (search.html#date, search.html#number).

Dates become epoch microseconds in UTC; a time without a zone is taken as UTC (the server has no other local time
it could honestly claim). Numbers become floats because the index (SQLite REAL) and the in-memory matcher compare
floats; the precision arithmetic itself is done in :class:`decimal.Decimal` so ``0.1`` precision is exact before
the single rounding to float.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

__all__ = ["date_range", "number_range", "number_range_of", "days_from_civil"]

_US_PER_SECOND = 1_000_000
_US_PER_DAY = 86_400 * _US_PER_SECOND

# FHIR date/dateTime/instant, plus the search forms that stop at hours:minutes. Components are fixed-width so the
# regex alone rejects "2021-1-5"; value ranges (month 13, Feb 30, hour 24) are checked in code. [0-9], not \d,
# which would accept other scripts' digits.
_DATE = re.compile(
    r"([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2})"
    r"(?:T([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]+))?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?)?)?"
)
_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _days_in_month(year: int, month: int) -> int:
    return 29 if month == 2 and _is_leap(year) else _MONTH_DAYS[month - 1]


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (integer arithmetic: no datetime objects on the hot
    path, and no 1..9999 limits to trip over in the middle of an index write)."""
    y = year - (month <= 2)
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    mp = (month + 9) % 12
    doy = (153 * mp + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def date_range(text: str) -> tuple[int, int] | None:
    """``[lo, hi)`` in epoch microseconds (UTC) for a FHIR date, dateTime or instant; None if ``text`` is not one.

    The width is the written precision: a year, a month, a day, a minute, a second, or ``10**-n`` seconds for ``n``
    fractional digits (finer than a microsecond counts as one microsecond). Impossible dates (``2021-02-29``,
    ``2021-13``) and times (``24:00``) are None, not silently normalised.
    """
    m = _DATE.fullmatch(text)
    if m is None:
        return None
    ys, mos, ds, hs, mis, ss, fs, tz = m.groups()
    year = int(ys)
    if year == 0:  # FHIR years start at 0001
        return None
    if mos is None:
        lo_days = days_from_civil(year, 1, 1)
        return lo_days * _US_PER_DAY, days_from_civil(year + 1, 1, 1) * _US_PER_DAY
    month = int(mos)
    if not 1 <= month <= 12:
        return None
    if ds is None:
        lo_days = days_from_civil(year, month, 1)
        return lo_days * _US_PER_DAY, (lo_days + _days_in_month(year, month)) * _US_PER_DAY
    day = int(ds)
    if not 1 <= day <= _days_in_month(year, month):
        return None
    days = days_from_civil(year, month, day)
    if hs is None:
        return days * _US_PER_DAY, (days + 1) * _US_PER_DAY
    hour, minute = int(hs), int(mis)
    second = int(ss) if ss is not None else 0
    if hour > 23 or minute > 59 or second > 59:  # no 24:00, no leap seconds (FHIR's regex forbids both)
        return None
    offset_s = 0
    if tz is not None and tz != "Z":
        tzh, tzm = int(tz[1:3]), int(tz[4:6])
        if tzh > 14 or tzm > 59:
            return None
        offset_s = (tzh * 3600 + tzm * 60) * (1 if tz[0] == "+" else -1)
    lo = (days * 86_400 + hour * 3600 + minute * 60 + second - offset_s) * _US_PER_SECOND
    if fs is not None:
        digits = fs[:6]
        lo += int(digits) * 10 ** (6 - len(digits))
        width = 10 ** (6 - len(digits))
    elif ss is not None:
        width = _US_PER_SECOND
    else:
        width = 60 * _US_PER_SECOND
    return lo, lo + width


# JSON-number syntax (what FHIR decimals are), plus a leading "+" that search URLs sometimes carry.
_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def _range_of_decimal(d: Decimal) -> tuple[float, float, float]:
    exponent = d.as_tuple().exponent
    assert isinstance(exponent, int)  # finite by construction
    # half a unit in the last written place; Decimal keeps "100.00" at exponent -2 and "1e2" at exponent 2,
    # so an exponent form gets the precision of its mantissa
    half = Decimal(5).scaleb(exponent - 1)
    return float(d), float(d - half), float(d + half)


def number_range(text: str) -> tuple[float, float, float] | None:
    """``(value, lo, hi)`` for decimal text with its implicit precision (search.html#number).

    ``"100"`` → (100, 99.5, 100.5); ``"100.00"`` → (100, 99.995, 100.005); ``"1e2"`` → (100, 50, 150): the
    precision of an exponent form is that of its mantissa, here one significant figure. None for anything that
    is not a finite decimal.
    """
    if _NUMBER.fullmatch(text) is None:
        return None
    try:
        d = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the regex admits only valid literals
        return None
    return _range_of_decimal(d)


def number_range_of(value: Decimal | int | float) -> tuple[float, float, float]:
    """``(value, lo, hi)`` of a stored number. Decimals carry their written precision in their exponent (the JSON
    reader keeps ``72.50`` as ``Decimal('72.50')``); integers are exact to the unit, so ``±0.5``."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"not a finite number: {value}")
        return _range_of_decimal(value)
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    if isinstance(value, int):
        if abs(value) > 2**53:  # beyond exact floats (and float() of a huge int raises): take the decimal route
            return _range_of_decimal(Decimal(value))
        return float(value), value - 0.5, value + 0.5
    # a float made in code has no written precision; its shortest repr is the best guess
    return _range_of_decimal(Decimal(repr(float(value))))
