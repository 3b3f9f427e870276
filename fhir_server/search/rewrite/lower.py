"""Lowering: value comparisons → ``Row`` nodes with field conditions.

This is the one place where the meaning of prefixes over ranges is decided (search.html#prefix). For a search
range ``[plo, phi)`` and a stored range ``[lo, hi)``:

=====  ==========================================================  =====================================
eq     the search range contains the stored range                  lo >= plo and hi <= phi
ne     has a value, and none of its values is eq                   Missing(false) and Not(eq)
gt     the stored range reaches above the search range             hi > phi
lt     the stored range reaches below the search range             lo < plo
ge     gt or eq                                                    hi > phi  |  lo >= plo and hi <= phi
le     lt or eq                                                    lo < plo  |  lo >= plo and hi <= phi
sa     the stored range starts after the search range              lo >= phi
eb     the stored range ends before the search range               hi <= plo
ap     the ranges overlap once the search range is widened by 10%  lo < phi + w and hi > plo - w
=====  ==========================================================  =====================================

Numbers and quantities compare the stored *value* (a point) with the search value: eq/ne/ap use the search value's
implicit precision range, gt/lt/ge/le the value itself (what clinical queries like ``gt100`` mean); sa/eb act as
gt/lt. Quantities with a UCUM-convertible unit compare in canonical units, so ``mg`` finds ``g``.
"""

from __future__ import annotations

from fhir_server.search.tree import (
    And,
    Chain,
    CompositeQ,
    Cond,
    DateQ,
    Has,
    Missing,
    Node,
    Not,
    NumberQ,
    Or,
    QuantityQ,
    RefIdentifierQ,
    RefQ,
    Row,
    StringQ,
    TokenQ,
    TokenTextQ,
    UriQ,
)

Alts = tuple[tuple[Cond, ...], ...]


def _date_alts(prefix: str, plo: int, phi: int) -> Alts:
    # ``lo <= phi`` follows from ``hi <= phi`` (a stored range never ends before it starts) but bounds the index
    # range scan on ``lo`` from both sides; without it a birthdate lookup reads every later birthdate.
    eq = (Cond("lo", ">=", plo), Cond("lo", "<=", phi), Cond("hi", "<=", phi))
    if prefix in ("eq", "ne"):
        return (eq,)
    if prefix == "gt":
        return ((Cond("hi", ">", phi),),)
    if prefix == "lt":
        return ((Cond("lo", "<", plo),),)
    if prefix == "ge":
        return ((Cond("hi", ">", phi),), eq)
    if prefix == "le":
        return ((Cond("lo", "<", plo),), eq)
    if prefix == "sa":
        return ((Cond("lo", ">=", phi),),)
    if prefix == "eb":
        return ((Cond("hi", "<=", plo),),)
    if prefix == "ap":
        widen = max((phi - plo) // 10, 86_400_000_000 // 2)  # at least half a day either way
        return ((Cond("lo", "<", phi + widen), Cond("hi", ">", plo - widen)),)
    raise ValueError(prefix)


def _point_alts(prefix: str, value: float, plo: float, phi: float, field: str = "value") -> Alts:
    if prefix in ("eq", "ne"):
        return ((Cond(field, ">=", plo), Cond(field, "<", phi)),)
    if prefix in ("gt", "sa"):
        return ((Cond(field, ">", value),),)
    if prefix in ("lt", "eb"):
        return ((Cond(field, "<", value),),)
    if prefix == "ge":
        return ((Cond(field, ">=", value),),)
    if prefix == "le":
        return ((Cond(field, "<=", value),),)
    if prefix == "ap":
        width = abs(value) * 0.1
        return ((Cond(field, ">=", value - width), Cond(field, "<=", value + width)),)
    raise ValueError(prefix)


def _negated(prefix: str, row: Row) -> Node:
    """``ne`` is about the resource's value: one without any value is not "not equal" (unlike ``:not``, which the
    spec defines to include resources with no value), so it needs a value as well as no equal one."""
    return And((Missing(row.param, False), Not(row))) if prefix == "ne" else row


def token_conds(q: TokenQ) -> tuple[Cond, ...]:
    conds: list[Cond] = []
    if q.code is not None:
        conds.append(Cond("code", "=", q.code))
    if q.no_system:
        conds.append(Cond("system", "is-null"))
    elif q.system is not None:
        conds.append(Cond("system", "=", q.system))
    return tuple(conds) or (Cond("code", "not-null"),)


def _quantity_alts(q: QuantityQ) -> Alts:
    if q.canon_code is not None and q.canon_value is not None and q.canon_lo is not None and q.canon_hi is not None:
        base = _point_alts(q.prefix, q.canon_value, q.canon_lo, q.canon_hi, "canon_value")
        return tuple((Cond("canon_code", "=", q.canon_code), *alt) for alt in base)
    extra: list[Cond] = []
    if q.code is not None:
        extra.append(Cond("code", "=", q.code))
    if q.system is not None:
        extra.append(Cond("system", "=", q.system))
    return tuple((*extra, *alt) for alt in _point_alts(q.prefix, q.value, q.lo, q.hi))


def _exists_not_equal(part: Node) -> Node | None:
    """``ne`` inside a composite means "this component's value differs" (of the same element), not "no element has
    this value": the complement of eq's conditions, as alternatives on one row."""
    if isinstance(part, DateQ) and part.prefix == "ne":
        return Row(part.param, ((Cond("lo", "<", part.lo),), (Cond("hi", ">", part.hi),)))
    if isinstance(part, NumberQ) and part.prefix == "ne":
        return Row(part.param, ((Cond("value", "<", part.lo),), (Cond("value", ">=", part.hi),)))
    if isinstance(part, QuantityQ) and part.prefix == "ne":
        eq = lower(QuantityQ(part.param, "eq", part.value, part.lo, part.hi, part.system, part.code,
                             part.canon_value, part.canon_lo, part.canon_hi, part.canon_code))
        assert isinstance(eq, Row)
        unit = tuple(c for c in eq.alts[0] if c.op == "=")
        value = [c for c in eq.alts[0] if c.op != "="]
        lo, hi = value[0], value[1]
        return Row(part.param, ((*unit, Cond(lo.field, "<", lo.value)), (*unit, Cond(hi.field, ">=", hi.value))))
    return None


def _component_alts(part: Node, index: int) -> Alts:
    """Conditions of one composite component, with fields prefixed by the component index."""
    lowered = _exists_not_equal(part) or lower(part)
    if not isinstance(lowered, Row):
        raise ValueError(f"composite component {index} must lower to a single row, got {lowered}")
    return tuple(tuple(Cond(f"{index}.{c.field}", c.op, c.value) for c in alt) for alt in lowered.alts)


def lower(node: Node) -> Node:
    if isinstance(node, And):
        return And(tuple(lower(n) for n in node.items))
    if isinstance(node, Or):
        return Or(tuple(lower(n) for n in node.items))
    if isinstance(node, Not):
        return Not(lower(node.item))
    if isinstance(node, Chain):
        return Chain(node.param, node.target_type, lower(node.inner))
    if isinstance(node, Has):
        return Has(node.source_type, node.ref_param, lower(node.inner))
    if isinstance(node, TokenQ):
        return Row(node.param, (token_conds(node),))
    if isinstance(node, TokenTextQ):
        return Row(node.param, ((Cond("text", "contains", node.text),),))
    if isinstance(node, StringQ):
        if node.mode == "exact":
            return Row(node.param, ((Cond("exact", "=", node.value),),))
        op = "prefix" if node.mode == "start" else "contains"
        return Row(node.param, ((Cond("norm", op, node.value),),))
    if isinstance(node, DateQ):
        return _negated(node.prefix, Row(node.param, _date_alts(node.prefix, node.lo, node.hi)))
    if isinstance(node, NumberQ):
        return _negated(node.prefix, Row(node.param, _point_alts(node.prefix, node.value, node.lo, node.hi)))
    if isinstance(node, QuantityQ):
        return _negated(node.prefix, Row(node.param, _quantity_alts(node)))
    if isinstance(node, RefQ):
        conds: list[Cond] = []
        if node.target_id is not None:
            conds.append(Cond("target_id", "=", node.target_id))
            if node.target_type is not None:
                conds.append(Cond("target_type", "=", node.target_type))
        elif node.url is not None:
            conds.append(Cond("url", "=", node.url))
        elif node.target_type is not None:
            conds.append(Cond("target_type", "=", node.target_type))
        return Row(node.param, (tuple(conds) or (Cond("target_id", "not-null"),),))
    if isinstance(node, RefIdentifierQ):
        conds = [Cond("ident_value", "=", node.value)]
        if node.system is not None:
            conds.append(Cond("ident_system", "=", node.system))
        return Row(node.param, (tuple(conds),))
    if isinstance(node, UriQ):
        if node.mode == "eq":
            return Row(node.param, ((Cond("uri", "=", node.uri),),))
        if node.mode == "below":
            return Row(node.param, ((Cond("uri", "prefix", node.uri),),))
        prefixes = _uri_prefixes(node.uri)
        return Row(node.param, tuple((Cond("uri", "=", p),) for p in prefixes))
    if isinstance(node, CompositeQ):
        alts: list[tuple[Cond, ...]] = [()]
        for index, part in enumerate(node.parts):
            part_alts = _component_alts(part, index)
            alts = [a + b for a in alts for b in part_alts]
        return Row(node.param, tuple(alts))
    return node


def _uri_prefixes(uri: str) -> list[str]:
    """``:above``: the URI itself and every parent path of it (``http://a/b/c`` → ``http://a/b``, ``http://a``)."""
    out = [uri]
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return out
    parts = rest.rstrip("/").split("/")
    for i in range(len(parts) - 1, 0, -1):
        out.append(f"{scheme}://{'/'.join(parts[:i])}")
    return out

