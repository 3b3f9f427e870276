"""The CapabilityStatement (GET /metadata), and a walk over it: every declared interaction works; an interaction that
is not declared is refused.

Spec: http://hl7.org/fhir/R4/http.html#capabilities, http://hl7.org/fhir/R4/capabilitystatement.html.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from lxml import etree

from tests.api._util import (
    FHIR_XML,
    JSON_HEADERS,
    JSON_PATCH,
    assert_error,
    by_identifier,
    create,
    ident,
    newest_change,
    put,
    read,
    search_ids,
    token,
    uid,
)

TYPE_CODES = ("read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create",
              "search-type")
SYSTEM_CODES = ("transaction", "batch", "search-system", "history-system")
WALKED_TYPES = ("Patient", "Observation", "Substance")


@pytest.fixture()
def statement(client: httpx.Client) -> dict[str, Any]:
    resp = client.get("/metadata")
    assert resp.status_code == 200
    body: dict[str, Any] = resp.json()
    return body


def _resource_entry(statement: dict[str, Any], rtype: str) -> dict[str, Any]:
    entries = [r for r in statement["rest"][0]["resource"] if r["type"] == rtype]
    assert len(entries) == 1, f"{rtype} is declared {len(entries)} times"
    entry: dict[str, Any] = entries[0]
    return entry


def _sample(rtype: str) -> dict[str, Any]:
    samples: dict[str, dict[str, Any]] = {
        "Patient": {"resourceType": "Patient", "identifier": [ident()], "gender": "female"},
        "Observation": {"resourceType": "Observation", "identifier": [ident()], "status": "final",
                        "code": {"text": "glucose"}},
        "Substance": {"resourceType": "Substance", "identifier": [ident()], "code": {"text": "Lactose"}},
    }
    return samples[rtype]


def test_metadata_is_a_capability_statement(client: httpx.Client, statement: dict[str, Any]) -> None:
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["kind"] == "instance"
    assert statement["status"] == "active"
    assert {"application/fhir+json", "application/fhir+xml"} <= set(statement["format"])
    assert "application/json-patch+json" in statement["patchFormat"]
    rest = statement["rest"]
    assert len(rest) == 1 and rest[0]["mode"] == "server"
    declared = {r["type"] for r in rest[0]["resource"]}
    assert {"Patient", "Observation", "Appointment", "MedicationRequest", "ChargeItem", "RiskAssessment",
            "ImagingStudy", "Substance"} <= declared
    assert len(declared) >= 140  # every R4 resource type
    for r in rest[0]["resource"]:
        assert {i["code"] for i in r["interaction"]} <= set(TYPE_CODES), r["type"]
    assert {i["code"] for i in rest[0]["interaction"]} <= set(SYSTEM_CODES)


def test_metadata_in_xml(client: httpx.Client) -> None:
    resp = client.get("/metadata", headers={"Accept": FHIR_XML})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith(FHIR_XML)
    root = etree.fromstring(resp.content)
    assert etree.QName(root).localname == "CapabilityStatement"
    ns = {"f": "http://hl7.org/fhir"}
    assert root.xpath("f:fhirVersion/@value", namespaces=ns) == ["4.0.1"]


def test_metadata_is_a_valid_resource(client: httpx.Client, statement: dict[str, Any]) -> None:
    """The server's own validator accepts its CapabilityStatement (stored and read back unchanged)."""
    rid = uid()
    resp = put(client, {**statement, "id": rid})
    assert resp.status_code == 201, resp.text[:2000]
    stored = read(client, "CapabilityStatement", rid)
    assert stored["rest"] == statement["rest"]


# --- the walk -----------------------------------------------------------------------------------------------------


Performer = Callable[[httpx.Client, str], httpx.Response]


def _existing(client: httpx.Client, rtype: str) -> dict[str, Any]:
    return create(client, _sample(rtype))


def _do_read(client: httpx.Client, rtype: str) -> httpx.Response:
    return client.get(f"/{rtype}/{_existing(client, rtype)['id']}")


def _do_vread(client: httpx.Client, rtype: str) -> httpx.Response:
    return client.get(f"/{rtype}/{_existing(client, rtype)['id']}/_history/1")


def _do_update(client: httpx.Client, rtype: str) -> httpx.Response:
    body = _existing(client, rtype)
    resp = put(client, {**body, "identifier": [ident()]})
    assert resp.json()["meta"]["versionId"] == "2"
    return resp


def _do_patch(client: httpx.Client, rtype: str) -> httpx.Response:
    body = _existing(client, rtype)
    new = ident()
    resp = client.patch(f"/{rtype}/{body['id']}", json=[{"op": "add", "path": "/identifier/-", "value": new}],
                        headers={"Content-Type": JSON_PATCH})
    assert by_identifier(client, rtype, new) == [body["id"]]
    return resp


def _do_delete(client: httpx.Client, rtype: str) -> httpx.Response:
    rid = _existing(client, rtype)["id"]
    resp = client.delete(f"/{rtype}/{rid}")
    assert client.get(f"/{rtype}/{rid}").status_code == 410
    return resp


def _do_history_instance(client: httpx.Client, rtype: str) -> httpx.Response:
    rid = _existing(client, rtype)["id"]
    resp = client.get(f"/{rtype}/{rid}/_history")
    assert [e["resource"]["id"] for e in resp.json()["entry"]] == [rid]
    return resp


def _do_history_type(client: httpx.Client, rtype: str) -> httpx.Response:
    rid = _existing(client, rtype)["id"]
    resp = client.get(f"/{rtype}/_history", params={"_count": "1"})
    assert resp.json()["entry"][0]["resource"]["id"] == rid
    return resp


def _do_create(client: httpx.Client, rtype: str) -> httpx.Response:
    sample = _sample(rtype)
    resp = client.post(f"/{rtype}", json=sample, headers=JSON_HEADERS)
    assert by_identifier(client, rtype, sample["identifier"][0]) == [resp.json()["id"]]
    return resp


def _do_search_type(client: httpx.Client, rtype: str) -> httpx.Response:
    body = _existing(client, rtype)
    resp = client.get(f"/{rtype}", params={"identifier": token(body["identifier"][0])})
    assert [e["resource"]["id"] for e in resp.json()["entry"]] == [body["id"]]
    return resp


TYPE_PERFORMERS: dict[str, Performer] = {
    "read": _do_read, "vread": _do_vread, "update": _do_update, "patch": _do_patch, "delete": _do_delete,
    "history-instance": _do_history_instance, "history-type": _do_history_type, "create": _do_create,
    "search-type": _do_search_type,
}


def _bundle(kind: str) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": [
        {"resource": _sample("Patient"), "request": {"method": "POST", "url": "Patient"}}]}


def _do_transaction(client: httpx.Client) -> httpx.Response:
    bundle = _bundle("transaction")
    resp = client.post("", json=bundle, headers=JSON_HEADERS)
    assert len(by_identifier(client, "Patient", bundle["entry"][0]["resource"]["identifier"][0])) == 1
    return resp


def _do_batch(client: httpx.Client) -> httpx.Response:
    bundle = _bundle("batch")
    resp = client.post("", json=bundle, headers=JSON_HEADERS)
    assert resp.json()["entry"][0]["response"]["status"].startswith("201")
    return resp


def _do_history_system(client: httpx.Client) -> httpx.Response:
    rid = _existing(client, "Patient")["id"]
    resp = client.get("/_history", params={"_count": "1"})
    assert resp.json()["entry"][0]["fullUrl"].endswith(f"/Patient/{rid}")
    return resp


def _do_search_system(client: httpx.Client) -> httpx.Response:
    return client.get("", params={"_id": _existing(client, "Patient")["id"]})


SYSTEM_PERFORMERS: dict[str, Callable[[httpx.Client], httpx.Response]] = {
    "transaction": _do_transaction, "batch": _do_batch, "history-system": _do_history_system,
    "search-system": _do_search_system,
}


@pytest.mark.parametrize("rtype", WALKED_TYPES)
def test_every_declared_type_interaction_works(client: httpx.Client, statement: dict[str, Any],
                                               rtype: str) -> None:
    codes = [i["code"] for i in _resource_entry(statement, rtype)["interaction"]]
    assert codes, f"{rtype} declares no interactions"
    for code in codes:
        assert code in TYPE_PERFORMERS, f"{rtype} declares {code!r}, which this walk does not know"
        resp = TYPE_PERFORMERS[code](client, rtype)
        assert 200 <= resp.status_code < 300, f"{rtype} {code}: {resp.status_code} {resp.text}"


def test_every_declared_system_interaction_works(client: httpx.Client, statement: dict[str, Any]) -> None:
    codes = [i["code"] for i in statement["rest"][0].get("interaction", [])]
    assert codes
    for code in codes:
        resp = SYSTEM_PERFORMERS[code](client)
        assert 200 <= resp.status_code < 300, f"{code}: {resp.status_code} {resp.text}"


def test_undeclared_interactions_are_refused(client: httpx.Client, statement: dict[str, Any]) -> None:
    declared_system = {i["code"] for i in statement["rest"][0].get("interaction", [])}
    undeclared_system = [c for c in SYSTEM_CODES if c not in declared_system]
    for code in undeclared_system:
        resp = SYSTEM_PERFORMERS[code](client)
        assert_error(resp, resp.status_code)
        assert 400 <= resp.status_code < 500, f"undeclared {code} answered {resp.status_code}"
    for rtype in WALKED_TYPES:
        declared = {i["code"] for i in _resource_entry(statement, rtype)["interaction"]}
        for code in TYPE_CODES:
            if code not in declared:
                resp = TYPE_PERFORMERS[code](client, rtype)
                assert 400 <= resp.status_code < 500, f"undeclared {rtype} {code} answered {resp.status_code}"
    # operations are declared per resource type (none at system level); an undeclared one is not served
    assert "operation" not in statement["rest"][0]
    checked = 0
    for rtype in (*WALKED_TYPES, "Encounter"):
        declared_ops = {o["name"] for o in _resource_entry(statement, rtype).get("operation", [])}
        rid = create(client, _sample(rtype) if rtype in WALKED_TYPES else
                     {"resourceType": "Encounter", "status": "planned", "class": {"code": "AMB"}})["id"]
        for op in ("everything", "validate", "lastn", "meta", "expand"):
            if op in declared_ops:
                continue
            before = newest_change(client)
            assert_error(client.get(f"/{rtype}/{rid}/${op}"), 404)
            assert_error(client.post(f"/{rtype}/${op}", json=_sample("Patient"), headers=JSON_HEADERS), 404)
            assert newest_change(client) == before
            checked += 1
    assert checked  # at least one undeclared operation was tried


def test_declared_operations_work(client: httpx.Client, statement: dict[str, Any]) -> None:
    """Every declared operation of every type answers; here that is Patient/$everything (GET and POST)."""
    declared = [(r["type"], o["name"]) for r in statement["rest"][0]["resource"] for o in r.get("operation", [])]
    assert ("Patient", "everything") in declared
    for rtype, name in declared:
        assert (rtype, name) == ("Patient", "everything"), f"{rtype} ${name} is declared but not walked"
        assert_definition = [o for o in _resource_entry(statement, rtype)["operation"] if o["name"] == name][0]
        assert assert_definition["definition"].startswith("http://hl7.org/fhir/OperationDefinition/")
        pid = _existing(client, "Patient")["id"]
        obs = create(client, {**_sample("Observation"), "subject": {"reference": f"Patient/{pid}"}})["id"]
        for resp in (client.get(f"/Patient/{pid}/$everything"), client.post(f"/Patient/{pid}/$everything")):
            assert resp.status_code == 200, resp.text
            bundle = resp.json()
            assert bundle["type"] == "searchset"
            found = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"]}
            assert found == {("Patient", pid), ("Observation", obs)}


def test_declared_conditional_support(client: httpx.Client, statement: dict[str, Any]) -> None:
    entry = _resource_entry(statement, "Patient")
    assert entry["versioning"] in ("versioned", "versioned-update")
    assert entry["readHistory"] is True
    identifier = ident()
    if entry.get("updateCreate"):
        rid = uid()
        assert put(client, {"resourceType": "Patient", "id": rid}).status_code == 201
    if entry.get("conditionalCreate"):
        headers = {**JSON_HEADERS, "If-None-Exist": f"identifier={token(identifier)}"}
        first = client.post("/Patient", json={"resourceType": "Patient", "identifier": [identifier]}, headers=headers)
        second = client.post("/Patient", json={"resourceType": "Patient", "identifier": [identifier]},
                             headers=headers)
        assert (first.status_code, second.status_code) == (201, 200)
    if entry.get("conditionalUpdate"):
        resp = client.put("/Patient", params={"identifier": token(identifier)},
                          json={"resourceType": "Patient", "identifier": [identifier], "active": True},
                          headers=JSON_HEADERS)
        assert resp.status_code == 200
    if entry.get("conditionalRead") in ("modified-since", "not-match", "full-support"):
        rid = by_identifier(client, "Patient", identifier)[0]
        cur = client.get(f"/Patient/{rid}")
        if entry["conditionalRead"] in ("not-match", "full-support"):
            assert client.get(f"/Patient/{rid}", headers={"If-None-Match": cur.headers["etag"]}).status_code == 304
        if entry["conditionalRead"] in ("modified-since", "full-support"):
            assert client.get(f"/Patient/{rid}",
                              headers={"If-Modified-Since": cur.headers["last-modified"]}).status_code == 304
    if entry.get("conditionalDelete") in ("single", "multiple"):
        other = ident()
        for _ in range(2 if entry["conditionalDelete"] == "multiple" else 1):
            create(client, {"resourceType": "Patient", "identifier": [other]})
        params = {"identifier": token(other)}
        if entry["conditionalDelete"] == "multiple":
            params["_count"] = "2"
        assert client.delete("/Patient", params=params).status_code in (200, 204)
        assert by_identifier(client, "Patient", other) == []


SEARCH_WALKED_TYPES = ("Patient", "Observation", "Appointment", "MedicationRequest", "ChargeItem", "RiskAssessment",
                       "ImagingStudy", "Encounter", "Condition")
_NO_MISSING = frozenset({"_list", "_text", "_content"})  # these take no modifier at all


def _decorated(resource: dict[str, Any], mark: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The first sample of a type gets the common metadata, and the values of the common parameters."""
    profile = f"http://example.org/fhir/StructureDefinition/walk-{mark}"
    source = f"urn:aegis-test:source:{mark}"
    narrative = f"walker{mark} narrative"
    res = {
        **resource,
        "meta": {"profile": [profile], "source": source,
                 "tag": [{"system": "urn:aegis-test:tag", "code": f"tag-{mark}"}],
                 "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]},
        "text": {"status": "generated",
                 "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{narrative}</p></div>'},
    }
    values = {
        "_profile": profile, "_source": source, "_tag": f"urn:aegis-test:tag|tag-{mark}",
        "_security": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R",
        "_text": f"walker{mark}", "_content": f"Walker{mark} NARRATIVE",
    }
    return res, values


def _mismatch(ptype: str, value: str) -> str:
    """A value of the parameter's type that the sample does not have."""
    other = uid()
    if ptype == "reference":
        kind = value.split("/")[0] + "/" if "/" in value else ""
        return f"{kind}nosuch-{other}"
    return {"token": f"nosuch-{other}", "string": f"zq{other}", "date": "1800-01-01", "number": "-987654",
            "quantity": "-987654", "uri": f"urn:nosuch:{other}", "special": f"nosuch{other}"}[ptype]


def _walk_search(client: httpx.Client, rtype: str, pairs: list[tuple[str, str]]) -> list[str]:
    """Ids of the matches of one search; the answer must be a well-formed searchset with nothing dropped."""
    resp = client.get(f"/{rtype}", params=pairs, headers={"Prefer": "handling=strict"})
    assert resp.status_code == 200, (pairs, resp.text)
    bundle = resp.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset", pairs
    assert [link["relation"] for link in bundle["link"]][0] == "self", pairs
    entries = bundle.get("entry", [])
    assert all(e["search"]["mode"] == "match" for e in entries), (pairs, entries)
    assert all(e["resource"]["resourceType"] == rtype for e in entries), pairs
    return [e["resource"]["id"] for e in entries]


@pytest.mark.parametrize("rtype", SEARCH_WALKED_TYPES)
def test_declared_search_parameters_work(client: httpx.Client, statement: dict[str, Any], rtype: str) -> None:
    """Every search parameter declared for the type finds a resource that has a value for it, does not find it with
    another value, and agrees with ``:missing``; parameters no resource can have still answer a searchset."""
    from tests.api import _walk_samples

    declared = {p["name"]: p["type"] for p in _resource_entry(statement, rtype).get("searchParam", [])}
    assert "_id" in declared and "_lastUpdated" in declared
    mark = uid()[:12]
    samples = _walk_samples.SAMPLES[rtype]()
    first, common = _decorated(samples[0][0], mark)
    samples[0] = (first, {**samples[0][1], **common})
    created = [create(client, res) for res, _ in samples]
    head = created[0]
    listed = create(client, {"resourceType": "List", "status": "current", "mode": "working",
                             "entry": [{"item": {"reference": f"{rtype}/{head['id']}"}}]})
    samples[0][1].update({"_id": head["id"], "_lastUpdated": head["meta"]["lastUpdated"], "_list": listed["id"]})

    covered = {name for _, values in samples for name in values}
    unknown = covered - set(declared)
    assert not unknown, f"the walk has values for parameters {rtype} does not declare: {sorted(unknown)}"
    for name, ptype in sorted(declared.items()):
        if name not in covered:
            assert (rtype, name) in _walk_samples.IMPRACTICAL, f"{rtype}.{name} ({ptype}) is not walked"
            _walk_search(client, rtype, [(name, _mismatch(ptype, "x")), ("_id", head["id"])])
            _walk_search(client, rtype, [(name, _mismatch(ptype, "x"))])
            continue
    for body, (_, values) in zip(created, samples):
        rid = body["id"]
        for name, given in values.items():
            ptype = declared[name]
            match, mismatch = given if isinstance(given, tuple) else (given, _mismatch(ptype, given))
            where = f"{rtype}?{name}"
            assert _walk_search(client, rtype, [(name, match), ("_id", rid)]) == [rid], f"{where}={match}"
            if name == "_id":
                assert _walk_search(client, rtype, [(name, mismatch)]) == [], f"{where}={mismatch}"
                continue
            assert _walk_search(client, rtype, [(name, mismatch), ("_id", rid)]) == [], f"{where}={mismatch}"
            if name not in _NO_MISSING:
                assert _walk_search(client, rtype, [(f"{name}:missing", "false"), ("_id", rid)]) == [rid], where
                assert _walk_search(client, rtype, [(f"{name}:missing", "true"), ("_id", rid)]) == [], where
    # a search by the parameter alone (no _id) finds the sample too, for the parameters with unique values
    for name in ("identifier", "_tag", "_list"):
        if name in samples[0][1]:
            value = samples[0][1][name]
            assert head["id"] in search_ids(client, rtype, **{name: value if isinstance(value, str) else value[0]})


def test_declared_parameters_apply_to_their_type(client: httpx.Client, statement: dict[str, Any]) -> None:
    """A parameter is declared only where its expression can match: not R4's example ``part-agree`` on Patient (its
    expression reads DocumentReference); and InsurancePlan ``name``, whose R4 expression is the unrooted
    ``name | alias``, is declared and finds both."""
    assert "part-agree" not in {p["name"] for p in _resource_entry(statement, "Patient")["searchParam"]}
    assert "name" in {p["name"] for p in _resource_entry(statement, "InsurancePlan")["searchParam"]}
    mark = uid()
    rid = create(client, {"resourceType": "InsurancePlan", "name": f"Gold {mark}", "alias": [f"Aurum {mark}"]})["id"]
    for value in (f"gold {mark}", f"aurum {mark}"):
        resp = client.get("/InsurancePlan", params={"name": value}, headers={"Prefer": "handling=strict"})
        assert resp.status_code == 200, resp.text
        assert [e["resource"]["id"] for e in resp.json().get("entry", [])] == [rid], value


def test_declared_patch_formats_work(client: httpx.Client, statement: dict[str, Any]) -> None:
    body = _existing(client, "Patient")
    rid = body["id"]
    for n, fmt in enumerate(statement["patchFormat"], start=2):
        if fmt == JSON_PATCH:
            resp = client.patch(f"/Patient/{rid}", content=json.dumps(
                [{"op": "replace", "path": "/gender", "value": "male"}]).encode(), headers={"Content-Type": fmt})
        else:
            gender = "other" if n % 2 else "female"
            params = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
                {"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": "Patient.gender"},
                {"name": "value", "valueCode": gender}]}]}
            if fmt.endswith("xml"):
                content = (
                    '<Parameters xmlns="http://hl7.org/fhir"><parameter><name value="operation"/>'
                    '<part><name value="type"/><valueCode value="replace"/></part>'
                    '<part><name value="path"/><valueString value="Patient.gender"/></part>'
                    f'<part><name value="value"/><valueCode value="{gender}"/></part>'
                    "</parameter></Parameters>"
                ).encode()
                resp = client.patch(f"/Patient/{rid}", content=content, headers={"Content-Type": fmt})
            else:
                resp = client.patch(f"/Patient/{rid}", json=params, headers={"Content-Type": fmt})
        assert resp.status_code == 200, (fmt, resp.text)
        assert read(client, "Patient", rid)["meta"]["versionId"] == str(n), fmt


def test_binary_is_declared_and_round_trips(client: httpx.Client, statement: dict[str, Any]) -> None:
    """A rare type from the statement (Binary) takes the same interactions."""
    assert "create" in {i["code"] for i in _resource_entry(statement, "Binary")["interaction"]}
    data = base64.b64encode(b"hello").decode()
    resp = client.post("/Binary", json={"resourceType": "Binary", "contentType": "text/plain", "data": data},
                       headers=JSON_HEADERS)
    assert resp.status_code == 201, resp.text
    assert read(client, "Binary", resp.json()["id"])["data"] == data
