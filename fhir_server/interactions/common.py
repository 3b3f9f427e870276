"""What every interaction shares: services, reading a resource body, ETags, version headers, ``Prefer``."""

from __future__ import annotations

import calendar
from functools import lru_cache
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from fhir_server.http.media import body_media_type
from fhir_server.http.request import FhirRequest, FhirResponse
from fhir_server.search.tree import MatchAll, Node
from fhir_server.settings import Settings
from fhir_server.storage.base import Store, Version
from resources.model import is_resource_type
from resources.outcome import Gone, InvalidInput, NotFound, info_outcome
from resources.validate import parse_json_resource, validate_resource

if TYPE_CHECKING:
    from fhir_server.prepare.pool import PreparePool

UTF8_BOM = b"\xef\xbb\xbf"
# query parameters that shape the response rather than select resources
RESULT_PARAMS = frozenset({"_format", "_pretty", "_summary", "_elements", "_count", "_cursor", "_total", "_sort"})


@dataclass(slots=True)
class Services:
    """What an interaction may use. Inside a transaction Bundle, ``store`` is a view of the open transaction, so the
    same interaction code runs as one atomic unit with every other entry."""

    store: Store
    settings: Settings
    # the access token's grant (fhir_server.authz.grant.Grant); None when authorization is off
    grant: object | None = None
    # the prepare processes; None inside a transaction and in tools
    prepare: PreparePool | None = None


def parse_resource(body: bytes, media: str) -> dict[str, Any]:
    if not body.strip():
        raise InvalidInput("the request has no body; a resource is required", message_id="AEGIS-102")
    if media == "xml":
        from resources.xml import xml_to_resource

        resource = xml_to_resource(body)
        validate_resource(resource)
        return resource
    # RFC 8259 §8.1 lets a parser ignore a byte order mark; the JSON decoder behind the validator does not
    return parse_json_resource(body.removeprefix(UTF8_BOM))


def resource_body(req: FhirRequest, rtype: str | None) -> dict[str, Any]:
    """The request's resource, parsed and validated; its type must be ``rtype`` when given."""
    resource = req.resource
    if resource is None:
        resource = parse_resource(req.body, body_media_type(req.header("content-type")))
    if rtype is not None and resource.get("resourceType") != rtype:
        raise InvalidInput(
            f"resourceType {resource.get('resourceType')!r} does not match the URL's type {rtype!r}",
            expression="resourceType",
            message_id="AEGIS-103",
        )
    return resource


def check_type(rtype: str) -> None:
    if not is_resource_type(rtype):
        raise NotFound(f"{rtype!r} is not a FHIR R4 resource type", message_id="AEGIS-200")


def parse_vid(value: str) -> int:
    if not value.isdigit() or len(value) > 18:
        raise NotFound(f"version {value!r} does not exist", message_id="AEGIS-203")
    return int(value)


def parse_etag(value: str, header: str) -> int:
    raw = value.strip()
    if raw.startswith("W/"):
        raw = raw[2:]
    raw = raw.strip('"')
    if not raw.isdigit() or len(raw) > 18:
        raise InvalidInput(f"{header}: {value!r} is not a version ETag such as W/\"3\"", message_id="AEGIS-170")
    return int(raw)


@lru_cache(maxsize=4096)
def _http_date_of_second(second: str) -> str:
    return formatdate(instant_seconds(second), usegmt=True)


def http_date(instant: str) -> str:
    """RFC 9110 date of a stored instant (cached per second: it is on every read's path)."""
    return _http_date_of_second(instant[:19])


def http_date_seconds(value: str) -> int | None:
    try:
        return int(parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError, IndexError):
        return None


def instant_seconds(instant: str) -> int:
    """Epoch seconds of a stored UTC instant (fixed layout ``YYYY-MM-DDTHH:MM:SS…Z``)."""
    return calendar.timegm((int(instant[0:4]), int(instant[5:7]), int(instant[8:10]), int(instant[11:13]),
                            int(instant[14:16]), int(instant[17:19]), 0, 0, 0))


def version_headers(version: Version, req: FhirRequest, *, location: bool = False) -> dict[str, str]:
    headers = {"ETag": version.etag, "Last-Modified": http_date(version.last_updated)}
    if location:
        headers["Location"] = f"{req.base}/{version.rtype}/{version.rid}/_history/{version.vid}"
    return headers


def live(version: Version | None, rtype: str, rid: str) -> Version:
    """The version, or 404/410 as the spec asks for unknown and deleted resources."""
    if version is None:
        raise NotFound(f"{rtype}/{rid} is not known", message_id="AEGIS-201")
    if version.deleted:
        raise Gone(f"{rtype}/{rid} was deleted", message_id="AEGIS-202",
                   headers={"ETag": version.etag, "Last-Modified": http_date(version.last_updated)})
    return version


def written(req: FhirRequest, version: Version, status: int, message: str) -> FhirResponse:
    """The answer to a write, honouring ``Prefer: return=minimal | representation | OperationOutcome``."""
    headers = version_headers(version, req, location=True)
    mode = req.prefer().get("return", "representation")
    if mode == "minimal" or version.deleted:
        return FhirResponse(status, None, headers, version=version)
    if mode == "OperationOutcome":
        return FhirResponse(status, info_outcome(message), headers, version=version)
    return FhirResponse(status, version.body, headers, version=version)


async def criteria_from_query(store: Store, rtype: str, query: list[tuple[str, str]], interaction: str) -> Node:
    """The prepared search tree of a conditional interaction's criteria; there must be some."""
    from fhir_server.search.execute import criteria_tree

    pairs = [(k, v) for k, v in query if k not in RESULT_PARAMS]
    if not pairs:
        raise InvalidInput(f"a conditional {interaction} needs search criteria", message_id="AEGIS-172")
    return await criteria_tree(store, rtype, pairs)


async def criteria_from_string(store: Store, rtype: str, text: str, header: str) -> Node:
    from urllib.parse import parse_qsl

    query = text.split("?", 1)[1] if "?" in text else text
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise InvalidInput(f"{header}: {text!r} is not a search query string", message_id="AEGIS-171") from None
    if not pairs:
        raise InvalidInput(f"{header}: no criteria given", message_id="AEGIS-172")
    return await criteria_from_query(store, rtype, pairs, header)
