"""create, read, vread, update (incl. update-as-create) and delete over HTTP, across several resource types.

Spec: http://hl7.org/fhir/R4/http.html#create, #read, #vread, #update, #delete.
"""

from __future__ import annotations

import copy
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest

from tests.api._util import (
    JSON_HEADERS,
    assert_error,
    by_identifier,
    create,
    history_entries,
    ident,
    newest_change,
    patient,
    put,
    read,
    uid,
    version_count,
)
from tests.support.server import ServerProcess


def _ref() -> dict[str, str]:
    return {"reference": f"Patient/{uid()}"}


def _resources() -> list[dict[str, Any]]:
    """One valid resource of each type under test, each with a fresh identifier."""
    return [
        patient(name=[{"family": "Chalmers", "given": ["Peter", "James"]}], gender="male", birthDate="1974-12-25"),
        {"resourceType": "Observation", "identifier": [ident()], "status": "final",
         "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}, "subject": _ref(),
         "effectiveDateTime": "2024-05-01T10:00:00+02:00",
         "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}},
        {"resourceType": "Appointment", "identifier": [ident()], "status": "booked",
         "start": "2024-05-01T10:00:00Z", "end": "2024-05-01T10:30:00Z",
         "participant": [{"actor": _ref(), "status": "accepted"}]},
        {"resourceType": "MedicationRequest", "identifier": [ident()], "status": "active", "intent": "order",
         "medicationCodeableConcept": {"text": "Aspirin 100 mg"}, "subject": _ref(),
         "dosageInstruction": [{"text": "once daily"}]},
        {"resourceType": "ChargeItem", "identifier": [ident()], "status": "billable", "code": {"text": "consult"},
         "subject": _ref(), "quantity": {"value": 1}},
        {"resourceType": "RiskAssessment", "identifier": [ident()], "status": "final", "subject": _ref(),
         "prediction": [{"outcome": {"text": "stroke"}, "probabilityDecimal": 0.125}]},
        {"resourceType": "ImagingStudy", "identifier": [ident()], "status": "available", "subject": _ref(),
         "numberOfSeries": 1,
         "series": [{"uid": "2.25.1", "numberOfInstances": 1,
                     "modality": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}}]},
        {"resourceType": "Substance", "identifier": [ident()], "status": "active", "code": {"text": "Lactose"},
         "instance": [{"quantity": {"value": 12, "unit": "g"}}]},
    ]


RESOURCES = {r["resourceType"]: r for r in _resources()}


def _fresh(rtype: str) -> dict[str, Any]:
    return next(r for r in _resources() if r["resourceType"] == rtype)


def _content(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource without the server-managed id and meta."""
    return {k: v for k, v in resource.items() if k not in ("id", "meta")}


# --- create -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rtype", list(RESOURCES))
def test_create_read_update_delete_cycle(client: httpx.Client, server: ServerProcess, rtype: str) -> None:
    sent = _fresh(rtype)
    resp = client.post(f"/{rtype}", json=sent, headers=JSON_HEADERS)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    rid = body["id"]
    assert resp.headers["location"] == f"{server.base}/{rtype}/{rid}/_history/1"
    assert resp.headers["etag"] == 'W/"1"'
    assert parsedate_to_datetime(resp.headers["last-modified"]).year >= 2024
    assert _content(body) == _content(sent)
    assert body["meta"]["versionId"] == "1"

    # read
    got = client.get(f"/{rtype}/{rid}")
    assert got.status_code == 200
    assert got.headers["etag"] == 'W/"1"'
    assert got.headers["content-type"].startswith("application/fhir+json")
    assert got.json() == body

    # update
    changed = copy.deepcopy(body)
    changed["identifier"].append(ident())
    upd = put(client, changed)
    assert upd.status_code == 200, upd.text
    assert upd.headers["etag"] == 'W/"2"'
    assert upd.headers["location"] == f"{server.base}/{rtype}/{rid}/_history/2"
    assert upd.json()["meta"]["versionId"] == "2"
    assert _content(read(client, rtype, rid)) == _content(changed)

    # vread of both versions
    v1 = client.get(f"/{rtype}/{rid}/_history/1")
    assert v1.status_code == 200 and v1.json() == body
    assert v1.headers["etag"] == 'W/"1"'
    assert client.get(f"/{rtype}/{rid}/_history/2").json()["identifier"] == changed["identifier"]

    # delete
    d = client.delete(f"/{rtype}/{rid}")
    assert d.status_code in (200, 204), d.text
    assert_error(client.get(f"/{rtype}/{rid}"), 410, code="deleted")
    assert client.get(f"/{rtype}/{rid}/_history/2").status_code == 200
    assert version_count(client, rtype, rid) == 3


def test_create_ignores_client_id(client: httpx.Client, server: ServerProcess) -> None:
    client_id = f"client-{uid()}"
    resp = client.post("/Patient", json=patient(id=client_id), headers=JSON_HEADERS)
    assert resp.status_code == 201, resp.text
    rid = resp.json()["id"]
    assert rid != client_id
    assert resp.headers["location"] == f"{server.base}/Patient/{rid}/_history/1"
    assert read(client, "Patient", rid)["id"] == rid
    assert client.get(f"/Patient/{client_id}").status_code == 404


def test_created_ids_are_unique(client: httpx.Client) -> None:
    ids = {create(client, patient())["id"] for _ in range(10)}
    assert len(ids) == 10


def test_create_prefer_minimal(client: httpx.Client, server: ServerProcess) -> None:
    identifier = ident()
    resp = client.post("/Patient", json=patient(identifier),
                       headers={**JSON_HEADERS, "Prefer": "return=minimal"})
    assert resp.status_code == 201
    assert resp.content == b""
    location = resp.headers["location"]
    assert resp.headers["etag"] == 'W/"1"'
    assert "last-modified" in resp.headers
    ids = by_identifier(client, "Patient", identifier)
    assert len(ids) == 1
    assert location == f"{server.base}/Patient/{ids[0]}/_history/1"


def test_create_prefer_representation(client: httpx.Client) -> None:
    sent = patient(active=True)
    resp = client.post("/Patient", json=sent, headers={**JSON_HEADERS, "Prefer": "return=representation"})
    assert resp.status_code == 201
    body = resp.json()
    assert body["resourceType"] == "Patient" and body["active"] is True
    assert read(client, "Patient", body["id"]) == body


def test_create_prefer_operation_outcome(client: httpx.Client) -> None:
    identifier = ident()
    resp = client.post("/Patient", json=patient(identifier),
                       headers={**JSON_HEADERS, "Prefer": "return=OperationOutcome"})
    assert resp.status_code == 201
    oo = resp.json()
    assert oo["resourceType"] == "OperationOutcome"
    assert all(i["severity"] in ("information", "warning") for i in oo["issue"])
    rid = resp.headers["location"].split("/Patient/")[1].split("/")[0]
    assert by_identifier(client, "Patient", identifier) == [rid]


def test_update_prefer_minimal_and_outcome(client: httpx.Client) -> None:
    body = create(client, patient())
    minimal = put(client, {**body, "active": True}, Prefer="return=minimal")
    assert minimal.status_code == 200 and minimal.content == b""
    assert minimal.headers["etag"] == 'W/"2"'
    outcome = put(client, {**body, "active": False}, Prefer="return=OperationOutcome")
    assert outcome.status_code == 200 and outcome.json()["resourceType"] == "OperationOutcome"
    assert read(client, "Patient", body["id"])["active"] is False


def test_create_keeps_decimal_precision(client: httpx.Client) -> None:
    raw = (b'{"resourceType":"Substance","code":{"text":"x"},"instance":[{"quantity":{"value":12.50,"unit":"g"}}],'
           b'"ingredient":[{"quantity":{"numerator":{"value":1.000},"denominator":{"value":3e2}},'
           b'"substanceCodeableConcept":{"text":"y"}}]}')
    resp = client.post("/Substance", content=raw, headers=JSON_HEADERS)
    assert resp.status_code == 201, resp.text
    stored = client.get(f"/Substance/{resp.json()['id']}").text
    assert '"value":12.50' in stored
    assert '"value":1.000' in stored


# --- read / vread -----------------------------------------------------------------------------------------------


def test_read_unknown_is_404(client: httpx.Client) -> None:
    assert_error(client.get(f"/Patient/{uid()}"), 404, code="not-found")


def test_read_invalid_id_is_404(client: httpx.Client) -> None:
    assert_error(client.get("/Patient/" + "x" * 65), 404)


def test_vread_unknown_version_is_404(client: httpx.Client) -> None:
    rid = create(client, patient())["id"]
    assert_error(client.get(f"/Patient/{rid}/_history/2"), 404)
    assert_error(client.get(f"/Patient/{rid}/_history/abc"), 404)
    assert_error(client.get(f"/Patient/{uid()}/_history/1"), 404)


def test_vread_has_content_location(client: httpx.Client, server: ServerProcess) -> None:
    rid = create(client, patient())["id"]
    resp = client.get(f"/Patient/{rid}/_history/1")
    assert resp.status_code == 200
    assert resp.headers["content-location"] == f"{server.base}/Patient/{rid}/_history/1"
    assert resp.headers["etag"] == 'W/"1"'


def test_head_read(client: httpx.Client) -> None:
    rid = create(client, patient())["id"]
    resp = client.head(f"/Patient/{rid}")
    assert resp.status_code == 200
    assert resp.content == b""
    assert resp.headers["etag"] == 'W/"1"'


# --- update -----------------------------------------------------------------------------------------------------


def test_update_as_create_with_client_id(client: httpx.Client, server: ServerProcess) -> None:
    rid = f"aegis-{uid()}"
    resp = put(client, patient(id=rid))
    assert resp.status_code == 201, resp.text
    assert resp.headers["etag"] == 'W/"1"'
    assert resp.headers["location"] == f"{server.base}/Patient/{rid}/_history/1"
    assert resp.json()["id"] == rid
    again = put(client, patient(id=rid, active=True))
    assert again.status_code == 200
    assert again.headers["etag"] == 'W/"2"'
    assert read(client, "Patient", rid)["active"] is True


@pytest.mark.parametrize("rtype", ["Observation", "Substance"])
def test_update_as_create_other_types(client: httpx.Client, rtype: str) -> None:
    rid = uid()
    resp = put(client, {**_fresh(rtype), "id": rid})
    assert resp.status_code == 201, resp.text
    assert read(client, rtype, rid)["meta"]["versionId"] == "1"


def test_update_without_id_is_400(client: httpx.Client) -> None:
    rid = create(client, patient())["id"]
    before = newest_change(client)
    resp = client.put(f"/Patient/{rid}", json=patient(), headers=JSON_HEADERS)
    assert_error(resp, 400, expression="Patient.id")
    assert newest_change(client) == before
    assert version_count(client, "Patient", rid) == 1


def test_update_id_mismatch_is_400(client: httpx.Client) -> None:
    rid = create(client, patient())["id"]
    other = uid()
    resp = client.put(f"/Patient/{rid}", json=patient(id=other), headers=JSON_HEADERS)
    assert_error(resp, 400, expression="Patient.id", mentions=other)
    assert version_count(client, "Patient", rid) == 1
    assert client.get(f"/Patient/{other}").status_code == 404


def test_update_invalid_url_id_is_400(client: httpx.Client) -> None:
    bad = "bad_id!"
    resp = client.put(f"/Patient/{bad}", json=patient(id=bad), headers=JSON_HEADERS)
    assert_error(resp, 400)


def test_update_after_delete_recreates(client: httpx.Client) -> None:
    rid = create(client, patient())["id"]
    assert client.delete(f"/Patient/{rid}").status_code in (200, 204)
    resp = put(client, patient(id=rid, active=True))
    assert resp.status_code == 201, resp.text
    assert resp.headers["etag"] == 'W/"3"'
    assert read(client, "Patient", rid)["active"] is True


# --- delete -----------------------------------------------------------------------------------------------------


def test_delete_creates_deleted_version(client: httpx.Client) -> None:
    body = create(client, patient())
    rid = body["id"]
    put(client, {**body, "active": True})
    resp = client.delete(f"/Patient/{rid}")
    assert resp.status_code in (200, 204)
    if resp.status_code == 200:
        assert resp.json()["resourceType"] == "OperationOutcome"
    assert resp.headers["etag"] == 'W/"3"'

    gone = client.get(f"/Patient/{rid}")
    assert_error(gone, 410)
    assert gone.headers["etag"] == 'W/"3"'
    # older versions stay readable
    assert client.get(f"/Patient/{rid}/_history/1").json() == body
    assert client.get(f"/Patient/{rid}/_history/2").json()["active"] is True
    # the deleted version itself is gone too
    assert client.get(f"/Patient/{rid}/_history/3").status_code == 410

    entries = history_entries(client, f"/Patient/{rid}/_history")
    assert [e["response"]["etag"] for e in entries] == ['W/"3"', 'W/"2"', 'W/"1"']
    deletion = entries[0]
    assert deletion["request"]["method"] == "DELETE"
    assert "resource" not in deletion
    assert deletion["response"]["status"].startswith(("200", "204"))


def test_delete_again_makes_no_new_version(client: httpx.Client) -> None:
    rid = create(client, patient())["id"]
    assert client.delete(f"/Patient/{rid}").status_code in (200, 204)
    before = newest_change(client)
    again = client.delete(f"/Patient/{rid}")
    assert again.status_code in (200, 204)
    assert version_count(client, "Patient", rid) == 2
    assert newest_change(client) == before


def test_delete_prefer_minimal_is_204(client: httpx.Client) -> None:
    rid = create(client, patient())["id"]
    resp = client.delete(f"/Patient/{rid}", headers={"Prefer": "return=minimal"})
    assert resp.status_code == 204
    assert resp.content == b""
    assert client.get(f"/Patient/{rid}").status_code == 410


def test_delete_unknown_changes_nothing(client: httpx.Client) -> None:
    before = newest_change(client)
    resp = client.delete(f"/Patient/{uid()}")
    assert resp.status_code in (200, 204, 404)
    assert newest_change(client) == before
