"""delete (a new deleted version; reads answer 410 afterwards) and conditional delete.

Conditional delete deletes a single match; more than one match answers 412 unless the client allows more with
``_count=N`` (as Microsoft's FHIR server does), which deletes all matches when there are at most N.
"""

from __future__ import annotations

from fhir_server.http.request import FhirRequest, FhirResponse
from fhir_server.interactions.common import Services, criteria_from_query, parse_etag, version_headers
from fhir_server.interactions.update import check_if_match
from fhir_server.storage.base import Version, WriteTx
from resources.ids import is_valid_id
from resources.outcome import InvalidInput, PreconditionFailed, info_outcome

MAX_CONDITIONAL_DELETE = 1000


async def delete_in(tx: WriteTx, rtype: str, rid: str, *, if_match: int | None) -> Version | None:
    """Delete inside an open transaction; None when there was nothing (left) to delete."""
    current = await tx.read(rtype, rid)
    check_if_match(current, if_match, rtype, rid)
    if current is None or current.deleted:
        return None
    return await tx.put(rtype, rid, None, method="DELETE")


def _answer(req: FhirRequest, deleted: list[Version], message: str) -> FhirResponse:
    headers = version_headers(deleted[0], req) if len(deleted) == 1 else {}
    if req.prefer().get("return") == "minimal":
        return FhirResponse(204, None, headers)
    return FhirResponse(200, info_outcome(message), headers)


async def delete(svc: Services, req: FhirRequest, rtype: str, rid: str) -> FhirResponse:
    if not is_valid_id(rid):
        raise InvalidInput(f"{rid!r} is not a valid id", message_id="AEGIS-104")
    value = req.header("if-match")
    if_match = parse_etag(value, "If-Match") if value else None

    async def unit(tx: WriteTx) -> Version | None:
        return await delete_in(tx, rtype, rid, if_match=if_match)

    version = await svc.store.transact(unit)
    if version is None:
        return _answer(req, [], f"{rtype}/{rid} did not exist or was already deleted; nothing changed")
    return _answer(req, [version], f"{rtype}/{rid} deleted")


async def conditional_delete(svc: Services, req: FhirRequest, rtype: str) -> FhirResponse:
    criteria = await criteria_from_query(svc.store, rtype, req.query, "delete")
    count_text = req.param("_count")
    allowed = 1
    if count_text is not None:
        if not count_text.isdigit() or not 1 <= int(count_text) <= MAX_CONDITIONAL_DELETE:
            raise InvalidInput(f"_count must be between 1 and {MAX_CONDITIONAL_DELETE}", expression="_count",
                               message_id="AEGIS-231")
        allowed = int(count_text)

    async def unit(tx: WriteTx) -> list[Version]:
        page = await tx.find(rtype, criteria, limit=allowed)
        if page.next_cursor is not None:
            raise PreconditionFailed(
                f"the criteria match more than {allowed} resource(s); pass _count=N to delete up to N",
                message_id="AEGIS-232",
            )
        return [await tx.put(rtype, v.rid, None, method="DELETE") for v in page.versions]

    deleted = await svc.store.transact(unit)
    if not deleted:
        return _answer(req, [], "no resource matched; nothing deleted")
    return _answer(req, deleted, f"deleted {len(deleted)} resource(s): "
                   + ", ".join(f"{v.rtype}/{v.rid}" for v in deleted))
