from __future__ import annotations

import pytest

from fhir_server.search.criteria import Criteria, Token, parse_criteria, split_escaped
from fhir_server.search.dates import parse_range
from resources.outcome import InvalidInput


def test_split_escaped() -> None:
    assert split_escaped(r"a,b\,c,d", ",") == ["a", "b,c", "d"]
    assert split_escaped(r"sys\|x|code", "|") == ["sys|x", "code"]
    assert split_escaped("", ",") == [""]


def test_tokens_and_and_or() -> None:
    c = parse_criteria([("identifier", "urn:a|1,|2,urn:b|"), ("_id", "x,y"), ("identifier", "3")])
    assert c == Criteria(ids=(("x", "y"),), identifiers=(
        (Token("urn:a", "1"), Token("", "2"), Token("urn:b", None)), (Token(None, "3"),)))


@pytest.mark.parametrize("pair", [("name", "x"), ("identifier", ""), ("identifier", "a|b|c"), ("_id", "a,")])
def test_refused(pair: tuple[str, str]) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_criteria([pair])
    assert err.value.issues[0].expression == (pair[0],)


@pytest.mark.parametrize(("value", "lo", "hi"), [
    ("2020", "2020-01-01T00:00:00.000Z", "2021-01-01T00:00:00.000Z"),
    ("2020-12", "2020-12-01T00:00:00.000Z", "2021-01-01T00:00:00.000Z"),
    ("2020-02-29", "2020-02-29T00:00:00.000Z", "2020-03-01T00:00:00.000Z"),
    ("2020-01-01T10:00:00+02:00", "2020-01-01T08:00:00.000Z", "2020-01-01T08:00:01.000Z"),
    ("2020-01-01T10:00:00.250Z", "2020-01-01T10:00:00.250Z", "2020-01-01T10:00:00.251Z"),
])
def test_date_ranges(value: str, lo: str, hi: str) -> None:
    assert parse_range(value) == (lo, hi)


@pytest.mark.parametrize("value", ["x", "2020-13", "2021-02-29", "2020-01-01T25:00:00Z", "20200101"])
def test_bad_dates(value: str) -> None:
    assert parse_range(value) is None
