"""A compact UCUM canonicaliser: enough of the Unified Code for Units of Measure for quantity search.

FHIR quantity search must compare across units (search.html#quantity: ``1000 mg`` equals ``1 g``). Both the stored
quantity and the query are converted to *canonical* units — a product of base units with integer exponents — and
compared there. No maintained UCUM library exists for Python, so this module parses UCUM expressions itself:

* terms built with ``.`` and ``/`` (left to right, equal precedence, as UCUM says: ``mg/kg.h`` is ``mg.h/kg``), a
  leading ``/`` (``/min``), parentheses, integer exponents (``m2``, ``s-1``), integer factors, ``10*3``/``10^3``;
* SI prefixes (``Y`` … ``y``, ``da``) on metric atoms, and the binary ``Ki Mi Gi Ti``;
* annotations ``{...}`` count as 1 (``{cells}/uL`` is ``/uL``; ``{score}`` is dimensionless);
* the atoms clinical data uses: mass, volume, length, time (``min h d wk mo a``), amount (``mol``, ``eq``,
  ``osm``; also ``Eq``, the non-UCUM spelling in ``mEq/L``), enzyme units (``U``, ``kat``), pressure (``Pa``,
  ``bar``, ``mm[Hg]``, ``cm[H2O]``, ``atm``), energy, ``%`` and ``[ppm]``-style fractions, customary US units
  (``[lb_av]``, ``[in_i]``, …);
* temperature: ``Cel`` and ``[degF]`` are affine, so they convert to ``K`` only when the whole unit is just that
  one atom (``37 Cel`` → ``310.15 K``); a compound such as ``Cel/h`` is reported as not convertible.

Arbitrary units (``[IU]``, ``[arb'U]``, anything ``[..'U]``) and special units (``[pH]``, ``dB``) have no canonical
form: :func:`canonicalize` answers None and the quantity is searched by its own system and code only.

Base units are UCUM's (``m s g rad K C cd``) plus ``mol``: UCUM defines the mole as a pure number
(6.0221367e23), which would make ``mmol/L`` comparable with ``10*20/L``. Keeping ``mol`` as a base changes no
answer that matters clinically and keeps canonical codes readable (``mol.m-3``).

A canonical code lists the bases with positive exponents, then those with negative ones, each group in a fixed
order: ``mg/dL`` → ``g.m-3`` (factor 10),
``kg/m2`` → ``g.m-2`` (factor 1000), ``10*3/uL`` → ``m-3`` (factor 1e12); a dimensionless unit is ``1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

__all__ = ["UCUM_SYSTEM", "Canonical", "canonical_unit", "canonicalize"]

UCUM_SYSTEM = "http://unitsofmeasure.org"

_BASE_ORDER = ("g", "m", "s", "mol", "K", "C", "cd", "rad")

Dims = tuple[tuple[str, int], ...]  # sorted by _BASE_ORDER, no zero exponents


@dataclass(frozen=True, slots=True)
class Canonical:
    """``1 unit = factor * code`` in canonical base units. ``offset`` is non-zero only for affine temperature
    scales, where ``kelvin = (value + offset) * factor``."""

    factor: Fraction
    code: str
    offset: Fraction = Fraction(0)


class _UnitError(ValueError):
    pass


# ---- the unit table ---------------------------------------------------------------------------------------------
# atom → (factor, dims, metric). A Fraction keeps decimal factors exact (0.0254 m is 127/5000 m), so composing
# atoms (mm[Hg] = 133.322 Pa = 133.322 kg/(m.s2)) introduces no rounding before the one final float conversion.

def _d(**exps: int) -> dict[str, int]:
    return exps


_F = Fraction
_PASCAL = (_F(1000), _d(g=1, m=-1, s=-2))  # kg/(m.s2) with g as the mass base
_JOULE = (_F(1000), _d(g=1, m=2, s=-2))

_ATOMS: dict[str, tuple[Fraction, dict[str, int], bool]] = {
    # base units
    "m": (_F(1), _d(m=1), True),
    "s": (_F(1), _d(s=1), True),
    "g": (_F(1), _d(g=1), True),
    "rad": (_F(1), _d(rad=1), True),
    "K": (_F(1), _d(K=1), True),
    "C": (_F(1), _d(C=1), True),
    "cd": (_F(1), _d(cd=1), True),
    "mol": (_F(1), _d(mol=1), True),
    # dimensionless numbers
    "%": (_F(1, 100), {}, False),
    "[ppth]": (_F(1, 10**3), {}, False),
    "[ppm]": (_F(1, 10**6), {}, False),
    "[ppb]": (_F(1, 10**9), {}, False),
    "[pptr]": (_F(1, 10**12), {}, False),
    "sr": (_F(1), _d(rad=2), True),
    # volume
    "L": (_F(1, 1000), _d(m=3), True),
    "l": (_F(1, 1000), _d(m=3), True),
    "[foz_us]": (_F(473176473, 16 * 10**12), _d(m=3), False),  # 1/16 US pint (0.473176473 L)
    "[pt_us]": (_F(473176473, 10**12), _d(m=3), False),
    "[gal_us]": (_F(3785411784, 10**12), _d(m=3), False),
    # length
    "[in_i]": (_F(254, 10**4), _d(m=1), False),
    "[ft_i]": (_F(3048, 10**4), _d(m=1), False),
    "[yd_i]": (_F(9144, 10**4), _d(m=1), False),
    "[mi_i]": (_F(1609344, 1000), _d(m=1), False),
    "Ao": (_F(1, 10**10), _d(m=1), False),
    # mass
    "[lb_av]": (_F(45359237, 10**5), _d(g=1), False),
    "[oz_av]": (_F(45359237, 16 * 10**5), _d(g=1), False),
    "[gr]": (_F(6479891, 10**8), _d(g=1), False),
    "t": (_F(10**6), _d(g=1), True),
    "u": (_F(16605402, 10**31), _d(g=1), True),  # unified atomic mass unit, 1.6605402e-24 g
    # time
    "min": (_F(60), _d(s=1), False),
    "h": (_F(3600), _d(s=1), False),
    "d": (_F(86400), _d(s=1), False),
    "wk": (_F(7 * 86400), _d(s=1), False),
    "a": (_F(36525 * 864), _d(s=1), False),  # Julian year, 365.25 d
    "a_j": (_F(36525 * 864), _d(s=1), False),
    "a_g": (_F(3652425 * 864, 100), _d(s=1), False),  # Gregorian year, 365.2425 d
    "mo": (_F(36525 * 864, 12), _d(s=1), False),  # mean Julian month, a/12
    "mo_j": (_F(36525 * 864, 12), _d(s=1), False),
    "mo_g": (_F(3652425 * 864, 1200), _d(s=1), False),
    "Hz": (_F(1), _d(s=-1), True),
    # amount of substance (UCUM: eq and osm are each one mole)
    "eq": (_F(1), _d(mol=1), True),
    "Eq": (_F(1), _d(mol=1), True),  # not UCUM (which is case-sensitive), but "mEq/L" is everywhere in lab data
    "osm": (_F(1), _d(mol=1), True),
    "kat": (_F(1), _d(mol=1, s=-1), True),
    "U": (_F(1, 60 * 10**6), _d(mol=1, s=-1), True),  # enzyme unit, umol/min
    # force, pressure, energy, power
    "N": (_F(1000), _d(g=1, m=1, s=-2), True),
    "Pa": (_PASCAL[0], _PASCAL[1], True),
    "bar": (_PASCAL[0] * 10**5, _PASCAL[1], True),
    "atm": (_PASCAL[0] * 101325, _PASCAL[1], False),
    "m[Hg]": (_PASCAL[0] * 133322, _PASCAL[1], True),  # UCUM: 133.3220 kPa
    "m[H2O]": (_PASCAL[0] * _F(980665, 100), _PASCAL[1], True),  # UCUM: 9.80665 kPa
    "[in_i'Hg]": (_PASCAL[0] * 133322 * _F(254, 10**4), _PASCAL[1], False),
    "J": (_JOULE[0], _JOULE[1], True),
    "cal": (_JOULE[0] * _F(4184, 1000), _JOULE[1], True),
    "[Cal]": (_JOULE[0] * 4184, _JOULE[1], False),
    "W": (_JOULE[0], _d(g=1, m=2, s=-3), True),
    # electricity, radiation (occasionally in lab and imaging data)
    "A": (_F(1), _d(C=1, s=-1), True),
    "V": (_F(1000), _d(g=1, m=2, s=-2, C=-1), True),
    "Bq": (_F(1), _d(s=-1), True),
    "Gy": (_F(1), _d(m=2, s=-2), True),
    "Sv": (_F(1), _d(m=2, s=-2), True),
    "Ci": (_F(37 * 10**9), _d(s=-1), True),
    "[drp]": (_F(1, 20 * 10**6), _d(m=3), False),  # drop, 1/20 mL
}
# arbitrary and special units: valid UCUM, but with no canonical value to compare
_UNCONVERTIBLE = frozenset({"[IU]", "[iU]", "[arb'U]", "[pH]", "B", "dB", "Np", "[hp_X]", "[hp_C]", "[kp_C]"})

_AFFINE = {
    # kelvin = (value + offset) * factor
    "Cel": (_F(1), _F(27315, 100)),
    "[degF]": (_F(5, 9), _F(45967, 100)),
}

_PREFIXES: dict[str, Fraction] = {
    "Y": _F(10) ** 24, "Z": _F(10) ** 21, "E": _F(10) ** 18, "P": _F(10) ** 15, "T": _F(10) ** 12,
    "G": _F(10) ** 9, "M": _F(10) ** 6, "k": _F(10) ** 3, "h": _F(10) ** 2, "da": _F(10),
    "d": _F(1, 10), "c": _F(1, 10**2), "m": _F(1, 10**3), "u": _F(1, 10**6), "n": _F(1, 10**9),
    "p": _F(1, 10**12), "f": _F(1, 10**15), "a": _F(1, 10**18), "z": _F(1, 10**21), "y": _F(1, 10**24),
    "Ki": _F(1024), "Mi": _F(1024**2), "Gi": _F(1024**3), "Ti": _F(1024**4),
}
# longest prefix first, so "da" is tried before "d"
_PREFIX_ORDER = sorted(_PREFIXES, key=len, reverse=True)


def _atom(symbol: str) -> tuple[Fraction, dict[str, int]]:
    """Factor and dimensions of a (possibly prefixed) atom. An unprefixed atom wins over a prefix reading, as
    UCUM requires (``cd`` is candela, not centi-day; ``Pa`` is pascal, not peta-year)."""
    if symbol in _UNCONVERTIBLE or (symbol.startswith("[") and symbol.endswith("'U]")):
        raise _UnitError(f"arbitrary or special unit {symbol}")
    hit = _ATOMS.get(symbol)
    if hit is not None:
        return hit[0], hit[1]
    for prefix in _PREFIX_ORDER:
        if symbol.startswith(prefix) and len(symbol) > len(prefix):
            rest = symbol[len(prefix):]
            if rest in _UNCONVERTIBLE or (rest.startswith("[") and rest.endswith("'U]")):
                raise _UnitError(f"arbitrary or special unit {symbol}")
            hit = _ATOMS.get(rest)
            if hit is not None and hit[2]:
                return _PREFIXES[prefix] * hit[0], hit[1]
    raise _UnitError(f"unknown unit {symbol!r}")


# ---- the parser ---------------------------------------------------------------------------------------------------


_DIGITS = frozenset("0123456789")  # not str.isdigit(), which accepts "²" that int() then refuses


class _Parser:
    """Recursive descent over UCUM's grammar: term := ['/'] component (('.'|'/') component)*;
    component := '(' term ')' exponent? | annotation | simple-unit exponent? annotation? | integer."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def parse(self) -> tuple[Fraction, dict[str, int]]:
        result = self._term()
        if self.pos != len(self.text):
            raise _UnitError(f"unexpected {self.text[self.pos]!r} in unit {self.text!r}")
        return result

    def _term(self) -> tuple[Fraction, dict[str, int]]:
        factor, dims = _F(1), {}
        op = "."
        if self._peek() == "/":
            self.pos += 1
            op = "/"
        while True:
            f, d = self._component()
            if op == "/":
                factor /= f
                for k, v in d.items():
                    dims[k] = dims.get(k, 0) - v
            else:
                factor *= f
                for k, v in d.items():
                    dims[k] = dims.get(k, 0) + v
            nxt = self._peek()
            if nxt in (".", "/"):
                op = nxt
                self.pos += 1
                continue
            return factor, {k: v for k, v in dims.items() if v}

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _annotation(self) -> None:
        end = self.text.find("}", self.pos)
        if end < 0:
            raise _UnitError(f"unclosed annotation in {self.text!r}")
        self.pos = end + 1

    def _exponent(self) -> int | None:
        start = self.pos
        if self._peek() in ("+", "-"):
            self.pos += 1
        digits = self.pos
        while self._peek() in _DIGITS:
            self.pos += 1
        if self.pos == digits:
            self.pos = start
            return None
        return int(self.text[start:self.pos])

    def _component(self) -> tuple[Fraction, dict[str, int]]:
        ch = self._peek()
        if ch == "(":
            self.pos += 1
            f, d = self._term()
            if self._peek() != ")":
                raise _UnitError(f"unbalanced parenthesis in {self.text!r}")
            self.pos += 1
            exp = self._exponent()
            return _power(f, d, exp if exp is not None else 1)
        if ch == "{":
            self._annotation()
            return _F(1), {}
        if ch in _DIGITS:
            # an integer factor ("100"), or the special atom 10* / 10^ with its exponent ("10*3")
            start = self.pos
            while self._peek() in _DIGITS:
                self.pos += 1
            number = self.text[start:self.pos]
            if number == "10" and self._peek() in ("*", "^"):
                self.pos += 1
                exp = self._exponent()
                if exp is None:
                    raise _UnitError(f"10* without exponent in {self.text!r}")
                if self._peek() == "{":
                    self._annotation()
                return _F(10) ** exp, {}
            if self._peek() == "{":
                self._annotation()
            return _F(int(number)), {}
        symbol = self._symbol()
        exp = self._exponent()
        if self._peek() == "{":
            self._annotation()
        f, d = _atom(symbol)
        return _power(f, d, exp if exp is not None else 1)

    def _symbol(self) -> str:
        """An atom with its prefix: a run of characters up to an operator, a digit/sign (the exponent), a
        parenthesis or an annotation; square brackets are taken whole (``mm[Hg]``, ``[in_i'Hg]``)."""
        start = self.pos
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            if ch == "[":
                end = text.find("]", self.pos)
                if end < 0:
                    raise _UnitError(f"unclosed bracket in {text!r}")
                self.pos = end + 1
                continue
            if ch in "./(){}+-" or ch in _DIGITS:
                break
            self.pos += 1
        if self.pos == start:
            raise _UnitError(f"expected a unit at {start} in {text!r}")
        return text[start:self.pos]


def _power(factor: Fraction, dims: dict[str, int], exp: int) -> tuple[Fraction, dict[str, int]]:
    if exp == 1:
        return factor, dims
    return factor**exp, {k: v * exp for k, v in dims.items()}


def _format(dims: dict[str, int]) -> str:
    # positive exponents first, so codes read like the units people write (mol.m-3, not m-3.mol)
    ups = [b if dims[b] == 1 else f"{b}{dims[b]}" for b in _BASE_ORDER if dims.get(b, 0) > 0]
    downs = [f"{b}{dims[b]}" for b in _BASE_ORDER if dims.get(b, 0) < 0]
    return ".".join(ups + downs) or "1"


@lru_cache(maxsize=4096)
def canonical_unit(code: str) -> Canonical | None:
    """The canonical form of a UCUM code, or None when it has none (arbitrary/special units, unknown atoms,
    affine temperatures inside a compound, malformed codes). Cached: clinical data uses few distinct units."""
    code = code.strip()
    if not code or " " in code:
        return None
    affine = _AFFINE.get(code)
    if affine is not None:
        return Canonical(factor=affine[0], code="K", offset=affine[1])
    try:
        factor, dims = _Parser(code).parse()
    except (_UnitError, ZeroDivisionError):
        return None
    if factor <= 0:
        return None
    return Canonical(factor=factor, code=_format(dims))


def _scale(value: float, factor: Fraction) -> float:
    # multiply by the numerator and divide by the denominator as floats: for decimal factors (mg → g is 1/1000)
    # the division by an exact power of ten rounds once, so 5 mg gives exactly float("0.005"), and stored
    # values and query values go through the very same arithmetic
    if factor.denominator == 1:
        return float(value * factor.numerator)
    return value * factor.numerator / factor.denominator


def canonicalize(value: float, lo: float, hi: float, code: str) -> tuple[float, float, float, str] | None:
    """``(value, lo, hi)`` in ``code``'s canonical UCUM unit, with that unit's code; None when not convertible."""
    canon = canonical_unit(code)
    if canon is None:
        return None
    if canon.offset:
        off = float(canon.offset)
        return (_scale(value + off, canon.factor), _scale(lo + off, canon.factor),
                _scale(hi + off, canon.factor), canon.code)
    f = canon.factor
    return _scale(value, f), _scale(lo, f), _scale(hi, f), canon.code
