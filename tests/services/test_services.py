"""The real servers the production backends run on are up for this run (scripts/test starts them).

When ``scripts/test`` lists a service in ``AEGIS_TEST_SERVICES``, it must answer; a listed service that is missing
fails the run rather than skipping what depends on it.
"""

from __future__ import annotations

import os
import uuid

import pytest


def _listed(name: str) -> bool:
    return name in os.environ.get("AEGIS_TEST_SERVICES", "").split(",")


@pytest.mark.skipif(not _listed("ferretdb"), reason="no MongoDB-compatible server started (run scripts/test)")
def test_mongodb_round_trip() -> None:
    from pymongo import MongoClient

    url = os.environ["AEGIS_TEST_MONGODB_URL"]
    with MongoClient(url, serverSelectionTimeoutMS=10_000) as client:
        coll = client["aegis_service_check"]["probe"]
        marker = uuid.uuid4().hex
        coll.insert_one({"_id": marker, "value": 72.5})
        assert coll.find_one({"_id": marker}) == {"_id": marker, "value": 72.5}
        coll.delete_one({"_id": marker})
        assert client.server_info()["version"].startswith("7.")


@pytest.mark.skipif(not _listed("elasticsearch"), reason="no Elasticsearch started (run scripts/test)")
def test_elasticsearch_round_trip() -> None:
    from elasticsearch import Elasticsearch

    url = os.environ["AEGIS_TEST_ELASTICSEARCH_URL"]
    index = f"aegis-probe-{uuid.uuid4().hex}"
    with Elasticsearch(url, request_timeout=30) as es:
        assert es.cluster.health(wait_for_status="yellow", timeout="30s")["status"] in ("green", "yellow")
        es.indices.create(index=index, settings={"number_of_replicas": 0},
                          mappings={"properties": {"code": {"type": "keyword"}}})
        es.index(index=index, id="1", document={"code": "8867-4"}, refresh="wait_for")
        hits = es.search(index=index, query={"term": {"code": "8867-4"}})["hits"]["hits"]
        assert [h["_id"] for h in hits] == ["1"]
        es.indices.delete(index=index)
