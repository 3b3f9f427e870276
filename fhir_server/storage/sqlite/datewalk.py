"""A patient's resources in date order, read off the date index: ``Observation?patient=X&_sort=-date``.

Sorted the general way, a search computes the sort key of every match and sorts them all before it returns the
first page: a patient's 330 observations, or the 100,000 of a patient whose watch writes a heart rate every few
minutes. Date rows carry the key of their resource's patient (``owner``, schema.py), so the index
``(pid, owner, lo)`` lists one patient's dates in order, and the page is the first rows of that list whose resource
matches the rest of the search.

A resource with several dates sorts by its latest (descending) or earliest (ascending) one: a row counts only if it
is that one. The walk reads at most ``PlanLimits.date_walk`` rows. When they do not fill the page (the rest of the
search is rare among the patient's resources, or the walk reached the end, where resources without a date follow),
the caller sorts as before; so it does when the store has date rows of unknown owner (written before their patient,
or of several patients), whose resource could be the patient's.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from fhir_server.search.tree import And, Node, Row
from fhir_server.storage.sqlite.plan import top_level
from fhir_server.storage.sqlite.render import PidOf, family_of, keyset_condition
from fhir_server.storage.sqlite.schema import OWNER_PARAM, OWNER_TYPE, UNKNOWN_OWNER


def patient_condition(tree: Node, rtype: str) -> tuple[str, Node | None] | None:
    """The id X of a top-level ``patient=X`` (one patient) in ``tree``, and the rest of the tree (None: nothing else);
    None when there is no such condition."""
    items = top_level(tree)
    for i, node in enumerate(items):
        if not (isinstance(node, Row) and node.param.rtype == rtype and node.param.code == OWNER_PARAM
                and len(node.alts) == 1):
            continue
        ids = [c.value for c in node.alts[0] if c.field == "target_id" and c.op == "="]
        others = [c for c in node.alts[0] if not (c.field == "target_id" and c.op == "=")
                  and not (c.field == "target_type" and c.op == "=" and c.value == OWNER_TYPE)]
        if len(ids) == 1 and isinstance(ids[0], str) and not others:
            rest = items[:i] + items[i + 1:]
            return ids[0], None if not rest else rest[0] if len(rest) == 1 else And(tuple(rest))
    return None


def patient_rows(conn: sqlite3.Connection, node: Node, pid_of: PidOf, owner: int, cap: int) -> int | None:
    """The patient's rows of ``node`` (counted up to ``cap``) when it is a code or category (a token parameter with
    codes): token rows carry the owner too; None for any other condition."""
    if not (isinstance(node, Row) and family_of(node.param) == "token" and node.alts):
        return None
    codes = [c.value for alt in node.alts for c in alt if c.field == "code" and c.op == "="]
    pids = pid_of(node.param.rtype, node.param.code)
    if len(codes) < len(node.alts) or len(pids) != 1:
        return None
    return int(conn.execute(
        f"SELECT COUNT(*) FROM (SELECT 1 FROM idx_token WHERE pid = ? AND code IN ({','.join('?' * len(codes))})"
        f" AND owner = ? LIMIT ?)", [pids[0], *codes, owner, cap]).fetchone()[0])


def owner_key(conn: sqlite3.Connection, date_pid: int, patient_id: str) -> int | None:
    """The key that the date rows of the patient's resources carry, or None when the walk cannot stand for the
    search: no such patient, or date rows of unknown owner exist (one of them could be the patient's)."""
    found = conn.execute("SELECT rkey FROM resource_current WHERE rtype = ? AND rid = ?",
                         (OWNER_TYPE, patient_id)).fetchone()
    if found is None:
        return None
    if conn.execute("SELECT 1 FROM idx_date WHERE pid = ? AND owner = ? LIMIT 1", (date_pid, UNKNOWN_OWNER)).fetchone():
        return None
    return int(found[0])


def walk(conn: sqlite3.Connection, *, date_pid: int, owner: int, descending: bool, backwards: bool,
         cursor: tuple[Any, ...] | None, probe_where: str, probe_args: list[Any], limit: int, window: int,
         version_columns: str) -> list[tuple[Any, ...]] | None:
    """The first ``limit`` rows (``version_columns``, key, sort value) of the owner's resources that satisfy
    ``probe_where`` (over ``resource_current c``), in the sort's order after ``cursor`` (before it, ``backwards``);
    None when the first ``window`` date rows do not settle the page."""
    if cursor is not None and isinstance(cursor[0], float) and abs(cursor[0]) >= 1e308:
        return None  # past the dated resources: among those without a date
    lo_order = "DESC" if descending != backwards else "ASC"
    key_order = "DESC" if backwards else "ASC"
    walk_args: list[Any] = [date_pid, owner]
    where = "d.pid = ? AND d.owner = ?"
    if cursor is not None:
        # the bound on lo alone lets SQLite seek to the cursor instead of skipping the rows before it
        where += f" AND d.lo {'<=' if lo_order == 'DESC' else '>='} ? AND "
        walk_args.append(cursor[0])
        where += keyset_condition([("d.lo", [], descending)], cursor, "d", walk_args, backwards=backwards)
    # The window's end: the date of its last row. A bound on lo, not a LIMIT on a subquery, so that SQLite streams
    # the rows in index order and stops at the page (a subquery with a LIMIT is materialized and sorted whole).
    end = conn.execute(f"SELECT d.lo FROM idx_date d WHERE {where} ORDER BY d.lo {lo_order} LIMIT 1 OFFSET ?",
                       [*walk_args, window - 1]).fetchone()
    bounded = where if end is None else f"{where} AND d.lo {'>=' if lo_order == 'DESC' else '<='} ?"
    # the page's keys first, then their versions: joined before the LIMIT, bodies would go through the sorter
    page = (f"SELECT d.rkey AS rkey, c.seq AS seq, d.lo AS k0 FROM idx_date d JOIN resource_current c ON c.rkey = d.rkey"
            f" WHERE {bounded} AND d.lo = (SELECT {'MAX' if descending else 'MIN'}(s.lo) FROM idx_date s"
            f" WHERE s.rkey = d.rkey AND s.pid = d.pid) AND {probe_where}"
            f" ORDER BY d.lo {lo_order}, d.rkey {key_order} LIMIT ?")
    rows = conn.execute(f"SELECT {version_columns}, p.rkey, p.k0 FROM ({page}) p JOIN resource_version v"
                        f" ON v.seq = p.seq ORDER BY p.k0 {lo_order}, p.rkey {key_order}",
                        [*walk_args, *([] if end is None else [end[0]]), *probe_args, limit]).fetchall()
    if len(rows) >= limit:
        return rows
    if backwards and end is None:
        return rows  # back at the start: resources without a date come after every dated one, never before
    return None
