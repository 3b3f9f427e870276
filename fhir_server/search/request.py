"""The search request: raw ``(name, value)`` pairs parsed into clauses and result controls, and printed back.

This layer knows the *syntax* of search (search.html): parameter names with modifiers, chains and ``_has``, comma
OR-lists with backslash escapes, and the result parameters (``_sort``, ``_count``, ``_include`` …). It does not know
what a parameter means for a resource type; that is :mod:`fhir_server.search.bind`. Keeping the two apart lets
the request print itself back as a canonical query string (self/next links) without consulting the registry, and
lets bind drop unknown clauses and print what it really searched for.

Escaping (search.html#escaping): ``\\,`` ``\\|`` ``\\$`` and ``\\\\`` are escapes. Which of ``|`` and ``$`` are
separators depends on the parameter's type, which only bind knows, so a clause value is split on unescaped commas
and the comma escapes are resolved, while the ``\\|``, ``\\$`` and ``\\\\`` escapes are kept for bind
(:func:`split_unescaped` then :func:`unescape`). ``format`` re-escapes commas, so parse → format → parse is stable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import NamedTuple
from urllib.parse import quote

from fhir_server.search.registry import RESULT_PARAMETERS
from resources.model import is_resource_type
from resources.outcome import InvalidInput

__all__ = [
    "ChainLink",
    "Clause",
    "HasLink",
    "Include",
    "SearchRequest",
    "SortKey",
    "SUMMARY_VALUES",
    "TOTAL_VALUES",
    "parse_request",
    "split_unescaped",
    "unescape",
]

SUMMARY_VALUES = ("true", "text", "data", "count", "false")
TOTAL_VALUES = ("none", "estimate", "accurate")
_ESCAPABLE = ",|$\\"

# a parameter code or a modifier: letters, digits, '_' and '-' (R4 codes such as ``value-quantity``, ``_lastUpdated``)
_CODE = re.compile(r"[A-Za-z0-9_\-]+")
_MODIFIER = re.compile(r"[A-Za-z0-9_\-]+")
_TYPE_NAME = re.compile(r"[A-Z][A-Za-z]*")
_ELEMENT = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*")
_INT = re.compile(r"[0-9]+")

# what a formatted value may show unencoded: enough to keep links readable (``:`` and ``/`` of URLs, the ``,`` of
# OR-lists, the ``$`` of composites, the ``*`` of ``_include=*``); ``|`` is not allowed unencoded in a URI
# (RFC 3986), so it becomes ``%7C``
_SAFE_VALUE = ":/,$@*"
_SAFE_NAME = ":"


# ---- escapes ------------------------------------------------------------------------------------------------------


def split_unescaped(text: str, sep: str) -> list[str]:
    """Split ``text`` on every ``sep`` not preceded by an escaping backslash; escapes stay as written.

    Keeping the escapes lets a piece be split again on another separator (a composite on ``$``, then its token
    part on ``|``) before :func:`unescape` resolves them once at the end.
    """
    parts: list[str] = []
    buf: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n:
            buf.append(text[i : i + 2])
            i += 2
        elif ch == sep:
            parts.append("".join(buf))
            buf = []
            i += 1
        else:
            buf.append(ch)
            i += 1
    parts.append("".join(buf))
    return parts


def _resolve(text: str, chars: str) -> str:
    """Resolve the escapes of ``chars``; other escape pairs (and a lone backslash) stay as written."""
    if "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n:
            nxt = text[i + 1]
            out.append(nxt if nxt in chars else text[i : i + 2])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def unescape(text: str) -> str:
    """The literal text of a (piece of a) value: ``\\,`` ``\\|`` ``\\$`` ``\\\\`` resolved; a backslash before any
    other character is an ordinary character (the spec defines no other escapes)."""
    return _resolve(text, _ESCAPABLE)


def _split_or(value: str) -> tuple[str, ...]:
    return tuple(_resolve(piece, ",") for piece in split_unescaped(value, ","))


# ---- the parsed request -------------------------------------------------------------------------------------------


class ChainLink(NamedTuple):
    """One reference traversed by a chain: ``subject:Patient`` → ``ChainLink("subject", "Patient")``."""

    code: str
    target_type: str | None  # the type modifier of the link, if any (bind checks it is a resource type)


class HasLink(NamedTuple):
    """One reverse-chain step: ``_has:Observation:patient`` → ``HasLink("Observation", "patient")``."""

    source_type: str
    ref_code: str


class SortKey(NamedTuple):
    code: str
    descending: bool


class Include(NamedTuple):
    """``_include``/``_revinclude`` = ``source:code[:target]``; ``*`` alone is ``Include("*", "*", None, …)``."""

    source_type: str
    code: str
    target_type: str | None
    iterate: bool

    def text(self) -> str:
        if self.source_type == "*" and self.code == "*" and self.target_type is None:
            return "*"
        out = f"{self.source_type}:{self.code}"
        return f"{out}:{self.target_type}" if self.target_type else out


@dataclass(frozen=True, slots=True)
class Clause:
    """One search criterion: a parameter name as given and its OR-list of values.

    The name is decomposed as ``[_has:T:ref:]* [link(:Type)?.]* code[:modifier]``: ``has`` holds the reverse-chain
    steps, ``chain`` the references traversed, and ``code``/``modifier`` the parameter the values are matched
    against. So ``subject:Patient.name:exact`` is ``chain=(("subject", "Patient"),)``, ``code="name"``,
    ``modifier="exact"``, and an unchained ``subject:Patient`` is ``code="subject"``, ``modifier="Patient"``.
    """

    name: str
    code: str
    modifier: str | None
    values: tuple[str, ...]  # OR-list; comma escapes resolved, ``\\|`` ``\\$`` ``\\\\`` kept (see module doc)
    chain: tuple[ChainLink, ...] = ()
    has: tuple[HasLink, ...] = ()

    @property
    def plain_values(self) -> tuple[str, ...]:
        """The values with every escape resolved, for callers that do not split them further."""
        return tuple(unescape(v) for v in self.values)


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """A parsed search: clauses (ANDed, in the order given) and the result controls."""

    clauses: tuple[Clause, ...] = ()
    sort: tuple[SortKey, ...] = ()
    count: int | None = None
    include: tuple[Include, ...] = ()
    revinclude: tuple[Include, ...] = ()
    summary: str | None = None
    elements: tuple[str, ...] = ()
    total: str | None = None
    cursor: str | None = None
    types: tuple[str, ...] = ()
    # ``_format``/``_pretty`` mean nothing to search but a client expects them to survive on next/self links
    passthrough: tuple[tuple[str, str], ...] = ()
    # ``_contained``/``_containedType``: accepted, not acted on; bind reports a non-default value as unsupported
    ignored: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, pairs: list[tuple[str, str]] | tuple[tuple[str, str], ...]) -> SearchRequest:
        return parse_request(pairs)

    def format(self) -> str:
        """The canonical query string (no leading ``?``): clauses in the given order, then the controls in a fixed
        order, ``_cursor`` last so a next link is this request with another cursor."""
        out: list[tuple[str, str]] = []
        for c in self.clauses:
            out.append((c.name, ",".join(v.replace(",", "\\,") for v in c.values)))
        if self.types:
            out.append(("_type", ",".join(self.types)))
        if self.sort:
            out.append(("_sort", ",".join(("-" if k.descending else "") + k.code for k in self.sort)))
        if self.count is not None:
            out.append(("_count", str(self.count)))
        for name, incs in (("_include", self.include), ("_revinclude", self.revinclude)):
            for inc in incs:
                out.append((f"{name}:iterate" if inc.iterate else name, inc.text()))
        if self.summary is not None:
            out.append(("_summary", self.summary))
        if self.elements:
            out.append(("_elements", ",".join(self.elements)))
        if self.total is not None:
            out.append(("_total", self.total))
        out.extend(self.passthrough)
        if self.cursor is not None:
            out.append(("_cursor", self.cursor))
        return "&".join(f"{quote(k, safe=_SAFE_NAME)}={quote(v, safe=_SAFE_VALUE)}" for k, v in out)

    def with_cursor(self, cursor: str | None) -> SearchRequest:
        return replace(self, cursor=cursor)

    def with_clauses(self, clauses: tuple[Clause, ...]) -> SearchRequest:
        return replace(self, clauses=clauses)


# ---- parsing ------------------------------------------------------------------------------------------------------


def _bad(name: str, message: str, message_id: str) -> InvalidInput:
    return InvalidInput(f"{name}: {message}", expression=name, message_id=message_id)


def _parse_name(name: str) -> tuple[tuple[HasLink, ...], tuple[ChainLink, ...], str, str | None]:
    """``(has, chain, code, modifier)`` of a parameter name, or InvalidInput (AEGIS-331/323) if malformed."""
    has: list[HasLink] = []
    rest = name
    while rest == "_has" or rest.startswith("_has:"):
        parts = rest.split(":", 3)
        if len(parts) < 4 or not all(parts[1:]):
            raise _bad(name, "_has takes the form _has:<type>:<reference parameter>:<parameter>", "AEGIS-323")
        _, source, ref, rest = parts
        if not _TYPE_NAME.fullmatch(source) or not _CODE.fullmatch(ref):
            raise _bad(name, f"_has:{source}:{ref} is not a <type>:<reference parameter> pair", "AEGIS-323")
        has.append(HasLink(source, ref))
    segments = rest.split(".")
    chain: list[ChainLink] = []
    for i, seg in enumerate(segments):
        code, sep, modifier = seg.partition(":")
        if not _CODE.fullmatch(code) or (sep and not _MODIFIER.fullmatch(modifier)):
            raise _bad(name, f"{seg!r} is not a parameter name with an optional modifier", "AEGIS-331")
        if i < len(segments) - 1:
            chain.append(ChainLink(code, modifier or None))
        else:
            return tuple(has), tuple(chain), code, (modifier or None)
    raise AssertionError("unreachable: str.split returns at least one segment")


def _single(name: str, seen: dict[str, str], value: str) -> None:
    """Result parameters that take one value: a repeat must agree, else the request is ambiguous."""
    if name in seen and seen[name] != value:
        raise _bad(name, f"given twice with different values ({seen[name]!r}, {value!r})", "AEGIS-332")
    seen[name] = value


def _parse_include(name: str, value: str, iterate: bool) -> Include:
    if value == "*":
        return Include("*", "*", None, iterate)
    parts = value.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise _bad(name, f"{value!r} is not <source type>:<search parameter>[:<target type>] or *", "AEGIS-326")
    source, code = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if not (source == "*" or _TYPE_NAME.fullmatch(source)) or not (code == "*" or _CODE.fullmatch(code)):
        raise _bad(name, f"{value!r} is not <source type>:<search parameter>[:<target type>] or *", "AEGIS-326")
    if target is not None and not _TYPE_NAME.fullmatch(target):
        raise _bad(name, f"{target!r} is not a resource type", "AEGIS-326")
    return Include(source, code, target, iterate)


def parse_request(pairs: list[tuple[str, str]] | tuple[tuple[str, str], ...]) -> SearchRequest:
    """Parse decoded ``(name, value)`` pairs (a GET query or a POST ``_search`` form, order and repeats kept).

    Only syntax is checked here; malformed result parameters and parameter names raise InvalidInput naming the
    parameter. Whether a clause's parameter exists for the type is bind's question.
    """
    clauses: list[Clause] = []
    sort: list[SortKey] = []
    include: list[Include] = []
    revinclude: list[Include] = []
    elements: list[str] = []
    types: list[str] = []
    passthrough: list[tuple[str, str]] = []
    ignored: list[tuple[str, str]] = []
    singles: dict[str, str] = {}
    count: int | None = None
    summary: str | None = None
    total: str | None = None
    cursor: str | None = None

    for name, value in pairs:
        if not name:
            continue  # ``&&`` or a stray ``=x``: nothing was asked
        base, _, modifier = name.partition(":")
        if base in ("_include", "_revinclude"):
            if modifier not in ("", "iterate", "recurse"):  # ``recurse`` is the STU3 spelling of ``iterate``
                raise _bad(name, f"unknown modifier :{modifier} (only :iterate)", "AEGIS-326")
            inc = _parse_include(name, value, iterate=bool(modifier))
            (include if base == "_include" else revinclude).append(inc)
            continue
        if base not in RESULT_PARAMETERS:
            has, chain, code, mod = _parse_name(name)
            clauses.append(Clause(name, code, mod, _split_or(value), chain, has))
            continue
        if modifier:
            raise _bad(name, f"{base} takes no modifier", "AEGIS-331")
        if base == "_count":
            if not _INT.fullmatch(value):
                raise _bad(name, f"{value!r} is not a non-negative integer", "AEGIS-324")
            _single(name, singles, str(int(value)))
            count = int(value)
        elif base == "_sort":
            for item in value.split(","):
                desc = item.startswith("-")
                code = item[1:] if desc else item
                if not _CODE.fullmatch(code):
                    raise _bad(name, f"{value!r} is not a comma list of [-]<search parameter>", "AEGIS-325")
                sort.append(SortKey(code, desc))
        elif base == "_summary":
            if value not in SUMMARY_VALUES:
                raise _bad(name, f"{value!r} is not one of {', '.join(SUMMARY_VALUES)}", "AEGIS-327")
            _single(name, singles, value)
            summary = value
        elif base == "_total":
            if value not in TOTAL_VALUES:
                raise _bad(name, f"{value!r} is not one of {', '.join(TOTAL_VALUES)}", "AEGIS-328")
            _single(name, singles, value)
            total = value
        elif base == "_elements":
            for item in value.split(","):
                item = item.strip()
                if not _ELEMENT.fullmatch(item):
                    raise _bad(name, f"{value!r} is not a comma list of element names", "AEGIS-329")
                if item not in elements:
                    elements.append(item)
        elif base == "_type":
            for item in value.split(","):
                item = item.strip()
                if not is_resource_type(item):
                    raise _bad(name, f"{item!r} is not a resource type", "AEGIS-330")
                if item not in types:
                    types.append(item)
        elif base == "_cursor":
            if not value:
                raise _bad(name, "empty cursor", "AEGIS-337")
            _single(name, singles, value)
            cursor = value
        elif base in ("_format", "_pretty"):
            passthrough.append((name, value))
        else:  # _contained, _containedType
            ignored.append((name, value))

    return SearchRequest(
        clauses=tuple(clauses),
        sort=tuple(sort),
        count=count,
        include=tuple(include),
        revinclude=tuple(revinclude),
        summary=summary,
        elements=tuple(elements),
        total=total,
        cursor=cursor,
        types=tuple(types),
        passthrough=tuple(passthrough),
        ignored=tuple(ignored),
    )
