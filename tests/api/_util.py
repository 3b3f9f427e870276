"""Small helpers shared by the black-box API tests: unique data, resource builders, and assertions on answers."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
JSON_PATCH = "application/json-patch+json"
JSON_HEADERS = {"Content-Type": FHIR_JSON}
XML_HEADERS = {"Content-Type": FHIR_XML, "Accept": FHIR_XML}

SYSTEM = "urn:aegis-test:id"
SUBSETTED_CODE = "SUBSETTED"


def uid() -> str:
    return uuid.uuid4().hex


def ident(value: str | None = None) -> dict[str, str]:
    return {"system": SYSTEM, "value": value or uid()}


def token(identifier: dict[str, str]) -> str:
    """The ``identifier`` search token ``system|value`` of an Identifier."""
    return f"{identifier['system']}|{identifier['value']}"


def patient(identifier: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "Patient", "identifier": [identifier or ident()]}
    res.update(extra)
    return res


def observation(subject: str | None = None, identifier: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [identifier or ident()],
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}], "text": "Heart rate"},
        "valueQuantity": {"value": 72.5, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
    }
    if subject:
        res["subject"] = {"reference": subject}
    res.update(extra)
    return res


def create(client: httpx.Client, resource: dict[str, Any], **headers: str) -> dict[str, Any]:
    """POST a resource, assert 201, and return the stored representation."""
    resp = client.post(f"/{resource['resourceType']}", json=resource, headers={**JSON_HEADERS, **headers})
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    assert body["resourceType"] == resource["resourceType"]
    return body


def read(client: httpx.Client, rtype: str, rid: str) -> dict[str, Any]:
    resp = client.get(f"/{rtype}/{rid}")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def put(client: httpx.Client, resource: dict[str, Any], **headers: str) -> httpx.Response:
    return client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource,
                      headers={**JSON_HEADERS, **headers})


def search_ids(client: httpx.Client, rtype: str, **params: str) -> list[str]:
    """Ids of all current resources matching the search, following ``next`` links."""
    ids: list[str] = []
    url: str | None = f"/{rtype}"
    query: dict[str, str] | None = params
    while url is not None:
        resp = client.get(url, params=query)
        assert resp.status_code == 200, resp.text
        bundle = resp.json()
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
        ids += [e["resource"]["id"] for e in bundle.get("entry", [])]
        url, query = next_link(bundle), None
    return ids


def by_identifier(client: httpx.Client, rtype: str, identifier: dict[str, str]) -> list[str]:
    return search_ids(client, rtype, identifier=token(identifier))


def next_link(bundle: dict[str, Any]) -> str | None:
    for link in bundle.get("link", []):
        if link["relation"] == "next":
            return str(link["url"])
    return None


def history_entries(client: httpx.Client, path: str, **params: str) -> list[dict[str, Any]]:
    """Every entry of a history, following ``next`` links to the end."""
    entries: list[dict[str, Any]] = []
    url: str | None = path
    query: dict[str, str] | None = params
    pages = 0
    while url is not None:
        resp = client.get(url, params=query)
        assert resp.status_code == 200, resp.text
        bundle = resp.json()
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "history"
        entries += bundle.get("entry", [])
        url, query = next_link(bundle), None
        pages += 1
        assert pages < 1000, "history paging does not end"
    return entries


def version_count(client: httpx.Client, rtype: str, rid: str) -> int:
    return len(history_entries(client, f"/{rtype}/{rid}/_history"))


def newest_change(client: httpx.Client) -> tuple[str, str, str]:
    """Identity of the newest version on the whole server; unchanged iff nothing was written since."""
    resp = client.get("/_history", params={"_count": "1"})
    assert resp.status_code == 200, resp.text
    entries = resp.json().get("entry", [])
    if not entries:
        return ("", "", "")
    e = entries[0]
    return (e["fullUrl"], e["response"]["etag"], e["response"]["lastModified"])


def outcome_of(resp: httpx.Response) -> dict[str, Any]:
    """The OperationOutcome of an error answer (JSON)."""
    assert resp.headers.get("content-type", "").startswith(FHIR_JSON), resp.headers
    body: dict[str, Any] = resp.json()
    assert body["resourceType"] == "OperationOutcome", body
    assert body["issue"], body
    return body


def assert_error(
    resp: httpx.Response,
    status: int,
    *,
    expression: str | None = None,
    mentions: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """An error answer: the exact status, an OperationOutcome whose error issue names the problem."""
    assert resp.status_code == status, f"expected {status}, got {resp.status_code}: {resp.text}"
    oo = outcome_of(resp)
    errors = [i for i in oo["issue"] if i["severity"] in ("error", "fatal")]
    assert errors, oo
    if expression is not None:
        exprs = [e for i in errors for e in i.get("expression", [])]
        assert expression in exprs, f"no issue at {expression!r}: {oo}"
    if mentions is not None:
        texts = " ".join((i.get("diagnostics", "") + " " + i.get("details", {}).get("text", "")) for i in errors)
        assert mentions.lower() in texts.lower(), f"no issue mentions {mentions!r}: {oo}"
    if code is not None:
        assert code in [i["code"] for i in errors], oo
    return oo


def wait_ms(ms: int = 5) -> None:
    """Let the server clock move on, so consecutive writes get distinct lastUpdated instants."""
    time.sleep(ms / 1000)


def has_subsetted_tag(resource: dict[str, Any]) -> bool:
    return any(t.get("code") == SUBSETTED_CODE for t in resource.get("meta", {}).get("tag", []))
