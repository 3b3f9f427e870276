"""Collections, document layouts and indexes of the MongoDB store.

``current`` — one document per resource, ``_id`` = ``"<type>/<id>"``:
    ``t`` type, ``i`` id, ``v`` version id, ``d`` deleted, ``s`` seq of this version, ``lu`` lastUpdated, ``m``
    method, ``b`` the canonical JSON as bytes (a read returns the stored bytes as they are: no re-serialising, so
    ``72.50`` stays ``72.50``), ``k`` the store key (the ``seq`` of the version that created the resource: unique,
    stable across updates and deletes, ordered by creation; keyset paging ends on it and ``_include`` passes it
    around). The search index is embedded: one array per value family (``string``, ``token``, ``reference``,
    ``date``, ``number``, ``quantity``, ``uri``, ``composite``) of subdocuments ``{p: <parameter code>, <the
    family's fields, named as in search.values>}`` (a composite's components are ``p0``, ``p1``… each tagged with
    its family in ``f``); ``so`` holds per parameter its smallest (``a``) and largest (``d``) sort value, the
    scalar an ascending or descending ``_sort`` orders by; ``tn``/``tc`` the normalised narrative and content for
    ``_text``/``_content``. Deleted resources keep their document (``d: true``, no index) so the version sequence
    continues.
``versions`` — every version, ``_id`` = ``"<type>/<id>/<vid>"``: the key is unique by construction, so two writers
    can never both store version *n* of a resource. ``s`` is the global sequence number (history order, cursors,
    outbox positions); ``p``/``w`` name the transaction and writer while the version is not yet published.
``commits`` — the transaction log, which is also the outbox: one document per committed batch
    (``_id`` = transaction id, ``st: "c"``, ``o`` = its outbox ticket, ``ev`` = its events), or an abort marker
    (``st: "a"``). See :mod:`.commit` and :mod:`.outbox`. ``tickets`` — the outbox tickets (``_id`` = the ticket
    number, ``f`` = its writer while in flight; :mod:`.outbox`). ``claims`` — criteria claims of conditional matches
    in progress (:mod:`.claims`).
``consumers`` — outbox positions (``_id`` = consumer name, ``pos``). ``writers`` — one document per running store
    process (liveness, for recovery). ``meta`` — the schema version and layout, and the writer slots (``_id`` =
    ``"slot:<n>"``, ``w`` = the writer holding it: :class:`.store.MongoStore`).

Every allocation that must have one winner across processes — a writer slot, an outbox ticket, a claim, a commit
record or abort marker — is an insert of a unique ``_id``, never a filtered update (``$inc``, compare-and-set,
upsert): FerretDB 1.24 does not make a filtered update atomic across connections, so several callers would win.

Two layouts of the search index, chosen when the database is created and recorded in ``meta``:

* ``fields`` (servers with ``$elemMatch`` over subdocument fields: MongoDB): as above, queried and indexed in place.
* ``packed`` (servers without it: FerretDB 1.x refuses field conditions in ``$elemMatch``): the same index
  subdocument (family arrays, ``so``, ``tn``, ``tc``) BSON-encoded into one binary field ``x``. Such a server cannot
  pin conditions to one value, so a filter on the fields would only be a superset to check in Python anyway; and
  FerretDB decodes every field of every document it scans (it evaluates filters in Go, pushing down only ``_id``
  equality), at a cost per field: an opaque ``x`` makes its scans about three times faster. Searches on this
  layout select by type in the server and decide in Python (see :mod:`.render`).

Why string ``_id`` keys everywhere a point lookup happens: FerretDB's SQLite backend pushes exactly one kind of
filter down to SQLite, equality on a string ``_id``; everything else is evaluated in Go over every document.
Why the body lives in ``current`` as well as in ``versions``: a read is then one lookup, and a search page needs no
second query for its bodies.
"""

from __future__ import annotations

import logging
from typing import Any

import bson
from bson import Binary
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, OperationFailure

from fhir_server.search.tree import Param
from fhir_server.search.values import (
    CompositeV,
    DateV,
    NumberV,
    QuantityV,
    ReferenceV,
    StringV,
    TokenV,
    UriV,
    Value,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3  # 2: commit records ordered by outbox ticket ``o``; 3: tickets and writer slots are inserted
# documents (``tickets``, ``meta`` ``slot:N``), not counters updated in place

FAMILY_FIELDS: dict[str, tuple[str, ...]] = {
    "string": ("norm", "exact"),
    "token": ("system", "code", "text"),
    "reference": ("target_type", "target_id", "url", "ident_system", "ident_value"),
    "date": ("lo", "hi"),
    "number": ("value", "lo", "hi"),
    "quantity": ("value", "lo", "hi", "system", "code", "unit", "canon_value", "canon_lo", "canon_hi", "canon_code"),
    "uri": ("uri",),
}
FAMILIES = (*FAMILY_FIELDS, "composite")
_CLASS_OF: dict[str, type] = {
    "string": StringV, "token": TokenV, "reference": ReferenceV, "date": DateV, "number": NumberV,
    "quantity": QuantityV, "uri": UriV, "composite": CompositeV,
}
_FAMILY_OF_CLASS: dict[type, str] = {cls: family for family, cls in _CLASS_OF.items()}

# the column a _sort orders by, per family (as the SQLite store: its smallest value ascending, largest descending)
SORT_FIELD = {"string": "norm", "token": "code", "reference": "target_id", "date": "lo", "number": "value",
              "quantity": "value", "uri": "uri"}
NUMERIC_FAMILIES = frozenset({"date", "number", "quantity"})


def family_of(param: Param) -> str:
    """The value family a parameter's values are stored under (``_lastUpdated`` is a date whatever it is bound as)."""
    return "date" if param.code == "_lastUpdated" else param.type


def family_of_value(value: Value) -> str:
    return _FAMILY_OF_CLASS[type(value)]


def field_key(code: str) -> str:
    """A parameter code as a field name: MongoDB gives ``.`` and a leading ``$`` meaning (no R4 code has them)."""
    return code.replace(".", "\uff0e").replace("$", "\uff04")


# ---- index values ⇄ subdocuments -----------------------------------------------------------------------------------


def encode_value(value: Value) -> dict[str, Any]:
    """The family's fields of one value; ``None`` fields are left out (``{f: null}`` and ``$elemMatch: {f: null}``
    match a missing field as they match a null one, and ``$type`` matches neither, so nothing changes but size)."""
    if isinstance(value, CompositeV):
        return {f"p{n}": {"f": family_of_value(part), **encode_value(part)} for n, part in enumerate(value.parts)}
    out = {}
    for name in FAMILY_FIELDS[family_of_value(value)]:
        field = getattr(value, name)
        if field is not None:
            out[name] = field
    return out


def decode_value(family: str, sub: dict[str, Any]) -> Value:
    if family == "composite":
        parts = []
        n = 0
        while (part := sub.get(f"p{n}")) is not None:
            parts.append(decode_value(part["f"], part))
            n += 1
        return CompositeV(tuple(parts))
    return _CLASS_OF[family](*(sub.get(name) for name in FAMILY_FIELDS[family]))  # type: ignore[no-any-return]


def index_of(doc: dict[str, Any]) -> dict[str, Any]:
    """The search index part of a ``current`` document, whichever the layout (unpacked once per document)."""
    packed = doc.get("x")
    if packed is None:
        return doc
    unpacked = doc.get("_x")
    if unpacked is None:
        unpacked = doc["_x"] = bson.decode(bytes(packed))
    return unpacked


def decode_values(doc: dict[str, Any], codes: frozenset[str] | None = None) -> dict[str, list[Value]]:
    """The index values of a ``current`` document per parameter code (the matcher's view of a resource); only
    ``codes`` when given (a check needs the parameters its tree names, not the ~40 a resource has)."""
    index = index_of(doc)
    out: dict[str, list[Value]] = {}
    for family in FAMILIES:
        for sub in index.get(family) or ():
            if codes is None or sub["p"] in codes:
                out.setdefault(sub["p"], []).append(decode_value(family, sub))
    return out


def index_fields(values: list[tuple[str, Value]], narrative: str, content: str) -> dict[str, Any]:
    """The search part of a ``current`` document: family arrays, sort keys and text."""
    arrays: dict[str, list[dict[str, Any]]] = {}
    sort: dict[str, dict[str, Any]] = {}
    for code, value in values:
        family = family_of_value(value)
        arrays.setdefault(family, []).append({"p": code, **encode_value(value)})
        column = SORT_FIELD.get(family)
        if column is None:
            continue
        scalar = getattr(value, column)
        if scalar is None:  # like SQL's MIN/MAX, which skip NULLs
            continue
        key = field_key(code)
        bounds = sort.get(key)
        if bounds is None:
            sort[key] = {"a": scalar, "d": scalar}
        else:
            bounds["a"] = min(bounds["a"], scalar)
            bounds["d"] = max(bounds["d"], scalar)
    out: dict[str, Any] = dict(arrays)
    if sort:
        out["so"] = sort
    if narrative:
        out["tn"] = narrative
    if content:
        out["tc"] = content
    return out


FIELDS, PACKED = "fields", "packed"


def current_doc(rtype: str, rid: str, vid: int, *, deleted: bool, key: int, seq: int, last_updated: str, method: str,
                body: bytes, index: dict[str, Any], layout: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"_id": f"{rtype}/{rid}", "t": rtype, "i": rid, "v": vid, "d": deleted, "k": key, "s": seq,
                           "lu": last_updated, "m": method, "b": body}
    if not deleted and index:
        if layout == PACKED:
            doc["x"] = Binary(bson.encode(index))
        else:
            doc.update(index)
    return doc


def version_doc(rtype: str, rid: str, vid: int, *, deleted: bool, seq: int, last_updated: str, method: str,
                body: bytes) -> dict[str, Any]:
    return {"_id": f"{rtype}/{rid}/{vid}", "t": rtype, "i": rid, "v": vid, "d": deleted, "s": seq, "lu": last_updated,
            "m": method, "b": body}


# ---- collections and indexes ----------------------------------------------------------------------------------------


def _family_indexes() -> list[IndexModel]:
    """Multikey indexes on the family arrays: parameter code first, then the field most queries pin."""
    specs: dict[str, list[tuple[str, ...]]] = {
        "token": [("token.p", "token.code", "token.system")],
        "string": [("string.p", "string.norm")],
        "reference": [("reference.p", "reference.target_id", "reference.target_type"),
                      ("reference.target_id", "reference.target_type"), ("reference.p", "reference.url")],
        "date": [("date.p", "date.lo"), ("date.p", "date.hi")],
        "number": [("number.p", "number.value")],
        "quantity": [("quantity.p", "quantity.code", "quantity.value"),
                     ("quantity.p", "quantity.canon_code", "quantity.canon_value")],
        "uri": [("uri.p", "uri.uri")],
        "composite": [("composite.p",)],
    }
    out = []
    for family, indexes in specs.items():
        for fields in indexes:
            out.append(IndexModel([(f, ASCENDING) for f in fields], name=f"ix_{'_'.join(fields)}".replace(".", "_")))
    return out


INDEXES: dict[str, list[IndexModel]] = {
    "current": [
        IndexModel([("t", ASCENDING), ("d", ASCENDING), ("k", ASCENDING)], name="type_key"),
        IndexModel([("k", ASCENDING)], name="key", unique=True),
        *_family_indexes(),
    ],
    "versions": [
        IndexModel([("s", DESCENDING)], name="seq", unique=True),
        IndexModel([("t", ASCENDING), ("s", DESCENDING)], name="type_seq"),
        IndexModel([("t", ASCENDING), ("i", ASCENDING), ("s", DESCENDING)], name="resource_seq"),
        IndexModel([("lu", ASCENDING)], name="last_updated"),
        IndexModel([("p", ASCENDING)], name="pending", sparse=True),
    ],
    "commits": [IndexModel([("o", ASCENDING)], name="outbox_ticket", sparse=True)],
    "tickets": [IndexModel([("f", ASCENDING)], name="in_flight", sparse=True)],
}


async def ensure(db: AsyncDatabase[dict[str, Any]]) -> str:
    """Check the schema version, create the indexes (idempotent) and return the index layout of the database: the
    recorded one, or for a new database the one the server supports (recorded now, so it never changes under data)."""
    meta = db["meta"]
    found = await meta.find_one({"_id": "schema"})
    if found is not None and found.get("version") != SCHEMA_VERSION:
        raise RuntimeError(f"the database was written with MongoDB store schema {found.get('version')}; this Aegis "
                           f"uses {SCHEMA_VERSION}. Load the data into a fresh database.")
    elem_match = await supports_elem_match(db)
    if found is None:
        # an insert, not an upsert: on FerretDB 1.24 processes upserting one new _id at once fail with duplicate
        # keys; of inserts exactly one wins, and the others read the winner's document
        try:
            await meta.insert_one({"_id": "schema", "version": SCHEMA_VERSION,
                                   "layout": FIELDS if elem_match else PACKED})
        except DuplicateKeyError:
            pass
        found = await meta.find_one({"_id": "schema"})
        assert found is not None
        if found.get("version") != SCHEMA_VERSION:
            raise RuntimeError(f"the database was written with MongoDB store schema {found.get('version')}; this "
                               f"Aegis uses {SCHEMA_VERSION}. Load the data into a fresh database.")
    layout = str(found.get("layout", FIELDS))
    if layout == FIELDS and not elem_match:
        raise RuntimeError("this database keeps its search index in fields queried with $elemMatch, which this "
                           "server does not support; serve it from MongoDB")
    for collection, models in INDEXES.items():
        if collection == "current" and layout == PACKED:
            models = models[:2]  # the packed index is opaque: nothing in it to index
        existing = {ix["name"] async for ix in await db[collection].list_indexes()}
        for model in models:
            # one per command, and only missing ones: FerretDB 1.24 drops the connection (a panic) when one
            # createIndexes command names several indexes that all exist already
            if model.document["name"] not in existing:
                await db[collection].create_indexes([model])
    return layout


async def supports_elem_match(db: AsyncDatabase[dict[str, Any]]) -> bool:
    """Whether the server evaluates ``$elemMatch`` over subdocument fields, on one element (MongoDB does; FerretDB
    1.x refuses field conditions in ``$elemMatch``). Without it, search filters are supersets checked in Python."""
    meta = db["meta"]
    try:  # (every process writes the same document; an upsert racing another's may fail on FerretDB 1.24)
        await meta.insert_one({"_id": "probe", "a": [{"x": 1, "y": 2}, {"x": 3, "y": 4}]})
    except DuplicateKeyError:
        pass
    try:
        hit = await meta.find_one({"_id": "probe", "a": {"$elemMatch": {"x": 1, "y": 2}}})
        miss = await meta.find_one({"_id": "probe", "a": {"$elemMatch": {"x": 1, "y": 4}}})
    except OperationFailure as exc:
        log.info("the server cannot $elemMatch on fields (%s): search filters are checked in Python", exc)
        return False
    return hit is not None and miss is None
