"""JSON Patch (RFC 6902) applied to FHIR resources: every operation, decimals, no mutation, and each error's shape."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from resources import jsonio
from resources.outcome import FhirError, InvalidInput, Unprocessable
from resources.patch import apply_json_patch, messages


def _patient() -> dict[str, Any]:
    return jsonio.loads(
        """{
          "resourceType": "Patient", "id": "p1", "active": true, "gender": "male", "birthDate": "1974-12-25",
          "name": [{"use": "official", "family": "Chalmers", "given": ["Peter", "James"]},
                   {"use": "usual", "given": ["Jim"]}],
          "identifier": [{"system": "urn:a", "value": "1"}]
        }"""
    )


def _observation() -> dict[str, Any]:
    return jsonio.loads(
        '{"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "weight"},'
        ' "valueQuantity": {"value": 72.50, "unit": "kg"}}'
    )


def _fails(resource: dict[str, Any], patch: Any) -> FhirError:
    with pytest.raises(FhirError) as caught:
        apply_json_patch(resource, patch)
    return caught.value


# --- operations ------------------------------------------------------------------------------------------------------


def test_add_object_member() -> None:
    out = apply_json_patch(_patient(), [{"op": "add", "path": "/deceasedBoolean", "value": False}])
    assert out["deceasedBoolean"] is False


def test_add_into_array_at_index_and_at_end() -> None:
    out = apply_json_patch(
        _patient(),
        [
            {"op": "add", "path": "/name/0/given/1", "value": "Middle"},
            {"op": "add", "path": "/name/0/given/-", "value": "Last"},
        ],
    )
    assert out["name"][0]["given"] == ["Peter", "Middle", "James", "Last"]


def test_remove_member_and_array_item() -> None:
    out = apply_json_patch(_patient(), [{"op": "remove", "path": "/gender"}, {"op": "remove", "path": "/name/1"}])
    assert "gender" not in out
    assert [n["use"] for n in out["name"]] == ["official"]


def test_replace() -> None:
    out = apply_json_patch(_patient(), [{"op": "replace", "path": "/birthDate", "value": "1930-01-01"}])
    assert out["birthDate"] == "1930-01-01"


def test_move_and_copy() -> None:
    out = apply_json_patch(
        _patient(),
        [
            {"op": "move", "from": "/name/0/given/1", "path": "/name/0/given/0"},
            {"op": "copy", "from": "/identifier/0", "path": "/identifier/-"},
        ],
    )
    assert out["name"][0]["given"] == ["James", "Peter"]
    assert out["identifier"] == [{"system": "urn:a", "value": "1"}] * 2
    out["identifier"][1]["value"] = "2"
    assert out["identifier"][0]["value"] == "1", "copy must not alias the source"


def test_test_operation_passes_then_later_operations_apply() -> None:
    out = apply_json_patch(
        _patient(),
        [
            {"op": "test", "path": "/name/0/family", "value": "Chalmers"},
            {"op": "replace", "path": "/name/0/family", "value": "Chambers"},
        ],
    )
    assert out["name"][0]["family"] == "Chambers"


def test_empty_patch_returns_an_equal_copy() -> None:
    resource = _patient()
    out = apply_json_patch(resource, [])
    assert out == resource and out is not resource


def test_pointer_escapes_are_honoured() -> None:
    resource = {"resourceType": "Basic", "a/b": {"m~n": 1}}
    out = apply_json_patch(resource, [{"op": "replace", "path": "/a~1b/m~0n", "value": 2}])
    assert out["a/b"]["m~n"] == 2


def test_members_other_than_the_operations_own_are_ignored() -> None:
    out = apply_json_patch(_patient(), [{"op": "remove", "path": "/gender", "value": "ignored", "comment": "x"}])
    assert "gender" not in out


# --- decimals and mutation --------------------------------------------------------------------------------------------


def test_decimal_precision_is_kept_in_values_written_and_untouched() -> None:
    patch = jsonio.loads('[{"op": "add", "path": "/valueQuantity/comparator", "value": "<"},'
                         ' {"op": "add", "path": "/referenceRange", "value": [{"low": {"value": 1.10}}]}]')  # fmt: skip
    out = apply_json_patch(_observation(), patch)
    assert out["valueQuantity"]["value"] == Decimal("72.50")
    assert str(out["valueQuantity"]["value"]) == "72.50"
    assert str(out["referenceRange"][0]["low"]["value"]) == "1.10"
    assert b'"value":72.50' in jsonio.dumps(out)


def test_replace_with_decimal_keeps_its_exact_form() -> None:
    patch = jsonio.loads('[{"op": "replace", "path": "/valueQuantity/value", "value": 80.100}]')
    out = apply_json_patch(_observation(), patch)
    assert str(out["valueQuantity"]["value"]) == "80.100"


def test_decimal_text_is_kept_exactly() -> None:
    component = '[{"code": {"text": "c"}, "valueDecimal": 0.00000010}]'
    patch = jsonio.loads('[{"op": "add", "path": "/valueQuantity/comparator", "value": "<"},'
                         f' {{"op": "add", "path": "/component", "value": {component}}}]')  # fmt: skip
    written = jsonio.dumps(apply_json_patch(_observation(), patch))
    assert b'"value":72.50' in written and b'"valueDecimal":0.00000010' in written


def test_test_compares_numbers_by_value_and_never_equates_1_with_true() -> None:
    ok = jsonio.loads('[{"op": "test", "path": "/valueQuantity/value", "value": 72.5}]')
    assert apply_json_patch(_observation(), ok)["valueQuantity"]["value"] == Decimal("72.50")
    bad = _fails(_patient(), [{"op": "test", "path": "/active", "value": 1}])
    assert isinstance(bad, Unprocessable)


def test_neither_the_resource_nor_the_patch_is_changed() -> None:
    resource, patch = _patient(), [
        {"op": "add", "path": "/name/0/given/-", "value": "X"},
        {"op": "add", "path": "/contact", "value": [{"name": {"text": "c"}}]},
        {"op": "remove", "path": "/identifier"},
    ]
    resource_before, patch_before = copy.deepcopy(resource), copy.deepcopy(patch)
    out = apply_json_patch(resource, patch)
    assert resource == resource_before and patch == patch_before
    out["contact"][0]["name"]["text"] = "changed"
    assert patch[1]["value"][0]["name"]["text"] == "c", "the result must not share objects with the patch"


def test_a_failing_patch_leaves_the_resource_unchanged() -> None:
    resource = _patient()
    before = copy.deepcopy(resource)
    _fails(resource, [{"op": "remove", "path": "/gender"}, {"op": "remove", "path": "/nope"}])
    assert resource == before


# --- errors ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [{"op": "add"}, "[]", None, 3])
def test_a_document_that_is_not_an_array_is_rejected(body: Any) -> None:
    error = _fails(_patient(), body)
    assert isinstance(error, InvalidInput)
    assert error.issues[0].expression == ("Patch",)
    assert error.issues[0].message_id == messages.PATCH_DOCUMENT_INVALID
    assert "array" in error.issues[0].diagnostics


@pytest.mark.parametrize(
    ("operation", "fragment"),
    [
        ("remove", "must be a JSON object"),
        ({"path": "/gender"}, "no 'op'"),
        ({"op": "delete", "path": "/gender"}, "unknown op 'delete'"),
        ({"op": "remove"}, "needs a 'path'"),
        ({"op": "remove", "path": 5}, "must be a JSON Pointer string"),
        ({"op": "remove", "path": "gender"}, "not a valid JSON Pointer"),
        ({"op": "remove", "path": "/a~2b"}, "not a valid JSON Pointer"),
        ({"op": "add", "path": "/gender"}, "needs a 'value'"),
        ({"op": "replace", "path": "/gender"}, "needs a 'value'"),
        ({"op": "test", "path": "/gender"}, "needs a 'value'"),
        ({"op": "move", "path": "/gender"}, "needs a 'from'"),
        ({"op": "copy", "path": "/gender", "from": 1}, "'from' must be a JSON Pointer string"),
    ],
)
def test_malformed_operations_name_their_index(operation: Any, fragment: str) -> None:
    error = _fails(_patient(), [{"op": "test", "path": "/id", "value": "p1"}, operation])
    assert isinstance(error, InvalidInput)
    issue = error.issues[0]
    assert issue.expression == ("Patch[1]",)
    assert issue.message_id == messages.PATCH_DOCUMENT_INVALID
    assert fragment in issue.diagnostics


@pytest.mark.parametrize(
    ("operation", "fragments"),
    [
        ({"op": "remove", "path": "/maritalStatus"}, ["/maritalStatus does not exist"]),
        ({"op": "replace", "path": "/name/5", "value": {}}, ["/name/5 does not exist", "2 items"]),
        ({"op": "remove", "path": "/name/0/given/2"}, ["/name/0/given/2", "2 items"]),
        ({"op": "add", "path": "/name/7", "value": {}}, ["/name/7", "2 items"]),
        ({"op": "add", "path": "/contact/0/name", "value": {}}, ["/contact does not exist"]),
        ({"op": "remove", "path": "/gender/x"}, ["/gender/x", "a string"]),
        ({"op": "remove", "path": "/name/first"}, ["'first'", "not an array index"]),
        ({"op": "remove", "path": "/name/-"}, ["'-'", "not an array index"]),
        ({"op": "move", "from": "/deceasedBoolean", "path": "/x"}, ["'from' /deceasedBoolean does not exist"]),
        ({"op": "copy", "from": "/name/9", "path": "/x"}, ["'from' /name/9"]),
    ],
)
def test_paths_that_lead_nowhere_are_invalid_input_with_the_pointer(operation: Any, fragments: list[str]) -> None:
    error = _fails(_patient(), [operation])
    assert isinstance(error, InvalidInput)
    issue = error.issues[0]
    assert issue.expression == ("Patch[0]",)
    assert issue.message_id == messages.PATCH_TARGET_MISSING
    assert operation["path"] in issue.diagnostics
    for fragment in fragments:
        assert fragment in issue.diagnostics
    assert "Chalmers" not in issue.diagnostics, "diagnostics must not dump the document"


def test_moving_a_value_into_its_own_child_is_rejected() -> None:
    error = _fails(_patient(), [{"op": "move", "from": "/name", "path": "/name/0/x"}])
    assert isinstance(error, InvalidInput)
    assert error.issues[0].expression == ("Patch[0]",)


@pytest.mark.parametrize(
    ("operation", "fragment"),
    [
        ({"op": "test", "path": "/gender", "value": "female"}, "differs"),
        ({"op": "test", "path": "/maritalStatus", "value": "x"}, "/maritalStatus does not exist"),
        ({"op": "test", "path": "/name/0/given", "value": ["Peter"]}, "differs"),
    ],
)
def test_a_failed_test_is_unprocessable(operation: dict[str, Any], fragment: str) -> None:
    error = _fails(_patient(), [{"op": "remove", "path": "/active"}, operation])
    assert isinstance(error, Unprocessable) and error.status == 422
    issue = error.issues[0]
    assert issue.expression == ("Patch[1]",)
    assert issue.message_id == messages.PATCH_TEST_FAILED
    assert operation["path"] in issue.diagnostics and fragment in issue.diagnostics


@pytest.mark.parametrize(
    "operation",
    [
        {"op": "replace", "path": "", "value": ["not", "an", "object"]},
        {"op": "replace", "path": "/resourceType", "value": "Observation"},
        {"op": "remove", "path": "/resourceType"},
    ],
)
def test_the_result_must_stay_a_resource_of_the_same_type(operation: dict[str, Any]) -> None:
    error = _fails(_patient(), [operation])
    assert isinstance(error, InvalidInput)
    assert error.issues[0].expression == ("Patch[0]",)
    assert error.issues[0].message_id == messages.PATCH_RESULT_INVALID


def test_replacing_the_whole_document_with_a_resource_of_the_same_type_is_allowed() -> None:
    replacement = {"resourceType": "Patient", "id": "p1"}
    out = apply_json_patch(_patient(), [{"op": "replace", "path": "", "value": replacement}])
    assert out == replacement


def test_outcome_of_an_error_carries_code_expression_and_message_id() -> None:
    outcome = _fails(_patient(), [{"op": "remove", "path": "/nope"}]).outcome()
    issue = outcome["issue"][0]
    assert issue["code"] == "invalid"
    assert issue["expression"] == ["Patch[0]"]
    assert issue["details"]["coding"][0]["code"] == messages.PATCH_TARGET_MISSING
