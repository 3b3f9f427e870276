"""UCUM canonicalisation for quantity search: units that mean the same compare equal (search.html#quantity)."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_server.search.ranges import number_range
from fhir_server.search.ucum import canonical_unit, canonicalize


@pytest.mark.parametrize(("code", "factor", "canon"), [
    ("g", 1, "g"),
    ("mg", Fraction(1, 1000), "g"),
    ("kg", 1000, "g"),
    ("ug", Fraction(1, 10**6), "g"),
    ("[lb_av]", Fraction(45359237, 10**5), "g"),
    ("L", Fraction(1, 1000), "m3"),
    ("mL", Fraction(1, 10**6), "m3"),
    ("dL", Fraction(1, 10**4), "m3"),
    ("cm", Fraction(1, 100), "m"),
    ("[in_i]", Fraction(254, 10**4), "m"),
    ("m2", 1, "m2"),
    ("s", 1, "s"),
    ("min", 60, "s"),
    ("h", 3600, "s"),
    ("d", 86400, "s"),
    ("wk", 604800, "s"),
    ("a", 31557600, "s"),
    ("mo", 2629800, "s"),
    ("/min", Fraction(1, 60), "s-1"),
    ("{beats}/min", Fraction(1, 60), "s-1"),
    ("mg/dL", 10, "g.m-3"),
    ("g/dL", 10**4, "g.m-3"),
    ("ug/mL", 1, "g.m-3"),
    ("mmol/L", 1, "mol.m-3"),
    ("mEq/L", 1, "mol.m-3"),  # not strict UCUM, but what lab data writes
    ("meq/L", 1, "mol.m-3"),
    ("kg/m2", 1000, "g.m-2"),
    ("10*3/uL", 10**12, "m-3"),
    ("10*9/L", 10**12, "m-3"),
    ("10^3", 1000, "1"),
    ("%", Fraction(1, 100), "1"),
    ("[ppm]", Fraction(1, 10**6), "1"),
    ("1", 1, "1"),
    ("{score}", 1, "1"),
    ("mm[Hg]", 133322, "g.m-1.s-2"),
    ("kPa", 10**6, "g.m-1.s-2"),
    ("cm[H2O]", Fraction(980665, 10), "g.m-1.s-2"),
    ("U/L", Fraction(1, 60000), "mol.m-3.s-1"),
    ("mL/min/{1.73_m2}", Fraction(1, 6 * 10**7), "m3.s-1"),
    ("mg/kg.h", Fraction(1, 10**6) * 3600, "s"),  # UCUM: left to right, so mg/kg.h is mg.h/kg
    ("mg/(kg.h)", Fraction(1, 10**6) / 3600, "s-1"),
    ("(m/s)2", 1, "m2.s-2"),
    ("kcal", 4184000, "g.m2.s-2"),
    ("cd", 1, "cd"),  # candela, not centi-day
    ("Pa", 1000, "g.m-1.s-2"),  # pascal, not peta-year
])
def test_canonical_unit(code: str, factor: Fraction | int, canon: str) -> None:
    unit = canonical_unit(code)
    assert unit is not None
    assert (unit.factor, unit.code, unit.offset) == (Fraction(factor), canon, 0)


@pytest.mark.parametrize("code", [
    "[IU]", "[IU]/L", "mIU/mL", "[iU]", "[arb'U]/mL", "[USP'U]", "[pH]", "dB", "Cel/h", "mg/", "/", "", "m g",
    "{unclosed", "foo", "mg(", "[unknown]", "m²", "kg/m¹",
])
def test_not_convertible(code: str) -> None:
    assert canonical_unit(code) is None
    assert canonicalize(1.0, 0.5, 1.5, code) is None


def test_milligrams_equal_grams() -> None:
    """1000 mg and 1 g land on the same canonical value, and each lies in the other's precision range."""
    v_mg = canonicalize(*number_range("1000"), "mg")  # type: ignore[misc]
    v_g = canonicalize(*number_range("1"), "g")  # type: ignore[misc]
    assert v_mg is not None and v_g is not None
    assert v_mg[0] == v_g[0] == 1.0 and v_mg[3] == v_g[3] == "g"
    assert v_mg[1] <= v_g[0] < v_mg[2]
    assert v_g[1] <= v_mg[0] < v_g[2]
    # and the precision range converts with the value: 1000 mg is [999.5, 1000.5) mg
    assert v_mg[1:3] == (0.9995, 1.0005)


def test_exact_decimal_scaling() -> None:
    # a division by an exact power of ten: 5 mg is exactly the float nearest 0.005 g
    assert canonicalize(5.0, 4.5, 5.5, "mg") == (0.005, 0.0045, 0.0055, "g")
    assert canonicalize(250.0, 249.5, 250.5, "mg/dL") == (2500.0, 2495.0, 2505.0, "g.m-3")


def test_temperatures_are_affine() -> None:
    c = canonicalize(37.0, 36.95, 37.05, "Cel")
    f = canonicalize(98.6, 98.55, 98.65, "[degF]")
    k = canonicalize(310.15, 310.145, 310.155, "K")
    assert c is not None and f is not None and k is not None
    assert c[3] == f[3] == k[3] == "K"
    assert c[0] == pytest.approx(310.15) and f[0] == pytest.approx(310.15) and k[0] == 310.15
    assert c[1] < c[0] < c[2]
    assert canonicalize(0.0, -0.5, 0.5, "Cel")[:3] == (273.15, 272.65, 273.65)  # type: ignore[index]


@given(st.sampled_from(["mg", "g", "kg", "mL", "L", "mmol/L", "mg/dL", "/min", "h", "mm[Hg]", "%", "10*3/uL"]),
       st.floats(min_value=-1e9, max_value=1e9, allow_nan=False))
def test_canonicalize_is_monotonic(code: str, value: float) -> None:
    out = canonicalize(value, value - 1, value + 1, code)
    assert out is not None
    assert out[1] <= out[0] <= out[2]


@given(st.text(max_size=20))
def test_never_raises(code: str) -> None:
    canonicalize(1.0, 0.5, 1.5, code)
