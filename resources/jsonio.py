"""FHIR JSON in and out, losslessly.

FHIR forbids changing a decimal's precision (``72.50`` must stay ``72.50``), so JSON numbers with a fraction or an
exponent are parsed as :class:`decimal.Decimal` and written back verbatim; integers stay ``int``. Output goes through
orjson (``Decimal`` becomes a pre-serialised fragment), which keeps writes and re-serialisation cheap.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson


class FhirDecimal(Decimal):
    """A decimal that remembers the exact text it was read from (``1E-7`` stays ``0.0000001``)."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> FhirDecimal:
        self = super().__new__(cls, text)
        self.text = text
        return self

    def __reduce__(self) -> tuple[type[FhirDecimal], tuple[str]]:
        # Decimal's own reduce rebuilds from str(self), which may differ from the text read (0.0000001 → 1E-7)
        return FhirDecimal, (self.text,)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number")


def parse_int(text: str) -> int | FhirDecimal:
    # beyond 64 bits orjson cannot write an int back; such a number can only be a decimal in FHIR: keep its text
    return int(text) if len(text) < 19 else FhirDecimal(text)


_decoder = json.JSONDecoder(parse_float=FhirDecimal, parse_int=parse_int, parse_constant=_reject_constant)


def loads(data: bytes | str) -> Any:
    """Parse JSON keeping decimal precision. Raises ValueError on malformed input."""
    return _decoder.decode(data.decode("utf-8") if isinstance(data, bytes) else data)


def dumps_default(obj: Any) -> Any:
    """orjson ``default`` hook: decimals verbatim."""
    if isinstance(obj, Decimal):
        return orjson.Fragment(obj.text if isinstance(obj, FhirDecimal) else decimal_text(obj))
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def decimal_text(value: Decimal) -> str:
    """JSON text of a decimal made in code: positional notation, precision kept (``Decimal('1E-7')`` → 0.0000001)."""
    text = format(value, "f")
    return text


def dumps(obj: Any, *, pretty: bool = False) -> bytes:
    return orjson.dumps(obj, default=dumps_default, option=orjson.OPT_INDENT_2 if pretty else 0)
