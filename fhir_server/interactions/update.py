"""update (PUT [type]/[id], update-as-create) and conditional update (PUT [type]?criteria), with ``If-Match``."""

from __future__ import annotations

from typing import Any

from fhir_server.http.request import FhirRequest, FhirResponse
from fhir_server.interactions.common import Services, criteria_from_query, parse_etag, resource_body, written
from fhir_server.storage.base import Version, WriteTx
from resources.ids import is_valid_id, new_id
from resources.outcome import InvalidInput, PreconditionFailed


def check_if_match(current: Version | None, if_match: int | None, rtype: str, rid: str) -> None:
    if if_match is None:
        return
    if current is None or current.deleted:
        raise PreconditionFailed(f"If-Match: {rtype}/{rid} does not exist", message_id="AEGIS-220")
    if current.vid != if_match:
        raise PreconditionFailed(
            f"If-Match: {rtype}/{rid} is at version {current.vid}, not {if_match}", message_id="AEGIS-221"
        )


async def update_in(
    tx: WriteTx, rtype: str, rid: str, resource: dict[str, Any], *, if_match: int | None, method: str = "PUT",
    prepared: object | None = None,
) -> tuple[Version, int]:
    current = await tx.read(rtype, rid)
    check_if_match(current, if_match, rtype, rid)
    version = await tx.put(rtype, rid, resource, method=method, prepared=prepared)
    return version, 201 if current is None or current.deleted else 200


def _if_match(req: FhirRequest) -> int | None:
    value = req.header("if-match")
    return parse_etag(value, "If-Match") if value else None


async def update(svc: Services, req: FhirRequest, rtype: str, rid: str) -> FhirResponse:
    if not is_valid_id(rid):
        raise InvalidInput(f"{rid!r} is not a valid id", message_id="AEGIS-104")
    resource = resource_body(req, rtype)
    if resource.get("id") != rid:
        raise InvalidInput(
            f"the resource's id {resource.get('id')!r} must equal the id in the URL {rid!r}",
            expression=f"{rtype}.id",
            message_id="AEGIS-105",
        )
    if_match = _if_match(req)

    async def unit(tx: WriteTx) -> tuple[Version, int]:
        return await update_in(tx, rtype, rid, resource, if_match=if_match, prepared=req.prepared)

    version, status = await svc.store.transact(unit)
    return written(req, version, status, "created" if status == 201 else "updated")


async def conditional_update(svc: Services, req: FhirRequest, rtype: str) -> FhirResponse:
    criteria = await criteria_from_query(svc.store, rtype, req.query, "update")
    resource = resource_body(req, rtype)
    body_id = resource.get("id")
    if_match = _if_match(req)

    async def unit(tx: WriteTx) -> tuple[Version, int]:
        page = await tx.find(rtype, criteria, limit=2)
        if len(page.versions) > 1:
            raise PreconditionFailed("the criteria match more than one resource", message_id="AEGIS-223")
        if page.versions:
            rid = page.versions[0].rid
            if body_id is not None and body_id != rid:
                raise InvalidInput(
                    f"the resource's id {body_id!r} differs from the matching resource {rtype}/{rid}",
                    expression=f"{rtype}.id",
                    message_id="AEGIS-224",
                )
        else:
            rid = body_id or new_id()
        return await update_in(tx, rtype, rid, {**resource, "id": rid}, if_match=if_match)

    version, status = await svc.store.transact(unit)
    return written(req, version, status, "created" if status == 201 else "updated")
