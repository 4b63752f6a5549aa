"""
### FSx sweeper

Every 15 minutes: deletes this deployment's FSx for Lustre file systems (tag `genomics:deployment`) whose
DAG run is no longer queued or running, that failed, or that outlived `fsx_ttl_hours` (default 48), and
returns what it deleted and why (the task's XCom and log). A run's own teardown deletes its file system;
this catches what a teardown cannot (a setup that failed after creating, a run deleted or killed mid-way), so
no orphan lives longer than a sweep interval plus its deletion.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from operators.fsx import FsxSweepOperator

with DAG(
    dag_id="fsx_sweeper",
    schedule=timedelta(minutes=15),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["platform", "fsx"],
    doc_md=__doc__,
    default_args={"owner": "platform", "retries": 1, "retry_delay": timedelta(minutes=2)},
):
    FsxSweepOperator(task_id="sweep")
