"""The message table on Apache Spark: the same definitions as ``sendtime.features.messages``, at cluster scale.

The embedded engine (pandas) reads every event into one process. This module does the
event-scale work, billions of event rows reduced to one row per sent message, with PySpark, so it
runs on a cluster; the per-user features are then computed from the collected message table by
the one shared function, :func:`sendtime.features.engagement.build_user_features`. The message table is
what every downstream feature is computed from, so it is the parity contract between the two
engines: :func:`build_messages_spark` returns the same columns, values and row order as
:func:`sendtime.features.messages.build_messages` (``tests/features/test_spark.py`` checks it, around DST changes
and for users with no time zone too).

The events go through the input contract on the cluster too (:func:`check_events_spark`): the
same accepted rows, the same rejects by global source row and the same reasons as the pandas
reference, :func:`sendtime.features.contract.validate_events`, and a rejects file with the DuckDB engine's
text (``tests/features/test_spark_contract.py``). Dirty or degenerate input never raises;
:func:`messages_spark` returns an empty message table when nothing is left.

One module per job: ``session`` (the Spark session and the JVM's end), ``contract`` (reading
and judging the events), ``messages`` (the message table), ``user_features`` and ``step`` (the
nightly's engine step, reached through :mod:`sendtime.features.engines`).

PySpark is an optional dependency (``pip install 'sendtime[spark]'``); no module imports it at
import time, and nothing outside the engine door and the Spark batch job imports this package.
"""

from sendtime.features.messages import MESSAGE_COLUMNS, TIME_COLUMNS, empty_messages
from sendtime.features.spark.contract import (
    EventFiles,
    SparkEvents,
    check_events_spark,
    event_files,
    read_events_spark,
    write_rejects_spark,
)
from sendtime.features.spark.messages import build_messages_spark, events_to_spark, messages_to_pandas, users_to_spark
from sendtime.features.spark.session import LOOPBACK, spark_session, stop_spark
from sendtime.features.spark.step import messages_spark
from sendtime.features.spark.user_features import build_user_features_spark, user_aggregates_spark

__all__ = [
    "LOOPBACK", "MESSAGE_COLUMNS", "TIME_COLUMNS", "EventFiles", "SparkEvents", "build_messages_spark",
    "build_user_features_spark", "check_events_spark", "empty_messages", "event_files", "events_to_spark",
    "messages_spark", "messages_to_pandas", "read_events_spark", "spark_session", "stop_spark",
    "user_aggregates_spark", "users_to_spark", "write_rejects_spark",
]
