"""``application/x-www-form-urlencoded`` bodies, which every OAuth endpoint and every page of ours posts.

Parsed here rather than by Starlette, whose form parser needs the python-multipart package.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request


class Form:
    """An ``application/x-www-form-urlencoded`` body (all OAuth endpoints and our pages post this)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs

    def get(self, key: str, default: str | None = None) -> str | None:
        for k, v in self.pairs:
            if k == key:
                return v
        return default

    def getlist(self, key: str) -> list[str]:
        return [v for k, v in self.pairs if k == key]

    def items(self) -> list[tuple[str, str]]:
        return list(dict(self.pairs).items())


async def read_form(request: Request) -> Form:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if ctype != "application/x-www-form-urlencoded" or not body:
        return Form([])
    try:
        return Form(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        return Form([])
