"""bind: every parameter type, modifier and common parameter; chains, _has, system level; lenient and strict."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from fhir_server.search.bind import SYSTEM_RTYPE, BindResult, bind
from fhir_server.search.ranges import date_range, number_range
from fhir_server.search.request import parse_request
from fhir_server.search.tree import (
    And,
    Chain,
    CompositeQ,
    DateQ,
    Has,
    IdIn,
    ListQ,
    MatchAll,
    MatchNone,
    Missing,
    Node,
    Not,
    NumberQ,
    Or,
    Param,
    QuantityQ,
    RefIdentifierQ,
    RefQ,
    StringQ,
    TextSearch,
    TokenQ,
    TokenTextQ,
    TypeIn,
    UriQ,
    ValueSetQ,
)
from fhir_server.search.ucum import canonicalize
from resources.outcome import InvalidInput

BASE = "http://aegis.test/fhir"


def _bind(rtype: str | None, query: str, *, strict: bool = False) -> BindResult:
    return bind(rtype, parse_request(parse_qsl(query, keep_blank_values=True)), strict=strict, base_url=BASE)


def _one(rtype: str | None, query: str) -> Node:
    """The node of a single-clause query."""
    result = _bind(rtype, query, strict=True)
    assert isinstance(result.tree, And) and len(result.tree.items) == 1, result.tree
    return result.tree.items[0]


def _refused(rtype: str | None, query: str, *, strict: bool = False) -> InvalidInput:
    with pytest.raises(InvalidInput) as err:
        _bind(rtype, query, strict=strict)
    return err.value


def _dates(text: str) -> tuple[int, int]:
    rng = date_range(text)
    assert rng is not None
    return rng


PN = Param("Patient", "name", "string")
OC = Param("Observation", "code", "token")


# ---- string -------------------------------------------------------------------------------------------------------


def test_string_modes() -> None:
    assert _one("Patient", "name=Émile  Zola") == StringQ(PN, "emile zola", "start")
    assert _one("Patient", "name:exact=Émile") == StringQ(PN, "Émile", "exact")
    assert _one("Patient", "name:contains=MIL") == StringQ(PN, "mil", "contains")
    assert _one("Patient", "name=a,b") == Or((StringQ(PN, "a", "start"), StringQ(PN, "b", "start")))
    assert _one("Patient", r"name:exact=a\,b") == StringQ(PN, "a,b", "exact")
    assert _one("Patient", r"name:exact=a\|b\$c") == StringQ(PN, "a|b$c", "exact")


def test_blank_string_is_refused() -> None:
    err = _refused("Patient", "name=%20%20")
    assert err.issues[0].expression == ("name",)
    assert err.issues[0].message_id == "AEGIS-313"


# ---- token --------------------------------------------------------------------------------------------------------


def test_token_forms() -> None:
    assert _one("Observation", "code=1234") == TokenQ(OC, None, "1234")
    assert _one("Observation", "code=http://loinc.org|1234") == TokenQ(OC, "http://loinc.org", "1234")
    assert _one("Observation", "code=|1234") == TokenQ(OC, None, "1234", no_system=True)
    assert _one("Observation", "code=http://loinc.org|") == TokenQ(OC, "http://loinc.org", None)
    assert _one("Observation", r"code=urn:a\|b|c\,d") == TokenQ(OC, "urn:a|b", "c,d")


@pytest.mark.parametrize("value", ["|", "a|b|c"])
def test_malformed_token(value: str) -> None:
    err = _refused("Observation", f"code={value}")
    assert err.issues[0].expression == ("code",)
    assert err.issues[0].message_id == "AEGIS-314"


def test_token_not_means_none_of_the_codes() -> None:
    assert _one("Observation", "code:not=a") == Not(TokenQ(OC, None, "a"))
    assert _one("Observation", "code:not=a,s|b") == Not(Or((TokenQ(OC, None, "a"), TokenQ(OC, "s", "b"))))


def test_token_text() -> None:
    assert _one("Observation", "code:text=Blood Pressure") == TokenTextQ(OC, "blood pressure")


def test_token_value_sets_and_hierarchies() -> None:
    assert _one("Observation", "code:in=http://vs/a") == ValueSetQ(OC, "in", "http://vs/a")
    assert _one("Observation", "code:in=http://vs/a,http://vs/b") == Or(
        (ValueSetQ(OC, "in", "http://vs/a"), ValueSetQ(OC, "in", "http://vs/b")))
    assert _one("Observation", "code:not-in=http://vs/a") == ValueSetQ(OC, "not-in", "http://vs/a")
    # in none of the listed sets
    assert _one("Observation", "code:not-in=http://vs/a,http://vs/b") == And(
        (ValueSetQ(OC, "not-in", "http://vs/a"), ValueSetQ(OC, "not-in", "http://vs/b")))
    assert _one("Observation", "code:below=http://snomed.info/sct|123") == ValueSetQ(
        OC, "below", "http://snomed.info/sct", "123")
    assert _one("Observation", "code:above=http://snomed.info/sct|123") == ValueSetQ(
        OC, "above", "http://snomed.info/sct", "123")


@pytest.mark.parametrize("value", ["123", "|123", "http://snomed.info/sct|", "a|b|c"])
def test_hierarchy_needs_system_and_code(value: str) -> None:
    err = _refused("Observation", f"code:below={value}")
    assert err.issues[0].message_id == "AEGIS-335"


def test_of_type() -> None:
    node = _one("Patient", "identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|446053")
    assert node == CompositeQ(Param("Patient", "identifier:of-type", "composite"), (
        TokenQ(Param("Patient", "identifier:of-type#0", "token"), "http://terminology.hl7.org/CodeSystem/v2-0203",
               "MR"),
        TokenQ(Param("Patient", "identifier:of-type#1", "token"), None, "446053"),
    ))
    # masterIdentifier counts as an identifier parameter too
    assert isinstance(_one("DocumentReference", "identifier:of-type=s|MR|1"), CompositeQ)
    # an empty type system means any system
    node = _one("Patient", "identifier:of-type=|MR|1")
    assert isinstance(node, CompositeQ) and node.parts[0] == TokenQ(
        Param("Patient", "identifier:of-type#0", "token"), None, "MR")


@pytest.mark.parametrize("value", ["MR|1", "s|MR|", "s||1", "a|b|c|d"])
def test_of_type_malformed(value: str) -> None:
    assert _refused("Patient", f"identifier:of-type={value}").issues[0].message_id == "AEGIS-336"


def test_of_type_only_on_identifiers() -> None:
    err = _refused("Observation", "code:of-type=s|MR|1")
    assert err.issues[0].message_id == "AEGIS-312"
    assert "identifier" in err.issues[0].diagnostics


# ---- reference ----------------------------------------------------------------------------------------------------


def test_reference_forms() -> None:
    org = Param("Patient", "organization", "reference")
    subj = Param("Observation", "subject", "reference")
    assert _one("Patient", "organization=1") == RefQ(org, "Organization", "1")  # single target: typed
    assert _one("Observation", "subject=1") == RefQ(subj, None, "1")  # several targets: any type
    assert _one("Observation", "subject:Patient=1") == RefQ(subj, "Patient", "1")
    assert _one("Observation", "subject=Patient/1") == RefQ(subj, "Patient", "1")
    assert _one("Observation", "subject:Patient=Patient/1") == RefQ(subj, "Patient", "1")
    assert _one("Observation", "subject=Patient/1/_history/3") == RefQ(subj, "Patient", "1")
    assert _one("Observation", f"subject={BASE}/Patient/1") == RefQ(subj, "Patient", "1")
    assert _one("Observation", f"subject={BASE}/1") == RefQ(subj, None, "1")
    other = "http://other.org/fhir/Patient/1"
    assert _one("Observation", f"subject={other}") == RefQ(subj, None, None, url=other)
    assert _one("Observation", "subject=urn:uuid:abc") == RefQ(subj, None, None, url="urn:uuid:abc")
    q = Param("QuestionnaireResponse", "questionnaire", "reference")
    assert _one("QuestionnaireResponse", "questionnaire=http://q.org/Q/1|2.0") == RefQ(
        q, None, None, url="http://q.org/Q/1")


def test_reference_identifier() -> None:
    subj = Param("Observation", "subject", "reference")
    assert _one("Observation", "subject:identifier=urn:mrn|42") == RefIdentifierQ(subj, "urn:mrn", "42")
    assert _one("Observation", "subject:identifier=42") == RefIdentifierQ(subj, None, "42")
    assert _refused("Observation", "subject:identifier=urn:mrn|").issues[0].message_id == "AEGIS-319"


@pytest.mark.parametrize(("query", "message_id"), [
    ("subject=Foo/1", "AEGIS-319"),  # not a type
    ("subject=Practitioner/1", "AEGIS-319"),  # not a target
    ("subject:Patient=Group/1", "AEGIS-319"),  # contradicts the modifier
    ("subject=a/b/c", "AEGIS-319"),
    ("subject=1|2", "AEGIS-319"),  # only a canonical URL carries |version
    ("subject:Foo=1", "AEGIS-312"),
    ("subject:Practitioner=1", "AEGIS-312"),
    ("subject:text=x", "AEGIS-312"),
    ("subject:exact=x", "AEGIS-312"),
])
def test_reference_refused(query: str, message_id: str) -> None:
    err = _refused("Observation", query)
    assert err.issues[0].expression == (query.split("=")[0],)
    assert err.issues[0].message_id == message_id


# ---- date, number, quantity --------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"])
def test_date_prefixes(prefix: str) -> None:
    lo, hi = _dates("2020-03")
    assert _one("Patient", f"birthdate={prefix}2020-03") == DateQ(Param("Patient", "birthdate", "date"), prefix, lo,
                                                                    hi)


def test_date_default_eq_and_instant() -> None:
    lo, hi = _dates("1970")
    assert _one("Patient", "birthdate=1970") == DateQ(Param("Patient", "birthdate", "date"), "eq", lo, hi)
    lo, hi = _dates("2020-01-01T10:00:00+02:00")
    assert _one("Observation", "date=lt2020-01-01T10:00:00%2B02:00") == DateQ(
        Param("Observation", "date", "date"), "lt", lo, hi)


@pytest.mark.parametrize(("value", "message_id"), [
    ("2020-13", "AEGIS-315"), ("yesterday", "AEGIS-316"), ("xx2020", "AEGIS-316"), ("gt", "AEGIS-315"),
    ("GT2020", "AEGIS-316"), ("2020-02-30", "AEGIS-315"), ("ge2020,garbage", "AEGIS-316"),
])
def test_bad_dates(value: str, message_id: str) -> None:
    err = _refused("Patient", f"birthdate={value}")
    assert err.status == 400
    assert err.issues[0].expression == ("birthdate",)
    assert err.issues[0].message_id == message_id


def test_number() -> None:
    p = Param("RiskAssessment", "probability", "number")
    assert _one("RiskAssessment", "probability=gt0.8") == NumberQ(p, "gt", *number_range("0.8"))  # type: ignore[misc]
    assert _one("RiskAssessment", "probability=100") == NumberQ(p, "eq", 100.0, 99.5, 100.5)
    assert _refused("RiskAssessment", "probability=abc").issues[0].message_id == "AEGIS-316"
    assert _refused("RiskAssessment", "probability=1.2.3").issues[0].message_id == "AEGIS-317"


def test_quantity() -> None:
    p = Param("Observation", "value-quantity", "quantity")
    canon = canonicalize(5.4, 5.35, 5.45, "mg")
    assert canon is not None
    assert _one("Observation", "value-quantity=gt5.4|http://unitsofmeasure.org|mg") == QuantityQ(
        p, "gt", 5.4, 5.35, 5.45, "http://unitsofmeasure.org", "mg", *canon)
    # no system: the code is taken as UCUM when it converts
    assert _one("Observation", "value-quantity=5.4||mg") == QuantityQ(p, "eq", 5.4, 5.35, 5.45, None, "mg", *canon)
    # another system: compared by system and code only
    assert _one("Observation", "value-quantity=5.4|http://snomed.info/sct|258684004") == QuantityQ(
        p, "eq", 5.4, 5.35, 5.45, "http://snomed.info/sct", "258684004")
    assert _one("Observation", "value-quantity=le5.4") == QuantityQ(p, "le", 5.4, 5.35, 5.45, None, None)
    # a UCUM code that does not convert keeps only system and code
    assert _one("Observation", "value-quantity=5||[IU]") == QuantityQ(p, "eq", 5.0, 4.5, 5.5, None, "[IU]")


@pytest.mark.parametrize(("value", "message_id"), [
    ("5.4|mg", "AEGIS-318"), ("x|s|c", "AEGIS-318"), ("5|a|b|c", "AEGIS-318"), ("zz5", "AEGIS-316"),
])
def test_bad_quantities(value: str, message_id: str) -> None:
    err = _refused("Observation", f"value-quantity={value}")
    assert err.issues[0].expression == ("value-quantity",)
    assert err.issues[0].message_id == message_id


# ---- uri, composite -------------------------------------------------------------------------------------------------


def test_uri() -> None:
    p = Param("ValueSet", "url", "uri")
    assert _one("ValueSet", "url=http://a/b") == UriQ(p, "http://a/b", "eq")
    assert _one("ValueSet", "url:below=http://a") == UriQ(p, "http://a", "below")
    assert _one("ValueSet", "url:above=http://a/b/c") == UriQ(p, "http://a/b/c", "above")
    assert _refused("ValueSet", "url:contains=a").issues[0].message_id == "AEGIS-312"


def test_composite() -> None:
    node = _one("Observation", "code-value-quantity=http://loinc.org|8480-6$gt100")
    assert node == CompositeQ(Param("Observation", "code-value-quantity", "composite"), (
        TokenQ(Param("Observation", "code-value-quantity#0", "token"), "http://loinc.org", "8480-6"),
        QuantityQ(Param("Observation", "code-value-quantity#1", "quantity"), "gt", 100.0, 99.5, 100.5, None, None),
    ))
    node = _one("Observation", r"code-value-string=a\$b$x\$y")
    assert isinstance(node, CompositeQ)
    assert node.parts == (TokenQ(Param("Observation", "code-value-string#0", "token"), None, "a$b"),
                          StringQ(Param("Observation", "code-value-string#1", "string"), "x$y", "start"))
    node = _one("Observation", "code-value-date=1234$ge2020")
    assert isinstance(node, CompositeQ) and node.parts[1] == DateQ(
        Param("Observation", "code-value-date#1", "date"), "ge", *_dates("2020"))


@pytest.mark.parametrize("value", ["1234", "1234$5$6", "1234$"])
def test_composite_malformed(value: str) -> None:
    err = _refused("Observation", f"code-value-quantity={value}")
    assert err.issues[0].expression == ("code-value-quantity",)
    assert err.issues[0].message_id in ("AEGIS-320", "AEGIS-313")


# ---- :missing, modifiers, empty values --------------------------------------------------------------------------


def test_missing_on_every_type() -> None:
    for rtype, code, kind in [("Patient", "name", "string"), ("Patient", "gender", "token"),
                              ("Patient", "birthdate", "date"), ("Observation", "subject", "reference"),
                              ("Observation", "value-quantity", "quantity"), ("ValueSet", "url", "uri"),
                              ("Observation", "code-value-quantity", "composite"),
                              ("RiskAssessment", "probability", "number")]:
        assert _one(rtype, f"{code}:missing=true") == Missing(Param(rtype, code, kind), True)
        assert _one(rtype, f"{code}:missing=false") == Missing(Param(rtype, code, kind), False)
    assert _one("Patient", "gender:missing=true,false") == Or(
        (Missing(Param("Patient", "gender", "token"), True), Missing(Param("Patient", "gender", "token"), False)))


@pytest.mark.parametrize("value", ["yes", "", "True"])
def test_missing_takes_a_boolean(value: str) -> None:
    assert _refused("Patient", f"gender:missing={value}").issues[0].message_id == "AEGIS-321"


@pytest.mark.parametrize(("query", "fragment"), [
    ("birthdate:exact=1970", ":exact is not valid for date parameters"),
    ("name:not=x", ":not is not valid for string parameters"),
    ("name:foo=x", ":foo is not a modifier of string parameters"),
    ("gender:contains=x", ":contains is not valid for token parameters"),
    ("_lastUpdated:below=2020", ":below is not valid for date parameters"),
])
def test_bad_modifier(query: str, fragment: str) -> None:
    err = _refused("Patient", query, strict=False)  # not a matter of leniency: the request is wrong
    assert err.issues[0].expression == (query.split("=")[0],)
    assert err.issues[0].message_id == "AEGIS-312"
    assert fragment in err.issues[0].diagnostics


@pytest.mark.parametrize("query", ["name=", "name=a,", "gender=", "birthdate=", "_id=", "_text=", "_list=",
                                   "organization="])
def test_empty_values(query: str) -> None:
    err = _refused("Patient", query)
    assert err.issues[0].expression == (query.split("=")[0],)
    assert err.issues[0].message_id == "AEGIS-313"


# ---- common parameters ---------------------------------------------------------------------------------------------


def test_common_parameters() -> None:
    assert _one("Patient", "_id=a,b") == IdIn(("a", "b"))
    assert _one("Patient", "_id:not=a") == Not(IdIn(("a",)))
    assert _one("Patient", "_id:missing=true") == MatchNone()
    assert _one("Patient", "_id:missing=false") == MatchAll()
    assert _one("Patient", "_lastUpdated=gt2020") == DateQ(Param("Patient", "_lastUpdated", "date"), "gt",
                                                           *_dates("2020"))
    assert _one("Patient", "_tag=http://t|x") == TokenQ(Param("Patient", "_tag", "token"), "http://t", "x")
    assert _one("Patient", "_security=http://s|R") == TokenQ(Param("Patient", "_security", "token"), "http://s", "R")
    assert _one("Patient", "_profile=http://p") == UriQ(Param("Patient", "_profile", "uri"), "http://p", "eq")
    assert _one("Patient", "_source=http://src") == UriQ(Param("Patient", "_source", "uri"), "http://src", "eq")
    assert _one("Patient", "_text=Heart  ATTACK") == TextSearch("_text", "heart attack")
    assert _one("Patient", "_content=a,b") == Or((TextSearch("_content", "a"), TextSearch("_content", "b")))
    assert _one("Patient", "_list=42") == ListQ("42")
    assert _one("Patient", "_list=List/42,7") == Or((ListQ("42"), ListQ("7")))
    assert _one("Patient", "_tag:not=http://t|x") == Not(TokenQ(Param("Patient", "_tag", "token"), "http://t", "x"))


def test_common_parameter_modifiers() -> None:
    assert _refused("Patient", "_text:exact=x").issues[0].message_id == "AEGIS-312"
    assert _refused("Patient", "_id:exact=x").issues[0].message_id == "AEGIS-312"
    assert _refused("Patient", "_list=a/b").issues[0].message_id == "AEGIS-337"


def test_unsupported_common_features_are_unknown() -> None:
    r = _bind("Patient", "_list=$current-allergies&_filter=name eq x&_query=q&name=x")
    assert r.unknown == ("_list", "_filter", "_query")
    assert r.tree == And((StringQ(PN, "x", "start"),))
    assert _refused("Patient", "_filter=x", strict=True).issues[0].message_id == "AEGIS-311"
    assert _bind("Bundle", "_text=x").unknown == ("_text",)
    assert _bind("Location", "near=1|2|3|km").unknown == ("near",)
    assert _bind("Location", "near:missing=true").unknown == ("near:missing",)


# ---- chains and _has -----------------------------------------------------------------------------------------------


def test_typed_chain() -> None:
    subj = Param("Observation", "subject", "reference")
    assert _one("Observation", "subject:Patient.name=smith,jones") == Chain(subj, "Patient", Or(
        (StringQ(PN, "smith", "start"), StringQ(PN, "jones", "start"))))
    assert _one("Observation", "subject:Patient.birthdate:missing=true") == Chain(
        subj, "Patient", Missing(Param("Patient", "birthdate", "date"), True))


def test_untyped_chain_is_an_or_over_targets_that_have_the_parameter() -> None:
    subj = Param("Observation", "subject", "reference")
    # subject → Group | Device | Patient | Location; Group and Device have no 'name'
    assert _one("Observation", "subject.name=x") == Or((
        Chain(subj, "Location", StringQ(Param("Location", "name", "string"), "x", "start")),
        Chain(subj, "Patient", StringQ(PN, "x", "start")),
    ))
    # one candidate: no Or
    assert _one("Observation", "subject.birthdate=1970") == Chain(
        subj, "Patient", DateQ(Param("Patient", "birthdate", "date"), "eq", *_dates("1970")))


def test_multi_level_chain() -> None:
    node = _one("Observation", "subject:Patient.organization.name=acme")
    assert node == Chain(Param("Observation", "subject", "reference"), "Patient", Chain(
        Param("Patient", "organization", "reference"), "Organization",
        StringQ(Param("Organization", "name", "string"), "acme", "start")))


def test_chain_to_id() -> None:
    assert _one("Observation", "subject:Patient._id=1") == Chain(
        Param("Observation", "subject", "reference"), "Patient", IdIn(("1",)))


@pytest.mark.parametrize(("query", "message_id"), [
    ("code.name=x", "AEGIS-322"),  # not a reference
    ("subject:Foo.name=x", "AEGIS-322"),
    ("subject:Practitioner.name=x", "AEGIS-322"),  # not a target of subject
    ("subject:Patient.organization.partof.partof.partof.name=x", "AEGIS-338"),
    ("subject:Patient.birthdate=xx", "AEGIS-316"),  # the value is still judged
])
def test_chain_refused(query: str, message_id: str) -> None:
    err = _refused("Observation", query)
    assert err.issues[0].expression == (query.split("=")[0],)
    assert err.issues[0].message_id == message_id


def test_untyped_chain_needs_declared_targets() -> None:
    err = _refused("QuestionnaireResponse", "item-subject.name=x")
    assert err.issues[0].message_id == "AEGIS-322"
    assert "item-subject:Patient.name" in err.issues[0].diagnostics


def test_chain_to_unknown_parameter_is_unknown() -> None:
    assert _bind("Observation", "subject:Patient.nope=x").unknown == ("subject:Patient.nope",)
    assert _bind("Observation", "subject.nope=x").unknown == ("subject.nope",)
    assert _bind("Observation", "nope.name=x").unknown == ("nope.name",)
    err = _refused("Observation", "subject.nope=x", strict=True)
    assert err.issues[0].message_id == "AEGIS-310"


def test_has() -> None:
    obs_patient = Param("Observation", "patient", "reference")
    assert _one("Patient", "_has:Observation:patient:code=1234-5") == Has(
        "Observation", obs_patient, TokenQ(OC, None, "1234-5"))
    node = _one("Patient", "_has:Observation:patient:_has:Provenance:target:agent=Practitioner/1")
    assert node == Has("Observation", obs_patient, Has(
        "Provenance", Param("Provenance", "target", "reference"),
        RefQ(Param("Provenance", "agent", "reference"), "Practitioner", "1")))
    # _has then a chain on the source type
    node = _one("Patient", "_has:Observation:patient:performer:Practitioner.name=x")
    assert node == Has("Observation", obs_patient, Chain(
        Param("Observation", "performer", "reference"), "Practitioner",
        StringQ(Param("Practitioner", "name", "string"), "x", "start")))


@pytest.mark.parametrize(("query", "message_id"), [
    ("_has:Foo:patient:code=1", "AEGIS-323"),
    ("_has:Observation:code:code=1", "AEGIS-323"),  # not a reference
    ("_has:Observation:patient:code:exact=1", "AEGIS-312"),
])
def test_has_refused(query: str, message_id: str) -> None:
    assert _refused("Patient", query).issues[0].message_id == message_id


def test_has_reference_must_reach_the_searched_type() -> None:
    assert _refused("Practitioner", "_has:Observation:patient:code=1").issues[0].message_id == "AEGIS-323"


def test_has_unknown_parameters() -> None:
    assert _bind("Patient", "_has:Observation:nope:code=1").unknown == ("_has:Observation:nope:code",)
    assert _bind("Patient", "_has:Observation:patient:nope=1").unknown == ("_has:Observation:patient:nope",)


# ---- lenient and strict ---------------------------------------------------------------------------------------------


def test_lenient_drops_unknown_and_reports_them() -> None:
    r = _bind("Patient", "foo=1&name=x&bar:exact=2&foo=3&_sort=-birthdate,nope&_count=5")
    assert r.unknown == ("foo", "bar:exact", "_sort=nope")
    assert r.tree == And((StringQ(PN, "x", "start"),))
    assert r.sort == ((Param("Patient", "birthdate", "date"), True),)
    assert r.request.format() == "name=x&_sort=-birthdate&_count=5"


def test_strict_refuses_unknown() -> None:
    err = _refused("Patient", "name=x&foo=1", strict=True)
    assert err.status == 400
    assert err.issues[0].expression == ("foo",)
    assert err.issues[0].message_id == "AEGIS-310"
    err = _refused("Patient", "_sort=nope", strict=True)
    assert err.issues[0].expression == ("_sort",)
    assert err.issues[0].message_id == "AEGIS-333"


def test_only_unknown_clauses_match_all() -> None:
    assert _bind("Patient", "foo=1").tree == MatchAll()
    assert _bind("Patient", "").tree == MatchAll()


def test_sort() -> None:
    r = _bind("Observation", "_sort=date,-_lastUpdated,_id,code")
    assert r.sort == ((Param("Observation", "date", "date"), False),
                      (Param("Observation", "_lastUpdated", "date"), True),
                      (Param("Observation", "_id", "token"), False),
                      (Param("Observation", "code", "token"), False))
    assert _bind("Observation", "_sort=code-value-quantity").unknown == ("_sort=code-value-quantity",)


def test_includes_are_checked() -> None:
    r = _bind("Observation", "_include=Observation:patient&_include=Observation:nope&_include=Foo:x&"
                             "_include=Observation:subject:Practitioner&_include=*&_revinclude:iterate=Provenance:target&"
                             "_include=Observation:code&_include=Observation:*")
    assert r.unknown == ("_include=Observation:nope", "_include=Foo:x", "_include=Observation:subject:Practitioner",
                         "_include=Observation:code")
    assert r.request.format() == ("_include=Observation:patient&_include=*&_include=Observation:*&"
                                  "_revinclude:iterate=Provenance:target")
    err = _refused("Observation", "_include=Observation:nope", strict=True)
    assert err.issues[0].expression == ("_include",)
    assert err.issues[0].message_id == "AEGIS-339"


def test_contained() -> None:
    assert _bind("Patient", "_contained=false").unknown == ()
    assert _bind("Patient", "_contained=true&_containedType=contained").unknown == ("_contained",)


def test_base_url_is_optional() -> None:
    req = parse_request([("subject", f"{BASE}/Patient/1")])
    r = bind("Observation", req, strict=True)
    assert r.tree == And((RefQ(Param("Observation", "subject", "reference"), None, None, url=f"{BASE}/Patient/1"),))


# ---- system level -----------------------------------------------------------------------------------------------


def test_system_level_common_parameters() -> None:
    r = _bind(None, "_lastUpdated=gt2020&_id=1&_tag=a")
    assert r.tree == And((
        DateQ(Param(SYSTEM_RTYPE, "_lastUpdated", "date"), "gt", *_dates("2020")),
        IdIn(("1",)),
        TokenQ(Param(SYSTEM_RTYPE, "_tag", "token"), None, "a"),
    ))
    assert _bind(None, "name=x").unknown == ("name",)
    assert _bind(None, "").tree == MatchAll()


def test_system_level_types_with_common_parameters() -> None:
    r = _bind(None, "_type=Patient,Observation&_lastUpdated=gt2020")
    assert r.tree == And((TypeIn(("Patient", "Observation")),
                          DateQ(Param(SYSTEM_RTYPE, "_lastUpdated", "date"), "gt", *_dates("2020"))))
    assert _bind(None, "_type=Patient").tree == And((TypeIn(("Patient",)),))


def test_system_level_types_with_type_specific_parameters() -> None:
    r = _bind(None, "_type=Patient,Practitioner&name=x&_lastUpdated=gt2020&identifier=1")
    lu = _dates("2020")
    assert r.tree == Or(tuple(
        And((TypeIn((t,)), StringQ(Param(t, "name", "string"), "x", "start"),
             DateQ(Param(t, "_lastUpdated", "date"), "gt", *lu), TokenQ(Param(t, "identifier", "token"), None, "1")))
        for t in ("Patient", "Practitioner")))
    # birthdate is on Patient and Practitioner? no: Practitioner has none, so it is unknown for the pair
    r = _bind(None, "_type=Patient,Practitioner&name=x&birthdate=1970")
    assert r.unknown == ("birthdate",)
    r = _bind(None, "_type=Patient&gender=male")
    assert r.tree == And((TypeIn(("Patient",)), TokenQ(Param("Patient", "gender", "token"), None, "male")))


def test_system_level_text_on_non_domain_types() -> None:
    r = _bind(None, "_type=Patient,Bundle&_text=x&name=y")
    assert r.unknown == ("_text", "name")
    # _text is a DomainResource parameter: Bundle lacks it, so it is not common to the listed types
    r = _bind(None, "_type=Patient,Bundle&_text=x")
    assert r.unknown == ("_text",)
    assert r.tree == And((TypeIn(("Patient", "Bundle")),))
    r = _bind(None, "_type=Patient,Observation&_text=x")
    assert r.tree == And((TypeIn(("Patient", "Observation")), TextSearch("_text", "x")))


def test_system_level_sort_takes_common_parameters() -> None:
    r = _bind(None, "_type=Patient,Practitioner&_sort=-_lastUpdated,name")
    assert r.sort == ((Param(SYSTEM_RTYPE, "_lastUpdated", "date"), True),)
    assert r.unknown == ("_sort=name",)


def test_type_parameter_on_type_level_search() -> None:
    assert _bind("Patient", "_type=Patient&name=x").tree == And((StringQ(PN, "x", "start"),))
    err = _refused("Patient", "_type=Observation")
    assert err.issues[0].expression == ("_type",)
    assert err.issues[0].message_id == "AEGIS-334"
