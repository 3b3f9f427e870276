"""patch (PATCH [type]/[id] and PATCH [type]?criteria) with JSON Patch or FHIRPath Patch.

The patch is applied to the current version inside the write unit (so concurrent patches never lose each other's
changes) and the result is validated exactly like an update.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhir_server.http.media import body_media_type
from fhir_server.http.request import FhirRequest, FhirResponse
from fhir_server.interactions.common import Services, criteria_from_query, live, parse_etag, parse_resource, written
from fhir_server.interactions.update import check_if_match
from fhir_server.storage.base import Version, WriteTx
from resources import jsonio
from resources.outcome import InvalidInput, NotFound, PreconditionFailed
from resources.validate import validate_resource

Patcher = Callable[[dict[str, Any]], dict[str, Any]]


def patcher(req: FhirRequest) -> Patcher:
    media = body_media_type(req.header("content-type"), allow_patch=True)
    if req.resource is None and not req.body.strip():
        raise InvalidInput("the PATCH request has no body", message_id="AEGIS-240")
    if media == "json-patch":
        from resources.patch.json_patch import apply_json_patch

        try:
            document = jsonio.loads(req.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"the JSON Patch document is not valid JSON: {exc}", message_id="AEGIS-241") from None
        return lambda resource: apply_json_patch(resource, document)
    from resources.patch.fhirpath_patch import apply_fhirpath_patch

    parameters = req.resource if req.resource is not None else parse_resource(req.body, media)
    if parameters.get("resourceType") != "Parameters":
        raise InvalidInput("a FHIRPath Patch body must be a Parameters resource", expression="resourceType",
                           message_id="AEGIS-242")
    return lambda resource: apply_fhirpath_patch(resource, parameters)


async def patch_in(tx: WriteTx, rtype: str, rid: str, apply: Patcher, *, if_match: int | None) -> Version:
    current = await tx.read(rtype, rid)
    check_if_match(current, if_match, rtype, rid)
    current = live(current, rtype, rid)
    patched = apply(jsonio.loads(current.body))
    if patched.get("resourceType") != rtype or patched.get("id") != rid:
        raise InvalidInput("a patch may not change resourceType or id", message_id="AEGIS-243")
    validate_resource(patched)
    return await tx.put(rtype, rid, patched, method="PATCH")


def _if_match(req: FhirRequest) -> int | None:
    value = req.header("if-match")
    return parse_etag(value, "If-Match") if value else None


async def patch(svc: Services, req: FhirRequest, rtype: str, rid: str) -> FhirResponse:
    apply, if_match = patcher(req), _if_match(req)

    async def unit(tx: WriteTx) -> Version:
        return await patch_in(tx, rtype, rid, apply, if_match=if_match)

    return written(req, await svc.store.transact(unit), 200, "patched")


async def conditional_patch(svc: Services, req: FhirRequest, rtype: str) -> FhirResponse:
    criteria = await criteria_from_query(svc.store, rtype, req.query, "patch")
    apply, if_match = patcher(req), _if_match(req)

    async def unit(tx: WriteTx) -> Version:
        page = await tx.find(rtype, criteria, limit=2)
        if not page.versions:
            # nothing to patch: 404, as for a patch of an unknown id (a conditional patch never creates)
            raise NotFound(f"no {rtype} matches the criteria; nothing was patched", message_id="AEGIS-246")
        if len(page.versions) > 1:
            raise PreconditionFailed(
                "a conditional patch needs exactly one match; found 2" + (" or more" if page.next_cursor else ""),
                message_id="AEGIS-245",
            )
        return await patch_in(tx, rtype, page.versions[0].rid, apply, if_match=if_match)

    return written(req, await svc.store.transact(unit), 200, "patched")
