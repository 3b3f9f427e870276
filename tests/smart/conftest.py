"""A real ``aegis serve`` with authorization on (the default), registered apps and users, and seeded patients.

Seed (ids fixed by PUT): patients ``pa``, ``pb``, ``pc``; shared ``Practitioner/dr1`` and ``Organization/org1``;
observations ``oa-lab``, ``oa-vital`` (pa), ``ob-lab`` (pb), ``oc-vital`` (pc); ``Encounter/ea`` (pa);
``Condition/ca`` (pa), ``cb`` (pb); ``Group/g1`` (members pa and pb); ``Bundle/bun1`` (a type outside the
Patient compartment that is not shared reference data).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from smart_auth.cli import add_user, register_client
from smart_auth.db import AuthDB
from tests.smart.oauth import LAUNCH_URL, REDIRECT, Endpoints, backend_token, new_key, public_jwks
from tests.smart.stores import auth_db
from tests.support.server import ServerProcess, store_args

LAB = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
PASSWORD = "correct horse battery staple"


def _obs(oid: str, pid: str, category: str, code: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": category}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/{pid}"}, "performer": [{"reference": "Practitioner/dr1"}],
            "effectiveDateTime": "2026-01-02"}


def seed_resources() -> list[dict[str, Any]]:
    patients = [{"resourceType": "Patient", "id": pid, "name": [{"family": fam, "given": ["Test"]}],
                 "generalPractitioner": [{"reference": "Practitioner/dr1"}],
                 "managingOrganization": {"reference": "Organization/org1"}}
                for pid, fam in (("pa", "Alpha"), ("pb", "Beta"), ("pc", "Gamma"))]
    return [
        {"resourceType": "Organization", "id": "org1", "name": "Clinic"},
        {"resourceType": "Practitioner", "id": "dr1", "name": [{"family": "Who"}]},
        *patients,
        _obs("oa-lab", "pa", "laboratory", "2345-7"),
        _obs("oa-vital", "pa", "vital-signs", "8867-4"),
        _obs("ob-lab", "pb", "laboratory", "2345-7"),
        _obs("oc-vital", "pc", "vital-signs", "8867-4"),
        {"resourceType": "Encounter", "id": "ea", "status": "finished",
         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
         "subject": {"reference": "Patient/pa"}},
        {"resourceType": "Condition", "id": "ca", "subject": {"reference": "Patient/pa"},
         "code": {"text": "a"}, "encounter": {"reference": "Encounter/ea"}},
        {"resourceType": "Condition", "id": "cb", "subject": {"reference": "Patient/pb"}, "code": {"text": "b"}},
        {"resourceType": "Group", "id": "g1", "type": "person", "actual": True,
         "member": [{"entity": {"reference": "Patient/pa"}}, {"entity": {"reference": "Patient/pb"}}]},
        {"resourceType": "Bundle", "id": "bun1", "type": "collection"},
    ]


@dataclass
class Smart:
    server: ServerProcess
    ep: Endpoints
    db: AuthDB
    public_id: str
    confidential_id: str
    confidential_secret: str
    backend_id: str
    backend_keys: dict[str, Any]
    system_token: str

    @property
    def base(self) -> str:
        return self.server.base

    def fhir(self, token: str | None) -> httpx.Client:
        headers = {"Accept": "application/fhir+json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.base, headers=headers, timeout=30)


@pytest.fixture(scope="session")
def smart(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Smart]:
    data_dir: Path = tmp_path_factory.mktemp(f"smart-{backend}")
    args = store_args(backend)
    server = ServerProcess(data_dir, args=args, auth=True)
    db = auth_db(data_dir, args)
    try:
        server.start()
        public, _ = register_client(
            db, "Public test app", kind="public", redirect_uris=[REDIRECT], launch_url=LAUNCH_URL,
            scope="openid fhirUser launch launch/patient offline_access online_access patient/*.cruds user/*.cruds")
        confidential, secret = register_client(
            db, "Confidential test app", kind="symmetric", redirect_uris=[REDIRECT], launch_url=LAUNCH_URL,
            scope="openid fhirUser launch launch/patient offline_access patient/*.rs user/*.rs")
        rs, es = new_key("RS384"), new_key("ES384")
        backend_client, _ = register_client(db, "Backend service", kind="asymmetric", redirect_uris=[],
                                            scope="system/*.cruds", jwks=public_jwks(rs, es))
        add_user(db, "alice", PASSWORD, "Patient/pa", "Alice Alpha")
        add_user(db, "drwho", PASSWORD, "Practitioner/dr1", "Dr Who")
        ep = Endpoints(server.base)
        got = backend_token(ep, rs, "RS384", backend_client.client_id, "system/*.cruds")
        assert got.status_code == 200, got.text
        system_token = got.json()["access_token"]
        bundle = {"resourceType": "Bundle", "type": "transaction",
                  "entry": [{"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                            for r in seed_resources()]}
        seeded = httpx.post(server.base, json=bundle, timeout=60,
                            headers={"Authorization": f"Bearer {system_token}",
                                     "Content-Type": "application/fhir+json"})
        assert seeded.status_code == 200, seeded.text
        yield Smart(server, ep, db, public.client_id, confidential.client_id, secret or "", backend_client.client_id,
                    {"RS384": rs, "ES384": es}, system_token)
    finally:
        server.stop()
        db.close()
