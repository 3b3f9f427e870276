"""Match criteria of conditional interactions and of the basic type search: ``_id`` and ``identifier``.

This is the narrow seam the full search compiler replaces: callers only see :class:`Criteria` and
:func:`parse_criteria`. Repeated parameters AND, comma-separated values OR, ``\\,`` and ``\\|`` escape.
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir_server.search.tree import IdIn, MatchAll, Node, Or, Param, TokenQ, And
from resources.outcome import InvalidInput

SUPPORTED = ("_id", "identifier")


@dataclass(frozen=True, slots=True)
class Token:
    system: str | None  # None: any system; "": explicitly no system
    code: str | None  # None: any code (``system|``)


@dataclass(frozen=True, slots=True)
class Criteria:
    ids: tuple[tuple[str, ...], ...] = ()  # AND of OR-groups
    identifiers: tuple[tuple[Token, ...], ...] = ()

    @property
    def empty(self) -> bool:
        return not self.ids and not self.identifiers


def split_escaped(value: str, sep: str) -> list[str]:
    """Split on ``sep`` except where it is escaped with a backslash; unescape ``\\,``, ``\\|``, ``\\$``, ``\\\\``."""
    parts: list[str] = []
    buf: list[str] = []
    it = iter(value)
    for ch in it:
        if ch == "\\":
            nxt = next(it, "")
            if nxt in (",", "|", "$", "\\"):
                buf.append(nxt if nxt != sep else "\0")
            else:
                buf.append(ch + nxt)
        elif ch == sep:
            parts.append("".join(buf).replace("\0", sep))
            buf = []
        else:
            buf.append(ch)
    parts.append("".join(buf).replace("\0", sep))
    return parts


def _token(raw: str, param: str) -> Token:
    pieces = split_escaped(raw, "|")
    if len(pieces) == 1:
        return Token(None, pieces[0])
    if len(pieces) == 2:
        system, code = pieces
        return Token(system, code or None)
    raise InvalidInput(f"{param}: a token is [system|]code, got {raw!r}", expression=param, message_id="AEGIS-301")


def parse_criteria(pairs: list[tuple[str, str]]) -> Criteria:
    """Bind ``(name, value)`` pairs; anything but ``_id``/``identifier`` is refused, since ignoring a criterion of a
    conditional write could make it touch the wrong resource."""
    ids: list[tuple[str, ...]] = []
    identifiers: list[tuple[Token, ...]] = []
    for name, value in pairs:
        if name not in SUPPORTED:
            raise InvalidInput(
                f"search parameter {name!r} is not supported here yet (supported: {', '.join(SUPPORTED)})",
                expression=name,
                message_id="AEGIS-300",
            )
        values = [v for v in split_escaped(value, ",")]
        if not value or any(v == "" for v in values):
            raise InvalidInput(f"{name}: empty value", expression=name, message_id="AEGIS-302")
        if name == "_id":
            ids.append(tuple(values))
        else:
            identifiers.append(tuple(_token(v, name) for v in values))
    return Criteria(tuple(ids), tuple(identifiers))


def criteria_tree(rtype: str, criteria: Criteria) -> Node:
    """The lowered search tree of the criteria."""
    from fhir_server.search.rewrite import prepare_sync

    items: list[Node] = [IdIn(ids) for ids in criteria.ids]
    param = Param(rtype, "identifier", "token")
    for tokens in criteria.identifiers:
        items.append(Or(tuple(TokenQ(param, t.system or None, t.code, no_system=t.system == "") for t in tokens)))
    return prepare_sync(And(tuple(items))) if items else MatchAll()
