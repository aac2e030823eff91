"""The service's own Prometheus metrics, with prometheus_client beside BentoML's.

Created when the service starts, in the worker (after BentoML has set up prometheus_client's
multiprocess folder, so each worker's counts add up on ``/metrics``), once per process:
a second service object in the same process (tests) reuses them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import REGISTRY, Counter, Gauge

SOURCES = ("table", "model", "prior")
ROUTES = ("best_send_time", "plan_campaign", "events")
EVENT_RESULTS = ("accepted", "duplicate", "rejected")
RELOAD_RESULTS = ("ok", "refused")


@dataclass
class ServiceMetrics:
    answers: Counter  # user-hour scores served, by source
    requests: Counter  # requests answered, by route
    events: Counter  # webhook events, by result
    reloads: Counter  # snapshot swaps, by result
    model_info: Gauge  # 1 for the (model, version, snapshot, table) served
    users_known: Gauge  # users in the served snapshot
    _served: list[tuple[str, ...]] = field(default_factory=list)  # the model_info label sets set to 1

    def serving(self, model: str, version: str, snapshot: str, table: bool, users: int) -> None:
        """Mark what this worker serves now (the previous label set drops to 0)."""
        for labels in self._served:
            self.model_info.labels(*labels).set(0)
        labels = (model, str(snapshot), str(bool(table)).lower(), str(version))
        self.model_info.labels(*labels).set(1)
        self._served = [labels]
        self.users_known.set(users)


_METRICS: ServiceMetrics | None = None


def service_metrics() -> ServiceMetrics:
    """This process's metrics (made on first use, every label value present from the start)."""
    global _METRICS
    if _METRICS is None or "sendtime_answers" not in REGISTRY._names_to_collectors:
        m = ServiceMetrics(
            answers=Counter("sendtime_answers", "User-hour scores served, by source.", ["source"]),
            requests=Counter("sendtime_requests", "Requests answered, by route.", ["route"]),
            events=Counter("sendtime_events", "Webhook events received, by result.", ["result"]),
            reloads=Counter("sendtime_reloads", "Snapshot swaps, done or refused.", ["result"]),
            model_info=Gauge("sendtime_model_info", "The model version and snapshot being served.",
                             ["model", "snapshot", "table", "version"], multiprocess_mode="livemax"),
            users_known=Gauge("sendtime_users_known", "Users in the served snapshot.", multiprocess_mode="livemax"),
        )
        for counter, values in ((m.answers, SOURCES), (m.requests, ROUTES), (m.events, EVENT_RESULTS),
                                (m.reloads, RELOAD_RESULTS)):
            for v in values:
                counter.labels(v)
        _METRICS = m
    return _METRICS


def forget(prefixes: tuple[str, ...] = ("sendtime_",)) -> None:
    """Unregister the process's metrics whose names start with ``prefixes`` (test-only: a fresh
    in-process service starts from zero, and BentoML's own register again)."""
    global _METRICS
    for name, collector in list(REGISTRY._names_to_collectors.items()):
        if name.startswith(prefixes):
            try:
                REGISTRY.unregister(collector)
            except KeyError:
                pass
    _METRICS = None
