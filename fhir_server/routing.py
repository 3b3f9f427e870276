"""Maps a FHIR request (method + path below the base) onto its interaction.

The interaction lists here are the single source of what the server implements: the CapabilityStatement is
generated from them, and a test walks the CapabilityStatement and exercises every declared interaction.
"""

from __future__ import annotations

from fhir_server.http.media import body_media_type
from fhir_server.http.request import FhirRequest, FhirResponse
from fhir_server.interactions import create, delete, history, patch, read, search, update
from fhir_server.interactions.common import Services, check_type
from resources.model import is_resource_type
from resources.outcome import MethodNotAllowed, NotFound

TYPE_INTERACTIONS = (
    "read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create", "search-type",
)
SYSTEM_INTERACTIONS = ("transaction", "batch", "search-system", "history-system")
OPERATIONS = {"everything": ("Patient",)}
CONDITIONAL = {"conditionalCreate": True, "conditionalUpdate": True, "conditionalDelete": "multiple",
               "conditionalRead": "full-support"}


def _not_allowed(method: str, allowed: str) -> MethodNotAllowed:
    return MethodNotAllowed(f"{method} is not allowed here; allowed: {allowed}", message_id="AEGIS-205",
                            headers={"Allow": allowed})


async def dispatch(svc: Services, req: FhirRequest) -> FhirResponse:
    if svc.grant is not None:  # the one authorization step (batch/transaction entries come back through here)
        from fhir_server.authz.step import authorize

        svc = authorize(svc, req)
    segs, method = req.segments, req.method
    if method == "HEAD":
        method = "GET"
    n = len(segs)
    if n == 0:
        if method == "POST":
            from fhir_server.interactions.bundle import batch_or_transaction, bundle_body

            if svc.prepare is not None and svc.prepare.wants(req.body) \
                    and body_media_type(req.header("content-type")) == "json":
                prepared = await svc.prepare.transaction(req.body, req.base)
                if prepared is not None:
                    return await batch_or_transaction(svc, req, prepared.bundle, None, prepared)
            bundle, invalid = bundle_body(req)
            return await batch_or_transaction(svc, req, bundle, invalid)
        if method == "GET":
            return await search.search_system(svc, req)
        raise _not_allowed(method, "GET, POST")
    head = segs[0]
    if head == "metadata" and n == 1:
        if method != "GET":
            raise _not_allowed(method, "GET")
        from conformance.capability import capability_statement

        return FhirResponse(200, capability_statement(req.base, secured=not svc.settings.auth_disabled))
    if head == "_search" and n == 1:
        if method != "POST":
            raise _not_allowed(method, "POST")
        return await search.search_system(svc, req, post=True)
    if head == "_history" and n == 1:
        if method != "GET":
            raise _not_allowed(method, "GET")
        return await history.history(svc, req)
    if head.startswith("$"):
        raise NotFound(f"operation {head} is not supported", message_id="AEGIS-207")
    check_type(head)
    rtype = head
    if n == 1:
        if method == "GET":
            return await search.search(svc, req, rtype)
        if method == "POST":
            return await create.create(svc, req, rtype)
        if method == "PUT":
            return await update.conditional_update(svc, req, rtype)
        if method == "DELETE":
            return await delete.conditional_delete(svc, req, rtype)
        if method == "PATCH":
            return await patch.conditional_patch(svc, req, rtype)
        raise _not_allowed(method, "GET, POST, PUT, DELETE, PATCH")
    second = segs[1]
    if n == 2:
        if second == "_history":
            if method != "GET":
                raise _not_allowed(method, "GET")
            return await history.history(svc, req, rtype)
        if second == "_search":
            if method != "POST":
                raise _not_allowed(method, "POST")
            return await search.search_post(svc, req, rtype)
        if second.startswith("$"):
            raise NotFound(f"operation {second} is not supported on {rtype}", message_id="AEGIS-207")
        if method == "GET":
            return await read.read(svc, req, rtype, second)
        if method == "PUT":
            return await update.update(svc, req, rtype, second)
        if method == "DELETE":
            return await delete.delete(svc, req, rtype, second)
        if method == "PATCH":
            return await patch.patch(svc, req, rtype, second)
        raise _not_allowed(method, "GET, PUT, DELETE, PATCH")
    if segs[2] == "_history" and n in (3, 4):
        if method != "GET":
            raise _not_allowed(method, "GET")
        if n == 3:
            return await history.history(svc, req, rtype, second)
        return await read.vread(svc, req, rtype, second, segs[3])
    if n == 3 and segs[2] == "$everything" and rtype == "Patient":
        if method not in ("GET", "POST"):
            raise _not_allowed(method, "GET, POST")
        from fhir_server.operations.everything import everything

        return await everything(svc, req, second)
    if segs[2].startswith("$"):
        raise NotFound(f"operation {segs[2]} is not supported on {rtype}/{second}", message_id="AEGIS-207")
    if n == 3 and is_resource_type(segs[2]):
        if method != "GET":
            raise _not_allowed(method, "GET")
        return await search.search_compartment(svc, req, rtype, second, segs[2])
    raise NotFound(f"no FHIR interaction at {'/'.join(segs)}", message_id="AEGIS-204")
