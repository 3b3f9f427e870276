"""A chain that drives a search (``Observation?subject.name=Martin``), run as a merge of per-target key lists.

Driving a chain by key first collects every row that refers to any matching target, then sorts them for the page:
at 10,000 patients a common family name has ~100 patients and ~30,000 observations, all read to return 50. Yet the
reference index (``pid, target_id, target_type, rkey``) already lists each target's referring rows in key order, so
the first page is a k-way merge of those lists, each read a page at a time: about (targets × page) index entries,
whatever the number of matches. The merged keys are only candidates; each batch is checked with the search's full
condition (probed per row, as in the windowed walk), so the rows are exactly those of the other plans.

Used when the chain's targets are few enough to list (:attr:`PlanLimits.merge_targets`); otherwise, or for a chain
through a parameter of several types, the caller drives as before.
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

from fhir_server.search.tree import Chain, Node, Or
from fhir_server.storage.sqlite.plan import PlanLimits
from fhir_server.storage.sqlite.render import PidOf, SqlRenderer

Select = Callable[..., list[tuple[Any, ...]]]


def chain_candidates(conn: sqlite3.Connection, node: Node, pid_of: PidOf, limits: PlanLimits, *, backwards: bool,
                     edge: int | None, chunk: int) -> Iterator[int] | None:
    """Keys of the rows that refer to a target of ``node`` (a chain, or an OR of chains: an untyped chain), in key
    order (descending ``backwards``) after ``edge``, without repeats; None when the merge does not apply."""
    chains = [node] if isinstance(node, Chain) else list(node.items) if isinstance(node, Or) else []
    if not chains or not all(isinstance(c, Chain) for c in chains):
        return None
    targets: list[tuple[int, str, str]] = []  # (pid, target type, target id)
    for chain in chains:
        assert isinstance(chain, Chain)
        pids = pid_of(chain.param.rtype, chain.param.code)
        if len(pids) != 1:
            return None
        args: list[Any] = [chain.target_type]
        inner = SqlRenderer(pid_of).where(chain.inner, "t", chain.target_type, args)
        args.append(limits.merge_targets + 1 - len(targets))
        found = conn.execute(f"SELECT t.rid FROM resource_current t WHERE t.rtype = ? AND t.deleted = 0 AND {inner}"
                             " LIMIT ?", args).fetchall()
        targets += [(pids[0], chain.target_type, rid) for (rid,) in found]
        if len(targets) > limits.merge_targets:
            return None
    # each target's first read: about its share of the page (twice), later reads twice the previous one
    first = min(chunk, max(8, -(-2 * chunk // max(1, len(targets)))))
    streams = [_referring(conn, pid, ttype, rid, backwards, edge, first, chunk) for pid, ttype, rid in targets]
    return _distinct(heapq.merge(*streams, reverse=backwards))


def _referring(conn: sqlite3.Connection, pid: int, target_type: str, target_id: str, backwards: bool,
               edge: int | None, first: int, most: int) -> Iterator[int]:
    """The keys of the rows whose ``pid`` reference points at the target, in order: ``first`` of them, then reads
    twice as large, up to ``most`` at a time."""
    step, order = ("<", "DESC") if backwards else (">", "ASC")
    after = edge
    chunk = first
    while True:
        sql = ("SELECT rkey FROM idx_reference WHERE pid = ? AND target_id = ? AND target_type = ?"
               + (f" AND rkey {step} ?" if after is not None else "") + f" ORDER BY rkey {order} LIMIT ?")
        args = [pid, target_id, target_type, *([after] if after is not None else []), chunk]
        keys = [row[0] for row in conn.execute(sql, args)]
        yield from keys
        if len(keys) < chunk:
            return
        after = keys[-1]
        chunk = min(2 * chunk, most)


def _distinct(keys: Iterator[int]) -> Iterator[int]:
    last = None
    for key in keys:
        if key != last:
            yield key
            last = key


def verified(candidates: Iterator[int], select: Select, probe_where: str, probe_args: list[Any],
             wanted: int) -> list[tuple[Any, ...]]:
    """The first ``wanted`` rows among ``candidates`` that satisfy the search (``probe_where``), in their order."""
    rows: list[tuple[Any, ...]] = []
    batch: list[int] = []

    def check() -> None:
        rows.extend(select(probe_where, probe_args, f" AND c.rkey IN ({','.join('?' * len(batch))})", tuple(batch),
                           wanted - len(rows)))
        batch.clear()

    for key in candidates:
        batch.append(key)
        # a batch about the size of what is still missing (twice: some candidates fail the other conditions)
        if len(batch) >= min(max(2 * (wanted - len(rows)), 16), 500):
            check()
            if len(rows) >= wanted:
                return rows
    if batch:
        check()
    return rows
