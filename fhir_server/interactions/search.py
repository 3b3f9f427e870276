"""search at type level (GET [type]?…, POST [type]/_search), system level (GET [base]?…) and in a compartment
(GET [base]/Patient/123/Observation?…), answered as a searchset Bundle with paging links."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fhir_server.http.request import FhirRequest, FhirResponse
from fhir_server.interactions.bundling import decode_cursor, embedded, encode_cursor
from fhir_server.interactions.common import Services
from fhir_server.search.execute import SearchResult, execute, parse
from fhir_server.search.request import SearchRequest
from fhir_server.storage.base import Version
from resources import jsonio
from resources.outcome import InvalidInput, Issue, UnsupportedMediaType, operation_outcome


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


def _strict(req: FhirRequest) -> bool:
    # RFC 7240: a preference may carry parameters after ';' (``handling=strict; x=y``)
    return req.prefer().get("handling", "").split(";")[0].strip().lower() == "strict"


def _url(req: FhirRequest, path: str, request: SearchRequest) -> str:
    query = request.format()
    base = f"{req.base}/{path}" if path else req.base
    return f"{base}?{query}" if query else base


def _entry_resource(version: Version, request: SearchRequest) -> Any:
    if request.summary in ("true", "text", "data") or request.elements:
        from resources.summary import select_elements, summarize

        resource = jsonio.loads(version.body)
        if request.summary in ("true", "text", "data"):
            resource = summarize(resource, request.summary)
        if request.elements:
            resource = select_elements(resource, list(request.elements))
        return resource
    return embedded(version)


def searchset(req: FhirRequest, path: str, result: SearchResult) -> dict[str, Any]:
    request = result.bound.request
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if result.total is not None:
        bundle["total"] = result.total
    links = [{"relation": "self", "url": _url(req, path, request)}]
    if request.cursor is not None:
        links.append({"relation": "first", "url": _url(req, path, request.with_cursor(None))})
    if result.prev_before is not None and not result.summary_count:
        links.append({"relation": "previous",
                      "url": _url(req, path, request.with_cursor(encode_cursor(("b", *result.prev_before))))})
    if result.next_after is not None and not result.summary_count:
        links.append({"relation": "next",
                      "url": _url(req, path, request.with_cursor(encode_cursor(("a", *result.next_after))))})
    bundle["link"] = links
    entries: list[dict[str, Any]] = []
    for v in result.matches:
        entries.append({"fullUrl": f"{req.base}/{v.rtype}/{v.rid}", "resource": _entry_resource(v, request),
                        "search": {"mode": "match"}})
    for v in result.included:
        entries.append({"fullUrl": f"{req.base}/{v.rtype}/{v.rid}", "resource": _entry_resource(v, request),
                        "search": {"mode": "include"}})
    if result.unknown:
        outcome = operation_outcome([
            Issue("warning", "not-supported", f"the search parameter {name!r} is not supported and was ignored",
                  (name.split("=", 1)[0],), "AEGIS-310")
            for name in result.unknown
        ])
        entries.append({"resource": outcome, "search": {"mode": "outcome"}})
    if entries:  # FHIR JSON and XML have no empty arrays: a search that found nothing has no entry element
        bundle["entry"] = entries
    return bundle


async def run_search(svc: Services, req: FhirRequest, rtype: str | None, path: str, pairs: list[tuple[str, str]],
                     compartment: tuple[str, str] | None = None) -> FhirResponse:
    request = parse(pairs)
    cursor = None if request.cursor is None else decode_cursor(request.cursor)
    after = before = None
    if cursor is not None:
        if cursor[0] not in ("a", "b") or len(cursor) < 2:
            raise InvalidInput("_cursor is not a search cursor", expression="_cursor", message_id="AEGIS-181")
        after, before = (cursor[1:], None) if cursor[0] == "a" else (None, cursor[1:])
    result = await execute(
        svc.store, rtype, request, strict=_strict(req), base_url=req.base,
        default_count=svc.settings.page_size, max_count=svc.settings.max_page_size, after=after, before=before,
        compartment=compartment,
    )
    return FhirResponse(200, searchset(req, path, result))


async def search(svc: Services, req: FhirRequest, rtype: str) -> FhirResponse:
    return await run_search(svc, req, rtype, rtype, req.query)


async def search_post(svc: Services, req: FhirRequest, rtype: str) -> FhirResponse:
    return await run_search(svc, req, rtype, rtype, form_query(req))


async def search_system(svc: Services, req: FhirRequest, post: bool = False) -> FhirResponse:
    return await run_search(svc, req, None, "", form_query(req) if post else req.query)


async def search_compartment(svc: Services, req: FhirRequest, ctype: str, cid: str, rtype: str) -> FhirResponse:
    from fhir_server.search.compartments import compartment_types, params_in

    if ctype not in compartment_types():
        raise InvalidInput(f"{ctype} is not a compartment (compartments: {', '.join(sorted(compartment_types()))})",
                           message_id="AEGIS-350")
    if rtype != ctype and not params_in(ctype, rtype):
        raise InvalidInput(f"{rtype} resources are not part of the {ctype} compartment", message_id="AEGIS-351")
    return await run_search(svc, req, rtype, f"{ctype}/{cid}/{rtype}", req.query, compartment=(ctype, cid))
