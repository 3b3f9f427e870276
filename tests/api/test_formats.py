"""Formats: application/fhir+json and application/fhir+xml in requests and responses (Content-Type, Accept,
``_format``), ``_pretty``, and subsetting on read with ``_summary`` and ``_elements`` (SUBSETTED tag).

Spec: http://hl7.org/fhir/R4/http.html#mime-type, http://hl7.org/fhir/R4/search.html#summary, #elements.
XML support comes from resources/xml.py.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from lxml import etree

from tests.api._util import (
    FHIR_JSON,
    FHIR_XML,
    JSON_HEADERS,
    XML_HEADERS,
    assert_error,
    by_identifier,
    create,
    has_subsetted_tag,
    ident,
    newest_change,
    patient,
    read,
    token,
)

NS = {"f": "http://hl7.org/fhir"}


def _xml(resp: httpx.Response) -> Any:
    assert resp.headers["content-type"].startswith(FHIR_XML), resp.headers
    return etree.fromstring(resp.content)


def _value(root: Any, path: str) -> str | None:
    found = root.xpath(f"{path}/@value", namespaces=NS)
    return str(found[0]) if found else None


def _id(root: Any) -> str:
    rid = _value(root, "f:id")
    assert rid, "the resource has no id"
    return rid


PATIENT_XML = """<?xml version="1.0" encoding="UTF-8"?>
<Patient xmlns="http://hl7.org/fhir">
  <text><status value="generated"/><div xmlns="http://www.w3.org/1999/xhtml"><p>Jane Doe</p></div></text>
  <identifier><system value="{system}"/><value value="{value}"/></identifier>
  <active value="true"/>
  <name><family value="Doe"/><given value="Jane"/><given value="Q"/></name>
  <gender value="female"/>
  <birthDate value="1970-03-04"/>
  <multipleBirthInteger value="2"/>
</Patient>
"""


def _patient_xml(identifier: dict[str, str]) -> bytes:
    return PATIENT_XML.format(system=identifier["system"], value=identifier["value"]).encode()


# --- XML in, XML/JSON out -----------------------------------------------------------------------------------------


def test_create_xml_read_json(client: httpx.Client) -> None:
    identifier = ident()
    resp = client.post("/Patient", content=_patient_xml(identifier), headers=XML_HEADERS)
    assert resp.status_code == 201, resp.text
    root = _xml(resp)
    rid = _id(root)
    assert _value(root, "f:meta/f:versionId") == "1"
    stored = read(client, "Patient", rid)
    assert stored["identifier"] == [identifier]
    assert stored["active"] is True
    assert stored["name"] == [{"family": "Doe", "given": ["Jane", "Q"]}]
    assert stored["birthDate"] == "1970-03-04" and stored["multipleBirthInteger"] == 2
    assert stored["text"]["status"] == "generated"
    assert "Jane Doe" in stored["text"]["div"]
    assert by_identifier(client, "Patient", identifier) == [rid]


def test_create_json_read_xml(client: httpx.Client) -> None:
    body = create(client, patient(name=[{"family": "Smith", "given": ["A", "B"]}], active=False,
                                  extension=[{"url": "urn:ext", "valueDecimal": 1.50}]))
    for resp in (
        client.get(f"/Patient/{body['id']}", headers={"Accept": FHIR_XML}),
        client.get(f"/Patient/{body['id']}", params={"_format": "xml"}),
        client.get(f"/Patient/{body['id']}", params={"_format": "application/fhir+xml"}),
    ):
        assert resp.status_code == 200
        root = _xml(resp)
        assert etree.QName(root).localname == "Patient" and etree.QName(root).namespace == NS["f"]
        assert _value(root, "f:id") == body["id"]
        assert _value(root, "f:active") == "false"
        assert [g for g in root.xpath("f:name/f:given/@value", namespaces=NS)] == ["A", "B"]
        assert _value(root, "f:extension/f:valueDecimal") == "1.5"
        assert root.xpath("f:extension/@url", namespaces=NS) == ["urn:ext"]


def test_xml_round_trip_is_lossless(client: httpx.Client) -> None:
    identifier = ident()
    created = client.post("/Patient", content=_patient_xml(identifier), headers=XML_HEADERS)
    rid = _id(_xml(created))
    as_json = read(client, "Patient", rid)
    again = client.put(f"/Patient/{rid}", content=client.get(f"/Patient/{rid}", params={"_format": "xml"}).content,
                       headers=XML_HEADERS)
    assert again.status_code == 200, again.text
    after = read(client, "Patient", rid)
    assert {k: v for k, v in after.items() if k != "meta"} == {k: v for k, v in as_json.items() if k != "meta"}
    assert after["meta"]["versionId"] == "2"


def test_format_param_overrides_accept(client: httpx.Client) -> None:
    rid = create(client, patient())["id"]
    as_json = client.get(f"/Patient/{rid}", params={"_format": "json"}, headers={"Accept": FHIR_XML})
    assert as_json.headers["content-type"].startswith(FHIR_JSON)
    assert as_json.json()["id"] == rid
    as_xml = client.get(f"/Patient/{rid}", params={"_format": "xml"}, headers={"Accept": FHIR_JSON})
    assert _value(_xml(as_xml), "f:id") == rid


@pytest.mark.parametrize("accept", ["application/fhir+json", "application/json", "*/*",
                                    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"])
def test_accept_json_variants(client: httpx.Client, accept: str) -> None:
    rid = create(client, patient())["id"]
    resp = client.get(f"/Patient/{rid}", headers={"Accept": accept})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith(FHIR_JSON)
    assert resp.json()["id"] == rid


def test_accept_xml_with_quality(client: httpx.Client) -> None:
    rid = create(client, patient())["id"]
    resp = client.get(f"/Patient/{rid}",
                      headers={"Accept": "application/fhir+json;q=0.5, application/fhir+xml;q=0.9"})
    assert _value(_xml(resp), "f:id") == rid


def test_unacceptable_format_is_406(client: httpx.Client) -> None:
    rid = create(client, patient())["id"]
    assert_error(client.get(f"/Patient/{rid}", headers={"Accept": "text/turtle"}), 406)
    assert_error(client.get(f"/Patient/{rid}", params={"_format": "ttl"}), 406, expression="_format")


def test_errors_follow_requested_format(client: httpx.Client) -> None:
    resp = client.get("/Patient/does-not-exist", headers={"Accept": FHIR_XML})
    assert resp.status_code == 404
    root = _xml(resp)
    assert etree.QName(root).localname == "OperationOutcome"
    assert root.xpath("f:issue/f:severity/@value", namespaces=NS) == ["error"]


def test_xml_search_and_history_bundles(client: httpx.Client) -> None:
    identifier = ident()
    rid = create(client, patient(identifier))["id"]
    search = _xml(client.get("/Patient", params={"identifier": token(identifier), "_format": "xml"}))
    assert etree.QName(search).localname == "Bundle"
    assert _value(search, "f:type") == "searchset"
    assert search.xpath("f:entry/f:resource/f:Patient/f:id/@value", namespaces=NS) == [rid]
    history = _xml(client.get(f"/Patient/{rid}/_history", headers={"Accept": FHIR_XML}))
    assert _value(history, "f:type") == "history"
    assert history.xpath("f:entry/f:response/f:etag/@value", namespaces=NS) == ['W/"1"']


def test_xml_transaction(client: httpx.Client) -> None:
    p_ident = ident()
    xml = f"""<Bundle xmlns="http://hl7.org/fhir"><type value="transaction"/>
      <entry><fullUrl value="urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"/>
        <resource><Patient><identifier><system value="{p_ident['system']}"/><value value="{p_ident['value']}"/>
        </identifier></Patient></resource>
        <request><method value="POST"/><url value="Patient"/></request></entry>
      <entry><resource><Observation><status value="final"/><code><text value="x"/></code>
        <subject><reference value="urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"/></subject></Observation></resource>
        <request><method value="POST"/><url value="Observation"/></request></entry>
    </Bundle>"""
    resp = client.post("", content=xml.encode(), headers=XML_HEADERS)
    assert resp.status_code == 200, resp.text
    root = _xml(resp)
    assert _value(root, "f:type") == "transaction-response"
    locations = root.xpath("f:entry/f:response/f:location/@value", namespaces=NS)
    assert len(locations) == 2
    pid, oid = locations[0].split("/")[1], locations[1].split("/")[1]
    assert by_identifier(client, "Patient", p_ident) == [pid]
    assert read(client, "Observation", oid)["subject"]["reference"] == f"Patient/{pid}"


def test_content_type_variants_accepted(client: httpx.Client) -> None:
    for ctype in ("application/fhir+json", "application/json", "application/fhir+json; charset=utf-8",
                  "application/fhir+json;fhirVersion=4.0"):
        identifier = ident()
        resp = client.post("/Patient", json=patient(identifier), headers={"Content-Type": ctype})
        assert resp.status_code == 201, (ctype, resp.text)
        assert by_identifier(client, "Patient", identifier) == [resp.json()["id"]]
    identifier = ident()
    resp = client.post("/Patient", content=_patient_xml(identifier),
                       headers={"Content-Type": "application/xml", "Accept": FHIR_JSON})
    assert resp.status_code == 201, resp.text
    assert resp.json()["identifier"] == [identifier]


def test_xml_body_with_json_content_type_is_400(client: httpx.Client) -> None:
    before = newest_change(client)
    resp = client.post("/Patient", content=_patient_xml(ident()), headers=JSON_HEADERS)
    assert_error(resp, 400)
    assert newest_change(client) == before


# --- _pretty ------------------------------------------------------------------------------------------------------


def test_pretty_json(client: httpx.Client) -> None:
    body = create(client, patient())
    compact = client.get(f"/Patient/{body['id']}")
    pretty = client.get(f"/Patient/{body['id']}", params={"_pretty": "true"})
    assert b"\n" not in compact.content.strip()
    assert pretty.content.count(b"\n") > 5 and b'\n  "id": ' in pretty.content
    assert pretty.json() == compact.json() == body
    assert client.get(f"/Patient/{body['id']}", params={"_pretty": "false"}).content == compact.content


def test_pretty_xml(client: httpx.Client) -> None:
    rid = create(client, patient())["id"]
    compact = client.get(f"/Patient/{rid}", params={"_format": "xml"})
    pretty = client.get(f"/Patient/{rid}", params={"_format": "xml", "_pretty": "true"})
    assert pretty.content.count(b"\n") > compact.content.count(b"\n") + 3
    assert _value(_xml(pretty), "f:id") == _value(_xml(compact), "f:id") == rid


def test_pretty_bundle(client: httpx.Client) -> None:
    rid = create(client, patient())["id"]
    resp = client.get(f"/Patient/{rid}/_history", params={"_pretty": "true"})
    assert resp.content.count(b"\n") > 10
    assert resp.json()["entry"][0]["resource"]["id"] == rid


# --- _summary and _elements ---------------------------------------------------------------------------------------


def _rich_patient() -> dict[str, Any]:
    return patient(
        text={"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>Jane</p></div>'},
        name=[{"family": "Doe", "given": ["Jane"]}],
        gender="female",
        birthDate="1970-03-04",
        photo=[{"contentType": "image/png", "data": "iVBORw0KGgo="}],
        communication=[{"language": {"text": "English"}}],
        maritalStatus={"text": "married"},
    )


def test_summary_true(client: httpx.Client) -> None:
    body = create(client, _rich_patient())
    resp = client.get(f"/Patient/{body['id']}", params={"_summary": "true"})
    assert resp.status_code == 200
    s = resp.json()
    assert has_subsetted_tag(s)
    assert s["id"] == body["id"] and s["meta"]["versionId"] == "1"
    assert s["name"] == body["name"] and s["gender"] == "female" and s["birthDate"] == "1970-03-04"
    assert s["identifier"] == body["identifier"]
    for dropped in ("text", "photo", "communication", "maritalStatus"):
        assert dropped not in s
    # the stored resource is untouched
    assert read(client, "Patient", body["id"]) == body


def test_summary_text(client: httpx.Client) -> None:
    body = create(client, _rich_patient())
    s = client.get(f"/Patient/{body['id']}", params={"_summary": "text"}).json()
    assert has_subsetted_tag(s)
    assert s["text"] == body["text"] and s["id"] == body["id"]
    for dropped in ("name", "photo", "communication", "birthDate"):
        assert dropped not in s


def test_summary_data(client: httpx.Client) -> None:
    body = create(client, _rich_patient())
    s = client.get(f"/Patient/{body['id']}", params={"_summary": "data"}).json()
    assert has_subsetted_tag(s)
    assert "text" not in s
    assert s["photo"] == body["photo"] and s["communication"] == body["communication"]


def test_summary_false_is_whole_resource(client: httpx.Client) -> None:
    body = create(client, _rich_patient())
    s = client.get(f"/Patient/{body['id']}", params={"_summary": "false"}).json()
    assert s == body and not has_subsetted_tag(s)


def test_summary_count(client: httpx.Client) -> None:
    identifier = ident()
    ids = [create(client, patient(identifier))["id"] for _ in range(3)]
    bundle = client.get("/Patient", params={"identifier": token(identifier), "_summary": "count"}).json()
    assert bundle["type"] == "searchset" and bundle["total"] == 3
    assert not bundle.get("entry")
    # count is a search mode: on a read it is refused, naming the parameter
    assert_error(client.get(f"/Patient/{ids[0]}", params={"_summary": "count"}), 400, expression="_summary")


def test_summary_bad_value_is_400(client: httpx.Client) -> None:
    rid = create(client, patient())["id"]
    assert_error(client.get(f"/Patient/{rid}", params={"_summary": "maybe"}), 400, expression="_summary")


def test_elements(client: httpx.Client) -> None:
    body = create(client, _rich_patient())
    resp = client.get(f"/Patient/{body['id']}", params={"_elements": "name,gender"})
    assert resp.status_code == 200
    s = resp.json()
    assert has_subsetted_tag(s)
    assert set(s) == {"resourceType", "id", "meta", "name", "gender"}
    assert s["name"] == body["name"]
    assert s["meta"]["versionId"] == "1"


def test_elements_on_vread_and_in_xml(client: httpx.Client) -> None:
    body = create(client, _rich_patient())
    s = client.get(f"/Patient/{body['id']}/_history/1", params={"_elements": "birthDate"}).json()
    assert set(s) == {"resourceType", "id", "meta", "birthDate"} and has_subsetted_tag(s)
    root = _xml(client.get(f"/Patient/{body['id']}", params={"_elements": "gender", "_format": "xml"}))
    assert _value(root, "f:gender") == "female"
    assert root.xpath("f:name", namespaces=NS) == []
    assert "SUBSETTED" in root.xpath("f:meta/f:tag/f:code/@value", namespaces=NS)


def test_summary_in_xml(client: httpx.Client) -> None:
    body = create(client, _rich_patient())
    root = _xml(client.get(f"/Patient/{body['id']}", params={"_summary": "true", "_format": "xml"}))
    assert _value(root, "f:birthDate") == "1970-03-04"
    assert root.xpath("f:photo", namespaces=NS) == []
    assert "SUBSETTED" in root.xpath("f:meta/f:tag/f:code/@value", namespaces=NS)


def test_decimal_precision_survives_both_formats(client: httpx.Client) -> None:
    raw = json.dumps({"resourceType": "Patient", "extension": [{"url": "urn:x", "valueDecimal": 0}]})
    raw = raw.replace('"valueDecimal": 0', '"valueDecimal": 3.140')
    rid = client.post("/Patient", content=raw.encode(), headers=JSON_HEADERS).json()["id"]
    assert '"valueDecimal":3.140' in client.get(f"/Patient/{rid}").text
    root = _xml(client.get(f"/Patient/{rid}", params={"_format": "xml"}))
    assert _value(root, "f:extension/f:valueDecimal") == "3.140"
