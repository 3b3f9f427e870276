"""Leaves that stores without joins substitute for ``Chain`` and ``_has`` once they have run the inner query.

MongoDB and Elasticsearch cannot join, so they resolve a chain or a ``_has`` innermost first into the set of ids
it reaches and continue with one of these leaves in its place; their renderers know how to match them, the
shared tree's ``Node`` union does not name them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from fhir_server.search.tree import Node, Param


@dataclass(frozen=True, slots=True)
class RefIn:
    """Some reference of ``param`` points at ``target_type``/one of ``ids`` (a resolved ``Chain``)."""

    param: Param
    target_type: str
    ids: frozenset[str]


@dataclass(frozen=True, slots=True)
class KeyIn:
    """The resource's own ``"<type>/<id>"`` is one of ``keys`` (a resolved ``_has``)."""

    keys: frozenset[str]


def as_node(leaf: RefIn | KeyIn) -> Node:
    """A resolved leaf where the tree expects a node (inside ``And``/``Or``/``Not``)."""
    return cast(Node, leaf)
