"""The one predict path: batch predictions (CLI, nightly) and the HTTP service both call it.

A :class:`Scorer` holds the champion model, its version and input columns (from the MLflow
signature) and the published feature snapshot. Known users are scored from their features;
users missing from the snapshot get cold-start features built from the snapshot's prior.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cached_property, lru_cache
from datetime import date as Date
import time
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import pandas as pd

from sendtime.features.definitions import HOUR_BLIND_FEATURES
from sendtime.features.engagement import UserFeatures, answer_confidence, build_user_features
from sendtime.features.mapped import RELEASE_ROWS, release
from sendtime.serving.policy import ExplorationPolicy

if TYPE_CHECKING:  # pragma: no cover
    from sendtime.features.profiles import PopulationPrior
    from sendtime.serving.serving_table import ServingTable
    from sendtime.serving.slot_forest import SlotForest


#: slot columns that rise with a user's expected activity over the horizon (1 - exp(-act_24), and
#: act_24 over the user's best slot): a hint for the compiled traversal, which checks it per user
_RISE_WITH_ACT_24 = ("act_24", "p_struct", "act_rel")


class _Coded:
    """A string column as integer codes plus categories; indexing returns an object array."""

    def __init__(self, codes: np.ndarray, categories: np.ndarray) -> None:
        self.codes, self.categories = codes, np.asarray(categories, dtype=object)

    @classmethod
    def of(cls, column: pd.Series) -> "_Coded":
        codes, cats = pd.factorize(column.astype(object), use_na_sentinel=False)
        return cls(codes.astype(np.int32), cats)

    def __getitem__(self, rows) -> np.ndarray:
        return self.categories[self.codes[rows]]


class ProgressTenths:
    """Says how far a long pass over ``n`` items is, at each tenth: count, rate, time left."""

    def __init__(self, n: int, say: "Callable[[str], None] | None", what: str, t0: float) -> None:
        self.n, self.say, self.what, self.t0, self.next = n, say, what, t0, 1

    def __call__(self, done: int) -> None:
        if self.say is None or self.n <= 0 or done * 10 < self.next * self.n:
            return
        while self.next <= 10 and done * 10 >= self.next * self.n:
            self.next += 1
        took = time.perf_counter() - self.t0
        left = took * (self.n - done) / max(done, 1)
        self.say(f"{done:,}/{self.n:,} {self.what} ({done / max(took, 1e-9):,.0f}/s, about {left / 60:.1f} min left)")


class SchemaMismatch(ValueError):
    """The model expects inputs the feature snapshot cannot provide."""


@dataclass
class WindowRules:
    """What a send time must satisfy besides being a whole UTC hour inside the window."""

    window_start: pd.Timestamp
    window_end: pd.Timestamp
    quiet: tuple[int, int] | None = None  # local minutes of day [start, end), may wrap midnight
    earliest: pd.Timestamp | None = None  # now + lead time


@dataclass
class Grid:
    """Every requested user x every candidate hour: scores and which pairs are allowed."""

    candidates: pd.DatetimeIndex
    info: "Requested"  # rows, zones and sources of the requested users (request order)
    local_hour: np.ndarray  # (n, m)
    p: np.ndarray  # (n, m)
    allowed: np.ndarray  # (n, m)
    risk: np.ndarray | None = None  # (n, m) P(unsubscribe or complaint), from the snapshot's risk by local hour
    value: np.ndarray | None = None  # (n,) what one conversion of each user is worth (the value objective)

    @cached_property
    def expected(self) -> np.ndarray:
        """(n, m) the expected objective: the probability, or with values P(conversion) x value
        (computed once per grid: a plan reads it several times)."""
        return self.p if self.value is None else self.p * self.value[:, None]

    def ranked(self, penalty: float = 0.0) -> np.ndarray:
        """What the hours are ranked by: the expected objective minus ``penalty`` times the risk
        of an unsubscribe or complaint (the expected objective without a penalty or risk)."""
        if not penalty or self.risk is None:
            return self.expected
        return self.expected - penalty * self.risk

    @classmethod
    def concat(cls, parts: list["Grid"]) -> "Grid":
        """The grids of consecutive slices of one request's users, as one (same candidates).
        A cold user's ``info.row`` indexed its own slice's zone priors: it becomes -1 here
        (nothing reads it once the scores are in)."""
        if len(parts) == 1:
            return parts[0]

        def cat(get):
            first = get(parts[0])
            return None if first is None else np.concatenate([get(g) for g in parts], axis=0)

        info = Requested(**{f.name: cat(lambda g, k=f.name: getattr(g.info, k)) for f in fields(Requested)})
        info.row = np.where(info.cold, -1, info.row)
        return cls(candidates=parts[0].candidates, info=info, local_hour=cat(lambda g: g.local_hour), p=cat(lambda g: g.p),
                   allowed=cat(lambda g: g.allowed), risk=cat(lambda g: g.risk), value=cat(lambda g: g.value))



PROFILE_POLICY = "profiles"


class ProfilePolicy:
    """The policy when no model could be trained yet (a history of a day, no labelled send):
    P(open) is the profiles' own structural probability, ``p_struct`` = 1 - exp(-expected
    activity over the horizon), from each user's exposure-corrected profile shrunk to the
    population's rhythms. Stated as ``model_version`` "profiles" in every answer."""

    classes_ = np.array([0, 1])

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = np.clip(np.asarray(X["p_struct"], dtype=np.float64), 0.0, 1.0)
        return np.column_stack([1.0 - p, p])


def blend_parts(model) -> tuple[tuple[object, float], tuple[object, float]] | None:
    """((full, weight), (hour-blind, weight)) of the training's hour blend (a soft-voting
    classifier whose estimators are named "hours" and "blind"), else None."""
    names = [n for n, _ in getattr(model, "estimators", [])]
    if names != ["hours", "blind"] or getattr(model, "voting", None) != "soft" or not hasattr(model, "estimators_"):
        return None
    w = model.weights if model.weights is not None else [1.0, 1.0]
    return (model.estimators_[0], float(w[0])), (model.estimators_[1], float(w[1]))


def forests_in(model) -> list:
    """Every RandomForest inside a model (a pipeline, the hour blend, the level inside it)."""
    out, todo = [], [model]
    while todo:
        m = todo.pop()
        todo.extend(getattr(m, "estimators_", None) or [])
        forest = getattr(m, "named_steps", {}).get("forest")
        if forest is not None:
            out.append(forest)
    return out


@dataclass
class Scorer:
    """The model, its version and input columns, and who the snapshot knows: either the whole
    feature snapshot (``features``, optionally with its float score ``table``; the nightly run,
    batch predictions) or only the published serving table (``served``, memory-mapped: the
    service), in which case rows are the serving table's."""

    model: object
    model_version: str
    input_columns: list[str]
    features: UserFeatures | None
    table: np.ndarray | None = None  # (known users, 168) precomputed P(open), same row order
    negative_risk: np.ndarray | None = None  # (24,) P(unsubscribe or complaint) by local hour of delivery
    order_value: np.ndarray | None = None  # (known users,) expected order value (value objective), same row order
    order_value_prior: float | None = None  # the population's, for users the snapshot does not know
    compiled: bool = True  # score the hour-aware forest with the compiled slot traversal where it applies
    served: "ServingTable | None" = None  # the published serving table, in place of features and table

    def __post_init__(self) -> None:
        if self.served is not None:
            sv = self.served
            self._zone, self._source = _Coded(sv.zone_codes, sv.zones), _Coded(sv.source_codes, sv.sources)
            self._zone_from_table, self._confidence = sv.zone_from_table, sv.confidence
            self._rows_of = sv.rows_of
            self.__dict__["_cold_priors"] = sv.prior_scores()
            if self.order_value is None:
                self.order_value = sv.order_value
            return
        if self.features is None:
            raise ValueError("a Scorer needs the feature snapshot or a serving table")
        probe = self.features.model_frame(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        missing = [c for c in self.input_columns if c not in probe.columns]
        if missing:
            raise SchemaMismatch(f"model v{self.model_version} needs columns the features lack: {', '.join(missing)}")
        if self.table is not None and self.table.shape != (len(self.features.table), 168):
            raise SchemaMismatch(
                f"score table shape {self.table.shape} does not match {len(self.features.table)} users x 168 slots"
            )
        # per-user columns as plain arrays once, not per request (Arrow-backed columns convert slowly)
        # (as small categoricals: a million users' strings would cost hundreds of MiB)
        t = self.features.table
        self._zone = _Coded.of(t["timezone"])
        self._zone_from_table = (t["timezone_source"] == "users_table").to_numpy(dtype=bool)
        self._source = _Coded.of(t["source"])
        self._confidence = answer_confidence(t).astype(np.float32)
        # an object index hashes Python strings directly; its hash table is built once, here
        ids = t.index if t.index.dtype == object else pd.Index(t.index.to_numpy(dtype=object), dtype=object)
        ids.get_indexer(ids[:1])
        self._rows_of = ids.get_indexer

    @property
    def as_of(self) -> pd.Timestamp:
        """The features' as-of time."""
        return self.served.as_of if self.served is not None else self.features.as_of

    @property
    def n_users(self) -> int:
        """How many users the snapshot knows."""
        return self.served.n if self.served is not None else len(self.features.table)

    def user_ids(self) -> np.ndarray:
        """Every known user id (in row order; a serving table keyed by digests: the features' order)."""
        if self.served is not None:
            if self.served.meta["id_kind"] != "digest":
                return self.served.user_ids()
            ids = pd.read_parquet(self.served.folder.parent / "features" / "user_features.parquet", columns=["user_id"])
            return ids["user_id"].to_numpy(dtype=object)
        return np.asarray(self.features.table.index, dtype=object)

    @property
    def has_table(self) -> bool:
        """Are known users looked up in a precomputed table (not scored by the model)?"""
        return self.table is not None or self.served is not None

    def _looked_up(self, rows: np.ndarray, how: np.ndarray) -> np.ndarray:
        """Precomputed P at (rows, how): ``rows`` (n,) beside ``how`` (n,) or (n, m)."""
        if self.served is not None:
            return self.served.quantized.values(rows, how)
        return np.asarray(self.table[rows if rows.ndim == how.ndim else rows[:, None], how], dtype=np.float64)

    def forests(self) -> list:
        """Every RandomForest inside the model."""
        return forests_in(self.model)

    def score_model(self, uf: UserFeatures, rows: np.ndarray, how: np.ndarray) -> np.ndarray:
        """P(open) from the model, scoring each distinct (row, slot) pair once."""
        if len(rows) == 0:
            return np.zeros(0)
        key = rows.astype(np.int64) * 168 + (how.astype(np.int64) % 168)
        uniq, inv = np.unique(key, return_inverse=True)
        X = uf.model_frame(uniq // 168, uniq % 168)[self.input_columns]
        return self.proba(X, np.flatnonzero(np.diff(uniq // 168, prepend=-1)))[inv]

    def score(self, uf: UserFeatures, rows: np.ndarray, how: np.ndarray) -> np.ndarray:
        """P(open) for (snapshot row, local hour-of-week) pairs: a table lookup when published."""
        rows = np.asarray(rows, dtype=np.int64)
        how = np.asarray(how, dtype=np.int64) % 168
        if not self.has_table:
            return self.score_model(uf, rows, how)
        return self._looked_up(rows, how)

    def full_table(self, chunk_users: int = 20_000, out: np.ndarray | None = None,
                   progress: "Callable[[str], None] | None" = None) -> np.ndarray:
        """P(open) of all 168 slots for every known user (published by the nightly run).

        For the hour blend, its hour-blind part is the same at every slot of a user, so it is
        scored once per user rather than 168 times; the hour-aware forest runs compiled over
        each user's 168 rows (:mod:`sendtime.serving.slot_forest`), reading the slot columns
        and the user's own columns apart, and the hour-blind part reads the same per-user rows.
        The numbers are the blend's own ``predict_proba``'s, up to the order of a float sum.
        ``out``: the (users, 168) float32 array to fill, such as a memory-mapped file, whose
        pages are released as it fills (a ten-million-user table, 6.7 GB, does not stay
        resident). ``progress`` hears of each tenth of the users scored (with the rate and the
        time left)."""
        n = len(self.features.table)
        t0 = time.perf_counter()
        tell = ProgressTenths(n, progress, "users' 168 slots scored", t0)
        out = np.empty((n, 168), dtype=np.float32) if out is None else out
        if out.shape != (n, 168):
            raise ValueError(f"full_table: out has shape {out.shape}, the snapshot has {n} users x 168 slots")
        parts = blend_parts(self.model)
        hourly = parts[0][0] if parts is not None else self.model
        fast = self._slot_forest(hourly) if self.compiled else None
        cols = list(self.input_columns)
        varies, key, ordered = self._slot_layout
        every = max(1, RELEASE_ROWS // chunk_users)
        for k, s in enumerate(range(0, n, chunk_users)):
            e = min(n, s + chunk_users)
            if fast is not None:  # the compiled traversal reads the slot and user columns apart: no frame
                XT, U = self.features.slot_blocks(s, e, cols, varies)
                p_hours = fast.predict_split(XT, U, 168, varies, key, ordered).reshape(e - s, 168)
                if parts is not None:  # the hour-blind part's input: each user's first slot, from the same blocks
                    first = pd.DataFrame({c: XT[at, ::168] if vary else U[:, at]
                                          for c, vary, at in zip(cols, varies, self._slot_positions)}, columns=cols)
            else:
                rows = np.repeat(np.arange(s, e), 168)
                how = np.tile(np.arange(168), e - s)
                p_hours = self._hourly_proba(hourly, self.features.model_frame(rows, how)[cols], 168).reshape(e - s, 168)
                if parts is not None:
                    first = self.features.model_frame(np.arange(s, e), np.zeros(e - s, dtype=np.int64))[cols]
            if parts is None:
                out[s:e] = p_hours
            else:  # the hour-blind part: one row per user
                (_, w_full), (blind, w_blind) = parts
                p_blind = blind.predict_proba(first)[:, 1]
                out[s:e] = (w_full * p_hours + w_blind * p_blind[:, None]) / (w_full + w_blind)
            if (k + 1) % every == 0:
                release(out)
                release(self.features.lam)
            tell(e)
        release(out)
        return out

    def proba(self, X: pd.DataFrame, groups: np.ndarray) -> np.ndarray:
        """The model's P(open) of rows grouped by user (``groups``: each user's first row):
        the hour blend's parts each the fast way, or the model's own ``predict_proba``."""
        parts = blend_parts(self.model)
        if parts is None:
            return self._hourly_proba(self.model, X, groups)
        (full, w_full), (blind, w_blind) = parts
        p_blind = np.repeat(blind.predict_proba(X.iloc[groups])[:, 1], np.diff(np.append(groups, len(X))))
        return (w_full * self._hourly_proba(full, X, groups) + w_blind * p_blind) / (w_full + w_blind)

    def _hourly_proba(self, model, X: pd.DataFrame, groups: int | np.ndarray) -> np.ndarray:
        """P(open) of rows that come a user's slots at a time (``groups``): compiled where the
        model is the forest pipeline, else its own ``predict_proba``."""
        fast = self._slot_forest(model) if self.compiled else None
        if fast is None:
            return model.predict_proba(X)[:, 1]
        varies, key, ordered = self._slot_layout
        return fast.predict(X.to_numpy(dtype=np.float32), groups, varies, key, ordered)

    def _slot_forest(self, model) -> "SlotForest | None":
        from sendtime.serving.slot_forest import SlotForest  # numba, imported only where it runs

        cache = self.__dict__.setdefault("_slot_forests", {})
        if id(model) not in cache:
            cache[id(model)] = (model, SlotForest.of(model))
        return cache[id(model)][1]

    @cached_property
    def _slot_positions(self) -> np.ndarray:
        """Each input column's place in :meth:`UserFeatures.slot_blocks`' slot block or user block."""
        varies = self._slot_layout[0]
        return np.where(varies, np.cumsum(varies) - 1, np.cumsum(~varies) - 1)

    @cached_property
    def _slot_layout(self) -> tuple[np.ndarray, int | None, np.ndarray]:
        """For the compiled traversal, per input column: does it vary across a user's slots; the
        column to sort a user's slots by; the columns that may rise with it."""
        cols = list(self.input_columns)
        varies = np.array([c not in HOUR_BLIND_FEATURES for c in cols], dtype=bool)
        ordered = np.array([c in _RISE_WITH_ACT_24 for c in cols], dtype=bool)
        return varies, (cols.index("act_24") if "act_24" in cols else None), ordered

    def users(self, user_ids: Sequence[str], timezones: Sequence[str | None] | None = None,
              default_tz: str = "UTC") -> tuple["ColdPriors | None", Requested]:
        """Where each requested user's features are, and how their zone was chosen.

        Returns the zone priors of the users missing from the snapshot (None if all are
        known, :meth:`cold_priors`) and, in request order, each user's row (into the snapshot,
        or into the zone priors when ``cold``), zone, zone source, answer source and
        confidence. Plain arrays, no frames: this runs on every request. The snapshot itself is never copied, so an
        unknown user costs the same with a million known ones.
        """
        ids = np.asarray([str(u) for u in user_ids], dtype=object)
        n = len(ids)
        known = np.asarray(self._rows_of(ids), dtype=np.int64) if n else np.zeros(0, dtype=np.int64)
        safe = np.maximum(known, 0)
        is_cold = known < 0
        tz_req = np.asarray(list(timezones) if timezones is not None else [None] * n, dtype=object)
        has_req = np.not_equal(tz_req, None)
        from_table = ~has_req & ~is_cold & self._zone_from_table[safe]
        zone = np.where(has_req, tz_req, np.where(from_table, self._zone[safe], default_tz)).astype(object)
        zone_source = np.where(has_req, _REQUEST, np.where(from_table, _USERS_TABLE, _DEFAULT))
        rows = known.astype(np.int64)
        source = self._source[safe]
        conf = self._confidence[safe].astype(np.float64)
        cf = None
        if is_cold.any():  # a user the snapshot does not know is their zone's prior: one row per zone
            zones, inv = np.unique(zone[is_cold].astype(str), return_inverse=True)
            cf = self.cold_priors(zones)
            rows[is_cold] = inv
            source[is_cold] = cf.source[inv]
            conf[is_cold] = cf.confidence[inv]
        return cf, Requested(row=rows, cold=is_cold, timezone=zone, timezone_source=zone_source,
                             source=source, confidence=conf)

    def score_requested(self, cold: "ColdPriors | None", req: Requested, how: np.ndarray) -> np.ndarray:
        """(n, m) P(open) for requested users at local hours-of-week ``how`` (n, m)."""
        n, m = how.shape
        rows, is_cold = req.row, req.cold
        if not is_cold.any() and self.has_table:  # the common case: one fancy index
            return self._looked_up(rows, how)
        p = np.empty((n, m))
        k = ~is_cold
        if k.any():
            p[k] = self.score(self.features, np.repeat(rows[k], m), how[k].ravel()).reshape(-1, m)
        if is_cold.any():
            p[is_cold] = cold.scores[rows[is_cold][:, None], how[is_cold]]
        return p

    def cold_priors(self, zones: Sequence[str], compiled: bool = False) -> "ColdPriors":
        """The 168-slot P(open), answer source and confidence of a user unknown to the snapshot,
        per time zone. Such a user has no history: their features are the snapshot's prior for
        an unknown segment in that zone, the same for every such user, so each zone is scored
        once (the snapshot's zones when it is loaded, :meth:`warm_cold_priors`; any other zone
        the first time it is asked for; a serving table brings every zone's, scored by the nightly
        run) and a request of any size only looks them up. ``compiled``: score them by the
        compiled traversal (the nightly run; a service loads no compiled code for them)."""
        cache = self.__dict__.setdefault("_cold_priors", {})
        missing = sorted({str(z) for z in zones} - cache.keys())
        if missing:
            users = pd.DataFrame({"user_id": missing, "segment": "unknown", "timezone": missing})
            cf = build_user_features(_empty_messages(), users, self.as_of, prior=self.prior, default_tz="UTC")
            rows = cf.table.index.get_indexer(pd.Index(missing, dtype=object))
            k = len(missing)
            X = cf.model_frame(np.repeat(rows, 168), np.tile(np.arange(168), k))[self.input_columns]
            # the model's own predict_proba unless asked (the service needs no compiled code)
            p = (self.proba(X, np.arange(0, k * 168, 168)) if compiled else self.model.predict_proba(X)[:, 1]).reshape(k, 168)
            src = cf.table["source"].to_numpy(dtype=object)[rows]
            conf = answer_confidence(cf.table)[rows]
            for i, z in enumerate(missing):
                cache[z] = (p[i], src[i], conf[i])
        got = [cache[str(z)] for z in zones]
        return ColdPriors(scores=np.stack([g[0] for g in got]) if got else np.zeros((0, 168)),
                          source=np.array([g[1] for g in got], dtype=object),
                          confidence=np.array([g[2] for g in got], dtype=np.float64))

    @property
    def prior(self) -> "PopulationPrior":
        """The population prior the snapshot's features were built with."""
        if self.features is not None:
            return self.features.prior
        if not self.served.meta.get("prior"):
            raise ValueError("this serving table has no prior for users in a zone it has no answer for")
        from sendtime.features.store import prior_from_dict

        return prior_from_dict(self.served.meta["prior"])

    def published_priors(self, default_tz: str = "UTC") -> dict[str, tuple[np.ndarray, str, float]]:
        """Zone -> (168 P(open), source, confidence) of an unknown user in every IANA zone and the
        default: what the nightly run publishes in the serving table (compiled scoring)."""
        from zoneinfo import available_timezones

        zones = sorted(set(available_timezones()) | {str(default_tz)})
        cf = self.cold_priors(zones, compiled=True)
        return {z: (cf.scores[i], cf.source[i], cf.confidence[i]) for i, z in enumerate(zones)}

    def warm_cold_priors(self, default_tz: str = "UTC") -> int:
        """Score the prior of every zone of the snapshot's users and the default (at load, so
        no request waits for it); returns how many zones."""
        zones = set(map(str, self._zone.categories)) | {str(default_tz)}
        self.cold_priors(sorted(zones))
        return len(zones)

    def predict_day(self, day: Date, user_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """Scores of the 24 local hours of ``day`` for every user (batch predictions)."""
        ids = pd.Index(self.user_ids() if user_ids is None else user_ids)
        cold, req = self.users(list(ids))
        weekday = pd.Timestamp(day).weekday()
        how = np.tile(np.arange(24) + 24 * weekday, (len(ids), 1))
        p = self.score_requested(cold, req, how)
        best = p.argmax(axis=1)
        return pd.DataFrame(
            {
                "user_id": np.asarray(ids, dtype=str),
                "date": pd.Timestamp(day).date().isoformat(),
                "best_hour_local": best.astype(np.int16),
                "p_open": p[np.arange(len(ids)), best],
                "hour_scores": list(p.astype(np.float32)),
                "source": req.source,
                "confidence": req.confidence,
                "timezone": req.timezone,
                "model_version": self.model_version,
            }
        )

    def write_predictions(self, day: Date, path, chunk_users: int = 500_000) -> dict[str, int]:
        """:meth:`predict_day` for every known user, written to the Parquet file ``path`` a chunk
        of users at a time (the frame of ten million users' 24 scores would be gigabytes):
        the same rows as ``predict_day(day).to_parquet(path)``. Returns the users and prior answers."""
        from sendtime.features.store import write_parquet_parts

        ids = self.user_ids()
        counts = {"users": 0, "prior": 0}

        def parts():
            for s in range(0, max(len(ids), 1), chunk_users):
                part = self.predict_day(day, ids[s:s + chunk_users])
                counts["users"] += len(part)
                counts["prior"] += int((part["source"] == "prior").sum())
                yield part
                release(self.table)

        write_parquet_parts(parts(), path)
        return counts

    def grid(self, user_ids: Sequence[str], timezones: Sequence[str | None] | None, rules: WindowRules,
             default_tz: str = "UTC") -> Grid:
        """Score every requested user at every whole UTC hour of the window, DST-correct."""
        candidates = candidate_hours(rules.window_start, rules.window_end)
        cold, req = self.users(user_ids, timezones, default_tz)
        n, m = len(req.row), len(candidates)
        how = np.empty((n, m), dtype=np.int64)
        minute = np.empty((n, m), dtype=np.int64)
        codes, zones = pd.factorize(req.timezone)
        if len(zones) == 1:
            how[:], minute[:] = local_slots(candidates, zones[0])[:2]
        else:
            order = np.argsort(codes, kind="stable")
            bounds = np.searchsorted(codes[order], np.arange(len(zones) + 1))
            for z, zone in enumerate(zones):
                idx = order[bounds[z]:bounds[z + 1]]
                how[idx], minute[idx] = local_slots(candidates, zone)[:2]
        allowed = np.ones((n, m), dtype=bool)
        if rules.earliest is not None:
            allowed &= np.asarray(candidates >= rules.earliest)[None, :]
        if rules.quiet is not None:
            qs, qe = rules.quiet
            quiet = (minute >= qs) & (minute < qe) if qs < qe else (minute >= qs) | (minute < qe)
            allowed &= ~quiet
        p = self.score_requested(cold, req, how)
        risk = None if self.negative_risk is None else np.asarray(self.negative_risk, dtype=np.float64)[how % 24]
        value = None
        if self.order_value is not None:
            known = np.where(req.cold, 0, req.row)
            value = np.full(n, float(self.order_value_prior or 0.0))
            if len(self.order_value):
                value = np.where(req.cold, value, self.order_value[known])
        return Grid(candidates=candidates, info=req, local_hour=how % 24, p=p, allowed=allowed, risk=risk, value=value)

    def best_in_window(
        self,
        user_ids: Sequence[str],
        timezones: Sequence[str | None],
        window_start: pd.Timestamp,
        window_end: pd.Timestamp,
        default_tz: str = "UTC",
        policy: ExplorationPolicy | None = None,
        status_quo_utc_hour: int | None = None,
        quiet: tuple[int, int] | None = None,
        earliest: pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        """Each user's send hour in the window (whole UTC hours), DST-correct, outside quiet hours.

        Without a policy it is the best allowed hour; with one, holdout users get the status-quo
        hour and a share of the rest a random allowed hour, each answer with its propensity.
        Users with no allowed hour come back with ``send_at`` empty and a ``reason``.
        """
        g = self.grid(user_ids, timezones, WindowRules(window_start, window_end, quiet, earliest), default_tz)
        return self.answers(g, [str(u) for u in user_ids], policy, status_quo_utc_hour).frame(g.candidates)

    def answers(self, g: Grid, ids: list[str], policy: ExplorationPolicy | None = None,
                status_quo_utc_hour: int | None = None, chosen: np.ndarray | None = None, penalty: float = 0.0) -> Answers:
        """One answer per user from a grid: the policy's choice, or ``chosen`` (-1: none). Hours
        are ranked by :meth:`Grid.ranked` with ``penalty``."""
        n, m = g.p.shape
        score = g.ranked(penalty)
        allowed_n = g.allowed.sum(axis=1)
        has_hour = allowed_n > 0
        prop = np.ones(n)
        label = np.full(n, "optimized", dtype=object)
        if chosen is not None:
            best = np.asarray(chosen, dtype=np.int64)
            label[:] = "planned"
        elif policy is None or m == 0:
            best = np.where(g.allowed, score, -np.inf).argmax(axis=1) if m else np.zeros(n, dtype=np.int64)
        else:
            # exploration and the status quo draw among allowed hours only
            sq = status_quo_index(g.candidates, 14 if status_quo_utc_hour is None else status_quo_utc_hour)
            key = f"{g.candidates[0].isoformat()}|{g.candidates[-1].isoformat()}"
            best = np.full(n, -1, dtype=np.int64)
            for k in np.unique(allowed_n):
                if k == 0:
                    continue
                grp = np.flatnonzero(allowed_n == k)
                if k == m:  # every hour allowed: no reordering needed
                    cols = np.broadcast_to(np.arange(m), (len(grp), m))
                    sub = score[grp]
                else:
                    cols = np.argsort(~g.allowed[grp], axis=1, kind="stable")[:, :k]  # allowed columns in order
                    sub = np.take_along_axis(score[grp], cols, axis=1)
                sq_pos = np.abs(cols - sq).argmin(axis=1)
                idx, pr, lab = policy.choose([ids[i] for i in grp], sub, sq_pos, key)
                best[grp] = cols[np.arange(len(grp)), idx]
                prop[grp], label[grp] = pr, lab
        ok = has_hour & (best >= 0)
        choice = np.where(ok, best, -1)
        safe = np.maximum(choice, 0)
        pick = np.arange(n)
        reason = np.where(has_hour, np.where(ok, None, "no capacity left in the window"),
                          "no hour in the window outside quiet hours and after the lead time")
        return Answers(
            user_id=ids,
            choice=choice,
            local_hour=np.where(ok, g.local_hour[pick, safe], -1) if m else np.full(n, -1),
            p_open=np.where(ok, g.p[pick, safe], np.nan) if m else np.full(n, np.nan),
            p_unsubscribe=(np.where(ok, g.risk[pick, safe], np.nan) if m and g.risk is not None
                           else np.full(n, np.nan)),
            expected_value=(np.where(ok, g.expected[pick, safe], np.nan) if m and g.value is not None
                            else np.full(n, np.nan)),
            source=g.info.source,
            confidence=g.info.confidence,
            timezone=g.info.timezone,
            timezone_source=g.info.timezone_source,
            policy=label,
            propensity=np.where(ok, prop, np.nan),
            reason=reason,
        )


@dataclass
class Requested:
    """Requested users in request order: where their features are and how their zone was chosen."""

    row: np.ndarray  # into the snapshot, or into the zone priors (ColdPriors) when ``cold``
    cold: np.ndarray
    timezone: np.ndarray
    timezone_source: np.ndarray
    source: np.ndarray
    confidence: np.ndarray


@dataclass
class ColdPriors:
    """Per time zone: what a user the snapshot does not know gets (rows of ``Requested.row``)."""

    scores: np.ndarray  # (zones, 168) P(open) by local hour of the week
    source: np.ndarray
    confidence: np.ndarray


@dataclass
class Answers:
    """One answer per requested user, as columns; ``choice`` indexes the window's hours (-1: none)."""

    user_id: list[str]
    choice: np.ndarray
    local_hour: np.ndarray
    p_open: np.ndarray
    p_unsubscribe: np.ndarray
    expected_value: np.ndarray
    source: np.ndarray
    confidence: np.ndarray
    timezone: np.ndarray
    timezone_source: np.ndarray
    policy: np.ndarray
    propensity: np.ndarray
    reason: np.ndarray

    def frame(self, candidates: pd.DatetimeIndex) -> pd.DataFrame:
        """The answers as a frame with ``send_at`` (NaT where no hour qualifies)."""
        ok = self.choice >= 0
        send_at = pd.Series(pd.NaT, index=range(len(ok)), dtype="datetime64[ns, UTC]")
        if ok.any():
            send_at[ok] = candidates[self.choice[ok]]
        cols = {k: v for k, v in self.__dict__.items()}
        cols["send_at"] = send_at.to_numpy()
        return pd.DataFrame(cols)[["user_id", "send_at", *[k for k in cols if k not in ("user_id", "send_at")]]]


_REQUEST, _USERS_TABLE, _DEFAULT = "request", "users_table", "default"


@lru_cache(maxsize=4096)
def _local_slots(start: str, m: int, zone: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    candidates = pd.date_range(pd.Timestamp(start), periods=m, freq="h")
    local = candidates.tz_convert(zone)
    how = np.asarray(local.weekday * 24 + local.hour, dtype=np.int64)
    minute = np.asarray(local.hour * 60 + local.minute, dtype=np.int64)
    how.flags.writeable = minute.flags.writeable = False
    return how, minute, tuple(t.isoformat() for t in local)


def local_slots(candidates: pd.DatetimeIndex, zone: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """For whole UTC hours in ``zone``: local hour-of-week, local minute of day, local ISO times.

    Cached per (window, zone): a scheduler asks about the same windows and zones all day.
    """
    if len(candidates) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), ()
    return _local_slots(candidates[0].isoformat(), len(candidates), str(zone))


def status_quo_index(candidates: pd.DatetimeIndex, utc_hour: int) -> int:
    """Index of the window's first candidate at the status-quo UTC hour (else the nearest hour)."""
    hours = np.asarray(candidates.hour)
    dist = np.abs(hours - utc_hour)
    dist = np.minimum(dist, 24 - dist)
    return int(np.argmin(dist))


def candidate_hours(window_start: pd.Timestamp, window_end: pd.Timestamp) -> pd.DatetimeIndex:
    """Whole UTC hours inside [start, end]; empty when the window holds none."""
    start = pd.Timestamp(window_start).tz_convert("UTC").ceil("h")
    end = pd.Timestamp(window_end).tz_convert("UTC").floor("h")
    if end < start:
        return pd.DatetimeIndex([], tz="UTC")
    return pd.date_range(start, end, freq="h", tz="UTC")


def _empty_messages() -> pd.DataFrame:
    ts = pd.Series([], dtype="datetime64[us, UTC]")
    return pd.DataFrame(
        {
            "message_id": pd.Series([], dtype=object),
            "user_id": pd.Series([], dtype=object),
            "send_ts": ts,
            "propensity": pd.Series([], dtype=float),
            "t_open_machine_flag": ts,
            "t_open_human_flag": ts,
            "t_open_unk_fast": ts,
            "t_open_unk_slow": ts,
            "t_open_unk_next": ts,
            "t_click": ts,
            "t_bounce": ts,
            "timezone": pd.Series([], dtype=object),
            "send_how": pd.Series([], dtype=np.int16),
        }
    )
