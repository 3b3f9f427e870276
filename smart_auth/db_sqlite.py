"""The SQLite implementation of :class:`smart_auth.db.AuthDB`: the file ``DATA_DIR/auth.db``.

Every call is one short statement or ``BEGIN IMMEDIATE`` transaction, run inline under a lock; WAL mode lets the
``aegis clients|users|keys`` commands write while servers on the same data directory read.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from smart_auth.db import Client, ItemTable, KeyRow, TokenRow, User, now

SCHEMA = """
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL, secret_hash TEXT,
    redirect_uris TEXT NOT NULL, scope TEXT NOT NULL, jwks TEXT, jwks_url TEXT, launch_url TEXT,
    created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, fhir_user TEXT, name TEXT, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    kid TEXT PRIMARY KEY, private_jwk TEXT NOT NULL, created INTEGER NOT NULL, retired INTEGER);
CREATE TABLE IF NOT EXISTS pending (
    id TEXT PRIMARY KEY, data TEXT NOT NULL, expires INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS launches (
    id TEXT PRIMARY KEY, data TEXT NOT NULL, expires INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS codes (
    code_hash TEXT PRIMARY KEY, data TEXT NOT NULL, expires INTEGER NOT NULL, used INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY, kind TEXT NOT NULL, family TEXT NOT NULL, client_id TEXT NOT NULL,
    data TEXT NOT NULL, issued INTEGER NOT NULL, expires INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS tokens_family ON tokens(family);
CREATE TABLE IF NOT EXISTS jtis (
    client_id TEXT NOT NULL, jti TEXT NOT NULL, expires INTEGER NOT NULL, PRIMARY KEY (client_id, jti));
"""


class SqliteAuthDB:
    remote = False
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA busy_timeout=10000")
        self._conn.executescript(SCHEMA)

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _one(self, sql: str, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        with self._lock:
            row = self._conn.execute(sql, args).fetchone()
        return tuple(row) if row is not None else None

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return [tuple(r) for r in self._conn.execute(sql, args).fetchall()]

    # ---- clients ----------------------------------------------------------------------------------------------

    def put_client(self, c: Client) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO clients VALUES (?,?,?,?,?,?,?,?,?,?)",
                       (c.client_id, c.name, c.kind, c.secret_hash, json.dumps(c.redirect_uris), c.scope,
                        json.dumps(c.jwks) if c.jwks else None, c.jwks_url, c.launch_url, now()))

    def client(self, client_id: str) -> Client | None:
        row = self._one("SELECT client_id, name, kind, redirect_uris, scope, secret_hash, jwks, jwks_url, launch_url "
                        "FROM clients WHERE client_id = ?", (client_id,))
        return None if row is None else _client(row)

    def clients(self) -> list[Client]:
        return [_client(r) for r in self._all("SELECT client_id, name, kind, redirect_uris, scope, secret_hash, jwks, "
                                              "jwks_url, launch_url FROM clients ORDER BY created, client_id")]

    def remove_client(self, client_id: str) -> bool:
        with self._tx() as db:
            gone = db.execute("DELETE FROM clients WHERE client_id = ?", (client_id,)).rowcount
            db.execute("UPDATE tokens SET revoked = 1 WHERE client_id = ?", (client_id,))
        return gone > 0

    # ---- users ------------------------------------------------------------------------------------------------

    def put_user(self, u: User) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO users VALUES (?,?,?,?,?)",
                       (u.username, u.password_hash, u.fhir_user, u.name, now()))

    def user(self, username: str) -> User | None:
        row = self._one("SELECT username, password_hash, fhir_user, name FROM users WHERE username = ?", (username,))
        return None if row is None else User(*row)

    def users(self) -> list[User]:
        return [User(*r) for r in self._all("SELECT username, password_hash, fhir_user, name FROM users "
                                            "ORDER BY username")]

    def remove_user(self, username: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM users WHERE username = ?", (username,)).rowcount > 0

    # ---- keys -------------------------------------------------------------------------------------------------

    def keys(self) -> list[KeyRow]:
        return [(kid, json.loads(jwk), created, retired) for kid, jwk, created, retired in
                self._all("SELECT kid, private_jwk, created, retired FROM keys ORDER BY created, rowid")]

    def add_key(self, kid: str, private_jwk: dict[str, Any], replacing: str | None) -> bool:
        with self._tx() as db:
            # the check and the swap in one BEGIN IMMEDIATE transaction: two rotations from one key make one key
            row = db.execute("SELECT kid FROM keys WHERE retired IS NULL ORDER BY created DESC, rowid DESC "
                             "LIMIT 1").fetchone()
            if (row[0] if row else None) != replacing:
                return False
            db.execute("UPDATE keys SET retired = ? WHERE retired IS NULL", (now(),))
            db.execute("INSERT INTO keys VALUES (?,?,?,NULL)", (kid, json.dumps(private_jwk), now()))
        return True

    def drop_keys_retired_before(self, instant: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM keys WHERE retired IS NOT NULL AND retired < ?", (instant,))

    # ---- one-time rows: pending authorizations, launches, codes -----------------------------------------------

    def put_item(self, table: ItemTable, key: str, data: dict[str, Any], ttl: int) -> None:
        assert table in ("pending", "launches")
        with self._tx() as db:
            db.execute(f"DELETE FROM {table} WHERE expires < ?", (now(),))
            db.execute(f"INSERT OR REPLACE INTO {table} VALUES (?,?,?)", (key, json.dumps(data), now() + ttl))

    def item(self, table: ItemTable, key: str) -> dict[str, Any] | None:
        assert table in ("pending", "launches")
        row = self._one(f"SELECT data, expires FROM {table} WHERE id = ?", (key,))
        if row is None or row[1] < now():
            return None
        return dict(json.loads(row[0]))

    def drop_item(self, table: ItemTable, key: str) -> None:
        assert table in ("pending", "launches")
        with self._tx() as db:
            db.execute(f"DELETE FROM {table} WHERE id = ?", (key,))

    def put_code(self, code_hash: str, data: dict[str, Any], ttl: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM codes WHERE expires < ?", (now() - 3600,))
            db.execute("INSERT INTO codes VALUES (?,?,?,0)", (code_hash, json.dumps(data), now() + ttl))

    def take_code(self, code_hash: str) -> tuple[dict[str, Any] | None, bool]:
        """The code's data, marking it used; ``(data, True)`` when it had been used before (a replay)."""
        with self._tx() as db:
            row = db.execute("SELECT data, expires, used FROM codes WHERE code_hash = ?", (code_hash,)).fetchone()
            if row is None:
                return None, False
            db.execute("UPDATE codes SET used = 1 WHERE code_hash = ?", (code_hash,))
        data, expires, used = row
        if expires < now():
            return None, False
        return dict(json.loads(data)), bool(used)

    def set_code_family(self, code_hash: str, data: dict[str, Any]) -> None:
        """Record on a used code the token family it was exchanged for, so that a replay can revoke it."""
        with self._tx() as db:
            db.execute("UPDATE codes SET data = ? WHERE code_hash = ?", (json.dumps(data), code_hash))

    # ---- tokens -----------------------------------------------------------------------------------------------

    def put_token(self, token_hash: str, row: TokenRow) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO tokens VALUES (?,?,?,?,?,?,?,0)",
                       (token_hash, row.kind, row.family, row.client_id, json.dumps(row.data), row.issued,
                        row.expires))

    def token(self, token_hash: str) -> TokenRow | None:
        row = self._one("SELECT kind, family, client_id, data, issued, expires, revoked FROM tokens "
                        "WHERE token_hash = ?", (token_hash,))
        if row is None:
            return None
        kind, family, client_id, data, issued, expires, revoked = row
        return TokenRow(kind, family, client_id, json.loads(data), issued, expires, bool(revoked))

    def revoke_token(self, token_hash: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE tokens SET revoked = 1 WHERE token_hash = ?", (token_hash,))

    def spend_token(self, token_hash: str) -> bool:
        """Revoke a live token; False when it was already revoked (two refreshes racing: only one wins)."""
        with self._tx() as db:
            return db.execute("UPDATE tokens SET revoked = 1 WHERE token_hash = ? AND revoked = 0",
                              (token_hash,)).rowcount == 1

    def revoke_family(self, family: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE tokens SET revoked = 1 WHERE family = ?", (family,))

    def use_jti(self, client_id: str, jti: str, expires: int) -> bool:
        """Record a client assertion's ``jti``; False when it was seen before (a replay)."""
        with self._tx() as db:
            db.execute("DELETE FROM jtis WHERE expires < ?", (now() - 60,))
            try:
                db.execute("INSERT INTO jtis VALUES (?,?,?)", (client_id, jti, expires))
            except sqlite3.IntegrityError:
                return False
        return True


def _client(row: tuple[Any, ...]) -> Client:
    client_id, name, kind, uris, scope, secret_hash, jwks, jwks_url, launch_url = row
    return Client(client_id, name, kind, json.loads(uris), scope, secret_hash, json.loads(jwks) if jwks else None,
                  jwks_url, launch_url)
