"""Search by parameter type over real HTTP: string, token, reference, date, number, quantity, uri, composite and
``:missing``; OR with commas and AND with repeated parameters.

Every test works in its own :class:`Scope` (a unique tag ANDed into each search), so the expected result sets are
exact. Spec: http://hl7.org/fhir/R4/search.html#ptypes.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api._search import Params, Scope
from tests.api._util import ident, token, uid

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


@pytest.fixture()
def scope(client: httpx.Client) -> Scope:
    return Scope(client)


class Made(dict[str, str]):
    """name → id of what a test created; ``made("a b")`` is the id set of the named resources."""

    def __call__(self, names: str) -> set[str]:
        return {self[n] for n in names.split()}


def seed(scope: Scope, resources: dict[str, dict[str, Any]]) -> Made:
    made = Made()
    for name, res in resources.items():
        made[name] = scope.create(res)["id"]
    return made


def expect(scope: Scope, rtype: str, params: Params, made: Made, names: str) -> None:
    got = scope.idset(rtype, params)
    want = made(names) if names else set()
    by_id = {v: k for k, v in made.items()}
    assert got == want, (params, sorted(by_id.get(i, i) for i in got), sorted(names.split()))


def cc(code: str, system: str = "urn:aegis-test:cs", display: str | None = None,
       text: str | None = None) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    out: dict[str, Any] = {"coding": [coding]}
    if text:
        out["text"] = text
    return out


def obs(code: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": code or cc("x"), **extra}


def pat(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", **extra}


# --- string -------------------------------------------------------------------------------------------------------


@pytest.fixture()
def people(scope: Scope) -> Made:
    return seed(scope, {
        "mueller": pat(name=[{"family": "Müller", "given": ["Jürgen"]}]),
        "muller": pat(name=[{"family": "MULLER", "given": ["Anna", "Maria"]}]),
        "mullins": pat(name=[{"family": "Mullins", "given": ["Éloïse"]}]),
        "vandermull": pat(name=[{"family": "van der Mull", "prefix": ["Dr"]}]),
        "text": pat(name=[{"text": "Peter Muller-Smith"}]),
        "none": pat(gender="other"),
    })


@pytest.mark.parametrize(("value", "names"), [
    ("Müller", "mueller muller"),
    ("muller", "mueller muller"),
    ("MUL", "mueller muller mullins"),
    ("mül", "mueller muller mullins"),
    ("mull", "mueller muller mullins"),
    ("muller-", ""),
    ("ller", ""),
    ("van", "vandermull"),
    ("van der mu", "vandermull"),
    ("VAN   DER", "vandermull"),
    ("mull,van", "mueller muller mullins vandermull"),
])
def test_string_default_is_case_and_accent_insensitive_starts_with(scope: Scope, people: Made, value: str,
                                                                    names: str) -> None:
    expect(scope, "Patient", {"family": value}, people, names)


def test_string_name_covers_every_part(scope: Scope, people: Made) -> None:
    expect(scope, "Patient", {"name": "jurgen"}, people, "mueller")
    expect(scope, "Patient", {"name": "maria"}, people, "muller")
    expect(scope, "Patient", {"name": "eloise"}, people, "mullins")
    expect(scope, "Patient", {"name": "dr"}, people, "vandermull")
    expect(scope, "Patient", {"name": "peter"}, people, "text")
    expect(scope, "Patient", {"given": "ANNA"}, people, "muller")


@pytest.mark.parametrize(("value", "names"), [
    ("Müller", "mueller"),
    ("MULLER", "muller"),
    ("muller", ""),
    ("Mül", ""),
    ("Muller", ""),
    ("van der Mull", "vandermull"),
    ("Müller,Mullins", "mueller mullins"),
])
def test_string_exact(scope: Scope, people: Made, value: str, names: str) -> None:
    expect(scope, "Patient", {"family:exact": value}, people, names)


@pytest.mark.parametrize(("value", "names"), [
    ("ller", "mueller muller"),
    ("LLI", "mullins"),
    ("der", "vandermull"),
    ("uLl", "mueller muller mullins vandermull"),
    ("zzz", ""),
])
def test_string_contains(scope: Scope, people: Made, value: str, names: str) -> None:
    expect(scope, "Patient", {"family:contains": value}, people, names)


def test_string_contains_on_name_and_address(scope: Scope) -> None:
    made = seed(scope, {
        "a": pat(name=[{"text": "Peter Muller-Smith"}], address=[{"city": "Sankt Pölten"}]),
        "b": pat(address=[{"line": ["12 Polten Road"], "city": "Leeds"}]),
    })
    expect(scope, "Patient", {"name:contains": "smith"}, made, "a")
    expect(scope, "Patient", {"address:contains": "POLTEN"}, made, "a b")
    expect(scope, "Patient", {"address": "12 pol"}, made, "b")
    expect(scope, "Patient", {"address": "polten"}, made, "")
    expect(scope, "Patient", {"address-city": "sankt p"}, made, "a")


# --- token --------------------------------------------------------------------------------------------------------


@pytest.fixture()
def coded(scope: Scope) -> Made:
    sys_a, sys_b = "urn:aegis-test:sys-a", "urn:aegis-test:sys-b"
    return seed(scope, {
        "a1": obs({"coding": [{"system": sys_a, "code": "1", "display": "Systolic blood pressure"}]}),
        "b1": obs({"coding": [{"system": sys_b, "code": "1"}], "text": "Diastolic reading"}),
        "nosys": obs({"coding": [{"code": "1"}]}),
        "a2": obs({"coding": [{"system": sys_a, "code": "2"}, {"system": sys_b, "code": "9"}]}),
        "textonly": obs({"text": "Blood glucose"}),
    })


@pytest.mark.parametrize(("value", "names"), [
    ("1", "a1 b1 nosys"),
    ("urn:aegis-test:sys-a|1", "a1"),
    ("urn:aegis-test:sys-b|1", "b1"),
    ("|1", "nosys"),
    ("urn:aegis-test:sys-a|", "a1 a2"),
    ("urn:aegis-test:sys-b|9", "a2"),
    ("urn:aegis-test:sys-a|9", ""),
    ("2,urn:aegis-test:sys-b|1", "a2 b1"),
    ("urn:aegis-test:sys-c|1", ""),
])
def test_token_forms(scope: Scope, coded: Made, value: str, names: str) -> None:
    expect(scope, "Observation", {"code": value}, coded, names)


@pytest.mark.parametrize(("value", "names"), [
    ("blood", "a1 textonly"),
    ("BLOOD PRESS", "a1"),
    ("diastolic", "b1"),
    ("glucose", "textonly"),
    ("pressure", "a1"),
    ("nothing", ""),
])
def test_token_text(scope: Scope, coded: Made, value: str, names: str) -> None:
    """``:text`` searches the CodeableConcept's text and the codings' display."""
    expect(scope, "Observation", {"code:text": value}, coded, names)


def test_token_not(scope: Scope, coded: Made) -> None:
    """``:not``: every resource without a matching coding, including those with no code value at all."""
    expect(scope, "Observation", {"code:not": "1"}, coded, "a2 textonly")
    expect(scope, "Observation", {"code:not": "urn:aegis-test:sys-a|1"}, coded, "b1 nosys a2 textonly")
    expect(scope, "Observation", {"code:not": "urn:aegis-test:sys-b|"}, coded, "a1 nosys textonly")
    made = seed(scope, {"f": pat(gender="female"), "m": pat(gender="male"), "u": pat()})
    expect(scope, "Patient", {"gender:not": "male"}, made, "f u")
    expect(scope, "Patient", [("gender:not", "male"), ("gender:not", "female")], made, "u")


def test_token_on_booleans_identifiers_and_telecom(scope: Scope) -> None:
    i1, i2 = ident(), ident()
    made = seed(scope, {
        "active": pat(active=True, identifier=[i1], telecom=[{"system": "phone", "value": "+1 555 0100"}]),
        "inactive": pat(active=False, identifier=[i2, {"value": "bare-" + i2["value"]}],
                        telecom=[{"system": "email", "value": "x@example.org"}]),
        "unknown": pat(),
    })
    expect(scope, "Patient", {"active": "true"}, made, "active")
    expect(scope, "Patient", {"active": "false"}, made, "inactive")
    expect(scope, "Patient", {"active:not": "true"}, made, "inactive unknown")
    expect(scope, "Patient", {"identifier": token(i1)}, made, "active")
    expect(scope, "Patient", {"identifier": i2["value"]}, made, "inactive")
    expect(scope, "Patient", {"identifier": f"|bare-{i2['value']}"}, made, "inactive")
    expect(scope, "Patient", {"identifier": f"|{i2['value']}"}, made, "")
    expect(scope, "Patient", {"phone": "+1 555 0100"}, made, "active")
    expect(scope, "Patient", {"telecom": "phone|+1 555 0100"}, made, "active")
    expect(scope, "Patient", {"email": "x@example.org"}, made, "inactive")
    expect(scope, "Patient", {"phone": "x@example.org"}, made, "")


def test_token_of_type(scope: Scope) -> None:
    value = uid()
    made = seed(scope, {
        "mr": pat(identifier=[{"type": cc("MR", V2_0203), "system": "urn:hospital", "value": value}]),
        "dl": pat(identifier=[{"type": cc("DL", V2_0203), "system": "urn:dmv", "value": value}]),
        "mixed": pat(identifier=[{"type": cc("MR", V2_0203), "value": "other-" + value},
                                 {"type": cc("DL", V2_0203), "value": "mixed-" + value}]),
        "untyped": pat(identifier=[{"value": value}]),
    })
    expect(scope, "Patient", {"identifier:of-type": f"{V2_0203}|MR|{value}"}, made, "mr")
    expect(scope, "Patient", {"identifier:of-type": f"{V2_0203}|DL|{value}"}, made, "dl")
    # type and value must come from the same identifier
    expect(scope, "Patient", {"identifier:of-type": f"{V2_0203}|MR|mixed-{value}"}, made, "")
    expect(scope, "Patient", {"identifier:of-type": f"{V2_0203}|DL|mixed-{value}"}, made, "mixed")
    expect(scope, "Patient", {"identifier:of-type": f"{V2_0203}|MR|{value},{V2_0203}|DL|{value}"}, made, "mr dl")
    expect(scope, "Patient", {"identifier": value}, made, "mr dl untyped")


@pytest.fixture()
def terminology(client: httpx.Client, scope: Scope) -> dict[str, str]:
    """A stored CodeSystem with a hierarchy, and ValueSets over it (by concept list, by filter, and another system)."""
    system = f"http://example.org/fhir/CodeSystem/{scope.code}"
    vs_list = f"http://example.org/fhir/ValueSet/{scope.code}-list"
    vs_filter = f"http://example.org/fhir/ValueSet/{scope.code}-filter"
    scope.create({
        "resourceType": "CodeSystem", "url": system, "status": "active", "content": "complete",
        "hierarchyMeaning": "is-a",
        "concept": [
            {"code": "disorder", "concept": [
                {"code": "heart", "concept": [{"code": "mi"}, {"code": "angina"}]},
                {"code": "lung", "concept": [{"code": "asthma"}]},
            ]},
            {"code": "finding"},
        ],
    })
    scope.create({"resourceType": "ValueSet", "url": vs_list, "status": "active", "compose": {"include": [
        {"system": system, "concept": [{"code": "mi"}, {"code": "asthma"}]},
        {"system": "urn:aegis-test:other", "concept": [{"code": "x"}]},
    ]}})
    scope.create({"resourceType": "ValueSet", "url": vs_filter, "status": "active", "compose": {"include": [
        {"system": system, "filter": [{"property": "concept", "op": "is-a", "value": "heart"}]},
    ]}})
    return {"system": system, "list": vs_list, "filter": vs_filter}


@pytest.fixture()
def conditions(scope: Scope, terminology: dict[str, str]) -> Made:
    system = terminology["system"]
    return seed(scope, {
        code: {"resourceType": "Condition", "subject": {"reference": "Patient/x"}, "code": cc(code, system)}
        for code in ("disorder", "heart", "mi", "angina", "lung", "asthma", "finding")
    } | {
        "other-x": {"resourceType": "Condition", "subject": {"reference": "Patient/x"},
                    "code": cc("x", "urn:aegis-test:other")},
        "nocode": {"resourceType": "Condition", "subject": {"reference": "Patient/x"}},
    })


def test_token_in_and_not_in_a_stored_value_set(scope: Scope, terminology: dict[str, str],
                                                 conditions: Made) -> None:
    expect(scope, "Condition", {"code:in": terminology["list"]}, conditions, "mi asthma other-x")
    expect(scope, "Condition", {"code:in": terminology["filter"]}, conditions, "heart mi angina")
    expect(scope, "Condition", {"code:in": f"{terminology['list']},{terminology['filter']}"}, conditions,
           "mi asthma other-x heart angina")
    expect(scope, "Condition", {"code:not-in": terminology["filter"]}, conditions,
           "disorder lung asthma finding other-x nocode")
    expect(scope, "Condition", [("code:in", terminology["list"]), ("code:not-in", terminology["filter"])],
           conditions, "asthma other-x")


def test_token_above_and_below_a_stored_code_system(scope: Scope, terminology: dict[str, str],
                                                    conditions: Made) -> None:
    system = terminology["system"]
    expect(scope, "Condition", {"code:below": f"{system}|heart"}, conditions, "heart mi angina")
    expect(scope, "Condition", {"code:below": f"{system}|disorder"}, conditions,
           "disorder heart mi angina lung asthma")
    expect(scope, "Condition", {"code:below": f"{system}|asthma"}, conditions, "asthma")
    expect(scope, "Condition", {"code:above": f"{system}|mi"}, conditions, "mi heart disorder")
    expect(scope, "Condition", {"code:above": f"{system}|finding"}, conditions, "finding")
    expect(scope, "Condition", {"code:below": f"{system}|no-such-code"}, conditions, "")


def test_unknown_value_set_or_code_system_is_400(client: httpx.Client) -> None:
    from tests.api._util import assert_error

    assert_error(client.get("/Condition", params={"code:in": f"http://example.org/ValueSet/{uid()}"}), 400,
                 expression="code:in")
    assert_error(client.get("/Condition", params={"code:below": f"http://example.org/CodeSystem/{uid()}|x"}), 400,
                 expression="code:below")


# --- reference ----------------------------------------------------------------------------------------------------


def test_reference_forms(client: httpx.Client, scope: Scope, server: Any) -> None:
    p1 = scope.create(pat())["id"]
    p2 = scope.create(pat())["id"]
    group = scope.create({"resourceType": "Group", "type": "person", "actual": True})["id"]
    made = seed(scope, {
        "o1": obs(subject={"reference": f"Patient/{p1}"}),
        "o1abs": obs(subject={"reference": f"{server.base}/Patient/{p1}"}),
        "o2": obs(subject={"reference": f"Patient/{p2}"}),
        "og": obs(subject={"reference": f"Group/{group}"}),
        "ext": obs(subject={"reference": "http://other.example.org/fhir/Patient/77"}),
        "ident": obs(subject={"identifier": {"system": "urn:mrn", "value": f"mrn-{scope.code}"}}),
        "none": obs(),
    })
    expect(scope, "Observation", {"subject": f"Patient/{p1}"}, made, "o1 o1abs")
    expect(scope, "Observation", {"subject": p1}, made, "o1 o1abs")
    expect(scope, "Observation", {"subject": f"{server.base}/Patient/{p1}"}, made, "o1 o1abs")
    expect(scope, "Observation", {"subject:Patient": p1}, made, "o1 o1abs")
    expect(scope, "Observation", {"subject:Group": p1}, made, "")
    expect(scope, "Observation", {"subject:Group": group}, made, "og")
    expect(scope, "Observation", {"subject": f"Patient/{p1},Patient/{p2}"}, made, "o1 o1abs o2")
    expect(scope, "Observation", {"patient": p2}, made, "o2")
    expect(scope, "Observation", {"patient": group}, made, "")
    expect(scope, "Observation", {"subject": "http://other.example.org/fhir/Patient/77"}, made, "ext")
    expect(scope, "Observation", {"subject:identifier": f"urn:mrn|mrn-{scope.code}"}, made, "ident")
    expect(scope, "Observation", {"subject:identifier": f"mrn-{scope.code}"}, made, "ident")
    expect(scope, "Observation", {"subject:identifier": f"urn:other|mrn-{scope.code}"}, made, "")
    expect(scope, "Observation", {"subject:missing": "true"}, made, "none")


# --- date ---------------------------------------------------------------------------------------------------------


@pytest.fixture()
def dated(scope: Scope) -> Made:
    return seed(scope, {
        "early": obs(effectiveDateTime="2020-06-10"),
        "day": obs(effectiveDateTime="2020-06-15"),
        "time": obs(effectiveDateTime="2020-06-15T10:00:00Z"),
        "instant": obs(effectiveInstant="2020-06-15T10:00:00.250Z"),
        "period": obs(effectivePeriod={"start": "2020-06-14T00:00:00Z", "end": "2020-06-20T00:00:00Z"}),
        "open": obs(effectivePeriod={"start": "2020-06-01T00:00:00Z"}),
        "late": obs(effectiveDateTime="2020-06-25T23:00:00+02:00"),
        "month": obs(effectiveDateTime="2020-07"),
        "nodate": obs(),
    })


@pytest.mark.parametrize(("value", "names"), [
    ("2020-06-15", "day time instant"),
    ("eq2020-06-15", "day time instant"),
    ("ne2020-06-15", "early period open late month"),
    ("gt2020-06-15", "period open late month"),
    ("lt2020-06-15", "early period open"),
    ("ge2020-06-15", "day time instant period open late month"),
    ("le2020-06-15", "early day time instant period open"),
    ("sa2020-06-15", "late month"),
    ("eb2020-06-15", "early"),
    ("eq2020-06", "early day time instant period late"),
    ("eq2020", "early day time instant period late month"),
    ("gt2020-06", "open month"),
    ("sa2020-06", "month"),
    ("eb2020-06-20", "early day time instant"),
    ("eq2020-06-15T10:00:00Z", "time instant"),
    ("eq2020-06-15T12:00:00+02:00", "time instant"),
    ("eq2020-06-15T10:00:00.250Z", "instant"),
    ("gt2020-06-15T10:00:00Z", "day period open late month"),
    ("lt2020-06-15T10:00:00Z", "early day period open"),
    ("eq2020-06-25", "late"),
    ("eq2020-06-26", ""),
    ("le2020-06-10,sa2020-06-30", "early open month"),
])
def test_date_prefixes(scope: Scope, dated: Made, value: str, names: str) -> None:
    """Ranges against ranges (search.html#prefix): a day, a second, an instant, a period and an open period."""
    expect(scope, "Observation", {"date": value}, dated, names)


def test_date_ap_is_near_the_value(scope: Scope, dated: Made) -> None:
    got = scope.idset("Observation", {"date": "ap2020-06-15"})
    assert dated("day time instant") <= got
    assert not (dated("early late month nodate") & got)


def test_date_and_makes_a_range(scope: Scope, dated: Made) -> None:
    expect(scope, "Observation", [("date", "ge2020-06-15"), ("date", "le2020-06-30")], dated,
           "day time instant period open late")
    expect(scope, "Observation", [("date", "gt2020-06-11"), ("date", "lt2020-06-15T10:00:00Z")], dated,
           "day period open")


def test_date_on_date_elements(scope: Scope) -> None:
    made = seed(scope, {
        "y": pat(birthDate="1980"),
        "ym": pat(birthDate="1980-05"),
        "ymd": pat(birthDate="1980-05-05"),
        "other": pat(birthDate="1981-01-01"),
    })
    expect(scope, "Patient", {"birthdate": "1980"}, made, "y ym ymd")
    expect(scope, "Patient", {"birthdate": "1980-05"}, made, "ym ymd")
    expect(scope, "Patient", {"birthdate": "1980-05-05"}, made, "ymd")
    expect(scope, "Patient", {"birthdate": "lt1980-05-05"}, made, "y ym")
    expect(scope, "Patient", {"birthdate": "gt1980-05-05"}, made, "y ym other")
    expect(scope, "Patient", {"birthdate": "sa1980-05-05"}, made, "other")
    expect(scope, "Patient", {"birthdate": "eb1981"}, made, "y ym ymd")
    expect(scope, "Patient", {"birthdate": "ne1980"}, made, "other")
    expect(scope, "Patient", {"birthdate": "ge1981-01-01T00:00:00Z"}, made, "other")


# --- number and quantity ------------------------------------------------------------------------------------------


@pytest.fixture()
def risks(scope: Scope) -> Made:
    def risk(p: float | int) -> dict[str, Any]:
        return {"resourceType": "RiskAssessment", "status": "final", "subject": {"reference": "Patient/x"},
                "prediction": [{"probabilityDecimal": p}]}
    return seed(scope, {"p10": risk(0.1), "p25": risk(0.25), "p50": risk(0.5), "p75": risk(0.75), "p1": risk(1)})


@pytest.mark.parametrize(("value", "names"), [
    ("0.25", "p25"),
    ("eq0.25", "p25"),
    ("0.3", "p25"),  # 0.3 means [0.25, 0.35): its implicit precision
    ("0.30", ""),
    ("ne0.25", "p10 p50 p75 p1"),
    ("gt0.25", "p50 p75 p1"),
    ("ge0.25", "p25 p50 p75 p1"),
    ("lt0.5", "p10 p25"),
    ("le0.5", "p10 p25 p50"),
    ("sa0.5", "p75 p1"),
    ("eb0.25", "p10"),
    ("ap0.5", "p50"),
    ("1", "p50 p75 p1"),  # [0.5, 1.5)
    ("1.0", "p1"),
    ("0.1,0.75", "p10 p75"),
])
def test_number_prefixes_and_precision(scope: Scope, risks: Made, value: str, names: str) -> None:
    expect(scope, "RiskAssessment", {"probability": value}, risks, names)


@pytest.fixture()
def weighed(scope: Scope) -> Made:
    def q(value: float, code: str | None, system: str | None = UCUM, unit: str | None = None) -> dict[str, Any]:
        quantity: dict[str, Any] = {"value": value}
        if code is not None:
            quantity["code"] = code
        if system is not None:
            quantity["system"] = system
        if unit is not None:
            quantity["unit"] = unit
        return obs(valueQuantity=quantity)
    return seed(scope, {
        "g1_5": q(1.5, "g", unit="gram"),
        "mg500": q(500, "mg"),
        "mg1500": q(1500, "mg"),
        "kg": q(0.002, "kg"),
        "mmol": q(5.4, "mmol/L"),
        "other": q(1.5, "pill", "urn:aegis-test:units"),
        "nounit": q(1.5, None, None),
    })


@pytest.mark.parametrize(("value", "names"), [
    (f"1.5|{UCUM}|g", "g1_5 mg1500"),
    (f"1500|{UCUM}|mg", "g1_5 mg1500"),
    ("1500||mg", "g1_5 mg1500"),
    (f"0.0015|{UCUM}|kg", "g1_5 mg1500"),
    (f"gt1|{UCUM}|g", "g1_5 mg1500 kg"),
    (f"lt1000|{UCUM}|mg", "mg500"),
    (f"ge1400|{UCUM}|mg", "g1_5 mg1500 kg"),
    (f"le0.6|{UCUM}|g", "mg500"),
    (f"5.4|{UCUM}|mmol/L", "mmol"),
    (f"5.4|{UCUM}|g", ""),
    ("1.5|urn:aegis-test:units|pill", "other"),
    ("1.5||pill", "other"),
    ("1.5", "g1_5 other nounit"),
    ("gt1000", "mg1500"),
    ("lt1", "kg"),
    (f"1.5|{UCUM}|g,5.4|{UCUM}|mmol/L", "g1_5 mg1500 mmol"),
])
def test_quantity_with_units(scope: Scope, weighed: Made, value: str, names: str) -> None:
    """``value|system|code`` with UCUM comparison across units (mg vs g vs kg), prefixes, and no unit at all."""
    expect(scope, "Observation", {"value-quantity": value}, weighed, names)


def test_quantity_on_money_and_durations(scope: Scope) -> None:
    def item(price: float, currency: str) -> dict[str, Any]:
        return {"resourceType": "ChargeItem", "status": "billable", "code": cc("c"),
                "subject": {"reference": "Patient/x"}, "priceOverride": {"value": price, "currency": currency}}
    made = seed(scope, {"eur40": item(40, "EUR"), "usd40": item(40, "USD"), "eur100": item(100, "EUR")})
    expect(scope, "ChargeItem", {"price-override": "40|urn:iso:std:iso:4217|EUR"}, made, "eur40")
    expect(scope, "ChargeItem", {"price-override": "gt50|urn:iso:std:iso:4217|EUR"}, made, "eur100")
    expect(scope, "ChargeItem", {"price-override": "40"}, made, "eur40 usd40")
    enc = seed(scope, {
        "h2": {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
               "length": {"value": 2, "unit": "h", "system": UCUM, "code": "h"}},
        "m30": {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
                "length": {"value": 30, "unit": "min", "system": UCUM, "code": "min"}},
    })
    expect(scope, "Encounter", {"length": f"120|{UCUM}|min"}, enc, "h2")
    expect(scope, "Encounter", {"length": f"gt1|{UCUM}|h"}, enc, "h2")
    expect(scope, "Encounter", {"length": f"lt3600|{UCUM}|s"}, enc, "m30")


# --- uri ----------------------------------------------------------------------------------------------------------


def test_uri_exact_below_and_above(scope: Scope) -> None:
    base = f"http://example.org/{scope.code}/fhir"
    made = seed(scope, {
        name: {"resourceType": "ValueSet", "status": "active", "url": url}
        for name, url in {"root": base, "vs": f"{base}/ValueSet", "a": f"{base}/ValueSet/a",
                          "ab": f"{base}/ValueSet/a/b", "other": f"http://example.org/{scope.code}x/fhir",
                          "urn": f"urn:uuid:{scope.code}"}.items()
    })
    expect(scope, "ValueSet", {"url": f"{base}/ValueSet/a"}, made, "a")
    expect(scope, "ValueSet", {"url": f"{base}/ValueSet/A"}, made, "")
    expect(scope, "ValueSet", {"url": f"{base}/ValueSet"}, made, "vs")
    expect(scope, "ValueSet", {"url:below": f"{base}/ValueSet"}, made, "vs a ab")
    expect(scope, "ValueSet", {"url:below": base}, made, "root vs a ab")
    expect(scope, "ValueSet", {"url:above": f"{base}/ValueSet/a/b/c"}, made, "root vs a ab")
    expect(scope, "ValueSet", {"url:above": f"{base}/ValueSet/a"}, made, "root vs a")
    expect(scope, "ValueSet", {"url": f"urn:uuid:{scope.code}"}, made, "urn")
    expect(scope, "ValueSet", {"url": f"{base}/ValueSet/a,urn:uuid:{scope.code}"}, made, "a urn")


# --- composite ----------------------------------------------------------------------------------------------------


@pytest.fixture()
def pressures(scope: Scope) -> Made:
    def bp(systolic: float, diastolic: float) -> dict[str, Any]:
        return obs(cc("85354-9", LOINC), component=[
            {"code": cc("8480-6", LOINC), "valueQuantity": {"value": systolic, "system": UCUM, "code": "mm[Hg]"}},
            {"code": cc("8462-4", LOINC), "valueQuantity": {"value": diastolic, "system": UCUM, "code": "mm[Hg]"}},
        ])
    return seed(scope, {
        "high": bp(160, 100),
        "normal": bp(120, 80),
        "low": bp(90, 60),
        "crossed": bp(80, 120),
        "hr": obs(cc("8867-4", LOINC), valueQuantity={"value": 120, "system": UCUM, "code": "/min"}),
        "hr2": obs(cc("8867-4", LOINC), valueQuantity={"value": 60, "system": UCUM, "code": "/min"}),
        "glucose": obs(cc("2339-0", LOINC), valueQuantity={"value": 120, "system": UCUM, "code": "mg/dL"}),
    })


@pytest.mark.parametrize(("param", "value", "names"), [
    ("code-value-quantity", f"{LOINC}|8867-4$120", "hr"),
    ("code-value-quantity", f"{LOINC}|8867-4$gt100", "hr"),
    ("code-value-quantity", f"{LOINC}|8867-4$lt100", "hr2"),
    ("code-value-quantity", "8867-4$120|http://unitsofmeasure.org|/min", "hr"),
    ("code-value-quantity", f"{LOINC}|2339-0$120", "glucose"),
    ("code-value-quantity", f"{LOINC}|2339-0$0.12|{UCUM}|g/dL", "glucose"),
    ("code-value-quantity", f"{LOINC}|2339-0$1.2|{UCUM}|g/L", "glucose"),
    ("code-value-quantity", f"{LOINC}|2339-0$1.2|{UCUM}|g/dL", ""),
    ("code-value-quantity", f"{LOINC}|8867-4$120,{LOINC}|2339-0$120", "hr glucose"),
    ("code-value-quantity", f"{LOINC}|8480-6$120", ""),
    ("component-code-value-quantity", f"{LOINC}|8480-6$gt140", "high"),
    ("component-code-value-quantity", f"{LOINC}|8480-6$120", "normal"),
    ("component-code-value-quantity", f"{LOINC}|8462-4$ge80", "high normal crossed"),
    # the code and the value must come from the same component
    ("component-code-value-quantity", f"{LOINC}|8462-4$80", "normal"),
    ("component-code-value-quantity", f"{LOINC}|8480-6$lt85", "crossed"),
    ("combo-code-value-quantity", f"{LOINC}|8867-4$120", "hr"),
    ("combo-code-value-quantity", f"{LOINC}|8480-6$120", "normal"),
])
def test_composite(scope: Scope, pressures: Made, param: str, value: str, names: str) -> None:
    expect(scope, "Observation", {param: value}, pressures, names)


def test_composite_and(scope: Scope, pressures: Made) -> None:
    expect(scope, "Observation", [("component-code-value-quantity", f"{LOINC}|8480-6$gt100"),
                                  ("component-code-value-quantity", f"{LOINC}|8462-4$lt90")], pressures, "normal")


# --- :missing -----------------------------------------------------------------------------------------------------


def test_missing_on_every_type(scope: Scope) -> None:
    full = seed(scope, {
        "full": {
            "resourceType": "Observation", "status": "final", "code": cc("c"),
            "subject": {"reference": "Patient/x"}, "effectiveDateTime": "2020-01-01",
            "valueQuantity": {"value": 1}, "category": [cc("cat")],
            "component": [{"code": cc("k"), "valueQuantity": {"value": 2}}],
            "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/observation-geneticsDnaVariant",
                           "valueString": "x"}],
        },
        "bare": {"resourceType": "Observation", "status": "final", "code": cc("c")},
    })
    for param in ("subject", "date", "value-quantity", "category", "component-code-value-quantity",
                  "dna-variant"):
        expect(scope, "Observation", {f"{param}:missing": "true"}, full, "bare")
        expect(scope, "Observation", {f"{param}:missing": "false"}, full, "full")
    expect(scope, "Observation", {"code:missing": "true"}, full, "")
    expect(scope, "Observation", {"code:missing": "false"}, full, "full bare")
    expect(scope, "Observation", {"_id:missing": "false"}, full, "full bare")
    made = seed(scope, {
        "named": pat(name=[{"family": "X"}], birthDate="2000", identifier=[ident()]),
        "anon": pat(),
    })
    for param in ("name", "family", "birthdate", "identifier"):
        expect(scope, "Patient", {f"{param}:missing": "true"}, made, "anon")
        expect(scope, "Patient", {f"{param}:missing": "false"}, made, "named")
    values = seed(scope, {"vs": {"resourceType": "ValueSet", "status": "active", "url": f"urn:uuid:{uid()}"},
                          "vs-nourl": {"resourceType": "ValueSet", "status": "active"}})
    expect(scope, "ValueSet", {"url:missing": "true"}, values, "vs-nourl")
    risk = seed(scope, {"num": {"resourceType": "RiskAssessment", "status": "final",
                                "subject": {"reference": "Patient/x"}, "prediction": [{"probabilityDecimal": 0.5}]},
                        "nonum": {"resourceType": "RiskAssessment", "status": "final",
                                  "subject": {"reference": "Patient/x"}}})
    expect(scope, "RiskAssessment", {"probability:missing": "true"}, risk, "nonum")
    expect(scope, "RiskAssessment", {"probability:missing": "false"}, risk, "num")


# --- OR and AND ---------------------------------------------------------------------------------------------------


def test_or_with_commas_and_with_repeats(scope: Scope) -> None:
    made = seed(scope, {
        "fa": pat(gender="female", birthDate="1990-01-01", name=[{"family": "Alpha"}]),
        "fb": pat(gender="female", birthDate="1991-01-01", name=[{"family": "Beta"}]),
        "ma": pat(gender="male", birthDate="1990-01-01", name=[{"family": "Alpha"}, {"family": "Beta"}]),
        "u": pat(gender="unknown"),
    })
    expect(scope, "Patient", {"gender": "female,male"}, made, "fa fb ma")
    expect(scope, "Patient", [("gender", "female"), ("birthdate", "1990")], made, "fa")
    expect(scope, "Patient", [("family", "alpha"), ("family", "beta")], made, "ma")
    expect(scope, "Patient", [("family", "alpha,beta"), ("gender", "male,unknown")], made, "ma")
    expect(scope, "Patient", [("gender", "female"), ("gender", "male")], made, "")
    expect(scope, "Patient", [("birthdate", "ge1990"), ("birthdate", "lt1991"), ("gender", "female,male")], made,
           "fa ma")


def test_escaped_comma_is_part_of_the_value(scope: Scope) -> None:
    made = seed(scope, {"comma": pat(name=[{"family": "Smith, Jr"}]), "smith": pat(name=[{"family": "Smith"}]),
                        "jr": pat(name=[{"family": "Jr"}])})
    expect(scope, "Patient", {"family:exact": "Smith\\, Jr"}, made, "comma")
    expect(scope, "Patient", {"family:exact": "Smith,Jr"}, made, "smith jr")
    expect(scope, "Patient", {"family": "smith\\,"}, made, "comma")


def test_date_on_timing_and_half_open_periods(scope: Scope) -> None:
    """A Timing is searched over its outer limits (events and repeat.boundsPeriod); a parameter on the Timing's
    events sees each event; a Period may lack either end."""
    def order(**extra: Any) -> dict[str, Any]:
        return {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                "subject": {"reference": "Patient/x"}, **extra}
    made = seed(scope, {
        "events": order(occurrenceTiming={"event": ["2021-02-04T08:00:00Z", "2021-02-10T08:00:00Z"]}),
        "bounds": order(occurrenceTiming={"repeat": {
            "boundsPeriod": {"start": "2021-03-01", "end": "2021-03-31"}, "frequency": 1, "period": 1,
            "periodUnit": "d"}}),
        "none": order(),
    })
    expect(scope, "ServiceRequest", {"occurrence": "2021-02-04"}, made, "")  # the range runs on to the 10th
    expect(scope, "ServiceRequest", {"occurrence": "2021-02"}, made, "events")
    expect(scope, "ServiceRequest", {"occurrence": "ap2021-02-07"}, made, "events")
    expect(scope, "ServiceRequest", {"occurrence": "2021-03"}, made, "bounds")
    expect(scope, "ServiceRequest", {"occurrence": "gt2021-02-28"}, made, "bounds")
    expect(scope, "ServiceRequest", {"occurrence": "lt2021-03-01"}, made, "events")
    expect(scope, "ServiceRequest", {"occurrence:missing": "true"}, made, "none")

    def med(*events: str) -> dict[str, Any]:
        return {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
                "medicationCodeableConcept": cc("m"), "subject": {"reference": "Patient/x"},
                "dosageInstruction": [{"timing": {"event": list(events)}}]}
    meds = seed(scope, {"two": med("2021-02-04T08:00:00Z", "2021-02-10T08:00:00Z"), "one": med("2021-02-07")})
    expect(scope, "MedicationRequest", {"date": "2021-02-04"}, meds, "two")
    expect(scope, "MedicationRequest", {"date": "2021-02-07"}, meds, "one")
    expect(scope, "MedicationRequest", {"date": "2021-02"}, meds, "two one")
    enc = seed(scope, {
        "from": {"resourceType": "Encounter", "status": "in-progress", "class": {"code": "AMB"},
                 "period": {"start": "2019-05-01T10:00:00Z"}},
        "until": {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
                  "period": {"end": "2019-05-01T10:00:00Z"}},
    })
    expect(scope, "Encounter", {"date": "gt2030-01-01"}, enc, "from")
    expect(scope, "Encounter", {"date": "lt1900-01-01"}, enc, "until")
    expect(scope, "Encounter", {"date": "sa2019-04-30"}, enc, "from")
    expect(scope, "Encounter", {"date": "eb2019-05-02"}, enc, "until")
    expect(scope, "Encounter", {"date": "2019-05-01"}, enc, "")
    expect(scope, "Encounter", {"date": "ne2019-05-01"}, enc, "from until")


def test_ne_needs_a_value(scope: Scope, dated: Made, risks: Made) -> None:
    """``ne`` finds values that differ; a resource with no value at all is not one (``:not`` is the modifier that
    includes those)."""
    assert dated["nodate"] not in scope.idset("Observation", {"date": "ne2020-06-15"})
    scope.create({"resourceType": "RiskAssessment", "status": "final", "subject": {"reference": "Patient/x"}})
    expect(scope, "RiskAssessment", {"probability": "ne0.5"}, risks, "p10 p25 p75 p1")


def test_number_on_integers(scope: Scope) -> None:
    def seq(start: int) -> dict[str, Any]:
        return {"resourceType": "MolecularSequence", "coordinateSystem": 0,
                "variant": [{"start": start, "end": start + 1}]}
    made = seed(scope, {"s100": seq(100), "s101": seq(101), "s150": seq(150)})
    expect(scope, "MolecularSequence", {"variant-start": "100"}, made, "s100")
    # search.html#number: 1e2 is 100 to one significant figure, "the range [95 ... 105)"
    expect(scope, "MolecularSequence", {"variant-start": "1e2"}, made, "s100 s101")
    expect(scope, "MolecularSequence", {"variant-start": "gt100"}, made, "s101 s150")
    expect(scope, "MolecularSequence", {"variant-start": "le101"}, made, "s100 s101")
    expect(scope, "MolecularSequence", {"variant-end": "ge102"}, made, "s101 s150")
    expect(scope, "MolecularSequence", {"variant-start": "100.0"}, made, "s100")
    expect(scope, "MolecularSequence", {"variant-start": "100.6"}, made, "")


def test_reference_to_canonicals_and_versions(scope: Scope) -> None:
    base = f"http://example.org/{scope.code}/Questionnaire/q"
    made = seed(scope, {
        "v2": {"resourceType": "QuestionnaireResponse", "status": "completed", "questionnaire": f"{base}|2.0"},
        "plain": {"resourceType": "QuestionnaireResponse", "status": "completed", "questionnaire": base},
        "other": {"resourceType": "QuestionnaireResponse", "status": "completed", "questionnaire": f"{base}2"},
    })
    expect(scope, "QuestionnaireResponse", {"questionnaire": base}, made, "v2 plain")
    expect(scope, "QuestionnaireResponse", {"questionnaire": f"{base}|2.0"}, made, "v2 plain")
    expect(scope, "QuestionnaireResponse", {"questionnaire": f"{base}2"}, made, "other")


def test_reference_to_a_version(scope: Scope) -> None:
    p = scope.create(pat())["id"]
    made = seed(scope, {"o": obs(subject={"reference": f"Patient/{p}/_history/1"}),
                        "plain": obs(subject={"reference": f"Patient/{p}"})})
    expect(scope, "Observation", {"subject": f"Patient/{p}"}, made, "o plain")
    expect(scope, "Observation", {"subject": f"Patient/{p}/_history/1"}, made, "o plain")


def test_missing_through_chains(scope: Scope) -> None:
    named = scope.create(pat(name=[{"family": "N"}]))["id"]
    anon = scope.create(pat())["id"]
    made = seed(scope, {"o_named": obs(subject={"reference": f"Patient/{named}"}),
                        "o_anon": obs(subject={"reference": f"Patient/{anon}"}),
                        "o_none": obs()})
    expect(scope, "Observation", {"subject:Patient.name:missing": "true"}, made, "o_anon")
    expect(scope, "Observation", {"subject:Patient.name:missing": "false"}, made, "o_named")
    patients = Made(named=named, anon=anon)
    expect(scope, "Patient", {"_has:Observation:subject:status:missing": "false"}, patients, "named anon")


@pytest.mark.xfail(strict=True, reason="extraction indexes Patient 'phonetic' (and Practitioner/RelatedPerson/Person "
                   "phonetic) as the plain normalised name, so it matches like 'name' (starts-with) rather than by "
                   "sound: a phonetic key (Soundex, Metaphone …) must be indexed, and computed from the query value")
def test_phonetic_matches_by_sound(scope: Scope) -> None:
    made = seed(scope, {"smith": pat(name=[{"family": "Smith"}]), "jones": pat(name=[{"family": "Jones"}])})
    expect(scope, "Patient", {"phonetic": "Smyth"}, made, "smith")
