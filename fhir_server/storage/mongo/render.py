"""Rendering lowered search trees to MongoDB filters, and checking candidates in Python where a filter cannot be exact.

A ``Row`` becomes ``{"<family>": {"$elemMatch": {"p": <code>, <conditions>}}}`` (OR-ed alternatives inside the one
``$elemMatch`` as ``$or``): the conditions of one alternative hold on the same value, as the matcher requires.
Condition operators map to ``$eq``/``$lt``/… (MongoDB's type bracketing keeps numbers and strings apart, and a
comparison never matches a null, as in SQL); ``prefix`` and ``contains`` to an escaped regular expression on the
normalised text; ``is-null`` to equality with null (which also matches the null fields left out of storage);
``not-null`` to ``$type`` (not ``$ne: null``, which on arrays means "no element is null", and which FerretDB
evaluates differently).

On the ``packed`` layout (servers without ``$elemMatch`` over fields, i.e. FerretDB 1.x; see :mod:`.schema`) the
index is opaque to the server: value conditions render as "anything" and the plan is marked inexact, so the server
selects by type (and ids) and every candidate is checked in Python with the matcher's own
:func:`~fhir_server.search.matcher.cond_holds` — the answer is exactly the oracle's by construction. ``Not`` of an
inexact filter renders as "anything" too (the complement of a superset is a subset) and the check decides.

Chains and ``_has`` are not joins: :func:`resolve` first runs the inner query (ids of the matching targets or
sources), at most ``max_join`` of them, and substitutes :class:`RefIn` / :class:`KeyIn`. Beyond the bound the search
fails with a clear "too costly" outcome rather than building an unbounded ``$in``.

Sorting: per parameter, ``so.<code>.a`` (smallest value, for ascending) and ``so.<code>.d`` (largest, descending);
resources without a value sort last in either direction (as in the SQLite store), then by the store key ``k``. A
missing field sorts first in MongoDB, so the result is read in *partitions* — every combination of "has a value" /
"has none" per sort key, in order — each partition a plain sort that stops at the page size (MongoDB's top-k sort
over the filtered set; the sort values are not indexed: ~40 parameters per type would exceed MongoDB's 64 indexes).
On the packed layout the sort values are opaque too, and the page is sorted in Python. Cursors are
``(mask, values…, k)``, the mask saying which sort values the row lacked.

Checked against the oracle: on FerretDB by ``tests/search/test_oracle.py`` (packed layout: server-side type and id
selection, Python checks); the fields layout's ``$elemMatch`` filters and partitioned keyset paging were checked with
the same property test over mongomock (300 examples), since no MongoDB with ``$elemMatch`` can run here.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fhir_server.search.matcher import IndexedResource, cond_holds, param_values
from fhir_server.search.tree import (
    And,
    Chain,
    Cond,
    Has,
    IdIn,
    MatchAll,
    MatchNone,
    Missing,
    Node,
    Not,
    Or,
    Param,
    Row,
    TextSearch,
    TypeIn,
)
from fhir_server.search.resolved import KeyIn, RefIn, as_node
from fhir_server.search.values import ReferenceV
from fhir_server.storage.base import SortKey
from fhir_server.storage.mongo.schema import (
    FAMILY_FIELDS,
    NUMERIC_FAMILIES,
    PACKED,
    decode_values,
    family_of,
    field_key,
    index_of,
)
from resources.outcome import FhirError, InvalidInput

Filter = dict[str, Any]
MATCH_ALL: Filter = {}
MATCH_NONE: Filter = {"_id": {"$in": []}}
TEXT_MAX = "\U0010ffff"
_NOT_NULL = {"$type": ["string", "number", "bool"]}
_RANGE_OPS = {"<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte"}
_REGEX_SPECIAL = frozenset("\\.^$|?*+()[]{}")


class TooCostly(FhirError):
    """A chain or ``_has`` whose inner query matches more resources than the store resolves in one search."""

    status = 400
    issue_code = "too-costly"


# ---- resolving Chain and Has into id sets (fhir_server.search.resolved) -------------------------------------------


Collect = Callable[[str, Node, int], Awaitable[list[dict[str, Any]]]]


async def resolve(node: Node, rtype: str | None, collect: Collect, max_join: int) -> Node:
    """The tree with every ``Chain``/``Has`` replaced by the ids its inner query finds now.

    ``collect(type, resolved_inner, limit)`` returns the current documents of ``type`` matching ``resolved_inner``
    (at most ``limit``; only ``i`` and the ``reference`` array are needed)."""
    if isinstance(node, And):
        return And(tuple([await resolve(n, rtype, collect, max_join) for n in node.items]))
    if isinstance(node, Or):
        return Or(tuple([await resolve(n, rtype, collect, max_join) for n in node.items]))
    if isinstance(node, Not):
        return Not(await resolve(node.item, rtype, collect, max_join))
    if isinstance(node, Chain):
        inner = await resolve(node.inner, node.target_type, collect, max_join)
        docs = await collect(node.target_type, inner, max_join + 1)
        _bound(len(docs), max_join, f"the chain through {node.param.code}")
        return as_node(RefIn(node.param, node.target_type, frozenset(d["i"] for d in docs)))
    if isinstance(node, Has):
        inner = await resolve(node.inner, node.source_type, collect, max_join)
        docs = await collect(node.source_type, inner, max_join + 1)
        _bound(len(docs), max_join, f"_has:{node.source_type}:{node.ref_param.code}")
        keys = set()
        for doc in docs:
            for sub in index_of(doc).get("reference") or ():
                if sub["p"] == node.ref_param.code and sub.get("target_type") and sub.get("target_id") is not None:
                    keys.add(f"{sub['target_type']}/{sub['target_id']}")
        if rtype is not None and rtype != "Resource":
            keys = {k for k in keys if k.startswith(rtype + "/")}
        return as_node(KeyIn(frozenset(keys)))
    return node


def _bound(found: int, limit: int, what: str) -> None:
    if found > limit:
        raise TooCostly(f"{what} matches more than {limit} resources; narrow the inner criteria",
                        message_id="AEGIS-360")


# ---- filters ----------------------------------------------------------------------------------------------------------


def all_of(filters: Iterable[Filter]) -> Filter:
    """Conjunction; flat (one dict) when the parts use distinct keys, which keeps simple filters simple."""
    parts = []
    for f in filters:
        if f is MATCH_NONE or f == MATCH_NONE:
            return MATCH_NONE
        if f:
            parts.append(f)
    if not parts:
        return MATCH_ALL
    if len(parts) == 1:
        return parts[0]
    merged: Filter = {}
    for f in parts:
        if any(k in merged for k in f):
            return {"$and": parts}
        merged.update(f)
    return merged


def any_of(filters: Iterable[Filter]) -> Filter:
    parts = []
    for f in filters:
        if not f:
            return MATCH_ALL
        if f != MATCH_NONE:
            parts.append(f)
    if not parts:
        return MATCH_NONE
    return parts[0] if len(parts) == 1 else {"$or": parts}


def none_of(f: Filter) -> Filter:
    if not f:
        return MATCH_NONE
    if f == MATCH_NONE:
        return MATCH_ALL
    return {"$nor": [f]}


def regex_escape(text: str) -> str:
    """Escape for both PCRE (MongoDB) and RE2 (FerretDB): only the metacharacters, since RE2 refuses escapes of
    ordinary characters (Python's ``re.escape`` escapes spaces, which RE2 rejects)."""
    return "".join("\\" + ch if ch in _REGEX_SPECIAL else ch for ch in text)


def _cond_ops(cond: Cond) -> Any:
    """The operator document (or plain value) a field must satisfy; None when the condition can never hold."""
    op, value = cond.op, cond.value
    if op == "is-null":
        return {"$eq": None}
    if op == "not-null":
        return dict(_NOT_NULL)
    if value is None:  # SQL NULL: every comparison with it is unknown, so false
        return None
    if op == "=":
        return {"$eq": value}
    if op in _RANGE_OPS:
        return {_RANGE_OPS[op]: value}
    if op == "prefix":
        return {"$regex": "^" + regex_escape(str(value))} if value != "" else dict(_NOT_NULL)
    if op == "contains":
        return {"$regex": regex_escape(str(value))} if value != "" else dict(_NOT_NULL)
    raise ValueError(f"unknown condition operator {op!r}")


def _field_path(family: str, field: str) -> str:
    if family == "composite":
        index, _, sub = field.partition(".")
        if not index.isdigit() or not sub.isidentifier():
            raise ValueError(f"bad composite field {field!r}")
        return f"p{int(index)}.{sub}"
    if field not in FAMILY_FIELDS.get(family, ()):
        raise ValueError(f"{family} values have no field {field!r}")
    return field


def _conds_filter(family: str, conds: tuple[Cond, ...]) -> Filter:
    """All conditions of one alternative, inside ``$elemMatch``; conditions on one field share its operator
    document (``$gte`` and ``$lt`` of a range), repeated operators fall back to ``$and``."""
    by_path: dict[str, dict[str, Any]] = {}
    extra: list[Filter] = []
    for cond in conds:
        ops = _cond_ops(cond)
        if ops is None:
            return MATCH_NONE
        path = _field_path(family, cond.field)
        current = by_path.setdefault(path, {})
        if any(k in current for k in ops):
            extra.append({path: ops})
        else:
            current.update(ops)
    return all_of([*({p: ops} for p, ops in by_path.items()), *extra])


@dataclass(frozen=True, slots=True)
class Rendered:
    filter: Filter
    exact: bool  # False: a superset; candidates must be checked with :func:`holds`


class Renderer:
    def __init__(self, layout: str) -> None:
        self.packed = layout == PACKED

    def sorts_in_server(self, specs: list[SortSpec]) -> bool:
        """Whether the server can order by these keys (packed sort values are inside the opaque index)."""
        return not self.packed or all(s.present is None for s in specs)

    def render(self, node: Node, rtype: str | None) -> Rendered:
        """Filter over ``current`` documents of type ``rtype`` (any type when None) for a resolved tree."""
        if isinstance(node, And):
            parts = [self.render(n, rtype) for n in node.items]
            return Rendered(all_of(p.filter for p in parts), all(p.exact for p in parts))
        if isinstance(node, Or):
            parts = [self.render(n, rtype) for n in node.items]
            return Rendered(any_of(p.filter for p in parts), all(p.exact for p in parts))
        if isinstance(node, Not):
            inner = self.render(node.item, rtype)
            if not inner.exact:
                return Rendered(MATCH_ALL, False)
            return Rendered(none_of(inner.filter), True)
        if isinstance(node, MatchAll):
            return Rendered(MATCH_ALL, True)
        if isinstance(node, MatchNone):
            return Rendered(MATCH_NONE, True)
        if isinstance(node, IdIn):
            if not node.ids:
                return Rendered(MATCH_NONE, True)
            if rtype is not None and rtype != "Resource":
                keys = [f"{rtype}/{i}" for i in node.ids]
                return Rendered({"_id": keys[0]} if len(keys) == 1 else {"_id": {"$in": keys}}, True)
            return Rendered({"i": {"$in": list(node.ids)}}, True)
        if isinstance(node, TypeIn):
            return Rendered({"t": {"$in": list(node.types)}} if node.types else MATCH_NONE, True)
        if isinstance(node, KeyIn):
            keys = sorted(node.keys)
            if not keys:
                return Rendered(MATCH_NONE, True)
            return Rendered({"_id": keys[0]} if len(keys) == 1 else {"_id": {"$in": keys}}, True)
        if self.packed and isinstance(node, (TextSearch, Missing, Row, RefIn)):
            return Rendered(MATCH_ALL, False)  # the index is opaque to the server: decided in Python
        if isinstance(node, TextSearch):
            field = "tn" if node.kind == "_text" else "tc"
            return Rendered(all_of([{field: {"$regex": regex_escape(w)}} for w in node.query.split()]), True)
        if isinstance(node, Missing):
            return self._missing(node, rtype)
        if isinstance(node, Row):
            return self._row(node, rtype)
        if isinstance(node, RefIn):
            return self._ref_in(node, rtype)
        raise TypeError(f"cannot render {type(node).__name__}; lower and resolve the tree first")

    @staticmethod
    def _type_guard(param: Param, rtype: str | None) -> Filter | None:
        """``{t: param.rtype}`` when the rows searched may be of another type than the parameter is bound on (a
        parameter has values only on its own type; codes repeat across types in one collection)."""
        if param.rtype in ("Resource", rtype):
            return None
        return {"t": param.rtype}

    def _missing(self, node: Missing, rtype: str | None) -> Rendered:
        if node.param.code == "_id":  # every resource has an id
            return Rendered(MATCH_NONE if node.missing else MATCH_ALL, True)
        present = {f"{family_of(node.param)}.p": node.param.code}
        guard = self._type_guard(node.param, rtype)
        if node.missing:
            absent = none_of(present)
            return Rendered(absent if guard is None else any_of([none_of(guard), absent]), True)
        return Rendered(present if guard is None else all_of([guard, present]), True)

    def _row(self, node: Row, rtype: str | None) -> Rendered:
        param = node.param
        family = family_of(param)
        if param.code == "_id" or family not in FAMILY_FIELDS and family != "composite":
            return Rendered(MATCH_ALL, False)  # not an index row: decided in Python
        guard = self._type_guard(param, rtype)
        alts = [_conds_filter(family, alt) for alt in node.alts]
        alts = [a for a in alts if a != MATCH_NONE]
        if not alts:
            return Rendered(MATCH_NONE, True)
        inner: Filter = {"p": param.code}
        if len(alts) == 1:
            inner = all_of([inner, alts[0]])
        elif all(alts):  # (an empty alternative accepts any value of the parameter)
            inner = {"p": param.code, "$or": alts}
        flt: Filter = {family: {"$elemMatch": inner}}
        return Rendered(flt if guard is None else all_of([guard, flt]), True)

    def _ref_in(self, node: RefIn, rtype: str | None) -> Rendered:
        if not node.ids:
            return Rendered(MATCH_NONE, True)
        ids = sorted(node.ids)
        guard = self._type_guard(node.param, rtype)
        flt: Filter = {"reference": {"$elemMatch": {"p": node.param.code, "target_type": node.target_type,
                                                    "target_id": {"$in": ids}}}}
        return Rendered(flt if guard is None else all_of([guard, flt]), True)


def needs_text(node: Node) -> bool:
    if isinstance(node, (And, Or)):
        return any(needs_text(n) for n in node.items)
    if isinstance(node, Not):
        return needs_text(node.item)
    return isinstance(node, TextSearch)


# ---- the check in Python ----------------------------------------------------------------------------------------------


def tree_codes(node: Node) -> frozenset[str]:
    """The parameter codes a resolved tree looks at (only their values need decoding for a check)."""
    if isinstance(node, (And, Or)):
        return frozenset().union(*(tree_codes(n) for n in node.items))
    if isinstance(node, Not):
        return tree_codes(node.item)
    if isinstance(node, (Row, Missing, RefIn)):
        return frozenset((node.param.code,))
    return frozenset()


def indexed(doc: dict[str, Any], codes: frozenset[str] | None = None) -> IndexedResource:
    """A ``current`` document as the matcher sees a resource (with the values of ``codes`` only, when given)."""
    index = index_of(doc)
    return IndexedResource(doc["t"], doc["i"], decode_values(doc, codes), index.get("tn", ""), index.get("tc", ""))


class Checker:
    """``holds`` for one tree over many documents, decoding only the parameters the tree names."""

    def __init__(self, tree: Node) -> None:
        self.tree = tree
        self.codes = tree_codes(tree)

    def __call__(self, doc: dict[str, Any]) -> bool:
        return holds(self.tree, indexed(doc, self.codes))


def holds(node: Node, res: IndexedResource) -> bool:
    """Whether ``res`` satisfies a resolved tree; every node means exactly what it means in the matcher."""
    if isinstance(node, And):
        return all(holds(n, res) for n in node.items)
    if isinstance(node, Or):
        return any(holds(n, res) for n in node.items)
    if isinstance(node, Not):
        return not holds(node.item, res)
    if isinstance(node, MatchAll):
        return True
    if isinstance(node, MatchNone):
        return False
    if isinstance(node, IdIn):
        return res.rid in node.ids
    if isinstance(node, TypeIn):
        return res.rtype in node.types
    if isinstance(node, KeyIn):
        return f"{res.rtype}/{res.rid}" in node.keys
    if isinstance(node, Row):
        return any(all(cond_holds(c, value) for c in alt) for value in param_values(node.param, res)
                   for alt in node.alts)
    if isinstance(node, Missing):
        return (len(param_values(node.param, res)) == 0) == node.missing
    if isinstance(node, RefIn):
        return any(isinstance(v, ReferenceV) and v.target_type == node.target_type and v.target_id in node.ids
                   for v in param_values(node.param, res))
    if isinstance(node, TextSearch):
        haystack = res.text if node.kind == "_text" else res.content
        return all(word in haystack for word in node.query.split())
    raise TypeError(f"cannot check {type(node).__name__}; lower and resolve the tree first")


# ---- sorting and keyset cursors ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SortSpec:
    field: str  # dotted path of the sort value
    present: str | None  # the path whose existence says "has a value" (None: every resource has one)
    descending: bool
    numeric: bool


def sort_specs(sort: tuple[SortKey, ...]) -> list[SortSpec]:
    out = []
    for key in sort:
        if key.param.code == "_id":
            out.append(SortSpec("i", None, key.descending, False))
            continue
        code = field_key(key.param.code)
        out.append(SortSpec(f"so.{code}.{'d' if key.descending else 'a'}", f"so.{code}", key.descending,
                            family_of(key.param) in NUMERIC_FAMILIES))
    return out


def _get(doc: dict[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def cursor_of(doc: dict[str, Any], specs: list[SortSpec]) -> tuple[Any, ...]:
    """``(mask, value…, k)``: bit j of mask set when the row has no value for sort key j (its value is then 0)."""
    mask = 0
    values: list[Any] = []
    index = index_of(doc)
    for j, spec in enumerate(specs):
        value = doc.get(spec.field) if spec.present is None else _get(index, spec.field)
        if value is None:
            mask |= 1 << j
            values.append(0)
        else:
            values.append(value)
    return (mask, *values, doc["k"])


def check_cursor(cursor: tuple[Any, ...], specs: list[SortSpec]) -> tuple[Any, ...]:
    if (len(cursor) != len(specs) + 2 or not isinstance(cursor[0], int) or not isinstance(cursor[-1], int)
            or not 0 <= cursor[0] < 1 << len(specs)):
        raise InvalidInput("_cursor does not belong to this search", expression="_cursor", message_id="AEGIS-181")
    for j, spec in enumerate(specs):
        value = cursor[1 + j]
        missing = cursor[0] >> j & 1
        if not missing and spec.numeric != isinstance(value, (int, float)) or spec.present is None and missing:
            raise InvalidInput("_cursor does not belong to this search", expression="_cursor", message_id="AEGIS-181")
    return cursor


def compare(a: tuple[Any, ...], b: tuple[Any, ...], specs: list[SortSpec]) -> int:
    """Order of two cursors: per sort key "has a value" before "has none", values in the key's direction; then k."""
    for j, spec in enumerate(specs):
        ma, mb = a[0] >> j & 1, b[0] >> j & 1
        if ma != mb:
            return -1 if ma < mb else 1
        if ma:
            continue
        va, vb = a[1 + j], b[1 + j]
        if va != vb:
            less = va < vb
            return (1 if less else -1) if spec.descending else (-1 if less else 1)
    return int(a[-1] > b[-1]) - int(a[-1] < b[-1])


def sort_in_python(docs: list[dict[str, Any]], specs: list[SortSpec]) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    keyed = [(cursor_of(d, specs), d) for d in docs]

    def order(x: tuple[tuple[Any, ...], dict[str, Any]], y: tuple[tuple[Any, ...], dict[str, Any]]) -> int:
        return compare(x[0], y[0], specs)

    keyed.sort(key=functools.cmp_to_key(order))
    return keyed


def partitions(specs: list[SortSpec]) -> list[int]:
    """Every mask of missing sort values that can occur, in result order (key 1's presence most significant)."""
    optional = [j for j, s in enumerate(specs) if s.present is not None]
    masks = []
    for n in range(1 << len(optional)):
        mask = 0
        for bit, j in enumerate(optional):
            if n >> (len(optional) - 1 - bit) & 1:
                mask |= 1 << j
        masks.append(mask)
    return masks


def partition_filter(mask: int, specs: list[SortSpec]) -> Filter:
    return all_of([{s.present: {"$exists": not (mask >> j & 1)}} for j, s in enumerate(specs) if s.present])


def partition_sort(mask: int, specs: list[SortSpec], backwards: bool) -> list[tuple[str, int]]:
    out = [(s.field, -1 if s.descending != backwards else 1) for j, s in enumerate(specs) if not mask >> j & 1]
    out.append(("k", -1 if backwards else 1))
    return out


def keyset_filter(cursor: tuple[Any, ...], specs: list[SortSpec], backwards: bool) -> Filter:
    """Rows of the cursor's own partition strictly after it (before it when ``backwards``)."""
    mask = cursor[0]
    present = [(s, cursor[1 + j]) for j, s in enumerate(specs) if not mask >> j & 1]
    ors = []
    for i in range(len(present) + 1):
        parts: list[Filter] = [{s.field: v} for s, v in present[:i]]
        if i < len(present):
            s, v = present[i]
            parts.append({s.field: {"$lt" if s.descending != backwards else "$gt": v}})
        else:
            parts.append({"k": {"$lt" if backwards else "$gt": cursor[-1]}})
        ors.append(all_of(parts))
    return any_of(ors)
