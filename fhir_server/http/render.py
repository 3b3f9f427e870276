"""Turning a :class:`FhirResponse` into bytes: format, ``_pretty``, ``_summary`` and ``_elements``.

Stored resources are canonical JSON already: when the client wants plain JSON of the whole resource, the stored
bytes go out untouched. Only XML, pretty printing or subsetting pay for a parse.
"""

from __future__ import annotations

from typing import Any

from fhir_server.http.media import CONTENT_TYPE, Format
from fhir_server.http.request import FhirRequest, FhirResponse
from resources import jsonio
from resources.outcome import InvalidInput

SUMMARY_MODES = ("true", "false", "text", "data", "count")

def _subset(resource: dict[str, Any], summary: str | None, elements: str | None) -> dict[str, Any]:
    from resources.summary import select_elements, summarize

    if summary and summary != "false":
        resource = summarize(resource, summary)
    if elements:
        resource = select_elements(resource, [e.strip() for e in elements.split(",") if e.strip()])
    return resource

def check_subset_params(req: FhirRequest) -> tuple[str | None, str | None]:
    summary = req.param("_summary")
    if summary is not None and summary not in SUMMARY_MODES:
        raise InvalidInput(f"_summary must be one of {', '.join(SUMMARY_MODES)}", expression="_summary",
                           message_id="AEGIS-160")
    return summary, req.param("_elements")

def _pretty(req: FhirRequest) -> bool:
    return req.param("_pretty") == "true"

def render_body(resp: FhirResponse, req: FhirRequest, fmt: Format) -> bytes:
    body = resp.body
    if body is None:
        return b""
    pretty = _pretty(req)
    summary, elements = check_subset_params(req) if resp.subsettable else (None, None)
    subset = bool((summary and summary != "false") or elements)
    if fmt == "json" and not pretty and not subset:
        return body if isinstance(body, bytes) else jsonio.dumps(body)
    if isinstance(body, bytes):
        resource = jsonio.loads(body)
    else:
        # a dict may embed stored bytes as orjson fragments (bundles); resolve them for XML or pretty output
        resource = jsonio.loads(jsonio.dumps(body))
    if subset:
        resource = _subset(resource, summary, elements)
    if fmt == "xml":
        from resources.xml import resource_to_xml

        return resource_to_xml(resource, pretty=pretty)
    return jsonio.dumps(resource, pretty=pretty)

def content_type(fmt: Format) -> str:
    return CONTENT_TYPE[fmt]
