"""FHIR date, dateTime and instant values as half-open UTC ranges ``[lo, hi)`` of stored instant text.

Stored ``lastUpdated`` values are fixed-width UTC instants (``2026-01-02T03:04:05.678Z``), so text comparison is time
comparison. A value is a range because FHIR dates have a precision: ``2026-01`` is the whole of January.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_DATE = re.compile(
    r"(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)


def _fmt(dt: datetime) -> str:
    dt = dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_range(value: str) -> tuple[str, str] | None:
    """``[lo, hi)`` for a FHIR date/dateTime/instant, or None when the text is not one. Times without a zone are
    taken as UTC."""
    m = _DATE.fullmatch(value.strip())
    if not m:
        return None
    g = m.groupdict()
    tz = timezone.utc
    if g["tz"] and g["tz"] != "Z":
        sign = 1 if g["tz"][0] == "+" else -1
        hh, mm = int(g["tz"][1:3]), int(g["tz"][4:6])
        tz = timezone(sign * timedelta(hours=hh, minutes=mm))
    try:
        year = int(g["y"])
        if g["m"] is None:
            lo = datetime(year, 1, 1, tzinfo=tz)
            hi = datetime(year + 1, 1, 1, tzinfo=tz)
        elif g["d"] is None:
            month = int(g["m"])
            lo = datetime(year, month, 1, tzinfo=tz)
            hi = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=tz)
        elif g["H"] is None:
            lo = datetime(year, int(g["m"]), int(g["d"]), tzinfo=tz)
            hi = lo + timedelta(days=1)
        else:
            lo = datetime(year, int(g["m"]), int(g["d"]), int(g["H"]), int(g["M"]), int(g["S"] or 0), tzinfo=tz)
            if g["f"]:
                digits = g["f"][:6]
                lo = lo.replace(microsecond=int(digits.ljust(6, "0")))
                hi = lo + timedelta(microseconds=10 ** (6 - len(digits)))
            elif g["S"] is not None:
                hi = lo + timedelta(seconds=1)
            else:
                hi = lo + timedelta(minutes=1)
    except ValueError:
        return None
    return _fmt(lo), _fmt(hi)
