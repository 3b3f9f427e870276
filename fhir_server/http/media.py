"""Media types: which format a request body is in, and which one the client wants back (``_format``, ``Accept``)."""

from __future__ import annotations

from typing import Literal

from resources.outcome import NotAcceptable, UnsupportedMediaType

Format = Literal["json", "xml"]

JSON_TYPES = {"application/fhir+json", "application/json", "application/json+fhir", "json"}
XML_TYPES = {"application/fhir+xml", "application/xml", "application/xml+fhir", "text/xml", "xml"}
JSON_PATCH = "application/json-patch+json"
CONTENT_TYPE = {"json": "application/fhir+json; charset=utf-8", "xml": "application/fhir+xml; charset=utf-8"}


def _media(value: str) -> tuple[str, dict[str, str]]:
    main, *params = value.split(";")
    parsed: dict[str, str] = {}
    for p in params:
        k, _, v = p.partition("=")
        parsed[k.strip().lower()] = v.strip().strip('"').lower()
    return main.strip().lower(), parsed


def body_media_type(content_type: str | None, *, allow_patch: bool = False) -> str:
    """The request body's media type, normalised to ``json``, ``xml`` or ``json-patch``; 415 otherwise."""
    if not content_type:
        return "json"  # lenient: many clients omit it for JSON; anything else still fails to parse
    main, params = _media(content_type)
    charset = params.get("charset")
    if charset and charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(f"charset {charset!r} is not supported; send UTF-8", message_id="AEGIS-151")
    if main in JSON_TYPES:
        return "json"
    if main in XML_TYPES:
        return "xml"
    if allow_patch and main == JSON_PATCH:
        return "json-patch"
    accepted = "application/fhir+json, application/fhir+xml" + (f", {JSON_PATCH}" if allow_patch else "")
    raise UnsupportedMediaType(
        f"Content-Type {main!r} is not supported here; use {accepted}", message_id="AEGIS-150"
    )


def response_format(format_param: str | None, accept: str | None) -> Format:
    if format_param:
        main, _ = _media(format_param)
        if main in JSON_TYPES:
            return "json"
        if main in XML_TYPES:
            return "xml"
        raise NotAcceptable(f"_format {format_param!r} is not supported; use json or xml", expression="_format",
                            message_id="AEGIS-152")
    if not accept:
        return "json"
    best: tuple[float, int, Format] | None = None
    for pos, item in enumerate(accept.split(",")):
        main, params = _media(item)
        try:
            q = float(params.get("q", "1"))
        except ValueError:
            q = 1.0
        fmt: Format | None
        if main in JSON_TYPES or main in ("*/*", "application/*", "text/html", "text/*"):
            # browsers ask for text/html first; JSON is what we serve them
            fmt = "json"
        elif main in XML_TYPES:
            fmt = "xml"
        else:
            fmt = None
        if fmt is not None and q > 0 and (best is None or (q, -pos) > (best[0], best[1])):
            best = (q, -pos, fmt)
    if best is None:
        raise NotAcceptable(f"none of the types in Accept: {accept!r} can be served; use application/fhir+json or "
                            "application/fhir+xml", message_id="AEGIS-153")
    return best[2]
