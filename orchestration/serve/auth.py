"""The bearer token of ``orchestrate serve``: made or given once per server, checked in constant time on every
``/api`` path but the open ones (an ASGI middleware, so that no route, present or future, answers without it and a
request is refused before its body is read)."""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Collection

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["OPEN_PATHS", "TOKEN_ENV", "TokenAuth", "new_token"]

TOKEN_ENV = "ORCHESTRATE_TOKEN"
"""The environment variable ``orchestrate serve`` reads its token from when ``--token`` is not given."""

OPEN_PATHS = frozenset({"/api/health"})
"""The ``/api`` paths that answer without the token."""


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


class TokenAuth:
    """Answers 401 to a request for an ``/api`` path (but :data:`OPEN_PATHS`) without ``Authorization: Bearer
    <token>``; the page and its static files load without it (they carry no data)."""

    def __init__(self, app: ASGIApp, *, token: str, open_paths: Collection[str] = OPEN_PATHS) -> None:
        if not token:
            raise ValueError("the server's token must not be empty")
        self.app = app
        self._token = token.encode()
        self._open = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _guarded(scope["path"], self._open) or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"detail": "missing or wrong token: send Authorization: Bearer <token>"}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b"Bearer"),
        ]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _authorized(self, scope: Scope) -> bool:
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    given = credentials.strip()
                break
        return hmac.compare_digest(given, self._token)


def _guarded(path: str, open_paths: frozenset[str]) -> bool:
    return (path == "/api" or path.startswith("/api/")) and path not in open_paths
