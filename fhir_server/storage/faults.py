"""Crash points: named places on the write path where a fault-injection test can kill the server process.

``AEGIS_CRASH_AT=<point>[@<n>]`` (read once, at import) makes the process kill itself with SIGKILL — no clean-up, no
flush, exactly like ``kill -9`` or a power cut of the process — the ``n``-th time (default: the first) it passes
``point``. Tests (``tests/durability/test_crash_points.py``) start a server with it, send transactions, restart the
server without it and check that recovery left every transaction whole or absent. Unset, :func:`crash_point` costs
one comparison. The points:

* ``group-commit.before-commit`` / ``group-commit.after-commit``: every store (:mod:`.group_commit`);
* ``mongo.versions-written``, ``mongo.ticket-taken``, ``mongo.commit-recorded``, ``mongo.current-chunk``,
  ``mongo.published-chunk``: the steps of the MongoDB commit protocol (:mod:`.mongo.commit`).
"""

from __future__ import annotations

import os
import signal

ENV = "AEGIS_CRASH_AT"


def _parse(spec: str) -> tuple[str, int] | None:
    if not spec:
        return None
    point, _, nth = spec.partition("@")
    return point, int(nth) if nth else 1


_target = _parse(os.environ.get(ENV, ""))
_passed = 0


def crash_point(name: str) -> None:
    """Kill this process here when ``AEGIS_CRASH_AT`` names this point and this is the chosen pass."""
    global _passed
    if _target is None or _target[0] != name:
        return
    _passed += 1
    if _passed == _target[1]:
        os.kill(os.getpid(), signal.SIGKILL)
