"""An in-memory stand-in that answers ``bench/search_load.py``'s query shapes, to test the benchmark tools.

It owns nothing of the real server and is no search engine: it loads one ``bench/datagen.py`` directory at start
(assigning ids and resolving ``urn:uuid:`` references the way a transaction would), then answers exactly the search
parameters the shapes use, by scanning, with the plainest semantics that fit the generated data (dates compared as
UTC instants, string search as accent- and case-folded starts-with, quantities converted between mg/dL, g/dL and
g/L). Anything else answers 400, like a strict server.

Its value is independence: it computes every count from the resources themselves, while ``datagen.py`` writes the
expected counts into the manifest from its own bookkeeping, so a run of ``search_load.py`` against it checks both the
benchmark's plumbing (id look-up, instances, probing, paging, include and sort checks) and the manifest's numbers.
Its latency figures mean nothing.

Run: ``python bench/_search_standin.py --data DIR --port 8090`` (uvicorn, loopback only).
"""

from __future__ import annotations

import argparse
import sys
import unicodedata
from collections import defaultdict
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datagen import iter_bundles  # noqa: E402  (bench/ is not a package)

Resource = dict[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

# Mass concentration units the generated glucose uses, in mg/dL.
MG_PER_DL = {"mg/dL": Decimal(1), "g/L": Decimal(100), "g/dL": Decimal(1000)}
PATIENT_REF = {"Observation": "subject", "Encounter": "subject", "Condition": "subject",
               "MedicationRequest": "subject"}


class SearchError(Exception):
    pass


def fold(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).casefold()


def instant(text: str) -> datetime:
    if len(text) == 10:
        text += "T00:00:00+00:00"
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class Store:
    def __init__(self, directory: Path) -> None:
        self.by_type: dict[str, list[Resource]] = defaultdict(list)
        self.by_id: dict[tuple[str, str], Resource] = {}
        self.by_patient: dict[tuple[str, str], list[Resource]] = defaultdict(list)
        counter = 0
        for _, line in iter_bundles(directory):
            bundle = orjson.loads(line)
            ids: dict[str, str] = {}
            for entry in bundle["entry"]:
                resource = entry["resource"]
                if entry["request"]["method"] == "PUT":
                    continue
                counter += 1
                resource["id"] = f"{counter:08x}-0000-4000-8000-000000000000"
                ids[entry["fullUrl"]] = f"{resource['resourceType']}/{resource['id']}"
            # Reference rewriting over the serialised form: every urn is a whole JSON string value.
            text = orjson.dumps(bundle).decode()
            for urn, ref in ids.items():
                text = text.replace(f'"{urn}"', f'"{ref}"')
            for entry in orjson.loads(text)["entry"]:
                resource = entry["resource"]
                kind = resource["resourceType"]
                self.by_type[kind].append(resource)
                self.by_id[(kind, resource["id"])] = resource
                patient = self.patient_of(resource)
                if patient:
                    self.by_patient[(kind, patient)].append(resource)

    @staticmethod
    def patient_of(resource: Resource) -> str | None:
        kind = resource["resourceType"]
        if kind in PATIENT_REF:
            return str(resource[PATIENT_REF[kind]]["reference"]).split("/", 1)[1]
        if kind == "Appointment":
            for participant in resource["participant"]:
                ref = str(participant["actor"]["reference"])
                if ref.startswith("Patient/"):
                    return ref.split("/", 1)[1]
        return None


def codings(value: Any) -> list[Resource]:
    if isinstance(value, list):
        return [c for item in value for c in codings(item)]
    if isinstance(value, dict):
        return value["coding"] if "coding" in value else [value]
    return []


def token_match(value: Any, query: str) -> bool:
    if isinstance(value, str):
        return value == query
    for alternative in query.split(","):
        system, bar, code = alternative.rpartition("|")
        for c in codings(value):
            if c.get("code") == code and (not bar or c.get("system") == system):
                return True
    return False


def date_match(low: datetime, high: datetime, query: str) -> bool:
    prefix, text = query[:2], query[2:]
    point = instant(text)
    if prefix == "ge":
        return high >= point
    if prefix == "lt":
        return low < point
    raise SearchError(f"date prefix {prefix!r} not supported by the stand-in")


def quantity_gt(quantity: Resource | None, query: str) -> bool:
    if quantity is None:
        return False
    number, _, unit = query.split("|") if "|" in query else (query, "", "")
    if not number.startswith("gt"):
        raise SearchError("only gt quantities in the stand-in")
    wanted = Decimal(number[2:])
    have = Decimal(str(quantity["value"]))
    if unit and quantity.get("code") != unit:
        if unit not in MG_PER_DL or quantity.get("code") not in MG_PER_DL:
            return False
        return have * MG_PER_DL[quantity["code"]] > wanted * MG_PER_DL[unit]
    return have > wanted


def name_match(resource: Resource, query: str, family_only: bool) -> bool:
    wanted = fold(query)
    for name in resource.get("name", ()):
        parts = [name.get("family", "")] + ([] if family_only else name.get("given", []))
        if any(fold(part).startswith(wanted) for part in parts):
            return True
    return False


class App:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path: str = scope["path"]
        query = parse_qsl(scope["query_string"].decode(), keep_blank_values=True)
        body: Resource
        try:
            if path == "/fhir/metadata":
                status, body = 200, {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1",
                                     "software": {"name": "search stand-in", "version": "0"}}
            else:
                segments = path.removeprefix("/fhir/").split("/")
                if len(segments) == 3 and segments[0] == "Patient":
                    query.append(("patient", segments[1]))
                    segments = [segments[2]]
                if len(segments) != 1:
                    raise SearchError(f"no interaction at {path}")
                status, body = 200, self.search(segments[0], query)
        except SearchError as exc:
            status, body = 400, {"resourceType": "OperationOutcome",
                                 "issue": [{"severity": "error", "code": "invalid", "diagnostics": str(exc)}]}
        payload = orjson.dumps(body)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/fhir+json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    def search(self, kind: str, query: list[tuple[str, str]]) -> Resource:
        store = self.store
        count, offset, summary_count = 50, 0, False
        sort = includes = revincludes = None
        candidates: list[Resource] | None = None
        tests: list[Callable[[Resource], bool]] = []
        for name, value in query:
            if name == "_count":
                count = int(value)
            elif name == "_offset":
                offset = int(value)
            elif name == "_summary" and value == "count":
                summary_count = True
            elif name == "_sort":
                sort = value
            elif name == "_include":
                includes = value
            elif name == "_revinclude":
                revincludes = value
            elif name == "patient" and kind != "Patient":
                candidates = store.by_patient.get((kind, value), [])
            elif name == "_id":
                found = store.by_id.get((kind, value))
                candidates = [found] if found else []
            else:
                tests.append(self.test(kind, name, value))
        pool = store.by_type.get(kind, []) if candidates is None else candidates
        matches = [r for r in pool if all(t(r) for t in tests)]
        if sort == "-date":
            matches.sort(key=lambda r: instant(r["effectiveDateTime"]), reverse=True)
        elif sort is not None:
            raise SearchError(f"_sort={sort} not supported by the stand-in")
        bundle: Resource = {"resourceType": "Bundle", "type": "searchset", "total": len(matches)}
        if summary_count:
            return bundle
        page = matches[offset: offset + count]
        entries = [{"resource": r, "search": {"mode": "match"}} for r in page]
        if includes == "Observation:patient":
            refs = {r["subject"]["reference"] for r in page}
            entries += [{"resource": store.by_id[("Patient", ref.split("/")[1])], "search": {"mode": "include"}}
                        for ref in sorted(refs)]
        if revincludes == "Observation:patient":
            for r in page:
                entries += [{"resource": o, "search": {"mode": "include"}}
                            for o in store.by_patient.get(("Observation", r["id"]), [])]
        bundle["entry"] = entries
        if offset + count < len(matches):
            rest = [(n, v) for n, v in query if n not in ("_offset",)] + [("_offset", str(offset + count))]
            link = "&".join(f"{n}={quote(v, safe='')}" for n, v in rest)
            bundle["link"] = [{"relation": "next", "url": f"http://127.0.0.1/fhir/{kind}?{link}"}]
        return bundle

    def test(self, kind: str, name: str, value: str) -> Callable[[Resource], bool]:
        store = self.store
        if kind == "Patient":
            if name == "identifier":
                return lambda r: any(f"{i['system']}|{i['value']}" == value for i in r["identifier"])
            if name in ("name", "family"):
                return lambda r: name_match(r, value, name == "family")
            if name == "gender":
                return lambda r: r["gender"] == value
            if name == "birthdate":
                return lambda r: r["birthDate"] == value
            if name == "_has:Observation:patient:code":
                having = {store.patient_of(o) for o in store.by_type["Observation"] if token_match(o["code"], value)}
                return lambda r: r["id"] in having
        if kind == "Observation":
            if name == "category":
                return lambda r: token_match(r["category"], value)
            if name == "code":
                return lambda r: token_match(r["code"], value)
            if name == "date":
                return lambda r: date_match(instant(r["effectiveDateTime"]), instant(r["effectiveDateTime"]), value)
            if name == "value-quantity":
                return lambda r: quantity_gt(r.get("valueQuantity"), value)
            if name == "value-quantity:missing":
                return lambda r: ("valueQuantity" not in r) == (value == "true")
            if name == "component-code-value-quantity":
                code, _, number = value.partition("$")
                return lambda r: any(token_match(c["code"], code) and quantity_gt(c.get("valueQuantity"), number)
                                     for c in r.get("component", ()))
            if name in ("subject:Patient.identifier", "subject.name"):
                attribute = "identifier" if name.endswith("identifier") else "name"
                wanted = {p["id"] for p in store.by_type["Patient"] if self.test("Patient", attribute, value)(p)}
                return lambda r: r["subject"]["reference"].split("/")[1] in wanted
        if kind == "Encounter":
            if name == "date":
                return lambda r: date_match(instant(r["period"]["start"]), instant(r["period"]["end"]), value)
            if name == "class":
                return lambda r: token_match(r["class"], value)
        if kind == "Condition":
            if name == "clinical-status":
                return lambda r: token_match(r["clinicalStatus"], value)
            if name == "category":
                return lambda r: token_match(r["category"], value)
        if kind == "MedicationRequest" and name in ("status", "intent"):
            return lambda r: r[name] == value
        if kind == "Appointment" and name == "date":
            return lambda r: date_match(instant(r["start"]), instant(r["end"]), value)
        raise SearchError(f"search parameter {name!r} on {kind} is not supported by the stand-in")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    import uvicorn

    store = Store(args.data)
    print(f"loaded {sum(len(v) for v in store.by_type.values()):,} resources", flush=True)
    uvicorn.run(App(store), host="127.0.0.1", port=args.port, log_level="warning", access_log=False,
                loop="uvloop", http="httptools", lifespan="on", server_header=False, date_header=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
