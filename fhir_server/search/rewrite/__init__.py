"""Backend-neutral rewrite passes over the bound tree, one small module each, run in order by :func:`prepare`.

1. expansion (needs the store): terminology (``:in``/``:not-in``/``:above``/``:below``), ``_list``, compartments;
2. lowering: every value comparison becomes ``Row`` conditions (range semantics of prefixes are decided here once);
3. simplification: flatten nested And/Or, merge OR-ed rows of one parameter into one row, drop MatchAll.
"""

from __future__ import annotations

from fhir_server.search.rewrite.lower import lower
from fhir_server.search.rewrite.simplify import simplify
from fhir_server.search.tree import Node
from fhir_server.storage.base import ReadOps


def prepare_sync(tree: Node) -> Node:
    """The passes that need no store: lowering and simplification."""
    return simplify(lower(tree))


async def prepare(tree: Node, rtype: str | None, store: ReadOps) -> Node:
    """Every pass, in order: expansion (reads the store), lowering, simplification."""
    from fhir_server.search.rewrite.expand import expand

    return prepare_sync(await expand(tree, rtype, store))
