"""ASGI middleware in front of the API: API keys and request size limits.

When ``SENDTIME_API_KEY`` is set, every POST route (predictions, plans, reloads) needs it, as
``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; health, readiness, metrics and the docs
stay open. Bodies over the limit get a 413 before they are parsed.

When ``SENDTIME_EVENTS_VERIFICATION_KEY`` is set (SendGrid's Signed Event Webhook public key,
base64), ``POST /events`` needs SendGrid's signature instead of the API key: an ECDSA (P-256,
SHA-256) signature in ``X-Twilio-Email-Event-Webhook-Signature`` over the
``X-Twilio-Email-Event-Webhook-Timestamp`` header followed by the raw body, checked on the
bytes as they arrived; anything else gets a 403.
"""

from __future__ import annotations

import base64
import hmac
import json
import os

OPEN_METHODS = {"GET", "HEAD", "OPTIONS"}
DEFAULT_MAX_BODY = 4 * 1024 * 1024
SIGNATURE_HEADER = b"x-twilio-email-event-webhook-signature"
TIMESTAMP_HEADER = b"x-twilio-email-event-webhook-timestamp"
SIGNED_ROUTE = "/events"


def load_verification_key(text: str):
    """SendGrid's verification key (base64 DER, as its settings page shows it, or PEM) as a
    public key; a ValueError naming the setting when it is not one."""
    from cryptography.hazmat.primitives import serialization

    raw = text.strip()
    try:
        if raw.startswith("-----BEGIN"):
            return serialization.load_pem_public_key(raw.encode())
        return serialization.load_der_public_key(base64.b64decode(raw, validate=True))
    except Exception as exc:
        raise ValueError(f"SENDTIME_EVENTS_VERIFICATION_KEY is not a public key in base64 DER or PEM ({type(exc).__name__})") from None


def signature_ok(key, timestamp: bytes, body: bytes, signature: bytes) -> bool:
    """SendGrid's check: ECDSA with SHA-256 over the timestamp header then the raw body."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key.verify(base64.b64decode(signature, validate=True), timestamp + body, ec.ECDSA(hashes.SHA256()))
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


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
        self._webhook_key = None
        self._loaded = api_key is not None or max_body is not None

    def _load(self) -> None:
        if not self._loaded:
            self._api_key = os.environ.get("SENDTIME_API_KEY") or None
            self._max_body = int(os.environ.get("SENDTIME_MAX_BODY_BYTES", DEFAULT_MAX_BODY))
            key = (os.environ.get("SENDTIME_EVENTS_VERIFICATION_KEY") or "").strip()
            self._webhook_key = load_verification_key(key) if key else None
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
        signed = self._webhook_key is not None and scope.get("path") == SIGNED_ROUTE
        if signed:
            return await self._signed(scope, receive, send, headers)
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

    async def _signed(self, scope, receive, send, headers: dict[bytes, bytes]) -> None:
        """The whole body first (within the limit), its signature checked, then the app reads it."""
        limit = self._max_body or DEFAULT_MAX_BODY
        sig, stamp = headers.get(SIGNATURE_HEADER), headers.get(TIMESTAMP_HEADER)
        if not sig or not stamp:
            return await _reply(send, 403, "missing SendGrid webhook signature headers "
                                "(X-Twilio-Email-Event-Webhook-Signature and -Timestamp)")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                return await _reply(send, 413, f"request body exceeds the limit of {limit} bytes")
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if not signature_ok(self._webhook_key, stamp, body, sig):
            return await _reply(send, 403, "invalid SendGrid webhook signature (check SENDTIME_EVENTS_VERIFICATION_KEY)")
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
