"""SQLite schema of the embedded store and the connection settings every connection gets."""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 1

DDL = """
CREATE TABLE IF NOT EXISTS resource_version (
    seq          INTEGER PRIMARY KEY,
    rtype        TEXT    NOT NULL,
    rid          TEXT    NOT NULL,
    vid          INTEGER NOT NULL,
    last_updated TEXT    NOT NULL,
    method       TEXT    NOT NULL,
    deleted      INTEGER NOT NULL,
    body         BLOB    NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS resource_version_key ON resource_version (rtype, rid, vid);
CREATE INDEX IF NOT EXISTS resource_version_type ON resource_version (rtype, seq);
CREATE INDEX IF NOT EXISTS resource_version_time ON resource_version (last_updated);

CREATE TABLE IF NOT EXISTS resource_current (
    rtype   TEXT    NOT NULL,
    rid     TEXT    NOT NULL,
    vid     INTEGER NOT NULL,
    seq     INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    PRIMARY KEY (rtype, rid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS resource_current_type ON resource_current (rtype, deleted, seq);

CREATE TABLE IF NOT EXISTS identifier_index (
    rtype  TEXT NOT NULL,
    rid    TEXT NOT NULL,
    system TEXT NOT NULL,
    value  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS identifier_index_value ON identifier_index (rtype, value, system);
CREATE INDEX IF NOT EXISTS identifier_index_resource ON identifier_index (rtype, rid);

CREATE TABLE IF NOT EXISTS outbox (
    seq          INTEGER PRIMARY KEY,
    version_seq  INTEGER NOT NULL,
    rtype        TEXT    NOT NULL,
    rid          TEXT    NOT NULL,
    vid          INTEGER NOT NULL,
    op           TEXT    NOT NULL,
    recorded_at  TEXT    NOT NULL
);

CREATE TABLE IF NOT EXISTS outbox_consumer (
    name     TEXT PRIMARY KEY,
    position INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS store_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""


def connect(path: str, *, synchronous: str, readonly: bool = False) -> sqlite3.Connection:
    # isolation_level=None: transactions are opened and closed explicitly by the writer, never implicitly.
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, cached_statements=256)
    conn.execute("PRAGMA busy_timeout = 10000")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("PRAGMA cache_size = -65536")
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    conn.executescript(DDL)
    conn.execute(
        "INSERT OR IGNORE INTO store_meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
    )
