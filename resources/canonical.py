"""Canonical stored form of a resource: ``resourceType``, ``id`` and ``meta`` first, server-owned meta set, compact
JSON with decimals exactly as received. Reads serve these bytes as they are."""

from __future__ import annotations

from typing import Any

from resources import jsonio


def stamped(resource: dict[str, Any], rid: str, vid: int, last_updated: str) -> dict[str, Any]:
    """The resource as it will be stored: server-owned id and meta set, canonical key order."""
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(vid)
    meta["lastUpdated"] = last_updated
    out: dict[str, Any] = {"resourceType": resource["resourceType"], "id": rid, "meta": meta}
    for key, value in resource.items():
        if key not in out:
            out[key] = value
    return out


SERVER_META = ("versionId", "lastUpdated")


def unstamped(resource: dict[str, Any], rid: str) -> dict[str, Any]:
    """The resource as :func:`stamped` orders it, without the stamp: what a version's index is extracted from
    (before or after the version exists, the same)."""
    meta = resource.get("meta")
    out: dict[str, Any] = {"resourceType": resource["resourceType"], "id": rid}
    if isinstance(meta, dict):
        out["meta"] = {k: v for k, v in meta.items() if k not in SERVER_META}
    for key, value in resource.items():
        if key not in out:
            out[key] = value
    return out


def finalize(resource: dict[str, Any], rid: str, vid: int, last_updated: str) -> bytes:
    return jsonio.dumps(stamped(resource, rid, vid, last_updated))


def identifiers(resource: dict[str, Any]) -> list[tuple[str, str]]:
    """``(system, value)`` of the resource's top-level ``identifier`` element(s)."""
    raw = resource.get("identifier")
    items = raw if isinstance(raw, list) else [raw] if isinstance(raw, dict) else []
    out = []
    for ident in items:
        if isinstance(ident, dict) and isinstance(ident.get("value"), str):
            out.append((ident.get("system") or "", ident["value"]))
    return out
