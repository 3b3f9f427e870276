"""history at instance, type and system level: ``_count``, ``_since``, ``_at``, paging by cursor, newest first."""

from __future__ import annotations

from typing import Any

from fhir_server.http.request import FhirRequest, FhirResponse
from fhir_server.interactions.bundling import history_entry, links, parse_count, parse_cursor
from fhir_server.interactions.common import Services
from fhir_server.search.dates import parse_range
from fhir_server.storage.base import HistoryQuery
from resources.ids import is_valid_id
from resources.outcome import InvalidInput, NotFound

KNOWN = frozenset({"_count", "_since", "_at", "_cursor", "_format", "_pretty", "_list", "_sort", "_summary",
                   "_elements"})


def _instant_param(req: FhirRequest, name: str) -> tuple[str, str] | None:
    raw = req.param(name)
    if raw is None:
        return None
    rng = parse_range(raw)
    if rng is None:
        raise InvalidInput(f"{name}: {raw!r} is not a FHIR date, dateTime or instant", expression=name,
                           message_id="AEGIS-190")
    return rng


def _before(req: FhirRequest) -> int | None:
    cursor = parse_cursor(req)
    if cursor is None:
        return None
    if len(cursor) != 1 or not isinstance(cursor[0], int):
        raise InvalidInput("_cursor is not a history cursor", expression="_cursor", message_id="AEGIS-181")
    return cursor[0]


async def history(svc: Services, req: FhirRequest, rtype: str | None = None, rid: str | None = None) -> FhirResponse:
    for key, _ in req.query:
        if key not in KNOWN:
            raise InvalidInput(f"history does not support the parameter {key!r}", expression=key,
                               message_id="AEGIS-191")
    if rid is not None:
        if rtype is None or not is_valid_id(rid) or await svc.store.read(rtype, rid) is None:
            raise NotFound(f"{rtype}/{rid} is not known", message_id="AEGIS-201")
    since = _instant_param(req, "_since")
    at = _instant_param(req, "_at")
    query = HistoryQuery(
        rtype=rtype,
        rid=rid,
        since=since[0] if since else None,
        at=at,
        count=parse_count(req, svc.settings.page_size, svc.settings.max_page_size),
        before_seq=_before(req),
    )
    page = await svc.store.history(query)
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "history",
        "link": links(req, None if page.next_cursor is None else (page.next_cursor,)),
    }
    if page.versions:  # no empty arrays in FHIR JSON or XML
        bundle["entry"] = [history_entry(req, v) for v in page.versions]
    return FhirResponse(200, bundle)
