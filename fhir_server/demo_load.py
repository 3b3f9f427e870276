"""``--demo``: load the synthetic demo data set on first start (when the store holds no Patient yet)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fhir_server.interactions.common import Services
from fhir_server.loader import load_resource
from fhir_server.search.tree import MatchAll

if TYPE_CHECKING:
    from fhir_server.app import AegisApp

log = logging.getLogger(__name__)


async def load_demo_if_empty(app: AegisApp) -> None:
    from fhir_server.demo import demo_bundles

    if (await app.store.find("Patient", MatchAll(), limit=1)).versions:
        return
    svc = Services(app.store, app.settings)
    count = 0
    for bundle in demo_bundles():
        count += await load_resource(svc, bundle)
    log.info("demo data loaded: %d resources", count)
