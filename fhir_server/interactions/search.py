"""search-type (GET [type]?… and POST [type]/_search) over the criteria the store supports so far."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fhir_server.http.request import FhirRequest, FhirResponse
from fhir_server.interactions.bundling import links, parse_count, parse_cursor, search_entry
from fhir_server.interactions.common import RESULT_PARAMS, Services
from fhir_server.search.criteria import criteria_tree, parse_criteria
from fhir_server.storage.base import SearchQuery
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
    tree = criteria_tree(rtype, parse_criteria([(k, v) for k, v in req.query if k not in RESULT_PARAMS]))
    count = parse_count(req, svc.settings.page_size, svc.settings.max_page_size, minimum=0)
    if req.param("_summary") == "count":
        count = 0
    after = parse_cursor(req)
    want_total = req.param("_total") == "accurate" or count == 0
    page = await svc.store.search(SearchQuery(rtype, tree, count=count, after=after, total=want_total))
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if page.total is not None:
        bundle["total"] = page.total
    elif after is None and page.next_after is None:
        bundle["total"] = len(page.versions)  # exact, and free: everything fitted in one page
    bundle["link"] = links(req, page.next_after)
    bundle["entry"] = [search_entry(req, v) for v in page.versions]
    return FhirResponse(200, bundle)


async def search_post(svc: Services, req: FhirRequest, rtype: str) -> FhirResponse:
    req.query = form_query(req)
    req.segments = [rtype]
    return await search(svc, req, rtype)
