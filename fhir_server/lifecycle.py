"""What every Aegis process does about its own life: log alike, leave when its parent dies, settle its heap once
started.

Shared by the serving workers (:mod:`fhir_server.workers`) and the prepare processes (:mod:`fhir_server.prepare`).
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time


def _exit_with(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def exit_with_parent(parent: int, name: str) -> None:
    """A parent killed with -9 cannot stop its children, and a child waiting for work does not notice: a watchdog
    thread ends this process once ``parent`` is gone."""
    threading.Thread(target=_exit_with, args=(parent,), name=name, daemon=True).start()


def settle_heap() -> None:
    """Once start-up is done, move what it loaded (definitions, registries: long-lived) out of the collector's sight
    and collect less often: requests allocate many short-lived dicts, and re-scanning the long-lived heap cost
    ~5-8 % of a write's CPU (A/B on transaction ingest, in process)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


async def settle_after_startup(_: object) -> None:
    """``settle_heap`` as the last start-up hook of a serving process."""
    settle_heap()


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
