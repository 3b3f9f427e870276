"""Authorization of FHIR interactions: a token's grant turned into constraints on the search expression tree.

* :mod:`.grant` — what a token allows (scopes, launch context, user);
* :mod:`.constraints` — grant + resource type + actions → a tree of existing nodes (compartments, types, granular
  scope queries), so every storage backend renders it unchanged;
* :mod:`.guard` — a store view that applies those constraints to every read, search, include, history and write;
* :mod:`.step` — the one authorization step every interaction (and every batch/transaction entry) passes through.
"""
