"""Simplification: flatten nested And/Or, merge OR-ed rows of one parameter into one row, drop neutral nodes."""

from __future__ import annotations

from fhir_server.search.tree import And, Chain, Has, MatchAll, MatchNone, Node, Not, Or, Row


def simplify(node: Node) -> Node:
    if isinstance(node, And):
        items: list[Node] = []
        for item in (simplify(n) for n in node.items):
            if isinstance(item, And):
                items.extend(item.items)
            elif isinstance(item, MatchNone):
                return MatchNone()
            elif not isinstance(item, MatchAll):
                items.append(item)
        if not items:
            return MatchAll()
        return items[0] if len(items) == 1 else And(tuple(items))
    if isinstance(node, Or):
        flat: list[Node] = []
        for item in (simplify(n) for n in node.items):
            if isinstance(item, Or):
                flat.extend(item.items)
            elif isinstance(item, MatchAll):
                return MatchAll()
            elif not isinstance(item, MatchNone):
                flat.append(item)
        merged: list[Node] = []
        rows: dict[object, int] = {}
        for item in flat:
            if isinstance(item, Row) and item.param in rows:
                at = rows[item.param]
                prev = merged[at]
                assert isinstance(prev, Row)
                merged[at] = Row(prev.param, prev.alts + item.alts)
            else:
                if isinstance(item, Row):
                    rows[item.param] = len(merged)
                merged.append(item)
        if not merged:
            return MatchNone()
        return merged[0] if len(merged) == 1 else Or(tuple(merged))
    if isinstance(node, Not):
        inner = simplify(node.item)
        if isinstance(inner, Not):
            return inner.item
        if isinstance(inner, MatchAll):
            return MatchNone()
        if isinstance(inner, MatchNone):
            return MatchAll()
        return Not(inner)
    if isinstance(node, Chain):
        return Chain(node.param, node.target_type, simplify(node.inner))
    if isinstance(node, Has):
        return Has(node.source_type, node.ref_param, simplify(node.inner))
    return node
