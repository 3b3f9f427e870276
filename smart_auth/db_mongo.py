"""The MongoDB implementation of :class:`smart_auth.db.AuthDB`: collections ``auth_*`` in the FHIR store's database.

Several ``aegis serve`` processes on one database (behind a load balancer) then share one authorization server
state: a token issued by one is accepted by all, a revocation or refresh rotation is seen everywhere, a key is
rotated once, and ``aegis clients add --store URL`` reaches every server. The FHIR store never reads these
collections (it reads ``current``, ``versions`` and ``commits``), so they are not reachable through the FHIR API,
its search or its outbox.

One-time use needs no transaction (FerretDB 1.x has none) and no conditional update: each one-time step is the
insert of a document with a unique ``_id`` into ``auth_claims``, which exactly one caller on any process can win
(``code:HASH`` redeems a code, ``refresh:HASH`` rotates a refresh token); a ``jti`` is likewise an insert into
``auth_jtis``, and a key rotation inserts the next ``_id`` of the key sequence (two rotations from the same key
collide; one wins). Why not ``find_one_and_update`` filtered on ``used: false``: on FerretDB 1.24 neither it nor
``update_one`` with a filter is atomic across connections (measured: 4 threads racing on one document all "won"
in most rounds), while a duplicate ``_id`` insert always fails for all but one. Documents are otherwise written once
or only ever get a flag set to true, so FerretDB's whole-document updates cannot lose a concurrent change.

The synchronous ``MongoClient`` (thread-safe), as the authorization server calls its store synchronously: each call
is one round trip by ``_id``; the server makes the per-request token check and the token endpoint's grants in worker
threads, the rest inline. Expired pending authorizations, launches, codes and ``jti``s are deleted by each process at
most once a minute (FerretDB has no TTL indexes).
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from pymongo import ASCENDING, DESCENDING, MongoClient
from pymongo.collection import Collection
from pymongo.errors import ConnectionFailure, DuplicateKeyError
from pymongo.uri_parser import parse_uri

from fhir_server.storage.group_commit import StorageUnavailable
from smart_auth.db import Client, ItemTable, KeyRow, TokenRow, User, now

Doc = dict[str, Any]
PREFIX = "auth_"
SWEEP_SECONDS = 60
CODE_CLAIM_SECONDS = 3600  # a code's claim outlives the code, so that a late replay is still told apart
# secondary indexes (name → keys); one-time use relies on the unique _id alone
INDEXES: dict[str, dict[str, list[tuple[str, int]]]] = {
    "tokens": {"family_1": [("family", ASCENDING)], "client_id_1": [("client_id", ASCENDING)]},
}


T = TypeVar("T")
P = ParamSpec("P")


def _unavailable(fn: Callable[P, T]) -> Callable[P, T]:
    """A lost database connection is the service being unavailable (503), as for the FHIR store, not a 500."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except ConnectionFailure as exc:
            raise StorageUnavailable(f"the authorization server's database is unreachable: {exc}") from exc

    return wrapper


class MongoAuthDB:
    remote = True
    def __init__(self, url: str) -> None:
        options: dict[str, Any] = {}
        if "serverselectiontimeoutms" not in url.lower():
            options["serverSelectionTimeoutMS"] = 10_000
        self._client: MongoClient[Doc] = MongoClient(url, **options)
        self._db = self._client[parse_uri(url).get("database") or "aegis"]  # the FHIR store's database
        self._swept = 0.0
        self._sweep_lock = threading.Lock()
        try:
            self._ensure_indexes()
        except BaseException:
            self._client.close()
            raise

    def _col(self, name: str) -> Collection[Doc]:
        return self._db[PREFIX + name]

    @_unavailable
    def _ensure_indexes(self) -> None:
        for col, wanted in INDEXES.items():
            have = {ix["name"] for ix in self._col(col).list_indexes()}
            for name, keys in wanted.items():
                if name not in have:
                    # one index per command, only missing ones: FerretDB 1.24 drops the connection on a
                    # createIndexes that names only existing indexes
                    self._col(col).create_index(keys, name=name)

    def _put(self, col: str, doc: Doc) -> None:
        """Insert or replace by ``_id``. Two upserts of a new ``_id`` racing (two ``--demo`` servers starting) may
        fail one with a duplicate key where the server does not retry it (FerretDB): the document exists then, so
        the replace is tried again."""
        try:
            self._col(col).replace_one({"_id": doc["_id"]}, doc, upsert=True)
        except DuplicateKeyError:
            self._col(col).replace_one({"_id": doc["_id"]}, doc, upsert=True)

    def _sweep(self) -> None:
        """Delete expired one-time records, at most once a minute per process."""
        t = now()
        with self._sweep_lock:
            if t < self._swept + SWEEP_SECONDS:
                return
            self._swept = t
        for col, margin in (("pending", 0), ("launches", 0), ("codes", CODE_CLAIM_SECONDS), ("jtis", 60),
                            ("claims", 0)):
            self._col(col).delete_many({"expires": {"$lt": t - margin}})

    def close(self) -> None:
        self._client.close()

    # ---- clients and users --------------------------------------------------------------------------------------

    @_unavailable
    def put_client(self, c: Client) -> None:
        self._put("clients", {
            "_id": c.client_id, "name": c.name, "kind": c.kind, "secret_hash": c.secret_hash,
            "redirect_uris": c.redirect_uris, "scope": c.scope, "jwks": json.dumps(c.jwks) if c.jwks else None,
            "jwks_url": c.jwks_url, "launch_url": c.launch_url, "created": now()})

    @_unavailable
    def client(self, client_id: str) -> Client | None:
        doc = self._col("clients").find_one({"_id": client_id})
        return None if doc is None else _client(doc)

    @_unavailable
    def clients(self) -> list[Client]:
        return [_client(d) for d in self._col("clients").find({}).sort([("created", ASCENDING), ("_id", ASCENDING)])]

    @_unavailable
    def remove_client(self, client_id: str) -> bool:
        gone = self._col("clients").delete_one({"_id": client_id}).deleted_count
        self._col("tokens").update_many({"client_id": client_id}, {"$set": {"revoked": True}})
        return gone > 0

    @_unavailable
    def put_user(self, u: User) -> None:
        self._put("users", {
            "_id": u.username, "password_hash": u.password_hash, "fhir_user": u.fhir_user, "name": u.name,
            "created": now()})

    @_unavailable
    def user(self, username: str) -> User | None:
        doc = self._col("users").find_one({"_id": username})
        return None if doc is None else User(doc["_id"], doc["password_hash"], doc.get("fhir_user"), doc.get("name"))

    @_unavailable
    def users(self) -> list[User]:
        return [User(d["_id"], d["password_hash"], d.get("fhir_user"), d.get("name"))
                for d in self._col("users").find({}).sort("_id", ASCENDING)]

    @_unavailable
    def remove_user(self, username: str) -> bool:
        return self._col("users").delete_one({"_id": username}).deleted_count > 0

    # ---- keys: _id is the key's position in the rotation sequence; the highest is the active key -----------------

    def _key_docs(self) -> list[Doc]:
        return list(self._col("keys").find({}).sort("_id", ASCENDING))

    @_unavailable
    def keys(self) -> list[KeyRow]:
        docs = self._key_docs()
        out: list[KeyRow] = []
        for n, d in enumerate(docs):
            # a key is retired from the moment its successor exists (the "retired" field is set right after, but a
            # process may die in between: the successor's creation time is the authority)
            retired = None if n == len(docs) - 1 else (d.get("retired") or docs[n + 1]["created"])
            out.append((d["kid"], json.loads(d["jwk"]), d["created"], retired))
        return out

    @_unavailable
    def add_key(self, kid: str, private_jwk: dict[str, Any], replacing: str | None) -> bool:
        newest = self._col("keys").find_one({}, sort=[("_id", DESCENDING)])
        if (newest["kid"] if newest else None) != replacing:
            return False
        seq = (newest["_id"] + 1) if newest else 1
        try:
            self._col("keys").insert_one({"_id": seq, "kid": kid, "jwk": json.dumps(private_jwk), "created": now(),
                                          "retired": None})
        except DuplicateKeyError:
            return False  # another process rotated from the same key first
        if newest is not None:
            self._col("keys").update_one({"_id": newest["_id"], "retired": None}, {"$set": {"retired": now()}})
        return True

    @_unavailable
    def drop_keys_retired_before(self, instant: int) -> None:
        rows = self.keys()
        gone = [kid for kid, _, _, retired in rows if retired is not None and retired < instant]
        if gone:
            self._col("keys").delete_many({"kid": {"$in": gone}})

    # ---- pending authorizations, launches, codes ---------------------------------------------------------------

    @_unavailable
    def put_item(self, table: ItemTable, key: str, data: dict[str, Any], ttl: int) -> None:
        assert table in ("pending", "launches")
        self._sweep()
        self._put(table, {"_id": key, "data": data, "expires": now() + ttl})

    @_unavailable
    def item(self, table: ItemTable, key: str) -> dict[str, Any] | None:
        assert table in ("pending", "launches")
        doc = self._col(table).find_one({"_id": key})
        if doc is None or doc["expires"] < now():
            return None
        return dict(doc["data"])

    @_unavailable
    def drop_item(self, table: ItemTable, key: str) -> None:
        assert table in ("pending", "launches")
        self._col(table).delete_one({"_id": key})

    @_unavailable
    def put_code(self, code_hash: str, data: dict[str, Any], ttl: int) -> None:
        self._sweep()
        self._col("codes").insert_one({"_id": code_hash, "data": data, "expires": now() + ttl})

    def _claim(self, key: str, expires: int) -> bool:
        """Win the one-time step ``key``: True for exactly one caller, on any process."""
        try:
            self._col("claims").insert_one({"_id": key, "expires": expires})
        except DuplicateKeyError:
            return False
        return True

    @_unavailable
    def take_code(self, code_hash: str) -> tuple[dict[str, Any] | None, bool]:
        doc = self._col("codes").find_one({"_id": code_hash})
        if doc is None or doc["expires"] < now():
            return None, False
        first = self._claim(f"code:{code_hash}", doc["expires"] + CODE_CLAIM_SECONDS)
        return dict(doc["data"]), not first

    @_unavailable
    def set_code_family(self, code_hash: str, data: dict[str, Any]) -> None:
        self._col("codes").update_one({"_id": code_hash}, {"$set": {"data": data}})

    # ---- tokens -------------------------------------------------------------------------------------------------

    @_unavailable
    def put_token(self, token_hash: str, row: TokenRow) -> None:
        self._col("tokens").insert_one({"_id": token_hash, "kind": row.kind, "family": row.family,
                                        "client_id": row.client_id, "data": row.data, "issued": row.issued,
                                        "expires": row.expires, "revoked": False})

    @_unavailable
    def token(self, token_hash: str) -> TokenRow | None:
        d = self._col("tokens").find_one({"_id": token_hash})
        if d is None:
            return None
        return TokenRow(d["kind"], d["family"], d["client_id"], dict(d["data"]), d["issued"], d["expires"],
                        bool(d["revoked"]))

    @_unavailable
    def revoke_token(self, token_hash: str) -> None:
        self._col("tokens").update_one({"_id": token_hash}, {"$set": {"revoked": True}})

    @_unavailable
    def spend_token(self, token_hash: str) -> bool:
        doc = self._col("tokens").find_one({"_id": token_hash})
        if doc is None or doc["revoked"] or not self._claim(f"refresh:{token_hash}", doc["expires"]):
            return False
        self._col("tokens").update_one({"_id": token_hash}, {"$set": {"revoked": True}})
        return True

    @_unavailable
    def revoke_family(self, family: str) -> None:
        self._col("tokens").update_many({"family": family}, {"$set": {"revoked": True}})

    @_unavailable
    def use_jti(self, client_id: str, jti: str, expires: int) -> bool:
        self._sweep()
        try:
            self._col("jtis").insert_one({"_id": json.dumps([client_id, jti]), "expires": expires})
        except DuplicateKeyError:
            return False
        return True


def _client(d: Doc) -> Client:
    return Client(d["_id"], d["name"], d["kind"], list(d["redirect_uris"]), d["scope"], d.get("secret_hash"),
                  json.loads(d["jwks"]) if d.get("jwks") else None, d.get("jwks_url"), d.get("launch_url"))
