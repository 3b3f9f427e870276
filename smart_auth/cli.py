"""``aegis clients …``, ``aegis users …`` and ``aegis keys rotate``: managing the authorization server's data.

They work on the authorization server's data of the configured store (:func:`smart_auth.db.open_auth_db`):
``DATA_DIR/auth.db`` for the embedded SQLite store, the ``auth_*`` collections of the database for
``--store mongodb://…`` (or ``AEGIS_STORE``), which every server on that database then sees. They may run while
servers are serving: servers read clients and users on each request.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from fhir_server.settings import Settings
from smart_auth.db import AuthDB, Client, User, open_auth_db
from smart_auth.passwords import hash_password, hash_secret

clients_app = typer.Typer(help="Register and list SMART apps (OAuth clients).", no_args_is_help=True)
users_app = typer.Typer(help="Manage the users who sign in to authorize apps.", no_args_is_help=True)
keys_app = typer.Typer(help="The id_token signing keys.", no_args_is_help=True)
out = Console()

DataDir = Annotated[Optional[Path], typer.Option(help="Directory of the embedded store (env AEGIS_DATA_DIR).")]
StoreUrl = Annotated[Optional[str], typer.Option("--store", help="Storage URL, as for aegis serve (env AEGIS_STORE); "
                                                 "mongodb://… manages the clients, users and keys every server on "
                                                 "that database uses.")]


@contextmanager
def open_db(data_dir: Path | None, store: str | None = None) -> Iterator[AuthDB]:
    overrides = {k: v for k, v in (("data_dir", data_dir), ("store", store)) if v}
    settings = Settings(**overrides)  # type: ignore[arg-type]
    db = open_auth_db(settings.store_url(), settings.data_dir)
    try:
        yield db
    finally:
        db.close()


def register_client(db: AuthDB, name: str, *, kind: str, redirect_uris: list[str], scope: str,
                    jwks: dict[str, object] | None = None, jwks_url: str | None = None,
                    launch_url: str | None = None, client_id: str | None = None) -> tuple[Client, str | None]:
    """Register a client; returns it and, for a symmetric client, its secret (shown once, stored hashed)."""
    if kind not in ("public", "symmetric", "asymmetric"):
        raise ValueError("kind must be public, symmetric or asymmetric")
    if kind == "asymmetric" and not (jwks or jwks_url):
        raise ValueError("an asymmetric client needs --jwks-url or --jwks-file")
    secret = secrets.token_urlsafe(32) if kind == "symmetric" else None
    client = Client(client_id or secrets.token_hex(12), name, kind, redirect_uris, scope,
                    hash_secret(secret) if secret else None, jwks, jwks_url, launch_url)
    db.put_client(client)
    return client, secret


def add_user(db: AuthDB, username: str, password: str, fhir_user: str | None, name: str | None = None) -> None:
    if fhir_user and fhir_user.split("/")[0] not in ("Patient", "Practitioner", "PractitionerRole", "RelatedPerson"):
        raise ValueError("--fhir-user must be Patient/…, Practitioner/…, PractitionerRole/… or RelatedPerson/…")
    db.put_user(User(username, hash_password(password), fhir_user, name))


@clients_app.command("add")
def clients_add(
    name: Annotated[str, typer.Argument(help="The app's display name.")],
    redirect_uri: Annotated[Optional[list[str]], typer.Option("--redirect-uri", help="Registered redirect URI "
                                                             "(repeatable); none for backend services.")] = None,
    scope: Annotated[str, typer.Option(help="The most this app may be granted (space-separated SMART scopes).")]
    = "openid fhirUser launch launch/patient offline_access online_access patient/*.rs user/*.rs",
    kind: Annotated[str, typer.Option(help="public | symmetric (client secret) | asymmetric (private_key_jwt).")]
    = "public",
    jwks_url: Annotated[Optional[str], typer.Option(help="Asymmetric clients: URL of the app's JWKS.")] = None,
    jwks_file: Annotated[Optional[Path], typer.Option(help="Asymmetric clients: a file with the app's JWKS.",
                                                      exists=True)] = None,
    launch_url: Annotated[Optional[str], typer.Option(help="The app's launch URL, for EHR launch.")] = None,
    client_id: Annotated[Optional[str], typer.Option(help="Choose the client id (default: random).")] = None,
    data_dir: DataDir = None,
    store: StoreUrl = None,
) -> None:
    """Register an app and print its client id (and secret, once)."""
    jwks = json.loads(jwks_file.read_text()) if jwks_file else None
    try:
        with open_db(data_dir, store) as db:
            client, secret = register_client(db, name, kind=kind, redirect_uris=redirect_uri or [], scope=scope,
                                             jwks=jwks, jwks_url=jwks_url, launch_url=launch_url,
                                             client_id=client_id)
    except ValueError as exc:
        out.print(f"[red]error[/red] {exc}")
        raise typer.Exit(2) from None
    print(f"client_id: {client.client_id}")
    if secret:
        print(f"client_secret: {secret}   (shown once; only its hash is stored)")


@clients_app.command("list")
def clients_list(data_dir: DataDir = None, store: StoreUrl = None) -> None:
    """List the registered apps."""
    with open_db(data_dir, store) as db:
        found = db.clients()
    for c in found:
        print(f"{c.client_id}\t{c.kind}\t{c.name}\t{' '.join(c.redirect_uris)}\t{c.scope}")


@clients_app.command("remove")
def clients_remove(client_id: str, data_dir: DataDir = None, store: StoreUrl = None) -> None:
    """Remove an app and revoke its tokens."""
    with open_db(data_dir, store) as db:
        removed = db.remove_client(client_id)
    if not removed:
        out.print(f"[red]error[/red] no client {client_id}")
        raise typer.Exit(1)


@users_app.command("add")
def users_add(
    username: str,
    fhir_user: Annotated[Optional[str], typer.Option(help="The user's FHIR resource, e.g. Practitioner/123 or "
                                                     "Patient/9 (patient users see only their own records).")]
    = None,
    password: Annotated[Optional[str], typer.Option(help="The password (prompted for when not given).")] = None,
    name: Annotated[Optional[str], typer.Option(help="Display name.")] = None,
    data_dir: DataDir = None,
    store: StoreUrl = None,
) -> None:
    """Add a user (or replace one of the same name)."""
    if password is None:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    try:
        with open_db(data_dir, store) as db:
            add_user(db, username, password, fhir_user, name)
    except ValueError as exc:
        out.print(f"[red]error[/red] {exc}")
        raise typer.Exit(2) from None
    print(f"user {username} added")


@users_app.command("list")
def users_list(data_dir: DataDir = None, store: StoreUrl = None) -> None:
    """List the users."""
    with open_db(data_dir, store) as db:
        users = db.users()
    for u in users:
        print(f"{u.username}\t{u.fhir_user or '-'}\t{u.name or ''}")


@users_app.command("remove")
def users_remove(username: str, data_dir: DataDir = None, store: StoreUrl = None) -> None:
    """Remove a user."""
    with open_db(data_dir, store) as db:
        removed = db.remove_user(username)
    if not removed:
        out.print(f"[red]error[/red] no user {username}")
        raise typer.Exit(1)


@keys_app.command("rotate")
def keys_rotate(data_dir: DataDir = None, store: StoreUrl = None) -> None:
    """Make a new id_token signing key; the old public key stays in the JWKS for a week."""
    from smart_auth.keys import rotate

    with open_db(data_dir, store) as db:
        print(f"new signing key {rotate(db)}")
