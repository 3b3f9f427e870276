"""What resources/validate.py adds to fhirkit's structural validation: required bindings, calendar dates, control
characters, a single issue per duplicated key, a leading byte order mark; and that valid data (the example files,
the demo data set) still passes. Also the value set expansion behind ``definitions/required-bindings.json``.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fhir_server.demo import demo_bundles
from resources import bindings, jsonio, model
from resources import validate as validate_module
from resources.outcome import InvalidInput, Issue
from resources.validate import check_extra, is_impossible_date, parse_json_resource, validate_resource
from resources.xml import xml_to_resource

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "tests" / "data" / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.json"))

Resource = dict[str, Any]
OBS: Resource = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
GENDER_VS = "http://hl7.org/fhir/ValueSet/administrative-gender"
GENDER_CS = "http://hl7.org/fhir/administrative-gender"
CLINICAL_CS = "http://terminology.hl7.org/CodeSystem/condition-clinical"


def issues_of(resource: Resource) -> list[Issue]:
    """The issues of validating ``resource`` both as a JSON body and as a dict; they must agree."""
    body = json.dumps(resource).encode()
    try:
        parse_json_resource(body)
        from_body: list[Issue] = []
    except InvalidInput as exc:
        from_body = exc.issues
    try:
        validate_resource(copy.deepcopy(resource))
        from_dict: list[Issue] = []
    except InvalidInput as exc:
        from_dict = exc.issues
    assert from_body == from_dict
    return from_body


def refused_at(resource: Resource) -> list[str]:
    return [e for i in issues_of(resource) for e in i.expression]


def assert_valid(resource: Resource) -> None:
    assert issues_of(resource) == []


def assert_refused(resource: Resource, expression: str, message_id: str) -> Issue:
    found = issues_of(resource)
    assert [e for i in found for e in i.expression] == [expression], found
    assert found[0].message_id == message_id
    return found[0]


# ------------------------------------------------------------------------------------------------ required bindings


@pytest.mark.parametrize(
    ("resource", "expression"),
    [
        ({"resourceType": "Patient", "gender": "MALE"}, "Patient.gender"),
        ({**OBS, "status": "bogus"}, "Observation.status"),
        ({"resourceType": "Appointment", "status": "maybe", "participant": [{"status": "accepted"}]},
         "Appointment.status"),
        ({"resourceType": "Appointment", "status": "booked", "participant": [{"status": "perhaps"}]},
         "Appointment.participant[0].status"),
        ({"resourceType": "MedicationRequest", "status": "active", "intent": "wish",
          "medicationCodeableConcept": {"text": "x"}, "subject": {"reference": "Patient/1"}},
         "MedicationRequest.intent"),
        ({"resourceType": "ChargeItem", "status": "paid", "code": {"text": "x"}, "subject": {"reference": "Patient/1"}},
         "ChargeItem.status"),
        # inside datatypes, wherever they are used
        ({"resourceType": "Patient", "telecom": [{"system": "phone"}, {"system": "telex"}]},
         "Patient.telecom[1].system"),
        ({"resourceType": "Patient", "name": [{"use": "nick", "family": "x"}]}, "Patient.name[0].use"),
        ({"resourceType": "Patient", "identifier": [{"use": "primary", "value": "1"}]}, "Patient.identifier[0].use"),
        ({"resourceType": "Patient", "contact": [{"telecom": [{"system": "pigeon"}]}]},
         "Patient.contact[0].telecom[0].system"),
        ({**OBS, "valueQuantity": {"value": 1, "comparator": "~"}}, "Observation.valueQuantity.comparator"),
        # SimpleQuantity is a profile of Quantity: same bindings
        ({**OBS, "referenceRange": [{"low": {"value": 1, "comparator": "<>"}}]},
         "Observation.referenceRange[0].low.comparator"),
        ({"resourceType": "Patient", "text": {"status": "made-up", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'}},
         "Patient.text.status"),
        ({"resourceType": "Patient", "address": [{"use": "home", "type": "igloo"}]}, "Patient.address[0].type"),
        # an explicit list of UCUM codes (units-of-time)
        ({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
          "medicationCodeableConcept": {"text": "x"}, "subject": {"reference": "Patient/1"},
          "dosageInstruction": [{"timing": {"repeat": {"period": 1, "periodUnit": "day"}}}]},
         "MedicationRequest.dosageInstruction[0].timing.repeat.periodUnit"),
        # an array of codes, nulls included
        ({"resourceType": "Patient", "extension": [{"url": "urn:x", "valueTiming": {"repeat": {
            "dayOfWeek": ["mon", None, "someday"], "_dayOfWeek": [None, {"id": "a"}, None]}}}]},
         "Patient.extension[0].valueTiming.repeat.dayOfWeek[2]"),
        # a CodeableConcept: a coding of the bound system must be one of its codes
        ({"resourceType": "Condition", "subject": {"reference": "Patient/1"},
          "clinicalStatus": {"coding": [{"system": "urn:other", "code": "x"},
                                        {"system": CLINICAL_CS, "code": "gone"}]}},
         "Condition.clinicalStatus.coding[1].code"),
        ({"resourceType": "Bundle", "type": "tx"}, "Bundle.type"),
        ({"resourceType": "Bundle", "type": "transaction",
          "entry": [{"request": {"method": "FETCH", "url": "Patient"}}]},
         "Bundle.entry[0].request.method"),
        ({"resourceType": "CapabilityStatement", "status": "active", "date": "2020", "kind": "instance",
          "fhirVersion": "4.0.1", "format": ["json"], "rest": [{"mode": "server", "resource": [{"type": "Patients"}]}]},
         "CapabilityStatement.rest[0].resource[0].type"),
    ],
)
def test_code_outside_required_binding_is_refused(resource: Resource, expression: str) -> None:
    issue = assert_refused(resource, expression, "AEGIS-115")
    assert issue.code == "code-invalid"
    assert "required value set" in issue.diagnostics


@pytest.mark.parametrize(
    "resource",
    [
        {"resourceType": "Patient", "gender": "male", "telecom": [{"system": "phone", "use": "home"}],
         "name": [{"use": "official", "family": "x"}], "identifier": [{"use": "usual", "value": "1"}],
         "address": [{"use": "home", "type": "both"}]},
        {**OBS, "status": "amended", "valueQuantity": {"value": 1, "comparator": ">="}},
        {"resourceType": "Appointment", "status": "booked",
         "participant": [{"status": "accepted", "required": "required"}]},
        {"resourceType": "ChargeItem", "status": "billed", "code": {"text": "x"},
         "subject": {"reference": "Patient/1"}},
        # codings of other systems, codings without a system and text alone are not judged
        {"resourceType": "Condition", "subject": {"reference": "Patient/1"},
         "clinicalStatus": {"coding": [{"system": "urn:other", "code": "gone"}, {"code": "gone"},
                                       {"system": CLINICAL_CS, "code": "active"}]}},
        {"resourceType": "Condition", "subject": {"reference": "Patient/1"}, "clinicalStatus": {"text": "better"}},
        # value sets that cannot be enumerated (ISO 4217, MIME types) are not checked
        {"resourceType": "Invoice", "status": "draft", "totalNet": {"value": 1, "currency": "XQQ"}},
        {"resourceType": "Binary", "contentType": "application/x-anything"},
        # all-types / resource-types: big multi-system value sets
        {"resourceType": "SearchParameter", "url": "urn:x", "name": "x", "status": "active", "description": "x",
         "code": "x", "base": ["Patient", "Observation"], "type": "token", "target": ["Group"]},
        {"resourceType": "Patient", "extension": [{"url": "urn:x", "valueTiming": {"repeat": {
            "dayOfWeek": ["mon", None, "sun"], "_dayOfWeek": [None, {"id": "a"}, None], "when": ["MORN", "ACM"],
            "periodUnit": "wk"}}}]},
    ],
)
def test_codes_inside_required_bindings_pass(resource: Resource) -> None:
    assert_valid(resource)


def test_bindings_apply_in_contained_and_bundle_entry_resources_by_their_own_type() -> None:
    contained = [{**OBS, "id": "o", "status": "bogus"}, {"resourceType": "Patient", "id": "p", "gender": "x"}]
    assert refused_at({"resourceType": "Patient", "contained": contained}) == [
        "Patient.contained[0].status", "Patient.contained[1].gender"]
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Patient", "gender": "female"}},
        {"resource": {"resourceType": "Patient", "gender": "F", "contained": [{**OBS, "id": "o", "status": "done"}]}},
        {"resource": {"resourceType": "Parameters", "parameter": [
            {"name": "p", "resource": {"resourceType": "Patient", "gender": "m"}}]}},
    ]}
    assert refused_at(bundle) == ["Bundle.entry[1].resource.gender", "Bundle.entry[1].resource.contained[0].status",
                                  "Bundle.entry[2].resource.parameter[0].resource.gender"]


def test_every_bad_code_is_reported_at_once() -> None:
    resource = {"resourceType": "Patient", "gender": "MALE", "name": [{"use": "x"}, {"use": "y"}]}
    assert refused_at(resource) == ["Patient.gender", "Patient.name[0].use", "Patient.name[1].use"]


def test_required_binding_on_xml_input() -> None:
    body = b'<Patient xmlns="http://hl7.org/fhir"><gender value="MALE"/></Patient>'
    with pytest.raises(InvalidInput) as caught:
        validate_resource(xml_to_resource(body))
    assert [i.expression for i in caught.value.issues] == [("Patient.gender",)]


def test_coding_typed_element_is_checked_when_its_system_is_the_bound_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # R4 has no Coding-typed element with a required binding; bind Extension.value[x] to see the Coding path work
    gender = bindings.required_binding("Patient", "gender")
    assert gender is not None
    real = bindings.bound_elements
    monkeypatch.setattr(validate_module, "bound_elements",
                        lambda key: {"value": gender} if key == "Extension" else real(key))
    monkeypatch.setattr(validate_module, "_plans", {})

    def ext(**value: Any) -> Resource:
        return {"resourceType": "Patient", "extension": [{"url": "urn:x", **value}]}

    assert_refused(ext(valueCoding={"system": GENDER_CS, "code": "MALE"}), "Patient.extension[0].valueCoding.code",
                   "AEGIS-115")
    assert_refused(ext(valueCode="MALE"), "Patient.extension[0].valueCode", "AEGIS-115")
    assert_refused(ext(valueCodeableConcept={"coding": [{"system": GENDER_CS, "code": "M"}]}),
                   "Patient.extension[0].valueCodeableConcept.coding[0].code", "AEGIS-115")
    assert_valid(ext(valueCoding={"system": GENDER_CS, "code": "male"}))
    assert_valid(ext(valueCoding={"system": "urn:other", "code": "MALE"}))
    # a binding constrains code, Coding, CodeableConcept, string and uri (eld-11), not the other variants
    assert_refused(ext(valueString="MALE"), "Patient.extension[0].valueString", "AEGIS-115")
    assert_valid(ext(valueDate="2020-01-01"))
    assert_refused(ext(valueDate="2021-02-29"), "Patient.extension[0].valueDate", "AEGIS-116")


def test_bindings_file_matches_the_model() -> None:
    raw = bindings._load()
    assert raw["fhirVersion"] == model.FHIR_VERSION
    count = 0
    for type_key, names in raw["bindings"].items():
        info = model.type_info(type_key)
        assert info is not None and info.key == type_key, type_key
        for name, url in names.items():
            assert any(e.name == name for e in info.elements), f"{type_key}.{name}"
            assert url in raw["valueSets"]
            count += 1
    assert count > 300
    assert bindings.required_binding("Patient", "gender") == bindings.RequiredBinding(
        GENDER_VS, frozenset({"male", "female", "other", "unknown"}),
        {GENDER_CS: frozenset({"male", "female", "other", "unknown"})})
    assert bindings.required_binding("Patient", "maritalStatus") is None  # extensible
    # not enumerable from the package: listed with the reason, and not checked
    skipped = bindings.skipped_value_sets()
    assert {"http://hl7.org/fhir/ValueSet/mimetypes", "http://hl7.org/fhir/ValueSet/currencies"} <= set(skipped)
    assert bindings.required_binding("Money", "currency") is None


# ------------------------------------------------------------------------------------------------ calendar dates


@pytest.mark.parametrize(
    ("text", "impossible"),
    [("2001-02-30", True), ("2021-02-29", True), ("1900-02-29", True), ("2021-04-31", True), ("2021-06-31", True),
     ("2021-02-29T10:00:00Z", True), ("2021-11-31T00:00:00.000+01:00", True),
     ("2020-02-29", False), ("2000-02-29", False), ("2021-01-31", False), ("2021-12-31T23:59:59Z", False),
     ("2021-02-28", False), ("2021-02", False), ("2021", False), ("", False)],
)
def test_is_impossible_date(text: str, impossible: bool) -> None:
    assert is_impossible_date(text) is impossible


@pytest.mark.parametrize(
    ("resource", "expression"),
    [
        ({"resourceType": "Patient", "birthDate": "2001-02-30"}, "Patient.birthDate"),
        ({"resourceType": "Patient", "birthDate": "2021-02-29"}, "Patient.birthDate"),
        ({"resourceType": "Patient", "deceasedDateTime": "2021-02-29T10:00:00Z"}, "Patient.deceasedDateTime"),
        ({**OBS, "issued": "2021-04-31T10:00:00.000Z"}, "Observation.issued"),
        ({**OBS, "effectivePeriod": {"start": "2021-02-29"}}, "Observation.effectivePeriod.start"),
        ({"resourceType": "Patient", "meta": {"lastUpdated": "2019-02-29T00:00:00Z"}}, "Patient.meta.lastUpdated"),
        ({"resourceType": "Patient", "extension": [{"url": "urn:x", "valueDate": "2001-02-30"}]},
         "Patient.extension[0].valueDate"),
        ({"resourceType": "Patient", "birthDate": "2000-01-01",
          "_birthDate": {"extension": [{"url": "urn:x", "valueDateTime": "2001-09-31"}]}},
         "Patient._birthDate.extension[0].valueDateTime"),
        ({"resourceType": "Patient", "extension": [{"url": "urn:x", "valueTiming": {
            "event": ["2020-02-29T08:00:00Z", "2021-02-29T08:00:00Z"]}}]},
         "Patient.extension[0].valueTiming.event[1]"),
        ({"resourceType": "Patient", "contained": [{"resourceType": "Patient", "id": "a", "birthDate": "2001-02-30"}]},
         "Patient.contained[0].birthDate"),
    ],
)
def test_impossible_dates_are_refused(resource: Resource, expression: str) -> None:
    issue = assert_refused(resource, expression, "AEGIS-116")
    assert "no such day" in issue.diagnostics


@pytest.mark.parametrize(
    "resource",
    [
        {"resourceType": "Patient", "birthDate": "2000-02-29", "deceasedDateTime": "2020-02-29T23:59:59+14:00"},
        {"resourceType": "Patient", "birthDate": "2021-02"},
        {**OBS, "issued": "2021-03-31T10:00:00.000Z", "effectivePeriod": {"start": "2021", "end": "2021-12-31"}},
        # strings that look like dates are not dates
        {**OBS, "valueString": "2001-02-30"},
        {"resourceType": "Patient", "extension": [{"url": "urn:x", "valueString": "2021-02-29"}]},
    ],
)
def test_possible_dates_and_date_like_strings_pass(resource: Resource) -> None:
    assert_valid(resource)


# ------------------------------------------------------------------------------------------------ control characters


@pytest.mark.parametrize(
    ("resource", "expression"),
    [
        ({"resourceType": "Patient", "name": [{"family": "a\x01b"}]}, "Patient.name[0].family"),
        ({"resourceType": "Patient", "name": [{"given": ["ok", "x\x00"]}]}, "Patient.name[0].given[1]"),
        ({"resourceType": "Patient", "extension": [{"url": "urn:x", "valueString": "\x1f"}]},
         "Patient.extension[0].valueString"),
        ({"resourceType": "Patient", "identifier": [{"system": "urn:x\x08", "value": "1"}]},
         "Patient.identifier[0].system"),
        ({**OBS, "note": [{"text": "form\x0cfeed"}]}, "Observation.note[0].text"),
        ({"resourceType": "Patient", "contained": [{"resourceType": "Patient", "id": "a", "gender": "male",
                                                     "name": [{"text": "\x0b"}]}]},
         "Patient.contained[0].name[0].text"),
    ],
)
def test_control_characters_are_refused(resource: Resource, expression: str) -> None:
    issue = assert_refused(resource, expression, "AEGIS-117")
    assert "control character" in issue.diagnostics


def test_control_character_written_as_a_json_escape() -> None:
    for escape in (rb"\u0001", rb"\u001F", rb"\b", rb"\f"):
        body = b'{"resourceType":"Patient","name":[{"family":"a' + escape + b'b"}]}'
        with pytest.raises(InvalidInput) as caught:
            parse_json_resource(body)
        assert [i.expression for i in caught.value.issues] == [("Patient.name[0].family",)], escape


@pytest.mark.parametrize("text", ["tab\there", "line\nbreak", "cr\r\n", "back\\slash \\b \\f \\u0001", "\x7f é ✓ 😀"])
def test_tab_cr_lf_and_other_characters_pass(text: str) -> None:
    assert_valid({"resourceType": "Patient", "name": [{"family": text}]})


def test_check_extra_without_json_text_searches_every_string() -> None:
    with pytest.raises(InvalidInput) as caught:
        check_extra({"resourceType": "Patient", "name": [{"family": "a\x02"}]})
    assert caught.value.issues[0].expression == ("Patient.name[0].family",)


# ------------------------------------------------------------------------------------------------ duplicate keys, BOM


@pytest.mark.parametrize(
    ("body", "expression"),
    [
        (b'{"resourceType":"Patient","gender":"male","gender":"female"}', "Patient.gender"),
        (b'{"resourceType":"Patient","gender":"male","gender":"male","gender":"other"}', "Patient.gender"),
        (b'{"resourceType":"Patient","name":[{"family":"x","family":"y"}]}', "Patient.name[0].family"),
        (b'{"resourceType":"Patient","contained":[{"resourceType":"Patient","id":"a","active":true,"active":false}]}',
         "Patient.contained[0].active"),
    ],
)
def test_duplicate_key_is_one_issue(body: bytes, expression: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_json_resource(body)
    assert [(i.expression, i.diagnostics) for i in caught.value.issues] == [
        ((expression,), "the key appears more than once")]


def test_duplicate_key_does_not_hide_other_problems() -> None:
    body = b'{"resourceType":"Patient","gender":"male","gender":"female","favouriteColour":"blue"}'
    with pytest.raises(InvalidInput) as caught:
        parse_json_resource(body)
    assert [i.expression for i in caught.value.issues] == [("Patient.gender",), ("Patient.favouriteColour",)]


def test_byte_order_mark_is_ignored() -> None:
    assert parse_json_resource(b'\xef\xbb\xbf{"resourceType":"Patient","gender":"male"}') == {
        "resourceType": "Patient", "gender": "male"}
    with pytest.raises(InvalidInput) as caught:
        parse_json_resource(b'\xef\xbb\xbf{"resourceType":"Patient","gender":"MALE"}')
    assert caught.value.issues[0].expression == ("Patient.gender",)
    with pytest.raises(InvalidInput) as caught:  # only one, and only at the start
        parse_json_resource(b'\xef\xbb\xbf\xef\xbb\xbf{"resourceType":"Patient"}')
    assert caught.value.issues[0].message_id == "AEGIS-100"


# ----------------------------------------------------------------------------------------------- valid data stays valid


def test_examples_are_present() -> None:
    assert len(EXAMPLE_FILES) > 20


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_every_example_validates(path: Path) -> None:
    resource = parse_json_resource(path.read_bytes())
    validate_resource(resource)


def _demo_entries() -> Iterator[Resource]:
    for bundle in demo_bundles():
        for entry in bundle["entry"]:
            yield entry["resource"]


def test_every_demo_resource_validates() -> None:
    count = 0
    for resource in _demo_entries():
        validate_resource(resource)
        parse_json_resource(jsonio.dumps(resource))
        count += 1
    assert count > 100


def test_existing_checks_still_apply() -> None:
    assert refused_at({"resourceType": "Patient", "contained": [{"resourceType": "Patient", "id": "a b"}]}) == [
        "Patient.contained[0].id"]
    assert refused_at({"resourceType": "Patient", "maritalStatus": {}}) == ["Patient.maritalStatus"]
    assert refused_at({"resourceType": "Patient", "text": {"status": "generated", "div": "<div>x</div>"}}) == [
        "Patient.text.div"]
    assert refused_at({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Patient", "id": "bad id"}}]}) == ["Bundle.entry[0].resource.id"]


# ------------------------------------------------------------------------------------------------ value set expansion


def _regen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("regen_definitions", REPO / "scripts" / "regen_definitions.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("regen_definitions", module)  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def regen() -> ModuleType:
    return _regen()


CS_A = {"url": "urn:cs:a", "content": "complete", "caseSensitive": True, "concept": [
    {"code": "animal", "concept": [{"code": "dog", "concept": [{"code": "puppy"}]}, {"code": "cat"}]},
    {"code": "plant", "concept": [{"code": "tree"}]},
    {"code": "stone"},
]}
CS_FLAT = {"url": "urn:cs:flat", "content": "complete", "caseSensitive": True, "concept": [
    {"code": "top"}, {"code": "under", "property": [{"code": "subsumedBy", "valueCode": "top"}]}]}


def _expander(regen: ModuleType, **value_sets: Any) -> Any:
    vs = {f"urn:vs:{name}": {"url": f"urn:vs:{name}", "compose": compose} for name, compose in value_sets.items()}
    systems = {cs["url"]: cs for cs in (
        CS_A, CS_FLAT,
        {"url": "urn:cs:part", "content": "fragment", "caseSensitive": True, "concept": [{"code": "x"}]},
        {"url": "urn:cs:ci", "content": "complete", "caseSensitive": False, "concept": [{"code": "x"}]},
    )}
    return regen.ValueSetExpander(vs, systems)


def test_expansion_of_whole_systems_lists_filters_imports_and_excludes(regen: ModuleType) -> None:
    ex = _expander(
        regen,
        whole={"include": [{"system": "urn:cs:a"}]},
        listed={"include": [{"system": "http://unitsofmeasure.org", "concept": [{"code": "s"}, {"code": "min"}]}]},
        isa={"include": [{"system": "urn:cs:a", "filter": [{"property": "concept", "op": "is-a", "value": "animal"}]}]},
        below={"include": [{"system": "urn:cs:a",
                            "filter": [{"property": "concept", "op": "descendent-of", "value": "animal"}]}]},
        notisa={"include": [{"system": "urn:cs:a",
                             "filter": [{"property": "concept", "op": "is-not-a", "value": "animal"}]}]},
        prop={"include": [{"system": "urn:cs:flat",
                           "filter": [{"property": "concept", "op": "is-a", "value": "top"}]}]},
        imported={"include": [{"valueSet": ["urn:vs:isa"]}, {"system": "urn:cs:flat"}],
                  "exclude": [{"system": "urn:cs:a", "concept": [{"code": "cat"}]}]},
        narrowed={"include": [{"system": "urn:cs:a", "valueSet": ["urn:vs:below|1.0"]}]},
    )
    assert ex.expand("urn:vs:whole") == {"urn:cs:a": dict.fromkeys(
        ["animal", "dog", "puppy", "cat", "plant", "tree", "stone"])}
    assert ex.expand("urn:vs:listed") == {"http://unitsofmeasure.org": dict.fromkeys(["s", "min"])}
    assert list(ex.expand("urn:vs:isa")["urn:cs:a"]) == ["animal", "dog", "puppy", "cat"]
    assert list(ex.expand("urn:vs:below")["urn:cs:a"]) == ["dog", "puppy", "cat"]
    assert list(ex.expand("urn:vs:notisa")["urn:cs:a"]) == ["plant", "tree", "stone"]
    assert list(ex.expand("urn:vs:prop")["urn:cs:flat"]) == ["top", "under"]
    assert {s: list(c) for s, c in ex.expand("urn:vs:imported").items()} == {
        "urn:cs:a": ["animal", "dog", "puppy"], "urn:cs:flat": ["top", "under"]}
    assert list(ex.expand("urn:vs:narrowed|4.0.1")["urn:cs:a"]) == ["dog", "puppy", "cat"]


@pytest.mark.parametrize(
    ("compose", "reason"),
    [
        ({"include": [{"system": "urn:ietf:bcp:47"}]}, "not in the package"),
        ({"include": [{"valueSet": ["urn:vs:nowhere"]}]}, "not in the package"),
        ({"include": [{"system": "urn:cs:part"}]}, "only part"),
        ({"include": [{"system": "urn:cs:ci"}]}, "case-sensitive"),
        ({"include": [{"system": "urn:cs:a", "filter": [{"property": "status", "op": "=", "value": "x"}]}]},
         "not supported"),
        ({"include": [{"system": "urn:cs:a", "filter": [{"property": "concept", "op": "is-a", "value": "rock"}]}]},
         "does not define"),
        ({"include": [{"valueSet": ["urn:vs:bad"]}]}, "imports itself"),
        ({"include": [{"system": "urn:cs:a", "concept": [{"code": "cat"}]}],
          "exclude": [{"system": "urn:cs:a", "concept": [{"code": "cat"}]}]}, "no codes"),
    ],
)
def test_what_cannot_be_enumerated_is_unexpandable(regen: ModuleType, compose: dict[str, Any], reason: str) -> None:
    ex = _expander(regen, bad=compose)
    with pytest.raises(regen.Unexpandable, match=reason):
        ex.expand("urn:vs:bad")
