"""Version management: server-owned meta.versionId / meta.lastUpdated, If-Match on writes (412 when stale), and
conditional read with If-None-Match / If-Modified-Since (304).

Spec: http://hl7.org/fhir/R4/http.html#versioning, #concurrency, #cread.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime

import httpx

from tests.api._util import (
    JSON_HEADERS,
    JSON_PATCH,
    assert_error,
    create,
    patient,
    put,
    read,
    uid,
    version_count,
    wait_ms,
)


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_server_sets_meta_on_create(client: httpx.Client) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    sent = patient(meta={"versionId": "99", "lastUpdated": "2001-01-01T00:00:00Z",
                         "tag": [{"system": "urn:t", "code": "keep"}]})
    body = create(client, sent)
    assert body["meta"]["versionId"] == "1"
    last = _instant(body["meta"]["lastUpdated"])
    assert before <= last <= datetime.now(UTC) + timedelta(seconds=5)
    # other meta content is the client's and stays
    assert body["meta"]["tag"] == [{"system": "urn:t", "code": "keep"}]
    stored = read(client, "Patient", body["id"])
    assert stored["meta"]["versionId"] == "1"
    assert stored["meta"]["lastUpdated"] == body["meta"]["lastUpdated"]


def test_server_sets_meta_on_update(client: httpx.Client) -> None:
    body = create(client, patient())
    wait_ms(5)
    resp = put(client, {**body, "meta": {"versionId": "1000", "lastUpdated": "2001-01-01T00:00:00Z"}})
    assert resp.status_code == 200
    updated = resp.json()
    assert updated["meta"]["versionId"] == "2"
    assert _instant(updated["meta"]["lastUpdated"]) > _instant(body["meta"]["lastUpdated"])
    assert read(client, "Patient", body["id"])["meta"]["versionId"] == "2"
    # Last-Modified matches meta.lastUpdated (to the second)
    last_modified = parsedate_to_datetime(resp.headers["last-modified"])
    assert last_modified == _instant(updated["meta"]["lastUpdated"]).replace(microsecond=0)


def test_version_ids_increase_by_one(client: httpx.Client) -> None:
    body = create(client, patient())
    for n in range(2, 6):
        resp = put(client, {**body, "active": n % 2 == 0})
        assert resp.headers["etag"] == f'W/"{n}"'
        assert resp.json()["meta"]["versionId"] == str(n)
    assert version_count(client, "Patient", body["id"]) == 5


# --- If-Match -----------------------------------------------------------------------------------------------------


def test_update_if_match_current_succeeds(client: httpx.Client) -> None:
    body = create(client, patient())
    resp = put(client, {**body, "active": True}, **{"If-Match": 'W/"1"'})
    assert resp.status_code == 200, resp.text
    assert resp.headers["etag"] == 'W/"2"'
    assert read(client, "Patient", body["id"])["active"] is True


def test_update_if_match_stale_is_412(client: httpx.Client) -> None:
    body = create(client, patient())
    put(client, {**body, "active": True})
    resp = put(client, {**body, "active": False}, **{"If-Match": 'W/"1"'})
    assert_error(resp, 412)
    stored = read(client, "Patient", body["id"])
    assert stored["active"] is True and stored["meta"]["versionId"] == "2"
    assert version_count(client, "Patient", body["id"]) == 2


def test_update_if_match_on_missing_resource_is_412(client: httpx.Client) -> None:
    rid = uid()
    resp = put(client, patient(id=rid), **{"If-Match": 'W/"1"'})
    assert_error(resp, 412)
    assert client.get(f"/Patient/{rid}").status_code == 404


def test_update_if_match_malformed_is_400(client: httpx.Client) -> None:
    body = create(client, patient())
    assert_error(put(client, {**body, "active": True}, **{"If-Match": "nonsense"}), 400, mentions="If-Match")
    assert version_count(client, "Patient", body["id"]) == 1


def test_delete_if_match(client: httpx.Client) -> None:
    body = create(client, patient())
    put(client, {**body, "active": True})
    stale = client.delete(f"/Patient/{body['id']}", headers={"If-Match": 'W/"1"'})
    assert_error(stale, 412)
    assert read(client, "Patient", body["id"])["meta"]["versionId"] == "2"
    current = client.delete(f"/Patient/{body['id']}", headers={"If-Match": 'W/"2"'})
    assert current.status_code in (200, 204), current.text
    assert client.get(f"/Patient/{body['id']}").status_code == 410


def test_patch_if_match(client: httpx.Client) -> None:
    body = create(client, patient())
    put(client, {**body, "active": True})
    doc = [{"op": "replace", "path": "/active", "value": False}]
    stale = client.patch(f"/Patient/{body['id']}", json=doc,
                         headers={"Content-Type": JSON_PATCH, "If-Match": 'W/"1"'})
    assert_error(stale, 412)
    assert read(client, "Patient", body["id"])["active"] is True
    current = client.patch(f"/Patient/{body['id']}", json=doc,
                           headers={"Content-Type": JSON_PATCH, "If-Match": 'W/"2"'})
    assert current.status_code == 200, current.text
    assert current.headers["etag"] == 'W/"3"'
    assert read(client, "Patient", body["id"])["active"] is False


# --- conditional read ---------------------------------------------------------------------------------------------


def test_if_none_match_current_is_304(client: httpx.Client) -> None:
    rid = create(client, patient())["id"]
    resp = client.get(f"/Patient/{rid}", headers={"If-None-Match": 'W/"1"'})
    assert resp.status_code == 304
    assert resp.content == b""
    assert resp.headers["etag"] == 'W/"1"'


def test_if_none_match_stale_returns_resource(client: httpx.Client) -> None:
    body = create(client, patient())
    put(client, {**body, "active": True})
    resp = client.get(f"/Patient/{body['id']}", headers={"If-None-Match": 'W/"1"'})
    assert resp.status_code == 200
    assert resp.json()["active"] is True
    assert resp.headers["etag"] == 'W/"2"'


def test_if_modified_since(client: httpx.Client) -> None:
    rid = create(client, patient())["id"]
    first = client.get(f"/Patient/{rid}")
    last_modified = first.headers["last-modified"]
    same = client.get(f"/Patient/{rid}", headers={"If-Modified-Since": last_modified})
    assert same.status_code == 304 and same.content == b""
    later = format_datetime(parsedate_to_datetime(last_modified) + timedelta(hours=1), usegmt=True)
    assert client.get(f"/Patient/{rid}", headers={"If-Modified-Since": later}).status_code == 304
    earlier = format_datetime(parsedate_to_datetime(last_modified) - timedelta(days=1), usegmt=True)
    resp = client.get(f"/Patient/{rid}", headers={"If-Modified-Since": earlier})
    assert resp.status_code == 200 and resp.json()["id"] == rid


def test_if_modified_since_garbage_is_ignored(client: httpx.Client) -> None:
    rid = create(client, patient())["id"]
    resp = client.get(f"/Patient/{rid}", headers={"If-Modified-Since": "not a date"})
    assert resp.status_code == 200 and resp.json()["id"] == rid


def test_conditional_read_of_deleted_is_410(client: httpx.Client) -> None:
    rid = create(client, patient())["id"]
    client.delete(f"/Patient/{rid}")
    assert client.get(f"/Patient/{rid}", headers={"If-None-Match": 'W/"1"'}).status_code == 410


def test_etag_headers_match_meta(client: httpx.Client) -> None:
    body = create(client, patient())
    resp = client.get(f"/Patient/{body['id']}")
    assert resp.headers["etag"] == f'W/"{resp.json()["meta"]["versionId"]}"'
    assert client.post("/Patient", json=patient(), headers=JSON_HEADERS).headers["etag"] == 'W/"1"'
