"""Typed search values, shared by the write side (extraction into the index) and the read side (query values).

One family per SearchParameter type. Ranges are half-open ``[lo, hi)``: a FHIR date, number or quantity has an
implicit precision (``2020-01`` is all of January, ``100`` is ``[99.5, 100.5)``), and both what is stored and what
is asked for are ranges. Dates are epoch microseconds (UTC; times without a zone are taken as UTC); numbers are
floats in the index (both SQLite and the in-memory matcher compare the same floats, so they agree at the edges).

Strings are normalised once, here, for both sides: case-folded, accents removed, whitespace collapsed.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Union

DATE_MIN = -(2**62)  # open start of a Period
DATE_MAX = 2**62  # open end of a Period


def normalize(text: str) -> str:
    """Case- and accent-insensitive form of a string (the spec's default string matching)."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())


@dataclass(frozen=True, slots=True)
class StringV:
    norm: str  # normalize(exact)
    exact: str


@dataclass(frozen=True, slots=True)
class TokenV:
    system: str | None  # None: the value has no system
    code: str | None  # None: no code (a CodeableConcept with only text)
    text: str | None = None  # normalised display/text, for :text


@dataclass(frozen=True, slots=True)
class ReferenceV:
    target_type: str | None  # literal reference type, e.g. "Patient" (None for a URL we cannot type)
    target_id: str | None
    url: str | None = None  # absolute or canonical URL as written, version stripped
    ident_system: str | None = None  # Reference.identifier, for :identifier
    ident_value: str | None = None


@dataclass(frozen=True, slots=True)
class DateV:
    lo: int  # epoch µs, inclusive
    hi: int  # epoch µs, exclusive


@dataclass(frozen=True, slots=True)
class NumberV:
    value: float
    lo: float
    hi: float


@dataclass(frozen=True, slots=True)
class QuantityV:
    value: float
    lo: float
    hi: float
    system: str | None
    code: str | None
    unit: str | None = None
    # the same quantity in UCUM canonical units (e.g. mg → g), when the unit is UCUM and convertible
    canon_value: float | None = None
    canon_lo: float | None = None
    canon_hi: float | None = None
    canon_code: str | None = None


@dataclass(frozen=True, slots=True)
class UriV:
    uri: str


@dataclass(frozen=True, slots=True)
class CompositeV:
    parts: tuple[Value, ...]  # one per component, in the SearchParameter's component order


Value = Union[StringV, TokenV, ReferenceV, DateV, NumberV, QuantityV, UriV, CompositeV]

FAMILY_OF_TYPE = {
    "string": StringV,
    "token": TokenV,
    "reference": ReferenceV,
    "date": DateV,
    "number": NumberV,
    "quantity": QuantityV,
    "uri": UriV,
    "composite": CompositeV,
}
