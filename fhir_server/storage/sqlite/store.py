"""The SQLite implementation of the storage interface.

Reads run on the event loop over their own connection: in WAL mode they never wait for the writer, and a point read
costs a few microseconds, less than a hop to a thread. Writes go through :class:`GroupCommitWriter`.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fhir_server.search.criteria import Criteria
from fhir_server.storage.base import HistoryQuery, OutboxEvent, Page, ReadOps, Store, Version, WriteTx
from fhir_server.storage.sqlite import schema
from fhir_server.storage.sqlite.writer import GroupCommitWriter
from resources.canonical import finalize, identifiers

T = TypeVar("T")

_VERSION_COLUMNS = "v.rtype, v.rid, v.vid, v.last_updated, v.deleted, v.method, v.body, v.seq"


def _version(row: tuple[Any, ...]) -> Version:
    return Version(row[0], row[1], row[2], row[3], bool(row[4]), row[5], row[6], row[7])


def format_instant(millis: int) -> str:
    secs, ms = divmod(millis, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{ms:03d}Z"


def _criteria_sql(criteria: Criteria, alias: str, args: list[Any]) -> str:
    clauses: list[str] = []
    for ids in criteria.ids:
        clauses.append(f"{alias}.rid IN ({','.join('?' * len(ids))})")
        args.extend(ids)
    for tokens in criteria.identifiers:
        ors: list[str] = []
        for tok in tokens:
            parts = []
            if tok.code is not None:
                parts.append("i.value = ?")
                args.append(tok.code)
            if tok.system is not None:
                parts.append("i.system = ?")
                args.append(tok.system)
            ors.append("(" + " AND ".join(parts or ["1"]) + ")")
        clauses.append(
            f"EXISTS (SELECT 1 FROM identifier_index i WHERE i.rtype = {alias}.rtype AND i.rid = {alias}.rid"
            f" AND ({' OR '.join(ors)}))"
        )
    return "".join(f" AND {c}" for c in clauses)


class _Reads(ReadOps):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

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
        versions = [_version(r) for r in self._conn.execute(sql, args).fetchall()]
        more = len(versions) > query.count
        versions = versions[: query.count]
        return Page(versions, versions[-1].seq if more and versions else None)

    async def find(self, rtype: str, criteria: Criteria, *, limit: int, after_seq: int | None = None) -> Page:
        args: list[Any] = [rtype]
        sql = (
            f"SELECT {_VERSION_COLUMNS} FROM resource_current c JOIN resource_version v ON v.seq = c.seq"
            " WHERE c.rtype = ? AND c.deleted = 0"
        )
        sql += _criteria_sql(criteria, "c", args)
        if after_seq is not None:
            sql += " AND c.seq > ?"
            args.append(after_seq)
        sql += " ORDER BY c.seq LIMIT ?"
        args.append(limit + 1)
        versions = [_version(r) for r in self._conn.execute(sql, args).fetchall()]
        more = len(versions) > limit
        versions = versions[:limit]
        return Page(versions, versions[-1].seq if more and versions else None)


    async def count(self, rtype: str, criteria: Criteria) -> int:
        args: list[Any] = [rtype]
        sql = "SELECT COUNT(*) FROM resource_current c WHERE c.rtype = ? AND c.deleted = 0"
        sql += _criteria_sql(criteria, "c", args)
        return int(self._conn.execute(sql, args).fetchall()[0][0])


class _Tx(_Reads, WriteTx):
    def __init__(self, store: SqliteStore, conn: sqlite3.Connection) -> None:
        super().__init__(conn)
        self._store = store

    async def put(self, rtype: str, rid: str, resource: dict[str, Any] | None, *, method: str) -> Version:
        conn = self._conn
        prev = conn.execute(
            "SELECT vid, deleted FROM resource_current WHERE rtype = ? AND rid = ?", (rtype, rid)
        ).fetchall()
        vid = prev[0][0] + 1 if prev else 1
        last_updated = self._store.next_timestamp()
        deleted = resource is None
        body = b"" if resource is None else finalize(resource, rid, vid, last_updated)
        seq = conn.execute(
            "INSERT INTO resource_version (rtype, rid, vid, last_updated, method, deleted, body)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (rtype, rid, vid, last_updated, method, int(deleted), body),
        ).lastrowid
        assert seq is not None
        conn.execute(
            "INSERT INTO resource_current (rtype, rid, vid, seq, deleted) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (rtype, rid) DO UPDATE SET vid = excluded.vid, seq = excluded.seq,"
            " deleted = excluded.deleted",
            (rtype, rid, vid, seq, int(deleted)),
        )
        if prev:
            conn.execute("DELETE FROM identifier_index WHERE rtype = ? AND rid = ?", (rtype, rid))
        if resource is not None:
            idents = identifiers(resource)
            if idents:
                conn.executemany(
                    "INSERT INTO identifier_index (rtype, rid, system, value) VALUES (?, ?, ?, ?)",
                    [(rtype, rid, system, value) for system, value in idents],
                )
        op = "delete" if deleted else "create" if not prev or prev[0][1] else "update"
        conn.execute(
            "INSERT INTO outbox (version_seq, rtype, rid, vid, op, recorded_at) VALUES (?, ?, ?, ?, ?, ?)",
            (seq, rtype, rid, vid, op, last_updated),
        )
        return Version(rtype, rid, vid, last_updated, deleted, method, body, seq)


class SqliteStore(_Reads, Store):
    def __init__(self, path: str, *, synchronous: str = "FULL") -> None:
        self.path = path
        self._synchronous = synchronous
        self._last_millis = 0
        self._writer_conn: sqlite3.Connection | None = None
        self._writer: GroupCommitWriter | None = None

    async def open(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        wconn = schema.connect(self.path, synchronous=self._synchronous)
        schema.migrate(wconn)
        latest = wconn.execute("SELECT MAX(last_updated) FROM resource_version").fetchone()[0]
        if latest:
            self._last_millis = _parse_instant_millis(latest)
        self._writer_conn = wconn
        self._writer = GroupCommitWriter(wconn)
        self._writer.start()
        super().__init__(schema.connect(self.path, synchronous=self._synchronous))

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.close()
            self._writer = None
        if self._writer_conn is not None:
            self._writer_conn.close()
            self._writer_conn = None
        if getattr(self, "_conn", None) is not None:
            self._conn.close()

    def next_timestamp(self) -> str:
        # Non-decreasing even if the wall clock steps back, so lastUpdated order never contradicts write order.
        self._last_millis = max(self._last_millis, time.time_ns() // 1_000_000)
        return format_instant(self._last_millis)

    async def transact(self, unit: Callable[[WriteTx], Awaitable[T]]) -> T:
        assert self._writer is not None and self._writer_conn is not None, "store is not open"
        tx = _Tx(self, self._writer_conn)
        result: T = await self._writer.submit(lambda: unit(tx))
        return result

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
    import calendar

    base, _, frac = value.rstrip("Z").partition(".")
    secs = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    return secs * 1000 + int((frac + "000")[:3])
