"""SQLite schema of the embedded store and the connection settings every connection gets.

Resources: every version in ``resource_version``; ``resource_current`` maps (type, id) to the newest version and
gives each resource a small integer key (``rkey``) that the search index refers to. The search index keeps one table
per value family (string, token, reference, date, number, quantity, uri, composite), each row keyed by the
parameter (``pid``, from ``search_param``) and the resource; a parameter becomes an ``IN`` over its family table.

Token and date rows also carry their resource's *owner*: the key (``rkey``) of the patient it points at through its
``patient`` parameter. So ``Patient?_has:Observation:patient:code=X`` can ask "does this patient have an observation
with code X" with one index lookup (``(pid, code, owner)``) instead of walking every observation of the patient, or
every observation with the code; and ``Observation?patient=X&_sort=-date`` can read the patient's observations
newest first off ``(pid, owner, lo)`` and stop at the page, instead of sorting all of them.
"""

from __future__ import annotations

import logging
import sqlite3

log = logging.getLogger(__name__)

SCHEMA_VERSION = 5  # 3: each family's key index covers the columns a per-row probe reads; 4: token owners;
# 5: date owners

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

# Columns a family's rows carry besides their value's (rows.py appends them after the value's columns)
ROW_EXTRA_COLUMNS: dict[str, tuple[str, ...]] = {"token": ("owner",), "date": ("owner",)}

FAMILY_INDEXES: dict[str, tuple[tuple[str, ...], ...]] = {
    "string": (("pid", "norm"),),
    # owner before system: a code alone (no system) still seeks to one patient's rows
    "token": (("pid", "code", "owner", "system"),),
    "reference": (("pid", "target_id", "target_type"), ("target_id", "target_type"), ("pid", "url")),
    "date": (("pid", "lo"), ("pid", "hi"), ("pid", "owner", "lo")),
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


# The parameter whose reference makes a resource's owner, and the type it must point at.
OWNER_PARAM = "patient"
OWNER_TYPE = "Patient"
# The owner of a resource that points at several patients, or at one that did not exist yet when the resource was
# written (no patient at all: NULL). Searches confirm these through the reference itself; a later write of the
# resource resolves them. (The store resolves a patient's key as the resource is written: store.py.)
UNKNOWN_OWNER = -1


def _table_columns(family: str) -> tuple[str, ...]:
    return FAMILY_COLUMNS[family] + ROW_EXTRA_COLUMNS.get(family, ())


# Declared types: a value column has none (it holds what its value class gives), but ``owner`` is compared with a
# patient's ``rkey``, and SQLite uses an index for ``owner = c.rkey`` only if the column has integer affinity too.
_COLUMN_TYPES = {"owner": " INTEGER"}


def _table_ddl(family: str, name: str | None = None) -> str:
    return (f"CREATE TABLE IF NOT EXISTS {name or f'idx_{family}'} (pid INTEGER NOT NULL, rkey INTEGER NOT NULL, "
            + ", ".join(c + _COLUMN_TYPES.get(c, "") for c in _table_columns(family)) + ")")


def _value_indexes_ddl(family: str) -> list[str]:
    table = f"idx_{family}"
    return [f"CREATE INDEX IF NOT EXISTS {table}_{'_'.join(cols)} ON {table} ({', '.join(cols)}, rkey)"
            for cols in FAMILY_INDEXES[family]]


def _key_index_ddl(family: str) -> str:
    return (f"CREATE INDEX IF NOT EXISTS idx_{family}_by_rkey ON idx_{family} "
            f"({', '.join(('rkey', 'pid') + FAMILY_KEY_COLUMNS[family])})")


def _index_ddl() -> str:
    out = []
    for family in FAMILY_COLUMNS:
        out.append(_table_ddl(family) + ";")
        out.extend(ddl + ";" for ddl in _value_indexes_ddl(family))
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
        row = (3,)
    if row is not None and int(row[0]) == 3:
        _add_owners(conn, "token", 4)
        row = (4,)
    if row is not None and int(row[0]) == 4:
        _add_owners(conn, "date", 5)
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
        conn.execute("UPDATE store_meta SET value = '3' WHERE key = 'schema_version'")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


_OWNER_MIGRATIONS = {"token": "token rows get their patient (about 4 minutes for a 19 GiB store)",
                     "date": "date rows get their patient (about 2 minutes for a 19 GiB store)"}


def _add_owners(conn: sqlite3.Connection, family: str, version: int) -> None:
    """The family's rows had no owner (token before version 4, date before 5): copy them into a table that has, with
    the owner each resource gets from its ``patient`` references, and index it (one transaction; a crash leaves the
    store at the version before). A copy rather than an ``UPDATE``: every row grows, and rows rewritten in place
    would split nearly every page."""
    log.warning("migrating the SQLite store to schema version %d: %s", version, _OWNER_MIGRATIONS[family])
    owner_pids = [pid for (pid,) in conn.execute("SELECT pid FROM search_param WHERE code = ?", (OWNER_PARAM,))]
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TEMP TABLE owner_of (rkey INTEGER PRIMARY KEY, owner INTEGER NOT NULL)")
        conn.execute(
            f"INSERT INTO owner_of SELECT g.rkey, CASE WHEN g.patients > 1 THEN {UNKNOWN_OWNER} ELSE COALESCE("
            f"(SELECT o.rkey FROM resource_current o WHERE o.rtype = ? AND o.rid = g.patient), {UNKNOWN_OWNER}) END"
            f" FROM (SELECT rkey, COUNT(DISTINCT target_id) AS patients, MIN(target_id) AS patient"
            f" FROM idx_reference WHERE pid IN ({','.join('?' * len(owner_pids))}) AND target_type = ?"
            f" AND target_id IS NOT NULL GROUP BY rkey) g", (OWNER_TYPE, *owner_pids, OWNER_TYPE))
        table = f"idx_{family}"
        conn.execute(_table_ddl(family, f"{table}_v{version}"))
        columns = ("pid", "rkey") + FAMILY_COLUMNS[family]
        conn.execute(f"INSERT INTO {table}_v{version} ({', '.join(columns)}, owner)"
                     f" SELECT {', '.join(f't.{c}' for c in columns)}, o.owner"
                     f" FROM {table} t LEFT JOIN owner_of o ON o.rkey = t.rkey ORDER BY t.rowid")
        conn.execute(f"DROP TABLE {table}")
        conn.execute(f"ALTER TABLE {table}_v{version} RENAME TO {table}")
        for ddl in (*_value_indexes_ddl(family), _key_index_ddl(family)):
            conn.execute(ddl)
        conn.execute("DROP TABLE temp.owner_of")
        conn.execute("UPDATE store_meta SET value = ? WHERE key = 'schema_version'", (str(version),))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
