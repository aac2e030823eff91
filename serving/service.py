"""The BentoML service the email scheduler calls.

Start it with ``sendtime serve`` (binds 127.0.0.1) or ``bentoml serve serving.service:SendTime``.
It loads the ``champion`` model from the MLflow registry and the feature snapshot the last
nightly run published; both are located through the settings read from the environment.
"""

from __future__ import annotations

import logging
from typing import Annotated

import bentoml
import numpy as np
import pandas as pd
from bentoml.exceptions import InvalidArgument
from pydantic import AwareDatetime, Field

from sendtime.settings import Settings
from serving.model_store import load_scorer
from serving.policy import ExplorationPolicy
from serving.schemas import MAX_USERS, BestSendTimeResponse, SendTimeAnswer, ServiceInfo, UserRef
from serving.scoring import candidate_hours

log = logging.getLogger("sendtime.service")


@bentoml.service(name="sendtime", traffic={"timeout": 60}, http={"host": "127.0.0.1"})
class SendTime:
    def __init__(self) -> None:
        self.settings = Settings.from_env().prepare()
        self.scorer, self.manifest = load_scorer(self.settings)
        forest = getattr(self.scorer.model, "named_steps", {}).get("forest")
        if forest is not None:
            forest.n_jobs = 1  # small batches: thread start-up costs more than it saves
        self.policy = ExplorationPolicy(self.settings.exploration_rate, self.settings.holdout_share, self.settings.policy_salt)
        sq = self.settings.status_quo_utc_hour
        self.status_quo_utc_hour = sq if sq is not None else int(self.manifest.get("status_quo_utc_hour", 14))
        log.info("loaded model v%s, features as of %s", self.scorer.model_version, self.scorer.features.as_of)

    @bentoml.api(route="/best_send_time")
    def best_send_time(
        self,
        users: Annotated[list[UserRef], Field(min_length=1, max_length=MAX_USERS, description="Users to schedule (1 to 10,000).")],
        window_start: Annotated[AwareDatetime, Field(description="Earliest send time, ISO 8601 with offset.", examples=["2026-04-14T00:00:00Z"])],
        window_end: Annotated[AwareDatetime, Field(description="Latest send time, ISO 8601 with offset.", examples=["2026-04-15T00:00:00Z"])],
    ) -> BestSendTimeResponse:
        """Each user's best send time, on a whole UTC hour inside the window."""
        start, end = pd.Timestamp(window_start), pd.Timestamp(window_end)
        if end <= start:
            raise InvalidArgument("window_end must be after window_start")
        if end - start < pd.Timedelta(hours=1):
            raise InvalidArgument("window must be at least one hour long")
        if end - start > pd.Timedelta(hours=self.settings.max_window_hours):
            raise InvalidArgument(f"window must be at most {self.settings.max_window_hours} hours long")
        if len(users) > self.settings.max_users_per_request:
            raise InvalidArgument(f"users: at most {self.settings.max_users_per_request} per request")
        if len(candidate_hours(start, end)) == 0:
            raise InvalidArgument("window holds no whole UTC hour")
        res = self.scorer.best_in_window(
            [u.user_id for u in users], [u.timezone for u in users], start, end, self.settings.default_timezone,
            policy=self.policy, status_quo_utc_hour=self.status_quo_utc_hour,
        )
        version = self.scorer.model_version
        answers = []
        for r in res.itertuples(index=False):
            send_at = pd.Timestamp(r.send_at)
            answers.append(
                SendTimeAnswer(
                    user_id=r.user_id,
                    send_at=send_at.to_pydatetime(),
                    local_time=send_at.tz_convert(r.timezone).isoformat(),
                    local_hour=int(r.local_hour),
                    p_open=float(np.clip(r.p_open, 0.0, 1.0)),
                    confidence=float(np.clip(r.confidence, 0.0, 1.0)),
                    source=r.source,
                    timezone=r.timezone,
                    timezone_source=r.timezone_source,
                    model_version=version,
                    policy=r.policy,
                    propensity=float(r.propensity),
                )
            )
        return BestSendTimeResponse(
            model_version=version, features_as_of=self.scorer.features.as_of.isoformat(), results=answers
        )

    @bentoml.api(route="/info")
    def info(self) -> ServiceInfo:
        """Which model version and feature snapshot this replica serves."""
        return ServiceInfo(
            model_name=self.settings.model_name,
            model_version=self.scorer.model_version,
            features_as_of=self.scorer.features.as_of.isoformat(),
            snapshot=str(self.manifest.get("run_id", "")),
            users_known=int(len(self.scorer.features.table)),
        )
