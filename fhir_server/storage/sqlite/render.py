"""Rendering the lowered search tree to SQLite SQL, with bound parameters only (never a value in the SQL text).

A ``Row`` becomes ``<alias>.rkey IN (SELECT rkey FROM idx_<family> WHERE pid = ? AND (…))``; OR-ed values of one
parameter stay inside that one subquery; chains and ``_has`` nest the same form through ``idx_reference``. A
patient's ``_has`` of a code through ``patient`` probes the token rows' owners instead (:func:`owned_has`).
Sort keys and keyset-cursor conditions are rendered here too, so everything that knows the index layout is in one
module.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

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
from fhir_server.storage.sqlite.schema import (
    FAMILY_COLUMNS,
    FAMILY_INDEXES,
    OWNER_PARAM,
    OWNER_TYPE,
    ROW_EXTRA_COLUMNS,
    UNKNOWN_OWNER,
)

# the parameter ids of (type, code); several for parameters bound on "Resource" (system-level search)
PidOf = Callable[[str, str], tuple[int, ...]]

_OPS = {"=": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_RANGE_OPS = frozenset(("=", "<", "<=", ">", ">=", "prefix"))  # conditions an index range can answer
TEXT_MAX = "\U0010ffff"


def family_of(param: Param) -> str:
    return "date" if param.code == "_lastUpdated" else param.type


class SqlRenderer:
    def __init__(self, pid_of: PidOf) -> None:
        self._pid_of = pid_of
        self._aliases = itertools.count()

    def _alias(self, stem: str) -> str:
        return f"{stem}{next(self._aliases)}"

    def _pid(self, param: Param, column: str, args: list[Any]) -> str | None:
        """``column = ?`` (or ``IN``) for the parameter's ids; None when the store knows no such parameter."""
        pids = self._pid_of(param.rtype, param.code)
        if not pids:
            return None
        args.extend(pids)
        return f"{column} = ?" if len(pids) == 1 else f"{column} IN ({','.join('?' * len(pids))})"

    def where(self, node: Node, alias: str, rtype: str | None, args: list[Any], *, probe: bool = False) -> str:
        """SQL condition over the ``resource_current`` row ``alias`` (of type ``rtype`` when known).

        Two forms: a *driving* condition (``probe=False``) is an ``IN`` over the index, whose matches SQLite looks up
        by key; a *probe* (``probe=True``) is an ``EXISTS`` checked per candidate row through the index's ``rkey``
        column. The first item of an ``And`` drives (the store puts the most selective first); the others probe, so
        that a broad condition (a category, a date range) never materialises every match of the whole table.
        """
        if isinstance(node, And):
            parts = [self.where(n, alias, rtype, args, probe=probe or i > 0) for i, n in enumerate(node.items)]
            return "(" + " AND ".join(parts) + ")"
        if isinstance(node, Or):
            if not probe and node.items and all(_keyed(n, rtype) for n in node.items):
                # one IN over the union of the branches' keys: SQLite answers an OR of INs with a multi-index OR
                # that collects and sorts every match before the first row of a page (a compartment's references)
                selects = [s for s in (self._key_select(n, rtype, args) for n in node.items) if s is not None]
                return f"{alias}.rkey IN ({' UNION ALL '.join(selects)})" if selects else "0"
            return "(" + " OR ".join(self.where(n, alias, rtype, args, probe=probe) for n in node.items) + ")"
        if isinstance(node, Not):
            return f"(NOT {self.where(node.item, alias, rtype, args, probe=True)})"
        if isinstance(node, Row):
            return self._row(node, alias, args, probe)
        if isinstance(node, Missing):
            family = family_of(node.param)
            pid_sql = self._pid(node.param, "m.pid", args)
            if pid_sql is None:
                return "1" if node.missing else "0"
            exists = f"EXISTS (SELECT 1 FROM idx_{family} m WHERE m.rkey = {alias}.rkey AND {pid_sql})"
            return f"(NOT {exists})" if node.missing else exists
        if isinstance(node, Chain):
            if probe:
                return self._chain_select(node, args, probe_of=alias) or "0"
            select = self._key_select(node, rtype, args)
            return f"{alias}.rkey IN ({select})" if select else "0"
        if isinstance(node, Has):
            if owned_has(node, rtype):
                if probe:
                    return self._owner_probe(node, alias, args)
                return f"{alias}.rkey IN ({self._owned_select(node, args)})"
            if rtype is None or rtype == "Resource" or probe:
                # system level (with or without _type): the reference must name the row's own type
                select = self._has_select(node, None if rtype in (None, "Resource") else rtype, args,
                                          probe_of=alias if probe else None, own_type_of=alias)
                if select is None:
                    return "0"
                return f"EXISTS ({select})" if probe else f"{alias}.rid IN ({select})"
            # by key through the (type, id) index, so that it can drive the query
            args.append(rtype)
            select = self._has_select(node, rtype, args)
            if select is None:
                args.pop()
                return "0"
            i = self._alias("i")
            return (f"{alias}.rkey IN (SELECT {i}.rkey FROM resource_current {i}"
                    f" WHERE {i}.rtype = ? AND {i}.rid IN ({select}))")
        if isinstance(node, IdIn):
            if not node.ids:
                return "0"
            marks = ",".join("?" * len(node.ids))
            if probe or rtype is None or rtype == "Resource":
                args.extend(node.ids)
                return f"{alias}.rid IN ({marks})"
            return f"{alias}.rkey IN ({self._key_select(node, rtype, args)})"
        if isinstance(node, TypeIn):
            args.extend(node.types)
            return f"{alias}.rtype IN ({','.join('?' * len(node.types))})" if node.types else "0"
        if isinstance(node, TextSearch):
            column = "narrative" if node.kind == "_text" else "content"
            words = node.query.split()
            if not words:
                return "1"
            args.extend(words)
            likes = " AND ".join(f"instr(x.{column}, ?) > 0" for _ in words)
            return f"{alias}.rkey IN (SELECT x.rkey FROM idx_text x WHERE {likes})"
        if isinstance(node, MatchAll):
            return "1"
        if isinstance(node, MatchNone):
            return "0"
        raise TypeError(f"cannot render {type(node).__name__}; lower the tree first")

    def _key_select(self, node: Node, rtype: str | None, args: list[Any]) -> str | None:
        """The keys matching a condition that drives by key (``_keyed``); None when it matches nothing."""
        if isinstance(node, Row):
            return self._row_select(node, args)
        if isinstance(node, Chain):
            return self._chain_select(node, args)
        if isinstance(node, IdIn) and node.ids and rtype not in (None, "Resource"):
            # through the (type, id) index
            args.append(rtype)
            args.extend(node.ids)
            return f"SELECT i.rkey FROM resource_current i WHERE i.rtype = ? AND i.rid IN ({','.join('?' * len(node.ids))})"
        if isinstance(node, IdIn):
            return None
        raise TypeError(f"{type(node).__name__} does not drive by key")

    def _row(self, node: Row, alias: str, args: list[Any], probe: bool = False) -> str:
        if not probe:
            select = self._row_select(node, args)
            return "0" if select is None else f"{alias}.rkey IN ({select})"
        parts = self._row_parts(node, args)
        if parts is None:
            return "0"
        family, pid_sql, alts = parts
        return (f"EXISTS (SELECT 1 FROM idx_{family} WHERE rkey = {alias}.rkey AND {pid_sql}"
                f" AND ({' OR '.join(alts)}))")

    def _row_select(self, node: Row, args: list[Any]) -> str | None:
        """The keys of the rows matching ``node``. Several alternatives become a ``UNION ALL`` of one index range
        each: under an OR SQLite would walk every row of the parameter instead."""
        if len(node.alts) <= 1:
            parts = self._row_parts(node, args)
            if parts is None:
                return None
            family, pid_sql, alts = parts
            return f"SELECT rkey FROM idx_{family} WHERE {pid_sql} AND {alts[0] if alts else '0'}"
        selects = []
        for alt in node.alts:
            select = self._row_select(Row(node.param, (alt,)), args)
            if select is None:
                return None
            selects.append(select)
        return " UNION ALL ".join(selects)

    def _row_parts(self, node: Row, args: list[Any]) -> tuple[str, str, list[str]] | None:
        family = family_of(node.param)
        pid_sql = self._pid(node.param, "pid", args)
        if pid_sql is None:
            return None
        alts = []
        for alt in node.alts:
            conds = [self._cond(family, c, args) for c in alt]
            alts.append("(" + " AND ".join(conds or ["1"]) + ")")
        return family, pid_sql, alts

    def _chain_select(self, node: Chain, args: list[Any], *, probe_of: str | None = None) -> str | None:
        """The referring rows' keys (``SELECT r.rkey …``); with ``probe_of``, an EXISTS body for that row."""
        r, t = self._alias("r"), self._alias("t")
        mark = len(args)
        args.append(node.target_type)
        pid_sql = self._pid(node.param, f"{r}.pid", args)
        if pid_sql is None:
            del args[mark:]
            return None
        args.append(node.target_type)
        # probing: only this row's references, so the target's conditions probe too
        inner = self.where(node.inner, t, node.target_type, args, probe=probe_of is not None)
        join = (f"FROM idx_reference {r} JOIN resource_current {t}"
                f" ON {t}.rtype = ? AND {t}.rid = {r}.target_id AND {t}.deleted = 0"
                f" WHERE {pid_sql} AND {r}.target_type = ? AND {inner}")
        if probe_of is not None:
            return f"EXISTS (SELECT 1 {join} AND {r}.rkey = {probe_of}.rkey)"
        return f"SELECT {r}.rkey {join}"

    def _has_select(self, node: Has, rtype: str | None, args: list[Any], *, probe_of: str | None = None,
                    own_type_of: str | None = None) -> str | None:
        """The referenced ids (``SELECT r.target_id …``) of the source rows matching ``node.inner``; with
        ``probe_of``, only those pointing at that row. Without ``rtype`` the reference must name the type of the
        row ``own_type_of``."""
        r, s = self._alias("r"), self._alias("s")
        mark = len(args)
        pid_sql = self._pid(node.ref_param, f"{r}.pid", args)
        if pid_sql is None:
            del args[mark:]
            return None
        if rtype is None:
            target = f"{r}.target_type = {own_type_of}.rtype"
        else:
            target = f"{r}.target_type = ?"
            args.append(rtype)
        if _needs_row(node.inner):
            inner = self.where(node.inner, s, node.source_type, args, probe=probe_of is not None)
            join = (f"FROM idx_reference {r} JOIN resource_current {s}"
                    f" ON {s}.rkey = {r}.rkey AND {s}.deleted = 0 WHERE {pid_sql} AND {target} AND {inner}")
        else:
            # index rows belong to current, non-deleted resources only, so the source row itself is not needed
            inner = self.where(node.inner, r, node.source_type, args, probe=probe_of is not None)
            join = f"FROM idx_reference {r} WHERE {pid_sql} AND {target} AND {inner}"
        if probe_of is not None:
            return f"SELECT 1 {join} AND {r}.target_id = {probe_of}.rid"
        return f"SELECT {r}.target_id {join}"

    def _owner_probe(self, node: Has, alias: str, args: list[Any]) -> str:
        """Whether patient ``alias`` owns a token row of ``node.inner`` (see :func:`owned_has`): per alternative one
        index lookup on (pid, code, owner) for the patient's key, and one for rows of unknown owner, each confirmed
        through its reference. Whether rows of unknown owner exist at all is asked first, without the patient: SQLite
        answers that once per query, so when there are none (the usual case) a probe is the one lookup."""
        inner = node.inner
        assert isinstance(inner, Row)
        exists = []
        for alt in inner.alts:
            mark = len(args)
            owned = self._owned_rows(inner, alt, f"= {alias}.rkey", args)
            any_unknown = self._owned_rows(inner, alt, f"= {UNKNOWN_OWNER}", args)
            unknown = self._owned_rows(inner, alt, f"= {UNKNOWN_OWNER}", args)
            r = self._alias("r")
            ref_sql = self._pid(node.ref_param, f"{r}.pid", args)
            if owned is None or any_unknown is None or unknown is None or ref_sql is None:
                del args[mark:]
                continue
            args.append(OWNER_TYPE)
            t, rows = unknown
            exists.append(f"EXISTS (SELECT 1 {owned[1]})")
            exists.append(f"(EXISTS (SELECT 1 {any_unknown[1]}) AND EXISTS (SELECT 1 {rows} AND EXISTS (SELECT 1"
                          f" FROM idx_reference {r} WHERE {r}.rkey = {t}.rkey AND {ref_sql} AND {r}.target_type = ?"
                          f" AND {r}.target_id = {alias}.rid)))")
        return "(" + " OR ".join(exists) + ")" if exists else "0"

    def _owned_select(self, node: Has, args: list[Any]) -> str:
        """The keys of the patients owning a token row of ``node.inner`` (see :func:`owned_has`): read off the
        (pid, code, owner) index, plus the patients the rows of unknown owner point at."""
        inner = node.inner
        assert isinstance(inner, Row)
        selects = []
        for alt in inner.alts:
            owned = self._owned_rows(inner, alt, "> 0", args)
            if owned is None:
                continue
            selects.append(f"SELECT {owned[0]}.owner {owned[1]}")
            unknown = Has(node.source_type, node.ref_param,
                          Row(inner.param, (alt + (Cond("owner", "=", UNKNOWN_OWNER),),)))
            args.append(OWNER_TYPE)
            select = self._has_select(unknown, OWNER_TYPE, args)
            if select is None:
                args.pop()
                continue
            i = self._alias("i")
            selects.append(f"SELECT {i}.rkey FROM resource_current {i} WHERE {i}.rtype = ? AND {i}.rid IN ({select})")
        return " UNION ALL ".join(selects) if selects else "SELECT 1 WHERE 0"

    def _owned_rows(self, inner: Row, alt: tuple[Cond, ...], owner: str,
                    args: list[Any]) -> tuple[str, str] | None:
        """(alias, ``FROM idx_token … WHERE …``) of the token rows of one alternative whose owner is ``owner``."""
        t = self._alias("t")
        mark = len(args)
        pid_sql = self._pid(inner.param, f"{t}.pid", args)
        if pid_sql is None:
            del args[mark:]
            return None
        conds = [self._cond("token", c, args, table=t) for c in alt]
        return t, f"FROM idx_token {t} WHERE {pid_sql} AND {' AND '.join(conds)} AND {t}.owner {owner}"

    def estimate(self, node: Node, rtype: str | None, args: list[Any]) -> str | None:
        """A SELECT with one row per index match of a top-level condition (see ``plan.py``), or None when the
        condition cannot drive a query. ``_has`` counts its source rows: an upper bound of the targets."""
        if isinstance(node, Row):
            if not _indexed(node):
                return None  # counting would walk every row of the parameter
            return self._row_select(node, args) or "SELECT 1 WHERE 0"
        if isinstance(node, Chain):
            return self._chain_select(node, args) or "SELECT 1 WHERE 0"
        if isinstance(node, Has) and owned_has(node, rtype):
            # the source rows with the code, without following each to its patient: still an upper bound
            assert isinstance(node.inner, Row)
            return self._row_select(node.inner, args) or "SELECT 1 WHERE 0"
        if isinstance(node, Has) and rtype not in (None, "Resource"):
            return self._has_select(node, rtype, args) or "SELECT 1 WHERE 0"
        return None

    def _cond(self, family: str, cond: Cond, args: list[Any], table: str | None = None) -> str:
        column = _column(family, cond.field)
        if table is not None and family != "composite":
            column = f"{table}.{column}"
        op = cond.op
        if op == "is-null":
            return f"{column} IS NULL"
        if op == "not-null":
            return f"{column} IS NOT NULL"
        if op == "prefix":
            value = str(cond.value)
            if not value:
                return f"{column} IS NOT NULL"
            args.extend((value, value + TEXT_MAX))
            return f"({column} >= ? AND {column} < ?)"
        if op == "contains":
            # instr, not LIKE: LIKE folds ASCII case, and the oracle (like the spec for normalised values) doesn't
            args.append(str(cond.value))
            return f"instr({column}, ?) > 0"
        args.append(cond.value)
        return f"{column} {_OPS[op]} ?"

    # ---- sorting and keyset paging -----------------------------------------------------------------------------

    def sort_expr(self, param: Param, descending: bool, alias: str, args: list[Any]) -> str:
        """A scalar per resource: its smallest (ascending) or largest (descending) value; missing values last."""
        if param.code == "_id":
            return f"{alias}.rid"
        family = family_of(param)
        column = {"string": "norm", "token": "code", "reference": "target_id", "date": "lo", "number": "value",
                  "quantity": "value", "uri": "uri"}.get(family)
        numeric = family in ("date", "number", "quantity")
        sentinel = ("-1e308" if numeric else "''") if descending else ("1e308" if numeric else f"'{TEXT_MAX}'")
        pid_sql = self._pid(param, "s.pid", args) if column is not None else None
        if pid_sql is None:
            return sentinel
        agg = "MAX" if descending else "MIN"
        return (f"COALESCE((SELECT {agg}(s.{column}) FROM idx_{family} s WHERE s.rkey = {alias}.rkey"
                f" AND {pid_sql}), {sentinel})")


def owned_has(node: Node, rtype: str | None) -> bool:
    """Whether ``node`` is a patient's ``_has`` through ``patient`` of a code (``Patient?_has:Observation:patient:
    code=X``, with ``system|code``, ``:in`` expansions and the like): token rows carry the key of the patient they
    belong to (``schema.py``), so probing one patient costs two index lookups per alternative instead of a walk over
    its observations, and driving reads the patients off the index instead of following every matching row."""
    if not (isinstance(node, Has) and rtype == OWNER_TYPE and node.ref_param.code == OWNER_PARAM):
        return False
    inner = node.inner
    return (isinstance(inner, Row) and family_of(inner.param) == "token" and bool(inner.alts)
            and all(any(c.field == "code" and c.op == "=" for c in alt) for alt in inner.alts))


def _indexed(node: Row) -> bool:
    """Whether each alternative of the row constrains the first column of one of its family's indexes."""
    leads = {cols[1] for cols in FAMILY_INDEXES[family_of(node.param)] if len(cols) > 1}
    return all(any(c.field in leads and c.op in _RANGE_OPS for c in alt) for alt in node.alts)


def _keyed(node: Node, rtype: str | None) -> bool:
    """Whether ``_key_select`` renders the condition as a driving SELECT of keys."""
    if isinstance(node, IdIn):
        return rtype not in (None, "Resource")
    return isinstance(node, (Row, Chain))


def _needs_row(node: Node) -> bool:
    """Whether the condition reads the resource row (its id, type or deletion) rather than only its key."""
    if isinstance(node, (And, Or)):
        return any(_needs_row(n) for n in node.items)
    if isinstance(node, Not):
        return _needs_row(node.item)
    return isinstance(node, (IdIn, TypeIn, Has))


def _column(family: str, field: str) -> str:
    if family == "composite":
        index, _, sub = field.partition(".")
        if not index.isdigit() or not sub.isidentifier():
            raise ValueError(f"bad composite field {field!r}")
        return f"json_extract(parts, '$[{int(index)}].{sub}')"
    if field not in FAMILY_COLUMNS[family] and field not in ROW_EXTRA_COLUMNS.get(family, ()):
        raise ValueError(f"{family} rows have no field {field!r}")
    return field


def keyset_condition(exprs: list[tuple[str, list[Any], bool]], after: tuple[Any, ...], alias: str,
                     args: list[Any], *, backwards: bool = False) -> str:
    """Rows strictly after the cursor ``after`` = (sort values…, rkey) in the order of ``exprs`` then rkey
    (strictly before it when ``backwards``)."""
    ors = []
    for i in range(len(exprs) + 1):
        parts = []
        for j in range(i):
            expr, expr_args, _ = exprs[j]
            parts.append(f"{expr} = ?")
            args.extend(expr_args)
            args.append(after[j])
        if i < len(exprs):
            expr, expr_args, descending = exprs[i]
            parts.append(f"{expr} {'<' if descending != backwards else '>'} ?")
            args.extend(expr_args)
            args.append(after[i])
        else:
            parts.append(f"{alias}.rkey {'<' if backwards else '>'} ?")
            args.append(after[-1])
        ors.append("(" + " AND ".join(parts) + ")")
    return "(" + " OR ".join(ors) + ")"
