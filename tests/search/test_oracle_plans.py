"""The SQLite store's other plans agree with the oracle too.

With the default limits the oracle test's small data sets never look *broad* to the planner (``plan.py``), so
every query there is driven by its most selective condition. Here the limits are tiny: conditions count as broad
after two rows, so searches walk the type in key windows of 1 and 3 rows and then fall back to the driving plan —
the windowed path, the hand-over between the two, and keyset paging across both, checked against the oracle.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from fhir_server.storage.sqlite.plan import PlanLimits
from fhir_server.storage.sqlite.store import SqliteStore
from tests.search.test_oracle import ORACLE, check_store, datasets, loop, observation_queries, patient_queries

__all__ = ["loop"]  # the event-loop fixture, shared with test_oracle

TINY = PlanLimits(cap=2, selective=1, windows=(1, 3))


@ORACLE
@given(data=datasets(), patient_qs=st.lists(patient_queries(), min_size=1, max_size=3),
       observation_qs=st.lists(observation_queries(), min_size=1, max_size=3))
def test_windowed_and_counted_plans_agree_with_oracle(loop: asyncio.AbstractEventLoop, data: list[dict[str, Any]],
                                                      patient_qs: list[list[tuple[str, str]]],
                                                      observation_qs: list[list[tuple[str, str]]]) -> None:
    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            await check_store(SqliteStore(str(Path(tmp) / "plans.db"), plan_limits=TINY), data, patient_qs,
                              observation_qs)

    loop.run_until_complete(run())
