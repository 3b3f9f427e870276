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


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number")


_decoder = json.JSONDecoder(parse_float=Decimal, parse_constant=_reject_constant)


def loads(data: bytes | str) -> Any:
    """Parse JSON keeping decimal precision. Raises ValueError on malformed input."""
    return _decoder.decode(data.decode("utf-8") if isinstance(data, bytes) else data)


def dumps_default(obj: Any) -> Any:
    """orjson ``default`` hook: decimals verbatim."""
    if isinstance(obj, Decimal):
        return orjson.Fragment(str(obj))
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def dumps(obj: Any, *, pretty: bool = False) -> bytes:
    return orjson.dumps(obj, default=dumps_default, option=orjson.OPT_INDENT_2 if pretty else 0)
