"""Storage backends behind one interface (:mod:`fhir_server.storage.base`), chosen by URL scheme."""

from __future__ import annotations

from fhir_server.storage.base import Store


def open_store_from_url(url: str, *, synchronous: str = "FULL") -> Store:
    if url.startswith("sqlite:///"):
        from fhir_server.storage.sqlite.store import SqliteStore

        return SqliteStore(url.removeprefix("sqlite:///"), synchronous=synchronous)
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from fhir_server.storage.mongo.store import MongoStore

        return MongoStore(url)
    raise ValueError(f"unsupported store URL {url!r}: use sqlite:///PATH or mongodb://HOST[:PORT]/DATABASE")
