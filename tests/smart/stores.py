"""Which store a test server serves, and its authorization server's data opened as ``aegis clients|users|keys``
open it (``DATA_DIR/auth.db`` for SQLite, the ``auth_*`` collections for MongoDB)."""

from __future__ import annotations

from pathlib import Path

from smart_auth.db import AuthDB, open_auth_db


def store_url(data_dir: Path, args: list[str]) -> str:
    """The store URL that ``aegis serve --data-dir DATA_DIR ARGS`` serves (the embedded SQLite store by default)."""
    if "--store" in args:
        return args[args.index("--store") + 1]
    return f"sqlite:///{(data_dir / 'aegis.db').resolve()}"


def store_option(args: list[str]) -> list[str]:
    """The ``--store URL`` of ``aegis serve`` ARGS, for ``aegis clients|users|keys`` (which take no search options)."""
    return args[args.index("--store"):args.index("--store") + 2] if "--store" in args else []


def auth_db(data_dir: Path, args: list[str]) -> AuthDB:
    return open_auth_db(store_url(data_dir, args), data_dir)


def expire_token(db: AuthDB, token_hash: str) -> None:
    """Age a stored token past its expiry, as time would (reaching into the implementation: the interface has no
    such operation, on purpose)."""
    from smart_auth.db_mongo import MongoAuthDB
    from smart_auth.db_sqlite import SqliteAuthDB

    if isinstance(db, SqliteAuthDB):
        with db._tx() as conn:
            conn.execute("UPDATE tokens SET expires = 1 WHERE token_hash = ?", (token_hash,))
    elif isinstance(db, MongoAuthDB):
        db._col("tokens").update_one({"_id": token_hash}, {"$set": {"expires": 1}})
    else:
        raise TypeError(type(db))
