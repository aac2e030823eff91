"""A small Python client for schedulers: timeouts, retries on connection errors, batching.

    from sendtime.serving.client import SendTimeClient
    with SendTimeClient("http://127.0.0.1:3000", api_key=os.environ.get("SENDTIME_API_KEY")) as c:
        answers = c.best_send_time(user_ids, "2026-04-14T06:00:00Z", "2026-04-14T22:00:00Z")

Large user lists are split into batches of ``batch_size``; answers come back in input order.
Only failures that cannot have reached the service (connection refused, connect timeout) and
503s are retried, with exponential back-off, so a retried request is never applied twice.
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Sequence

import httpx


class SendTimeError(RuntimeError):
    """The service refused the request (4xx) or kept failing (5xx, connection)."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status


class SendTimeClient:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:3000",
        api_key: str | None = None,
        timeout: float = 30.0,
        connect_timeout: float = 3.0,
        retries: int = 3,
        backoff: float = 0.2,
        batch_size: int = 5_000,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if batch_size < 1 or batch_size > 10_000:
            raise ValueError("batch_size must be between 1 and 10,000 (the service's per-request limit)")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, transport=transport,
                                  timeout=httpx.Timeout(timeout, connect=connect_timeout))
        self.retries, self.backoff, self.batch_size = retries, backoff, batch_size

    def __enter__(self) -> "SendTimeClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _post(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                r = self._http.post(route, json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt == self.retries:
                    raise SendTimeError(None, f"cannot reach {self._http.base_url}: {exc}") from None
            else:
                if r.status_code == 503 and attempt < self.retries:
                    pass
                elif r.status_code >= 400:
                    try:
                        detail = r.json()
                    except ValueError:
                        detail = r.text
                    raise SendTimeError(r.status_code, str(detail)[:500])
                else:
                    return r.json()
            time.sleep(delay)
            delay *= 2
        raise SendTimeError(503, "service unavailable after retries")

    @staticmethod
    def _users(user_ids: Iterable[str], timezones: Sequence[str | None] | None) -> list[dict]:
        ids = list(user_ids)
        zones = list(timezones) if timezones is not None else [None] * len(ids)
        if len(zones) != len(ids):
            raise ValueError("timezones must have one entry per user id")
        return [{"user_id": u, **({"timezone": z} if z else {})} for u, z in zip(ids, zones)]

    def best_send_time(self, user_ids: Iterable[str], window_start: str, window_end: str,
                       timezones: Sequence[str | None] | None = None, quiet_hours: str | None = None,
                       min_lead_minutes: int | None = None) -> list[dict[str, Any]]:
        """Answers for every user, batched, in input order."""
        users = self._users(user_ids, timezones)
        extra = {k: v for k, v in (("quiet_hours", quiet_hours), ("min_lead_minutes", min_lead_minutes)) if v is not None}
        out: list[dict[str, Any]] = []
        for s in range(0, len(users), self.batch_size):
            body = {"users": users[s:s + self.batch_size], "window_start": window_start, "window_end": window_end, **extra}
            out.extend(self._post("/best_send_time", body)["results"])
        return out

    def plan_campaign(self, user_ids: Iterable[str], window_start: str, window_end: str, hourly_cap: int | list[int],
                      timezones: Sequence[str | None] | None = None, quiet_hours: str | None = None) -> dict[str, Any]:
        """One capacity plan for up to 10,000 users (caps apply to the whole request)."""
        users = self._users(user_ids, timezones)
        if len(users) > 10_000:
            raise ValueError("a campaign plan takes at most 10,000 users per request")
        body = {"users": users, "window_start": window_start, "window_end": window_end, "hourly_cap": hourly_cap}
        if quiet_hours:
            body["quiet_hours"] = quiet_hours
        return self._post("/plan_campaign", body)

    def info(self) -> dict[str, Any]:
        return self._post("/info", {})
