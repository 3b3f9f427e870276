"""The MongoDB store: resources, history, search values and the outbox in MongoDB (or a wire-compatible server).

Selected by a ``mongodb://`` (or ``mongodb+srv://``) store URL. It uses only single-document atomic writes, so it
runs on servers without multi-document transactions (FerretDB, a standalone ``mongod``): :mod:`.commit` explains how a
transaction stays all-or-nothing anyway. :mod:`.schema` holds the collections, document layouts and indexes,
:mod:`.render` turns lowered search trees into MongoDB filters, :mod:`.store` implements the storage interface,
:mod:`.claims` keeps conditional interactions race-safe across processes, :mod:`.outbox` orders the outbox across
processes, and :mod:`.plans` explains the queries a search sends.
"""
