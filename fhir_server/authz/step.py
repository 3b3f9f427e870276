"""The one authorization step: every FHIR interaction, and every entry of a batch or transaction, passes here.

:func:`authorize` names the permission the request needs (``c r u d s`` of SMART v2 scopes) and the resource type it
is about, refuses with 403 when no scope grants it at all, and otherwise hands the interaction a
:class:`~fhir_server.authz.guard.GuardedStore`, which holds every storage call to the grant. The batch/transaction
envelope itself needs no permission: each of its entries comes back through this step.
"""

from __future__ import annotations

from dataclasses import replace

from fhir_server.authz.grant import Grant
from fhir_server.authz.guard import READ_LIKE, GuardedStore, forbidden
from fhir_server.http.request import FhirRequest
from fhir_server.interactions.common import Services
from resources.model import is_resource_type

__all__ = ["authorize", "needed"]

_WRITE = {"POST": "c", "PUT": "u", "PATCH": "u", "DELETE": "d"}


def needed(req: FhirRequest) -> tuple[str | None, str] | None:
    """``(resource type or None, actions)`` the request needs; None for what needs no permission (the
    CapabilityStatement, and the batch/transaction envelope whose entries are authorized one by one)."""
    segs = req.segments
    method = "GET" if req.method == "HEAD" else req.method
    n = len(segs)
    if n == 0:
        return None if method == "POST" else (None, "s")
    head = segs[0]
    if head == "metadata" and n == 1:
        return None
    if head in ("_search", "_history") and n == 1:
        return (None, "s")
    rtype = head
    if n == 1:
        return (rtype, "s") if method == "GET" else (rtype, _WRITE.get(method, "s"))
    if n == 2:
        if segs[1] in ("_history", "_search"):
            return (rtype, "s")
        return (rtype, "r" if method == "GET" else _WRITE.get(method, "r"))
    if n >= 3 and segs[2] == "_history":
        return (rtype, "r")
    if n == 3 and segs[2] == "$everything":
        return (rtype, READ_LIKE)
    if n == 3:  # compartment search: [base]/Patient/123/Observation
        return (segs[2], "s")
    return (rtype, "r")


def authorize(svc: Services, req: FhirRequest) -> Services:
    """The services this request may use: its store held to the grant of ``svc.grant``."""
    grant = svc.grant
    if not isinstance(grant, Grant):
        return svc
    need = needed(req)
    if need is None:
        return svc
    rtype, actions = need
    if rtype is not None and not is_resource_type(rtype):
        return svc  # routing answers 404 for it without touching the store
    if not grant.allows_any(rtype, actions):
        what = rtype or "any resource type"
        raise forbidden(f"the access token's scopes do not grant {'/'.join(actions)} on {what}")
    inner = svc.store.inner if isinstance(svc.store, GuardedStore) else svc.store
    return replace(svc, store=GuardedStore(inner, grant, actions))
