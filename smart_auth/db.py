"""The authorization server's persistence: one small interface (:class:`AuthDB`) over clients, users, signing keys,
pending authorizations, launch contexts, codes, tokens and seen client-assertion ``jti``s, with two implementations
chosen from the store URL as :func:`fhir_server.storage.open_store_from_url` chooses the FHIR store:

* ``sqlite:///…`` → :class:`smart_auth.db_sqlite.SqliteAuthDB`, the file ``DATA_DIR/auth.db``;
* ``mongodb://…`` / ``mongodb+srv://…`` → :class:`smart_auth.db_mongo.MongoAuthDB`, collections ``auth_*`` in the
  FHIR store's database, so that every server process on that database shares clients, users, keys and tokens.

Why not FHIR resources in the main store: these records are secrets (password, secret and token hashes, private
keys) that must never be reachable through the FHIR API, its search index or outbox; they change on every token
request and need point lookups by hash, not FHIR versioning. Secrets are stored hashed (scrypt for passwords,
SHA-256 for client secrets, tokens and codes); private signing keys are stored as they must be used.

One-time use is atomic in both implementations, never read-then-write: a code is redeemed once (:meth:`take_code`),
a refresh token rotated once (:meth:`spend_token`), an assertion ``jti`` accepted once (:meth:`use_jti`) and a key
rotation from a given key happens once (:meth:`add_key` with ``replacing``), however many processes race.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

ItemTable = Literal["pending", "launches"]


@dataclass
class Client:
    client_id: str
    name: str
    kind: str  # public | symmetric | asymmetric
    redirect_uris: list[str]
    scope: str  # the most a token of this client may carry
    secret_hash: str | None = None
    jwks: dict[str, Any] | None = None
    jwks_url: str | None = None
    launch_url: str | None = None


@dataclass
class User:
    username: str
    password_hash: str
    fhir_user: str | None = None
    name: str | None = None


@dataclass
class TokenRow:
    kind: str  # access | refresh
    family: str
    client_id: str
    data: dict[str, Any] = field(default_factory=dict)
    issued: int = 0
    expires: int = 0
    revoked: bool = False


# (kid, private JWK, created, retired or None); the active key is the last one not retired
KeyRow = tuple[str, dict[str, Any], int, int | None]


def now() -> int:
    return int(time.time())


class AuthDB(Protocol):
    """What the authorization server stores. Calls are short point operations; implementations are thread-safe."""

    # whether a call is a network round trip (the server then makes its hottest calls off the event loop)
    remote: bool

    def close(self) -> None: ...

    # clients and users
    def put_client(self, c: Client) -> None: ...
    def client(self, client_id: str) -> Client | None: ...
    def clients(self) -> list[Client]: ...
    def remove_client(self, client_id: str) -> bool:
        """Remove the client and revoke its tokens; False when there was none."""
    def put_user(self, u: User) -> None: ...
    def user(self, username: str) -> User | None: ...
    def users(self) -> list[User]: ...
    def remove_user(self, username: str) -> bool: ...

    # signing keys
    def keys(self) -> list[KeyRow]:
        """Every stored key, oldest first."""
    def add_key(self, kid: str, private_jwk: dict[str, Any], replacing: str | None) -> bool:
        """Make this the active key and retire the old one — only if the active key is still ``replacing`` (None:
        there is none). False when another process rotated first (nothing is stored then)."""
    def drop_keys_retired_before(self, instant: int) -> None: ...

    # pending authorizations and EHR launch contexts (short-lived, overwritten as the user goes through the pages)
    def put_item(self, table: ItemTable, key: str, data: dict[str, Any], ttl: int) -> None: ...
    def item(self, table: ItemTable, key: str) -> dict[str, Any] | None: ...
    def drop_item(self, table: ItemTable, key: str) -> None: ...

    # authorization codes
    def put_code(self, code_hash: str, data: dict[str, Any], ttl: int) -> None: ...
    def take_code(self, code_hash: str) -> tuple[dict[str, Any] | None, bool]:
        """The code's data, marking it used in the same atomic step; ``(data, True)`` when it had been used before
        (a replay); ``(None, False)`` when unknown or expired."""
    def set_code_family(self, code_hash: str, data: dict[str, Any]) -> None:
        """Record on a used code the token family it was exchanged for, so that a replay can revoke it."""

    # tokens
    def put_token(self, token_hash: str, row: TokenRow) -> None: ...
    def token(self, token_hash: str) -> TokenRow | None: ...
    def revoke_token(self, token_hash: str) -> None: ...
    def spend_token(self, token_hash: str) -> bool:
        """Revoke a live token; False when it was already revoked (two refreshes racing: only one wins)."""
    def revoke_family(self, family: str) -> None: ...

    # client assertions
    def use_jti(self, client_id: str, jti: str, expires: int) -> bool:
        """Record a client assertion's ``jti``; False when it was seen before (a replay)."""


def open_auth_db(store_url: str, data_dir: Path) -> AuthDB:
    """The authorization server's persistence for the FHIR store at ``store_url`` (see the module docstring)."""
    if store_url.startswith("sqlite:///"):
        from smart_auth.db_sqlite import SqliteAuthDB

        # a file of its own beside the store rather than tables in it: the FHIR store's file belongs to its
        # group-commit writer (one transaction per batch, outbox in the same transaction), which auth writes must
        # neither wait for nor join; an SQLite store is served from one host anyway, so one file there is shared
        return SqliteAuthDB(data_dir / "auth.db")
    if store_url.startswith(("mongodb://", "mongodb+srv://")):
        from smart_auth.db_mongo import MongoAuthDB

        return MongoAuthDB(store_url)
    raise ValueError(f"unsupported store URL {store_url!r}: use sqlite:///PATH or mongodb://HOST[:PORT]/DATABASE")
