"""The published 168-slot score table, scored on Apache Spark with the registered champion.

The same table :meth:`sendtime.serving.scoring.Scorer.full_table` computes in one process (P(human open)
of every known user at every local hour-of-week), with the work spread over a cluster:

1. the feature snapshot's per-user rows (the ``USER_FEATURE_NAMES`` values and the user's
   168-slot activity profile) become a Spark DataFrame, partitioned by user;
2. each partition builds its model input rows with the shared
   :meth:`sendtime.features.engagement.UserFeatures.model_frame` (``mapInPandas``), so the rows are the
   ones training and the service build;
3. the champion is applied as an MLflow Spark UDF (``mlflow.pyfunc.spark_udf`` on
   ``models:/<name>@champion``), its input columns taken from the registered signature as
   :func:`sendtime.serving.model_store.load_champion` does;
4. the scores come back to the driver as a (users x 168) float32 array in snapshot row order,
   ready for ``scores.npy``.

The model is logged with ``pyfunc_predict_fn="predict_proba"``, so its pyfunc output has two
columns, P(no open) and P(open). ``spark_udf(..., result_type="double")`` would return the left
one; this module asks for ``array<double>`` and takes element 1, the probability
``Scorer.full_table`` publishes.

PySpark is an optional dependency (``pip install 'sendtime[spark]'``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sendtime.features.definitions import USER_FEATURE_NAMES
from sendtime.features.engagement import UserFeatures
from sendtime.features.profiles import PopulationPrior
from sendtime.features.spark import build_user_features_spark, spark_session
from sendtime.serving.model_store import champion_profile_params
from sendtime.serving.snapshots import NotReady, write_snapshot
from sendtime.settings import TELEMETRY_OFF, Settings

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

SLOTS = 168
#: Users whose 168 model rows are built and scored together in a Python worker (168 x this rows).
USERS_PER_BATCH = 500


@dataclass
class ChampionUDF:
    """The champion as a Spark UDF: call ``udf(struct(*columns))`` to get [P(no open), P(open)]."""

    udf: Any
    model_uri: str
    model_version: str
    input_columns: list[str]


def champion_udf(spark: "SparkSession", tracking_uri: str, registry_uri: str, model_name: str,
                 alias: str = "champion") -> ChampionUDF:
    """Load ``models:/<model_name>@<alias>`` from the registry as a Spark UDF.

    ``env_manager="local"``: executors use their installed Python environment (the project
    wheel and its pinned dependencies, see docs/spark.md) rather than building one per model.
    """
    import mlflow
    from mlflow import MlflowClient
    from pyspark.sql.types import ArrayType, DoubleType

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri)
    try:
        mv = MlflowClient().get_model_version_by_alias(model_name, alias)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise NotReady(f"no '{alias}' version of model {model_name!r} in the registry: {first}") from None
    uri = f"models:/{model_name}@{alias}"
    info = mlflow.models.get_model_info(uri)
    if info.signature is None:
        raise NotReady(f"model {model_name} v{mv.version} has no signature")
    columns = info.signature.inputs.input_names()
    udf = mlflow.pyfunc.spark_udf(spark, uri, result_type=ArrayType(DoubleType()), env_manager="local")
    return ChampionUDF(udf=udf, model_uri=uri, model_version=str(mv.version), input_columns=list(columns))


def _lam_dtype(features: UserFeatures) -> np.dtype:
    """Profiles travel in their own precision (float32 when loaded from a snapshot), so the
    executors' ``model_frame`` does exactly the arithmetic the driver's would."""
    return np.dtype(np.float32) if np.asarray(features.lam).dtype == np.float32 else np.dtype(np.float64)


def features_to_spark(spark: "SparkSession", features: UserFeatures, partitions: int | None = None) -> "DataFrame":
    """One row per snapshot user: ``_row`` (snapshot row), the user features, ``lam`` (168 rates)."""
    from pyspark.sql import types as T

    n = len(features.table)
    lam_dtype = _lam_dtype(features)
    schema = T.StructType(
        [T.StructField("_row", T.LongType(), False)]
        + [T.StructField(c, T.FloatType()) for c in USER_FEATURE_NAMES]
        + [T.StructField("lam", T.ArrayType(T.FloatType() if lam_dtype == np.float32 else T.DoubleType(),
                                            containsNull=False))]
    )
    pdf = pd.DataFrame({"_row": np.arange(n, dtype=np.int64)})
    for c in USER_FEATURE_NAMES:
        pdf[c] = features.table[c].to_numpy(dtype=np.float32)
    pdf["lam"] = list(np.asarray(features.lam, dtype=lam_dtype))
    sdf = spark.createDataFrame(pdf, schema=schema)
    if partitions is None:
        partitions = max(1, min(spark.sparkContext.defaultParallelism, -(-n // USERS_PER_BATCH)))
    return sdf.repartition(partitions, "_row")


def model_rows_spark(features_sdf: "DataFrame", features: UserFeatures, columns: list[str]) -> "DataFrame":
    """Every user x every slot as model input rows (``_row``, ``_how``, ``columns``), built on the
    executors by :meth:`UserFeatures.model_frame`."""
    from pyspark.sql import types as T

    schema = T.StructType(
        [T.StructField("_row", T.LongType(), False), T.StructField("_how", T.ShortType(), False)]
        + [T.StructField(c, T.FloatType()) for c in columns]
    )
    # model_frame reads the user columns, the profiles, the prior's decay and the horizon: ship
    # only those to the executors
    prior = PopulationPrior(decay=float(features.prior.decay), lam_pop=np.asarray(features.prior.lam_pop))
    as_of, horizon, columns = features.as_of, int(features.horizon), list(columns)
    lam_dtype = _lam_dtype(features)
    user_cols = list(USER_FEATURE_NAMES)

    def build(batches):
        for b in batches:
            for s in range(0, len(b), USERS_PER_BATCH):
                part = b.iloc[s:s + USERS_PER_BATCH]
                k = len(part)
                if k == 0:
                    continue
                uf = UserFeatures(as_of=as_of, table=part[user_cols].reset_index(drop=True),
                                  lam=np.stack(part["lam"].to_numpy()).astype(lam_dtype),
                                  prior=prior, horizon=horizon)
                rows = np.repeat(np.arange(k), SLOTS)
                how = np.tile(np.arange(SLOTS), k)
                X = uf.model_frame(rows, how)[columns]
                X.insert(0, "_how", how.astype(np.int16))
                X.insert(0, "_row", part["_row"].to_numpy(dtype=np.int64)[rows])
                yield X

    return features_sdf.mapInPandas(build, schema=schema)


def score_table_spark(spark: "SparkSession", features: UserFeatures, champion: ChampionUDF,
                      partitions: int | None = None) -> np.ndarray:
    """P(open) of all 168 slots for every user of ``features``: (users, 168) float32, snapshot
    row order, equal to ``Scorer.full_table()`` with the same model."""
    from pyspark.sql import functions as F

    n = len(features.table)
    out = np.full((n, SLOTS), np.nan, dtype=np.float32)
    if n == 0:
        return out
    rows = model_rows_spark(features_to_spark(spark, features, partitions), features, champion.input_columns)
    scored = rows.select(
        "_row", "_how",
        champion.udf(F.struct(*[F.col(c) for c in champion.input_columns])).getItem(1).alias("p"),
    ).toPandas()
    r = scored["_row"].to_numpy(dtype=np.int64)
    h = scored["_how"].to_numpy(dtype=np.int64)
    if len(scored) != n * SLOTS:
        raise RuntimeError(f"Spark scoring returned {len(scored):,} scores for {n:,} users x {SLOTS} slots")
    # float64 from the model, rounded to float32 here as Scorer.full_table does
    out[r, h] = scored["p"].to_numpy(dtype=np.float64).astype(np.float32)
    if np.isnan(out).any():
        raise RuntimeError("Spark scoring left some (user, slot) pairs unscored")
    return out


def score_champion_table(spark: "SparkSession", settings, features: UserFeatures,
                         partitions: int | None = None) -> tuple[np.ndarray, str]:
    """(score table, champion version) with the champion of ``settings``' registry."""
    champ = champion_udf(spark, settings.tracking_uri, settings.registry_uri, settings.model_name)
    return score_table_spark(spark, features, champ, partitions), champ.model_version


# --------------------------------------------------------------------------- spark-submit entry point


def run_batch(spark: "SparkSession", settings, events_path, users_path, as_of, out_dir) -> dict:
    """The nightly feature build and score table on Spark, written to ``out_dir``.

    ``out_dir/features`` (the snapshot: table, profiles, prior; ``sendtime.features.store`` format),
    ``out_dir/scores.npy`` (users x 168 float32, snapshot row order) and
    ``out_dir/manifest.json`` (as-of, model name and version). Nothing is published: moving
    ``published/CURRENT`` stays with the nightly run.
    """
    from pathlib import Path

    out = Path(out_dir)
    as_of = pd.Timestamp(as_of)
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
    uf = build_user_features_spark(spark, events_path, users_path, as_of,
                                   params=champion_profile_params(settings),
                                   default_tz=settings.default_timezone)
    table, version = score_champion_table(spark, settings, uf)
    manifest = {"as_of": as_of.isoformat(), "model_name": settings.model_name, "model_version": version,
                "users": int(len(uf.table)), "engine": "spark"}
    write_snapshot(out, features=uf, scores=table, manifest=manifest)
    return manifest


def main(argv: list[str] | None = None) -> int:
    """``spark-submit serving/spark_scoring.py --events E --users U --as-of D --out DIR``."""
    import argparse
    import os

    ap = argparse.ArgumentParser(
        prog="spark_scoring",
        description="Build user features on Spark and score every user's 168 weekly slots with the "
                    "registered champion (MLflow settings from the environment, as `sendtime nightly`).")
    ap.add_argument("--events", required=True, help="events Parquet file or folder (any Hadoop path Spark reads)")
    ap.add_argument("--users", required=True, help="users Parquet/CSV file, read on the driver")
    ap.add_argument("--as-of", required=True, help="cutoff date, e.g. 2026-04-13 (events at or after it are not used)")
    ap.add_argument("--out", required=True, help="folder for features/, scores.npy and manifest.json (driver filesystem)")
    ap.add_argument("--master", default=None,
                    help="Spark master for a run without spark-submit, e.g. local[2] (default: spark-submit's)")
    ap.add_argument("--shuffle-partitions", type=int, default=None, help="spark.sql.shuffle.partitions")
    args = ap.parse_args(argv)
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    settings = Settings.from_env()
    spark = spark_session("sendtime-nightly-spark", master=args.master, shuffle_partitions=args.shuffle_partitions)
    manifest = run_batch(spark, settings, args.events, args.users, args.as_of, args.out)
    print(f"scored {manifest['users']:,} users x {SLOTS} slots with {manifest['model_name']} "
          f"v{manifest['model_version']} as of {manifest['as_of']}: {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover - spark-submit entry point
    raise SystemExit(main())
