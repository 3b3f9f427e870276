"""What a prepare process computes for a transaction Bundle before its write unit opens.

Everything a transaction does that needs no store: parse and validate the Bundle, give each create its id, rewrite
the references between entries, and extract each written resource's index (the store's ``index_preparer``). The
event loop then only runs the write unit (:func:`fhir_server.interactions.bundle.batch_or_transaction`).

Only a transaction whose ids and references do not depend on the store is prepared: one with a conditional create
(``ifNoneExist``), a conditional update, a PATCH or a conditional reference (``Patient?identifier=…``) is not, nor
is anything that fails here (an invalid Bundle): those take the ordinary path, which gives the same answers as ever.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from resources.ids import new_id
from resources.validate import parse_json_resource

IndexPreparer = Callable[[str, str, dict[str, Any]], object]


@dataclass(slots=True)
class PreparedTransaction:
    bundle: dict[str, Any]  # validated; entry resources with their Bundle references rewritten
    ids: dict[int, str]  # entry index → the id of the resource it writes (POST: assigned here; PUT: its URL's)
    index: dict[int, object]  # entry index → the store's index data of the resource as it will be written


def prepare_transaction(body: bytes, base: str, index_preparer: IndexPreparer | None) -> PreparedTransaction | None:
    """The prepared transaction, or None when this one must take the ordinary path (see the module's docstring)."""
    from fhir_server.interactions.bundle import entries_of, rewrite_references
    from resources.outcome import FhirError

    try:
        bundle = parse_json_resource(body)
        if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "transaction":
            return None
        entries = entries_of(bundle, base)
    except FhirError:
        return None  # the ordinary path reports it
    writes = [e for e in entries if e.method in ("POST", "PUT", "PATCH")]
    ids: dict[int, str] = {}
    for e in writes:
        if e.method == "PATCH" or e.query or "if-none-exist" in e.headers:
            return None
        if e.method == "POST":
            e.assigned_id = new_id()
            e.resource = {**e.resource, "id": e.assigned_id}  # type: ignore[dict-item]
        else:
            parts = e.path.split("/")
            if len(parts) != 2:
                return None
            e.assigned_id = parts[1]
        ids[e.index] = e.assigned_id
    found, _ = rewrite_references(writes)
    if found:
        return None
    index: dict[int, object] = {}
    raw_entries = bundle["entry"]
    for e in writes:
        assert e.resource is not None and e.assigned_id is not None
        raw_entries[e.index] = {**raw_entries[e.index], "resource": e.resource}
        if index_preparer is not None:
            index[e.index] = index_preparer(e.rtype, e.assigned_id, e.resource)
    return PreparedTransaction(bundle, ids, index)
