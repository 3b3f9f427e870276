"""Bad input is refused with a 4xx and an OperationOutcome that names the problem (with the FHIRPath location of the
element concerned in ``expression``), never a 5xx, and nothing is stored.

Spec: http://hl7.org/fhir/R4/http.html#2.21.0.17 (general rules), http://hl7.org/fhir/R4/json.html, xml.html.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.api._util import (
    FHIR_JSON,
    FHIR_XML,
    JSON_HEADERS,
    assert_error,
    by_identifier,
    create,
    newest_change,
    patient,
    version_count,
)
from tests.support.server import ServerProcess

J = FHIR_JSON
X = FHIR_XML
DEEP_JSON = b'{"resourceType":"Patient","extension":' + b"[" * 5000 + b"]" * 5000 + b"}"
DEEP_XML = (b'<Patient xmlns="http://hl7.org/fhir">' + b'<extension url="urn:x">' * 3000
            + b"</extension>" * 3000 + b"</Patient>")
OBS = b'{"resourceType":"Observation","status":"final","code":{"text":"x"},'

# (body, content type, status, expression or None, words the issue must contain)
BAD_BODIES = [
    pytest.param(b'{"resourceType":"Patient",', J, 400, None, "not valid JSON", id="malformed-json"),
    pytest.param(b'{"resourceType":"Patient" "active":true}', J, 400, None, "JSON", id="malformed-json-2"),
    pytest.param(b"", J, 400, None, "no body", id="empty-body"),
    pytest.param(b"[]", J, 400, None, "resourceType", id="json-array"),
    pytest.param(b'{"active":true}', J, 400, None, "resourceType", id="no-resourceType"),
    pytest.param(b'<Patient xmlns="http://hl7.org/fhir"><active value="true"/>', X, 400, None, "XML",
                 id="malformed-xml"),
    pytest.param(b'<Patient xmlns="http://hl7.org/fhir"><active value="true"></Patient>', X, 400, None, "XML",
                 id="malformed-xml-2"),
    pytest.param(b'{"resourceType":"Observation","status":"final","code":{"text":"x"}}', J, 400, "resourceType",
                 "Observation", id="wrong-resourceType"),
    pytest.param(b'<Observation xmlns="http://hl7.org/fhir"><status value="final"/><code><text value="x"/></code>'
                 b"</Observation>", X, 400, "resourceType", "Observation", id="wrong-resourceType-xml"),
    pytest.param(b'{"resourceType":"Foo","active":true}', J, 400, None, "Foo", id="unknown-resourceType"),
    pytest.param(b'{"resourceType":"Patient","favouriteColour":"blue"}', J, 400, "Patient.favouriteColour",
                 "unknown", id="unknown-element"),
    pytest.param(b'{"resourceType":"Patient","name":[{"family":"x","nickname":"y"}]}', J, 400,
                 "Patient.name[0].nickname", "unknown", id="unknown-nested-element"),
    pytest.param(b'<Patient xmlns="http://hl7.org/fhir"><favouriteColour value="blue"/></Patient>', X, 400,
                 "Patient.favouriteColour", "favouriteColour", id="unknown-element-xml"),
    pytest.param(b'{"resourceType":"Patient","birthDate":"2000-13-01"}', J, 400, "Patient.birthDate", "date",
                 id="bad-date"),
    pytest.param(b'{"resourceType":"Patient","birthDate":"01/02/2000"}', J, 400, "Patient.birthDate", "date",
                 id="bad-date-format"),
    pytest.param(b'<Patient xmlns="http://hl7.org/fhir"><birthDate value="2000-13-01"/></Patient>', X, 400,
                 "Patient.birthDate", "date", id="bad-date-xml"),
    pytest.param(OBS + b'"valueQuantity":{"value":"72.5"}}', J, 400, "Observation.valueQuantity.value", "number",
                 id="decimal-as-string"),
    pytest.param(b'{"resourceType":"Patient","gender":"male "}', J, 400, "Patient.gender", "code",
                 id="code-trailing-space"),
    pytest.param(b'{"resourceType":"Patient","active":"true"}', J, 400, "Patient.active", "true or false",
                 id="boolean-as-string"),
    pytest.param(b'{"resourceType":"Patient","multipleBirthInteger":1.5}', J, 400, "Patient.multipleBirthInteger",
                 "integer", id="integer-with-fraction"),
    pytest.param(OBS + b'"effectiveDateTime":"2020-01-01T10:00:00"}', J, 400, "Observation.effectiveDateTime",
                 "dateTime", id="dateTime-without-zone"),
    pytest.param(OBS + b'"issued":"2020-01-01"}', J, 400, "Observation.issued", "instant", id="bad-instant"),
    pytest.param(b'{"resourceType":"Patient","gender":""}', J, 400, "Patient.gender", "empty", id="empty-string"),
    pytest.param(b'{"resourceType":"Patient","gender":null}', J, 400, "Patient.gender", "null", id="null-value"),
    pytest.param(b'{"resourceType":"Patient","maritalStatus":{}}', J, 400, "Patient.maritalStatus", "ele-1",
                 id="empty-object"),
    pytest.param(b'{"resourceType":"Patient","name":[]}', J, 400, "Patient.name", "empty", id="empty-array"),
    pytest.param(b'{"resourceType":"Patient","name":{"family":"x"}}', J, 400, "Patient.name", "array",
                 id="single-for-array"),
    pytest.param(b'{"resourceType":"Patient","gender":["male"]}', J, 400, "Patient.gender", "single",
                 id="array-for-single"),
    pytest.param(b'{"resourceType":"Patient","extension":[{"valueString":"x"}]}', J, 400,
                 "Patient.extension[0].url", "required", id="missing-required"),
    pytest.param(OBS.replace(b'"status":"final",', b"") + b'"id":"x"}', J, 400, "Observation.status", "required",
                 id="missing-required-top"),
    pytest.param(b'{"resourceType":"Patient","contained":[{"resourceType":"Organization","id":"a b"}]}', J, 400,
                 "Patient.contained[0].id", "id", id="bad-contained-id"),
    pytest.param(b'{"resourceType":"Patient","gender":"male","gender":"female"}', J, 400, "Patient.gender",
                 "more than once", id="duplicate-key"),
    pytest.param(b'{"resourceType":"Patient","text":{"status":"generated","div":"<div xmlns=\\"http://www.w3.org'
                 b'/1999/xhtml\\"><script>alert(1)</script></div>"}}', J, 400, "Patient.text.div", "script",
                 id="narrative-script"),
    pytest.param(b'{"resourceType":"Patient","multipleBirthInteger":NaN}', J, 400, None, "JSON", id="json-nan"),
    pytest.param(DEEP_JSON, J, 400, None, "nested", id="deeply-nested-json"),
    pytest.param(DEEP_XML, X, 400, None, "depth", id="deeply-nested-xml"),
    pytest.param(b'{"resourceType":"Patient","name":[{"family":"M\xfcller"}]}', J, 400, None, "UTF-8",
                 id="non-utf8-json"),
    pytest.param(b'{"resourceType":"Patient","name":[{"family":"\\ud800"}]}', J, 400, None, "surrogate",
                 id="lone-surrogate"),
    pytest.param(b'<Patient xmlns="http://hl7.org/fhir"><name><family value="M\xfcller"/></name></Patient>', X,
                 400, None, "UTF-8", id="non-utf8-xml"),
    pytest.param(b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
                 b'<Patient xmlns="http://hl7.org/fhir"><gender value="&e;"/></Patient>', X, 400, None, "DOCTYPE",
                 id="xml-external-entity"),
    pytest.param(b'<Patient xmlns="http://example.org/other"><active value="true"/></Patient>', X, 400, None,
                 "namespace", id="xml-wrong-namespace"),
    pytest.param(b'<Patient xmlns="http://hl7.org/fhir"><gender>male</gender></Patient>', X, 400,
                 "Patient.gender", "text", id="xml-text-content"),
]


@pytest.mark.parametrize(("body", "ctype", "status", "expression", "mentions"), BAD_BODIES)
def test_bad_create_body(client: httpx.Client, body: bytes, ctype: str, status: int, expression: str | None,
                         mentions: str) -> None:
    before = newest_change(client)
    resp = client.post("/Patient", content=body, headers={"Content-Type": ctype})
    assert_error(resp, status, expression=expression, mentions=mentions)
    assert newest_change(client) == before


# the same bodies on update of an existing resource: the id must not be what fails
UPDATE_BODIES = [
    pytest.param(b'{"resourceType":"Patient","id":"{id}","birthDate":"2000-13-01"}', J, "Patient.birthDate",
                 id="bad-date"),
    pytest.param(b'{"resourceType":"Patient","id":"{id}","gender":"male "}', J, "Patient.gender", id="bad-code"),
    pytest.param(b'{"resourceType":"Patient","id":"{id}","favouriteColour":"blue"}', J, "Patient.favouriteColour",
                 id="unknown-element"),
    pytest.param(b'{"resourceType":"Patient","id":"{id}",', J, None, id="malformed-json"),
    pytest.param(b'<Patient xmlns="http://hl7.org/fhir"><id value="{id}"/><birthDate value="x"/></Patient>', X,
                 "Patient.birthDate", id="bad-date-xml"),
    pytest.param(b'<Patient xmlns="http://hl7.org/fhir"><id value="{id}"/>', X, None, id="malformed-xml"),
    pytest.param(b'{"resourceType":"Observation","id":"{id}","status":"final","code":{"text":"x"}}', J,
                 "resourceType", id="wrong-resourceType"),
    pytest.param(b'{"resourceType":"Patient","id":"other-id"}', J, "Patient.id", id="id-mismatch"),
    pytest.param(b'{"resourceType":"Patient"}', J, "Patient.id", id="id-missing"),
    pytest.param(b'<Patient xmlns="http://hl7.org/fhir"><id value="other-id"/></Patient>', X, "Patient.id",
                 id="id-mismatch-xml"),
]


@pytest.mark.parametrize(("body", "ctype", "expression"), UPDATE_BODIES)
def test_bad_update_body(client: httpx.Client, body: bytes, ctype: str, expression: str | None) -> None:
    rid = create(client, patient())["id"]
    before = newest_change(client)
    resp = client.put(f"/Patient/{rid}", content=body.replace(b"{id}", rid.encode()), headers={"Content-Type": ctype})
    assert_error(resp, 400, expression=expression)
    assert newest_change(client) == before
    assert version_count(client, "Patient", rid) == 1


@pytest.mark.parametrize(
    "ctype",
    ["text/plain", "application/x-www-form-urlencoded", "application/octet-stream", "image/png",
     "application/fhir+json; charset=iso-8859-1"],
)
def test_unsupported_content_type_is_415(client: httpx.Client, ctype: str) -> None:
    rid = create(client, patient())["id"]
    before = newest_change(client)
    body = b'{"resourceType":"Patient"}'
    assert_error(client.post("/Patient", content=body, headers={"Content-Type": ctype}), 415)
    put_body = b'{"resourceType":"Patient","id":"' + rid.encode() + b'"}'
    assert_error(client.put(f"/Patient/{rid}", content=put_body, headers={"Content-Type": ctype}), 415)
    assert newest_change(client) == before


# --- methods, paths and types -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/Patient/{id}", {"GET", "PUT", "DELETE", "PATCH"}),
        ("OPTIONS", "/Patient", {"GET", "POST", "PUT", "DELETE", "PATCH"}),
        ("DELETE", "/metadata", {"GET"}),
        ("POST", "/metadata", {"GET"}),
        ("PUT", "/Patient/{id}/_history", {"GET"}),
        ("DELETE", "/Patient/{id}/_history/1", {"GET"}),
        ("POST", "/Patient/_history", {"GET"}),
        ("DELETE", "/_history", {"GET"}),
        ("GET", "/Patient/_search", {"POST"}),
        ("PUT", "", {"GET", "POST"}),
        ("DELETE", "", {"GET", "POST"}),
        ("PUT", "/_search", {"POST"}),
        ("GET", "/_search", {"POST"}),
        ("POST", "/Patient/{id}/Observation", {"GET"}),
        ("DELETE", "/Patient/{id}/$everything", {"GET", "POST"}),
    ],
)
def test_unsupported_method_is_405_with_allow(client: httpx.Client, method: str, path: str,
                                              allowed: set[str]) -> None:
    rid = create(client, patient())["id"]
    before = newest_change(client)
    resp = client.request(method, path.replace("{id}", rid), content=b'{"resourceType":"Patient"}',
                          headers=JSON_HEADERS)
    assert_error(resp, 405, mentions=method)
    assert {m.strip() for m in resp.headers["allow"].split(",")} == allowed
    assert newest_change(client) == before
    assert version_count(client, "Patient", rid) == 1


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/Foo"), ("GET", "/Foo/1"), ("POST", "/Foo"), ("PUT", "/Foo/1"), ("DELETE", "/Foo/1"),
     ("GET", "/patient/1"), ("GET", "/Foo/1/_history"), ("GET", "/Foo/_history")],
)
def test_unknown_resource_type_is_404(client: httpx.Client, method: str, path: str) -> None:
    before = newest_change(client)
    body = b'{"resourceType":"Foo"}' if method in ("POST", "PUT") else None
    resp = client.request(method, path, content=body, headers=JSON_HEADERS)
    assert_error(resp, 404, mentions=path.split("/")[1], code="not-found")
    assert newest_change(client) == before


@pytest.mark.parametrize("path", ["/Observation/{id}/$everything", "/Patient/{id}/$lastn", "/Patient/$validate",
                                  "/$export", "/Patient/{id}/_history/1/extra", "/Patient/{id}/foo"])
def test_unknown_operation_or_path_is_404(client: httpx.Client, path: str) -> None:
    rid = create(client, patient())["id"]
    assert_error(client.get(path.replace("{id}", rid)), 404)


def test_outside_fhir_base_is_404(server: ServerProcess) -> None:
    resp = httpx.get(server.base.removesuffix("/fhir") + "/not-fhir")
    assert_error(resp, 404)


def test_system_search_answers_a_searchset(client: httpx.Client) -> None:
    """System search (GET and POST on the base) is an interaction now, not an error."""
    rid = create(client, patient())["id"]
    for resp in (client.get("", params={"_id": rid}),
                 client.post("/_search", data={"_id": rid})):
        assert resp.status_code == 200, resp.text
        bundle = resp.json()
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
        assert [e["resource"]["id"] for e in bundle["entry"]] == [rid]


@pytest.mark.parametrize(
    ("params", "expression"),
    [({"_count": "abc"}, "_count"), ({"_count": "-2"}, "_count"), ({"identifier": ""}, "identifier"),
     ({"_cursor": "@@"}, "_cursor"), ({"identifier": "a|b|c"}, "identifier"), ({"birthdate": "2000-13"}, "birthdate"),
     ({"birthdate": "xx2000"}, "birthdate"), ({"name:below": "x"}, "name:below"), ({"_sort": "-"}, "_sort"),
     ({"_summary": "maybe"}, "_summary"), ({"_total": "all"}, "_total")],
)
def test_bad_search_parameters(client: httpx.Client, params: dict[str, str], expression: str) -> None:
    assert_error(client.get("/Patient", params=params), 400, expression=expression)


def test_unknown_search_parameter_is_lenient_unless_strict(client: httpx.Client) -> None:
    """An unknown parameter is dropped and reported (search.mode = outcome); ``Prefer: handling=strict`` refuses it."""
    body = create(client, patient())
    params = {"identifier": f"{body['identifier'][0]['system']}|{body['identifier'][0]['value']}",
              "unknownParam": "x"}
    resp = client.get("/Patient", params=params)
    assert resp.status_code == 200, resp.text
    entries = resp.json()["entry"]
    assert [e["resource"]["id"] for e in entries if e["search"]["mode"] == "match"] == [body["id"]]
    outcomes = [e["resource"] for e in entries if e["search"]["mode"] == "outcome"]
    assert len(outcomes) == 1 and outcomes[0]["resourceType"] == "OperationOutcome"
    assert "unknownParam" in json.dumps(outcomes[0])
    assert_error(client.get("/Patient", params=params, headers={"Prefer": "handling=strict"}), 400,
                 expression="unknownParam")


def test_json_with_byte_order_mark(client: httpx.Client) -> None:
    """RFC 8259 lets a parser ignore a BOM; what matters is that it is not a server error."""
    identifier = {"system": "urn:bom", "value": patient()["identifier"][0]["value"]}
    body = b"\xef\xbb\xbf" + json.dumps(patient(identifier)).encode()
    resp = client.post("/Patient", content=body, headers=JSON_HEADERS)
    assert resp.status_code == 201, resp.text
    assert by_identifier(client, "Patient", identifier) == [resp.json()["id"]]


@pytest.mark.parametrize("value", ["banana", 'W/"x"', '"-1"'])
def test_bad_if_match_is_400(client: httpx.Client, value: str) -> None:
    body = create(client, patient())
    resp = client.put(f"/Patient/{body['id']}", json={**body, "active": True},
                      headers={**JSON_HEADERS, "If-Match": value})
    assert_error(resp, 400, mentions="If-Match")
    assert version_count(client, "Patient", body["id"]) == 1
    assert_error(client.delete(f"/Patient/{body['id']}", headers={"If-Match": value}), 400, mentions="If-Match")
    assert version_count(client, "Patient", body["id"]) == 1


@pytest.mark.parametrize("value", ["=&&=", "", "unknown=1", "identifier"])
def test_bad_if_none_exist_is_400(client: httpx.Client, value: str) -> None:
    before = newest_change(client)
    resp = client.post("/Patient", json=patient(), headers={**JSON_HEADERS, "If-None-Exist": value})
    if value == "":  # an empty header is no condition at all: a plain create
        assert resp.status_code == 201
        return
    assert_error(resp, 400, mentions="If-None-Exist" if value != "unknown=1" else "unknown")
    assert newest_change(client) == before


# --- body size limit (a dedicated server with a 1000-byte limit) -------------------------------------------------


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("aegis-small"), env={"AEGIS_MAX_BODY_BYTES": "1000"})
    proc.start()
    yield proc
    proc.stop()


def _padded_patient(size: int) -> bytes:
    base = b'{"resourceType":"Patient","name":[{"family":"'
    tail = b'"}]}'
    return base + b"x" * (size - len(base) - len(tail)) + tail


def test_body_over_limit_is_413(small_server: ServerProcess) -> None:
    with httpx.Client(base_url=small_server.base, timeout=30) as c:
        before = newest_change(c)
        ok = c.post("/Patient", content=_padded_patient(900), headers=JSON_HEADERS)
        assert ok.status_code == 201, ok.text
        after_ok = newest_change(c)
        assert after_ok != before

        big = _padded_patient(5000)
        assert_error(c.post("/Patient", content=big, headers=JSON_HEADERS), 413, mentions="1000")

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while streaming
            for i in range(0, len(big), 256):
                yield big[i:i + 256]

        streamed = c.post("/Patient", content=chunks(), headers=JSON_HEADERS)
        assert_error(streamed, 413)
        rid = ok.json()["id"]
        put_big = big.replace(b'"Patient",', b'"Patient","id":"' + rid.encode() + b'",')
        assert_error(c.put(f"/Patient/{rid}", content=put_big, headers=JSON_HEADERS), 413)
        assert newest_change(c) == after_ok
        assert version_count(c, "Patient", rid) == 1


# --- validator checks beyond structure (resources/validate.py) ---------------------------------------------------


def test_impossible_date_is_400(client: httpx.Client) -> None:
    resp = client.post("/Patient", content=b'{"resourceType":"Patient","birthDate":"2001-02-30"}',
                       headers=JSON_HEADERS)
    assert_error(resp, 400, expression="Patient.birthDate")


def test_code_outside_required_binding_is_400(client: httpx.Client) -> None:
    resp = client.post("/Patient", content=b'{"resourceType":"Patient","gender":"MALE"}', headers=JSON_HEADERS)
    assert_error(resp, 400, expression="Patient.gender")


def test_control_character_in_string_is_400(client: httpx.Client) -> None:
    resp = client.post("/Patient", content=b'{"resourceType":"Patient","name":[{"family":"a\\u0001b"}]}',
                       headers=JSON_HEADERS)
    assert_error(resp, 400, expression="Patient.name[0].family")


def test_garbage_never_5xx(client: httpx.Client) -> None:
    """A sweep of odd requests: whatever the answer, it is not a server error and is FHIR JSON."""
    rid = create(client, patient())["id"]
    odd: list[tuple[str, str, bytes, dict[str, str]]] = [
        ("POST", "/Patient", b"\x00\x01\x02", JSON_HEADERS),
        ("POST", "/Patient", b'{"resourceType":"Patient"}' * 3, JSON_HEADERS),
        ("POST", "/Patient", b"<Patient/>", {"Content-Type": X}),
        ("POST", "/Patient", b"<?xml version='1.0'?>", {"Content-Type": X}),
        ("POST", "/", b'{"resourceType":"Bundle","type":"batch","entry":[1,2]}', JSON_HEADERS),
        ("POST", "/", b'{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":7}}]}',
         JSON_HEADERS),
        ("PATCH", f"/Patient/{rid}", b"[1,2,3]", {"Content-Type": "application/json-patch+json"}),
        ("PATCH", f"/Patient/{rid}", b'{"resourceType":"Parameters","parameter":[{"name":"operation"}]}',
         JSON_HEADERS),
        ("GET", f"/Patient/{rid}/_history/99999999999999999999", b"", {}),
        ("GET", f"/Patient/{rid}?_elements=", b"", {}),
        ("GET", f"/Patient/{rid}?_summary=", b"", {}),
        ("GET", "/Patient?_count=99999999999999999999", b"", {}),
        ("GET", "/_history?_since=9999-99-99", b"", {}),
        ("PUT", "/Patient?identifier=", b'{"resourceType":"Patient"}', JSON_HEADERS),
        ("DELETE", "/Patient?_count=0&identifier=x", b"", {}),
    ]
    for method, path, body, headers in odd:
        resp = client.request(method, path, content=body or None, headers=headers)
        assert resp.status_code < 500, (method, path, resp.text)
        if resp.status_code >= 400:
            assert resp.json()["resourceType"] == "OperationOutcome", (method, path, resp.text)
    assert version_count(client, "Patient", rid) == 1
