"""Sorting and keyset paging over Elasticsearch with ``search_after``, with the cursor semantics of the stores.

Order: per sort key "has a value" before "has none" (resources without a value sort last in either direction, as
in the SQLite and MongoDB stores), values in the key's direction, then the primary store's key ``k`` (creation
order). Elasticsearch would place missing values itself, but then a cursor row without a value has no value to
continue after that survives a JSON cursor (which holds numbers and strings only). So the result is read in
*partitions* — each combination of present/absent per optional sort key, in result order — each an ``exists``
filter plus a plain sort over the present keys and ``k``, with ``search_after`` inside the cursor's partition.
Cursors are ``(mask, value…, k)`` with bit j of ``mask`` set when the row had no value for key j (its value is then
0): the same shape as the MongoDB store's, so a page cursor stays meaningful when a search falls back to it.

A backward page (``before``) reads the same partitions in reverse order with every sort reversed.
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


def partitions(specs: list[SortSpec]) -> list[int]:
    """Every mask of missing sort values that can occur, in result order (key 1's presence most significant)."""
    optional = [j for j, s in enumerate(specs) if s.optional]
    masks = []
    for n in range(1 << len(optional)):
        mask = 0
        for bit, j in enumerate(optional):
            if n >> (len(optional) - 1 - bit) & 1:
                mask |= 1 << j
        masks.append(mask)
    return masks


def partition_filters(mask: int, specs: list[SortSpec]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for j, spec in enumerate(specs):
        if not spec.optional:
            continue
        exists = {"exists": {"field": spec.field}}
        out.append({"bool": {"must_not": [exists]}} if mask >> j & 1 else exists)
    return out


def es_sort(mask: int, specs: list[SortSpec], backwards: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for j, spec in enumerate(specs):
        if not mask >> j & 1:
            order = "desc" if spec.descending != backwards else "asc"
            out.append({spec.field: {"order": order, "unmapped_type": spec.unmapped_type}})
    out.append({"k": {"order": "desc" if backwards else "asc"}})
    return out


def search_after(cursor: tuple[Any, ...], specs: list[SortSpec]) -> list[Any]:
    """The cursor's sort values as ``search_after`` takes them (present keys only, then ``k``)."""
    mask = cursor[0]
    return [cursor[1 + j] for j in range(len(specs)) if not mask >> j & 1] + [cursor[-1]]


def cursor_of(mask: int, sort_values: list[Any], specs: list[SortSpec]) -> tuple[Any, ...]:
    """The cursor of a hit read in partition ``mask`` from its ``sort`` values."""
    values = iter(sort_values)
    out: list[Any] = [mask]
    for j in range(len(specs)):
        out.append(0 if mask >> j & 1 else next(values))
    out.append(next(values))
    return tuple(out)
