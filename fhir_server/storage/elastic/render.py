"""Rendering a lowered, resolved search tree to the Elasticsearch query DSL (filter context only: no scoring).

* ``Row`` → ``nested`` on the family's path: ``term p = <code>`` and the OR of its alternatives, each the AND of
  its conditions, all inside the one nested query, so they hold on the same value (as the matcher requires).
  Conditions: ``=`` → ``term``; ``<`` … ``>=`` → ``range``; ``prefix`` → ``prefix``; ``contains`` → ``wildcard``
  ``*v*``; ``not-null`` → ``exists``; ``is-null`` → ``must_not exists``; ``!=`` → exists and not equal. A
  comparison with a null operand never holds (SQL NULL semantics, as the matcher's).
* ``_id`` is not an index row: its one value ``(no system, id)`` is the document's ``i`` field.
* ``Missing`` → a nested query on ``p`` alone (negated for ``:missing=true``); ``IdIn``/``TypeIn`` → ``terms``;
  ``TextSearch`` → one ``wildcard`` per word on the ``tn``/``tc`` word keywords (see :mod:`.mapping`).
* Chains and ``_has`` are resolved before rendering (see :mod:`.search`) into :class:`RefIn` (``terms`` on the
  nested ``reference.key``) and :class:`KeyIn` (``terms`` on the document's ``key``): no joins.

A parameter has values only on the type it is bound on, and codes repeat across types, so a row or missing test of
a parameter of another type than the one searched gets a ``term t`` guard (system-level searches).

Anything the renderer cannot express raises :class:`Unrenderable`; the search then falls back to the primary store.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fhir_server.search import registry
from fhir_server.search.extract import OF_TYPE_SUFFIX
from fhir_server.search.tree import (
    And,
    Cond,
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
from fhir_server.search.resolved import KeyIn, RefIn
from fhir_server.storage.elastic.mapping import FAMILY_FIELDS

Query = dict[str, Any]
MATCH_ALL: Query = {"match_all": {}}
MATCH_NONE: Query = {"match_none": {}}
_RANGE = {"<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}


class Unrenderable(Exception):
    """The tree holds something this renderer cannot express (the primary store answers instead)."""


# ---- boolean helpers --------------------------------------------------------------------------------------------


def all_of(queries: Iterable[Query]) -> Query:
    parts: list[Query] = []
    for q in queries:
        if q == MATCH_NONE:
            return MATCH_NONE
        if q != MATCH_ALL:
            parts.append(q)
    if not parts:
        return MATCH_ALL
    return parts[0] if len(parts) == 1 else {"bool": {"filter": parts}}


def any_of(queries: Iterable[Query]) -> Query:
    parts: list[Query] = []
    for q in queries:
        if q == MATCH_ALL:
            return MATCH_ALL
        if q != MATCH_NONE:
            parts.append(q)
    if not parts:
        return MATCH_NONE
    return parts[0] if len(parts) == 1 else {"bool": {"should": parts, "minimum_should_match": 1}}


def none_of(q: Query) -> Query:
    if q == MATCH_ALL:
        return MATCH_NONE
    if q == MATCH_NONE:
        return MATCH_ALL
    return {"bool": {"must_not": [q]}}


def _terms(field: str, values: Iterable[str]) -> Query:
    vals = sorted(set(values))
    if not vals:
        return MATCH_NONE
    return {"term": {field: vals[0]}} if len(vals) == 1 else {"terms": {field: vals}}


def wildcard_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "\\*?" else ch for ch in text)


# ---- conditions ----------------------------------------------------------------------------------------------------


def cond_query(path: str, cond: Cond) -> Query:
    op, value = cond.op, cond.value
    exists: Query = {"exists": {"field": path}}
    if op == "not-null":
        return exists
    if op == "is-null":
        return none_of(exists)
    if value is None:  # SQL NULL: every comparison with it is unknown, so false
        return MATCH_NONE
    if op == "=":
        return {"term": {path: value}}
    if op == "!=":
        return all_of([exists, none_of({"term": {path: value}})])
    if op in _RANGE:
        return {"range": {path: {_RANGE[op]: value}}}
    if op == "prefix":
        return {"prefix": {path: value}} if value != "" else exists
    if op == "contains":
        return {"wildcard": {path: {"value": f"*{wildcard_escape(str(value))}*"}}} if value != "" else exists
    raise Unrenderable(f"unknown condition operator {op!r}")


def family_of(param: Param) -> str:
    """The family a parameter's values are indexed under (``_lastUpdated`` is a date whatever it is bound as)."""
    return "date" if param.code == "_lastUpdated" else param.type


def component_family(param: Param, index: int) -> str:
    """The family of component ``index`` of a composite parameter (from its SearchParameter definition)."""
    if param.code.endswith(OF_TYPE_SUFFIX):
        return "token"  # identifier:of-type: (type coding, (system, value))
    definition = registry.param(param.rtype, param.code)
    if definition is None or index >= len(definition.components):
        raise Unrenderable(f"{param} has no component {index}")
    component = registry.by_url(definition.components[index].definition)
    if component is None or component.type not in FAMILY_FIELDS:
        raise Unrenderable(f"component {index} of {param} has no indexable type")
    return component.type


def field_path(param: Param, family: str, field: str) -> str:
    if family == "composite":
        index, _, sub = field.partition(".")
        if not index.isdigit():
            raise Unrenderable(f"bad composite field {field!r}")
        part_family = component_family(param, int(index))
        if sub not in FAMILY_FIELDS[part_family]:
            raise Unrenderable(f"{part_family} values have no field {sub!r}")
        return f"composite.p{int(index)}.{part_family}.{sub}"
    if field not in FAMILY_FIELDS.get(family, {}):
        raise Unrenderable(f"{family} values have no field {field!r}")
    return f"{family}.{field}"


def _id_cond(cond: Cond) -> Query:
    """A condition on the one value of ``_id``: ``TokenV(None, id)`` (the code is the id; system and text null)."""
    if cond.field == "code":
        return cond_query("i", cond)
    if cond.field in ("system", "text"):
        return MATCH_ALL if cond.op == "is-null" else MATCH_NONE
    raise Unrenderable(f"_id has no field {cond.field!r}")


# ---- the tree ------------------------------------------------------------------------------------------------------


def render(node: Node, rtype: str | None) -> Query:
    """The query over documents of type ``rtype`` (any type when None) for a resolved tree (no ``d`` filter)."""
    if isinstance(node, And):
        return all_of(render(n, rtype) for n in node.items)
    if isinstance(node, Or):
        return any_of(render(n, rtype) for n in node.items)
    if isinstance(node, Not):
        return none_of(render(node.item, rtype))
    if isinstance(node, MatchAll):
        return MATCH_ALL
    if isinstance(node, MatchNone):
        return MATCH_NONE
    if isinstance(node, IdIn):
        return _terms("i", node.ids)
    if isinstance(node, TypeIn):
        return _terms("t", node.types)
    if isinstance(node, KeyIn):
        return _terms("key", node.keys)
    if isinstance(node, TextSearch):
        field = "tn" if node.kind == "_text" else "tc"
        return all_of({"wildcard": {field: {"value": f"*{wildcard_escape(w)}*"}}} for w in node.query.split())
    if isinstance(node, Missing):
        return _missing(node, rtype)
    if isinstance(node, Row):
        return _row(node, rtype)
    if isinstance(node, RefIn):
        return _ref_in(node, rtype)
    raise Unrenderable(f"cannot render {type(node).__name__}; lower and resolve the tree first")


def _guarded(param: Param, rtype: str | None, query: Query) -> Query:
    if param.rtype in ("Resource", rtype):
        return query
    return all_of([{"term": {"t": param.rtype}}, query])


def _nested(family: str, query: Query) -> Query:
    return {"nested": {"path": family, "query": query}}


def _has_param(param: Param) -> Query:
    family = family_of(param)
    if family not in FAMILY_FIELDS and family != "composite":
        raise Unrenderable(f"{param} is of type {param.type}, which has no index values")
    return _nested(family, {"term": {f"{family}.p": param.code}})


def _missing(node: Missing, rtype: str | None) -> Query:
    if node.param.code == "_id":  # every resource has an id
        return MATCH_NONE if node.missing else MATCH_ALL
    present = _guarded(node.param, rtype, _has_param(node.param))
    return none_of(present) if node.missing else present


def _row(node: Row, rtype: str | None) -> Query:
    param = node.param
    if param.code == "_id":
        alts = any_of(all_of(_id_cond(c) for c in alt) for alt in node.alts)
        return _guarded(param, rtype, alts)
    family = family_of(param)
    if family not in FAMILY_FIELDS and family != "composite":
        raise Unrenderable(f"{param} is of type {param.type}, which has no index values")
    alts = any_of(all_of(cond_query(field_path(param, family, c.field), c) for c in alt) for alt in node.alts)
    if alts == MATCH_NONE:
        return MATCH_NONE
    inner = all_of([{"term": {f"{family}.p": param.code}}, alts])
    return _guarded(param, rtype, _nested(family, inner))


def _ref_in(node: RefIn, rtype: str | None) -> Query:
    if not node.ids:
        return MATCH_NONE
    keys = _terms("reference.key", (f"{node.target_type}/{i}" for i in node.ids))
    inner = all_of([{"term": {"reference.p": node.param.code}}, keys])
    return _guarded(node.param, rtype, _nested("reference", inner))
