"""An Airflow DAG for the sendtime nightly run (Airflow 2.6+; copy into your dags/ folder).

It calls the same `sendtime nightly` as cron and systemd, for the DAG run's logical date, and
honours its exit codes: 0 success (including "already done for this date"), 5 skipped (another
run holds the lock, so nothing is published twice), anything else fails the task; Airflow's
retries cover 4 (tracking store unavailable).
"""

from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator

SENDTIME = "/srv/sendtime/.venv/bin/sendtime"

with DAG(
    dag_id="sendtime_nightly",
    schedule="15 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=15)},
    tags=["sendtime"],
) as dag:
    BashOperator(
        task_id="nightly",
        bash_command=(
            f"{SENDTIME} nightly --events /data/sendtime/events --users /data/sendtime/users.parquet"
            " --as-of {{ data_interval_end | ds }}"
        ),
        env={"SENDTIME_HOME": "/var/lib/sendtime"},
        append_env=True,
        skip_on_exit_code=5,
        execution_timeout=timedelta(hours=3),
    )
