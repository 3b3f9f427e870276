"""Helpers of the search tests: a per-test scope (a unique tag on everything the test creates, ANDed into its
searches, so tests never see each other's data), searchset checks, and paging to the end."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from tests.api._util import JSON_HEADERS, create, uid

SCOPE_SYSTEM = "urn:aegis-test:scope"
Params = Mapping[str, str] | Sequence[tuple[str, str]]


def pairs_of(params: Params | None) -> list[tuple[str, str]]:
    if params is None:
        return []
    return list(params.items()) if isinstance(params, Mapping) else list(params)


def check_searchset(resp: httpx.Response) -> dict[str, Any]:
    """A 200 searchset Bundle whose links start with self and whose entries are well formed."""
    assert resp.status_code == 200, f"{resp.request.method} {resp.request.url}: {resp.status_code} {resp.text}"
    bundle: dict[str, Any] = resp.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset", bundle
    relations = [link["relation"] for link in bundle.get("link", [])]
    assert relations and relations[0] == "self", bundle.get("link")
    assert len(set(relations)) == len(relations), relations
    for entry in bundle.get("entry", []):
        mode = entry["search"]["mode"]
        assert mode in ("match", "include", "outcome"), entry
        if mode != "outcome":
            res = entry["resource"]
            assert entry["fullUrl"].endswith(f"/{res['resourceType']}/{res['id']}"), entry["fullUrl"]
    return bundle


def link_of(bundle: dict[str, Any], relation: str) -> str | None:
    for link in bundle.get("link", []):
        if link["relation"] == relation:
            return str(link["url"])
    return None


def query_of(url: str) -> list[tuple[str, str]]:
    """The decoded query of a link."""
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


def matches(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def included(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "include"]


def outcomes(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "outcome"]


def keys(resources: list[dict[str, Any]]) -> list[str]:
    """``Type/id`` of each resource, in order."""
    return [f"{r['resourceType']}/{r['id']}" for r in resources]


def get(client: httpx.Client, path: str, params: Params | None = None,
        headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    return check_searchset(client.get(path, params=pairs_of(params), headers=dict(headers or {})))


def all_pages(client: httpx.Client, path: str, params: Params | None = None,
              headers: Mapping[str, str] | None = None, *, max_pages: int = 500) -> list[dict[str, Any]]:
    """Every page of a search, following ``next`` links to the end."""
    pages = [get(client, path, params, headers)]
    while (nxt := link_of(pages[-1], "next")) is not None:
        pages.append(check_searchset(client.get(nxt, headers=dict(headers or {}))))
        assert len(pages) <= max_pages, "paging does not end"
    return pages


def all_matches(client: httpx.Client, path: str, params: Params | None = None,
                headers: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    return [r for page in all_pages(client, path, params, headers) for r in matches(page)]


class Scope:
    """One test's data: every resource created through it carries a unique tag, and its searches AND that tag in,
    so a test sees exactly what it made whatever else is on the (shared) server."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.code = uid()

    @property
    def tag(self) -> str:
        return f"{SCOPE_SYSTEM}|{self.code}"

    def tagged(self, resource: dict[str, Any]) -> dict[str, Any]:
        meta = dict(resource.get("meta") or {})
        meta["tag"] = [*meta.get("tag", []), {"system": SCOPE_SYSTEM, "code": self.code}]
        return {**resource, "meta": meta}

    def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        return create(self.client, self.tagged(resource))

    def put(self, resource: dict[str, Any]) -> dict[str, Any]:
        resp = self.client.put(f"/{resource['resourceType']}/{resource['id']}", json=self.tagged(resource),
                               headers=JSON_HEADERS)
        assert resp.status_code in (200, 201), resp.text
        body: dict[str, Any] = resp.json()
        return body

    def scoped(self, params: Params | None) -> list[tuple[str, str]]:
        return [*pairs_of(params), ("_tag", self.tag)]

    def search(self, rtype: str, params: Params | None = None, **headers: str) -> dict[str, Any]:
        """The first page of a scoped search."""
        return get(self.client, f"/{rtype}", self.scoped(params), headers)

    def ids(self, rtype: str, params: Params | None = None, **headers: str) -> list[str]:
        """Ids of every match of a scoped search (all pages), in result order."""
        found = [r["id"] for r in all_matches(self.client, f"/{rtype}", self.scoped(params), headers)]
        assert len(found) == len(set(found)), f"duplicates in {found}"
        return found

    def idset(self, rtype: str, params: Params | None = None, **headers: str) -> set[str]:
        return set(self.ids(rtype, params, **headers))
