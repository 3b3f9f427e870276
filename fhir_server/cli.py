"""The ``aegis`` command: ``serve`` runs the server, ``load`` imports FHIR files into the store.

Every option can also be set by an ``AEGIS_*`` environment variable (see :class:`fhir_server.settings.Settings`);
a flag given on the command line wins.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fhir_server.lifecycle import configure_logging, settle_after_startup
from fhir_server.settings import Settings
from fhir_server.workers import UVICORN_OPTIONS

app = typer.Typer(help="Aegis, a FHIR R4 (4.0.1) server.", no_args_is_help=True, add_completion=False)
console = Console(stderr=True)


def _help(name: str) -> str:
    field = Settings.model_fields[name]
    return f"{field.description} (env AEGIS_{name.upper()}, default {field.default})"


def _settings(**overrides: Any) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help=_help("host"))] = None,
    port: Annotated[Optional[int], typer.Option(help=_help("port"))] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help=_help("data_dir"))] = None,
    store: Annotated[Optional[str], typer.Option(help=_help("store"))] = None,
    search: Annotated[Optional[str], typer.Option(help=_help("search"))] = None,
    search_index_prefix: Annotated[Optional[str], typer.Option(help=_help("search_index_prefix"))] = None,
    search_fallback: Annotated[Optional[bool], typer.Option(help=_help("search_fallback"))] = None,
    base_url: Annotated[Optional[str], typer.Option(help=_help("base_url"))] = None,
    demo: Annotated[bool, typer.Option("--demo", help=_help("demo"))] = False,
    max_body_bytes: Annotated[Optional[int], typer.Option(help=_help("max_body_bytes"))] = None,
    page_size: Annotated[Optional[int], typer.Option(help=_help("page_size"))] = None,
    max_page_size: Annotated[Optional[int], typer.Option(help=_help("max_page_size"))] = None,
    sqlite_synchronous: Annotated[Optional[str], typer.Option(help=_help("sqlite_synchronous"))] = None,
    workers: Annotated[Optional[int], typer.Option(help=_help("workers"))] = None,
    prepare_workers: Annotated[Optional[int], typer.Option(help=_help("prepare_workers"))] = None,
    prepare_min_bytes: Annotated[Optional[int], typer.Option(help=_help("prepare_min_bytes"))] = None,
    log_level: Annotated[Optional[str], typer.Option(help=_help("log_level"))] = None,
    insecure_no_auth: Annotated[bool, typer.Option("--insecure-no-auth", "--auth-disabled",
                                                           help=_help("auth_disabled"))] = False,
    access_token_lifetime: Annotated[Optional[int], typer.Option(help=_help("access_token_lifetime"))] = None,
    refresh_token_lifetime: Annotated[Optional[int], typer.Option(help=_help("refresh_token_lifetime"))] = None,
    signing_key_max_age_days: Annotated[Optional[int], typer.Option(help=_help("signing_key_max_age_days"))] = None,
    cors_origins: Annotated[Optional[str], typer.Option(help=_help("cors_origins"))] = None,
) -> None:
    """Serve the FHIR API at http://HOST:PORT/fhir."""
    import uvicorn

    from fhir_server.app import AegisApp

    settings = _settings(host=host, port=port, data_dir=data_dir, store=store, base_url=base_url, demo=demo or None,
                         search=search, search_index_prefix=search_index_prefix, search_fallback=search_fallback,
                         max_body_bytes=max_body_bytes, page_size=page_size, max_page_size=max_page_size,
                         sqlite_synchronous=sqlite_synchronous, workers=workers,
                         prepare_workers=prepare_workers,
                         prepare_min_bytes=prepare_min_bytes, log_level=log_level,
                         auth_disabled=insecure_no_auth or None, access_token_lifetime=access_token_lifetime,
                         refresh_token_lifetime=refresh_token_lifetime,
                         signing_key_max_age_days=signing_key_max_age_days, cors_origins=cors_origins)
    configure_logging(settings.log_level)
    aegis = AegisApp(settings)
    if settings.demo:
        from fhir_server.demo_load import load_demo_if_empty

        aegis.on_startup.append(load_demo_if_empty)
        if not settings.auth_disabled:
            from smart_auth.demo import register_demo_access

            register_demo_access(aegis, console)
    if settings.workers > 1:
        # one start-up here (migration, demo data, demo access), then the workers start on a prepared store
        from fhir_server.workers import serve as serve_workers

        async def prepare() -> None:
            await aegis.startup()
            await aegis.shutdown()

        asyncio.run(prepare())
    else:
        aegis.on_startup.append(settle_after_startup)
    if settings.auth_disabled:
        console.print("[bold red]WARNING: authorization is disabled (--insecure-no-auth / AEGIS_AUTH_DISABLED): "
                      "every resource is open to anyone who can reach this server. Development only.[/bold red]")
    console.print(f"Aegis serving FHIR R4 at [bold]http://{settings.host}:{settings.port}/fhir[/bold] "
                  f"(store: {settings.store_url()}; {settings.workers} worker process(es))")
    if settings.workers > 1:
        raise typer.Exit(serve_workers(settings, settings.workers))
    uvicorn.run(aegis, host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
                **UVICORN_OPTIONS)


@app.command()
def load(
    paths: Annotated[list[Path], typer.Argument(help="FHIR JSON, NDJSON or Bundle files, or directories of them.",
                                                exists=True)],
    data_dir: Annotated[Optional[Path], typer.Option(help=_help("data_dir"))] = None,
    store: Annotated[Optional[str], typer.Option(help=_help("store"))] = None,
) -> None:
    """Load FHIR resources into the store (the server may be running)."""
    from fhir_server.interactions.common import Services
    from fhir_server.loader import files_under, load_files
    from fhir_server.storage import open_store_from_url

    settings = _settings(data_dir=data_dir, store=store)
    files = files_under(paths)

    async def run() -> int:
        db = open_store_from_url(settings.store_url(), synchronous=settings.sqlite_synchronous)
        await db.open()
        try:
            with Progress(TextColumn("loading"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=console) as progress:
                task = progress.add_task("files", total=len(files))
                report = await load_files(Services(db, settings), files,
                                          lambda n: progress.advance(task, n))
        finally:
            await db.close()
        for error in report.errors[:50]:
            console.print(f"[red]error[/red] {error}")
        console.print(f"loaded {report.resources} resources from {len(files)} file(s); {len(report.errors)} error(s)")
        return 1 if report.errors else 0

    raise typer.Exit(asyncio.run(run()))


def _add_auth_commands() -> None:
    from smart_auth.cli import clients_app, keys_app, users_app

    app.add_typer(clients_app, name="clients")
    app.add_typer(users_app, name="users")
    app.add_typer(keys_app, name="keys")


_add_auth_commands()

if __name__ == "__main__":
    app()
