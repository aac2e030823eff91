"""Request and response types of the HTTP API, in one module (they document the OpenAPI page)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Optional

import re

import orjson

from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator
from typing_extensions import NotRequired, TypedDict

from sendtime.features.contract import known_timezone

MAX_USERS = 10_000
MAX_EVENTS = 10_000  # per webhook batch; SendGrid posts batches of at most 768 KB


class UserRef(TypedDict):
    """One user of a request. A typed dict, not a model: pydantic checks it in C without
    building an object per user (3 ms instead of 16 for 10,000 users, time the event loop is
    blocked); the time zone is checked once per distinct zone by :func:`unknown_zone`."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    user_id: Annotated[str, Field(min_length=1, max_length=256, description="The user's id in the event history.", examples=["u000123"])]
    timezone: NotRequired[Annotated[Optional[str], Field(
        description="IANA time zone overriding the users table (e.g. for a user who moved).", examples=["Europe/Berlin"])]]


def unknown_zone(users: list[UserRef]) -> str | None:
    """The 400 message for the first user whose time zone is not an IANA zone, if any."""
    zones = {u.get("timezone") for u in users} - {None}
    bad = {z for z in zones if not known_timezone(z)}
    if not bad:
        return None
    i = next(i for i, u in enumerate(users) if u.get("timezone") in bad)
    return f"users.{i}.timezone: unknown time zone {users[i]['timezone']!r}: use an IANA name such as 'America/New_York'"


QUIET_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


def parse_quiet_hours(text: str | None) -> tuple[int, int] | None:
    """'21:00-08:00' -> (1260, 480) local minutes of day; None stays None."""
    if text is None:
        return None
    m = QUIET_RE.match(text.strip())
    if not m:
        raise ValueError(f"quiet_hours must look like '21:00-08:00', got {text!r}")
    a, b = int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4])
    if a == b:
        raise ValueError("quiet_hours start and end are equal: that would forbid every hour")
    return a, b


def check_quiet_hours(v: Optional[str]) -> Optional[str]:
    parse_quiet_hours(v)
    return v


class SendTimeAnswer(BaseModel):
    user_id: str = Field(examples=["u000123"])
    send_at: Optional[datetime] = Field(description="When to send, UTC, on the hour, inside the window; null when no hour qualifies (see reason).", examples=["2026-04-14T13:00:00Z"])
    local_time: Optional[str] = Field(description="send_at in the user's local time (ISO 8601 with offset).", examples=["2026-04-14T09:00:00-04:00"])
    local_hour: Optional[int] = Field(ge=0, le=23, description="Local hour of day of send_at.", examples=[9])
    p_open: Optional[float] = Field(ge=0, le=1, description="Probability that a message sent then gets a human open within 24 h.", examples=[0.31])
    p_unsubscribe: Optional[float] = Field(default=None, ge=0, le=1, description="Probability of an unsubscribe or complaint within the horizon after a send at that local hour (the snapshot's risk by delivery hour); null without one.", examples=[0.0021])
    expected_value: Optional[float] = Field(default=None, ge=0, description="The value objective's expected revenue of a send then: p_open (P(conversion)) times the user's expected order value; null for other objectives.", examples=[4.2])
    reason: Optional[str] = Field(default=None, description="Why send_at is null (no allowed hour, or no capacity left).", examples=[None])
    confidence: float = Field(ge=0, le=1, description="How far the user's own history raised the chance that their best hour is within an hour of the truth, under the learned reading rhythms (0 = no more than the prior's, 1 = certain).", examples=[0.8])
    source: Literal["model", "prior"] = Field(description="'model' for users with history, 'prior' for users without.", examples=["model"])
    timezone: str = Field(description="Time zone used.", examples=["America/New_York"])
    timezone_source: Literal["request", "users_table", "default"] = Field(description="Where the time zone came from.", examples=["users_table"])
    model_version: str = Field(description="Registered model version that scored it.", examples=["3"])
    policy: Literal["optimized", "explore", "holdout", "planned"] = Field(
        description="'optimized': best hour; 'explore': a random allowed hour (exploration); 'holdout': the status-quo hour (control group); 'planned': chosen by a capacity plan.",
        examples=["optimized"],
    )
    propensity: Optional[float] = Field(gt=0, le=1, description="Probability the policy had of choosing this hour: log it with the send.", examples=[0.952])


class FastJSON:
    """Serialize a response built with ``model_construct`` from plain dicts straight to JSON.

    The schema (and the OpenAPI page) still come from the pydantic fields; the service fills
    ``results`` with dicts it built itself, which skips 10,000 model constructions per request.
    """

    def model_dump_json(self, **kwargs) -> str:
        exclude = kwargs.get("exclude") or set()
        data = {k: v for k, v in self.__dict__.items() if k not in exclude}
        return orjson.dumps(data, default=_nested).decode()


_CHUNK = 256  # answers serialized at a time: well under the 0.5 ms interpreter switch interval


def json_body(model: "FastJSON") -> bytes:
    """The response's JSON, its ``results`` a few hundred answers at a time. Called in the
    request's worker thread (the route returns the bytes), so the event loop only sends them,
    and a 10,000-answer body never holds the interpreter for more than a fraction of a
    millisecond at once: a single-user request beside it keeps its latency. Same bytes as
    ``model_dump_json``."""
    data = dict(model.__dict__)
    results = data.pop("results")
    head = orjson.dumps(data, default=_nested)
    parts = [head[:-1] + (b',"results":[' if len(head) > 2 else b'"results":[')]
    for i in range(0, len(results), _CHUNK):
        if i:
            parts.append(b",")
        parts.append(orjson.dumps(results[i:i + _CHUNK], default=_nested)[1:-1])
    parts.append(b"]}")
    return b"".join(parts)


def _nested(obj):
    """orjson's fallback: nested pydantic models (the plan summary) dump through pydantic."""
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    raise TypeError(f"cannot serialize {type(obj).__name__}")


OBJECTIVE_FIELD = Field(description="What the hours were ranked by: open (a human open or a click within the horizon), click, conversion, or value (expected revenue); p_open is the probability of the open, click or conversion.",
                        examples=["open"])


class BestSendTimeResponse(FastJSON, BaseModel):
    model_version: str = Field(description="Champion model version used.", examples=["3"])
    objective: str = OBJECTIVE_FIELD
    features_as_of: str = Field(description="Cutoff of the feature snapshot used.", examples=["2026-04-13T00:00:00+00:00"])
    results: list[SendTimeAnswer] = Field(description="One answer per requested user, in request order.")


class ServiceInfo(BaseModel):
    model_name: str = Field(description="Registered model name.", examples=["sendtime-open-model"])
    objective: str = OBJECTIVE_FIELD
    channel: str = Field(default="email", description="The channel the deployment learned from and serves (SENDTIME_CHANNEL).", examples=["email"])
    objectives: dict[str, str] = Field(default_factory=dict, description="Every objective a request may ask for, with the model version serving it (the first is the default).", examples=[{"open": "3", "click": "2"}])
    unsubscribe_penalty: float = Field(default=0.0, description="The default penalty per unsubscribe or complaint (SENDTIME_UNSUBSCRIBE_PENALTY).", examples=[0.0])
    model_version: str = Field(description="Champion version being served.", examples=["3"])
    features_as_of: str = Field(description="Cutoff of the served feature snapshot.", examples=["2026-04-13T00:00:00+00:00"])
    snapshot: str = Field(description="Published snapshot folder being served.", examples=["2026-04-13_5452ae07365e"])
    users_known: int = Field(description="Users in the snapshot (answered from the score table).", examples=[20000])


class HourLoad(BaseModel):
    send_at: datetime = Field(description="A whole UTC hour of the window.", examples=["2026-04-14T13:00:00Z"])
    planned: int = Field(ge=0, description="Users planned at this hour.", examples=[4200])
    cap: int = Field(ge=0, description="The cap for this hour.", examples=[5000])


class PlanSummary(BaseModel):
    expected_opens_plan: float = Field(description="Sum of P(open) of the plan.", examples=[3120.5])
    expected_opens_uncapped: float = Field(description="Sum of P(open) if everyone got their best allowed hour, ignoring caps.", examples=[3190.2])
    expected_opens_status_quo: float = Field(description="Sum of P(open) if everyone were sent at the status-quo hour.", examples=[2405.7])
    expected_unsubscribes_plan: Optional[float] = Field(default=None, description="Sum of P(unsubscribe or complaint) of the plan (null without a risk in the snapshot).", examples=[21.4])
    expected_unsubscribes_status_quo: Optional[float] = Field(default=None, description="The same at the status-quo hour.", examples=[20.9])
    expected_value_plan: Optional[float] = Field(default=None, description="The value objective: expected revenue of the plan (null for other objectives).", examples=[5210.0])
    expected_value_status_quo: Optional[float] = Field(default=None, description="The same at the status-quo hour.", examples=[4100.0])
    unsubscribe_penalty: float = Field(default=0.0, description="The penalty the plan was ranked with (objective units per unsubscribe or complaint).", examples=[0.0])
    users_planned: int = Field(examples=[10000])
    users_unplanned: int = Field(description="Users with no allowed hour or no capacity left.", examples=[0])
    hourly: list[HourLoad] = Field(description="Planned sends and cap of every whole hour of the window.")
    stopped_early: bool = Field(default=False, description="True when the plan's search hit its time budget (SENDTIME_PLAN_SECONDS) before it settled: every cap still holds, expected opens may be slightly below the best plan.", examples=[False])


class PlanResponse(FastJSON, BaseModel):
    model_version: str = Field(description="Champion model version used.", examples=["3"])
    objective: str = OBJECTIVE_FIELD
    features_as_of: str = Field(description="Cutoff of the feature snapshot used.", examples=["2026-04-13T00:00:00+00:00"])
    summary: PlanSummary = Field(description="Expected opens of the plan and the alternatives, and the hourly load.")
    results: list[SendTimeAnswer] = Field(description="One answer per requested user, in request order.")


class ReloadResponse(BaseModel):
    reloaded: bool = Field(description="True when a new snapshot or champion was swapped in.", examples=[True])
    message: str = Field(description="What happened, or why the new snapshot was refused.", examples=["now serving snapshot 2026-04-14_ab12 with model v4"])
    model_version: str = Field(description="Model version served after the call.", examples=["4"])
    snapshot: str = Field(description="Snapshot served after the call.", examples=["2026-04-14_ab12"])


class RollResponse(BaseModel):
    rolled: bool = Field(description="False when another worker was rolling at that moment (its roll takes the sealed segments).", examples=[True])
    segments: int = Field(ge=0, description="Event-log segments moved into the inbox.", examples=[3])
    written: int = Field(ge=0, description="Events written to the inbox's Parquet files.", examples=[120000])
    doubled: int = Field(ge=0, description="Logged copies dropped because the event was already stored (a retry that reached another worker, or a crash before the answer).", examples=[0])
    files: list[str] = Field(description="Parquet files written, relative to the inbox.", examples=[["2026-04-14/events-3f9a0c.parquet"]])


class SendGridEvent(BaseModel):
    """One event of a SendGrid Event Webhook batch, as SendGrid posts it.

    Other keys (``category``, ``ip``, ``useragent``, ``url``, ``reason``, and the sender's
    ``custom_args``, which SendGrid puts at the top level of every event) are accepted and
    ignored: refusing them would refuse SendGrid's own batches.
    """

    model_config = ConfigDict(extra="allow")

    event: str = Field(min_length=1, max_length=64, description="SendGrid event type: processed, delivered, open, click, bounce, dropped, unsubscribe, group_unsubscribe, spamreport (deferred and group_resubscribe are not used).", examples=["open"])
    timestamp: float = Field(ge=0, le=1e11, description="When the event happened: Unix time in seconds (not milliseconds).", examples=[1772547160])
    email: Optional[str] = Field(default=None, max_length=320, description="Recipient address; becomes the user_id, trimmed and lower-cased.", examples=["alice@example.com"])
    sg_event_id: Optional[str] = Field(default=None, max_length=256, description="SendGrid's unique id of the event: the event_id, what makes replays idempotent.", examples=["b3Blbi1hbGljZS1odW1hbi0x"])
    sg_message_id: Optional[str] = Field(default=None, max_length=512, description="SendGrid's message id; its part before '.filter' (the X-Message-ID) and the user_id make the message_id.", examples=["Gk2hR7dTQ1yKc9mB0xWzLw.filter0001p3las1-1234-65E3F1A0-1.0"])
    sg_machine_open: Optional[bool] = Field(default=None, description="On opens: true when the open was made by a machine (Apple Mail Privacy Protection), not a person.", examples=[False])


class SendGridBatch(RootModel[Annotated[list[SendGridEvent], Field(min_length=1, max_length=MAX_EVENTS)]]):
    """The body of ``POST /events``: the JSON array SendGrid's Event Webhook posts, unchanged."""

    @model_validator(mode="before")
    @classmethod
    def _an_array(cls, value: Any) -> Any:
        if not isinstance(value, list):
            kind = "an object" if isinstance(value, dict) else type(value).__name__
            raise ValueError(f"the body must be a JSON array of SendGrid event objects (the Event Webhook batch), got {kind}")
        return value


class RejectedEvent(BaseModel):
    index: int = Field(ge=0, description="Position of the event in the posted array (0-based).", examples=[3])
    sg_event_id: Optional[str] = Field(default=None, description="The event's sg_event_id, when it had one.", examples=["ZGVmZXJyZWQtY2Fyb2wtMQ"])
    reason: str = Field(description="Why it was not stored.", examples=["not used: SendGrid 'deferred' event (no contract equivalent)"])


class EventsResponse(BaseModel):
    received: int = Field(ge=0, description="Events in the batch: received = accepted + duplicates + rejected.", examples=[120])
    accepted: int = Field(ge=0, description="New events stored (readable by the next nightly run).", examples=[112])
    duplicates: int = Field(ge=0, description="Events already stored (a replayed or overlapping batch) or repeated in this batch.", examples=[5])
    rejected: int = Field(ge=0, description="Events not stored; see rejects.", examples=[3])
    reasons: dict[str, int] = Field(description="Rejected events by reason.", examples=[{"not used: SendGrid 'deferred' event (no contract equivalent)": 3}])
    rejects: list[RejectedEvent] = Field(description="Every rejected event, with its reason (no addresses).")
    busy: Optional[str] = Field(default=None, description="On a 503: why the store cannot take the batch now; nothing of it was stored, retry after the Retry-After header's seconds.", examples=[None])

