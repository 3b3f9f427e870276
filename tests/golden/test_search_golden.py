"""Golden tests of search: query string → canonical query → bound tree (→ SQL, once the renderer joins).

Each ``tests/golden/search/*.txt`` file holds blocks separated by blank lines::

    # optional comment lines
    query: Observation?patient=123&category=vital-signs
    mode: strict                      (optional input: Prefer: handling=strict)
    format: patient=123&category=vital-signs
    tree: (And …)

``query`` and ``mode`` are inputs; every other key is computed by :func:`compute` and compared. A value may
continue on following lines indented by two spaces (long trees are pretty-printed that way). A query without a
type (``?_lastUpdated=gt2020``) is a system-level search.

Run with ``AEGIS_UPDATE_GOLDEN=1`` to rewrite the files from what the code computes now; review the diff, then
commit it. Keys the computation does not produce are kept as they are.
"""

from __future__ import annotations

import textwrap
import zlib

import os
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from fhir_server.search.bind import bind
from fhir_server.search.rewrite import prepare_sync
from fhir_server.storage.sqlite.render import SqlRenderer
from fhir_server.storage.sqlite.store import where_clause
from fhir_server.search.request import parse_request
from resources.outcome import InvalidInput

GOLDEN_DIR = Path(__file__).parent / "search"
BASE_URL = "http://aegis.test/fhir"
INPUT_KEYS = ("query", "mode")
# what compute() may produce; a rewrite replaces these and keeps any other key (add "sql" here with its column)
COMPUTED_KEYS = ("format", "unknown", "sort", "tree", "sql", "args", "error")
WIDTH = 110
UPDATE = os.environ.get("AEGIS_UPDATE_GOLDEN") == "1"


# ---- pretty-printing S-expressions --------------------------------------------------------------------------------


def _tokens(text: str) -> list[str]:
    """``(``, ``)`` and atoms; a quoted atom (Python repr of a string) may hold spaces and parentheses."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "()":
            out.append(ch)
            i += 1
        elif ch in "'\"":
            j = i + 1
            while j < n and text[j] != ch:
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in "()":
                j += 1
            out.append(text[i:j])
            i = j
    return out


Sexp = str | list["Sexp"]


def _read(tokens: list[str], at: int) -> tuple[Sexp, int]:
    if tokens[at] != "(":
        return tokens[at], at + 1
    items: list[Sexp] = []
    at += 1
    while tokens[at] != ")":
        item, at = _read(tokens, at)
        items.append(item)
    return items, at + 1


def _flat(node: Sexp) -> str:
    return node if isinstance(node, str) else "(" + " ".join(_flat(n) for n in node) + ")"


def _pretty(node: Sexp, indent: int) -> list[str]:
    flat = _flat(node)
    if isinstance(node, str) or indent + len(flat) <= WIDTH:
        return [" " * indent + flat]
    # leading atoms stay on the head line; every later item goes on its own line, one level deeper
    split = next(i for i, n in enumerate(node) if not isinstance(n, str)) if flat.count("(") > 1 else len(node)
    lines = [" " * indent + "(" + " ".join(_flat(n) for n in node[:split])]
    for child in node[split:]:
        lines.extend(_pretty(child, indent + 2))
    lines[-1] += ")"
    return lines


def pretty(sexpr: str) -> list[str]:
    node, _ = _read(_tokens(sexpr), 0)
    return _pretty(node, 0)


# ---- the golden files -------------------------------------------------------------------------------------------


def compute(query: str, mode: str | None) -> dict[str, list[str]]:
    """What the engine makes of ``query``: each key's lines."""
    path, _, qs = query.partition("?")
    rtype = path or None
    pairs = parse_qsl(qs, keep_blank_values=True)
    try:
        request = parse_request(pairs)
        result = bind(rtype, request, strict=mode == "strict", base_url=BASE_URL)
    except InvalidInput as err:
        issue = err.issues[0]
        return {"error": [f"{err.status} {issue.message_id} [{','.join(issue.expression)}] {issue.diagnostics}"]}
    # "(empty)" cannot be a formatted query: parentheses are percent-encoded there
    out: dict[str, list[str]] = {"format": [result.request.format() or "(empty)"]}
    if result.unknown:
        out["unknown"] = [", ".join(result.unknown)]
    if result.sort:
        out["sort"] = [", ".join(("-" if desc else "") + str(p) + f" ({p.type})" for p, desc in result.sort)]
    out["tree"] = pretty(str(result.tree))
    out.update(_sql(rtype, result.tree))
    return out


def _golden_pids(rtype: str, code: str) -> tuple[int, ...]:
    """Stable stand-in parameter ids, so the SQL text does not depend on a database."""
    return (zlib.crc32(f"{rtype}.{code}".encode()) % 10_000,)


def _sql(rtype: str | None, tree: Any) -> dict[str, list[str]]:
    """The SQLite WHERE clause and its bound arguments; trees that need the store (terminology, _list,
    compartments) are expanded at run time, so they have no static SQL."""
    try:
        lowered = prepare_sync(tree)
        args: list[Any] = []
        sql = where_clause(rtype, lowered, args, SqlRenderer(_golden_pids))
    except TypeError:
        return {"sql": ["(expanded against the store at run time)"]}
    return {"sql": textwrap.wrap(sql, WIDTH, break_long_words=False, break_on_hyphens=False),
            "args": [repr(args)]}


Block = list[tuple[str, list[str]]]  # (key, lines) in file order; key "#" holds comment lines


def parse_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    current: Block = []
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = []
        elif line.startswith("#"):
            current.append(("#", [line]))
        elif line.startswith("  ") and current and current[-1][0] != "#":
            current[-1][1].append(line[2:])
        else:
            key, sep, value = line.partition(":")
            if not sep:
                raise ValueError(f"not a 'key: value' line: {line!r}")
            value = value.strip()
            current.append((key.strip(), [value] if value else []))
    if current:
        blocks.append(current)
    return blocks


def render_blocks(blocks: list[Block]) -> str:
    out: list[str] = []
    for block in blocks:
        for key, lines in block:
            if key == "#":
                out.extend(lines)
            elif len(lines) == 1:
                out.append(f"{key}: {lines[0]}")
            else:
                out.append(f"{key}:")
                out.extend("  " + line for line in lines)
        out.append("")
    return "\n".join(out)


def _inputs(block: Block) -> dict[str, str]:
    return {key: lines[0] for key, lines in block if key in INPUT_KEYS and lines}


def recomputed(block: Block) -> Block:
    """The block with its computed keys replaced: inputs, comments and foreign keys keep their place."""
    inputs = _inputs(block)
    if "query" not in inputs:
        return block  # a comment-only block (a file's heading)
    fresh = compute(inputs["query"], inputs.get("mode"))
    out: Block = [(k, v) for k, v in block if k == "#" or k in INPUT_KEYS]
    out.extend(fresh.items())
    known = {k for k, _ in out}
    out.extend((k, v) for k, v in block if k not in known and k not in COMPUTED_KEYS)
    return out


FILES = sorted(GOLDEN_DIR.glob("*.txt"))


def test_golden_files_exist() -> None:
    assert len(FILES) >= 5
    assert sum(len(parse_blocks(f.read_text())) for f in FILES) >= 40


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_golden(path: Path) -> None:
    blocks = parse_blocks(path.read_text())
    fresh = [recomputed(b) for b in blocks]
    if UPDATE:
        path.write_text(render_blocks(fresh))
        return
    mismatches = []
    for old, new in zip(blocks, fresh):
        if old != new:
            mismatches.append(f"--- expected\n{render_blocks([old])}+++ computed\n{render_blocks([new])}")
    assert not mismatches, (
        f"{len(mismatches)} golden block(s) of {path.name} differ (AEGIS_UPDATE_GOLDEN=1 rewrites them):\n\n"
        + "\n".join(mismatches[:5]))


def test_pretty_keeps_quoted_parentheses() -> None:
    branch = "(And (StringQ Patient.name 'a) (b' start) (TokenQ Observation.code None 'x y' False))"
    text = f"(Or {branch} {branch} (IdIn ('1' '2')))"
    lines = pretty(text)
    assert len(lines) > 1
    assert " ".join(line.strip() for line in lines).replace("( ", "(").replace(" )", ")") == text


def test_blocks_round_trip() -> None:
    text = "# c\nquery: Patient?name=x\ntree:\n  (And\n    (X))\n\nquery: ?_id=1\nerror: e\n"
    assert render_blocks(parse_blocks(text)) == text
