"""The BentoML service the email scheduler calls.

Start it with ``sendtime serve`` (binds 127.0.0.1) or ``bentoml serve sendtime.serving.service:SendTime``.
It loads the ``champion`` model from the MLflow registry and the snapshot (features and the
168-slot score table) the last nightly run published; both are located through the settings
read from the environment. A watcher thread swaps in a new snapshot or champion when the
nightly run publishes one; requests in flight keep the state they started with. ``POST /events``
takes SendGrid Event Webhook batches into the event log, which a background thread rolls into
the inbox the next nightly run reads (serving/event_store.py).
"""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Annotated, Literal, Optional, Union

import bentoml
import numpy as np
import pandas as pd
from bentoml.exceptions import InvalidArgument
from fastapi import FastAPI
from starlette.responses import Response
from pydantic import AfterValidator, AwareDatetime, Field

from sendtime.settings import Settings
from sendtime.serving.capacity import plan_with_caps
from sendtime.serving.event_store import EventStore, StoreBusy
from sendtime.serving.guard import Guard, load_verification_key
from sendtime.serving.metrics import service_metrics
from sendtime.serving.logs import install as scrub_logs
from sendtime.serving.model_store import DeferredModel, load_scorer, snapshot_key, snapshot_model_version
from sendtime.serving.policy import ExplorationPolicy
from sendtime.serving.schemas import (
    MAX_USERS,
    BestSendTimeResponse,
    EventsResponse,
    HourLoad,
    PlanResponse,
    PlanSummary,
    RejectedEvent,
    ReloadResponse,
    RollResponse,
    SendGridBatch,
    ServiceInfo,
    UserRef,
    check_quiet_hours,
    json_body,
    parse_quiet_hours,
    unknown_zone,
)
from sendtime.serving.scoring import Answers, Grid, Scorer, WindowRules, candidate_hours, local_slots, status_quo_index
from sendtime.serving.webhooks import take_sendgrid_batch

log = logging.getLogger("sendtime.service")
MAX_CAP = 1_000_000_000  # sends per hour; larger caps mean "no cap"
CHUNK_USERS = 1024  # users scored at a time in /best_send_time and /plan_campaign

Users = Annotated[list[UserRef], Field(min_length=1, max_length=MAX_USERS, description="Users to schedule (1 to 10,000).")]
WindowStart = Annotated[AwareDatetime, Field(description="Earliest send time, ISO 8601 with offset.", examples=["2026-04-14T00:00:00Z"])]
WindowEnd = Annotated[AwareDatetime, Field(description="Latest send time, ISO 8601 with offset.", examples=["2026-04-15T00:00:00Z"])]
QuietHours = Annotated[
    Optional[str],
    AfterValidator(check_quiet_hours),
    Field(description="Local hours not to send in, 'HH:MM-HH:MM' (may wrap midnight).", examples=["21:00-08:00"]),
]
LeadMinutes = Annotated[
    Optional[int], Field(ge=0, le=7 * 24 * 60, description="Earliest send is now + this many minutes.", examples=[30])
]
Penalty = Annotated[
    Optional[float],
    Field(ge=0, le=1e6, description="Rank hours by P(objective) minus this times P(unsubscribe or complaint); default: the deployment's SENDTIME_UNSUBSCRIBE_PENALTY.",
          examples=[20.0]),
]
ObjectiveAsked = Annotated[
    Optional[Literal["open", "click", "conversion", "value"]],
    Field(description="What to rank hours by: one the service serves (SENDTIME_OBJECTIVE, SENDTIME_SERVE_OBJECTIVES), which answers say. Default: SENDTIME_OBJECTIVE.",
          examples=["open"]),
]


def _settle_heap() -> None:
    """Move the loaded state out of the garbage collector's sight.

    A 10,000-user request allocates tens of thousands of small objects; each collection they
    trigger would otherwise walk the whole loaded service (pandas, MLflow, the snapshot), which
    measured 38 ms of a 10,000-user request's parsing against 6 ms after freezing.
    """
    gc.unfreeze()  # a swapped-out state must stay collectable
    gc.collect()
    gc.freeze()


@dataclass
class ServingState:
    scorer: Scorer
    manifest: dict
    key: tuple[str, str]
    status_quo_utc_hour: int

    @property
    def objective(self) -> str:
        """What the published snapshot was trained for (snapshots before objectives: open)."""
        return str(self.manifest.get("objective", "open"))


def _json(model) -> Response:
    """The answer serialized here, in the worker thread, in small pieces (``schemas.json_body``)."""
    return Response(json_body(model), media_type="application/json")


def _workers() -> int:
    """Worker processes (SENDTIME_WORKERS, default 1); read when the service is defined."""
    raw = os.environ.get("SENDTIME_WORKERS", "1")
    return max(1, int(raw)) if raw.isdigit() else 1


def _threads() -> int:
    """Requests one worker runs at once (SENDTIME_THREADS, default 8; BentoML's own default is
    1, which queues a single-user call behind a 10,000-user one)."""
    raw = os.environ.get("SENDTIME_THREADS", "8")
    return max(1, int(raw)) if raw.isdigit() else 8


def _host() -> str:
    """Address to bind (SENDTIME_HOST, default loopback; 0.0.0.0 inside a container)."""
    return os.environ.get("SENDTIME_HOST", "127.0.0.1").strip() or "127.0.0.1"


ops = FastAPI(title="sendtime operations")


_FIRST_YEAR, _LAST_YEAR = 1970, 2200  # the windows a request may ask about


@bentoml.service(name="sendtime", workers=_workers(), threads=_threads(), traffic={"timeout": 60}, http={"host": _host()})
@bentoml.asgi_app(ops, path="/ops")
class SendTime:
    def __init__(self) -> None:
        # requests run in a thread pool beside the event loop; the default 5 ms GIL switch
        # interval shows up directly in tail latency of millisecond-sized requests
        sys.setswitchinterval(0.0005)
        scrub_logs()
        self.settings = Settings.from_env().prepare()
        self.policy = ExplorationPolicy(self.settings.exploration_rate, self.settings.holdout_share, self.settings.policy_salt)
        self.metrics = service_metrics()
        if self.settings.events_verification_key:  # a key that is not one stops the start with its reason
            load_verification_key(self.settings.events_verification_key)
        self.event_store = EventStore(self.settings.home / "events", fsync=self.settings.events_fsync,
                                      segment_seconds=self.settings.events_segment_seconds,
                                      max_backlog_bytes=self.settings.events_max_backlog_mb << 20)
        self._swap = threading.Lock()
        # one deployment per objective served (the first is the default); each its own model and snapshots
        self.deployments = {o: self.settings.for_objective(o) for o in self.settings.served_objectives}
        # at first start a bad snapshot stops the service with its message
        self.states = {o: self._load(s) for o, s in self.deployments.items()}
        self._mark_served()
        _settle_heap()
        self._stop = threading.Event()
        if self.settings.reload_seconds > 0:
            threading.Thread(target=self._watch, name="sendtime-reload", daemon=True).start()
        threading.Thread(target=self._roll_events, name="sendtime-roll", daemon=True).start()

    # -- state -------------------------------------------------------------------------------
    @property
    def state(self) -> ServingState:
        """The default objective's state."""
        return self.states[self.settings.objective]

    def _load(self, settings: Settings | None = None) -> ServingState:
        scorer, manifest = load_scorer(settings or self.settings)
        if not isinstance(scorer.model, DeferredModel):  # a deferred one does this when it loads
            for forest in scorer.forests():
                forest.n_jobs = 1  # small batches: thread start-up costs more than it saves
        sq = self.settings.status_quo_utc_hour
        sq = sq if sq is not None else int(manifest.get("status_quo_utc_hour", 14))
        if scorer.served is not None:  # map the serving table's pages in beside the first requests
            threading.Thread(target=scorer.served.warm, name="sendtime-warm", daemon=True).start()
        key = (manifest.get("snapshot", ""), scorer.model_version)
        log.info("serving model v%s, snapshot %s, table %s", scorer.model_version, key[0], manifest.get("table"))
        return ServingState(scorer=scorer, manifest=manifest, key=key, status_quo_utc_hour=sq)

    def reload_now(self) -> tuple[bool, str]:
        """Swap in the published snapshot / champion of every served objective if they changed;
        keep the old on failure."""
        with self._swap:
            done = [self._reload_one(o) for o in self.deployments]
        if len(done) == 1:
            return done[0]
        return any(ok for ok, _ in done), "; ".join(f"{o}: {msg}" for o, (_, msg) in zip(self.deployments, done))

    def _reload_one(self, objective: str) -> tuple[bool, str]:
        settings, state = self.deployments[objective], self.states[objective]
        try:
            wanted = snapshot_key(settings)
        except Exception as exc:  # registry unreachable: keep serving what we have
            return False, f"cannot reach the registry: {exc}"
        if wanted == state.key:
            return False, "already serving the published snapshot and champion"
        pinned = snapshot_model_version(settings, wanted[0])
        if pinned is not None and pinned != wanted[1] and wanted[0] == state.key[0]:
            # the champion moved but its snapshot is not published yet (a nightly run in
            # flight, or one that died between promotion and publish): keep the pair we have
            return False, f"champion v{wanted[1]} has no published snapshot yet; still serving {state.key}"
        try:
            new = self._load(settings)
        except Exception as exc:
            self.metrics.reloads.labels("refused").inc()
            msg = f"refused snapshot {wanted[0]} / model v{wanted[1]}: {exc}; still serving {state.key}"
            log.error(msg)
            return False, msg
        self.states = {**self.states, objective: new}  # one assignment: a request sees old or new, whole
        self.metrics.reloads.labels("ok").inc()
        self._mark_served()
        _settle_heap()
        return True, f"now serving snapshot {new.key[0]} with model v{new.key[1]}"

    @bentoml.on_shutdown
    def _stop_watching(self) -> None:
        self._stop.set()
        try:  # what this worker logged goes to the inbox now, not at the next start
            self.event_store.roll(seal_own=True)
            self.event_store.close()
        except Exception:  # the log keeps it; the next roll takes it
            log.exception("rolling the event log at shutdown failed")

    def _roll_events(self) -> None:
        """Roll sealed event-log segments into the inbox, a few times per segment length. The
        roll runs as its own process (`sendtime roll-events`): parsing and writing hundreds of
        thousands of events would otherwise hold this worker's interpreter from its requests."""
        every = min(60.0, self.settings.events_segment_seconds / 3)
        while not self._stop.wait(every):
            try:
                if self.event_store.has_sealed():
                    done = subprocess.run([sys.executable, "-m", "sendtime.cli", "roll-events", "--quiet"],
                                          capture_output=True, text=True, timeout=3600)
                    if done.returncode not in (0, 5):  # 5: another worker was rolling
                        log.error("rolling the event log failed (exit %d): %s", done.returncode, done.stderr.strip()[-500:])
            except Exception:
                log.exception("rolling the event log failed; it stays in the log and is retried")

    def _watch(self) -> None:
        while not self._stop.wait(self.settings.reload_seconds):
            self.reload_now()

    # -- shared request handling -------------------------------------------------------------
    def _rules(self, window_start, window_end, quiet_hours, min_lead_minutes) -> WindowRules:
        # a date near year 1 or 9999 with an offset leaves the range of instants the scoring
        # converts through: refuse it here, with the field named
        for name, value in (("window_start", window_start), ("window_end", window_end)):
            if not _FIRST_YEAR <= value.year < _LAST_YEAR:
                raise InvalidArgument(f"{name} must lie between the years {_FIRST_YEAR} and {_LAST_YEAR}")
        start, end = pd.Timestamp(window_start), pd.Timestamp(window_end)
        if end <= start:
            raise InvalidArgument("window_end must be after window_start")
        if end - start < pd.Timedelta(hours=1):
            raise InvalidArgument("window must be at least one hour long")
        if end - start > pd.Timedelta(hours=self.settings.max_window_hours):
            raise InvalidArgument(f"window must be at most {self.settings.max_window_hours} hours long")
        if len(candidate_hours(start, end)) == 0:
            raise InvalidArgument("window holds no whole UTC hour")
        earliest = None
        if min_lead_minutes is not None:
            earliest = pd.Timestamp.now(tz="UTC") + pd.Timedelta(minutes=min_lead_minutes)
        return WindowRules(start, end, parse_quiet_hours(quiet_hours), earliest)

    def _penalty(self, asked: float | None) -> float:
        """The request's unsubscribe penalty, else the deployment's."""
        return float(self.settings.unsubscribe_penalty if asked is None else asked)

    def _check_users(self, users: list[UserRef]) -> None:
        if len(users) > self.settings.max_users_per_request:
            raise InvalidArgument(f"users: at most {self.settings.max_users_per_request} per request")
        bad = unknown_zone(users)
        if bad:
            raise InvalidArgument(bad)

    def _respond(self, state: ServingState, res: Answers, candidates: pd.DatetimeIndex) -> list[dict]:
        """Answers (``SendTimeAnswer`` fields) without per-row pandas work: times are looked up
        per (zone, hour), and plain dicts are serialized directly (see ``FastJSON``)."""
        version = state.scorer.model_version
        self.metrics.answers.labels("prior").inc(int(np.count_nonzero(res.source == "prior")))
        send_iso = [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in candidates]
        local_iso = {z: local_slots(candidates, z)[2] for z in set(res.timezone.tolist())}
        ok = res.choice >= 0
        p_open = np.clip(res.p_open, 0.0, 1.0).tolist()
        p_unsub = [None if x != x else x for x in np.clip(res.p_unsubscribe, 0.0, 1.0).tolist()]
        values = [None if x != x else x for x in np.clip(res.expected_value, 0.0, None).tolist()]
        conf = np.clip(res.confidence, 0.0, 1.0).tolist()
        prop = res.propensity.tolist()
        hours = res.local_hour.tolist()
        reasons = res.reason.tolist()
        out = []
        for uid, c, good, hour, p, pu, ev, reason, cf, src, zone, zsrc, pol, pr in zip(
            res.user_id, res.choice.tolist(), ok.tolist(), hours, p_open, p_unsub, values, reasons, conf, res.source.tolist(),
            res.timezone.tolist(), res.timezone_source.tolist(), res.policy.tolist(), prop,
        ):
            if good:
                out.append({"user_id": uid, "send_at": send_iso[c], "local_time": local_iso[zone][c], "local_hour": hour,
                            "p_open": p, "p_unsubscribe": pu, "expected_value": ev, "reason": reason, "confidence": cf, "source": src, "timezone": zone,
                            "timezone_source": zsrc, "model_version": version, "policy": pol, "propensity": pr})
            else:
                out.append({"user_id": uid, "send_at": None, "local_time": None, "local_hour": None, "p_open": None,
                            "p_unsubscribe": None, "expected_value": None, "reason": reason, "confidence": cf, "source": src, "timezone": zone,
                            "timezone_source": zsrc, "model_version": version, "policy": pol, "propensity": None})
        return out

    def _state(self, objective: str | None) -> ServingState:
        states = self.states  # one consistent (snapshot, model) pair for the whole request
        if objective is not None and objective not in states:
            raise InvalidArgument(f"objective {objective!r} is not served here: this deployment serves "
                                  f"{', '.join(repr(o) for o in states)} (SENDTIME_OBJECTIVE, SENDTIME_SERVE_OBJECTIVES)")
        return states[objective or self.settings.objective]

    def _grid(self, users: list[UserRef], rules: WindowRules, state: ServingState):
        """Score a slice of the request's users over the window: (ids, grid)."""
        ids = [u["user_id"] for u in users]
        g = state.scorer.grid(ids, [u.get("timezone") for u in users], rules, self.settings.default_timezone)
        known = int(np.count_nonzero(~g.info.cold)) * len(g.candidates)  # from this request alone: requests run in parallel
        self.metrics.answers.labels("table" if state.scorer.has_table else "model").inc(known)
        return ids, g

    # -- routes ------------------------------------------------------------------------------
    @bentoml.api(route="/best_send_time")
    def best_send_time(
        self,
        users: Users,
        window_start: WindowStart,
        window_end: WindowEnd,
        quiet_hours: QuietHours = None,
        min_lead_minutes: LeadMinutes = None,
        objective: ObjectiveAsked = None,
        unsubscribe_penalty: Penalty = None,
    ) -> BestSendTimeResponse:
        """Each user's best send time: a whole UTC hour inside the window, outside quiet hours."""
        self._check_users(users)
        rules = self._rules(window_start, window_end, quiet_hours, min_lead_minutes)
        state, penalty = self._state(objective), self._penalty(unsubscribe_penalty)
        results: list[dict] = []
        # users a slice at a time: each answer depends on its user alone, and no array operation
        # of a 10,000-user request then holds the interpreter long enough to stall a small request
        for i in range(0, len(users), CHUNK_USERS):
            ids, g = self._grid(users[i:i + CHUNK_USERS], rules, state)
            res = state.scorer.answers(g, ids, self.policy, state.status_quo_utc_hour, penalty=penalty)
            results += self._respond(state, res, g.candidates)
        self.metrics.requests.labels("best_send_time").inc()
        return _json(BestSendTimeResponse.model_construct(
            model_version=state.scorer.model_version,
            objective=state.objective,
            features_as_of=state.scorer.as_of.isoformat(),
            results=results,
        ))

    @bentoml.api(route="/plan_campaign")
    def plan_campaign(
        self,
        users: Users,
        window_start: WindowStart,
        window_end: WindowEnd,
        hourly_cap: Annotated[
            Union[Annotated[int, Field(ge=0, le=MAX_CAP)], list[Annotated[int, Field(ge=0, le=MAX_CAP)]]],
            Field(description="Most sends per UTC hour: one number for every hour, or one per whole hour of the window.", examples=[5000]),
        ],
        quiet_hours: QuietHours = None,
        min_lead_minutes: LeadMinutes = None,
        objective: ObjectiveAsked = None,
        unsubscribe_penalty: Penalty = None,
    ) -> PlanResponse:
        """A whole campaign's send times: no hour over its cap, expected opens as high as possible."""
        self._check_users(users)
        rules = self._rules(window_start, window_end, quiet_hours, min_lead_minutes)
        state = self._state(objective)
        parts = [self._grid(users[i:i + CHUNK_USERS], rules, state)
                 for i in range(0, len(users), CHUNK_USERS)]  # scored a slice at a time, planned as one
        ids = [u for part, _ in parts for u in part]
        g = Grid.concat([part for _, part in parts])
        m = len(g.candidates)
        if isinstance(hourly_cap, list):
            if len(hourly_cap) != m:
                raise InvalidArgument(f"hourly_cap: the window has {m} whole hours, got {len(hourly_cap)} caps")
            caps = np.asarray(hourly_cap, dtype=np.int64)
        else:
            caps = np.full(m, int(hourly_cap), dtype=np.int64)
        penalty = self._penalty(unsubscribe_penalty)
        score = g.ranked(penalty)
        plan = plan_with_caps(score, g.allowed, caps, max_seconds=self.settings.plan_seconds or None)
        res = state.scorer.answers(g, ids, chosen=plan.hour)
        sq = status_quo_index(g.candidates, state.status_quo_utc_hour)
        load = np.bincount(plan.hour[plan.hour >= 0], minlength=m)
        planned = plan.hour >= 0
        rows, cols = np.flatnonzero(planned), plan.hour[planned]
        has = g.allowed.any(axis=1)
        best = np.where(g.allowed, score, -np.inf).argmax(axis=1) if m else np.zeros(len(ids), dtype=np.int64)
        summary = PlanSummary.model_construct(
            expected_opens_plan=float(g.p[rows, cols].sum()),
            expected_opens_uncapped=float(g.p[np.flatnonzero(has), best[has]].sum()),
            expected_opens_status_quo=float(g.p[:, sq].sum()),
            expected_unsubscribes_plan=float(g.risk[rows, cols].sum()) if g.risk is not None else None,
            expected_unsubscribes_status_quo=float(g.risk[:, sq].sum()) if g.risk is not None else None,
            expected_value_plan=float(g.expected[rows, cols].sum()) if g.value is not None else None,
            expected_value_status_quo=float(g.expected[:, sq].sum()) if g.value is not None else None,
            unsubscribe_penalty=penalty,
            users_planned=int(plan.assigned.sum()),
            users_unplanned=int((~plan.assigned).sum()),
            stopped_early=plan.stopped_early,
            hourly=[HourLoad.model_construct(send_at=t.to_pydatetime(), planned=int(n), cap=int(c)) for t, n, c in zip(g.candidates, load, caps)],
        )
        self.metrics.requests.labels("plan_campaign").inc()
        return _json(PlanResponse.model_construct(
            model_version=state.scorer.model_version,
            objective=state.objective,
            features_as_of=state.scorer.as_of.isoformat(),
            summary=summary,
            results=self._respond(state, res, g.candidates),
        ))

    @bentoml.api(route="/events")
    def events(self, batch: SendGridBatch, /, ctx: bentoml.Context) -> EventsResponse:
        """Store a SendGrid Event Webhook batch (the JSON array SendGrid posts) for the nightly run
        (`sendtime nightly --events $SENDTIME_HOME/events/inbox`).

        Answered once the batch is in the event log on disk. Idempotent: events already stored
        (a replayed or overlapping batch) count as duplicates and are not stored again. Events
        the contract refuses come back with their reasons; opens whose send came in an earlier
        batch are fine. 503 with Retry-After when the store is behind (SendGrid retries)."""
        records = [e.model_dump(mode="json", exclude_unset=True) for e in batch.root]
        try:
            got = take_sendgrid_batch(records, self.event_store, self.settings.events_user_ids, self.settings.events_salt)
        except StoreBusy as busy:
            self.metrics.requests.labels("events_busy").inc()
            log.warning("events: 503, %s", busy)
            ctx.response.status_code = 503
            ctx.response.headers["Retry-After"] = str(busy.retry_after)
            return EventsResponse.model_construct(received=len(records), accepted=0, duplicates=0, rejected=0,
                                                  reasons={}, rejects=[], busy=str(busy))
        self.metrics.requests.labels("events").inc()
        for k, n in (("accepted", got.accepted), ("duplicate", got.duplicates), ("rejected", len(got.rejects))):
            self.metrics.events.labels(k).inc(n)
        log.debug("events: received %d, accepted %d, duplicates %d, rejected %d", got.received, got.accepted,
                  got.duplicates, len(got.rejects))
        return EventsResponse.model_construct(
            received=got.received, accepted=got.accepted, duplicates=got.duplicates, rejected=len(got.rejects),
            reasons=got.reasons, busy=None,
            rejects=[RejectedEvent.model_construct(index=i, sg_event_id=records[i].get("sg_event_id") if isinstance(records[i].get("sg_event_id"), str) else None,
                                                   reason=why) for i, why in got.rejects],
        )

    @bentoml.api(route="/info")
    def info(self) -> ServiceInfo:
        """Which model version and snapshot this replica serves."""
        states = self.states  # read once: a reload swaps the whole dict
        state = states[self.settings.objective]
        return ServiceInfo(
            model_name=self.settings.model_name,
            objective=state.objective,
            channel=str(state.manifest.get("channel", "email")),
            objectives={o: s.scorer.model_version for o, s in states.items()},
            unsubscribe_penalty=float(self.settings.unsubscribe_penalty),
            model_version=state.scorer.model_version,
            features_as_of=state.scorer.as_of.isoformat(),
            snapshot=str(state.key[0]),
            users_known=int(state.scorer.n_users),
        )

    @ops.get("/version")
    def version(self) -> dict:
        """GET /ops/version: what this replica runs, for deployment pipelines (no key needed)."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            code = version("sendtime")
        except PackageNotFoundError:
            code = "unknown"
        state = self.state
        return {"sendtime": code, "model_name": self.settings.model_name, "model_version": state.scorer.model_version,
                "snapshot": str(state.key[0]), "features_as_of": state.scorer.as_of.isoformat(),
                "score_table": bool(state.manifest.get("table", False))}

    @bentoml.api(route="/admin/reload")
    def reload(self) -> ReloadResponse:
        """Check for a new published snapshot or champion now (the watcher also does, periodically)."""
        ok, msg = self.reload_now()
        state = self.state  # read once: the default objective's
        return ReloadResponse(reloaded=ok, message=msg, model_version=state.scorer.model_version, snapshot=str(state.key[0]))

    @bentoml.api(route="/admin/roll")
    def roll(self) -> RollResponse:
        """Move the event log into the inbox now: this worker's open segment and every sealed one
        (a background thread does it every few minutes; call this before a nightly run)."""
        got = self.event_store.roll(seal_own=True)
        if got is None:
            return RollResponse(rolled=False, segments=0, written=0, doubled=0, files=[])
        return RollResponse(rolled=True, segments=got.segments, written=got.written, doubled=got.doubled,
                            files=[str(f.relative_to(self.event_store.inbox)) for f in got.files])

    def _mark_served(self) -> None:
        state = self.state
        self.metrics.serving(self.settings.model_name, state.scorer.model_version, state.key[0],
                             bool(state.manifest.get("table", False)), state.scorer.n_users)


SendTime.add_asgi_middleware(Guard)
