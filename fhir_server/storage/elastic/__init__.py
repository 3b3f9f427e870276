"""The Elasticsearch search backend: a wrapper around a primary store that answers searches from Elasticsearch.

Modules: :mod:`.mapping` (index names, template, mapping), :mod:`.documents` (documents from extracted values),
:mod:`.render` (lowered tree → query DSL), :mod:`.paging` (sort, ``search_after`` keyset cursors),
:mod:`.visibility` (read-your-writes tickets), :mod:`.indexer` (the outbox consumer), :mod:`.client` (the
connection) and :mod:`.search` (:class:`~.search.SearchStore`, the store wrapper).
"""

from fhir_server.storage.elastic.search import SearchStore, SearchUnavailable, TooCostly

__all__ = ["SearchStore", "SearchUnavailable", "TooCostly"]
