"""Index layout of the Elasticsearch search backend: index names, the index template and its mapping.

One index per resource type, ``<prefix>_<type in lower case>`` (``aegis_patient``), created on first use through an
index template whose pattern is ``<prefix>_*``. Why per type: a type search touches only that type's shards, term
statistics and field counts stay per type, a type can be reindexed or dropped alone, and a system-level search is
still one request (the pattern, or the list of the types asked for). The prefix may not contain ``_``, so the
pattern of one prefix never matches the indices of another on a shared cluster.

The mapping is the same for every type (the search values are typed by family, not by parameter), strict at the
root so a malformed document fails loudly instead of growing the mapping:

* ``t``, ``i``, ``key`` (``"<type>/<id>"``), ``d`` (deleted: a tombstone), ``v``, ``k`` (the primary store's key),
  ``s``, ``lu``, ``m``, and ``b`` (the canonical JSON, kept in ``_source`` only: a search page needs no second read).
* one ``nested`` field per value family (``string``, ``token``, ``reference``, ``date``, ``number``, ``quantity``,
  ``uri``, ``composite``) holding ``{p: <parameter code>, <the family's fields as in search.values>}``: nested,
  so that every condition of one alternative holds on the *same* value (``system|code``, a date range, the
  components of a composite). A composite's components are ``p0``, ``p1``, ``p2``, each ``{<family>: {fields}}``:
  the families disagree on field types (a date's ``lo`` is a long, a number's a double).
* ``so_k``/``so_n``/``so_l``: per parameter its smallest (``a``) and largest (``d``) sort value, as keyword, double
  or long by family (dynamic templates; every other field is declared).
* ``tn``/``tc``: the distinct whitespace-separated words of the normalised narrative and content. A query word
  (which has no whitespace) occurs in the normalised text exactly when it occurs inside one of its words, so
  ``_text``/``_content`` are ``wildcard`` queries on keywords: no analysis plugin needed.

Keywords over 8,191 characters are not indexed (``ignore_above``): Lucene refuses terms over 32 KiB.
"""

from __future__ import annotations

import re
from typing import Any

KEYWORD: dict[str, Any] = {"type": "keyword", "ignore_above": 8191}
LONG: dict[str, Any] = {"type": "long"}
DOUBLE: dict[str, Any] = {"type": "double"}

FAMILY_FIELDS: dict[str, dict[str, dict[str, Any]]] = {
    "string": {"norm": KEYWORD, "exact": KEYWORD},
    "token": {"system": KEYWORD, "code": KEYWORD, "text": KEYWORD},
    "reference": {"target_type": KEYWORD, "target_id": KEYWORD, "url": KEYWORD, "ident_system": KEYWORD,
                  "ident_value": KEYWORD},
    "date": {"lo": LONG, "hi": LONG},
    "number": {"value": DOUBLE, "lo": DOUBLE, "hi": DOUBLE},
    "quantity": {"value": DOUBLE, "lo": DOUBLE, "hi": DOUBLE, "system": KEYWORD, "code": KEYWORD, "unit": KEYWORD,
                 "canon_value": DOUBLE, "canon_lo": DOUBLE, "canon_hi": DOUBLE, "canon_code": KEYWORD},
    "uri": {"uri": KEYWORD},
}
FAMILIES = (*FAMILY_FIELDS, "composite")
MAX_COMPONENTS = 3  # the most components any R4 composite SearchParameter has

# the field a _sort orders by per family (as the SQLite and MongoDB stores), and where its value is kept
SORT_FIELD = {"string": "norm", "token": "code", "reference": "target_id", "date": "lo", "number": "value",
              "quantity": "value", "uri": "uri"}
SORT_GROUP = {"string": "so_k", "token": "so_k", "reference": "so_k", "uri": "so_k", "number": "so_n",
              "quantity": "so_n", "date": "so_l"}

_PREFIX = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


def check_prefix(prefix: str) -> str:
    if not _PREFIX.match(prefix):
        raise ValueError(f"search index prefix {prefix!r}: use lower-case letters, digits and '-' (no '_'), "
                         "at most 64 characters")
    return prefix


def index_name(prefix: str, rtype: str) -> str:
    return f"{prefix}_{rtype.lower()}"


def index_pattern(prefix: str) -> str:
    return f"{prefix}_*"


def field_key(code: str) -> str:
    """A parameter code as a field name: ``.`` would make an object path (no R4 code has one; custom ones might)."""
    return code.replace(".", "\uff0e")


def _family_properties(family: str) -> dict[str, Any]:
    return {"p": KEYWORD, **FAMILY_FIELDS[family]}


def _composite_properties() -> dict[str, Any]:
    part = {"type": "object", "properties": {f: {"type": "object", "properties": dict(fields)}
                                             for f, fields in FAMILY_FIELDS.items()}}
    return {"p": KEYWORD, **{f"p{n}": part for n in range(MAX_COMPONENTS)}}


def mappings() -> dict[str, Any]:
    properties: dict[str, Any] = {
        "t": KEYWORD, "i": KEYWORD, "key": KEYWORD, "d": {"type": "boolean"}, "v": LONG, "k": LONG, "s": LONG,
        "lu": KEYWORD, "m": {"type": "keyword", "index": False, "doc_values": False},
        "b": {"type": "keyword", "index": False, "doc_values": False},
        "tn": KEYWORD, "tc": KEYWORD,
        "so_k": {"type": "object", "dynamic": True}, "so_n": {"type": "object", "dynamic": True},
        "so_l": {"type": "object", "dynamic": True},
    }
    for family in FAMILY_FIELDS:
        properties[family] = {"type": "nested", "properties": _family_properties(family)}
    properties["reference"]["properties"]["key"] = KEYWORD  # "<target type>/<target id>", for resolved chains
    properties["composite"] = {"type": "nested", "properties": _composite_properties()}
    templates = [
        {"sort_keyword": {"path_match": "so_k.*", "match_mapping_type": "string", "mapping": KEYWORD}},
        {"sort_double": {"path_match": "so_n.*", "match_mapping_type": "double", "mapping": DOUBLE}},
        {"sort_double_long": {"path_match": "so_n.*", "match_mapping_type": "long", "mapping": DOUBLE}},
        {"sort_long": {"path_match": "so_l.*", "match_mapping_type": "long", "mapping": LONG}},
    ]
    return {"dynamic": "strict", "dynamic_templates": templates, "properties": properties}


def index_settings(max_join: int) -> dict[str, Any]:
    return {
        "number_of_shards": 1,
        "number_of_replicas": 0,  # a single node would stay yellow otherwise; raise it on a real cluster
        # chains fetch up to max_join + 1 target ids in one request
        "max_result_window": max(10_000, max_join + 1),
        # a refresh is asked for when a search waits on a write (read-your-writes); the periodic one is a fallback
        "refresh_interval": "1s",
        "mapping": {"nested_objects": {"limit": 50_000}},
    }


def template(prefix: str, max_join: int) -> dict[str, Any]:
    return {"index_patterns": [index_pattern(prefix)], "priority": 200,
            "template": {"settings": index_settings(max_join), "mappings": mappings()}}
