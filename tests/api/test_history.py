"""history at instance, type and system level: _count, _since, _at, and paging by ``next`` links.

Spec: http://hl7.org/fhir/R4/http.html#history.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api._util import (
    assert_error,
    create,
    history_entries,
    patient,
    put,
    uid,
    wait_ms,
)
from tests.support.server import ServerProcess


def _versions(entries: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(fullUrl, etag) of each entry, in order."""
    return [(e["fullUrl"], e["response"]["etag"]) for e in entries]


def _with_versions(client: httpx.Client, n: int) -> tuple[str, list[dict[str, Any]]]:
    """A Patient with n versions, each with its own lastUpdated; returns its id and the versions, oldest first."""
    body = create(client, patient())
    versions = [body]
    for i in range(2, n + 1):
        wait_ms(3)
        resp = put(client, {**body, "active": i % 2 == 0})
        assert resp.status_code == 200, resp.text
        versions.append(resp.json())
    return body["id"], versions


# --- instance -----------------------------------------------------------------------------------------------------


def test_instance_history_newest_first(client: httpx.Client, server: ServerProcess) -> None:
    rid, versions = _with_versions(client, 3)
    resp = client.get(f"/Patient/{rid}/_history")
    assert resp.status_code == 200
    bundle = resp.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "history"
    entries = bundle["entry"]
    assert [e["resource"]["meta"]["versionId"] for e in entries] == ["3", "2", "1"]
    assert [e["resource"] for e in entries] == list(reversed(versions))
    assert all(e["fullUrl"] == f"{server.base}/Patient/{rid}" for e in entries)
    assert entries[-1]["request"] == {"method": "POST", "url": "Patient"}
    assert entries[0]["request"] == {"method": "PUT", "url": f"Patient/{rid}"}
    assert entries[-1]["response"]["status"].startswith("201")
    assert entries[0]["response"]["status"].startswith("200")
    assert entries[0]["response"]["lastModified"] == versions[-1]["meta"]["lastUpdated"]


def test_instance_history_count_and_paging(client: httpx.Client) -> None:
    rid, _ = _with_versions(client, 7)
    first = client.get(f"/Patient/{rid}/_history", params={"_count": "3"}).json()
    assert len(first["entry"]) == 3
    assert any(link["relation"] == "next" for link in first["link"])
    entries = history_entries(client, f"/Patient/{rid}/_history", _count="3")
    assert [e["response"]["etag"] for e in entries] == [f'W/"{n}"' for n in range(7, 0, -1)]


def test_instance_history_since(client: httpx.Client) -> None:
    rid, versions = _with_versions(client, 4)
    since = versions[2]["meta"]["lastUpdated"]  # inclusive: versions 3 and 4
    entries = history_entries(client, f"/Patient/{rid}/_history", _since=since)
    assert [e["resource"]["meta"]["versionId"] for e in entries] == ["4", "3"]
    later = history_entries(client, f"/Patient/{rid}/_history", _since="2999-01-01T00:00:00Z")
    assert later == []


def test_instance_history_at(client: httpx.Client) -> None:
    rid, versions = _with_versions(client, 3)
    at = versions[1]["meta"]["lastUpdated"]  # the moment version 2 became current
    entries = history_entries(client, f"/Patient/{rid}/_history", _at=at)
    assert [e["resource"]["meta"]["versionId"] for e in entries] == ["2"]
    before = history_entries(client, f"/Patient/{rid}/_history", _at="2000-01-01T00:00:00Z")
    assert before == []
    # a coarse _at (the whole year) covers every version current at some point in it
    year = versions[0]["meta"]["lastUpdated"][:4]
    assert len(history_entries(client, f"/Patient/{rid}/_history", _at=year)) == 3


def test_instance_history_with_deletion(client: httpx.Client) -> None:
    rid, _ = _with_versions(client, 2)
    client.delete(f"/Patient/{rid}")
    entries = history_entries(client, f"/Patient/{rid}/_history")
    assert [e["response"]["etag"] for e in entries] == ['W/"3"', 'W/"2"', 'W/"1"']
    assert entries[0]["request"]["method"] == "DELETE" and "resource" not in entries[0]


def test_instance_history_unknown_is_404(client: httpx.Client) -> None:
    assert_error(client.get(f"/Patient/{uid()}/_history"), 404)


@pytest.mark.parametrize("params", [{"_since": "yesterday"}, {"_at": "13/01/2020"}, {"_count": "-1"},
                                    {"_count": "abc"}, {"_cursor": "bogus"}, {"foo": "bar"}])
def test_history_bad_parameters_are_400(client: httpx.Client, params: dict[str, str]) -> None:
    rid = create(client, patient())["id"]
    name = next(iter(params))
    assert_error(client.get(f"/Patient/{rid}/_history", params=params), 400, expression=name)
    assert_error(client.get("/_history", params=params), 400, expression=name)


# --- type and system ----------------------------------------------------------------------------------------------


def test_type_history_since_with_paging(client: httpx.Client) -> None:
    """Flag is written by no other test: the type history since our first write is exactly our writes."""
    wait_ms(3)
    flag = {"resourceType": "Flag", "status": "active", "code": {"text": "allergy"},
            "subject": {"reference": f"Patient/{uid()}"}}
    written: list[tuple[str, str]] = []
    since = ""
    for i in range(4):
        body = create(client, flag)
        since = since or str(body["meta"]["lastUpdated"])
        written.append((body["id"], "1"))
        if i % 2 == 0:
            wait_ms(2)
            upd = put(client, {**body, "status": "inactive"})
            assert upd.status_code == 200
            written.append((body["id"], "2"))
        wait_ms(2)
    entries = history_entries(client, "/Flag/_history", _since=since, _count="2")
    got = [(e["resource"]["id"], e["resource"]["meta"]["versionId"]) for e in entries]
    assert got == list(reversed(written))
    stamps = [e["response"]["lastModified"] for e in entries]
    assert stamps == sorted(stamps, reverse=True)
    assert all(e["fullUrl"].endswith(f"/Flag/{e['resource']['id']}") for e in entries)
    # at the instant of the first write, only the first Flag's first version was current
    at = history_entries(client, "/Flag/_history", _at=since)
    assert [(e["resource"]["id"], e["resource"]["meta"]["versionId"]) for e in at] == [written[0]]


def test_type_history_count_limits_page(client: httpx.Client) -> None:
    for _ in range(3):
        create(client, patient())
    bundle = client.get("/Patient/_history", params={"_count": "2"}).json()
    assert bundle["type"] == "history"
    assert len(bundle["entry"]) == 2
    assert all(e["resource"]["resourceType"] == "Patient" for e in bundle["entry"])
    assert any(link["relation"] == "next" for link in bundle["link"])


def test_system_history_since_all_versions_once(client: httpx.Client) -> None:
    wait_ms(3)
    p = create(client, patient())
    since = p["meta"]["lastUpdated"]
    wait_ms(2)
    o = create(client, {"resourceType": "Basic", "code": {"text": "note"}})
    wait_ms(2)
    assert put(client, {**p, "active": True}).status_code == 200
    wait_ms(2)
    assert client.delete(f"/Basic/{o['id']}").status_code in (200, 204)
    entries = history_entries(client, "/_history", _since=since, _count="1")
    got = [(e["fullUrl"].split("/fhir/")[1], e["response"]["etag"], e["request"]["method"]) for e in entries]
    assert got == [
        (f"Basic/{o['id']}", 'W/"2"', "DELETE"),
        (f"Patient/{p['id']}", 'W/"2"', "PUT"),
        (f"Basic/{o['id']}", 'W/"1"', "POST"),
        (f"Patient/{p['id']}", 'W/"1"', "POST"),
    ]


def test_system_history_at(client: httpx.Client) -> None:
    rid, versions = _with_versions(client, 2)
    at = versions[0]["meta"]["lastUpdated"]
    entries = history_entries(client, "/_history", _at=at)
    mine = [e for e in entries if e["fullUrl"].endswith(f"/Patient/{rid}")]
    assert [e["response"]["etag"] for e in mine] == ['W/"1"']


def test_history_next_link_keeps_parameters(client: httpx.Client) -> None:
    rid, _ = _with_versions(client, 3)
    bundle = client.get(f"/Patient/{rid}/_history", params={"_count": "1"}).json()
    nxt = next(link["url"] for link in bundle["link"] if link["relation"] == "next")
    assert "_count=1" in nxt
    page2 = client.get(nxt).json()
    assert [e["response"]["etag"] for e in page2["entry"]] == ['W/"2"']
    assert any(link["relation"] == "self" for link in bundle["link"])
