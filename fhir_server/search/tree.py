"""The typed search expression tree: what a query means, independent of any backend.

Binding (:mod:`fhir_server.search.bind`) produces *query nodes* (``TokenQ``, ``DateQ``, ``Chain`` …); rewrite passes
(:mod:`fhir_server.search.rewrite`) expand terminology, compartments and lists, and lower every value comparison to
``Row`` nodes — "some index row of this family, for this parameter, satisfies one of these condition lists" — so
that the range semantics of prefixes are written once. Renderers (SQLite, MongoDB, Elasticsearch) and the in-memory
matcher only see ``And``/``Or``/``Not``/``Row``/``Missing``/``Chain``/``Has``/``IdIn``/``TypeIn``/``TextSearch``.

``str(node)`` prints an S-expression (golden tests); ``shape(node)`` is the same without values (plan caching).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Union


@dataclass(frozen=True, slots=True)
class Param:
    """A bound SearchParameter: the resource type it is evaluated on, its code and its type (= index family)."""

    rtype: str
    code: str
    type: str  # string | token | reference | date | number | quantity | uri | composite | special

    def __str__(self) -> str:
        return f"{self.rtype}.{self.code}"


# ---- boolean structure ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Node


# ---- query nodes (bound values; lowered to Row by rewrite passes) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenQ:
    param: Param
    system: str | None  # None: any system (unless no_system)
    code: str | None  # None: any code (``system|``)
    no_system: bool = False  # ``|code``: the value must have no system


@dataclass(frozen=True, slots=True)
class TokenTextQ:
    param: Param
    text: str  # normalised; matches the start of a word-normalised display/text


@dataclass(frozen=True, slots=True)
class StringQ:
    param: Param
    value: str  # normalised for start/contains; as given for exact
    mode: str  # start | exact | contains


@dataclass(frozen=True, slots=True)
class DateQ:
    param: Param
    prefix: str  # eq ne gt lt ge le sa eb ap
    lo: int
    hi: int


@dataclass(frozen=True, slots=True)
class NumberQ:
    param: Param
    prefix: str
    value: float
    lo: float
    hi: float


@dataclass(frozen=True, slots=True)
class QuantityQ:
    param: Param
    prefix: str
    value: float
    lo: float
    hi: float
    system: str | None
    code: str | None
    # the query value in UCUM canonical units, when system is UCUM (or absent) and the unit converts
    canon_value: float | None = None
    canon_lo: float | None = None
    canon_hi: float | None = None
    canon_code: str | None = None


@dataclass(frozen=True, slots=True)
class RefQ:
    param: Param
    target_type: str | None
    target_id: str | None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class RefIdentifierQ:
    param: Param
    system: str | None
    value: str


@dataclass(frozen=True, slots=True)
class UriQ:
    param: Param
    uri: str
    mode: str  # eq | below | above


@dataclass(frozen=True, slots=True)
class CompositeQ:
    param: Param
    parts: tuple[Node, ...]  # one query node per component; their Param codes are "<code>#<index>"


@dataclass(frozen=True, slots=True)
class ValueSetQ:
    """``:in``/``:not-in`` a ValueSet, ``:above``/``:below`` a code in a CodeSystem; expanded by a rewrite pass."""

    param: Param
    mode: str  # in | not-in | above | below
    url: str  # ValueSet URL for in/not-in; system for above/below
    code: str | None = None


@dataclass(frozen=True, slots=True)
class ListQ:
    list_id: str


@dataclass(frozen=True, slots=True)
class CompartmentQ:
    compartment_type: str  # e.g. Patient
    compartment_id: str
    rtype: str


# ---- nodes every backend renders ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cond:
    field: str  # a field of the family's value class; composite: "<component index>.<field>"
    op: str  # = != < <= > >= prefix contains is-null not-null
    value: Any = None


@dataclass(frozen=True, slots=True)
class Row:
    """Some index row of ``param`` (family = ``param.type``) satisfies all conditions of one of ``alts``."""

    param: Param
    alts: tuple[tuple[Cond, ...], ...]


@dataclass(frozen=True, slots=True)
class Missing:
    param: Param
    missing: bool  # True: the resource has no value for param


@dataclass(frozen=True, slots=True)
class Chain:
    """The reference ``param`` points at a current ``target_type`` resource that satisfies ``inner``."""

    param: Param
    target_type: str
    inner: Node


@dataclass(frozen=True, slots=True)
class Has:
    """Some current ``source_type`` resource refers to this one through ``ref_param`` and satisfies ``inner``."""

    source_type: str
    ref_param: Param
    inner: Node


@dataclass(frozen=True, slots=True)
class IdIn:
    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TypeIn:
    types: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TextSearch:
    kind: str  # _text (narrative) | _content (all text)
    query: str  # normalised words; all must occur


@dataclass(frozen=True, slots=True)
class MatchAll:
    pass


@dataclass(frozen=True, slots=True)
class MatchNone:
    pass


Node = Union[
    And, Or, Not, TokenQ, TokenTextQ, StringQ, DateQ, NumberQ, QuantityQ, RefQ, RefIdentifierQ, UriQ, CompositeQ,
    ValueSetQ, ListQ, CompartmentQ, Row, Missing, Chain, Has, IdIn, TypeIn, TextSearch, MatchAll, MatchNone,
]


def _fmt(value: Any, with_values: bool) -> str:
    if isinstance(value, tuple):
        return "(" + " ".join(_fmt(v, with_values) for v in value) + ")"
    if isinstance(value, (Param,)):
        return str(value)
    if _is_node(value) or isinstance(value, Cond):
        return sexpr(value, with_values)
    if not with_values:
        return "?"
    return repr(value)


def _is_node(value: Any) -> bool:
    return hasattr(value, "__dataclass_fields__") and not isinstance(value, (Param, Cond))


def sexpr(node: Any, with_values: bool = True) -> str:
    name = type(node).__name__
    if isinstance(node, Cond):
        if node.op in ("is-null", "not-null"):
            return f"({node.field} {node.op})"
        return f"({node.field} {node.op} {_fmt(node.value, with_values)})"
    parts = []
    for f in fields(node):
        value = getattr(node, f.name)
        if isinstance(value, tuple) and value and all(_is_node(v) for v in value):
            parts.append(" ".join(sexpr(v, with_values) for v in value))
        elif isinstance(value, tuple) and value and all(isinstance(v, tuple) for v in value):
            parts.append(" ".join("(" + " ".join(sexpr(c, with_values) for c in alt) + ")" for alt in value))
        elif _is_node(value):
            parts.append(sexpr(value, with_values))
        elif isinstance(value, (Param, str)) and f.name in ("param", "ref_param", "source_type", "target_type",
                                                            "rtype", "mode", "prefix", "kind", "compartment_type"):
            parts.append(str(value))
        else:
            parts.append(_fmt(value, with_values))
    return f"({name}{' ' if parts else ''}{' '.join(parts)})"


def shape(node: Node) -> str:
    """The tree without its values: equal for queries that differ only in values."""
    return sexpr(node, with_values=False)


for _cls in (And, Or, Not, TokenQ, TokenTextQ, StringQ, DateQ, NumberQ, QuantityQ, RefQ, RefIdentifierQ, UriQ,
             CompositeQ, ValueSetQ, ListQ, CompartmentQ, Row, Missing, Chain, Has, IdIn, TypeIn, TextSearch,
             MatchAll, MatchNone, Cond):
    _cls.__str__ = sexpr  # type: ignore[assignment]
