"""SQLite schema of the embedded store and the connection settings every connection gets.

Resources: every version in ``resource_version``; ``resource_current`` maps (type, id) to the newest version and
gives each resource a small integer key (``rkey``) that the search index refers to. The search index keeps one table
per value family (string, token, reference, date, number, quantity, uri, composite), each row keyed by the
parameter (``pid``, from ``search_param``) and the resource; a parameter becomes an ``IN`` over its family table.
"""

from __future__ import annotations

import logging
import sqlite3

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3  # 3: each family's key index covers the columns a per-row probe reads

FAMILY_COLUMNS: dict[str, tuple[str, ...]] = {
    "string": ("norm", "exact"),
    "token": ("system", "code", "text"),
    "reference": ("target_type", "target_id", "url", "ident_system", "ident_value"),
    "date": ("lo", "hi"),
    "number": ("value", "lo", "hi"),
    "quantity": ("value", "lo", "hi", "system", "code", "unit", "canon_value", "canon_lo", "canon_hi", "canon_code"),
    "uri": ("uri",),
    "composite": ("parts",),
}

FAMILY_INDEXES: dict[str, tuple[tuple[str, ...], ...]] = {
    "string": (("pid", "norm"),),
    "token": (("pid", "code", "system"),),
    "reference": (("pid", "target_id", "target_type"), ("target_id", "target_type"), ("pid", "url")),
    "date": (("pid", "lo"), ("pid", "hi")),
    "number": (("pid", "value"),),
    "quantity": (("pid", "code", "value"), ("pid", "canon_code", "canon_value")),
    "uri": (("pid", "uri"),),
    "composite": (("pid",),),
}

# The key index of each family, (rkey, pid, …): a probe ("does this resource have a matching value?") and a sort
# key read it alone, never the table. Wide columns that only rare modifiers read (token text, reference url and
# identifier, composite parts) stay out. Key order also makes its inserts appends, whatever its width.
FAMILY_KEY_COLUMNS: dict[str, tuple[str, ...]] = {
    family: tuple(c for c in columns if c not in ("text", "url", "ident_system", "ident_value", "parts"))
    for family, columns in FAMILY_COLUMNS.items()
}


def _key_index_ddl(family: str) -> str:
    return (f"CREATE INDEX IF NOT EXISTS idx_{family}_by_rkey ON idx_{family} "
            f"({', '.join(('rkey', 'pid') + FAMILY_KEY_COLUMNS[family])})")


def _index_ddl() -> str:
    out = []
    for family, columns in FAMILY_COLUMNS.items():
        table = f"idx_{family}"
        out.append(f"CREATE TABLE IF NOT EXISTS {table} (pid INTEGER NOT NULL, rkey INTEGER NOT NULL, "
                   + ", ".join(columns) + ");")
        for cols in FAMILY_INDEXES[family]:
            out.append(f"CREATE INDEX IF NOT EXISTS {table}_{'_'.join(cols)} ON {table} ({', '.join(cols)}, rkey);")
        out.append(_key_index_ddl(family) + ";")
    return "\n".join(out)


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
    rkey    INTEGER PRIMARY KEY,
    rtype   TEXT    NOT NULL,
    rid     TEXT    NOT NULL,
    vid     INTEGER NOT NULL,
    seq     INTEGER NOT NULL,
    deleted INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS resource_current_key ON resource_current (rtype, rid);
CREATE INDEX IF NOT EXISTS resource_current_type ON resource_current (rtype, deleted, rkey);

CREATE TABLE IF NOT EXISTS search_param (
    pid   INTEGER PRIMARY KEY,
    rtype TEXT NOT NULL,
    code  TEXT NOT NULL,
    UNIQUE (rtype, code)
);

CREATE TABLE IF NOT EXISTS idx_text (
    rkey      INTEGER PRIMARY KEY,
    narrative TEXT NOT NULL,
    content   TEXT NOT NULL
);

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
""" + _index_ddl()


def connect(path: str, *, synchronous: str, readonly: bool = False) -> sqlite3.Connection:
    # isolation_level=None: transactions are opened and closed explicitly by the writer, never implicitly.
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, cached_statements=512)
    conn.execute("PRAGMA busy_timeout = 10000")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("PRAGMA cache_size = -131072")
    conn.execute("PRAGMA mmap_size = 1073741824")
    conn.execute("PRAGMA temp_store = MEMORY")
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    row = None
    try:
        row = conn.execute("SELECT value FROM store_meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.OperationalError:
        pass
    if row is not None and int(row[0]) == 2:
        _migrate_2_to_3(conn)
    elif row is not None and int(row[0]) != SCHEMA_VERSION:
        raise RuntimeError(
            f"the store was written with schema version {row[0]}; this Aegis uses {SCHEMA_VERSION}. "
            "Reload the data into a fresh --data-dir (aegis load)."
        )
    conn.executescript(DDL)
    conn.execute(
        "INSERT OR IGNORE INTO store_meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
    )


def _migrate_2_to_3(conn: sqlite3.Connection) -> None:
    """Version 2's key indexes held the key alone: replace them with the covering ones, in one transaction (a
    crash leaves the store at version 2, to migrate again)."""
    log.warning("migrating the SQLite store to schema version 3: building covering key indexes "
                "(about 4 minutes for a 16 GiB store)")
    conn.execute("BEGIN IMMEDIATE")
    try:
        for family in FAMILY_COLUMNS:
            conn.execute(f"DROP INDEX IF EXISTS idx_{family}_rkey")
            conn.execute(_key_index_ddl(family))
        conn.execute("UPDATE store_meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
