"""Resource ids: the R4 id syntax and server-assigned ids.

Server ids are time-ordered UUIDs (UUIDv7 layout): they stay unique without coordination and, being ordered by
creation time, keep B-tree inserts local instead of scattering them over the whole index.
"""

from __future__ import annotations

import os
import re
import time
import uuid

ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def is_valid_id(value: str) -> bool:
    return ID_PATTERN.fullmatch(value) is not None


def new_id() -> str:
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & ((1 << 48) - 1)) << 80 | rand
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return str(uuid.UUID(int=value))
