"""Building result Bundles (history, searchset): entries around stored bytes, links, opaque cursors, ``_count``.

Entry resources are embedded as the stored canonical bytes (orjson fragments): a page of results is never parsed
and re-serialised on its way out.
"""

from __future__ import annotations

import base64
from http import HTTPStatus
from typing import Any
from urllib.parse import urlencode

import orjson

from fhir_server.http.request import FhirRequest
from fhir_server.interactions.common import http_date
from fhir_server.storage.base import Version
from resources.outcome import InvalidInput


def parse_count(req: FhirRequest, default: int, maximum: int, *, minimum: int = 1) -> int:
    raw = req.param("_count")
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < minimum:
        raise InvalidInput(f"_count must be a whole number ≥ {minimum}", expression="_count", message_id="AEGIS-180")
    return min(int(raw), maximum)


def encode_cursor(values: tuple[object, ...]) -> str:
    """An opaque cursor: where the previous page ended (keyset values), never an offset."""
    return base64.urlsafe_b64encode(orjson.dumps(["v1", *values])).decode().rstrip("=")


def parse_cursor(req: FhirRequest) -> tuple[object, ...] | None:
    raw = req.param("_cursor")
    return None if raw is None else decode_cursor(raw)


def decode_cursor(raw: str) -> tuple[object, ...]:
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        if not isinstance(decoded, list) or not decoded or decoded[0] != "v1" or len(decoded) < 2:
            raise ValueError
        if not all(isinstance(v, (int, float, str)) for v in decoded[1:]):
            raise ValueError
        return tuple(decoded[1:])
    except (ValueError, orjson.JSONDecodeError, UnicodeDecodeError):
        raise InvalidInput("_cursor is not a cursor this server issued", expression="_cursor",
                           message_id="AEGIS-181") from None


def link(req: FhirRequest, relation: str, cursor: tuple[object, ...] | None) -> dict[str, str]:
    pairs = [(k, v) for k, v in req.query if k != "_cursor"]
    if cursor is not None:
        pairs.append(("_cursor", encode_cursor(cursor)))
    path = "/".join(req.segments)
    url = f"{req.base}/{path}" if path else req.base
    if pairs:
        url += "?" + urlencode(pairs)
    return {"relation": relation, "url": url}


def links(req: FhirRequest, next_cursor: tuple[object, ...] | None) -> list[dict[str, str]]:
    out = [link(req, "self", parse_cursor(req))]
    if req.param("_cursor") is not None:
        out.append(link(req, "first", None))
    if next_cursor is not None:
        out.append(link(req, "next", next_cursor))
    return out


def status_line(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"


def embedded(version: Version) -> orjson.Fragment:
    return orjson.Fragment(version.body)


def history_entry(req: FhirRequest, version: Version) -> dict[str, Any]:
    url = f"{version.rtype}/{version.rid}"
    entry: dict[str, Any] = {"fullUrl": f"{req.base}/{url}"}
    if not version.deleted:
        entry["resource"] = embedded(version)
    method = version.method
    entry["request"] = {"method": method, "url": version.rtype if method == "POST" else url}
    if version.deleted:
        status = 204
    else:
        status = 201 if method == "POST" or version.vid == 1 else 200
    entry["response"] = {
        "status": status_line(status),
        "etag": version.etag,
        "lastModified": version.last_updated,
    }
    return entry


def search_entry(req: FhirRequest, version: Version, mode: str = "match") -> dict[str, Any]:
    return {
        "fullUrl": f"{req.base}/{version.rtype}/{version.rid}",
        "resource": embedded(version),
        "search": {"mode": mode},
    }


def response_headers_for(version: Version) -> dict[str, str]:
    return {"ETag": version.etag, "Last-Modified": http_date(version.last_updated)}
