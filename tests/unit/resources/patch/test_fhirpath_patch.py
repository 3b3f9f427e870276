"""FHIRPath Patch: the specification's own cases, choice types, primitive extensions, decimals, and errors."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resources import jsonio
from resources.outcome import FhirError, InvalidInput
from resources.patch import apply_fhirpath_patch, messages


def op(kind: str, path: str, **parts: Any) -> dict[str, Any]:
    """One ``operation`` parameter; ``value`` is the value part's body (``{"valueDate": ...}`` or ``{"part": ...}``),
    ints become valueInteger and other strings valueString."""
    out: list[dict[str, Any]] = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    for name, value in parts.items():
        if name == "value":
            out.append({"name": "value", **value})
        elif isinstance(value, int):
            out.append({"name": name, "valueInteger": value})
        else:
            out.append({"name": name, "valueString": value})
    return {"name": "operation", "part": out}


def params(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(operations)}


def patch(resource: dict[str, Any], *operations: dict[str, Any]) -> dict[str, Any]:
    return apply_fhirpath_patch(resource, params(*operations))


def fails(resource: dict[str, Any], *operations: dict[str, Any]) -> InvalidInput:
    with pytest.raises(FhirError) as caught:
        patch(resource, *operations)
    assert isinstance(caught.value, InvalidInput)
    return caught.value


def identifiers(*values: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": "http://example.org", "value": v} for v in values]}


def ident(value: str) -> dict[str, Any]:
    return {"valueIdentifier": {"system": "http://example.org", "value": value}}


# --- the specification's test cases (fhir-test-cases r4/patch/fhir-patch-tests.xml, as JSON) ------------------------

CONTACT = {"name": {"text": "a name"}, "gender": "male"}
NAME_PART = {"name": "name", "valueHumanName": {"text": "a name"}}

SPEC_CASES: list[tuple[str, dict[str, Any], list[dict[str, Any]], dict[str, Any]]] = [
    (
        "replace primitive",
        {"resourceType": "Patient", "birthDate": "1920-01-01"},
        [op("replace", "Patient.birthDate", value={"valueDate": "1930-01-01"})],
        {"resourceType": "Patient", "birthDate": "1930-01-01"},
    ),
    (
        "delete primitive",
        {"resourceType": "Patient", "birthDate": "1920-01-01"},
        [op("delete", "Patient.birthDate")],
        {"resourceType": "Patient"},
    ),
    (
        "add primitive",
        {"resourceType": "Patient"},
        [op("add", "Patient", name="birthDate", value={"valueDate": "1930-01-01"})],
        {"resourceType": "Patient", "birthDate": "1930-01-01"},
    ),
    (
        "replace nested primitive #1",
        {"resourceType": "Patient", "contact": [CONTACT]},
        [op("replace", "Patient.contact[0].gender", value={"valueCode": "female"})],
        {"resourceType": "Patient", "contact": [{"name": {"text": "a name"}, "gender": "female"}]},
    ),
    (
        "replace nested primitive #2",
        {"resourceType": "Patient", "contact": [CONTACT]},
        [op("replace", "Patient.contact[0].name.text", value={"valueString": "the name"})],
        {"resourceType": "Patient", "contact": [{"name": {"text": "the name"}, "gender": "male"}]},
    ),
    (
        "delete nested primitive #1",
        {"resourceType": "Patient", "contact": [CONTACT]},
        [op("delete", "Patient.contact[0].gender")],
        {"resourceType": "Patient", "contact": [{"name": {"text": "a name"}}]},
    ),
    (
        "delete nested primitive #2 (the emptied name goes too)",
        {"resourceType": "Patient", "contact": [CONTACT]},
        [op("delete", "Patient.contact[0].name.text")],
        {"resourceType": "Patient", "contact": [{"gender": "male"}]},
    ),
    (
        "add nested primitive",
        {"resourceType": "Patient", "contact": [{"name": {"text": "a name"}}]},
        [op("add", "Patient.contact[0]", name="gender", value={"valueCode": "male"})],
        {"resourceType": "Patient", "contact": [CONTACT]},
    ),
    (
        "add complex",
        {"resourceType": "Patient"},
        [op("add", "Patient", name="maritalStatus", value={"valueCodeableConcept": {"text": "married"}})],
        {"resourceType": "Patient", "maritalStatus": {"text": "married"}},
    ),
    (
        "replace complex",
        {"resourceType": "Patient", "maritalStatus": {"id": "1", "text": "married"}},
        [op("replace", "Patient.maritalStatus", value={"valueCodeableConcept": {"id": "2", "text": "not married"}})],
        {"resourceType": "Patient", "maritalStatus": {"id": "2", "text": "not married"}},
    ),
    (
        "delete complex",
        {"resourceType": "Patient", "maritalStatus": {"text": "married"}},
        [op("delete", "Patient.maritalStatus")],
        {"resourceType": "Patient"},
    ),
    (
        "add anonymous type",
        {"resourceType": "Patient"},
        [op("add", "Patient", name="contact", value={"part": [NAME_PART]})],
        {"resourceType": "Patient", "contact": [{"name": {"text": "a name"}}]},
    ),
    (
        "delete anonymous type",
        {"resourceType": "Patient", "contact": [{"name": {"text": "a name"}}]},
        [op("delete", "Patient.contact[0]")],
        {"resourceType": "Patient"},
    ),
    (
        "list unchanged, contents changed",
        identifiers("value 1", "value 2"),
        [
            op("replace", "Patient.identifier[0].value", value={"valueString": "value 2"}),
            op("replace", "Patient.identifier[1].value", value={"valueString": "value 1"}),
        ],
        identifiers("value 2", "value 1"),
    ),
    (
        "add to list",
        identifiers("value 1", "value 2"),
        [op("add", "Patient", name="identifier", value=ident("value 3"))],
        identifiers("value 1", "value 2", "value 3"),
    ),
    (
        "insert in list #1",
        identifiers("value 1", "value 2"),
        [op("insert", "Patient.identifier", index=1, value=ident("value 3"))],
        identifiers("value 1", "value 3", "value 2"),
    ),
    (
        "insert in list #2",
        identifiers("value 1", "value 2"),
        [op("insert", "Patient.identifier", index=0, value=ident("value 3"))],
        identifiers("value 3", "value 1", "value 2"),
    ),
    *[
        (
            f"delete from list #{i + 1}",
            identifiers("value 1", "value 2", "value 3"),
            [op("delete", f"Patient.identifier[{i}]")],
            identifiers(*[v for j, v in enumerate(["value 1", "value 2", "value 3"]) if j != i]),
        )
        for i in range(3)
    ],
    (
        "reorder list #1",
        identifiers("value 1", "value 2", "value 3", "value 4"),
        [op("move", "Patient.identifier", source=3, destination=1)],
        identifiers("value 1", "value 4", "value 2", "value 3"),
    ),
    (
        "reorder list #2",
        identifiers("value 1", "value 2", "value 3", "value 4"),
        [op("move", "Patient.identifier", source=3, destination=0)],
        identifiers("value 4", "value 1", "value 2", "value 3"),
    ),
    (
        "reorder list #3",
        identifiers("value 1", "value 2", "value 3", "value 4"),
        [op("move", "Patient.identifier", source=3, destination=2)],
        identifiers("value 1", "value 2", "value 4", "value 3"),
    ),
    (
        "reorder list #4",
        identifiers("value 1", "value 2", "value 3", "value 4"),
        [op("move", "Patient.identifier", source=0, destination=3)],
        identifiers("value 2", "value 3", "value 4", "value 1"),
    ),
    (
        "reorder list #5",
        identifiers("value 1", "value 2", "value 3", "value 4"),
        [
            op("move", "Patient.identifier", source=1, destination=0),
            op("move", "Patient.identifier", source=2, destination=1),
        ],
        identifiers("value 2", "value 3", "value 1", "value 4"),
    ),
    (
        "reorder list #6",
        identifiers("value 1", "value 2", "value 3", "value 4"),
        [
            op("move", "Patient.identifier", source=3, destination=0),
            op("move", "Patient.identifier", source=3, destination=1),
            op("move", "Patient.identifier", source=3, destination=2),
        ],
        identifiers("value 4", "value 3", "value 2", "value 1"),
    ),
    (
        "operation on missing element #2 (add creates the list)",
        {"resourceType": "Patient"},
        [op("add", "Patient", name="identifier", value=ident("value 3"))],
        identifiers("value 3"),
    ),
    (
        "no difference",
        {"resourceType": "Patient", "birthDate": "1920-01-01"},
        [],
        {"resourceType": "Patient", "birthDate": "1920-01-01"},
    ),
]


@pytest.mark.parametrize(("resource", "operations", "expected"), [c[1:] for c in SPEC_CASES],
                         ids=[c[0] for c in SPEC_CASES])  # fmt: skip
def test_specification_cases(resource: dict[str, Any], operations: list[dict[str, Any]], expected: Any) -> None:
    assert patch(resource, *operations) == expected


def test_specification_operation_on_missing_element_is_an_error() -> None:
    resource = {"resourceType": "Patient", "identifier": [{"use": "official", "value": "123"}]}
    error = fails(
        resource,
        op("add", "Patient.identifier.where(use = 'official').period", name="end", value={"valueDate": "2021-12-01"}),
    )
    assert error.issues[0].expression == ("Parameters.parameter[0]",)
    assert error.issues[0].message_id == messages.FHIRPATH_PATH_MATCH
    assert "matched no element" in error.issues[0].diagnostics
    assert "Patient.identifier.where(use = 'official').period" in error.issues[0].diagnostics


def test_specification_full_resource_case_replaces_narrative_div_and_family() -> None:
    div = '<div xmlns="http://www.w3.org/1999/xhtml"><p>Peter James <b>Chalmers1</b></p></div>'
    resource = {
        "resourceType": "Patient",
        "id": "example",
        "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>Peter</p></div>'},
        "name": [{"use": "official", "family": "Chalmers", "given": ["Peter", "James"]}],
    }
    out = patch(
        resource,
        op("replace", "Patient.text.div", value={"valueString": div}),  # unquoted `div`, as the spec's case writes it
        op("replace", "Patient.name[0].family", value={"valueString": "Chalmers1"}),
    )
    assert out["text"] == {"status": "generated", "div": div}
    assert out["name"][0]["family"] == "Chalmers1"


# --- paths -----------------------------------------------------------------------------------------------------------


def _patient() -> dict[str, Any]:
    return jsonio.loads(
        """{
          "resourceType": "Patient", "id": "p1", "birthDate": "1974-12-25",
          "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                                        "valueDateTime": "1974-12-25T14:35:45-05:00"}]},
          "extension": [{"url": "http://example.org/a", "valueString": "A"},
                        {"url": "http://example.org/b", "valueInteger": 2}],
          "name": [
            {"use": "official", "family": "Chalmers", "given": ["Peter", "James"],
             "_given": [null, {"extension": [{"url": "http://example.org/rank", "valueString": "second"}]}]},
            {"use": "usual", "given": ["Jim"]}
          ],
          "identifier": [{"system": "urn:x", "value": "1"}, {"system": "urn:y", "value": "2"}],
          "managingOrganization": {"reference": "#org"},
          "contained": [{"resourceType": "Organization", "id": "org", "name": "Acme"}]
        }"""
    )


@pytest.mark.parametrize(
    "path",
    [
        "Patient.name[1]",
        "(Patient.name)[1]",
        "Patient.name.where(use='usual')",
        "Patient.name.where(use = 'usual' and given = 'Jim')",
        "Patient.name.last()",
        "Patient.name.tail()",
        "Patient.name.skip(1)",
        "Patient.name.where(given.exists() and family.empty())",
        "name[1]",
        "%resource.name[1]",
        "Patient.name.where($this.use = 'usual')",
    ],
)
def test_paths_select_the_intended_element(path: str) -> None:
    out = patch(_patient(), op("add", path, name="family", value={"valueString": "Usual"}))
    assert [n.get("family") for n in out["name"]] == ["Chalmers", "Usual"]


@pytest.mark.parametrize(
    "path",
    [
        "Patient.name.first()",
        "Patient.name.take(1)",
        "Patient.name.where('James' in given)",
        "Patient.name[1 - 1]",
        "Patient.name.where(use = 'official')",
    ],
)
def test_paths_that_select_the_first_name(path: str) -> None:
    out = patch(_patient(), op("replace", f"{path}.family", value={"valueString": "Chambers"}))
    assert [n.get("family") for n in out["name"]] == ["Chambers", None]


def test_where_criteria_are_not_disturbed_by_primitive_extensions() -> None:
    # Evaluated by fhirpathpy on the raw JSON, ``_given`` adds an extra item to ``given`` and the comparison fails.
    resource = {
        "resourceType": "Patient",
        "name": [{"given": ["Solo"], "_given": [{"extension": [{"url": "http://x", "valueString": "y"}]}]},
                 {"given": ["Other"]}],
    }  # fmt: skip
    out = patch(resource, op("add", "Patient.name.where(given = 'Solo')", name="family", value={"valueString": "F"}))
    assert out["name"][0]["family"] == "F"


def test_last_and_index_count_primitives_not_their_extension_companions() -> None:
    # fhirpathpy lists ``_given`` entries as extra items; the locator pairs each with its value instead.
    out = patch(_patient(), op("replace", "Patient.name[0].given.last()", value={"valueString": "Jacques"}))
    assert out["name"][0]["given"] == ["Peter", "Jacques"]
    assert fails(_patient(), op("replace", "Patient.name[0].given[2]", value={"valueString": "x"})).issues[
        0
    ].message_id == (messages.FHIRPATH_PATH_MATCH)


def test_where_on_primitives_with_this() -> None:
    out = patch(_patient(), op("delete", "Patient.name.given.where($this = 'James')"))
    assert out["name"][0]["given"] == ["Peter"]
    assert "_given" not in out["name"][0]


def test_identifier_where_system() -> None:
    out = patch(_patient(), op("replace", "Patient.identifier.where(system='urn:y').value", value={"valueString": "9"}))
    assert out["identifier"][1]["value"] == "9"


def test_extension_function_and_of_type() -> None:
    out = patch(
        _patient(),
        op("delete", "Patient.extension('http://example.org/a')"),
        op("replace", "Patient.extension.value.ofType(integer)", value={"valueInteger": 3}),
    )
    assert out["extension"] == [{"url": "http://example.org/b", "valueInteger": 3}]


def test_contained_resources_through_resolve_and_of_type() -> None:
    out = patch(
        _patient(),
        op("replace", "Patient.managingOrganization.resolve().name", value={"valueString": "Acme 2"}),
        op("add", "Patient.contained.ofType(Organization).first()", name="active", value={"valueBoolean": True}),
    )
    assert out["contained"] == [{"resourceType": "Organization", "id": "org", "name": "Acme 2", "active": True}]


def test_select_and_union() -> None:
    out = patch(_patient(), op("delete", "Patient.name.select(given.where($this = 'Jim'))"))
    assert "given" not in out["name"][1]
    error = fails(_patient(), op("delete", "Patient.birthDate | Patient.id"))
    assert "matched 2 elements" in error.issues[0].diagnostics


# --- choice types ----------------------------------------------------------------------------------------------------


def _observation() -> dict[str, Any]:
    return jsonio.loads(
        """{"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "weight"},
            "valueString": "heavy", "_valueString": {"id": "v"},
            "component": [{"code": {"text": "a"}, "valueQuantity": {"value": 72.50, "unit": "kg"}}]}"""
    )


def test_replace_choice_with_another_type_swaps_the_member_in_place() -> None:
    quantity = jsonio.loads('{"valueQuantity": {"value": 72.50, "unit": "kg", "system": "http://unitsofmeasure.org"}}')
    out = patch(_observation(), op("replace", "Observation.value", value=quantity))
    assert "valueString" not in out and "_valueString" not in out
    assert out["valueQuantity"]["value"] == Decimal("72.50") and str(out["valueQuantity"]["value"]) == "72.50"
    assert list(out) == ["resourceType", "id", "status", "code", "valueQuantity", "component"]


def test_replace_choice_with_same_type_and_through_of_type() -> None:
    out = patch(_observation(), op("replace", "Observation.value.ofType(string)", value={"valueString": "light"}))
    assert out["valueString"] == "light"
    assert "_valueString" not in out, "replacing a primitive replaces its id/extensions too"


def test_choice_type_not_allowed_is_rejected() -> None:
    error = fails(_observation(), op("replace", "Observation.value", value={"valueHumanName": {"text": "x"}}))
    assert error.issues[0].message_id == messages.FHIRPATH_VALUE_INVALID
    assert "HumanName" in error.issues[0].diagnostics and "Quantity" in error.issues[0].diagnostics


def test_add_choice_uses_the_value_type_and_refuses_a_second_type() -> None:
    bare = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    out = patch(bare, op("add", "Observation", name="value", value={"valueBoolean": False}))
    assert out["valueBoolean"] is False
    out = patch(bare, op("add", "Observation", name="value[x]", value={"valueInteger": 4}))
    assert out["valueInteger"] == 4
    error = fails(_observation(), op("add", "Observation", name="value", value={"valueQuantity": {"value": 1}}))
    assert "already has a value (valueString)" in error.issues[0].diagnostics
    error = fails(bare, op("add", "Observation", name="valueQuantity", value={"valueString": "x"}))
    assert error.issues[0].message_id == messages.FHIRPATH_VALUE_INVALID


def test_delete_choice_removes_the_member_and_its_companion() -> None:
    out = patch(_observation(), op("delete", "Observation.value"))
    assert "valueString" not in out and "_valueString" not in out


def test_component_value_with_parts_gets_the_typed_member_name() -> None:
    component = {
        "part": [
            {"name": "code", "valueCodeableConcept": {"text": "b"}},
            {"name": "value", "valueQuantity": {"value": Decimal("1.0"), "unit": "kg"}},
        ]
    }
    out = patch(_observation(), op("add", "Observation", name="component", value=component))
    assert out["component"][1] == {"code": {"text": "b"}, "valueQuantity": {"value": Decimal("1.0"), "unit": "kg"}}
    assert str(out["component"][1]["valueQuantity"]["value"]) == "1.0"


def test_decimal_replace_keeps_precision() -> None:
    value = jsonio.loads('{"valueDecimal": 80.10}')
    out = patch(_observation(), op("replace", "Observation.component[0].value.value", value=value))
    assert str(out["component"][0]["valueQuantity"]["value"]) == "80.10"
    assert b'"value":80.10' in jsonio.dumps(out)


def test_decimal_text_is_kept_exactly() -> None:
    value = jsonio.loads('{"valueDecimal": 0.00000010}')
    out = patch(_observation(), op("replace", "Observation.component[0].value.value", value=value))
    assert b'"value":0.00000010' in jsonio.dumps(out)
    assert b'"value":72.50' in jsonio.dumps(patch(_observation(), op("delete", "Observation.value")))


# --- value forms -----------------------------------------------------------------------------------------------------


def test_value_types_map_to_their_json_form() -> None:
    out = patch(
        {"resourceType": "Patient"},
        op("add", "Patient", name="active", value={"valueBoolean": True}),
        op("add", "Patient", name="multipleBirth", value={"valueInteger": 2}),
        op("add", "Patient", name="birthDate", value={"valueDate": "2020-01-01"}),
        op("add", "Patient", name="name", value={"valueHumanName": {"family": "F", "given": ["A", "B"]}}),
    )
    assert out == {
        "resourceType": "Patient",
        "active": True,
        "multipleBirthInteger": 2,
        "birthDate": "2020-01-01",
        "name": [{"family": "F", "given": ["A", "B"]}],
    }


def test_a_whole_human_name_built_from_parts() -> None:
    name = {
        "part": [
            {"name": "use", "valueCode": "nickname"},
            {"name": "family", "valueString": "Smith"},
            {"name": "given", "valueString": "Al"},
        ]
    }
    out = patch(_patient(), op("add", "Patient", name="name", value=name))
    assert out["name"][2] == {"use": "nickname", "family": "Smith", "given": ["Al"]}


def test_nested_parts_with_repeats_become_arrays() -> None:
    contact = {
        "part": [
            {"name": "name", "part": [{"name": "family", "valueString": "Du"}, {"name": "given", "valueString": "B"}]},
            {"name": "telecom", "valueContactPoint": {"system": "phone", "value": "1"}},
            {"name": "telecom", "valueContactPoint": {"system": "email", "value": "a@b"}},
        ]
    }
    out = patch({"resourceType": "Patient"}, op("add", "Patient", name="contact", value=contact))
    assert out["contact"] == [
        {
            "name": {"family": "Du", "given": ["B"]},
            "telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "a@b"}],
        }
    ]


def test_a_repeated_part_of_a_non_repeating_element_is_rejected() -> None:
    contact = {"part": [{"name": "name", "valueHumanName": {"text": "a"}}, {"name": "name", "valueHumanName": {}}]}
    error = fails({"resourceType": "Patient"}, op("add", "Patient", name="contact", value=contact))
    assert error.issues[0].message_id == messages.FHIRPATH_VALUE_INVALID
    assert "name is not a repeating element but is given more than once" in error.issues[0].diagnostics


def test_a_contained_resource_can_be_added_from_a_resource_part() -> None:
    org = {"resourceType": "Organization", "id": "o2", "name": "New"}
    out = patch(_patient(), op("add", "Patient", name="contained", value={"resource": org}))
    assert out["contained"][1] == org


def test_primitive_extension_on_the_value_part_travels_with_it() -> None:
    value = {"valueString": "Jo", "_valueString": {"extension": [{"url": "http://example.org/x", "valueCode": "c"}]}}
    out = patch(_patient(), op("insert", "Patient.name[1].given", index=0, value=value))
    assert out["name"][1]["given"] == ["Jo", "Jim"]
    assert out["name"][1]["_given"] == [value["_valueString"], None]


# --- primitive extensions stay consistent ----------------------------------------------------------------------------


def test_delete_of_a_primitive_array_item_removes_the_same_companion_slot() -> None:
    out = patch(_patient(), op("delete", "Patient.name[0].given[0]"))
    assert out["name"][0]["given"] == ["James"]
    assert out["name"][0]["_given"] == [{"extension": [{"url": "http://example.org/rank", "valueString": "second"}]}]
    out = patch(_patient(), op("delete", "Patient.name[0].given[1]"))
    assert out["name"][0]["given"] == ["Peter"]
    assert "_given" not in out["name"][0], "an all-null companion array is dropped"


def test_insert_add_and_move_keep_companions_aligned() -> None:
    out = patch(
        _patient(),
        op("insert", "Patient.name[0].given", index=0, value={"valueString": "Dr"}),
        op("add", "Patient.name[0]", name="given", value={"valueString": "Jr"}),
        op("move", "Patient.name[0].given", source=2, destination=0),
    )
    name = out["name"][0]
    assert name["given"] == ["James", "Dr", "Peter", "Jr"]
    assert name["_given"][0] == {"extension": [{"url": "http://example.org/rank", "valueString": "second"}]}
    assert name["_given"][1:] == [None, None, None]


def test_replace_of_a_primitive_array_item_clears_only_its_companion_slot() -> None:
    out = patch(_patient(), op("replace", "Patient.name[0].given[1]", value={"valueString": "Jacques"}))
    assert out["name"][0]["given"] == ["Peter", "Jacques"]
    assert "_given" not in out["name"][0]


def test_extensions_of_a_primitive_can_be_addressed_added_and_removed() -> None:
    out = patch(_patient(), op("delete", "Patient.birthDate.extension[0]"))
    assert out["birthDate"] == "1974-12-25" and "_birthDate" not in out, "emptied companion is pruned"
    ext = {"valueExtension": {"url": "http://example.org/e", "valueString": "s"}}
    out = patch(out, op("add", "Patient.birthDate", name="extension", value=ext))
    assert out["_birthDate"] == {"extension": [ext["valueExtension"]]}
    out = patch(_patient(), op("add", "Patient.name[1].given[0]", name="extension", value=ext))
    assert out["name"][1]["_given"] == [{"extension": [ext["valueExtension"]]}]
    out = patch(_patient(), op("replace", "Patient.name[0].given[1].extension.value", value={"valueString": "2nd"}))
    assert out["name"][0]["_given"][1]["extension"][0]["valueString"] == "2nd"


def test_replace_primitive_drops_its_old_extensions() -> None:
    out = patch(_patient(), op("replace", "Patient.birthDate", value={"valueDate": "1930-01-01"}))
    assert out["birthDate"] == "1930-01-01" and "_birthDate" not in out


def test_delete_of_primitive_removes_companion() -> None:
    out = patch(_patient(), op("delete", "Patient.birthDate"))
    assert "birthDate" not in out and "_birthDate" not in out


@settings(max_examples=60, deadline=None)
@given(
    given_names=st.lists(st.tuples(st.sampled_from(["A", "B", "C", "D"]), st.booleans()), min_size=1, max_size=5),
    steps=st.lists(
        st.tuples(st.sampled_from(["delete", "insert", "move"]), st.integers(0, 6), st.integers(0, 6)), max_size=6
    ),
)
def test_companions_stay_paired_with_their_values(
    given_names: list[tuple[str, bool]], steps: list[tuple[str, int, int]]
) -> None:
    # Model: a list of (value, extension-or-None) pairs; the patched JSON must always match it slot for slot.
    pairs: list[tuple[str, Any]] = [
        (f"{v}{i}", {"extension": [{"url": "http://x", "valueInteger": i}]} if has_ext else None)
        for i, (v, has_ext) in enumerate(given_names)
    ]
    name: dict[str, Any] = {"family": "F", "given": [p[0] for p in pairs]}  # family keeps name[0] from being pruned
    if any(p[1] for p in pairs):
        name["_given"] = [p[1] for p in pairs]
    resource: dict[str, Any] = {"resourceType": "Patient", "name": [name]}
    for n, (kind, a, b) in enumerate(steps):
        if kind == "delete" and a < len(pairs):
            resource = patch(resource, op("delete", f"Patient.name[0].given[{a}]"))
            pairs.pop(a)
        elif kind == "insert" and a <= len(pairs):
            resource = patch(resource, op("insert", "Patient.name[0].given", index=a, value={"valueString": f"N{n}"}))
            pairs.insert(a, (f"N{n}", None))
        elif kind == "move" and a < len(pairs) and b < len(pairs):
            resource = patch(resource, op("move", "Patient.name[0].given", source=a, destination=b))
            pairs.insert(b, pairs.pop(a))
    got = resource["name"][0]
    if not pairs:
        assert got == {"family": "F"}
        return
    assert got["given"] == [p[0] for p in pairs]
    if any(p[1] for p in pairs):
        assert got["_given"] == [p[1] for p in pairs]
    else:
        assert "_given" not in got


# --- inputs are never changed ----------------------------------------------------------------------------------------


def test_neither_the_resource_nor_the_parameters_are_changed() -> None:
    resource = _patient()
    document = params(
        op("delete", "Patient.name[0].given[0]"),
        op("add", "Patient", name="contact", value={"part": [{"name": "name", "valueHumanName": {"text": "c"}}]}),
        op("replace", "Patient.birthDate", value={"valueDate": "1930-01-01"}),
    )
    resource_before, document_before = copy.deepcopy(resource), copy.deepcopy(document)
    out = apply_fhirpath_patch(resource, document)
    assert resource == resource_before and document == document_before
    out["contact"][0]["name"]["text"] = "changed"
    assert document == document_before, "the result must not share objects with the parameters"


def test_an_empty_parameters_resource_returns_an_equal_copy() -> None:
    resource = _patient()
    for document in ({"resourceType": "Parameters"}, params()):
        out = apply_fhirpath_patch(resource, document)
        assert out == resource and out is not resource


def test_a_failing_operation_keeps_nothing_and_names_its_parameter() -> None:
    resource = _patient()
    before = copy.deepcopy(resource)
    error = fails(
        resource, op("delete", "Patient.birthDate"), op("replace", "Patient.gender", value={"valueCode": "x"})
    )
    assert resource == before
    issue = error.issues[0]
    assert issue.expression == ("Parameters.parameter[1]",)
    assert issue.diagnostics == "replace at 'Patient.gender': the path matched no element"


# --- errors ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("document", [{"resourceType": "Patient"}, [], "x", {"parameter": []}])
def test_the_body_must_be_parameters(document: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        apply_fhirpath_patch(_patient(), document)
    assert caught.value.issues[0].expression == ("Parameters",)
    assert caught.value.issues[0].message_id == messages.PATCH_DOCUMENT_INVALID


@pytest.mark.parametrize(
    ("parameter", "fragment"),
    [
        ({"name": "op", "part": []}, "only 'operation' parameters"),
        ({"name": "operation"}, "needs its parts"),
        ({"name": "operation", "part": [{"name": "path", "valueString": "Patient"}]}, "'type' part is missing"),
        (op("remove", "Patient.id"), "type 'remove' is not one of"),
        (op("add", "Patient", value={"valueString": "x"}), "add needs the part name"),
        (op("insert", "Patient.identifier"), "insert needs the parts value, index"),
        (op("move", "Patient.identifier", source=0), "move needs the part destination"),
        (op("replace", "Patient.id"), "replace needs the part value"),
        (op("delete", "Patient.id", valeu="x"), "part[2] has name 'valeu'"),
        ({"name": "operation", "part": [*op("delete", "Patient.id")["part"], {"name": "path", "valueString": "id"}]},
         "part 'path' is given more than once"),  # fmt: skip
        (op("move", "Patient.identifier", source=-1, destination=0), "non-negative valueInteger"),
        ({"name": "operation", "part": [{"name": "type", "valueCode": "delete"}, {"name": "path", "valueString": ""}]},
         "non-empty string"),  # fmt: skip
        ({"name": "operation", "part": [{"name": "type", "valueCode": "delete"}, {"name": "path", "valueInteger": 1}]},
         "non-empty string"),  # fmt: skip
    ],
)
def test_malformed_operations_name_their_parameter(parameter: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        apply_fhirpath_patch(_patient(), params(op("delete", "Patient.gender"), parameter))
    issue = caught.value.issues[0]
    assert issue.expression == ("Parameters.parameter[1]",)
    assert issue.message_id == messages.PATCH_DOCUMENT_INVALID
    assert fragment in issue.diagnostics


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ({"valueString": "x", "part": [{"name": "a", "valueString": "b"}]}, "exactly one of value[x], resource or"),
        ({}, "exactly one of value[x], resource or part"),
        ({"valueString": "x", "valueCode": "y"}, "more than one value[x]"),
        ({"part": []}, "at least one part"),
        ({"part": [{"valueString": "b"}]}, "needs a name"),
        ({"resource": {"id": "x"}}, "must be a resource"),
        ({"valueHumanName": [{"text": "a"}, {"text": "b"}]}, "valueHumanName must be a single value, not an array"),
        ({"valueString": None}, "valueString must be a single value, not null"),
        ({"valueString": "x", "_valueString": [{"id": "a"}]}, "_valueString must be an object"),
    ],
)
def test_malformed_values(value: dict[str, Any], fragment: str) -> None:
    error = fails(_patient(), op("add", "Patient", name="contact", value=value))
    assert error.issues[0].message_id == messages.PATCH_DOCUMENT_INVALID
    assert fragment in error.issues[0].diagnostics


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("Patient..name", "syntax error"),
        ("Patient.name[", "syntax error"),
        ("Patient.name )", "syntax error"),
        ("Patient.name #", "syntax error"),
        ("Patient.name.exists()", "exists() is not supported"),
        ("Patient.name.count() = 1", "compute values"),
        ("'Patient'", "literal"),
        ("Observation.status", "starts with 'Observation' but the resource is a Patient"),
        ("%context2.name", "%context2 is not available"),
        ("Patient.name.where(nosuch())", "cannot evaluate"),
        ("Patient.name.first(1)", "first() takes 0 arguments"),
        ("Patient.identifier.resolve()", "contained resources"),
        ("Patient.name is HumanName", "compute values"),
    ],
)
def test_invalid_paths(path: str, fragment: str) -> None:
    error = fails(_patient(), op("delete", path))
    issue = error.issues[0]
    assert issue.message_id == messages.FHIRPATH_PATH_INVALID
    assert issue.expression == ("Parameters.parameter[0]",)
    assert fragment in issue.diagnostics


def test_match_count_rules() -> None:
    assert patch(_patient(), op("delete", "Patient.gender")) == _patient(), "deleting nothing is a no-op"
    for kind, extra in (("replace", {"value": {"valueString": "x"}}), ("delete", {}),
                        ("add", {"name": "period", "value": {"valuePeriod": {"start": "2020"}}})):  # fmt: skip
        error = fails(_patient(), op(kind, "Patient.name.given", **extra))
        assert error.issues[0].message_id == messages.FHIRPATH_PATH_MATCH
        assert f"matched 3 elements (Patient.name[0].given[0], Patient.name[0].given[1], Patient.name[1].given[0]); " \
               f"{kind} needs exactly one" in error.issues[0].diagnostics  # fmt: skip
    error = fails(_patient(), op("replace", "Patient.maritalStatus", value={"valueCodeableConcept": {"text": "M"}}))
    assert "matched no element" in error.issues[0].diagnostics


@pytest.mark.parametrize(
    "operation",
    [
        op("delete", "Patient"),
        op("replace", "Patient", value={"resource": {"resourceType": "Patient"}}),
    ],
)
def test_the_resource_itself_cannot_be_deleted_or_replaced(operation: dict[str, Any]) -> None:
    assert fails(_patient(), operation).issues[0].message_id == messages.FHIRPATH_PATH_MATCH


def test_add_refuses_an_existing_single_element_and_children_of_primitives() -> None:
    error = fails(_patient(), op("add", "Patient", name="birthDate", value={"valueDate": "1930-01-01"}))
    assert "birthDate already has a value" in error.issues[0].diagnostics
    error = fails(_patient(), op("add", "Patient.birthDate", name="value", value={"valueString": "x"}))
    assert "only id and extension" in error.issues[0].diagnostics
    error = fails(_patient(), op("add", "Patient", name="_birthDate", value={"valueString": "x"}))
    assert "not an element name" in error.issues[0].diagnostics


@pytest.mark.parametrize(
    ("operation", "fragment", "message_id"),
    [
        (op("insert", "Patient.identifier", index=3, value=ident("x")), "index 3 is beyond the end of "
         "Patient.identifier (2 items)", messages.FHIRPATH_INDEX_INVALID),  # fmt: skip
        (op("insert", "Patient.telecom", index=1, value={"valueContactPoint": {"value": "1"}}), "(0 items)",
         messages.FHIRPATH_INDEX_INVALID),  # fmt: skip
        (op("move", "Patient.identifier", source=2, destination=0), "source 2 is outside Patient.identifier",
         messages.FHIRPATH_INDEX_INVALID),  # fmt: skip
        (op("move", "Patient.identifier", source=0, destination=2), "destination 2 is outside",
         messages.FHIRPATH_INDEX_INVALID),  # fmt: skip
        (op("move", "Patient.telecom", source=0, destination=0), "Patient.telecom is not a list",
         messages.FHIRPATH_VALUE_INVALID),  # fmt: skip
        (op("insert", "Patient.birthDate", index=0, value={"valueDate": "2000-01-01"}), "Patient.birthDate is not a "
         "list", messages.FHIRPATH_VALUE_INVALID),  # fmt: skip
        (op("insert", "Patient.maritalStatus", index=0, value={"valueCodeableConcept": {"text": "M"}}),
         "Patient.maritalStatus is not a repeating element", messages.FHIRPATH_VALUE_INVALID),  # fmt: skip
        (op("insert", "Patient.name.first()", index=0, value={"valueHumanName": {}}), "needs the path of a list",
         messages.FHIRPATH_PATH_INVALID),  # fmt: skip
        (op("insert", "Patient.name.given", index=0, value={"valueString": "x"}), "matched 2 elements",
         messages.FHIRPATH_PATH_MATCH),  # fmt: skip
    ],
)
def test_list_operation_errors(operation: dict[str, Any], fragment: str, message_id: str) -> None:
    issue = fails(_patient(), operation).issues[0]
    assert issue.message_id == message_id
    assert fragment in issue.diagnostics


def test_insert_creates_an_absent_list_at_index_zero() -> None:
    out = patch(_patient(), op("insert", "Patient.telecom", index=0, value={"valueContactPoint": {"value": "1"}}))
    assert out["telecom"] == [{"value": "1"}]


@pytest.mark.parametrize(
    ("operation", "fragment"),
    [
        (op("replace", "Patient.birthDate", value={"valueBoolean": True}), "Patient.birthDate: expected a string"),
        (op("replace", "Patient.birthDate", value={"valueDate": "19300101"}), "not a valid date"),
        (op("add", "Patient", name="active", value={"valueString": "yes"}), "Patient.active: expected true or false"),
        (op("replace", "Patient.identifier[0]", value={"valueCoding": {"code": "c"}}), "Patient.identifier[0].code"),
        (op("add", "Patient", name="nickname", value={"valueString": "x"}), "Patient.nickname: unknown element"),
        (op("add", "Patient", name="contact", value={"part": [{"name": "name", "valueString": "x"}]}),
         "Patient.contact[0].name"),  # fmt: skip
        (op("add", "Patient.name[1]", name="family", value={"part": [{"name": "a", "valueString": "b"}]}),
         "Patient.name[1].family"),  # fmt: skip
    ],
)
def test_values_of_the_wrong_type_are_rejected(operation: dict[str, Any], fragment: str) -> None:
    issue = fails(_patient(), operation).issues[0]
    assert issue.message_id == messages.FHIRPATH_VALUE_INVALID
    assert fragment in issue.diagnostics


def test_outcome_shape() -> None:
    outcome = fails(_patient(), op("delete", "Patient..x")).outcome()
    issue = outcome["issue"][0]
    assert issue["severity"] == "error" and issue["code"] == "invalid"
    assert issue["expression"] == ["Parameters.parameter[0]"]
    assert issue["details"]["coding"][0]["code"] == messages.FHIRPATH_PATH_INVALID
