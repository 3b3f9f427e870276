"""PATCH with JSON Patch (application/json-patch+json) and FHIRPath Patch (a Parameters resource).

The result of a patch is validated like an update: a patch that would produce an invalid resource is refused and
nothing is stored. Spec: http://hl7.org/fhir/R4/http.html#patch, http://hl7.org/fhir/R4/fhirpatch.html.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api._util import (
    FHIR_XML,
    JSON_HEADERS,
    JSON_PATCH,
    assert_error,
    create,
    ident,
    observation,
    patient,
    read,
    uid,
    version_count,
)
from tests.support.server import ServerProcess

PATCH_HEADERS = {"Content-Type": JSON_PATCH}


def _op(type_: str, path: str, **parts: Any) -> dict[str, Any]:
    """One FHIRPath Patch operation parameter; ``parts`` maps part names to (valueX name, value)."""
    part: list[dict[str, Any]] = [{"name": "type", "valueCode": type_}, {"name": "path", "valueString": path}]
    for name, (value_key, value) in parts.items():
        part.append({"name": name, value_key: value})
    return {"name": "operation", "part": part}


def _params(*ops: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(ops)}


def _unchanged(client: httpx.Client, before: dict[str, Any]) -> None:
    """Nothing was stored: the current version is still the one we had."""
    assert read(client, before["resourceType"], before["id"]) == before
    assert version_count(client, before["resourceType"], before["id"]) == int(before["meta"]["versionId"])


# --- JSON Patch ---------------------------------------------------------------------------------------------------


def test_json_patch_success(client: httpx.Client, server: ServerProcess) -> None:
    body = create(client, patient(name=[{"family": "Old", "given": ["A"]}], gender="male"))
    rid = body["id"]
    doc = [
        {"op": "test", "path": "/gender", "value": "male"},
        {"op": "replace", "path": "/gender", "value": "female"},
        {"op": "add", "path": "/name/0/given/-", "value": "B"},
        {"op": "add", "path": "/birthDate", "value": "1980-02-29"},
        {"op": "remove", "path": "/name/0/family"},
        {"op": "copy", "from": "/birthDate", "path": "/deceasedDateTime"},
    ]
    resp = client.patch(f"/Patient/{rid}", json=doc, headers=PATCH_HEADERS)
    assert resp.status_code == 200, resp.text
    assert resp.headers["etag"] == 'W/"2"'
    assert resp.headers["location"] == f"{server.base}/Patient/{rid}/_history/2"
    stored = read(client, "Patient", rid)
    assert stored == resp.json()
    assert stored["gender"] == "female"
    assert stored["name"] == [{"given": ["A", "B"]}]
    assert stored["birthDate"] == "1980-02-29" and stored["deceasedDateTime"] == "1980-02-29"
    assert stored["meta"]["versionId"] == "2"
    assert stored["identifier"] == body["identifier"]
    entries = client.get(f"/Patient/{rid}/_history").json()["entry"]
    assert entries[0]["request"]["method"] == "PATCH"


def test_json_patch_keeps_decimal_precision(client: httpx.Client) -> None:
    body = create(client, observation())
    raw = b'[{"op":"replace","path":"/valueQuantity/value","value":98.60}]'
    resp = client.patch(f"/Observation/{body['id']}", content=raw, headers=PATCH_HEADERS)
    assert resp.status_code == 200, resp.text
    assert '"value":98.60' in client.get(f"/Observation/{body['id']}").text


def test_json_patch_prefer_minimal(client: httpx.Client) -> None:
    body = create(client, patient())
    resp = client.patch(f"/Patient/{body['id']}", json=[{"op": "add", "path": "/active", "value": True}],
                        headers={**PATCH_HEADERS, "Prefer": "return=minimal"})
    assert resp.status_code == 200 and resp.content == b""
    assert read(client, "Patient", body["id"])["active"] is True


def test_json_patch_failed_test_op(client: httpx.Client) -> None:
    body = create(client, patient(gender="male"))
    doc = [{"op": "add", "path": "/active", "value": True},
           {"op": "test", "path": "/gender", "value": "female"}]
    resp = client.patch(f"/Patient/{body['id']}", json=doc, headers=PATCH_HEADERS)
    assert_error(resp, 422, expression="Patch[1]", mentions="/gender")
    _unchanged(client, body)


@pytest.mark.parametrize(
    ("doc", "expression"),
    [
        ([{"op": "replace", "path": "/birthDate", "value": "31-12-2000"}], "Patient.birthDate"),
        ([{"op": "add", "path": "/favouriteColour", "value": "blue"}], "Patient.favouriteColour"),
        ([{"op": "add", "path": "/gender", "value": "male "}], "Patient.gender"),
        ([{"op": "add", "path": "/multipleBirthInteger", "value": 1.5}], "Patient.multipleBirthInteger"),
        ([{"op": "add", "path": "/active", "value": "yes"}], "Patient.active"),
        ([{"op": "replace", "path": "/identifier", "value": {}}], None),
    ],
)
def test_json_patch_producing_invalid_resource(client: httpx.Client, doc: list[dict[str, Any]],
                                               expression: str | None) -> None:
    body = create(client, patient(birthDate="2000-12-31"))
    resp = client.patch(f"/Patient/{body['id']}", json=doc, headers=PATCH_HEADERS)
    assert_error(resp, 400, expression=expression)
    _unchanged(client, body)


def test_json_patch_removing_required_element(client: httpx.Client) -> None:
    body = create(client, observation())
    resp = client.patch(f"/Observation/{body['id']}", json=[{"op": "remove", "path": "/status"}],
                        headers=PATCH_HEADERS)
    assert_error(resp, 400, expression="Observation.status")
    _unchanged(client, body)


@pytest.mark.parametrize("path", ["/id", "/resourceType"])
def test_json_patch_may_not_change_identity(client: httpx.Client, path: str) -> None:
    body = create(client, patient())
    value = uid() if path == "/id" else "Person"
    resp = client.patch(f"/Patient/{body['id']}", json=[{"op": "replace", "path": path, "value": value}],
                        headers=PATCH_HEADERS)
    assert_error(resp, 400)
    _unchanged(client, body)


@pytest.mark.parametrize(
    ("raw", "expression"),
    [
        (b'{"op":"add","path":"/active","value":true}', "Patch"),
        (b'[{"op":"frobnicate","path":"/active"}]', "Patch[0]"),
        (b'[{"op":"add","value":true}]', "Patch[0]"),
        (b'[{"op":"remove","path":"/name/7"}]', "Patch[0]"),
        (b'[{"op":"add","path":"/active"', None),
    ],
)
def test_json_patch_malformed_documents(client: httpx.Client, raw: bytes, expression: str | None) -> None:
    body = create(client, patient())
    resp = client.patch(f"/Patient/{body['id']}", content=raw, headers=PATCH_HEADERS)
    assert_error(resp, 400, expression=expression)
    _unchanged(client, body)


def test_patch_unknown_and_deleted(client: httpx.Client) -> None:
    doc = [{"op": "add", "path": "/active", "value": True}]
    assert_error(client.patch(f"/Patient/{uid()}", json=doc, headers=PATCH_HEADERS), 404)
    rid = create(client, patient())["id"]
    client.delete(f"/Patient/{rid}")
    assert_error(client.patch(f"/Patient/{rid}", json=doc, headers=PATCH_HEADERS), 410)
    assert version_count(client, "Patient", rid) == 2


def test_patch_wrong_content_type_is_415(client: httpx.Client) -> None:
    body = create(client, patient())
    resp = client.patch(f"/Patient/{body['id']}", content=b'[{"op":"add","path":"/active","value":true}]',
                        headers={"Content-Type": "text/plain"})
    assert_error(resp, 415)
    _unchanged(client, body)


def test_patch_empty_body_is_400(client: httpx.Client) -> None:
    body = create(client, patient())
    assert_error(client.patch(f"/Patient/{body['id']}", content=b"", headers=PATCH_HEADERS), 400)
    _unchanged(client, body)


# --- FHIRPath Patch -----------------------------------------------------------------------------------------------


def test_fhirpath_patch_operations(client: httpx.Client) -> None:
    body = create(client, patient(
        name=[{"family": "Doe", "given": ["John"]}],
        telecom=[{"system": "phone", "value": "1"}, {"system": "phone", "value": "2"},
                 {"system": "email", "value": "x@example.org"}],
        gender="male",
    ))
    rid = body["id"]
    params = _params(
        _op("replace", "Patient.gender", value=("valueCode", "female")),
        _op("add", "Patient", name=("valueString", "birthDate"), value=("valueDate", "1990-01-02")),
        _op("insert", "Patient.name[0].given", index=("valueInteger", 0), value=("valueString", "Jane")),
        _op("delete", "Patient.telecom.where(system = 'email')"),
        _op("move", "Patient.telecom", source=("valueInteger", 1), destination=("valueInteger", 0)),
    )
    resp = client.patch(f"/Patient/{rid}", json=params, headers=JSON_HEADERS)
    assert resp.status_code == 200, resp.text
    assert resp.headers["etag"] == 'W/"2"'
    stored = read(client, "Patient", rid)
    assert stored["gender"] == "female"
    assert stored["birthDate"] == "1990-01-02"
    assert stored["name"] == [{"family": "Doe", "given": ["Jane", "John"]}]
    assert stored["telecom"] == [{"system": "phone", "value": "2"}, {"system": "phone", "value": "1"}]


def test_fhirpath_patch_add_complex_value(client: httpx.Client) -> None:
    body = create(client, patient())
    params = _params(_op("add", "Patient", name=("valueString", "contact"), value=("valueString", "ignored")))
    # a complex value is built from parts
    params["parameter"][0]["part"][-1] = {"name": "value", "part": [
        {"name": "name", "valueHumanName": {"family": "Contact"}},
        {"name": "gender", "valueCode": "other"},
    ]}
    resp = client.patch(f"/Patient/{body['id']}", json=params, headers=JSON_HEADERS)
    assert resp.status_code == 200, resp.text
    assert read(client, "Patient", body["id"])["contact"] == [{"name": {"family": "Contact"}, "gender": "other"}]


def test_fhirpath_patch_invalid_result(client: httpx.Client) -> None:
    body = create(client, patient(gender="male"))
    params = _params(_op("replace", "Patient.gender", value=("valueCode", "male ")))
    resp = client.patch(f"/Patient/{body['id']}", json=params, headers=JSON_HEADERS)
    assert_error(resp, 400)
    _unchanged(client, body)


def test_fhirpath_patch_removing_required(client: httpx.Client) -> None:
    body = create(client, observation())
    resp = client.patch(f"/Observation/{body['id']}", json=_params(_op("delete", "Observation.code")),
                        headers=JSON_HEADERS)
    assert_error(resp, 400, expression="Observation.code")
    _unchanged(client, body)


def test_fhirpath_patch_bad_path(client: httpx.Client) -> None:
    body = create(client, patient())
    for path in ("Patient.name[", "Patient.gender"):  # not FHIRPath; matches nothing to replace
        resp = client.patch(f"/Patient/{body['id']}",
                            json=_params(_op("replace", path, value=("valueCode", "male"))), headers=JSON_HEADERS)
        assert_error(resp, 400, expression="Parameters.parameter[0]")
    _unchanged(client, body)


def test_fhirpath_patch_needs_parameters(client: httpx.Client) -> None:
    body = create(client, patient())
    resp = client.patch(f"/Patient/{body['id']}", json=patient(), headers=JSON_HEADERS)
    assert_error(resp, 400, mentions="Parameters")
    _unchanged(client, body)


def test_fhirpath_patch_if_match(client: httpx.Client) -> None:
    body = create(client, patient())
    params = _params(_op("add", "Patient", name=("valueString", "active"), value=("valueBoolean", True)))
    stale = client.patch(f"/Patient/{body['id']}", json=params, headers={**JSON_HEADERS, "If-Match": 'W/"9"'})
    assert_error(stale, 412)
    _unchanged(client, body)
    ok = client.patch(f"/Patient/{body['id']}", json=params, headers={**JSON_HEADERS, "If-Match": 'W/"1"'})
    assert ok.status_code == 200
    assert read(client, "Patient", body["id"])["active"] is True


def test_fhirpath_patch_in_xml(client: httpx.Client) -> None:
    identifier = ident()
    body = create(client, patient(identifier))
    xml = (
        '<Parameters xmlns="http://hl7.org/fhir"><parameter><name value="operation"/>'
        '<part><name value="type"/><valueCode value="add"/></part>'
        '<part><name value="path"/><valueString value="Patient"/></part>'
        '<part><name value="name"/><valueString value="gender"/></part>'
        '<part><name value="value"/><valueCode value="other"/></part>'
        "</parameter></Parameters>"
    )
    resp = client.patch(f"/Patient/{body['id']}", content=xml.encode(), headers={"Content-Type": FHIR_XML})
    assert resp.status_code == 200, resp.text
    assert read(client, "Patient", body["id"])["gender"] == "other"
