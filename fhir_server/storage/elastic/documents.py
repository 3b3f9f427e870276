"""Elasticsearch documents, built from the values :mod:`fhir_server.search.extract` extracts at write time.

The document of a resource is its current version: pointer fields, the canonical JSON, the search values per family
(see :mod:`.mapping`), sort values and text words. A deleted resource keeps a tombstone document (``d: true``, no
values) so that versions stay ordered: every document is written with external versioning on the version id, and
Elasticsearch refuses an older version over a newer one, whatever order the indexer meets them in.
"""

from __future__ import annotations

from typing import Any

from fhir_server.search.extract import extract, text_content
from fhir_server.search.values import (
    CompositeV,
    DateV,
    NumberV,
    QuantityV,
    ReferenceV,
    StringV,
    TokenV,
    UriV,
    Value,
)
from fhir_server.storage.base import Version
from fhir_server.storage.elastic.mapping import FAMILY_FIELDS, SORT_FIELD, SORT_GROUP, field_key
from resources import jsonio

Doc = dict[str, Any]

_FAMILY_OF_CLASS: dict[type, str] = {StringV: "string", TokenV: "token", ReferenceV: "reference", DateV: "date",
                                     NumberV: "number", QuantityV: "quantity", UriV: "uri", CompositeV: "composite"}


def family_of_value(value: Value) -> str:
    return _FAMILY_OF_CLASS[type(value)]


def _fields(family: str, value: Value) -> Doc:
    """The family's fields of one value; ``None`` fields are left out (a missing field is what ``exists`` sees)."""
    out: Doc = {}
    for name, spec in FAMILY_FIELDS[family].items():
        field = getattr(value, name)
        if field is not None:
            # the mapping's type, so a Python int in a double field (or the reverse) cannot surprise a comparison
            out[name] = float(field) if spec["type"] == "double" else field
    return out


def encode_value(code: str, value: Value) -> Doc:
    family = family_of_value(value)
    if isinstance(value, CompositeV):
        sub: Doc = {"p": code}
        for n, part in enumerate(value.parts):
            sub[f"p{n}"] = {family_of_value(part): _fields(family_of_value(part), part)}
        return sub
    sub = {"p": code, **_fields(family, value)}
    if isinstance(value, ReferenceV) and value.target_type and value.target_id is not None:
        sub["key"] = f"{value.target_type}/{value.target_id}"
    return sub


def _words(text: str) -> list[str]:
    return list(dict.fromkeys(text.split()))


def document(version: Version, key: int) -> Doc:
    """The document of ``version`` (the current version of its resource), whose primary-store key is ``key``."""
    doc: Doc = {"t": version.rtype, "i": version.rid, "key": f"{version.rtype}/{version.rid}", "d": version.deleted,
                "v": version.vid, "k": key, "s": version.seq, "lu": version.last_updated, "m": version.method,
                "b": version.body.decode("utf-8")}
    if version.deleted:
        return doc
    resource = jsonio.loads(version.body)
    arrays: dict[str, list[Doc]] = {}
    sort: dict[str, dict[str, dict[str, Any]]] = {}
    for code, value in extract(resource):
        family = family_of_value(value)
        arrays.setdefault(family, []).append(encode_value(code, value))
        column = SORT_FIELD.get(family)
        scalar = getattr(value, column) if column is not None else None
        if scalar is None:  # like SQL's MIN/MAX, which skip NULLs
            continue
        group = SORT_GROUP[family]
        scalar = float(scalar) if group == "so_n" else scalar
        bounds = sort.setdefault(group, {}).get(field_key(code))
        if bounds is None:
            sort[group][field_key(code)] = {"a": scalar, "d": scalar}
        else:
            bounds["a"] = min(bounds["a"], scalar)
            bounds["d"] = max(bounds["d"], scalar)
    doc.update(arrays)
    doc.update(sort)
    narrative, content = text_content(resource)
    if narrative:
        doc["tn"] = _words(narrative)
    if content:
        doc["tc"] = _words(content)
    return doc


def version_of(source: Doc) -> Version:
    """The :class:`Version` a search hit stands for (its ``_source`` holds the pointer fields and the body)."""
    return Version(source["t"], source["i"], source["v"], source["lu"], bool(source["d"]), source["m"],
                   source["b"].encode("utf-8"), source["s"])


SOURCE_FIELDS = ["t", "i", "v", "lu", "d", "m", "b", "s", "k"]  # what a page needs (not the index values)
