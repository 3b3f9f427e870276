"""Serving one store from several processes (``aegis serve --workers N``).

Python runs one request at a time per process, so one process uses one core. With ``--workers N`` the parent lets
one start-up run to completion (store migration, demo data, SMART demo access), then spawns N workers: each is a
whole server (:class:`~fhir_server.app.AegisApp` on uvicorn) with a listening socket of its own on the same port
(``SO_REUSEPORT``), and the kernel spreads new connections over them.

What the workers share is in the stores, never in memory: SQLite serialises their writes through its cross-process
write lock (:mod:`fhir_server.storage.sqlite.lock`), which also keeps lastUpdated in commit order; the MongoDB store
and the SMART authorization data were built for several server instances already. Each worker starts its own
prepare processes when it needs them.

The parent only supervises: SIGTERM or SIGINT stops every worker (each finishes its requests, as uvicorn does),
and a worker that dies stops the others and the parent with an error, rather than serving on with fewer. Workers
leave by themselves if the parent is killed (-9).
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
from typing import Any

from fhir_server.settings import Settings

log = logging.getLogger(__name__)

UVICORN_OPTIONS: dict[str, Any] = dict(access_log=False, loop="uvloop", http="httptools", lifespan="on",
                                       server_header=False)


def bind(settings: Settings, *, shared: bool = True) -> socket.socket:
    """A listening socket of its own for one worker. ``SO_REUSEPORT`` lets every worker bind the port, and the kernel
    spreads new connections over the workers' sockets; with one shared socket, the first worker to wake accepts
    every pending connection (a burst of 16 clients all landed on one worker while the other idled). Without
    ``shared`` the bind fails if anything listens on the port, even another server's workers."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    return socket.create_server((settings.host, settings.port), family=family, backlog=2048, reuse_port=shared)


def _worker(data: dict[str, Any], parent: int) -> None:
    import uvicorn

    from fhir_server.app import AegisApp
    from fhir_server.lifecycle import configure_logging, exit_with_parent, settle_after_startup

    exit_with_parent(parent, "aegis-worker-watchdog")
    settings = Settings(**data)
    configure_logging(settings.log_level)
    aegis = AegisApp(settings)
    aegis.on_startup.append(settle_after_startup)

    config = uvicorn.Config(aegis, log_level=settings.log_level.lower(), **UVICORN_OPTIONS)
    uvicorn.Server(config).run(sockets=[bind(settings)])


def serve(settings: Settings, workers: int) -> int:
    """Serve with ``workers`` processes until told to stop; the exit status."""
    try:  # nothing listens on the port (else: fail here, before any worker starts)
        bind(settings, shared=False).close()
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc.strerror or exc)
        return 1
    context = multiprocessing.get_context("spawn")
    data = settings.model_dump()
    procs = [context.Process(target=_worker, args=(data, os.getpid()), name=f"aegis-worker-{i}")
             for i in range(workers)]
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for p in procs:
        p.start()
    status = 0
    while any(p.is_alive() for p in procs):
        multiprocessing.connection.wait([p.sentinel for p in procs if p.is_alive()])
        dead = [p for p in procs if not p.is_alive()]
        if dead and not stopping:
            log.error("worker %s ended (exit code %s): stopping the others", dead[0].name, dead[0].exitcode)
            status = 1
            stop(signal.SIGTERM, None)
    for p in procs:
        p.join()
    return status
