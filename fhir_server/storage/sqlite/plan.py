"""Choosing how SQLite runs a search: which condition drives it, or whether to walk the type in key order.

SQLite's own planner sees ``rkey IN (SELECT … FROM idx_token WHERE pid = ? AND code = ?)`` the same way whatever
the code is, so it cannot tell ``gender=male`` (half of all patients) from ``family=Zamora`` (a handful). Before a
search runs, each top-level condition that can drive it is *counted* through its index, up to :data:`CAP` rows —
a few dozen microseconds each (:class:`PlanLimits`) — and

- the condition with the fewest rows drives (its matches are looked up by key; the others are probed per row);
- when every condition is broad (each has at least ``cap`` rows), each is cheap to probe (a few index lookups per
  row: parameter values, ids, types, chains through the row's own references — not ``_has``, whose probe fans out
  through every reference to the row, unless it is a patient's ``_has`` of a code, which the token rows' owners
  answer in a lookup or two) and the
  results are in key order, walking the type's rows in key order and probing each finds a page after a bounded
  number of rows whatever the data size, so the store first tries that over a few growing *windows* of keys, and
  only if they do not fill the page does the cheapest condition drive the rest.

A driving chain whose targets are few enough to list drives as a merge of the targets' referring rows
(``merge.py``) instead of collecting every referring row first.

A patient's search sorted by one date (``Observation?patient=X&_sort=-date``) whose driving condition has at least
``date_walk_from`` rows reads the patient's date rows in order (``datewalk.py``) instead of sorting every match.

The counts only choose a plan; every plan returns the same rows (the oracle test runs both kinds).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fhir_server.search.tree import And, Chain, Has, IdIn, MatchAll, MatchNone, Missing, Node, Not, Or, Row, TextSearch, TypeIn
from fhir_server.storage.sqlite.render import owned_has



@dataclass(frozen=True, slots=True)
class PlanLimits:
    cap: int = 1000  # index rows counted per condition, at most
    selective: int = 512  # a condition with at most this many rows drives without counting the others (probing
    # that many rows costs about what counting the others would)
    windows: tuple[int, ...] = (256, 2048, 8192)  # keys walked by the successive windows of a broad search
    merge_targets: int = 2000  # a driving chain with at most this many targets merges their referring rows (merge.py)
    merge_first: int = 256  # a broad chain with at most this many targets merges before walking any window: a seek
    # per target (~5 us) costs less than a window of probes (~0.5 ms for 256 keys through a chain)
    date_walk: int = 256  # a patient's date rows walked for a page sorted by date (datewalk.py), at most
    date_walk_from: int = 128  # ... when the patient and each other condition have at least this many rows (a
    # patient's rows of a code or category are counted as the patient's): fewer sort at once


DEFAULT_LIMITS = PlanLimits()

# renders a condition's estimate query (a SELECT of one row per index match), or None when it cannot drive
EstimateSql = Callable[[Node, list[Any]], str | None]


@dataclass(frozen=True, slots=True)
class Plan:
    tree: Node  # the top-level conditions in driving order
    driven: bool  # the first condition drives by key
    broad: bool  # every driving candidate has at least ``cap`` rows
    estimates: tuple[int | None, ...]  # per condition of ``tree``, in its order (None: not counted)


def rank(node: Node) -> int:
    """A static guess at how selective a condition is (lower first): the order conditions are counted in, and the
    driving order when nothing is counted (golden tests, system-level searches)."""
    if isinstance(node, IdIn):
        return 0
    if isinstance(node, Row):
        fields = {c.field for alt in node.alts for c in alt if c.op == "="}
        if "target_id" in fields or "ident_value" in fields:
            return 0
        if fields & {"code", "exact", "uri", "url", "canon_code"}:
            return 1
        return 3
    if isinstance(node, (Chain, Has)):
        return 2
    if isinstance(node, TextSearch):
        return 4
    if isinstance(node, Or) and node.items:  # drives when each branch can (a compartment's references)
        return max(rank(n) for n in node.items)
    return 9


def static_plan(tree: Node) -> Plan:
    items = sorted(top_level(tree), key=rank)
    return Plan(_join(items), rank(items[0]) < 9, False, (None,) * len(items))


def choose(conn: sqlite3.Connection, tree: Node, estimate_sql: EstimateSql,
           limits: PlanLimits = DEFAULT_LIMITS, rtype: str | None = None) -> Plan:
    """Count the candidates (cheapest-looking first) and put the one with the fewest rows first."""
    items = sorted(top_level(tree), key=rank)
    counted: list[tuple[int, int, Node]] = []  # (rows, position, condition)
    for position, item in enumerate(items):
        if rank(item) >= 9:
            continue
        rows = estimate_rows(conn, item, estimate_sql, limits.cap)
        if rows is None:
            continue
        counted.append((rows, position, item))
        if rows <= limits.selective:
            break
    if not counted:
        return static_plan(tree)
    counted.sort(key=lambda t: (t[0], t[1]))
    best_rows, best_position, best = counted[0]
    rest = [item for i, item in enumerate(items) if i != best_position]
    ordered = [best, *rest]
    by_id = {id(item): rows for rows, _, item in counted}
    estimates = tuple(by_id.get(id(item)) for item in ordered)
    broad = best_rows >= limits.cap and all(_cheap_probe(item, rtype) for item in ordered)
    return Plan(_join(ordered), True, broad, estimates)


def _cheap_probe(node: Node, rtype: str | None) -> bool:
    """Whether checking the condition for one row (of type ``rtype``) costs a bounded number of index lookups. A
    chain follows the row's own references (a handful), so it is as cheap as its target's conditions; ``_has``
    follows every reference *to* the row (a patient's hundreds of observations), so it is not, unless the token
    rows' owners answer it (``render.owned_has``)."""
    if isinstance(node, (And, Or)):
        return all(_cheap_probe(n, rtype) for n in node.items)
    if isinstance(node, Not):
        return _cheap_probe(node.item, rtype)
    if isinstance(node, Chain):
        return _cheap_probe(node.inner, node.target_type)
    if isinstance(node, Has):
        return owned_has(node, rtype)
    return isinstance(node, (Row, Missing, IdIn, TypeIn, MatchAll, MatchNone))


def estimate_rows(conn: sqlite3.Connection, node: Node, estimate_sql: EstimateSql, cap: int) -> int | None:
    """The condition's index rows, counted up to ``cap``; None when it cannot be counted."""
    if isinstance(node, IdIn):
        return len(node.ids)
    if isinstance(node, Or):
        total = 0
        for branch in node.items:
            rows = estimate_rows(conn, branch, estimate_sql, cap)
            if rows is None:
                return None
            total += rows
        return min(total, cap)
    if isinstance(node, TextSearch):
        return None  # a scan of the text table either way: never worth counting first
    args: list[Any] = []
    sql = estimate_sql(node, args)
    if sql is None:
        return None
    return int(conn.execute(f"SELECT COUNT(*) FROM ({sql} LIMIT {int(cap)})", args).fetchone()[0])


def top_level(tree: Node) -> list[Node]:
    """The conditions ANDed at the top of ``tree``."""
    return list(tree.items) if isinstance(tree, And) else [tree]


def _join(items: list[Node]) -> Node:
    return And(tuple(items)) if len(items) > 1 else items[0]
