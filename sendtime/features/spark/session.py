"""The Spark session sendtime runs on: local or a cluster, loopback-only by default, and a stop that
also ends the JVM (so a test or a nightly leaves no process behind)."""

from __future__ import annotations

import os
import sys
import warnings
from typing import TYPE_CHECKING


if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession


LOOPBACK = "127.0.0.1"


def spark_session(app_name: str = "sendtime", master: str | None = "local[2]",
                  shuffle_partitions: int | None = None, conf: dict[str, str] | None = None) -> "SparkSession":
    """A Spark session set up for sendtime: UTC session time zone, Arrow transfers.

    With a ``local[...]`` master (the default) the session is a private one on this machine: the
    driver binds loopback only (``SPARK_LOCAL_IP``, ``spark.driver.host`` and
    ``spark.driver.bindAddress`` = 127.0.0.1), the web UI is off, and Python workers run this
    interpreter (``PYSPARK_PYTHON`` / ``PYSPARK_DRIVER_PYTHON`` = ``sys.executable``) so they see
    the same installed packages. The environment is set before the JVM starts; a JVM already
    running in this process keeps the settings it was started with.

    With ``master=None`` (under ``spark-submit``) the master, addresses and Python executables
    come from ``spark-submit`` / ``spark-defaults.conf`` and are left alone; only the time zone,
    Arrow and the given ``conf`` are set.

    ``shuffle_partitions`` sets ``spark.sql.shuffle.partitions``; unset, it is 4 for a local
    master (small machines, small data) and Spark's own setting otherwise.
    """
    from pyspark.sql import SparkSession

    # PySpark 4.x warns on every Arrow transfer that pandas 3 is "not yet fully supported"; the
    # conversions used here are checked by tests/features/test_spark.py
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    builder = SparkSession.builder.appName(app_name)
    if master is not None:
        builder = builder.master(master)
    local = master is not None and master.startswith("local")
    if local:
        os.environ["SPARK_LOCAL_IP"] = LOOPBACK
        os.environ["PYSPARK_PYTHON"] = sys.executable
        os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
        builder = (
            builder.config("spark.driver.host", LOOPBACK)
            .config("spark.driver.bindAddress", LOOPBACK)
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.pyspark.python", sys.executable)
            .config("spark.pyspark.driver.python", sys.executable)
        )
    builder = (
        builder.config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.pyspark.fallback.enabled", "false")
    )
    if shuffle_partitions is None and local:
        shuffle_partitions = 4
    if shuffle_partitions is not None:
        builder = builder.config("spark.sql.shuffle.partitions", str(shuffle_partitions))
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    # settings a reused session must still honour
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    if local:
        spark.sparkContext.setLogLevel("ERROR")
    return spark


def stop_spark(spark: "SparkSession", stop_jvm: bool = True) -> None:
    """Stop the session and, with ``stop_jvm``, the local JVM this process launched for it.

    ``SparkSession.stop()`` leaves the py4j gateway's JVM running until the Python process
    exits; closing its stdin ends it (it exits when the pipe closes). A later
    :func:`spark_session` starts a fresh one.
    """
    from pyspark import SparkContext

    spark.stop()
    gateway = SparkContext._gateway
    if not stop_jvm or gateway is None:
        return
    proc = getattr(gateway, "proc", None)
    try:
        gateway.shutdown()
    except Exception:  # noqa: BLE001 - already gone
        pass
    if proc is not None:
        try:
            proc.stdin.close()
            proc.wait(timeout=30)
        except Exception:  # noqa: BLE001 - a JVM that does not exit on EOF
            proc.kill()
            proc.wait(timeout=10)
    SparkContext._gateway = None
    SparkContext._jvm = None
