"""The in-memory matcher (the backends' test oracle), node by node and operator by operator, on hand-made data."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.search.matcher import Dataset, IndexedResource, check_lowered, matches, search
from fhir_server.search.tree import (
    And,
    Chain,
    Cond,
    Has,
    IdIn,
    MatchAll,
    MatchNone,
    Missing,
    Node,
    Not,
    Or,
    Param,
    Row,
    TextSearch,
    TokenQ,
    TypeIn,
)
from fhir_server.search.values import (
    CompositeV,
    DateV,
    NumberV,
    QuantityV,
    ReferenceV,
    StringV,
    TokenV,
    UriV,
)

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"

# ---- parameters ----------------------------------------------------------------------------------------------------

P_NAME = Param("Patient", "name", "string")
P_ID = Param("Patient", "_id", "token")
P_GP = Param("Patient", "general-practitioner", "reference")
P_BIRTH = Param("Patient", "birthdate", "date")
P_LASTUPD = Param("Patient", "_lastUpdated", "date")
P_IDENT = Param("Patient", "identifier", "token")
PR_NAME = Param("Practitioner", "name", "string")
PR_ORG = Param("Practitioner", "organization", "reference")  # not a real R4 parameter; a second chain hop
ORG_NAME = Param("Organization", "name", "string")
O_CODE = Param("Observation", "code", "token")
O_SUBJECT = Param("Observation", "subject", "reference")
O_VALUE = Param("Observation", "value-quantity", "quantity")
O_CVQ = Param("Observation", "code-value-quantity", "composite")
O_PROB = Param("Observation", "probability", "number")  # illustrative number parameter
O_URL = Param("Observation", "instantiates", "uri")  # illustrative uri parameter
DR_RESULT = Param("DiagnosticReport", "result", "reference")
DR_STATUS = Param("DiagnosticReport", "status", "token")


def row(param: Param, *alts: tuple[Cond, ...]) -> Row:
    return Row(param, tuple(alts))


def c(fld: str, op: str, value: Any = None) -> Cond:
    return Cond(fld, op, value)


def ref(rtype: str | None, rid: str | None, url: str | None = None) -> ReferenceV:
    return ReferenceV(rtype, rid, url)


def s(text: str) -> StringV:
    return StringV(text.lower(), text)


def qty(value: float, code: str | None, system: str | None = UCUM, canon: float | None = None,
        canon_code: str | None = None) -> QuantityV:
    return QuantityV(value, value - 0.5, value + 0.5, system, code, code, canon,
                     None if canon is None else canon - 0.0005, None if canon is None else canon + 0.0005, canon_code)


# ---- a small world -------------------------------------------------------------------------------------------------
#
#   Organization/o1 "Acme Health"          Organization/o2 "Beta Clinic"
#   Practitioner/dr1 "Who" → o1            Practitioner/dr2 "Strange" → o2     Practitioner/dr3 "Nobody" → o-gone
#   Patient/p1 "Alice" → dr1 (birth 2000)  Patient/p2 "Bob" → dr2, dr3        Patient/p3 (no name, no gp)
#   Observation/ob1 glucose 100 mg/dL → p1, ob2 glucose 7 mmol/L → p2, ob3 (no code, no value) → Group/g1
#   DiagnosticReport/dr-a final → ob1     DiagnosticReport/dr-b preliminary → ob2

JAN_2000 = DateV(946684800_000000, 949363200_000000)


def world() -> Dataset:
    return Dataset([
        IndexedResource("Organization", "o1", {"name": [s("Acme Health")]}),
        IndexedResource("Organization", "o2", {"name": [s("Beta Clinic")]}),
        IndexedResource("Practitioner", "dr1", {"name": [s("Who")], "organization": [ref("Organization", "o1")]}),
        IndexedResource("Practitioner", "dr2", {"name": [s("Strange")], "organization": [ref("Organization", "o2")]}),
        IndexedResource("Practitioner", "dr3", {"name": [s("Nobody")],
                                                "organization": [ref("Organization", "o-gone")]}),
        IndexedResource("Patient", "p1", {
            "name": [s("Alice"), s("Liddell")],
            "general-practitioner": [ref("Practitioner", "dr1")],
            "birthdate": [JAN_2000],
            "_lastUpdated": [DateV(1_700_000_000_000000, 1_700_000_000_001000)],
            "identifier": [TokenV("urn:mrn", "123"), TokenV(None, "456")],
        }, text="alice liddell generated narrative", content="alice liddell female 2000 01"),
        IndexedResource("Patient", "p2", {
            "name": [s("Bob")],
            "general-practitioner": [ref("Practitioner", "dr2"), ref("Practitioner", "dr3")],
            "_lastUpdated": [DateV(1_800_000_000_000000, 1_800_000_000_001000)],
        }, text="bob", content="bob male"),
        IndexedResource("Patient", "p3", {}),
        IndexedResource("Observation", "ob1", {
            "code": [TokenV(LOINC, "2339-0", "glucose")],
            "subject": [ref("Patient", "p1")],
            "value-quantity": [qty(100, "mg/dL", canon=1000.0, canon_code="g/m3")],
            "code-value-quantity": [CompositeV((TokenV(LOINC, "2339-0"), qty(100, "mg/dL")))],
            "probability": [NumberV(0.25, 0.245, 0.255)],
            "instantiates": [UriV("http://example.org/fhir/ObservationDefinition/glucose")],
        }),
        IndexedResource("Observation", "ob2", {
            "code": [TokenV(LOINC, "15074-8", "glucose moles")],
            "subject": [ref("Patient", "p2")],
            "value-quantity": [qty(7, "mmol/L")],
            "code-value-quantity": [CompositeV((TokenV(LOINC, "15074-8"), qty(7, "mmol/L")))],
        }),
        IndexedResource("Observation", "ob3", {"subject": [ref("Group", "g1")]}),
        IndexedResource("DiagnosticReport", "dr-a", {"result": [ref("Observation", "ob1")],
                                                     "status": [TokenV("http://hl7.org/fhir/diagnostic-report-status",
                                                                       "final")]}),
        IndexedResource("DiagnosticReport", "dr-b", {"result": [ref("Observation", "ob2")],
                                                     "status": [TokenV("http://hl7.org/fhir/diagnostic-report-status",
                                                                       "preliminary")]}),
    ])


DATA = world()


def ids(rtype: str | None, node: Node, data: Dataset = DATA) -> list[str]:
    return [res.rid for res in search(rtype, node, data)]


# ---- Dataset and IndexedResource -----------------------------------------------------------------------------------


def test_dataset_lookup() -> None:
    assert DATA.get("Patient", "p1") is not None
    assert DATA.get("Patient", "ob1") is None  # ids are per type
    assert DATA.get("Observation", "ob1") is not None
    assert [r.rid for r in DATA.of_type("Practitioner")] == ["dr1", "dr2", "dr3"]
    assert len(DATA) == 13


def test_dataset_refuses_duplicates() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        Dataset([IndexedResource("Patient", "x"), IndexedResource("Patient", "x")])
    Dataset([IndexedResource("Patient", "x"), IndexedResource("Group", "x")])  # same id, other type: fine


def test_indexed_resource_validation() -> None:
    with pytest.raises(TypeError):
        IndexedResource("Patient", "x", {"name": ["Alice"]})  # type: ignore[list-item]
    with pytest.raises(TypeError):
        IndexedResource("Patient", "x", {"name": s("Alice")})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="_id"):
        IndexedResource("Patient", "x", {"_id": [TokenV(None, "y")]})
    IndexedResource("Patient", "x", {"_id": [TokenV(None, "x")]})  # consistent: accepted


# ---- Row and its operators -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("cond", "expected"), [
    (c("code", "=", "2339-0"), ["ob1"]),
    (c("code", "!=", "2339-0"), ["ob2"]),  # ob3 has no code value at all: nothing to be unequal
    (c("code", "<", "2339-0"), ["ob2"]),  # "15074-8" < "2339-0" by code point
    (c("code", "<=", "2339-0"), ["ob1", "ob2"]),
    (c("code", ">", "15074-8"), ["ob1"]),
    (c("code", ">=", "15074-8"), ["ob1", "ob2"]),
    (c("code", "prefix", "2339"), ["ob1"]),
    (c("code", "prefix", ""), ["ob1", "ob2"]),
    (c("code", "contains", "074"), ["ob2"]),
    (c("text", "contains", "glucose"), ["ob1", "ob2"]),
    (c("text", "prefix", "glucose m"), ["ob2"]),
    (c("system", "not-null"), ["ob1", "ob2"]),
    (c("system", "is-null"), []),
])
def test_row_ops_on_strings(cond: Cond, expected: list[str]) -> None:
    assert ids("Observation", row(O_CODE, (cond,))) == expected


@pytest.mark.parametrize(("cond", "expected"), [
    (c("value", "=", 100), ["ob1"]),
    (c("value", "!=", 100), ["ob2"]),
    (c("value", "<", 100), ["ob2"]),
    (c("value", "<=", 100), ["ob1", "ob2"]),
    (c("value", ">", 7), ["ob1"]),
    (c("value", ">=", 7), ["ob1", "ob2"]),
    (c("hi", ">", 100.4), ["ob1"]),
    (c("lo", "<=", 6.5), ["ob2"]),
])
def test_row_ops_on_numbers(cond: Cond, expected: list[str]) -> None:
    assert ids("Observation", row(O_VALUE, (cond,))) == expected


def test_prefix_and_contains_are_case_sensitive() -> None:
    # Strings are normalised at extraction; the operators compare what is stored, exactly.
    assert ids("Patient", row(P_NAME, (c("exact", "prefix", "Ali"),))) == ["p1"]
    assert ids("Patient", row(P_NAME, (c("exact", "prefix", "ali"),))) == []
    assert ids("Patient", row(P_NAME, (c("norm", "prefix", "ali"),))) == ["p1"]
    assert ids("Patient", row(P_NAME, (c("exact", "contains", "DDE"),))) == []
    assert ids("Patient", row(P_NAME, (c("norm", "contains", "dde"),))) == ["p1"]


@pytest.mark.parametrize("op", ["=", "!=", "<", "<=", ">", ">=", "prefix", "contains"])
def test_none_field_satisfies_no_comparison(op: str) -> None:
    # SQL NULL semantics: a token without a system is neither equal nor unequal to any system.
    res = IndexedResource("Patient", "x", {"identifier": [TokenV(None, "456")]})
    data = Dataset([res])
    assert not matches(row(P_IDENT, (c("system", op, "urn:mrn"),)), res, data)
    assert matches(row(P_IDENT, (c("system", "is-null"),)), res, data)
    assert not matches(row(P_IDENT, (c("system", "not-null"),)), res, data)


@pytest.mark.parametrize("op", ["=", "!=", "<", "<=", ">", ">="])
def test_none_operand_satisfies_no_comparison(op: str) -> None:
    # ``field = NULL`` is never true in SQL either; the rewrite passes must use is-null.
    res = DATA.get("Patient", "p1")
    assert res is not None
    assert not matches(row(P_IDENT, (c("system", op, None),)), res, DATA)


def test_none_canonical_quantity() -> None:
    # ob2's mmol/L has no canonical form here: a canonical comparison neither matches nor anti-matches it.
    assert ids("Observation", row(O_VALUE, (c("canon_value", ">", 0),))) == ["ob1"]
    assert ids("Observation", row(O_VALUE, (c("canon_value", "<=", 0),))) == []
    assert ids("Observation", Not(row(O_VALUE, (c("canon_value", ">", 0),)))) == ["ob2", "ob3"]
    assert ids("Observation", row(O_VALUE, (c("canon_code", "is-null"),))) == ["ob2"]


def test_row_conditions_hold_on_one_value() -> None:
    # p1 has urn:mrn|123 and (no system)|456: system and code must come from the same identifier.
    assert ids("Patient", row(P_IDENT, (c("system", "=", "urn:mrn"), c("code", "=", "123")))) == ["p1"]
    assert ids("Patient", row(P_IDENT, (c("system", "=", "urn:mrn"), c("code", "=", "456")))) == []
    assert ids("Patient", row(P_IDENT, (c("system", "is-null"), c("code", "=", "456")))) == ["p1"]


def test_row_alternatives_or() -> None:
    node = row(O_CODE, (c("code", "=", "nope"),), (c("system", "=", LOINC), c("code", "=", "15074-8")))
    assert ids("Observation", node) == ["ob2"]
    assert ids("Observation", row(O_CODE)) == []  # no alternatives: nothing
    assert ids("Observation", row(O_CODE, ())) == ["ob1", "ob2"]  # an empty alternative: any value


def test_row_other_families() -> None:
    assert ids("Patient", row(P_BIRTH, (c("lo", "<=", 946684800_000000), c("hi", ">", 946684800_000000)))) == ["p1"]
    assert ids("Patient", row(P_LASTUPD, (c("lo", ">=", 1_750_000_000_000000),))) == ["p2"]
    assert ids("Observation", row(O_PROB, (c("value", "<", 0.3),))) == ["ob1"]
    assert ids("Observation", row(O_URL, (c("uri", "prefix", "http://example.org/fhir/"),))) == ["ob1"]
    assert ids("Observation", row(O_SUBJECT, (c("target_type", "=", "Group"),))) == ["ob3"]
    assert ids("Observation", row(O_SUBJECT, (c("url", "is-null"), c("target_id", "=", "p2")))) == ["ob2"]


def test_row_on_another_type_has_no_values() -> None:
    # A parameter bound on Patient has no values on a Practitioner, even one with a "name".
    assert ids(None, row(P_NAME, (c("norm", "prefix", ""),))) == ["p1", "p2"]
    pr = DATA.get("Practitioner", "dr1")
    assert pr is not None
    assert not matches(row(P_NAME, (c("norm", "=", "who"),)), pr, DATA)
    assert matches(row(PR_NAME, (c("norm", "=", "who"),)), pr, DATA)


def test_id_is_the_resource_id() -> None:
    assert ids("Patient", row(P_ID, (c("code", "=", "p3"),))) == ["p3"]
    assert ids("Patient", row(P_ID, (c("system", "is-null"), c("code", "prefix", "p"),))) == ["p1", "p2", "p3"]
    assert ids("Patient", Missing(P_ID, True)) == []


def test_composite_components_on_one_value() -> None:
    glucose_over_50 = row(O_CVQ, (c("0.system", "=", LOINC), c("0.code", "=", "2339-0"), c("1.value", ">", 50),
                                  c("1.code", "=", "mg/dL")))
    assert ids("Observation", glucose_over_50) == ["ob1"]
    # ob2's code with ob1's value: there is no single composite value with both
    mixed = row(O_CVQ, (c("0.code", "=", "15074-8"), c("1.value", ">", 50)))
    assert ids("Observation", mixed) == []
    assert ids("Observation", row(O_CVQ, (c("1.canon_value", "is-null"),))) == ["ob1", "ob2"]


@pytest.mark.parametrize(("param", "fld"), [(O_CVQ, "code"), (O_CVQ, "x.code"), (O_CVQ, "0.nope"), (O_CODE, "nope"),
                                            (O_CODE, "0.code")])
def test_unknown_fields_are_refused(param: Param, fld: str) -> None:
    ob1 = DATA.get("Observation", "ob1")
    assert ob1 is not None
    with pytest.raises(ValueError):
        matches(row(param, (c(fld, "is-null"),)), ob1, DATA)


def test_malformed_conditions_and_values_are_refused() -> None:
    ob1 = DATA.get("Observation", "ob1")
    assert ob1 is not None
    with pytest.raises(ValueError, match="operator"):
        matches(row(O_CODE, (c("code", "~", "x"),)), ob1, DATA)
    with pytest.raises(TypeError, match="strings"):
        matches(row(O_VALUE, (c("value", "prefix", "1"),)), ob1, DATA)
    with pytest.raises(TypeError, match="holds"):  # code indexed as a quantity: extraction/binding mismatch
        matches(row(Param("Observation", "value-quantity", "token"), (c("code", "=", "x"),)), ob1, DATA)


# ---- Missing and Not -----------------------------------------------------------------------------------------------


def test_missing() -> None:
    assert ids("Patient", Missing(P_NAME, True)) == ["p3"]
    assert ids("Patient", Missing(P_NAME, False)) == ["p1", "p2"]
    assert ids("Observation", Missing(O_CODE, True)) == ["ob3"]
    # an empty list is the same as no entry
    res = IndexedResource("Patient", "e", {"name": []})
    assert matches(Missing(P_NAME, True), res, Dataset([res]))


def test_missing_on_another_type() -> None:
    ob1 = DATA.get("Observation", "ob1")
    assert ob1 is not None
    assert matches(Missing(P_NAME, True), ob1, DATA)
    assert not matches(Missing(P_NAME, False), ob1, DATA)


def test_not_over_row_includes_resources_without_values() -> None:
    not_glucose = Not(row(O_CODE, (c("code", "=", "2339-0"),)))
    assert ids("Observation", not_glucose) == ["ob2", "ob3"]
    not_alice = Not(row(P_NAME, (c("norm", "prefix", "ali"),)))
    assert ids("Patient", not_alice) == ["p2", "p3"]
    assert ids("Patient", Not(Not(not_alice))) == ["p2", "p3"]
    assert ids("Patient", Not(Missing(P_NAME, True))) == ["p1", "p2"]


def test_and_or() -> None:
    alice = row(P_NAME, (c("norm", "=", "alice"),))
    bob = row(P_NAME, (c("norm", "=", "bob"),))
    born_2000 = row(P_BIRTH, (c("lo", ">=", JAN_2000.lo),))
    assert ids("Patient", Or((alice, bob))) == ["p1", "p2"]
    assert ids("Patient", And((alice, born_2000))) == ["p1"]
    assert ids("Patient", And((bob, born_2000))) == []
    assert ids("Patient", Or((And((bob, born_2000)), Missing(P_NAME, True)))) == ["p3"]
    assert ids("Patient", And(())) == ["p1", "p2", "p3"]
    assert ids("Patient", Or(())) == []


def test_constants_ids_types() -> None:
    assert ids("Patient", MatchAll()) == ["p1", "p2", "p3"]
    assert ids("Patient", MatchNone()) == []
    assert ids("Patient", IdIn(("p3", "p1", "ob1"))) == ["p1", "p3"]
    assert ids(None, IdIn(("ob1", "o2"))) == ["ob1", "o2"]
    assert ids(None, TypeIn(("Organization", "DiagnosticReport"))) == ["dr-a", "dr-b", "o1", "o2"]
    assert ids("Patient", TypeIn(("Organization",))) == []
    assert ids(None, IdIn(())) == []


# ---- chains --------------------------------------------------------------------------------------------------------


def test_chain_one_level() -> None:
    named_bob = row(P_NAME, (c("norm", "=", "bob"),))
    assert ids("Observation", Chain(O_SUBJECT, "Patient", named_bob)) == ["ob2"]
    assert ids("Observation", Chain(O_SUBJECT, "Patient", MatchAll())) == ["ob1", "ob2"]
    # ob3's subject is a Group (and not in the data set): no chain through Patient or Group
    assert ids("Observation", Chain(O_SUBJECT, "Group", MatchAll())) == []


def test_chain_target_type_is_exact() -> None:
    data = Dataset([
        IndexedResource("Patient", "x", {"name": [s("Xena")]}),
        IndexedResource("Group", "x", {}),
        IndexedResource("Observation", "typed", {"subject": [ref("Patient", "x")]}),
        IndexedResource("Observation", "untyped", {"subject": [ref(None, "x", "http://elsewhere/Patient/x")]}),
        IndexedResource("Observation", "no-id", {"subject": [ref("Patient", None, "http://elsewhere/Patient/x")]}),
    ])
    assert ids("Observation", Chain(O_SUBJECT, "Patient", MatchAll()), data) == ["typed"]
    assert ids("Observation", Chain(O_SUBJECT, "Group", MatchAll()), data) == []


def test_chain_to_a_missing_resource_never_matches() -> None:
    # dr3's organization o-gone does not exist: not even Not(...) inside the chain lets it through.
    assert ids("Practitioner", Chain(PR_ORG, "Organization", MatchAll())) == ["dr1", "dr2"]
    assert ids("Practitioner", Chain(PR_ORG, "Organization", Not(MatchAll()))) == []
    assert ids("Practitioner", Not(Chain(PR_ORG, "Organization", MatchAll()))) == ["dr3"]


def test_chain_two_levels() -> None:
    # Observation?subject:Patient.general-practitioner:Practitioner.organization:Organization.name=acme
    acme = row(ORG_NAME, (c("norm", "prefix", "acme"),))
    node = Chain(O_SUBJECT, "Patient", Chain(P_GP, "Practitioner", Chain(PR_ORG, "Organization", acme)))
    assert ids("Observation", node) == ["ob1"]
    beta = row(ORG_NAME, (c("norm", "prefix", "beta"),))
    node = Chain(O_SUBJECT, "Patient", Chain(P_GP, "Practitioner", Chain(PR_ORG, "Organization", beta)))
    assert ids("Observation", node) == ["ob2"]  # p2 has two practitioners; one of them reaches Beta


def test_chain_any_reference_suffices() -> None:
    # p2 → dr2 (Strange), dr3 (Nobody): Patient?general-practitioner.name=nobody finds p2 through its second reference
    assert ids("Patient", Chain(P_GP, "Practitioner", row(PR_NAME, (c("norm", "=", "nobody"),)))) == ["p2"]
    # and Not over the chain is "no practitioner named Nobody", not "some practitioner not named Nobody"
    assert ids("Patient", Not(Chain(P_GP, "Practitioner", row(PR_NAME, (c("norm", "=", "nobody"),))))) == ["p1", "p3"]


# ---- _has ----------------------------------------------------------------------------------------------------------


def test_has() -> None:
    glucose = row(O_CODE, (c("code", "=", "2339-0"),))
    assert ids("Patient", Has("Observation", O_SUBJECT, glucose)) == ["p1"]
    assert ids("Patient", Has("Observation", O_SUBJECT, MatchAll())) == ["p1", "p2"]
    assert ids("Patient", Not(Has("Observation", O_SUBJECT, MatchAll()))) == ["p3"]
    # the reference must point at this type too: Group/g1 ← ob3, but no Patient/g1
    assert ids("Group", Has("Observation", O_SUBJECT, MatchAll()),
               Dataset([*DATA, IndexedResource("Group", "g1"), IndexedResource("Patient", "g1")])) == ["g1"]


def test_has_condition_and_reference_on_the_same_source() -> None:
    data = Dataset([
        IndexedResource("Patient", "a"),
        IndexedResource("Patient", "b"),
        # refers to a, but is not glucose
        IndexedResource("Observation", "x", {"subject": [ref("Patient", "a")], "code": [TokenV(LOINC, "other")]}),
        # is glucose, but refers to b
        IndexedResource("Observation", "y", {"subject": [ref("Patient", "b")], "code": [TokenV(LOINC, "2339-0")]}),
    ])
    glucose = row(O_CODE, (c("code", "=", "2339-0"),))
    assert ids("Patient", Has("Observation", O_SUBJECT, glucose), data) == ["b"]


def test_has_nested() -> None:
    # Patient?_has:Observation:subject:_has:DiagnosticReport:result:status=final
    final = row(DR_STATUS, (c("code", "=", "final"),))
    node = Has("Observation", O_SUBJECT, Has("DiagnosticReport", DR_RESULT, final))
    assert ids("Patient", node) == ["p1"]
    node = Has("Observation", O_SUBJECT, Has("DiagnosticReport", DR_RESULT, MatchAll()))
    assert ids("Patient", node) == ["p1", "p2"]
    node = Has("Observation", O_SUBJECT, Not(Has("DiagnosticReport", DR_RESULT, final)))
    assert ids("Patient", node) == ["p2"]


def test_has_inside_chain_and_chain_inside_has() -> None:
    # Observations whose patient has a final report on some observation
    final = row(DR_STATUS, (c("code", "=", "final"),))
    node: Node = Chain(O_SUBJECT, "Patient", Has("Observation", O_SUBJECT, Has("DiagnosticReport", DR_RESULT, final)))
    assert ids("Observation", node) == ["ob1"]
    # Practitioners who are the GP of a patient named Bob
    node = Has("Patient", P_GP, row(P_NAME, (c("norm", "=", "bob"),)))
    assert ids("Practitioner", node) == ["dr2", "dr3"]
    # Patients with an observation whose subject is named Alice (i.e. themselves)
    node = Has("Observation", O_SUBJECT, Chain(O_SUBJECT, "Patient", row(P_NAME, (c("norm", "=", "alice"),))))
    assert ids("Patient", node) == ["p1"]


def test_has_parameter_must_belong_to_the_source_type() -> None:
    p1 = DATA.get("Patient", "p1")
    assert p1 is not None
    with pytest.raises(ValueError, match="bound on"):
        matches(Has("DiagnosticReport", O_SUBJECT, MatchAll()), p1, DATA)


# ---- _text / _content ----------------------------------------------------------------------------------------------


def test_text_search() -> None:
    assert ids("Patient", TextSearch("_text", "alice")) == ["p1"]
    assert ids("Patient", TextSearch("_text", "ddel ali")) == ["p1"]  # every word, as a substring, in any order
    assert ids("Patient", TextSearch("_text", "alice bob")) == []
    assert ids("Patient", TextSearch("_text", "female")) == []  # not in the narrative …
    assert ids("Patient", TextSearch("_content", "female")) == ["p1"]  # … but in the content
    assert ids("Patient", TextSearch("_content", "male")) == ["p1", "p2"]  # substring: "female" contains "male"
    assert ids("Patient", TextSearch("_text", "  ")) == ["p1", "p2", "p3"]  # no words: no constraint
    with pytest.raises(ValueError):
        ids("Patient", TextSearch("_narrative", "x"))


# ---- search and refusals -------------------------------------------------------------------------------------------


def test_search_scope_and_order() -> None:
    every = search(None, MatchAll(), DATA)
    assert len(every) == len(DATA)
    assert [r.key for r in every] == sorted(r.key for r in DATA)
    assert ids("Organization", MatchAll()) == ["o1", "o2"]
    assert ids("Nothing", MatchAll()) == []


def test_unlowered_nodes_are_refused() -> None:
    p1 = DATA.get("Patient", "p1")
    assert p1 is not None
    with pytest.raises(TypeError, match="lowered"):
        matches(TokenQ(P_IDENT, "urn:mrn", "123"), p1, DATA)
    with pytest.raises(TypeError, match="lowered"):
        matches(And((MatchAll(), TokenQ(P_IDENT, "urn:mrn", "123"))), p1, DATA)
    # search() checks the whole tree first, so a query node cannot hide behind a short-circuit or absent data
    hidden = Or((MatchAll(), Chain(O_SUBJECT, "Patient", TokenQ(P_IDENT, "urn:mrn", "123"))))
    with pytest.raises(TypeError, match="lowered"):
        search("Observation", hidden, Dataset())
    check_lowered(Not(Has("Observation", O_SUBJECT, And((row(O_CODE, ()), Missing(O_CODE, True))))))
