"""Loading FHIR data into the store: JSON resources, NDJSON files, and Bundles.

Everything goes through the same interactions as HTTP requests (so it is validated, versioned and recorded in the
outbox like any write): transaction and batch Bundles are posted to the base; other Bundles are unpacked; a resource
with an id is PUT (so reloading a file is idempotent), one without is POSTed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fhir_server.http.request import FhirRequest
from fhir_server.interactions.common import Services
from fhir_server.routing import dispatch
from resources import jsonio
from resources.outcome import FhirError

LOAD_BASE = "urn:aegis:load"


@dataclass(slots=True)
class LoadReport:
    resources: int = 0
    bundles: int = 0
    errors: list[str] = field(default_factory=list)


def files_under(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.suffix in (".json", ".ndjson") and f.is_file()))
        else:
            out.append(p)
    return out


def items_in(path: Path) -> Iterator[tuple[str, bytes]]:
    """``(where, json bytes)`` for each resource or Bundle in a file."""
    data = path.read_bytes()
    if path.suffix == ".ndjson":
        for n, line in enumerate(data.splitlines(), 1):
            if line.strip():
                yield f"{path}:{n}", line
    else:
        yield str(path), data


def _request(method: str, segments: list[str], resource: dict[str, Any]) -> FhirRequest:
    return FhirRequest(method=method, segments=segments, query=[], headers={"prefer": "return=minimal"},
                       body=b"", base=LOAD_BASE, resource=resource)


async def load_resource(svc: Services, resource: dict[str, Any]) -> int:
    """Store one parsed resource or Bundle; returns how many resources it wrote."""
    from resources.validate import validate_resource

    validate_resource(resource)
    rtype = resource["resourceType"]
    if rtype == "Bundle" and resource.get("type") in ("transaction", "batch"):
        await dispatch(svc, _request("POST", [], resource))
        return len(resource.get("entry") or [])
    if rtype == "Bundle" and resource.get("type") in ("collection", "searchset", "history", "document"):
        count = 0
        for entry in resource.get("entry") or []:
            if isinstance(entry.get("resource"), dict):
                count += await load_resource(svc, entry["resource"])
        return count
    if resource.get("id"):
        await dispatch(svc, _request("PUT", [rtype, resource["id"]], resource))
    else:
        await dispatch(svc, _request("POST", [rtype], resource))
    return 1


async def load_files(svc: Services, files: list[Path], advance: Callable[[int], None] | None = None) -> LoadReport:
    report = LoadReport()
    for path in files:
        for where, raw in items_in(path):
            try:
                resource = jsonio.loads(raw)
                report.resources += await load_resource(svc, resource)
                report.bundles += resource.get("resourceType") == "Bundle"
            except FhirError as exc:
                report.errors.append(f"{where}: {exc}")
            except (ValueError, UnicodeDecodeError) as exc:
                report.errors.append(f"{where}: not JSON: {exc}")
        if advance:
            advance(1)
    return report
