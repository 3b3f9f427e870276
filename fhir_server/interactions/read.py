"""read and vread, with conditional read (``If-None-Match``, ``If-Modified-Since`` → 304)."""

from __future__ import annotations

from fhir_server.http.request import FhirRequest, FhirResponse
from fhir_server.interactions.common import (
    Services,
    http_date_seconds,
    instant_seconds,
    live,
    parse_vid,
    version_headers,
)
from resources.ids import is_valid_id
from resources.outcome import NotFound


def _not_modified(req: FhirRequest, vid: int, last_updated: str) -> bool:
    inm = req.header("if-none-match")
    if inm is not None:
        tags = {t.strip().removeprefix("W/").strip('"') for t in inm.split(",")}
        return str(vid) in tags or "*" in tags
    ims = req.header("if-modified-since")
    if ims is not None:
        secs = http_date_seconds(ims)
        return secs is not None and instant_seconds(last_updated) <= secs
    return False


def _check_id(rtype: str, rid: str) -> None:
    if not is_valid_id(rid):
        raise NotFound(f"{rtype}/{rid} is not known ({rid!r} is not a valid id)", message_id="AEGIS-201")


async def read(svc: Services, req: FhirRequest, rtype: str, rid: str) -> FhirResponse:
    _check_id(rtype, rid)
    version = live(await svc.store.read(rtype, rid), rtype, rid)
    headers = version_headers(version, req)
    if _not_modified(req, version.vid, version.last_updated):
        return FhirResponse(304, None, headers)
    return FhirResponse(200, version.body, headers, subsettable=True, version=version)


async def vread(svc: Services, req: FhirRequest, rtype: str, rid: str, vid_text: str) -> FhirResponse:
    _check_id(rtype, rid)
    vid = parse_vid(vid_text)
    version = await svc.store.vread(rtype, rid, vid)
    if version is None:
        raise NotFound(f"{rtype}/{rid} has no version {vid}", message_id="AEGIS-203")
    version = live(version, rtype, rid)
    headers = version_headers(version, req)
    headers["Content-Location"] = f"{req.base}/{rtype}/{rid}/_history/{vid}"
    return FhirResponse(200, version.body, headers, subsettable=True, version=version)
