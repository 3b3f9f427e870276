"""search-type (GET [type]?… and POST [type]/_search) over the criteria the store supports so far."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fhir_server.http.request import FhirRequest, FhirResponse
from fhir_server.interactions.bundling import links, parse_count, parse_cursor, search_entry
from fhir_server.interactions.common import Services, criteria_from_query
from resources.outcome import InvalidInput, UnsupportedMediaType


def form_query(req: FhirRequest) -> list[tuple[str, str]]:
    """POST _search: parameters from the URL and from an x-www-form-urlencoded body."""
    ctype = (req.header("content-type") or "").split(";")[0].strip().lower()
    if req.body.strip() and ctype != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("POST _search takes application/x-www-form-urlencoded", message_id="AEGIS-155")
    try:
        body = parse_qsl(req.body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise InvalidInput("the form body is not UTF-8", message_id="AEGIS-156") from None
    return req.query + body


async def search(svc: Services, req: FhirRequest, rtype: str) -> FhirResponse:
    criteria = criteria_from_query(req.query)
    count = parse_count(req, svc.settings.page_size, svc.settings.max_page_size, minimum=0)
    if req.param("_summary") == "count":
        count = 0
    page = await svc.store.find(rtype, criteria, limit=max(count, 1), after_seq=parse_cursor(req))
    versions = page.versions[:count]
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    first_page = parse_cursor(req) is None
    if first_page and page.next_cursor is None and count:
        bundle["total"] = len(page.versions)  # exact, and free: everything fitted in one page
    elif req.param("_total") == "accurate" or count == 0:
        bundle["total"] = await svc.store.count(rtype, criteria)
    bundle["link"] = links(req, page.next_cursor if count else None)
    bundle["entry"] = [search_entry(req, v) for v in versions]
    return FhirResponse(200, bundle)


async def search_post(svc: Services, req: FhirRequest, rtype: str) -> FhirResponse:
    req.query = form_query(req)
    req.segments = [rtype]
    return await search(svc, req, rtype)
