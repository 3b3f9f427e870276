"""The SQLite implementation of the storage interface.

Point reads run on the event loop over their own connection: in WAL mode they never wait for the writer, and a
read costs a few microseconds, less than a hop to a thread. Searches run in a small thread pool (SQLite releases
the GIL while it works, so the event loop keeps serving). Writes go through :class:`GroupCommitWriter`; each write
also replaces the resource's rows in the search index, extracted from the official SearchParameter expressions.
"""

from __future__ import annotations

import asyncio
import calendar
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

from fhir_server.search.registry import params_for
from fhir_server.search.tree import And, Node, Param
from fhir_server.storage.base import (
    HistoryQuery,
    OutboxEvent,
    Page,
    ReadOps,
    SearchPage,
    SearchQuery,
    Store,
    Version,
    WriteTx,
)
from fhir_server.storage.sqlite import datewalk, schema
from fhir_server.storage.sqlite.checkpoint import BACKSTOP_PAGES, Checkpointer
from fhir_server.storage.sqlite.lock import WriteLock
from fhir_server.storage.sqlite.merge import chain_candidates, verified
from fhir_server.storage.sqlite.plan import (
    DEFAULT_LIMITS,
    Plan,
    PlanLimits,
    choose,
    estimate_rows,
    static_plan,
    top_level,
)
from fhir_server.storage.sqlite.render import PidOf, SqlRenderer, family_of, keyset_condition
from fhir_server.storage.sqlite.rows import IndexRows, PendingRows, RowPreparer, index_rows, last_updated_rows
from fhir_server.storage.sqlite.writer import GroupCommitWriter, refresh_statistics
from resources import jsonio
from resources.canonical import stamped

T = TypeVar("T")

_VERSION_COLUMNS = "v.rtype, v.rid, v.vid, v.last_updated, v.deleted, v.method, v.body, v.seq"


def _version(row: tuple[Any, ...]) -> Version:
    return Version(row[0], row[1], row[2], row[3], bool(row[4]), row[5], row[6], row[7])


def format_instant(millis: int) -> str:
    secs, ms = divmod(millis, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{ms:03d}Z"


class _Reads(ReadOps):
    """Reads over one connection; ``_run`` decides where a (possibly slow) query executes."""

    _conn: sqlite3.Connection
    _pids: dict[tuple[str, str], int]
    _limits: PlanLimits

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return fn(self._conn)

    def _pid(self, rtype: str, code: str) -> int | None:
        return self._pids.get((rtype, code))

    def _snapshot(self, conn: sqlite3.Connection, fn: Callable[[], T]) -> T:
        """``fn``'s statements in one read transaction (inside a write unit they already are)."""
        if conn.in_transaction:
            return fn()
        conn.execute("BEGIN")
        try:
            return fn()
        finally:
            conn.execute("COMMIT")

    def _pids_of(self, rtype: str, code: str) -> tuple[int, ...]:
        if rtype == "Resource":  # a common parameter searched across types
            return tuple(pid for (_, c), pid in self._pids.items() if c == code)
        pid = self._pids.get((rtype, code))
        return () if pid is None else (pid,)

    def _one(self, sql: str, args: tuple[Any, ...]) -> Version | None:
        rows = self._conn.execute(sql, args).fetchall()
        return _version(rows[0]) if rows else None

    async def read(self, rtype: str, rid: str) -> Version | None:
        return self._one(
            f"SELECT {_VERSION_COLUMNS} FROM resource_current c JOIN resource_version v ON v.seq = c.seq"
            " WHERE c.rtype = ? AND c.rid = ?",
            (rtype, rid),
        )

    async def vread(self, rtype: str, rid: str, vid: int) -> Version | None:
        return self._one(
            f"SELECT {_VERSION_COLUMNS} FROM resource_version v WHERE v.rtype = ? AND v.rid = ? AND v.vid = ?",
            (rtype, rid, vid),
        )

    async def history(self, query: HistoryQuery) -> Page:
        where: list[str] = []
        args: list[Any] = []
        if query.rtype is not None:
            where.append("v.rtype = ?")
            args.append(query.rtype)
        if query.rid is not None:
            where.append("v.rid = ?")
            args.append(query.rid)
        if query.since is not None:
            where.append("v.last_updated >= ?")
            args.append(query.since)
        if query.at is not None:
            lo, hi = query.at
            # a version is current from its lastUpdated until its successor's
            where.append(
                "v.deleted = 0 AND v.last_updated < ? AND COALESCE((SELECT n.last_updated FROM resource_version n"
                " WHERE n.rtype = v.rtype AND n.rid = v.rid AND n.vid = v.vid + 1), '9999') > ?"
            )
            args.extend((hi, lo))
        if query.before_seq is not None:
            where.append("v.seq < ?")
            args.append(query.before_seq)
        sql = f"SELECT {_VERSION_COLUMNS} FROM resource_version v"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY v.seq DESC LIMIT ?"
        args.append(query.count + 1)

        def run(conn: sqlite3.Connection) -> Page:
            versions = [_version(r) for r in conn.execute(sql, args).fetchall()]
            more = len(versions) > query.count
            versions = versions[: query.count]
            return Page(versions, versions[-1].seq if more and versions else None)

        return await self._run(run)

    async def search(self, query: SearchQuery) -> SearchPage:
        # one read transaction: the plan's counts, every window and the total see the same snapshot
        def run(conn: sqlite3.Connection) -> SearchPage:
            return self._snapshot(conn, lambda: _search(conn, query, self._pids_of, self._limits))

        return await self._run(run)

    async def count(self, rtype: str | None, tree: Node) -> int:
        def run(conn: sqlite3.Connection) -> int:
            return self._snapshot(conn, lambda: _count(conn, rtype, tree, self._pids_of, self._limits))

        return await self._run(run)

    async def referenced(
        self, keys: list[int], params: list[Param], target_type: str | None
    ) -> tuple[list[int], list[Version]]:
        pids = [p for p in (self._pid(x.rtype, x.code) for x in params) if p is not None]
        if not keys or not pids:
            return [], []
        args: list[Any] = [*keys, *pids]
        targets = ("SELECT t.rkey FROM idx_reference r"
                   " JOIN resource_current t ON t.rtype = r.target_type AND t.rid = r.target_id AND t.deleted = 0"
                   f" WHERE r.rkey IN ({','.join('?' * len(keys))}) AND r.pid IN ({','.join('?' * len(pids))})")
        if target_type is not None:
            targets += " AND r.target_type = ?"
            args.append(target_type)
        sql = _versions_of_keys(targets)

        def run(conn: sqlite3.Connection) -> tuple[list[int], list[Version]]:
            rows = conn.execute(sql, args).fetchall()
            return [r[8] for r in rows], [_version(r) for r in rows]

        return await self._run(run)

    async def referencing(self, targets: list[tuple[str, str]], params: list[Param]) -> tuple[list[int], list[Version]]:
        pids = [p for p in (self._pid(x.rtype, x.code) for x in params) if p is not None]
        if not targets or not pids:
            return [], []
        by_type: dict[str, list[str]] = {}
        for rtype, rid in targets:
            by_type.setdefault(rtype, []).append(rid)
        args: list[Any] = [*pids]
        ors = []
        for rtype, ids in sorted(by_type.items()):
            ors.append(f"(r.target_type = ? AND r.target_id IN ({','.join('?' * len(ids))}))")
            args.extend((rtype, *ids))
        sql = _versions_of_keys(f"SELECT r.rkey FROM idx_reference r WHERE r.pid IN ({','.join('?' * len(pids))})"
                                f" AND ({' OR '.join(ors)})")

        def run(conn: sqlite3.Connection) -> tuple[list[int], list[Version]]:
            rows = conn.execute(sql, args).fetchall()
            return [r[8] for r in rows], [_version(r) for r in rows]

        return await self._run(run)


def _versions_of_keys(keys_sql: str) -> str:
    """The current versions of the (live) resources whose keys ``keys_sql`` selects, each once. The keys are made
    distinct before the bodies are read: a DISTINCT over the versions would compare their bodies."""
    return (f"SELECT {_VERSION_COLUMNS}, c.rkey FROM resource_current c JOIN resource_version v ON v.seq = c.seq"
            f" WHERE c.deleted = 0 AND c.rkey IN ({keys_sql})")


def where_clause(rtype: str | None, tree: Node, args: list[Any], renderer: SqlRenderer,
                 plan: Plan | None = None) -> str:
    """The WHERE clause of a search over ``resource_current c`` (golden tests print it with the static plan)."""
    plan = plan or static_plan(tree)
    # With an index-driven condition (a parameter row, a chain, ids), the type and deleted tests must not be used
    # to pick an index: "+" hides them from the planner, so it looks the matches up by key instead of scanning
    # every resource of the type.
    plus = "+" if plan.driven else ""
    clauses = [f"{plus}c.deleted = 0"]
    if rtype is not None:
        clauses.append(f"{plus}c.rtype = ?")
        args.append(rtype)
    clauses.append(renderer.where(plan.tree, "c", rtype, args))
    return " AND ".join(clauses)


def _probe_clause(rtype: str, tree: Node | None, args: list[Any], renderer: SqlRenderer) -> str:
    """The WHERE clause of a walk over the type's rows in key order: every condition is probed per row (none: the
    walk's keys are all matches, and only their resources are looked up)."""
    args.append(rtype)
    live = "c.deleted = 0 AND c.rtype = ?"
    return live if tree is None else f"{live} AND {renderer.where(tree, 'c', rtype, args, probe=True)}"


def _plan(conn: sqlite3.Connection, rtype: str | None, tree: Node, pid_of: PidOf, limits: PlanLimits) -> Plan:
    if rtype is None or rtype == "Resource":
        return static_plan(tree)
    return choose(conn, tree, lambda node, args: SqlRenderer(pid_of).estimate(node, rtype, args), limits, rtype)


def _count(conn: sqlite3.Connection, rtype: str | None, tree: Node, pid_of: PidOf, limits: PlanLimits) -> int:
    args: list[Any] = []
    where = where_clause(rtype, tree, args, SqlRenderer(pid_of), _plan(conn, rtype, tree, pid_of, limits))
    return int(conn.execute(f"SELECT COUNT(*) FROM resource_current c WHERE {where}", args).fetchone()[0])


def _search(conn: sqlite3.Connection, query: SearchQuery, pid_of: PidOf, limits: PlanLimits) -> SearchPage:
    plan = _plan(conn, query.rtype, query.tree, pid_of, limits)
    renderer = SqlRenderer(pid_of)
    sort_exprs: list[tuple[str, list[Any], bool]] = []
    for sort_key in query.sort:
        expr_args: list[Any] = []
        expr = renderer.sort_expr(sort_key.param, sort_key.descending, "c", expr_args)
        sort_exprs.append((expr, expr_args, sort_key.descending))
    backwards = query.before is not None
    cursor = query.before if backwards else query.after
    limit = query.count + 1

    def select(where: str, where_args: list[Any], extra: str = "", extra_args: tuple[Any, ...] = (),
               rows_wanted: int = limit) -> list[tuple[Any, ...]]:
        args = list(where_args)
        if cursor is not None:
            where += " AND " + keyset_condition(sort_exprs, cursor, "c", args, backwards=backwards)
        where += extra
        args.extend(extra_args)
        rkey_order = f"rkey {'DESC' if backwards else 'ASC'}"
        if not sort_exprs:
            sql = (f"SELECT {_VERSION_COLUMNS}, c.rkey FROM resource_current c JOIN resource_version v"
                   f" ON v.seq = c.seq WHERE {where} ORDER BY c.{rkey_order} LIMIT ?")
            return conn.execute(sql, args + [rows_wanted]).fetchall()
        # Sorted: every match is sorted, so the page's keys are chosen first and only then joined to their
        # versions; joined before the sort, every match's body would go through the sorter.
        select_args: list[Any] = []
        keys = []
        order = []
        for i, (expr, expr_args, descending) in enumerate(sort_exprs):
            select_args.extend(expr_args)
            keys.append(f"{expr} AS k{i}")
            order.append(f"k{i} {'DESC' if descending != backwards else 'ASC'}")
        order.append(rkey_order)
        page = (f"SELECT c.rkey AS rkey, c.seq AS seq, {', '.join(keys)} FROM resource_current c WHERE {where}"
                f" ORDER BY {', '.join(order)} LIMIT ?")
        sql = (f"SELECT {_VERSION_COLUMNS}, p.rkey, {', '.join(f'p.k{i}' for i in range(len(sort_exprs)))}"
               f" FROM ({page}) p JOIN resource_version v ON v.seq = p.seq ORDER BY {', '.join('p.' + o for o in order)}")
        return conn.execute(sql, select_args + args + [rows_wanted]).fetchall()

    driven_args: list[Any] = []
    driven_where = where_clause(query.rtype, query.tree, driven_args, renderer, plan)
    step = "<" if backwards else ">"

    def merged(edge: int | None, wanted: int, most_targets: int) -> list[tuple[Any, ...]] | None:
        """Rows after key ``edge`` (before, backwards) as a merge of the driving chain's targets' referring rows
        (merge.py); None when the driving condition is not a chain of at most ``most_targets`` targets."""
        if sort_exprs or query.rtype is None or not plan.driven or (plan.estimates[0] or 0) < limits.selective:
            return None
        first = plan.tree.items[0] if isinstance(plan.tree, And) else plan.tree
        candidates = chain_candidates(conn, first, pid_of, most_targets, backwards=backwards, edge=edge, chunk=limit)
        if candidates is None:
            return None
        # when the chain is the whole condition its candidates are its matches (index rows exist only for live
        # resources, and the targets were listed in this snapshot): a candidate needs no probe
        exact = first is plan.tree
        probe_args: list[Any] = []
        probe_where = _probe_clause(query.rtype, None if exact else query.tree, probe_args, renderer)
        return verified(candidates, select, probe_where, probe_args, wanted, exact=exact)

    def drive(edge: int | None, wanted: int) -> list[tuple[Any, ...]]:
        """Rows after key ``edge`` (before, backwards) by the driving condition: a chain with few targets as a
        merge of their referring rows, anything else by key."""
        rows = merged(edge, wanted, limits.merge_targets)
        if rows is not None:
            return rows
        if edge is None:
            return select(driven_where, driven_args, rows_wanted=wanted)
        return select(driven_where, driven_args, f" AND c.rkey {step} ?", (edge,), wanted)

    def walked() -> list[tuple[Any, ...]] | None:
        """The page off the patient's date rows (datewalk.py), when the search is a patient's, sorted by one date,
        with enough matches to be worth it; None otherwise."""
        if len(query.sort) != 1 or query.rtype is None or not plan.driven or not plan.estimates \
                or (plan.estimates[0] or 0) < limits.date_walk_from:
            return None
        sort_param = query.sort[0].param
        date_pids = pid_of(query.rtype, sort_param.code) if family_of(sort_param) == "date" else ()
        patient = datewalk.patient_condition(query.tree, query.rtype)
        if len(date_pids) != 1 or patient is None:
            return None
        owner = datewalk.owner_key(conn, date_pids[0], patient[0])
        if owner is None:
            return None
        # a condition with few rows (the patient's, for a code or category) makes the matches few: sorting them
        # costs less than walking past the patient's other resources
        counted = {id(item): rows for item, rows in zip(top_level(plan.tree), plan.estimates)}
        for item in top_level(patient[1]) if patient[1] is not None else []:
            rows = datewalk.patient_rows(conn, item, pid_of, owner, limits.cap)
            if rows is None:
                rows = counted.get(id(item))
            if rows is None:
                rows = estimate_rows(conn, item, lambda node, args: renderer.estimate(node, query.rtype, args),
                                     limits.cap)
            if rows is not None and rows < limits.date_walk_from:
                return None
        probe_args: list[Any] = []  # the owner stands for the patient condition: the rest is probed
        probe_where = _probe_clause(query.rtype, patient[1], probe_args, renderer)
        return datewalk.walk(conn, date_pid=date_pids[0], owner=owner, descending=query.sort[0].descending,
                             backwards=backwards, cursor=cursor, probe_where=probe_where, probe_args=probe_args,
                             limit=limit, window=limits.date_walk, version_columns=_VERSION_COLUMNS)

    rows: list[tuple[Any, ...]] = []
    by_date = walked() if query.count > 0 and sort_exprs else None
    if by_date is not None:
        rows = by_date
    elif query.count > 0:
        edge = cast(int, cursor[-1]) if cursor is not None and not sort_exprs else None
        early = merged(edge, limit, min(limits.merge_first, limits.merge_targets)) if plan.broad else None
        if early is not None:
            rows = early
        elif plan.broad and not sort_exprs and query.rtype is not None:
            rows = _windowed(conn, query.rtype, query.tree, renderer, select, drive, cursor, backwards, limit,
                             limits.windows)
        else:
            rows = drive(edge, limit)
    more = len(rows) > query.count
    rows = rows[: query.count]
    if backwards:
        rows.reverse()
    nsort = len(sort_exprs)

    def cursor_key(row: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(row[9: 9 + nsort]) + (row[8],)

    # forwards, ``more`` means rows follow; backwards, rows precede (and the page we came from follows)
    after = cursor_key(rows[-1]) if rows and (backwards or more) else None
    before = cursor_key(rows[0]) if rows and (query.after is not None or (backwards and more)) else None
    total = None
    if query.total:
        total = int(conn.execute(f"SELECT COUNT(*) FROM resource_current c WHERE {driven_where}",
                                 driven_args).fetchone()[0])
    return SearchPage([_version(r) for r in rows], [r[8] for r in rows], after, total, before)


def _windowed(conn: sqlite3.Connection, rtype: str, tree: Node, renderer: SqlRenderer,
              select: Callable[..., list[tuple[Any, ...]]], drive: Callable[[int | None, int], list[tuple[Any, ...]]],
              cursor: tuple[Any, ...] | None, backwards: bool, limit: int,
              windows: tuple[int, ...]) -> list[tuple[Any, ...]]:
    """Rows in key order for a search whose conditions are all broad: probe the type's rows window by window
    (see ``plan.py``); if the windows do not fill the page, the driving plan continues after the last window.

    Broad is not dense: 1,000 matches among millions of rows would leave every window nearly empty. So after each
    window the walk projects the matches the remaining windows would find at the density seen so far, and hands
    over to the driving plan as soon as they could not fill the page."""
    probe_args: list[Any] = []
    probe_where = _probe_clause(rtype, tree, probe_args, renderer)
    step = "<" if backwards else ">"
    edge = cursor[-1] if cursor is not None else None  # the key the walk starts after (before, backwards)
    rows: list[tuple[Any, ...]] = []
    walked = 0
    for i, size in enumerate(windows):
        if walked and len(rows) * sum(windows[i:]) < (limit - len(rows)) * walked:
            break  # too sparse: the rest of the windows would not fill the page
        bound_sql = ("SELECT rkey FROM resource_current WHERE rtype = ? AND deleted = 0"
                     + (f" AND rkey {step} ?" if edge is not None else "")
                     + f" ORDER BY rkey {'DESC' if backwards else 'ASC'} LIMIT 1 OFFSET ?")
        bound_args = [rtype, *([edge] if edge is not None else []), size - 1]
        found = conn.execute(bound_sql, bound_args).fetchone()
        window = ""
        window_args: list[Any] = []
        if edge is not None:
            window += f" AND c.rkey {step} ?"
            window_args.append(edge)
        if found is not None:
            window += f" AND c.rkey {'>=' if backwards else '<='} ?"
            window_args.append(found[0])
        rows += select(probe_where, probe_args, window, tuple(window_args), limit - len(rows))
        if len(rows) >= limit or found is None:
            return rows
        edge = found[0]
        walked += size
    if edge is None:  # handed over before any window: drive from the start (or the cursor)
        return drive(None, limit)
    return rows + drive(edge, limit - len(rows))


class _Tx(_Reads, WriteTx):
    """One write unit. Index rows wait in ``_pending`` until the unit ends (:meth:`finish`) or reads: every read
    goes through ``_run`` or ``_one``, which insert them first, so the unit always reads its own writes."""

    def __init__(self, store: SqliteStore, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._store = store
        self._pids = store._pids
        self._limits = store._limits
        self._pending = PendingRows()
        self._owner_keys: dict[str, int] = {}  # patient id -> key, as found in this unit

    def _owner_key(self, patient_id: str) -> int:
        """The key of the patient a resource points at (its token rows' owner; schema.py), or UNKNOWN_OWNER when
        that patient has not been written (before this resource, in this unit or earlier)."""
        key = self._owner_keys.get(patient_id)
        if key is None:
            row = self._conn.execute("SELECT rkey FROM resource_current WHERE rtype = ? AND rid = ?",
                                     (schema.OWNER_TYPE, patient_id)).fetchone()
            if row is None:
                return schema.UNKNOWN_OWNER  # not remembered: the patient may be written later in this unit
            key = self._owner_keys[patient_id] = row[0]
        return key

    def finish(self) -> None:
        if self._pending:
            self._pending.flush(self._conn)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self.finish()
        return fn(self._conn)

    def _one(self, sql: str, args: tuple[Any, ...]) -> Version | None:
        self.finish()
        return super()._one(sql, args)

    async def put(self, rtype: str, rid: str, resource: dict[str, Any] | None, *, method: str,
                  prepared: object | None = None) -> Version:
        conn = self._conn
        prev = conn.execute(
            "SELECT rkey, vid, deleted FROM resource_current WHERE rtype = ? AND rid = ?", (rtype, rid)
        ).fetchall()
        vid = prev[0][1] + 1 if prev else 1
        last_updated = self._store.next_timestamp()
        deleted = resource is None
        final = None if resource is None else stamped(resource, rid, vid, last_updated)
        body = b"" if final is None else jsonio.dumps(final)
        seq = conn.execute(
            "INSERT INTO resource_version (rtype, rid, vid, last_updated, method, deleted, body)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (rtype, rid, vid, last_updated, method, int(deleted), body),
        ).lastrowid
        assert seq is not None
        if prev:
            rkey = prev[0][0]
            self.finish()  # rows this unit wrote for it are deleted too
            conn.execute("UPDATE resource_current SET vid = ?, seq = ?, deleted = ? WHERE rkey = ?",
                         (vid, seq, int(deleted), rkey))
            for family in schema.FAMILY_COLUMNS:
                conn.execute(f"DELETE FROM idx_{family} WHERE rkey = ?", (rkey,))
            conn.execute("DELETE FROM idx_text WHERE rkey = ?", (rkey,))
        else:
            rkey = conn.execute(
                "INSERT INTO resource_current (rtype, rid, vid, seq, deleted) VALUES (?, ?, ?, ?, ?)",
                (rtype, rid, vid, seq, int(deleted)),
            ).lastrowid
        if final is not None:
            if isinstance(prepared, IndexRows) and prepared.rtype == rtype and prepared.rid == rid:
                index = prepared  # built ahead of the unit from exactly this resource (fhir_server.prepare)
            else:
                index = index_rows(self._pids, rtype, rid, final)
            owner = index.owner
            if isinstance(owner, str):
                owner = self._owner_key(owner)
            self._pending.add(rkey, index, last_updated_rows(self._pids, rtype, last_updated), owner)
        op = "delete" if deleted else "create" if not prev or prev[0][2] else "update"
        conn.execute(
            "INSERT INTO outbox (version_seq, rtype, rid, vid, op, recorded_at) VALUES (?, ?, ?, ?, ?, ?)",
            (seq, rtype, rid, vid, op, last_updated),
        )
        return Version(rtype, rid, vid, last_updated, deleted, method, body, seq)


class SqliteStore(_Reads, Store):
    def __init__(self, path: str, *, synchronous: str = "FULL", search_threads: int = 2,
                 plan_limits: PlanLimits = DEFAULT_LIMITS, wal_backstop_pages: int = BACKSTOP_PAGES) -> None:
        self.path = path
        self._wal_backstop_pages = wal_backstop_pages
        self._limits = plan_limits
        self._synchronous = synchronous
        self._last_millis = 0
        self._last_stamp = ""  # the last lastUpdated this process gave out
        self._lock: WriteLock | None = None
        self._writer_conn: sqlite3.Connection | None = None
        self._writer: GroupCommitWriter | None = None
        self._checkpointer: Checkpointer | None = None
        self._pids: dict[tuple[str, str], int] = {}
        self._local = threading.local()
        self._search_threads = search_threads
        self._pool: ThreadPoolExecutor | None = None
        self._thread_conns: list[sqlite3.Connection] = []

    async def open(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._lock = WriteLock(self.path)
        self._lock.open()
        # another process may be migrating or writing: wait for it on a thread, not on the event loop
        await asyncio.get_running_loop().run_in_executor(None, self._lock.acquire)
        try:
            wconn = schema.connect(self.path, synchronous=self._synchronous)
            schema.migrate(wconn)
            self._register_params(wconn)
            self._catch_up_clock(wconn)
            refresh_statistics(wconn)
        finally:
            self._lock.release()
        self._writer_conn = wconn
        self._checkpointer = Checkpointer(self.path, synchronous=self._synchronous,
                                          backstop_pages=self._wal_backstop_pages)
        self._checkpointer.start(wconn)
        self._writer = GroupCommitWriter(wconn, self._lock, self._catch_up_clock, self._checkpointer.committed)
        self._writer.start()
        self._conn = schema.connect(self.path, synchronous=self._synchronous)
        self._pool = ThreadPoolExecutor(max_workers=self._search_threads, thread_name_prefix="aegis-search")

    def index_preparer(self) -> RowPreparer:
        return RowPreparer(dict(self._pids))

    def _register_params(self, conn: sqlite3.Connection) -> None:
        """Give every (type, parameter) a stable small id; the index rows carry it instead of two strings."""
        from resources.model import resource_types

        known = {(r, c): pid for pid, r, c in conn.execute("SELECT pid, rtype, code FROM search_param")}
        wanted = []
        for rtype in sorted(resource_types()):
            for code, p in sorted(params_for(rtype).items()):
                wanted.append((rtype, code))
                if p.type == "token":  # identifier :of-type values are indexed as a composite of their own
                    wanted.append((rtype, f"{code}:of-type"))
        missing = [key for key in wanted if key not in known]
        if missing:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT OR IGNORE INTO search_param (rtype, code) VALUES (?, ?)", missing)
            conn.execute("COMMIT")
            known = {(r, c): pid for pid, r, c in conn.execute("SELECT pid, rtype, code FROM search_param")}
        self._pids = known

    def _thread_conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = schema.connect(self.path, synchronous=self._synchronous)
            self._local.conn = conn
            self._thread_conns.append(conn)
        return conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._pool is not None, "store is not open"
        return await asyncio.get_running_loop().run_in_executor(self._pool, lambda: fn(self._thread_conn()))

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.close()
            self._writer = None
        if self._checkpointer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._checkpointer.close)
            self._checkpointer = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for conn in self._thread_conns:
            conn.close()
        self._thread_conns.clear()
        if self._writer_conn is not None:
            self._writer_conn.close()
            self._writer_conn = None
        if getattr(self, "_conn", None) is not None:
            self._conn.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _catch_up_clock(self, conn: sqlite3.Connection) -> None:
        """Under the write lock: never stamp before the newest lastUpdated in the store, which another process
        (a worker, ``aegis load``) may have written since this one last did."""
        latest = conn.execute("SELECT MAX(last_updated) FROM resource_version").fetchone()[0]
        if latest and latest != self._last_stamp:
            self._last_millis = max(self._last_millis, _parse_instant_millis(latest))

    def next_timestamp(self) -> str:
        # Non-decreasing even if the wall clock steps back, so lastUpdated order never contradicts write order.
        self._last_millis = max(self._last_millis, time.time_ns() // 1_000_000)
        self._last_stamp = format_instant(self._last_millis)
        return self._last_stamp

    async def transact(self, unit: Callable[[WriteTx], Awaitable[T]]) -> T:
        assert self._writer is not None and self._writer_conn is not None, "store is not open"
        tx = _Tx(self, self._writer_conn)

        async def run() -> T:
            result = await unit(tx)
            tx.finish()  # inside the unit's savepoint: a failure here undoes the unit
            return result

        return cast(T, await self._writer.submit(run))

    async def outbox_read(self, consumer: str, limit: int = 100) -> list[OutboxEvent]:
        rows = self._conn.execute(
            "SELECT seq, rtype, rid, vid, op, recorded_at FROM outbox WHERE seq > COALESCE("
            "(SELECT position FROM outbox_consumer WHERE name = ?), 0) ORDER BY seq LIMIT ?",
            (consumer, limit),
        ).fetchall()
        return [OutboxEvent(*row) for row in rows]

    async def outbox_ack(self, consumer: str, seq: int) -> None:
        conn = self._writer_conn
        assert conn is not None

        async def unit(_: WriteTx) -> None:
            conn.execute(
                "INSERT INTO outbox_consumer (name, position) VALUES (?, ?) ON CONFLICT (name)"
                " DO UPDATE SET position = MAX(position, excluded.position)",
                (consumer, seq),
            )

        await self.transact(unit)


def _parse_instant_millis(value: str) -> int:
    base, _, frac = value.rstrip("Z").partition(".")
    secs = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    return secs * 1000 + int((frac + "000")[:3])
