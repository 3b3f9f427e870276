"""The Elasticsearch connection: the official synchronous client, called from a small thread pool.

The client's asyncio flavour needs aiohttp, which Aegis does not depend on; the synchronous client (urllib3) run in
threads keeps the event loop free just as well at the request rates a search backend sees. Retries are ours (the
indexer retries whole batches, searches fall back), so the client itself never retries and fails fast.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout
from elasticsearch import ApiError, Elasticsearch

# what "Elasticsearch is not there" looks like: no connection, a timeout, or a node that is up but not serving
UNAVAILABLE: tuple[type[BaseException], ...] = (TransportConnectionError, ConnectionTimeout)


def is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, UNAVAILABLE):
        return True
    return isinstance(exc, ApiError) and exc.meta.status in (429, 502, 503, 504)


class EsClient:
    def __init__(self, url: str, *, timeout: float = 30.0, threads: int = 8) -> None:
        self.url = url
        self._es = Elasticsearch(url, request_timeout=timeout, max_retries=0, retry_on_timeout=False,
                                 connections_per_node=threads)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="aegis-es")

    async def call(self, method: str, **kwargs: Any) -> Any:
        """``self._es.<method>(**kwargs)`` (dotted for namespaces: ``"indices.refresh"``) off the event loop."""
        target: Any = self._es
        for part in method.split("."):
            target = getattr(target, part)
        loop = asyncio.get_running_loop()
        response = await loop.run_in_executor(self._pool, functools.partial(target, **kwargs))
        return response.body if hasattr(response, "body") else response

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._es.close)
        self._pool.shutdown(wait=False)
