"""The in-memory matcher: evaluates a *lowered* search tree over extracted index values.

This is the test oracle for every backend. A property-based test generates resources and queries and checks that
SQLite (and later MongoDB and Elasticsearch) return exactly what :func:`search` returns here, so this module is
written to be obviously correct, not fast: every node is a direct transcription of its documented meaning, with no
indexes, caches or short cuts other than Python's own ``any``/``all``.

Input is the tree after the rewrite passes (:mod:`fhir_server.search.tree`): ``And``, ``Or``, ``Not``, ``Row``,
``Missing``, ``Chain``, ``Has``, ``IdIn``, ``TypeIn``, ``TextSearch``, ``MatchAll`` and ``MatchNone``. Query nodes
that the passes should have lowered (``TokenQ``, ``DateQ`` …) are refused with a ``TypeError`` rather than guessed
at, because an oracle that quietly interprets an unlowered node would hide a bug in the rewrite passes.

Semantics, each chosen to agree with what an SQL renderer naturally produces:

* The values of a parameter on a resource are ``res.values[param.code]`` when ``param.rtype == res.rtype`` and
  nothing otherwise (a parameter is bound on one resource type; on any other type it has no values). ``_id`` always
  has exactly one value, ``TokenV(None, res.rid)``: the id is the resource's own, not something extracted.
* ``Row``: some single value satisfies every ``Cond`` of at least one alternative (conditions of one alternative
  are evaluated on the *same* value, which is what makes ``system|code`` and composite pairs correct).
* ``Cond`` comparisons follow SQL NULL semantics: if the field or the operand is ``None``, ``=``, ``!=``, ``<``,
  ``<=``, ``>``, ``>=``, ``prefix`` and ``contains`` are all false (so a value with no system is neither equal nor
  unequal to any system). Only ``is-null`` / ``not-null`` see ``None``. ``prefix`` and ``contains`` are
  case-sensitive code-point comparisons on the stored field (strings are normalised at extraction, not here), and
  ``<``/``>`` on strings order by code point, which is also the order of SQLite's BINARY collation on UTF-8.
* ``Missing(p, True)``: the parameter has no values; ``Missing(p, False)``: it has at least one.
* ``Not``: plain boolean negation of the inner node on the same resource (so ``Not(Row)`` includes resources with no
  value at all for the parameter).
* ``Chain(p, T, inner)``: some ``ReferenceV`` of ``p`` has ``target_type == T`` exactly and a ``target_id`` that
  names a resource of type ``T`` in the data set, and that resource matches ``inner``. References to resources that
  are not in the data set (deleted, never existed, external) never satisfy a chain.
* ``Has(S, p, inner)``: some resource of type ``S`` has a ``ReferenceV`` under ``p`` whose ``target_type`` and
  ``target_id`` are this resource's type and id, and that same resource matches ``inner``.
* ``TextSearch``: the query is split on whitespace; every word must occur as a substring of ``res.text``
  (``_text``) or ``res.content`` (``_content``). Neither side is normalised here: both are expected to be
  :func:`~fhir_server.search.values.normalize`-d already. A query with no words matches every resource.
* ``And()`` of nothing is true and ``Or()`` of nothing is false (the identities of ``all``/``any``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from fhir_server.search.tree import (
    And,
    Chain,
    Cond,
    Has,
    IdIn,
    Missing,
    MatchAll,
    MatchNone,
    Node,
    Not,
    Or,
    Param,
    Row,
    TextSearch,
    TypeIn,
)
from fhir_server.search.values import FAMILY_OF_TYPE, CompositeV, ReferenceV, TokenV, Value

__all__ = ["Dataset", "IndexedResource", "check_lowered", "matches", "search"]

COMPARISONS = ("=", "!=", "<", "<=", ">", ">=")
OPS = (*COMPARISONS, "prefix", "contains", "is-null", "not-null")
_VALUE_TYPES = tuple(FAMILY_OF_TYPE.values())


@dataclass(frozen=True, slots=True)
class IndexedResource:
    """One current resource as the search index sees it.

    ``values`` maps a search parameter code to the values extracted for it (``_lastUpdated`` is a ``DateV`` under
    ``"_lastUpdated"``; ``_id`` need not be given, it is always ``rid``). ``text`` is the normalised narrative
    (``_text``) and ``content`` the normalised text of the whole resource (``_content``).
    """

    rtype: str
    rid: str
    values: dict[str, list[Value]] = field(default_factory=dict)
    text: str = ""
    content: str = ""

    def __post_init__(self) -> None:
        # Catch malformed hand-made or generated data here, where the mistake is, rather than as a wrong answer.
        for code, vals in self.values.items():
            if isinstance(vals, (str, bytes)) or not isinstance(vals, Sequence):
                raise TypeError(f"{self.rtype}/{self.rid}: values[{code!r}] must be a list of values")
            for v in vals:
                if not isinstance(v, _VALUE_TYPES):
                    raise TypeError(f"{self.rtype}/{self.rid}: values[{code!r}] holds {v!r}, not an index value")
        if "_id" in self.values and list(self.values["_id"]) != [TokenV(None, self.rid)]:
            raise ValueError(f"{self.rtype}/{self.rid}: an explicit _id value must be [TokenV(None, {self.rid!r})]")

    @property
    def key(self) -> tuple[str, str]:
        return (self.rtype, self.rid)


class Dataset:
    """The current (non-deleted) resources of every type, looked up by ``(type, id)``."""

    def __init__(self, resources: Iterable[IndexedResource] = ()) -> None:
        self._by_key: dict[tuple[str, str], IndexedResource] = {}
        for res in resources:
            self.add(res)

    def add(self, res: IndexedResource) -> None:
        # Two current versions of one resource cannot exist; a duplicate is a bug in whoever built the data.
        if res.key in self._by_key:
            raise ValueError(f"duplicate resource {res.rtype}/{res.rid}")
        self._by_key[res.key] = res

    def get(self, rtype: str, rid: str) -> IndexedResource | None:
        return self._by_key.get((rtype, rid))

    def of_type(self, rtype: str) -> list[IndexedResource]:
        return [res for res in self._by_key.values() if res.rtype == rtype]

    def __iter__(self) -> Iterator[IndexedResource]:
        return iter(list(self._by_key.values()))

    def __len__(self) -> int:
        return len(self._by_key)


# ---- values of a parameter --------------------------------------------------------------------------------------


def param_values(param: Param, res: IndexedResource) -> list[Value]:
    """The values of ``param`` on ``res``: none unless the parameter is bound on the resource's own type."""
    if param.rtype not in (res.rtype, "Resource"):  # "Resource": a common parameter of a system-level search
        return []
    if param.code == "_id":
        return [TokenV(None, res.rid)]
    vals = list(res.values.get(param.code, ()))
    family = FAMILY_OF_TYPE.get(param.type)
    if family is not None:
        for v in vals:
            # A value of the wrong family means extraction and binding disagree on the parameter's type.
            if not isinstance(v, family):
                raise TypeError(f"{res.rtype}/{res.rid}: {param} is {param.type} but holds {v!r}")
    return vals


def field_of(value: Value, name: str) -> Any:
    """The field ``name`` of an index value; ``"<i>.<field>"`` addresses component ``i`` of a composite."""
    if isinstance(value, CompositeV):
        index, sep, rest = name.partition(".")
        if not sep or not index.isdigit():
            raise ValueError(f"composite field {name!r} must be '<component index>.<field>'")
        return field_of(value.parts[int(index)], rest)
    # An unknown field is a bug in the tree, not a NULL: refusing it keeps a typo from passing as "no match".
    if name not in {f.name for f in dataclasses.fields(value)}:
        raise ValueError(f"{type(value).__name__} has no field {name!r}")
    return getattr(value, name)


def cond_holds(cond: Cond, value: Value) -> bool:
    """Whether one index value satisfies one condition (SQL NULL semantics: see the module docstring)."""
    if cond.op not in OPS:
        raise ValueError(f"unknown condition operator {cond.op!r}")
    actual = field_of(value, cond.field)
    if cond.op == "is-null":
        return actual is None
    if cond.op == "not-null":
        return actual is not None
    if actual is None or cond.value is None:
        return False
    wanted = cond.value
    match cond.op:
        case "=":
            return bool(actual == wanted)
        case "!=":
            return bool(actual != wanted)
        case "<":
            return bool(actual < wanted)
        case "<=":
            return bool(actual <= wanted)
        case ">":
            return bool(actual > wanted)
        case ">=":
            return bool(actual >= wanted)
        case "prefix":
            return _text(actual, cond).startswith(_text(wanted, cond))
        case "contains":
            return _text(wanted, cond) in _text(actual, cond)
    raise AssertionError(cond.op)  # unreachable: every op in OPS is handled above


def _text(x: Any, cond: Cond) -> str:
    # prefix/contains are string operations; anything else means the tree was lowered wrongly.
    if not isinstance(x, str):
        raise TypeError(f"{cond}: {cond.op} needs strings, got {x!r}")
    return x


def _refers_to(ref: Value, rtype: str, rid: str) -> bool:
    return isinstance(ref, ReferenceV) and ref.target_type == rtype and ref.target_id == rid


# ---- the tree ------------------------------------------------------------------------------------------------------


def matches(node: Node, res: IndexedResource, data: Dataset) -> bool:
    """Whether ``res`` satisfies the lowered search tree ``node``; ``data`` resolves chains and ``_has``."""
    match node:
        case And(items=items):
            return all(matches(item, res, data) for item in items)
        case Or(items=items):
            return any(matches(item, res, data) for item in items)
        case Not(item=item):
            return not matches(item, res, data)
        case MatchAll():
            return True
        case MatchNone():
            return False
        case IdIn(ids=ids):
            return res.rid in ids
        case TypeIn(types=types):
            return res.rtype in types
        case Row(param=param, alts=alts):
            return any(
                all(cond_holds(cond, value) for cond in alt) for value in param_values(param, res) for alt in alts
            )
        case Missing(param=param, missing=missing):
            return (len(param_values(param, res)) == 0) == missing
        case Chain(param=param, target_type=target_type, inner=inner):
            for ref in param_values(param, res):
                if not isinstance(ref, ReferenceV):
                    raise TypeError(f"{res.rtype}/{res.rid}: chained {param} holds {ref!r}, not a reference")
                if ref.target_type != target_type or ref.target_id is None:
                    continue
                target = data.get(target_type, ref.target_id)
                if target is not None and matches(inner, target, data):
                    return True
            return False
        case Has(source_type=source_type, ref_param=ref_param, inner=inner):
            if ref_param.rtype != source_type:
                raise ValueError(f"{node}: the reference parameter must be bound on {source_type}")
            return any(
                any(_refers_to(ref, res.rtype, res.rid) for ref in param_values(ref_param, source))
                and matches(inner, source, data)
                for source in data.of_type(source_type)
            )
        case TextSearch(kind=kind, query=query):
            if kind == "_text":
                haystack = res.text
            elif kind == "_content":
                haystack = res.content
            else:
                raise ValueError(f"unknown text search kind {kind!r}")
            return all(word in haystack for word in query.split())
    raise TypeError(f"the matcher evaluates lowered trees only; run the rewrite passes first: {node}")


def check_lowered(node: Node) -> None:
    """Refuse a tree that still holds query nodes, wherever they are.

    :func:`matches` only meets the nodes it evaluates (``all``/``any`` stop early, a chain with no references never
    looks inside), so an unlowered node could hide behind data; walking the whole tree first makes the refusal
    independent of the data.
    """
    match node:
        case And(items=items) | Or(items=items):
            for item in items:
                check_lowered(item)
        case Not(item=inner) | Chain(inner=inner) | Has(inner=inner):
            check_lowered(inner)
        case Row() | Missing() | IdIn() | TypeIn() | TextSearch() | MatchAll() | MatchNone():
            pass
        case _:
            raise TypeError(f"the matcher evaluates lowered trees only; run the rewrite passes first: {node}")


def search(rtype: str | None, node: Node, data: Dataset) -> list[IndexedResource]:
    """The resources of ``rtype`` (of every type when None) that match ``node``, ordered by ``(type, id)``.

    The order carries no meaning (search order is ``_sort``'s business, outside the tree); it is fixed only so that
    failures print reproducibly.
    """
    check_lowered(node)
    candidates = list(data) if rtype is None else data.of_type(rtype)
    return sorted((res for res in candidates if matches(node, res, data)), key=lambda res: res.key)
