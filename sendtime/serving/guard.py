"""ASGI middleware in front of the API: API keys and request size limits.

When ``SENDTIME_API_KEY`` is set, every POST route (predictions, plans, reloads) needs it, as
``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; health, readiness, metrics and the docs
stay open. Bodies over the limit get a 413 before they are parsed.
"""

from __future__ import annotations

import hmac
import json
import os

OPEN_METHODS = {"GET", "HEAD", "OPTIONS"}
DEFAULT_MAX_BODY = 4 * 1024 * 1024


async def _reply(send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())] + (headers or [])})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class Guard:
    def __init__(self, app, api_key: str | None = None, max_body: int | None = None) -> None:
        self.app = app
        # read once, lazily from the environment unless given (keeps imports free of side effects)
        self._api_key = api_key
        self._max_body = max_body
        self._loaded = api_key is not None or max_body is not None

    def _load(self) -> None:
        if not self._loaded:
            self._api_key = os.environ.get("SENDTIME_API_KEY") or None
            self._max_body = int(os.environ.get("SENDTIME_MAX_BODY_BYTES", DEFAULT_MAX_BODY))
            self._loaded = True

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        given = headers.get(b"x-api-key", b"").decode("latin-1")
        auth = headers.get(b"authorization", b"").decode("latin-1")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return bool(given) and hmac.compare_digest(given.encode(), self._api_key.encode())

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in OPEN_METHODS:
            return await self.app(scope, receive, send)
        self._load()
        headers = dict(scope.get("headers") or [])
        if self._api_key and not self._authorized(headers):
            return await _reply(send, 401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                [(b"www-authenticate", b"Bearer")])
        limit = self._max_body or DEFAULT_MAX_BODY
        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            return await _reply(send, 400, "invalid Content-Length header")
        if declared > limit:
            return await _reply(send, 413, f"request body of {declared} bytes exceeds the limit of {limit} bytes")
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge()
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _reply(send, 413, f"request body exceeds the limit of {limit} bytes")
