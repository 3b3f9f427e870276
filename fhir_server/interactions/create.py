"""create (POST [type]), conditional create (``If-None-Exist``)."""

from __future__ import annotations

from typing import Any

from fhir_server.http.request import FhirRequest, FhirResponse
from fhir_server.interactions.common import Services, criteria_from_string, resource_body, written
from fhir_server.search.tree import Node
from fhir_server.storage.base import Version, WriteTx
from resources.ids import new_id
from resources.outcome import PreconditionFailed


async def create_in(
    tx: WriteTx, rtype: str, resource: dict[str, Any], *, rid: str | None = None, if_none_exist: Node | None,
    prepared: object | None = None,
) -> tuple[Version, int]:
    """Create inside an open transaction; with ``if_none_exist``, an existing single match is returned instead."""
    if if_none_exist is not None:
        page = await tx.find(rtype, if_none_exist, limit=2)
        if len(page.versions) == 1:
            return page.versions[0], 200
        if page.versions:
            raise PreconditionFailed(
                "If-None-Exist matches more than one resource", expression="If-None-Exist", message_id="AEGIS-210"
            )
    rid = rid or new_id()
    # the spec has the server ignore a client id on create
    resource = {**resource, "id": rid}
    return await tx.put(rtype, rid, resource, method="POST", prepared=prepared), 201


async def create(svc: Services, req: FhirRequest, rtype: str) -> FhirResponse:
    resource = resource_body(req, rtype)
    ine = req.header("if-none-exist")
    criteria = await criteria_from_string(svc.store, rtype, ine, "If-None-Exist") if ine else None

    async def unit(tx: WriteTx) -> tuple[Version, int]:
        return await create_in(tx, rtype, resource, rid=req.assigned_id, if_none_exist=criteria,
                               prepared=req.prepared)

    version, status = await svc.store.transact(unit)
    message = "created" if status == 201 else "an existing resource matched If-None-Exist; nothing was created"
    return written(req, version, status, message)
