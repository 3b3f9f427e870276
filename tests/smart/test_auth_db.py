"""The authorization server's persistence (:class:`smart_auth.db.AuthDB`) on each backend: records round-trip,
secrets stay hashed, and every one-time step has exactly one winner when several connections race for it (two
``AuthDB`` objects on one store stand for two server processes)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fhir_server.storage.group_commit import StorageUnavailable
from smart_auth.cli import add_user, register_client
from smart_auth.db import AuthDB, TokenRow, now, open_auth_db
from smart_auth.keys import rotate, rotate_from
from tests.support.server import fresh_mongodb_url

RACERS = 4


@pytest.fixture()
def dbs(backend: str, tmp_path: Path) -> Iterator[list[AuthDB]]:
    """Two handles on one store's authorization data."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'aegis.db'}"
    else:
        url = fresh_mongodb_url("auth")
    handles = [open_auth_db(url, tmp_path) for _ in range(2)]
    yield handles
    if backend != "sqlite":
        from pymongo import MongoClient
        from pymongo.uri_parser import parse_uri

        client: MongoClient[dict[str, Any]] = MongoClient(url)
        with client:
            client.drop_database(parse_uri(url)["database"])
    for db in handles:
        db.close()


def _race(dbs: list[AuthDB], step: Callable[[AuthDB], Any]) -> list[Any]:
    """Run ``step`` on RACERS threads at once, alternating between the handles."""
    barrier = threading.Barrier(RACERS)
    out: list[Any] = []

    def one(n: int) -> None:
        barrier.wait()
        out.append(step(dbs[n % len(dbs)]))

    threads = [threading.Thread(target=one, args=(n,)) for n in range(RACERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_records_round_trip_and_secrets_are_hashed(dbs: list[AuthDB]) -> None:
    a, b = dbs
    client, secret = register_client(a, "App", kind="symmetric", redirect_uris=["http://app/cb"], scope="system/*.rs",
                                     jwks=None, launch_url="http://app/launch")
    assert secret and b.client(client.client_id) == client and client.secret_hash and secret not in client.secret_hash
    assert [c.client_id for c in b.clients()] == [client.client_id]
    add_user(a, "jane", "pw-jane", "Patient/p1", "Jane")
    user = b.user("jane")
    assert user is not None and user.fhir_user == "Patient/p1" and "pw-jane" not in user.password_hash
    b.put_token("h1", TokenRow("access", "fam", client.client_id, {"scope": "system/*.rs"}, now(), now() + 60))
    assert a.remove_client(client.client_id) and not b.remove_client(client.client_id)
    row = a.token("h1")
    assert row is not None and row.revoked  # removing a client revokes its tokens
    assert b.remove_user("jane") and a.user("jane") is None


def test_a_code_is_redeemed_once(dbs: list[AuthDB]) -> None:
    for n in range(5):
        dbs[0].put_code(f"c{n}", {"client_id": "x", "n": n}, 60)
        got = _race(dbs, lambda db: db.take_code(f"c{n}"))
        assert sorted(replay for _, replay in got) == [False] + [True] * (RACERS - 1)
        assert all(data == {"client_id": "x", "n": n} for data, _ in got)
    assert dbs[1].take_code("unknown") == (None, False)


def test_a_refresh_token_is_spent_once(dbs: list[AuthDB]) -> None:
    for n in range(5):
        dbs[0].put_token(f"r{n}", TokenRow("refresh", "fam", "x", {}, now(), now() + 60))
        assert sorted(_race(dbs, lambda db: db.spend_token(f"r{n}"))) == [False] * (RACERS - 1) + [True]
        row = dbs[1].token(f"r{n}")
        assert row is not None and row.revoked


def test_a_jti_is_accepted_once(dbs: list[AuthDB]) -> None:
    for n in range(5):
        assert sorted(_race(dbs, lambda db: db.use_jti("x", f"j{n}", now() + 60))) == [False] * (RACERS - 1) + [True]
    assert dbs[0].use_jti("y", "j0", now() + 60)  # per client


def test_servers_rotating_from_the_same_key_make_one_new_key(dbs: list[AuthDB]) -> None:
    first = rotate_from(dbs[0], None)
    assert rotate_from(dbs[1], None) == first  # a second "first key" loses and adopts the winner's
    kids = _race(dbs, lambda db: rotate_from(db, first))
    assert len(set(kids)) == 1 and kids[0] != first
    rows = dbs[1].keys()
    assert [r[0] for r in rows] == [first, kids[0]]
    assert rows[0][3] is not None and rows[1][3] is None  # the old key retired, the new one active
    assert rotate(dbs[0]) not in (first, kids[0])  # an explicit rotation always makes a new key


def test_an_unreachable_mongodb_is_unavailable_not_an_error(tmp_path: Path) -> None:
    with pytest.raises(StorageUnavailable):
        open_auth_db("mongodb://127.0.0.1:9/aegis?serverSelectionTimeoutMS=200", tmp_path)


def test_registering_the_same_client_at_once_on_two_servers_works(dbs: list[AuthDB]) -> None:
    # what two `aegis serve --demo` processes starting together do
    for n in range(3):
        _race(dbs, lambda db: register_client(db, "Demo", kind="public", redirect_uris=["http://app/cb"],
                                              scope="patient/*.rs", client_id=f"demo{n}"))
        assert dbs[1].client(f"demo{n}") is not None
