"""The Spark engine gives what the embedded (pandas) engine gives: the same message table (around
DST changes, for users with no time zone, with and without machine-open flags), the same user
features, and the same 168-slot score table from the registered champion. One local[2] session
bound to loopback for the whole module."""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pyspark")
if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
    pytest.skip("the Spark engine needs a Java runtime", allow_module_level=True)

from sendtime.features.contract import read_events, read_users  # noqa: E402
from sendtime.features.engagement import build_user_features  # noqa: E402
from sendtime.features.messages import build_messages  # noqa: E402
from sendtime.features.spark import (  # noqa: E402
    MESSAGE_COLUMNS,
    TIME_COLUMNS,
    build_messages_spark,
    build_user_features_spark,
    events_to_spark,
    messages_to_pandas,
    read_events_spark,
    spark_session,
    stop_spark,
    user_aggregates_spark,
    users_to_spark,
)

UTC = "UTC"
# 2026 DST changes: US spring-forward Mar 8 07:00 UTC, EU Mar 29 01:00 UTC, Sydney fall-back
# Apr 4 16:00 UTC (02:00-03:00 local happens twice)
DST_CHANGES = ("2026-03-08T07:00:00Z", "2026-03-29T01:00:00Z", "2026-04-04T16:00:00Z")
DST_USERS = {"dst-ny": "America/New_York", "dst-berlin": "Europe/Berlin", "dst-sydney": "Australia/Sydney",
             "dst-nozone": None}  # and "dst-unlisted", who is not in the users table at all
SPARK_ENV = ("SPARK_LOCAL_IP", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")


@pytest.fixture(scope="module")
def spark():
    before = {k: os.environ.get(k) for k in SPARK_ENV}
    session = spark_session("sendtime-tests", master="local[2]", shuffle_partitions=4)
    yield session
    stop_spark(session)  # and the JVM it launched: later tests get the memory back
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _dst_events() -> pd.DataFrame:
    """Sends every 30 minutes across three DST changes, with every kind of outcome."""
    rows = []
    minute = pd.Timedelta(minutes=1)

    def add(uid, mid, kind, ts, flag=None):
        rows.append({"event_id": f"{mid}-{kind}-{len(rows)}", "user_id": uid, "message_id": mid,
                     "event_type": kind, "timestamp": ts, "machine_open": flag, "propensity": None})

    for uid in [*DST_USERS, "dst-unlisted"]:
        i = 0
        for change in DST_CHANGES:
            for k in range(-6, 7):
                send = pd.Timestamp(change) + k * 30 * minute
                mid = f"{uid}-m{i}"
                add(uid, mid, "send", send)
                rows[-1]["propensity"] = 0.25
                kind = i % 7
                if kind == 0:  # unflagged open exactly at the machine window's end: fast; later: slow
                    add(uid, mid, "open", send + 10 * minute)
                    add(uid, mid, "open", send + 180 * minute)
                elif kind == 1:  # one second past the window: slow
                    add(uid, mid, "open", send + 10 * minute + pd.Timedelta(seconds=1))
                elif kind == 2:
                    add(uid, mid, "open", send + minute, True)
                    add(uid, mid, "open", send + 120 * minute, False)
                elif kind == 3:
                    add(uid, mid, "open", send + 25 * minute, False)
                    add(uid, mid, "click", send + 40 * minute)
                    add(uid, mid, "click", send + 30 * minute)
                elif kind == 4:
                    add(uid, mid, "bounce", send + minute)
                elif kind == 6:  # two fast unflagged opens (the first counts), a flagged human open
                    add(uid, mid, "open", send + 5 * minute)
                    add(uid, mid, "open", send + 2 * minute)
                    add(uid, mid, "open", send + 20 * 60 * minute, False)
                i += 1
    ev = pd.DataFrame(rows)
    ev["timestamp"] = pd.to_datetime(ev["timestamp"], utc=True).astype("datetime64[us, UTC]")
    ev["machine_open"] = ev["machine_open"].astype("boolean")
    ev["propensity"] = ev["propensity"].astype("float64")
    return ev


@pytest.fixture(scope="module")
def mixed_world(world_dir, tmp_path_factory):
    """The tiny world plus the DST events; some users with no time zone or not in the users table,
    a third of the opens without a machine flag. Written as Parquet: (events path, users path)."""
    raw = pd.read_parquet(world_dir / "events.parquet")
    raw["machine_open"] = raw["machine_open"].astype("boolean")
    opens = np.flatnonzero((raw["event_type"] == "open").to_numpy())
    raw.loc[raw.index[opens[::3]], "machine_open"] = pd.NA
    ev = pd.concat([raw, _dst_events()], ignore_index=True)
    users = pd.read_parquet(world_dir / "users.parquet")
    users["timezone"] = users["timezone"].astype(object)
    users.loc[users.index[1::10], "timezone"] = None
    users = users.drop(index=users.index[::10])  # their sends stay: default zone
    extra = pd.DataFrame({"user_id": list(DST_USERS), "timezone": list(DST_USERS.values()),
                          "segment": "dst", "signup_at": pd.Timestamp("2026-01-01", tz="UTC")})
    users = pd.concat([users, extra], ignore_index=True)
    out = tmp_path_factory.mktemp("spark_world")
    ev.to_parquet(out / "events.parquet", index=False)
    users.to_parquet(out / "users.parquet", index=False)
    return out / "events.parquet", out / "users.parquet"


@pytest.fixture(scope="module")
def accepted(mixed_world):
    events_path, users_path = mixed_world
    ev = read_events(events_path)
    assert ev.n_rejected == 0, ev.reasons()  # clean input: parity is about definitions, not rejects
    us = read_users(users_path).accepted
    assert us["timezone"].isna().sum() > 10 and len(us) > 300
    return ev.accepted, us


def _assert_same_messages(spark_msgs: pd.DataFrame, pandas_msgs: pd.DataFrame) -> None:
    assert list(spark_msgs.columns) == list(MESSAGE_COLUMNS) == list(pandas_msgs.columns)
    assert (spark_msgs.dtypes == pandas_msgs.dtypes).all(), (spark_msgs.dtypes, pandas_msgs.dtypes)
    a = spark_msgs.sort_values("message_id", kind="stable").reset_index(drop=True)
    b = pandas_msgs.sort_values("message_id", kind="stable").reset_index(drop=True)
    for c in TIME_COLUMNS:
        np.testing.assert_array_equal(a[c].isna().to_numpy(), b[c].isna().to_numpy(), err_msg=c)
    np.testing.assert_array_equal(a["send_how"].to_numpy(), b["send_how"].to_numpy())
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    # and row for row in the embedded engine's order (send time, then the send's position)
    pd.testing.assert_frame_equal(spark_msgs, pandas_msgs, check_exact=True)


@pytest.mark.parametrize("default_tz", [UTC, "America/New_York"])
def test_message_table_is_the_embedded_engines(spark, accepted, default_tz):
    ev, us = accepted
    msgs = build_messages_spark(events_to_spark(spark, ev), users_to_spark(spark, us), default_tz)
    got = messages_to_pandas(msgs)
    want = build_messages(ev, us, default_tz)
    _assert_same_messages(got, want)
    if default_tz == UTC:  # the per-user summary counts the same sends
        agg = user_aggregates_spark(msgs).toPandas().set_index("user_id").sort_index()
        n = want.groupby("user_id").size().sort_index()
        np.testing.assert_array_equal(agg["n_sends"].to_numpy(), n.to_numpy())
        assert list(agg.index) == list(n.index)
    # every outcome kind is exercised, flagged and unflagged
    for c in TIME_COLUMNS[1:]:
        assert got[c].notna().any() and got[c].isna().any(), c
    zones = got.set_index("message_id")["timezone"]
    assert zones["dst-nozone-m0"] == default_tz and zones["dst-unlisted-m0"] == default_tz
    assert zones["dst-sydney-m0"] == "Australia/Sydney"


def test_local_hour_of_week_across_dst_changes(spark, accepted):
    ev, us = accepted
    got = messages_to_pandas(build_messages_spark(events_to_spark(spark, ev), users_to_spark(spark, us), UTC))
    how = got.set_index(["user_id", "send_ts"])["send_how"]

    def at(uid, ts):
        return int(how[(uid, pd.Timestamp(ts))])

    sunday = 6 * 24
    # New York, Sunday Mar 8: 06:30 UTC is 01:30 EST, 07:30 UTC is 03:30 EDT (02:xx never happens)
    assert at("dst-ny", "2026-03-08T06:30Z") == sunday + 1
    assert at("dst-ny", "2026-03-08T07:30Z") == sunday + 3
    # Berlin, Sunday Mar 29: 00:30 UTC is 01:30 CET, 01:30 UTC is 03:30 CEST
    assert at("dst-berlin", "2026-03-29T00:30Z") == sunday + 1
    assert at("dst-berlin", "2026-03-29T01:30Z") == sunday + 3
    # Sydney, Sunday Apr 5: 15:30 UTC is 02:30 AEDT and 16:30 UTC is 02:30 AEST again
    assert at("dst-sydney", "2026-04-04T15:30Z") == sunday + 2
    assert at("dst-sydney", "2026-04-04T16:30Z") == sunday + 2
    # no time zone: the default (UTC) wall clock
    assert at("dst-nozone", "2026-03-08T07:30Z") == sunday + 7


def test_events_read_by_spark_give_the_same_message_table(spark, mixed_world, accepted):
    ev, us = accepted
    events_path, _ = mixed_world
    sev = read_events_spark(spark, events_path)
    assert sev.count() == len(ev)
    got = messages_to_pandas(build_messages_spark(sev, users_to_spark(spark, us), "America/New_York"))
    _assert_same_messages(got, build_messages(ev, us, "America/New_York"))


@pytest.mark.parametrize("as_of, default_tz", [("2026-03-30", "America/New_York"), ("2026-04-13", UTC)])
def test_user_features_are_the_embedded_engines(spark, mixed_world, accepted, as_of, default_tz):
    events_path, users_path = mixed_world
    ev, us = accepted
    cut = pd.Timestamp(as_of, tz="UTC")
    got = build_user_features_spark(spark, events_path, users_path, as_of, default_tz=default_tz)
    want = build_user_features(build_messages(ev.loc[ev["timestamp"] < cut], us, default_tz), us, cut,
                               default_tz=default_tz)
    assert got.as_of == want.as_of and got.horizon == want.horizon
    pd.testing.assert_frame_equal(got.table, want.table, check_exact=False, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got.lam, want.lam, rtol=1e-9, atol=1e-12)
    assert got.prior.decay == pytest.approx(want.prior.decay, rel=1e-12)
    np.testing.assert_allclose(got.prior.lam_pop, want.prior.lam_pop, rtol=1e-9, atol=1e-12)
    assert (got.table["timezone_source"] == "default").sum() > 10
    assert len(got.table) > 300 and (got.table["source"] == "model").sum() > 300


def test_spark_scoring_with_the_registered_champion_equals_full_table(spark, trained):
    from sendtime.serving.model_store import load_scorer
    from sendtime.serving.spark_scoring import score_champion_table

    settings, result = trained
    scorer, _ = load_scorer(settings, serving_table=False)
    want = scorer.full_table()
    got, version = score_champion_table(spark, settings, scorer.features, partitions=3)
    assert version == scorer.model_version == result.champion_version
    assert got.dtype == np.float32 and got.shape == want.shape == (len(scorer.features.table), 168)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_spark_batch_step_reproduces_the_published_snapshot(spark, trained, served_env, world_dir, tmp_path):
    """The spark-submit entry point: features built on Spark, scored on Spark, equal to what the
    nightly run published for the same events and as-of date."""
    from sendtime.serving.spark_scoring import main
    from tests.conftest import assert_batch_output_is_the_snapshot

    _, result = trained
    out = tmp_path / "spark_out"
    assert main(["--events", str(world_dir / "events.parquet"), "--users", str(world_dir / "users.parquet"),
                 "--as-of", "2026-04-13", "--out", str(out), "--master", "local[2]"]) == 0
    assert_batch_output_is_the_snapshot(out, result)


def test_session_binds_loopback_and_workers_run_this_interpreter(spark):
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType

    conf = spark.sparkContext.getConf()
    assert conf.get("spark.driver.host") == "127.0.0.1"
    assert conf.get("spark.driver.bindAddress") == "127.0.0.1"
    assert conf.get("spark.ui.enabled") == "false" and spark.sparkContext.uiWebUrl is None
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert os.environ["SPARK_LOCAL_IP"] == "127.0.0.1"
    assert os.environ["PYSPARK_PYTHON"] == sys.executable
    # every block manager (driver and executors) listens on loopback
    hosts = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().keys().mkString(",").split(",")
    assert hosts and all(h.startswith("127.0.0.1:") for h in hosts), hosts

    @F.udf(StringType())
    def python_of(_):
        import sys as worker_sys

        return worker_sys.executable

    @F.udf(StringType())
    def bound_ip(_):
        import os as worker_os

        return worker_os.environ.get("SPARK_LOCAL_IP", "")

    df = spark.range(4).repartition(2)
    got = df.select(python_of("id").alias("py"), bound_ip("id").alias("ip")).distinct().collect()
    assert {r.py for r in got} == {sys.executable}
    assert {r.ip for r in got} == {"127.0.0.1"}
