"""SearchRequest: parsing of names, OR-lists, escapes and result parameters; the canonical query string."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_server.search.request import (
    ChainLink,
    Clause,
    HasLink,
    Include,
    SearchRequest,
    SortKey,
    parse_request,
    split_unescaped,
    unescape,
)
from resources.outcome import InvalidInput


def _parse(query: str) -> SearchRequest:
    return parse_request(parse_qsl(query, keep_blank_values=True))


def _refused(pairs: list[tuple[str, str]]) -> InvalidInput:
    with pytest.raises(InvalidInput) as err:
        parse_request(pairs)
    return err.value


# ---- escapes ------------------------------------------------------------------------------------------------------


def test_split_unescaped_keeps_escapes_for_a_later_split() -> None:
    assert split_unescaped(r"a\$b$c\|d|e", "$") == [r"a\$b", r"c\|d|e"]
    assert split_unescaped(r"x\\$y", "$") == [r"x\\", "y"]  # an escaped backslash does not escape the '$'
    assert split_unescaped("", "|") == [""]
    assert split_unescaped("a|", "|") == ["a", ""]


def test_unescape() -> None:
    assert unescape(r"a\,b\|c\$d\\e") == r"a,b|c$d\e"
    assert unescape(r"C:\path") == r"C:\path"  # not an escape: kept
    assert unescape("trailing\\") == "trailing\\"


# ---- clauses ------------------------------------------------------------------------------------------------------


def test_plain_clauses_keep_order_and_repeats() -> None:
    req = _parse("date=ge2020&code=a,b&date=lt2021")
    assert req.clauses == (
        Clause("date", "date", None, ("ge2020",)),
        Clause("code", "code", None, ("a", "b")),
        Clause("date", "date", None, ("lt2021",)),
    )


def test_modifier_and_reference_type() -> None:
    c1, c2 = _parse("name:exact=Eve&subject:Patient=1").clauses
    assert (c1.code, c1.modifier) == ("name", "exact")
    assert (c2.code, c2.modifier) == ("subject", "Patient")


def test_chain() -> None:
    (c,) = _parse("subject:Patient.organization.name:exact=Acme").clauses
    assert c.name == "subject:Patient.organization.name:exact"
    assert c.chain == (ChainLink("subject", "Patient"), ChainLink("organization", None))
    assert (c.code, c.modifier, c.values) == ("name", "exact", ("Acme",))


def test_has_nested_with_chain() -> None:
    (c,) = _parse("_has:Observation:patient:_has:AuditEvent:entity:agent.name=x").clauses
    assert c.has == (HasLink("Observation", "patient"), HasLink("AuditEvent", "entity"))
    assert c.chain == (ChainLink("agent", None),)
    assert (c.code, c.modifier) == ("name", None)


def test_has_terminal_modifier() -> None:
    (c,) = _parse("_has:Observation:patient:code:text=bp").clauses
    assert (c.has, c.code, c.modifier) == ((HasLink("Observation", "patient"),), "code", "text")


@pytest.mark.parametrize("name", ["_has", "_has:Observation", "_has:Observation:patient", "_has::patient:code",
                                  "_has:observation:patient:code", "_has:Observation:pat ient:code"])
def test_malformed_has(name: str) -> None:
    err = _refused([(name, "x")])
    assert err.issues[0].expression == (name,)
    assert err.issues[0].message_id == "AEGIS-323"


@pytest.mark.parametrize("name", ["subject..name", "subject.", ".name", "name:", "na me", "subject:Pat ient.name"])
def test_malformed_names(name: str) -> None:
    err = _refused([(name, "x")])
    assert err.issues[0].expression == (name,)
    assert err.issues[0].message_id == "AEGIS-331"


def test_or_values_and_comma_escape() -> None:
    (c,) = _parse(r"identifier=a\,b,c").clauses  # parse_qsl leaves backslashes alone
    assert c.values == ("a,b", "c")
    (c,) = parse_request([("identifier", r"urn:x\|y|1\\,2")]).clauses
    # '|' and '\' escapes are kept for bind (only bind knows whether '|' separates); '\\,' is an escaped
    # backslash followed by a separating comma
    assert c.values == (r"urn:x\|y|1\\", "2")
    assert c.plain_values == (r"urn:x|y|1" + "\\", "2")


def test_empty_values_are_kept_for_bind_to_judge() -> None:
    (c,) = parse_request([("name", "")]).clauses
    assert c.values == ("",)
    (c,) = parse_request([("name", "a,")]).clauses
    assert c.values == ("a", "")


def test_blank_names_are_ignored() -> None:
    assert parse_request([("", "x")]) == SearchRequest()


# ---- result parameters ----------------------------------------------------------------------------------------------


def test_controls() -> None:
    req = _parse("_sort=-date,status&_sort=_id&_count=20&_include=Observation:patient&"
                 "_include:iterate=Patient:organization:Organization&_revinclude=Provenance:target&_include=*&"
                 "_summary=data&_elements=id,name&_elements=name,birthDate&_total=accurate&_cursor=abc&"
                 "_type=Patient,Observation&_format=json&_contained=true&name=x")
    assert req.sort == (SortKey("date", True), SortKey("status", False), SortKey("_id", False))
    assert req.count == 20
    assert req.include == (Include("Observation", "patient", None, False),
                           Include("Patient", "organization", "Organization", True),
                           Include("*", "*", None, False))
    assert req.revinclude == (Include("Provenance", "target", None, False),)
    assert req.summary == "data"
    assert req.elements == ("id", "name", "birthDate")
    assert req.total == "accurate"
    assert req.cursor == "abc"
    assert req.types == ("Patient", "Observation")
    assert req.passthrough == (("_format", "json"),)
    assert req.ignored == (("_contained", "true"),)
    assert [c.name for c in req.clauses] == ["name"]


def test_recurse_is_iterate() -> None:
    assert _parse("_revinclude:recurse=Observation:has-member").revinclude == (
        Include("Observation", "has-member", None, True),)


@pytest.mark.parametrize(("name", "value", "message_id"), [
    ("_count", "abc", "AEGIS-324"),
    ("_count", "-1", "AEGIS-324"),
    ("_count", "", "AEGIS-324"),
    ("_count", "1.5", "AEGIS-324"),
    ("_sort", "", "AEGIS-325"),
    ("_sort", "-", "AEGIS-325"),
    ("_sort", "date,", "AEGIS-325"),
    ("_sort", "da te", "AEGIS-325"),
    ("_include", "Observation", "AEGIS-326"),
    ("_include", "Observation:", "AEGIS-326"),
    ("_include", "Observation:patient:Patient:x", "AEGIS-326"),
    ("_include", "observation:patient", "AEGIS-326"),
    ("_include", "Observation:patient:patient", "AEGIS-326"),
    ("_include:deep", "Observation:patient", "AEGIS-326"),
    ("_revinclude", "", "AEGIS-326"),
    ("_summary", "foo", "AEGIS-327"),
    ("_summary", "", "AEGIS-327"),
    ("_total", "foo", "AEGIS-328"),
    ("_elements", "", "AEGIS-329"),
    ("_elements", "name,,id", "AEGIS-329"),
    ("_elements", "na-me", "AEGIS-329"),
    ("_type", "Patient,Nope", "AEGIS-330"),
    ("_type", "", "AEGIS-330"),
    ("_cursor", "", "AEGIS-337"),
    ("_count:x", "1", "AEGIS-331"),
])
def test_malformed_controls(name: str, value: str, message_id: str) -> None:
    err = _refused([(name, value)])
    assert err.status == 400
    assert err.issues[0].expression == (name,)
    assert err.issues[0].message_id == message_id


def test_conflicting_repeats_of_single_valued_controls() -> None:
    assert parse_request([("_count", "10"), ("_count", "10")]).count == 10
    assert parse_request([("_count", "10"), ("_count", "010")]).count == 10
    err = _refused([("_count", "10"), ("_count", "20")])
    assert err.issues[0].message_id == "AEGIS-332"
    err = _refused([("_summary", "true"), ("_summary", "count")])
    assert err.issues[0].expression == ("_summary",)


# ---- format ---------------------------------------------------------------------------------------------------------


def test_format_canonical_order_and_encoding() -> None:
    req = _parse("_cursor=c1&_count=5&_sort=-date&code=http://loinc.org|1,2&_include:iterate=Observation:patient&"
                 "name=a b&_type=Patient&_pretty=true&subject:Patient.name=x&_total=none&_summary=true&"
                 "_elements=id&_revinclude=*")
    assert req.format() == (
        "code=http://loinc.org%7C1,2&name=a%20b&subject:Patient.name=x&_type=Patient&_sort=-date&_count=5&"
        "_include:iterate=Observation:patient&_revinclude=*&_summary=true&_elements=id&_total=none&_pretty=true&"
        "_cursor=c1")


def test_format_escapes_commas_and_reserved_characters() -> None:
    req = parse_request([("identifier", r"a\,b,c"), ("name", "x&y=z+w#?%"), ("note", "\\")])
    text = req.format()
    assert text == r"identifier=a%5C%2Cb,c&name=x%26y%3Dz%2Bw%23%3F%25&note=%5C".replace(r"%5C%2C", "%5C,")
    assert parse_request(parse_qsl(text, keep_blank_values=True)) == req


def test_with_cursor_goes_last() -> None:
    req = _parse("name=x&_count=2").with_cursor("next-page")
    assert req.format() == "name=x&_count=2&_cursor=next-page"
    assert req.with_cursor(None).format() == "name=x&_count=2"


def test_ignored_parameters_are_not_printed() -> None:
    assert _parse("_contained=true&name=x").format() == "name=x"


_value_chars = st.text(alphabet=st.sampled_from(list("ab,|$\\ &=+%é")), max_size=8)


@given(st.lists(st.tuples(st.sampled_from(["name", "code", "subject:Patient.name", "_has:Observation:patient:code"]),
                          _value_chars), max_size=4),
       st.one_of(st.none(), st.integers(0, 500)))
def test_format_round_trips(pairs: list[tuple[str, str]], count: int | None) -> None:
    raw = list(pairs) + ([("_count", str(count))] if count is not None else [])
    req = parse_request(raw)
    again = parse_request(parse_qsl(req.format(), keep_blank_values=True))
    assert again == req
    assert again.format() == req.format()
