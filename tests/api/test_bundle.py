"""batch and transaction (POST [base] with a Bundle).

Spec: http://hl7.org/fhir/R4/http.html#transaction (processing order, all-or-nothing, urn:uuid and conditional
references, response shapes) and #brules.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api._util import (
    JSON_HEADERS,
    assert_error,
    by_identifier,
    create,
    ident,
    newest_change,
    observation,
    patient,
    put,
    read,
    token,
    uid,
    version_count,
)
from tests.support.server import ServerProcess, store_args


@pytest.fixture(scope="module", params=["event-loop", "prepare-process"])
def server(request: pytest.FixtureRequest, server: ServerProcess, backend: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Every test twice: on the suite's server, where these small transactions are prepared on the event loop, and
    on one that sends every transaction to a prepare process (``--prepare-min-bytes 0``)."""
    if request.param == "event-loop":
        yield server
        return
    proc = ServerProcess(tmp_path_factory.mktemp(f"aegis-prepared-{backend}"),
                         args=[*store_args(backend), "--prepare-min-bytes", "0"])
    proc.start()
    yield proc
    proc.stop()
    assert "prepared on the event loop" not in proc.log()  # the pool never failed over


def _bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def _post(resource: dict[str, Any], full_url: str | None = None, **request: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"resource": resource,
                             "request": {"method": "POST", "url": resource["resourceType"], **request}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def _put(resource: dict[str, Any], url: str | None = None, **request: str) -> dict[str, Any]:
    return {"resource": resource,
            "request": {"method": "PUT", "url": url or f"{resource['resourceType']}/{resource['id']}", **request}}


def _req(method: str, url: str, **request: str) -> dict[str, Any]:
    return {"request": {"method": method, "url": url, **request}}


def _send(client: httpx.Client, bundle: dict[str, Any]) -> httpx.Response:
    return client.post("", json=bundle, headers=JSON_HEADERS)


def _ok(client: httpx.Client, bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """Send a batch/transaction that must succeed as a whole; return the response entries."""
    resp = _send(client, bundle)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["resourceType"] == "Bundle"
    assert body["type"] == f"{bundle['type']}-response"
    assert len(body["entry"]) == len(bundle["entry"])
    entries: list[dict[str, Any]] = body["entry"]
    return entries


def _status(entry: dict[str, Any]) -> int:
    return int(entry["response"]["status"].split()[0])


def _id_of(entry: dict[str, Any]) -> str:
    return str(entry["response"]["location"].split("/")[1])


# --- transaction ------------------------------------------------------------------------------------------------


def test_transaction_urn_uuid_references_are_rewritten(client: httpx.Client, server: ServerProcess) -> None:
    p_ident, o_ident = ident(), ident()
    p_url = f"urn:uuid:{uuid.uuid4()}"
    obs = observation(p_url, o_ident)
    obs["performer"] = [{"reference": p_url}]
    # the Observation comes first: references are resolved whatever the order
    entries = _ok(client, _bundle("transaction", _post(obs), _post(patient(p_ident), p_url)))

    o_entry, p_entry = entries
    assert _status(p_entry) == 201 and _status(o_entry) == 201
    pid, oid = _id_of(p_entry), _id_of(o_entry)
    assert p_entry["response"]["location"] == f"Patient/{pid}/_history/1"
    assert p_entry["response"]["etag"] == 'W/"1"'
    assert "lastModified" in p_entry["response"]
    assert p_entry["fullUrl"] == f"{server.base}/Patient/{pid}"
    assert p_entry["resource"]["id"] == pid

    stored = read(client, "Observation", oid)
    assert stored["subject"]["reference"] == f"Patient/{pid}"
    assert stored["performer"][0]["reference"] == f"Patient/{pid}"
    assert by_identifier(client, "Patient", p_ident) == [pid]
    assert by_identifier(client, "Observation", o_ident) == [oid]


def test_transaction_conditional_reference(client: httpx.Client) -> None:
    p_ident = ident()
    pid = create(client, patient(p_ident))["id"]
    obs = observation(f"Patient?identifier={token(p_ident)}")
    entries = _ok(client, _bundle("transaction", _post(obs)))
    assert _status(entries[0]) == 201
    assert read(client, "Observation", _id_of(entries[0]))["subject"]["reference"] == f"Patient/{pid}"


def test_transaction_conditional_reference_without_match_fails(client: httpx.Client) -> None:
    o_ident = ident()
    obs = observation(f"Patient?identifier={token(ident())}", o_ident)
    before = newest_change(client)
    resp = _send(client, _bundle("transaction", _post(patient()), _post(obs)))
    assert_error(resp, 412, mentions="Patient?identifier=")
    assert by_identifier(client, "Observation", o_ident) == []
    assert newest_change(client) == before


def test_transaction_is_all_or_nothing(client: httpx.Client) -> None:
    existing = create(client, patient())
    put(client, {**existing, "active": True})  # now at version 2
    p_ident, o_ident = ident(), ident()
    new_id = uid()
    p_url = f"urn:uuid:{uuid.uuid4()}"
    bundle = _bundle(
        "transaction",
        _post(patient(p_ident), p_url),
        _post(observation(p_url, o_ident)),
        _put(patient(id=new_id)),
        _req("DELETE", f"Patient/{create(client, patient())['id']}"),
        # stale If-Match: this entry fails, so every other one must be undone
        _put({**existing, "active": False}, ifMatch='W/"1"'),
    )
    before = newest_change(client)
    resp = _send(client, bundle)
    assert_error(resp, 412, mentions="Bundle.entry[4]")
    assert by_identifier(client, "Patient", p_ident) == []
    assert by_identifier(client, "Observation", o_ident) == []
    assert client.get(f"/Patient/{new_id}").status_code == 404
    assert read(client, "Patient", existing["id"])["active"] is True
    assert version_count(client, "Patient", existing["id"]) == 2
    assert newest_change(client) == before


def test_transaction_failing_create_rolls_back(client: httpx.Client) -> None:
    """The failure is found only while processing (a conditional create matching two resources)."""
    dup = ident()
    create(client, patient(dup))
    create(client, patient(dup))
    p_ident = ident()
    bundle = _bundle("transaction", _post(patient(p_ident)),
                     _post(patient(), ifNoneExist=f"identifier={token(dup)}"))
    before = newest_change(client)
    assert_error(_send(client, bundle), 412)
    assert by_identifier(client, "Patient", p_ident) == []
    assert newest_change(client) == before


def test_transaction_invalid_resource_fails_whole(client: httpx.Client) -> None:
    p_ident = ident()
    bad = patient(birthDate="2000-13-01")
    before = newest_change(client)
    resp = _send(client, _bundle("transaction", _post(patient(p_ident)), _post(bad)))
    assert_error(resp, 400, expression="Bundle.entry[1].resource.birthDate")
    assert by_identifier(client, "Patient", p_ident) == []
    assert newest_change(client) == before


def test_transaction_processing_order(client: httpx.Client) -> None:
    """DELETE, then POST, then PUT, then PATCH, then GET, whatever the order in the Bundle; answers in Bundle order."""
    ident_a = ident()
    old = create(client, patient(ident_a))["id"]
    to_put = create(client, patient())
    to_patch = create(client, patient())
    bundle = _bundle(
        "transaction",
        _req("GET", f"Patient/{to_put['id']}"),
        _req("GET", f"Patient/{to_patch['id']}"),
        {"resource": _binary_patch([{"op": "add", "path": "/gender", "value": "other"}]),
         "request": {"method": "PATCH", "url": f"Patient/{to_patch['id']}"}},
        _put({**to_put, "active": True}),
        # the POST only creates if the DELETE ran before it
        _post(patient(ident_a), ifNoneExist=f"identifier={token(ident_a)}"),
        _req("DELETE", f"Patient?identifier={token(ident_a)}"),
    )
    entries = _ok(client, bundle)
    get_put, get_patch, patch, put_, post, delete = entries
    assert _status(delete) in (200, 204)
    assert _status(post) == 201 and _id_of(post) != old
    assert _status(put_) == 200 and put_["response"]["etag"] == 'W/"2"'
    assert _status(patch) == 200 and patch["response"]["etag"] == 'W/"2"'
    assert _status(get_put) == 200 and get_put["resource"]["active"] is True
    assert _status(get_patch) == 200 and get_patch["resource"]["gender"] == "other"
    assert client.get(f"/Patient/{old}").status_code == 410
    assert by_identifier(client, "Patient", ident_a) == [_id_of(post)]


def test_transaction_conditional_create_and_update(client: httpx.Client) -> None:
    existing_ident, upd_ident, new_ident = ident(), ident(), ident()
    existing = create(client, patient(existing_ident))["id"]
    to_update = create(client, patient(upd_ident))["id"]
    entries = _ok(client, _bundle(
        "transaction",
        _post(patient(existing_ident), ifNoneExist=f"identifier={token(existing_ident)}"),
        _put(patient(upd_ident, active=True), url=f"Patient?identifier={token(upd_ident)}"),
        _put(patient(new_ident), url=f"Patient?identifier={token(new_ident)}"),
    ))
    assert _status(entries[0]) == 200
    assert entries[0]["fullUrl"].endswith(f"/Patient/{existing}")
    assert _status(entries[1]) == 200 and _id_of(entries[1]) == to_update
    assert read(client, "Patient", to_update)["active"] is True
    assert _status(entries[2]) == 201
    assert by_identifier(client, "Patient", new_ident) == [_id_of(entries[2])]
    assert version_count(client, "Patient", existing) == 1


def test_transaction_same_resource_twice_is_400(client: httpx.Client) -> None:
    body = create(client, patient())
    resp = _send(client, _bundle("transaction", _put({**body, "active": True}),
                                 _req("DELETE", f"Patient/{body['id']}")))
    assert_error(resp, 400)
    assert version_count(client, "Patient", body["id"]) == 1


def test_transaction_prefer_minimal(client: httpx.Client) -> None:
    p_ident = ident()
    resp = client.post("", json=_bundle("transaction", _post(patient(p_ident))),
                       headers={**JSON_HEADERS, "Prefer": "return=minimal"})
    assert resp.status_code == 200
    entry = resp.json()["entry"][0]
    assert "resource" not in entry
    assert entry["response"]["location"].startswith("Patient/")
    assert by_identifier(client, "Patient", p_ident) == [_id_of(entry)]


# --- PUT / DELETE / PATCH entries -------------------------------------------------------------------------------


def _binary_patch(doc: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Binary", "contentType": "application/json-patch+json",
            "data": base64.b64encode(json.dumps(doc).encode()).decode()}


def _fhirpath_patch(path: str, name: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "add"}, {"name": "path", "valueString": path},
        {"name": "name", "valueString": name}, {"name": "value", **value}]}]}


@pytest.mark.parametrize("kind", ["batch", "transaction"])
def test_put_delete_patch_entries(client: httpx.Client, kind: str) -> None:
    a = create(client, patient())
    b = create(client, patient())
    c = create(client, patient())
    d = create(client, patient())
    new_id = uid()
    entries = _ok(client, _bundle(
        kind,
        _put({**a, "active": True}, ifMatch='W/"1"'),
        _req("DELETE", f"Patient/{b['id']}"),
        {"resource": _binary_patch([{"op": "add", "path": "/gender", "value": "female"}]),
         "request": {"method": "PATCH", "url": f"Patient/{c['id']}"}},
        {"resource": _fhirpath_patch("Patient", "birthDate", {"valueDate": "2001-02-03"}),
         "request": {"method": "PATCH", "url": f"Patient/{d['id']}", "ifMatch": 'W/"1"'}},
        _put(patient(id=new_id)),
    ))
    statuses = [_status(e) for e in entries]
    assert statuses[0] == 200 and statuses[1] in (200, 204) and statuses[2:] == [200, 200, 201]
    assert entries[0]["response"]["etag"] == 'W/"2"'
    assert entries[0]["response"]["location"] == f"Patient/{a['id']}/_history/2"
    assert entries[4]["response"]["location"] == f"Patient/{new_id}/_history/1"
    assert read(client, "Patient", a["id"])["active"] is True
    assert client.get(f"/Patient/{b['id']}").status_code == 410
    assert read(client, "Patient", c["id"])["gender"] == "female"
    assert read(client, "Patient", d["id"])["birthDate"] == "2001-02-03"
    assert read(client, "Patient", new_id)["meta"]["versionId"] == "1"


def test_transaction_patch_entry_failing_rolls_back(client: httpx.Client) -> None:
    a = create(client, patient(gender="male"))
    p_ident = ident()
    bundle = _bundle(
        "transaction",
        _post(patient(p_ident)),
        {"resource": _binary_patch([{"op": "test", "path": "/gender", "value": "female"},
                                    {"op": "replace", "path": "/gender", "value": "other"}]),
         "request": {"method": "PATCH", "url": f"Patient/{a['id']}"}},
    )
    resp = _send(client, bundle)
    assert 400 <= resp.status_code < 500
    assert resp.json()["resourceType"] == "OperationOutcome"
    assert by_identifier(client, "Patient", p_ident) == []
    assert read(client, "Patient", a["id"])["gender"] == "male"


# --- batch ------------------------------------------------------------------------------------------------------


def test_batch_entries_fail_independently(client: httpx.Client) -> None:
    ok1, ok2 = ident(), ident()
    existing = create(client, patient())
    put(client, {**existing, "active": True})
    mismatch = uid()
    entries = _ok(client, _bundle(
        "batch",
        _post(patient(ok1)),
        _put(patient(id=uid()), url=f"Patient/{mismatch}"),  # id differs from the URL → 400
        _req("GET", f"Patient/{uid()}"),  # unknown → 404
        _put({**existing, "active": False}, ifMatch='W/"1"'),  # stale → 412
        _post(patient(ok2)),
    ))
    assert [_status(e) for e in entries] == [201, 400, 404, 412, 201]
    for failed in entries[1:4]:
        outcome = failed["response"]["outcome"]
        assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"]
        assert "resource" not in failed
    assert by_identifier(client, "Patient", ok1) == [_id_of(entries[0])]
    assert by_identifier(client, "Patient", ok2) == [_id_of(entries[4])]
    assert client.get(f"/Patient/{mismatch}").status_code == 404
    assert read(client, "Patient", existing["id"])["active"] is True


def test_batch_invalid_entry_resource_fails_alone(client: httpx.Client) -> None:
    ok = ident()
    bad_ident = ident()
    entries = _ok(client, _bundle(
        "batch",
        _post(patient(bad_ident, birthDate="2000-13-01")),
        _post(patient(ok)),
        _post(patient(bad_ident, unknownElement=True)),
    ))
    assert [_status(e) for e in entries] == [400, 201, 400]
    expressions = [e for i in entries[0]["response"]["outcome"]["issue"] for e in i.get("expression", [])]
    assert "Bundle.entry[0].resource.birthDate" in expressions
    expressions = [e for i in entries[2]["response"]["outcome"]["issue"] for e in i.get("expression", [])]
    assert "Bundle.entry[2].resource.unknownElement" in expressions
    assert by_identifier(client, "Patient", ok) == [_id_of(entries[1])]
    assert by_identifier(client, "Patient", bad_ident) == []


def test_batch_get_entries(client: httpx.Client) -> None:
    p_ident = ident()
    body = create(client, patient(p_ident))
    put(client, {**body, "active": True})
    entries = _ok(client, _bundle(
        "batch",
        _req("GET", f"Patient/{body['id']}"),
        _req("GET", f"Patient/{body['id']}/_history/1"),
        _req("GET", f"Patient?identifier={token(p_ident)}"),
        _req("GET", f"Patient/{body['id']}/_history"),
        _req("GET", f"Patient/{body['id']}", ifNoneMatch='W/"2"'),
    ))
    assert [_status(e) for e in entries] == [200, 200, 200, 200, 304]
    assert entries[0]["resource"]["active"] is True
    assert entries[0]["response"]["etag"] == 'W/"2"'
    assert entries[1]["resource"] == body
    search = entries[2]["resource"]
    assert search["type"] == "searchset" and [e["resource"]["id"] for e in search["entry"]] == [body["id"]]
    history = entries[3]["resource"]
    assert history["type"] == "history" and len(history["entry"]) == 2


def test_batch_processing_order(client: httpx.Client) -> None:
    rid = uid()
    entries = _ok(client, _bundle("batch", _req("GET", f"Patient/{rid}"), _put(patient(id=rid, active=True))))
    assert _status(entries[1]) == 201
    assert _status(entries[0]) == 200 and entries[0]["resource"]["active"] is True


def test_batch_with_absolute_urls(client: httpx.Client, server: ServerProcess) -> None:
    body = create(client, patient())
    entries = _ok(client, _bundle("batch", _req("GET", f"{server.base}/Patient/{body['id']}")))
    assert _status(entries[0]) == 200 and entries[0]["resource"]["id"] == body["id"]


# --- malformed bundles ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bundle", "expression"),
    [
        (_bundle("collection", _post({"resourceType": "Patient"})), "Bundle.type"),
        (_bundle("batch", {"resource": {"resourceType": "Patient"}}), "Bundle.entry[0].request"),
        (_bundle("transaction", _req("POST", "Patient")), "Bundle.entry[0].resource"),
        (_bundle("batch", _req("GET", "http://elsewhere.example.org/fhir/Patient/1")), "Bundle.entry[0].request.url"),
        ({"resourceType": "Patient"}, "resourceType"),
        # a batch entry fails alone only when it holds a resource object; anything else is a broken Bundle
        (_bundle("batch", {"resource": [], "request": {"method": "PATCH", "url": "Patient"}}),
         "Bundle.entry[0].resource"),
    ],
)
def test_malformed_bundles(client: httpx.Client, bundle: dict[str, Any], expression: str) -> None:
    before = newest_change(client)
    assert_error(_send(client, bundle), 400, expression=expression)
    assert newest_change(client) == before


def test_batch_binary_patch_with_bad_base64_fails_alone(client: httpx.Client) -> None:
    body = create(client, patient())
    ok = ident()
    bad = {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": "!!!not base64"}
    entries = _ok(client, _bundle(
        "batch",
        {"resource": bad, "request": {"method": "PATCH", "url": f"Patient/{body['id']}"}},
        _post(patient(ok)),
    ))
    assert [_status(e) for e in entries] == [400, 201]
    assert "Bundle.entry[0].resource.data" in json.dumps(entries[0]["response"]["outcome"])
    assert version_count(client, "Patient", body["id"]) == 1
    assert by_identifier(client, "Patient", ok) == [_id_of(entries[1])]


def test_transaction_binary_patch_with_bad_base64(client: httpx.Client) -> None:
    body = create(client, patient())
    p_ident = ident()
    bad = {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": "%%%"}
    resp = _send(client, _bundle("transaction", _post(patient(p_ident)),
                                 {"resource": bad, "request": {"method": "PATCH", "url": f"Patient/{body['id']}"}}))
    assert_error(resp, 400, expression="Bundle.entry[1].resource.data")
    assert by_identifier(client, "Patient", p_ident) == []
    assert version_count(client, "Patient", body["id"]) == 1


def test_decimals_and_references_survive_either_path(client: httpx.Client, server: ServerProcess) -> None:
    """Exact decimals (a prepare process hands the resources back pickled) and rewritten references, then found by
    the index the write made."""
    code = uid()
    obs = observation("urn:uuid:0b5e3a52-6d43-4c89-9d6f-1f4e0b0b0b01",
                      code={"coding": [{"system": "urn:test", "code": code}]},
                      valueQuantity={"value": 1e-07, "unit": "g", "system": "http://unitsofmeasure.org", "code": "g"})
    raw = json.dumps(_bundle("transaction", _post(patient(), "urn:uuid:0b5e3a52-6d43-4c89-9d6f-1f4e0b0b0b01"),
                             _post(obs))).replace("1e-07", "0.0000001")
    assert "0.0000001" in raw
    resp = client.post("", content=raw, headers=JSON_HEADERS)
    assert resp.status_code == 200, resp.text
    p_loc, o_loc = (e["response"]["location"].split("/_history")[0] for e in resp.json()["entry"])
    stored = client.get(f"/{o_loc}")
    assert b'"value":0.0000001' in stored.content
    assert stored.json()["subject"]["reference"] == p_loc
    found = client.get("/Observation", params={"subject": p_loc, "code": f"urn:test|{code}",
                                               "_lastUpdated": "gt2000-01-01"})
    assert [e["resource"]["id"] for e in found.json().get("entry", [])] == [o_loc.split("/")[1]]
    if "--prepare-min-bytes" in server.args:  # and the prepare process did the work: the server has a child
        assert server.proc is not None
        children = [c for task in Path(f"/proc/{server.proc.pid}/task").iterdir()
                    for c in (task / "children").read_text().split()]
        assert children, "no prepare process was started"
