"""``Patient/[id]/$everything``: the patient, every resource in the patient's compartment, and what they refer to.

Parameters: ``_since`` (only resources updated since), ``_type`` (only these types), ``_count`` and paging. The
compartment comes from the official CompartmentDefinition; its members are found through the reference index in one
query, and paged by a keyset cursor over the store's resource keys (stable while writes happen). Each page also
carries, as ``search.mode = include`` entries, the resources its members refer to that are not compartment members
themselves (practitioners, organizations, medications, locations …), as the operation's definition asks; with
``_type``, only referenced resources of those types.
"""

from __future__ import annotations

from typing import Any

from fhir_server.http.request import FhirRequest, FhirResponse
from fhir_server.interactions.bundling import embedded, link, parse_count, parse_cursor
from fhir_server.interactions.common import Services, live
from fhir_server.search.compartments import members
from fhir_server.search.dates import parse_range
from fhir_server.search.execute import reference_params
from fhir_server.search.tree import IdIn, Param
from fhir_server.storage.base import SearchQuery
from resources.model import is_resource_type
from resources.outcome import InvalidInput

KNOWN = frozenset({"_since", "_type", "_count", "_cursor", "_format", "_pretty", "start", "end"})


async def everything(svc: Services, req: FhirRequest, pid: str) -> FhirResponse:
    for key, _ in req.query:
        if key not in KNOWN:
            raise InvalidInput(f"$everything does not support the parameter {key!r}", expression=key,
                               message_id="AEGIS-360")
    patient = live(await svc.store.read("Patient", pid), "Patient", pid)
    since = None
    if req.param("_since") is not None:
        rng = parse_range(req.param("_since") or "")
        if rng is None:
            raise InvalidInput("_since must be an instant", expression="_since", message_id="AEGIS-361")
        since = rng[0]
    types: set[str] | None = None
    if req.param("_type"):
        types = {t.strip() for t in (req.param("_type") or "").split(",") if t.strip()}
        bad = [t for t in types if not is_resource_type(t)]
        if bad:
            raise InvalidInput(f"_type: {', '.join(bad)} are not resource types", expression="_type",
                               message_id="AEGIS-362")
    count = parse_count(req, svc.settings.page_size, svc.settings.max_page_size)
    cursor = parse_cursor(req)
    after_key = int(cursor[0]) if cursor and isinstance(cursor[0], int) else -1

    params = [Param(rtype, code, "reference") for rtype, codes in members("Patient").items()
              if types is None or rtype in types for code in codes]
    keys, versions = await svc.store.referencing([("Patient", pid)], params)
    rows = sorted(zip(keys, versions), key=lambda kv: kv[0])
    # the Patient comes first, on the first page
    items: list[tuple[int, Any]] = []
    if after_key < 0 and (types is None or "Patient" in types) and (since is None or patient.last_updated >= since):
        items.append((-1, patient))
    items += [(k, v) for k, v in rows if k > after_key and (since is None or v.last_updated >= since)
              and (v.rtype, v.rid) != ("Patient", pid)]
    page, more = items[:count], len(items) > count
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": [link(req, "self", cursor)] + ([link(req, "next", (page[-1][0],))] if more else []),
    }
    included = await _referenced(svc, page, {(v.rtype, v.rid) for _, v in items} | {("Patient", pid)}, types)
    entries = [{"fullUrl": f"{req.base}/{v.rtype}/{v.rid}", "resource": embedded(v), "search": {"mode": "match"}}
               for _, v in page]
    entries += [{"fullUrl": f"{req.base}/{v.rtype}/{v.rid}", "resource": embedded(v), "search": {"mode": "include"}}
                for v in included]
    if entries:  # no empty arrays in FHIR: nothing found, no entry element
        bundle["entry"] = entries
    if cursor is None and not more:
        bundle["total"] = len(page)
    return FhirResponse(200, bundle)


async def _referenced(svc: Services, page: list[tuple[int, Any]], members_seen: set[tuple[str, str]],
                      types: set[str] | None) -> list[Any]:
    """The resources the page's members refer to, other than compartment members (which have entries of their own
    on some page) and each once."""
    by_type: dict[str, list[int]] = {}
    for key, version in page:
        if key < 0:  # the Patient itself, listed without its store key: look the key up
            found = await svc.store.search(SearchQuery("Patient", IdIn((version.rid,)), count=1))
            key = found.keys[0] if found.keys else -1
        if key >= 0:
            by_type.setdefault(version.rtype, []).append(key)
    out: list[Any] = []
    seen = set(members_seen)
    for rtype, keys in sorted(by_type.items()):
        params = reference_params(rtype, "*")
        if not params:
            continue
        _, versions = await svc.store.referenced(keys, params, None)
        for version in versions:
            if (version.rtype, version.rid) not in seen and (types is None or version.rtype in types):
                seen.add((version.rtype, version.rid))
                out.append(version)
    return out
