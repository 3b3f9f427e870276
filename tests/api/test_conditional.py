"""Conditional create (If-None-Exist), update (PUT [type]?…), delete (DELETE [type]?…) and patch (PATCH [type]?…),
including race safety of conditional create under concurrency.

Spec: http://hl7.org/fhir/R4/http.html#ccreate, #cond-update, #3.1.0.7.1 (conditional delete), #patch.
"""

from __future__ import annotations

import asyncio

import httpx

from tests.api._util import (
    JSON_HEADERS,
    JSON_PATCH,
    assert_error,
    by_identifier,
    create,
    ident,
    newest_change,
    patient,
    read,
    token,
    uid,
    version_count,
)
from tests.support.server import ServerProcess

# --- conditional create -----------------------------------------------------------------------------------------


def test_conditional_create_no_match_creates(client: httpx.Client, server: ServerProcess) -> None:
    identifier = ident()
    resp = client.post("/Patient", json=patient(identifier),
                       headers={**JSON_HEADERS, "If-None-Exist": f"identifier={token(identifier)}"})
    assert resp.status_code == 201, resp.text
    rid = resp.json()["id"]
    assert resp.headers["location"] == f"{server.base}/Patient/{rid}/_history/1"
    assert by_identifier(client, "Patient", identifier) == [rid]


def test_conditional_create_one_match_returns_existing(client: httpx.Client) -> None:
    identifier = ident()
    existing = create(client, patient(identifier, active=True))
    before = newest_change(client)
    resp = client.post("/Patient", json=patient(identifier, active=False),
                       headers={**JSON_HEADERS, "If-None-Exist": f"identifier={token(identifier)}"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["id"] == existing["id"]
    assert resp.json()["active"] is True  # the existing resource, untouched
    assert resp.headers["etag"] == 'W/"1"'
    assert by_identifier(client, "Patient", identifier) == [existing["id"]]
    assert version_count(client, "Patient", existing["id"]) == 1
    assert newest_change(client) == before


def test_conditional_create_two_matches_is_412(client: httpx.Client) -> None:
    identifier = ident()
    a = create(client, patient(identifier))["id"]
    b = create(client, patient(identifier))["id"]
    before = newest_change(client)
    resp = client.post("/Patient", json=patient(identifier),
                       headers={**JSON_HEADERS, "If-None-Exist": f"identifier={token(identifier)}"})
    assert_error(resp, 412)
    assert sorted(by_identifier(client, "Patient", identifier)) == sorted([a, b])
    assert newest_change(client) == before


def test_conditional_create_by_id(client: httpx.Client) -> None:
    existing = create(client, patient())["id"]
    other = create(client, patient())["id"]
    found = client.post("/Patient", json=patient(), headers={**JSON_HEADERS, "If-None-Exist": f"_id={existing}"})
    assert found.status_code == 200 and found.json()["id"] == existing

    unknown = uid()
    identifier = ident()
    new = client.post("/Patient", json=patient(identifier),
                      headers={**JSON_HEADERS, "If-None-Exist": f"_id={unknown}"})
    assert new.status_code == 201
    assert new.json()["id"] != unknown
    assert by_identifier(client, "Patient", identifier) == [new.json()["id"]]

    before = newest_change(client)
    both = client.post("/Patient", json=patient(),
                       headers={**JSON_HEADERS, "If-None-Exist": f"_id={existing},{other}"})
    assert_error(both, 412)
    assert newest_change(client) == before


def test_conditional_create_ignores_deleted_match(client: httpx.Client) -> None:
    identifier = ident()
    old = create(client, patient(identifier))["id"]
    client.delete(f"/Patient/{old}")
    resp = client.post("/Patient", json=patient(identifier),
                       headers={**JSON_HEADERS, "If-None-Exist": f"identifier={token(identifier)}"})
    assert resp.status_code == 201
    assert by_identifier(client, "Patient", identifier) == [resp.json()["id"]]


def test_conditional_create_bad_criteria_is_400(client: httpx.Client) -> None:
    before = newest_change(client)
    resp = client.post("/Patient", json=patient(), headers={**JSON_HEADERS, "If-None-Exist": "nonsense-param=1"})
    assert_error(resp, 400, mentions="nonsense-param")
    assert newest_change(client) == before


def test_concurrent_conditional_creates_make_one_resource(server: ServerProcess) -> None:
    identifier = ident()
    body = patient(identifier)
    headers = {**JSON_HEADERS, "If-None-Exist": f"identifier={token(identifier)}"}

    async def race() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=20)
        async with httpx.AsyncClient(base_url=server.base, timeout=30, limits=limits) as ac:
            return await asyncio.gather(*(ac.post("/Patient", json=body, headers=headers) for _ in range(20)))

    responses = asyncio.run(race())
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 19 + [201], [r.text for r in responses if r.status_code not in (200, 201)]
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    with httpx.Client(base_url=server.base, timeout=30) as c:
        assert by_identifier(c, "Patient", identifier) == list(ids)
        assert version_count(c, "Patient", ids.pop()) == 1


# --- conditional update -----------------------------------------------------------------------------------------


def test_conditional_update_no_match_creates(client: httpx.Client) -> None:
    identifier = ident()
    resp = client.put("/Patient", params={"identifier": token(identifier)}, json=patient(identifier),
                      headers=JSON_HEADERS)
    assert resp.status_code == 201, resp.text
    rid = resp.json()["id"]
    assert resp.headers["etag"] == 'W/"1"'
    assert by_identifier(client, "Patient", identifier) == [rid]


def test_conditional_update_one_match_updates_same_id(client: httpx.Client) -> None:
    identifier = ident()
    rid = create(client, patient(identifier))["id"]
    resp = client.put("/Patient", params={"identifier": token(identifier)}, json=patient(identifier, active=True),
                      headers=JSON_HEADERS)
    assert resp.status_code == 200, resp.text
    assert resp.json()["id"] == rid
    assert resp.headers["etag"] == 'W/"2"'
    stored = read(client, "Patient", rid)
    assert stored["active"] is True and stored["meta"]["versionId"] == "2"
    assert by_identifier(client, "Patient", identifier) == [rid]


def test_conditional_update_several_matches_is_412(client: httpx.Client) -> None:
    identifier = ident()
    a = create(client, patient(identifier))["id"]
    b = create(client, patient(identifier))["id"]
    before = newest_change(client)
    resp = client.put("/Patient", params={"identifier": token(identifier)}, json=patient(identifier, active=True),
                      headers=JSON_HEADERS)
    assert_error(resp, 412)
    assert newest_change(client) == before
    assert "active" not in read(client, "Patient", a) and "active" not in read(client, "Patient", b)


def test_conditional_update_body_id_conflict_is_400(client: httpx.Client) -> None:
    identifier = ident()
    rid = create(client, patient(identifier))["id"]
    resp = client.put("/Patient", params={"identifier": token(identifier)}, json=patient(identifier, id=uid()),
                      headers=JSON_HEADERS)
    assert_error(resp, 400, expression="Patient.id")
    assert version_count(client, "Patient", rid) == 1


def test_conditional_update_with_if_match(client: httpx.Client) -> None:
    identifier = ident()
    rid = create(client, patient(identifier))["id"]
    stale = client.put("/Patient", params={"identifier": token(identifier)}, json=patient(identifier, active=True),
                       headers={**JSON_HEADERS, "If-Match": 'W/"5"'})
    assert_error(stale, 412)
    ok = client.put("/Patient", params={"identifier": token(identifier)}, json=patient(identifier, active=True),
                    headers={**JSON_HEADERS, "If-Match": 'W/"1"'})
    assert ok.status_code == 200 and ok.json()["id"] == rid


# --- conditional delete -----------------------------------------------------------------------------------------


def test_conditional_delete_single(client: httpx.Client) -> None:
    identifier = ident()
    rid = create(client, patient(identifier))["id"]
    resp = client.delete("/Patient", params={"identifier": token(identifier)})
    assert resp.status_code in (200, 204), resp.text
    assert client.get(f"/Patient/{rid}").status_code == 410
    assert by_identifier(client, "Patient", identifier) == []
    assert version_count(client, "Patient", rid) == 2


def test_conditional_delete_several_is_412(client: httpx.Client) -> None:
    identifier = ident()
    ids = sorted(create(client, patient(identifier))["id"] for _ in range(2))
    before = newest_change(client)
    assert_error(client.delete("/Patient", params={"identifier": token(identifier)}), 412)
    assert sorted(by_identifier(client, "Patient", identifier)) == ids
    assert newest_change(client) == before


def test_conditional_delete_several_with_count(client: httpx.Client) -> None:
    identifier = ident()
    ids = [create(client, patient(identifier))["id"] for _ in range(3)]
    too_few = client.delete("/Patient", params={"identifier": token(identifier), "_count": "2"})
    assert_error(too_few, 412)
    assert len(by_identifier(client, "Patient", identifier)) == 3

    resp = client.delete("/Patient", params={"identifier": token(identifier), "_count": "3"})
    assert resp.status_code in (200, 204), resp.text
    assert by_identifier(client, "Patient", identifier) == []
    for rid in ids:
        assert client.get(f"/Patient/{rid}").status_code == 410


def test_conditional_delete_no_match(client: httpx.Client) -> None:
    before = newest_change(client)
    resp = client.delete("/Patient", params={"identifier": token(ident())})
    assert resp.status_code in (200, 204)
    assert newest_change(client) == before


def test_conditional_delete_without_criteria_is_400(client: httpx.Client) -> None:
    before = newest_change(client)
    assert_error(client.delete("/Patient"), 400)
    assert newest_change(client) == before


# --- conditional patch ------------------------------------------------------------------------------------------


def test_conditional_patch_single_match(client: httpx.Client) -> None:
    identifier = ident()
    rid = create(client, patient(identifier))["id"]
    resp = client.patch("/Patient", params={"identifier": token(identifier)},
                        json=[{"op": "add", "path": "/active", "value": True}],
                        headers={"Content-Type": JSON_PATCH})
    assert resp.status_code == 200, resp.text
    assert resp.json()["id"] == rid
    stored = read(client, "Patient", rid)
    assert stored["active"] is True and stored["meta"]["versionId"] == "2"


def test_conditional_patch_fhirpath(client: httpx.Client) -> None:
    identifier = ident()
    rid = create(client, patient(identifier))["id"]
    params = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "add"}, {"name": "path", "valueString": "Patient"},
        {"name": "name", "valueString": "gender"}, {"name": "value", "valueCode": "female"}]}]}
    resp = client.patch("/Patient", params={"identifier": token(identifier)}, json=params, headers=JSON_HEADERS)
    assert resp.status_code == 200, resp.text
    assert read(client, "Patient", rid)["gender"] == "female"


def test_conditional_patch_several_matches_is_412(client: httpx.Client) -> None:
    identifier = ident()
    ids = [create(client, patient(identifier))["id"] for _ in range(2)]
    before = newest_change(client)
    resp = client.patch("/Patient", params={"identifier": token(identifier)},
                        json=[{"op": "add", "path": "/active", "value": True}],
                        headers={"Content-Type": JSON_PATCH})
    assert_error(resp, 412)
    assert newest_change(client) == before
    assert all("active" not in read(client, "Patient", rid) for rid in ids)


def test_conditional_patch_no_match_is_404(client: httpx.Client) -> None:
    before = newest_change(client)
    resp = client.patch("/Patient", params={"identifier": token(ident())},
                        json=[{"op": "add", "path": "/active", "value": True}],
                        headers={"Content-Type": JSON_PATCH})
    assert_error(resp, 404)
    assert newest_change(client) == before
