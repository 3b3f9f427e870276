"""A chain that drives a search (``Observation?subject.name=Martin``), run as a merge of per-target key lists.

Driving a chain by key first collects every row that refers to any matching target, then sorts them for the page:
at 10,000 patients a common family name has ~100 patients and ~30,000 observations, all read to return 50. Yet the
reference index (``pid, target_id, target_type, rkey``) already lists each target's referring rows in key order, so
the first page is a k-way merge of those lists. The targets are counted, then listed with each one's first key (a
seek per target inside the listing statement); a target's list is read (a page at a time) only when the merge
reaches that key. That is one index seek per
target plus the page's own entries, whatever the number of matches. When the search has other conditions, the
merged keys are only candidates: each batch is checked with the search's full condition (probed per row, as in the
windowed walk), so the rows are exactly those of the other plans. When the chain is the whole search, every
candidate matches and is only looked up.

Used when the chain's targets are few enough to list (:attr:`PlanLimits.merge_targets`); otherwise, or for a chain
through a parameter of several types, the caller drives as before. A broad chain with few targets
(:attr:`PlanLimits.merge_first`) merges before any window is walked: a seek per target costs less than a window.
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

from fhir_server.search.tree import Chain, Node, Or
from fhir_server.storage.sqlite.render import PidOf, SqlRenderer

Select = Callable[..., list[tuple[Any, ...]]]


def chain_candidates(conn: sqlite3.Connection, node: Node, pid_of: PidOf, most_targets: int, *, backwards: bool,
                     edge: int | None, chunk: int) -> Iterator[int] | None:
    """Keys of the rows that refer to a target of ``node`` (a chain, or an OR of chains: an untyped chain), in key
    order (descending ``backwards``) after ``edge``, without repeats; None when the merge does not apply (not a
    chain, or more than ``most_targets`` targets)."""
    chains = [node] if isinstance(node, Chain) else list(node.items) if isinstance(node, Or) else []
    if not chains or not all(isinstance(c, Chain) for c in chains):
        return None
    # Each target's first referring key is found while the targets are listed: a seek per target inside SQLite (a
    # statement per target cost ~13 us each). The targets are counted first, without the seeks, so a chain with too
    # many targets costs no more than its listing.
    step, order = ("<", "DESC") if backwards else (">", "ASC")
    after = f" AND r.rkey {step} ?" if edge is not None else ""
    targets: list[tuple[int, str, str, int]] = []  # (pid, target type, target id, its first referring key)
    count = 0
    for chain in chains:
        assert isinstance(chain, Chain)
        pids = pid_of(chain.param.rtype, chain.param.code)
        if len(pids) != 1:
            return None
        inner_args: list[Any] = [chain.target_type]
        listing = ("FROM resource_current t WHERE t.rtype = ? AND t.deleted = 0 AND "
                   + SqlRenderer(pid_of).where(chain.inner, "t", chain.target_type, inner_args))
        if conn.execute(f"SELECT 1 {listing} LIMIT 1 OFFSET ?", [*inner_args, most_targets - count]).fetchone():
            return None
        first_keys = conn.execute(
            f"SELECT t.rid, (SELECT r.rkey FROM idx_reference r WHERE r.pid = ? AND r.target_id = t.rid"
            f" AND r.target_type = ?{after} ORDER BY r.rkey {order} LIMIT 1) {listing}",
            [pids[0], chain.target_type, *([edge] if edge is not None else []), *inner_args]).fetchall()
        count += len(first_keys)
        targets += [(pids[0], chain.target_type, rid, key) for rid, key in first_keys if key is not None]
    return _distinct(_merged(conn, targets, backwards, chunk))


def _merged(conn: sqlite3.Connection, targets: list[tuple[int, str, str, int]], backwards: bool,
            chunk: int) -> Iterator[int]:
    """The targets' referring keys in one order. A target's list is read only when its first key comes up: the
    rows of one patient are mostly written together, so a page usually draws on a few of a name's ~100 patients."""
    sign = -1 if backwards else 1
    # (signed next key, target index, the rest of its list: None until opened); indexes are unique, so the
    # iterators are never compared
    heap: list[tuple[int, int, Iterator[int] | None]] = [
        (sign * key, i, None) for i, (_, _, _, key) in enumerate(targets)]
    heapq.heapify(heap)
    while heap:
        signed, i, rest = heap[0]
        yield sign * signed
        if rest is None:
            pid, target_type, target_id, _ = targets[i]
            rest = _referring(conn, pid, target_type, target_id, backwards, sign * signed, chunk)
        following = next(rest, None)
        if following is None:
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, (sign * following, i, rest))


def _referring(conn: sqlite3.Connection, pid: int, target_type: str, target_id: str, backwards: bool,
               after: int, chunk: int) -> Iterator[int]:
    """The keys of the rows whose ``pid`` reference points at the target, in order after ``after``, ``chunk`` at a
    time."""
    step, order = ("<", "DESC") if backwards else (">", "ASC")
    sql = (f"SELECT rkey FROM idx_reference WHERE pid = ? AND target_id = ? AND target_type = ? AND rkey {step} ?"
           f" ORDER BY rkey {order} LIMIT ?")
    while True:
        keys = [row[0] for row in conn.execute(sql, (pid, target_id, target_type, after, chunk))]
        yield from keys
        if len(keys) < chunk:
            return
        after = keys[-1]


def _distinct(keys: Iterator[int]) -> Iterator[int]:
    last = None
    for key in keys:
        if key != last:
            yield key
            last = key


def verified(candidates: Iterator[int], select: Select, probe_where: str, probe_args: list[Any],
             wanted: int, *, exact: bool = False) -> list[tuple[Any, ...]]:
    """The first ``wanted`` rows among ``candidates`` that satisfy the search (``probe_where``), in their order.
    ``exact``: every candidate matches, so a batch is no larger than what is still missing."""
    rows: list[tuple[Any, ...]] = []
    batch: list[int] = []

    def check() -> None:
        rows.extend(select(probe_where, probe_args, f" AND c.rkey IN ({','.join('?' * len(batch))})", tuple(batch),
                           wanted - len(rows)))
        batch.clear()

    for key in candidates:
        batch.append(key)
        # a batch about the size of what is still missing (twice, unless exact: some candidates fail the other
        # conditions)
        if len(batch) >= (wanted - len(rows) if exact else min(max(2 * (wanted - len(rows)), 16), 500)):
            check()
            if len(rows) >= wanted:
                return rows
    if batch:
        check()
    return rows
