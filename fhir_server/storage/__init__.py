"""Storage backends behind one interface (:mod:`fhir_server.storage.base`), chosen by URL scheme."""

from __future__ import annotations

from typing import Any

from fhir_server.storage.base import Store


def open_store_from_url(url: str, *, synchronous: str = "FULL", search: str = "", search_index_prefix: str = "aegis",
                        search_fallback: bool = True, **search_options: Any) -> Store:
    """The store at ``url``; with ``search`` (an Elasticsearch URL), wrapped so that Elasticsearch answers its
    searches (:mod:`fhir_server.storage.elastic`)."""
    store = _primary(url, synchronous)
    if not search:
        return store
    from fhir_server.storage.elastic import SearchStore

    return SearchStore(store, search, prefix=search_index_prefix, fallback=search_fallback, **search_options)


def _primary(url: str, synchronous: str) -> Store:
    if url.startswith("sqlite:///"):
        from fhir_server.storage.sqlite.store import SqliteStore

        return SqliteStore(url.removeprefix("sqlite:///"), synchronous=synchronous)
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from fhir_server.storage.mongo.store import MongoStore

        return MongoStore(url)
    raise ValueError(f"unsupported store URL {url!r}: use sqlite:///PATH or mongodb://HOST[:PORT]/DATABASE")
