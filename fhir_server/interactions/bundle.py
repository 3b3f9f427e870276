"""batch and transaction (POST [base] with a Bundle).

Entries are processed in the order the spec gives (DELETE, POST, PUT, PATCH, then GET/HEAD) and answered in request
order. Each entry goes through the same interaction code as a single request; for a transaction that code runs
against a view of one open write unit (:class:`TxStore`), so any failing entry rolls back every entry. Once the
DELETEs are done, create ids are assigned before any other entry is processed, so ``urn:uuid:`` fullUrls and
references can be rewritten; conditional references (``Patient?identifier=…``) are resolved inside the unit. Reads
(GET entries) run after the commit. In a batch, an entry whose resource is invalid fails alone (:func:`bundle_body`).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import orjson

from fhir_server.http.media import body_media_type
from fhir_server.http.request import FhirRequest, FhirResponse
from fhir_server.interactions.bundling import status_line
from fhir_server.interactions.common import Services, criteria_from_string, resource_body
from fhir_server.search.tree import Node, Param
from fhir_server.storage.base import HistoryQuery, OutboxEvent, Page, SearchPage, SearchQuery, Store, Version, WriteTx
from resources import jsonio
from resources.ids import new_id
from resources.outcome import FhirError, InvalidInput, Issue, PreconditionFailed
from resources.validate import validate_resource

if TYPE_CHECKING:
    from fhir_server.prepare.transaction import PreparedTransaction

T = TypeVar("T")
Dispatch = Callable[[Services, FhirRequest], Awaitable[FhirResponse]]

ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 3, "GET": 4, "HEAD": 4}
_CONDITIONAL_REF = re.compile(r"[A-Z][A-Za-z]+\?.+")
_ENTRY_RESOURCE = re.compile(r"Bundle\.entry\[\d+\]\.resource(?:[.\[].*)?")


class TxStore(Store):
    """A :class:`Store` whose reads and writes all go to one open write unit."""

    def __init__(self, tx: WriteTx) -> None:
        self._tx = tx

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def read(self, rtype: str, rid: str) -> Version | None:
        return await self._tx.read(rtype, rid)

    async def vread(self, rtype: str, rid: str, vid: int) -> Version | None:
        return await self._tx.vread(rtype, rid, vid)

    async def history(self, query: HistoryQuery) -> Page:
        return await self._tx.history(query)

    async def search(self, query: SearchQuery) -> SearchPage:
        return await self._tx.search(query)

    async def count(self, rtype: str | None, tree: Node) -> int:
        return await self._tx.count(rtype, tree)

    async def referenced(
        self, keys: list[int], params: list[Param], target_type: str | None
    ) -> tuple[list[int], list[Version]]:
        return await self._tx.referenced(keys, params, target_type)

    async def referencing(self, targets: list[tuple[str, str]], params: list[Param]) -> tuple[list[int], list[Version]]:
        return await self._tx.referencing(targets, params)

    async def transact(self, unit: Callable[[WriteTx], Awaitable[T]]) -> T:
        return await unit(self._tx)

    async def outbox_read(self, consumer: str, limit: int = 100) -> list[OutboxEvent]:
        raise NotImplementedError

    async def outbox_ack(self, consumer: str, seq: int) -> None:
        raise NotImplementedError


@dataclass(slots=True)
class Entry:
    index: int
    method: str
    path: str  # relative to the base, without query
    query: str
    resource: dict[str, Any] | None
    full_url: str | None
    headers: dict[str, str] = field(default_factory=dict)
    assigned_id: str | None = None
    body: bytes = b""  # a JSON Patch document, unwrapped from its Binary
    prepared: object | None = None  # the store's index data of ``resource``, computed ahead (fhir_server.prepare)

    @property
    def rtype(self) -> str:
        return self.path.split("/", 1)[0]

    def request(self, outer: FhirRequest) -> FhirRequest:
        headers = dict(self.headers)
        if "prefer" in outer.headers:
            headers["prefer"] = outer.headers["prefer"]
        return FhirRequest(
            method=self.method,
            segments=[s for s in self.path.split("/") if s],
            query=parse_qsl(self.query, keep_blank_values=True),
            headers=headers,
            body=self.body,
            base=outer.base,
            query_string=self.query,
            assigned_id=self.assigned_id,
            resource=self.resource,
            prepared=self.prepared,
        )


def entries_of(bundle: dict[str, Any], base: str) -> list[Entry]:
    out: list[Entry] = []
    for i, raw in enumerate(bundle.get("entry") or []):
        where = f"Bundle.entry[{i}]"
        request = raw.get("request")
        if not isinstance(request, dict) or "method" not in request or "url" not in request:
            raise InvalidInput("every entry of a batch or transaction needs request.method and request.url",
                               expression=f"{where}.request", message_id="AEGIS-250")
        method = request["method"]
        if method not in ORDER:
            raise InvalidInput(f"request.method {method!r} is not supported", expression=f"{where}.request.method",
                               message_id="AEGIS-251")
        url = request["url"]
        if url.startswith(base + "/"):
            url = url[len(base) + 1:]
        elif "://" in url:
            raise InvalidInput(f"request.url {url!r} is not on this server", expression=f"{where}.request.url",
                               message_id="AEGIS-252")
        parts = urlsplit(url.lstrip("/"))
        resource = raw.get("resource")
        if method in ("POST", "PUT") and not isinstance(resource, dict):
            raise InvalidInput(f"a {method} entry needs a resource", expression=f"{where}.resource",
                               message_id="AEGIS-253")
        headers = {}
        for key, header in (("ifMatch", "if-match"), ("ifNoneMatch", "if-none-match"),
                            ("ifNoneExist", "if-none-exist"), ("ifModifiedSince", "if-modified-since")):
            if key in request:
                headers[header] = str(request[key])
        if method == "PATCH" and isinstance(resource, dict):
            headers["content-type"] = "application/fhir+json"
        elif method == "PATCH" and raw.get("resource") is None:
            raise InvalidInput("a PATCH entry needs a Parameters resource (FHIRPath Patch) or a Binary with a JSON "
                               "Patch", expression=f"{where}.resource", message_id="AEGIS-254")
        out.append(Entry(i, method, parts.path, parts.query, resource, raw.get("fullUrl"), headers))
    return out


def _patch_entry_body(entry: Entry) -> None:
    """A JSON Patch travels in a transaction as a Binary; unwrap it into the sub-request's body."""
    res = entry.resource
    if res is not None and res.get("resourceType") == "Binary":
        try:
            body = base64.b64decode(res.get("data", ""), validate=True)
        except ValueError:
            raise InvalidInput("the Binary's data is not valid base64",
                               expression=f"Bundle.entry[{entry.index}].resource.data",
                               message_id="AEGIS-258") from None
        entry.headers["content-type"] = res.get("contentType", "application/json-patch+json")
        entry.resource = None
        entry.body = body


def _rewrite(node: Any, mapping: dict[str, str], found: set[str], sites: list[tuple[dict[str, Any], str]]) -> Any:
    """``node`` with its references to entries of the Bundle (``mapping``) rewritten, made in the same walk that
    collects the conditional references (``Patient?identifier=…``) into ``found`` and, for those ``mapping`` does not
    rewrite, where they are (``sites``: a copied dict and its key) to fill in once resolved (:func:`_fill_conditional`).

    One walk instead of two, and copy-on-write: only the dicts and lists on the way to a changed reference are copied,
    the rest is shared with the input (which is never modified). Copying every node of every resource of a large
    Bundle cost as much again as the walk, in allocations and in the garbage collector's work."""
    if node.__class__ is dict:
        return _rewrite_dict(node, mapping, found, sites)
    if node.__class__ is list:
        return _rewrite_list(node, mapping, found, sites)
    if isinstance(node, dict):
        return _rewrite_dict(node, mapping, found, sites)
    if isinstance(node, list):
        return _rewrite_list(node, mapping, found, sites)
    return node


def _rewrite_dict(node: dict[str, Any], mapping: dict[str, str], found: set[str],
                  sites: list[tuple[dict[str, Any], str]]) -> dict[str, Any]:
    out: dict[str, Any] | None = None  # the copy, made at the first change
    new: Any
    for key, value in node.items():
        cls = value.__class__
        site = False
        if key == "reference" and isinstance(value, str):
            if "?" in value and _CONDITIONAL_REF.fullmatch(value):
                found.add(value)  # resolved even when mapping rewrites it: an unresolvable one fails the Bundle
                new = mapping.get(value) or value
                site = new is value  # filled in once resolved, so it changes too
            else:
                new = mapping.get(value) or value
                if new is value:
                    continue
        elif cls is dict:
            new = _rewrite_dict(value, mapping, found, sites)
            if new is value:
                continue
        elif cls is list:
            new = _rewrite_list(value, mapping, found, sites)
            if new is value:
                continue
        elif cls is str or cls is int or cls is bool or value is None:
            continue
        else:
            new = _rewrite(value, mapping, found, sites)
            if new is value:
                continue
        if out is None:
            out = dict(node)
        out[key] = new
        if site:
            sites.append((out, key))
    return node if out is None else out


def _rewrite_list(node: list[Any], mapping: dict[str, str], found: set[str],
                  sites: list[tuple[dict[str, Any], str]]) -> list[Any]:
    out: list[Any] | None = None
    new: Any
    for i, item in enumerate(node):
        cls = item.__class__
        if cls is dict:
            new = _rewrite_dict(item, mapping, found, sites)
        elif cls is list:
            new = _rewrite_list(item, mapping, found, sites)
        elif cls is str or cls is int or cls is bool or item is None:
            continue
        else:
            new = _rewrite(item, mapping, found, sites)
        if new is not item:
            if out is None:
                out = list(node)
            out[i] = new
    return node if out is None else out


def rewrite_references(entries: list[Entry]) -> tuple[set[str], list[tuple[dict[str, Any], str]]]:
    """Rewrite the references between the entries (``fullUrl`` → ``Type/assigned id``) in their resources; return
    the conditional references found and where those not rewritten are (see :func:`_rewrite`)."""
    mapping = {e.full_url: f"{e.rtype}/{e.assigned_id}" for e in entries
               if e.full_url and e.assigned_id and e.method in ("POST", "PUT")}
    found: set[str] = set()
    sites: list[tuple[dict[str, Any], str]] = []
    for e in entries:
        if e.resource is not None:
            e.resource = _rewrite(e.resource, mapping, found, sites)
    return found, sites


def _fill_conditional(sites: list[tuple[dict[str, Any], str]], conditional: dict[str, str]) -> None:
    for container, key in sites:
        container[key] = conditional.get(container[key]) or container[key]


def _in_entry(entry: Entry, error: FhirError) -> FhirError:
    """Re-point an entry's error at its place in the Bundle."""
    prefix = f"Bundle.entry[{entry.index}]"
    rtype = entry.resource.get("resourceType") if entry.resource else None
    rtype = rtype if isinstance(rtype, str) else None
    issues = []
    for issue in error.issues:
        exprs = tuple(
            f"{prefix}.resource{e[len(rtype):]}" if rtype and (e == rtype or e.startswith(rtype + ".")) else e
            for e in issue.expression
        ) or (prefix,)
        issues.append(Issue(issue.severity, issue.code,
                            f"{prefix} ({entry.method} {entry.path}): {issue.diagnostics}", exprs, issue.message_id))
    error.issues = issues
    return error


def _response_entry(resp: FhirResponse, req: FhirRequest) -> dict[str, Any]:
    response: dict[str, Any] = {"status": status_line(resp.status)}
    v = resp.version
    if v is not None:
        if resp.status in (200, 201) and v.method in ("POST", "PUT", "PATCH") and not v.deleted:
            response["location"] = f"{v.rtype}/{v.rid}/_history/{v.vid}"
        response["etag"] = v.etag
        response["lastModified"] = v.last_updated
    entry: dict[str, Any] = {}
    if v is not None and not v.deleted:
        entry["fullUrl"] = f"{req.base}/{v.rtype}/{v.rid}"
    if isinstance(resp.body, bytes):
        entry["resource"] = orjson.Fragment(resp.body)
    elif resp.body is not None:
        if resp.status >= 400:
            response["outcome"] = resp.body
        else:
            entry["resource"] = resp.body
    entry["response"] = response
    return entry


def _error_entry(error: FhirError) -> dict[str, Any]:
    return {"response": {"status": status_line(error.status), "outcome": error.outcome()}}


async def _run(dispatch: Dispatch, svc: Services, entry: Entry, outer: FhirRequest) -> FhirResponse:
    return await dispatch(svc, entry.request(outer))


def bundle_body(req: FhirRequest) -> tuple[dict[str, Any], dict[int, InvalidInput]]:
    """The request's Bundle, validated, and the entries whose resource is invalid, by index.

    A transaction with an invalid entry resource fails as a whole. A batch's entries stand alone, so there each entry
    resource is validated on its own and an invalid one fails only its entry; the Bundle itself must still be valid.
    """
    try:
        return resource_body(req, "Bundle"), {}
    except InvalidInput as exc:
        if not all(i.expression and all(_ENTRY_RESOURCE.fullmatch(e) for e in i.expression) for i in exc.issues):
            raise
        raw = _unvalidated(req)
        entries = raw.get("entry") if raw is not None else None
        if raw is None or raw.get("resourceType") != "Bundle" or raw.get("type") != "batch" \
                or not isinstance(entries, list) \
                or not all(isinstance(e, dict) and isinstance(e.get("resource", {}), dict) for e in entries):
            raise  # only an entry that holds a resource object can fail on its own
    invalid: dict[int, InvalidInput] = {}
    for i, entry in enumerate(entries):
        if "resource" in entry:
            try:
                validate_resource(entry["resource"])
            except InvalidInput as bad:
                invalid[i] = bad
    validate_resource({**raw, "entry": [{k: v for k, v in e.items() if k != "resource"} for e in entries]})
    return raw, invalid


def _unvalidated(req: FhirRequest) -> dict[str, Any] | None:
    """The body parsed without validation, or None when it does not even parse."""
    try:
        if body_media_type(req.header("content-type")) == "xml":
            from resources.xml import xml_to_resource

            parsed: Any = xml_to_resource(req.body)
        else:
            parsed = jsonio.loads(req.body)
    except (ValueError, FhirError):
        return None
    return parsed if isinstance(parsed, dict) else None


async def batch_or_transaction(
    svc: Services, req: FhirRequest, bundle: dict[str, Any], invalid: dict[int, InvalidInput] | None = None,
    prepared: PreparedTransaction | None = None,
) -> FhirResponse:
    """``invalid``: batch entries whose resource failed validation (see :func:`bundle_body`); each answers 400.
    ``prepared``: the transaction as a prepare process left it (:mod:`fhir_server.prepare.transaction`): ``bundle``
    is its Bundle, ids assigned and references rewritten, and each write carries its prepared index data."""
    from fhir_server.routing import dispatch

    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise InvalidInput(f"POST to the base takes a batch or transaction Bundle, not type {kind!r}",
                           expression="Bundle.type", message_id="AEGIS-255")
    entries = entries_of(bundle, req.base)
    invalid = dict(invalid or {})
    for e in entries:
        if e.method == "PATCH":
            try:
                _patch_entry_body(e)
            except InvalidInput as exc:
                if kind != "batch":
                    raise _in_entry(e, exc) from None
                invalid[e.index] = exc
    ordered = sorted(entries, key=lambda e: (ORDER[e.method], e.index))
    results: dict[int, dict[str, Any]] = {}
    if kind == "batch":
        for e in ordered:
            if e.index in invalid:
                results[e.index] = _error_entry(_in_entry(e, invalid[e.index]))
                continue
            try:
                results[e.index] = _response_entry(await _run(dispatch, svc, e, req), req)
            except FhirError as exc:
                results[e.index] = _error_entry(_in_entry(e, exc))
    else:
        writes = [e for e in ordered if ORDER[e.method] < 4]
        _check_distinct(writes)

        async def unit(tx: WriteTx) -> dict[int, dict[str, Any]]:
            tx_svc = Services(TxStore(tx), svc.settings, svc.grant)
            done: dict[int, dict[str, Any]] = {}

            async def process(e: Entry) -> None:
                try:
                    done[e.index] = _response_entry(await _run(dispatch, tx_svc, e, req), req)
                except FhirError as exc:
                    raise _in_entry(e, exc) from None

            # DELETEs come first and carry no resource to rewrite; the ids and references of the other entries are
            # resolved after them, so a conditional create or reference sees the state the deletions left
            deletes = [e for e in writes if e.method == "DELETE"]
            others = [e for e in writes if e.method != "DELETE"]
            for e in deletes:
                await process(e)
            if prepared is not None:  # nothing conditional: ids and references were settled ahead
                for e in others:
                    e.assigned_id = prepared.ids.get(e.index)
                    e.prepared = prepared.index.get(e.index)
            else:
                # conditional creates/updates and references resolve by search: held to the token's grant like one
                resolver = tx if svc.grant is None else _guarded(tx, svc.grant)
                await _resolve_ids(resolver, others)
                found, sites = rewrite_references(others)
                _fill_conditional(sites, await _resolve_conditional_refs(resolver, found))
            for e in others:
                await process(e)
            return done

        results = await svc.store.transact(unit)
        for e in ordered:
            if ORDER[e.method] == 4:
                try:
                    results[e.index] = _response_entry(await _run(dispatch, svc, e, req), req)
                except FhirError as exc:
                    raise _in_entry(e, exc) from None
    response = {
        "resourceType": "Bundle",
        "type": f"{kind}-response",
        "entry": [results[e.index] for e in entries],
    }
    return FhirResponse(200, response)


def _guarded(tx: WriteTx, grant: object) -> WriteTx:
    from fhir_server.authz.guard import GuardedStore

    return GuardedStore(tx, grant, "s")  # type: ignore[arg-type]


def _check_distinct(writes: list[Entry]) -> None:
    seen: dict[str, int] = {}
    for e in writes:
        if e.method == "POST" or e.query:
            continue
        if e.path in seen:
            raise InvalidInput(f"Bundle.entry[{e.index}] changes {e.path}, which entry {seen[e.path]} changes too",
                               expression=f"Bundle.entry[{e.index}]", message_id="AEGIS-256")
        seen[e.path] = e.index


async def _resolve_ids(tx: WriteTx, writes: list[Entry]) -> None:
    """Give each create its id up front, so references to it can be rewritten before any entry is processed."""
    for e in writes:
        if e.method == "POST":
            e.assigned_id = new_id()
            ine = e.headers.get("if-none-exist")
            if ine:
                page = await tx.find(e.rtype, await criteria_from_string(TxStore(tx), e.rtype, ine, "ifNoneExist"), limit=2)
                if len(page.versions) == 1:
                    e.assigned_id = page.versions[0].rid
        elif e.method == "PUT":
            if e.query:
                page = await tx.find(e.rtype, await criteria_from_string(TxStore(tx), e.rtype, e.query, "request.url"), limit=2)
                if len(page.versions) > 1:
                    raise _in_entry(e, PreconditionFailed("the criteria match more than one resource",
                                                          message_id="AEGIS-223"))
                body_id = e.resource.get("id") if e.resource else None
                e.assigned_id = page.versions[0].rid if page.versions else body_id or new_id()
                e.path, e.query = f"{e.rtype}/{e.assigned_id}", ""
                if e.resource is not None:
                    e.resource = {**e.resource, "id": e.assigned_id}
            else:
                e.assigned_id = e.path.split("/")[1] if "/" in e.path else None


async def _resolve_conditional_refs(tx: WriteTx, found: set[str]) -> dict[str, str]:
    """``found``: the conditional references of the Bundle's resources (collected by :func:`_rewrite`)."""
    resolved: dict[str, str] = {}
    for ref in sorted(found):
        rtype, _, query = ref.partition("?")
        page = await tx.find(rtype, await criteria_from_string(TxStore(tx), rtype, query, "reference"), limit=2)
        if len(page.versions) != 1:
            raise PreconditionFailed(
                f"the conditional reference {ref!r} matches {len(page.versions)}"
                f"{' or more' if page.next_cursor else ''} resources; it must match exactly one",
                message_id="AEGIS-257",
            )
        resolved[ref] = f"{rtype}/{page.versions[0].rid}"
    return resolved
