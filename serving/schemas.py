"""Request and response types of the HTTP API, in one module (they document the OpenAPI page)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Optional

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from features.contract import known_timezone

MAX_USERS = 10_000


class UserRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=256, description="The user's id in the event history.", examples=["u000123"])
    timezone: Optional[str] = Field(
        default=None,
        description="IANA time zone overriding the users table (e.g. for a user who moved).",
        examples=["Europe/Berlin"],
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not known_timezone(v):
            raise ValueError(f"unknown time zone {v!r}: use an IANA name such as 'America/New_York'")
        return v


class SendTimeAnswer(BaseModel):
    user_id: str = Field(examples=["u000123"])
    send_at: Optional[datetime] = Field(description="When to send, UTC, on the hour, inside the window.", examples=["2026-04-14T13:00:00Z"])
    local_time: Optional[str] = Field(description="send_at in the user's local time (ISO 8601 with offset).", examples=["2026-04-14T09:00:00-04:00"])
    local_hour: Optional[int] = Field(ge=0, le=23, description="Local hour of day of send_at.", examples=[9])
    p_open: Optional[float] = Field(ge=0, le=1, description="Probability that a message sent then gets a human open within 24 h.", examples=[0.31])
    confidence: float = Field(ge=0, le=1, description="Share of the answer that rests on the user's own history (0 = prior only).", examples=[0.8])
    source: Literal["model", "prior"] = Field(description="'model' for users with history, 'prior' for users without.", examples=["model"])
    timezone: str = Field(description="Time zone used.", examples=["America/New_York"])
    timezone_source: Literal["request", "users_table", "default"] = Field(description="Where the time zone came from.", examples=["users_table"])
    model_version: str = Field(description="Registered model version that scored it.", examples=["3"])
    policy: Literal["optimized", "explore", "holdout"] = Field(
        description="'optimized': best hour; 'explore': a random hour of the window (exploration); 'holdout': the status-quo hour (control group).",
        examples=["optimized"],
    )
    propensity: float = Field(gt=0, le=1, description="Probability the policy had of choosing this hour: log it with the send.", examples=[0.952])


class BestSendTimeResponse(BaseModel):
    model_version: str = Field(description="Champion model version used.", examples=["3"])
    features_as_of: str = Field(description="Cutoff of the feature snapshot used.", examples=["2026-04-13T00:00:00+00:00"])
    results: list[SendTimeAnswer]


class ServiceInfo(BaseModel):
    model_name: str
    model_version: str
    features_as_of: str
    snapshot: str
    users_known: int
