"""Sorting and keyset paging over Elasticsearch with ``search_after``, with the cursor semantics of the stores.

Order: per sort key, in turn, "has a value" before "has none" (resources without a value sort last in either
direction, as in the SQLite and MongoDB stores) and values in the key's direction; then the primary store's key
``k`` (creation order). That is Elasticsearch's own ``missing: _last`` per key, so one request reads a page.

Cursors are ``(mask, value…, k)``: bit j of ``mask`` is set when the row had no value for key j (its value is then
0), because a JSON cursor holds numbers and strings only, while Elasticsearch reports a missing value as ``null``
(keywords), ``±Long.MAX`` (longs) or ``±Infinity`` (doubles) and wants the same back in ``search_after``. The shape is
the MongoDB store's, so a page cursor stays meaningful when a search falls back to it.

A backward page (``before``) reverses every sort (missing values then come *first*, which is the same sentinel for
``search_after``), reads from the cursor, and the caller reverses the rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_server.storage.base import SortKey
from fhir_server.storage.elastic.mapping import SORT_GROUP, field_key
from fhir_server.storage.elastic.render import family_of
from resources.outcome import InvalidInput

_UNMAPPED = {"so_k": "keyword", "so_n": "double", "so_l": "long"}


@dataclass(frozen=True, slots=True)
class SortSpec:
    field: str  # the document field holding the sort value
    optional: bool  # False: every document has a value (_id)
    descending: bool
    numeric: bool
    unmapped_type: str


def sort_specs(sort: tuple[SortKey, ...]) -> list[SortSpec]:
    out = []
    for key in sort:
        if key.param.code == "_id":
            out.append(SortSpec("i", False, key.descending, False, "keyword"))
            continue
        group = SORT_GROUP.get(family_of(key.param))
        if group is None:
            raise InvalidInput(f"cannot sort by {key.param.code} (a {key.param.type} parameter)",
                               expression="_sort", message_id="AEGIS-371")
        field = f"{group}.{field_key(key.param.code)}.{'d' if key.descending else 'a'}"
        out.append(SortSpec(field, True, key.descending, group != "so_k", _UNMAPPED[group]))
    return out


def check_cursor(cursor: tuple[Any, ...], specs: list[SortSpec]) -> tuple[Any, ...]:
    bad = InvalidInput("_cursor does not belong to this search", expression="_cursor", message_id="AEGIS-181")
    if (len(cursor) != len(specs) + 2 or not isinstance(cursor[0], int) or not isinstance(cursor[-1], int)
            or not 0 <= cursor[0] < 1 << len(specs)):
        raise bad
    for j, spec in enumerate(specs):
        value = cursor[1 + j]
        missing = cursor[0] >> j & 1
        if missing and not spec.optional:
            raise bad
        if not missing and spec.numeric != (isinstance(value, (int, float)) and not isinstance(value, bool)):
            raise bad
    return cursor


_LONG_MAX, _LONG_MIN = 2**63 - 1, -(2**63)


def _missing_sentinel(spec: SortSpec) -> Any:
    """What Elasticsearch reports (and takes in ``search_after``) for a missing value of ``spec``: the value that
    sorts last in the key's own direction (and first when reversed, which is the same value)."""
    if spec.unmapped_type == "keyword":
        return None
    if spec.unmapped_type == "long":
        return _LONG_MIN if spec.descending else _LONG_MAX
    return "-Infinity" if spec.descending else "Infinity"


def _is_missing(value: Any, spec: SortSpec) -> bool:
    return value is None or (spec.numeric and value in (_LONG_MAX, _LONG_MIN, "Infinity", "-Infinity"))


def es_sort(specs: list[SortSpec], backwards: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for spec in specs:
        order = "desc" if spec.descending != backwards else "asc"
        out.append({spec.field: {"order": order, "missing": "_first" if backwards else "_last",
                                 "unmapped_type": spec.unmapped_type}})
    out.append({"k": {"order": "desc" if backwards else "asc"}})
    return out


def search_after(cursor: tuple[Any, ...], specs: list[SortSpec]) -> list[Any]:
    """The cursor's sort values as ``search_after`` takes them (missing ones as Elasticsearch's sentinels)."""
    mask = cursor[0]
    values = [_missing_sentinel(spec) if mask >> j & 1 else cursor[1 + j] for j, spec in enumerate(specs)]
    return [*values, cursor[-1]]


def cursor_of(sort_values: list[Any], specs: list[SortSpec]) -> tuple[Any, ...]:
    """The cursor of a hit, from its ``sort`` values."""
    mask = 0
    out: list[Any] = []
    for j, spec in enumerate(specs):
        value = sort_values[j]
        if spec.optional and _is_missing(value, spec):
            mask |= 1 << j
            value = 0
        out.append(value)
    return (mask, *out, sort_values[-1])
