"""Backfills and approvals through a real Airflow: scheduler, dag-processor, triggerer and api-server (the scale
harness's machinery, benchmarks/scale_airflow.py), with the local backend running every job for real (fastp and
salmon on small synthetic samples).

The registry holds approvals on three days. `airflow backfill create` of those days creates three runs, each
processing its day's samples; a version-2.0 backfill of the same days (--reprocess-behavior completed)
processes them again at 2.0 while the 1.0 results stay; repeating it submits no job. Then an approval in
geo_ingestion's review starts rnaseq for the approved samples without anyone triggering it.

One Airflow serves every test of this module, in order (each builds on the lake the one before left).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

UTC = timezone.utc
PROJECT = "bf"
DAYS = [date(2026, 11, 2), date(2026, 11, 3), date(2026, 11, 4)]
APPROVED_ON = {DAYS[0]: ["A1", "A2"], DAYS[1]: ["B1"], DAYS[2]: ["C1"]}
FRAGMENTS = 6000  # 12,000 reads a sample: over rnaseq's default min_reads (10,000), and quick
GEO_DAY = date(2026, 11, 17)  # the synthetic GEO's series of that day: two paired-end samples that pass QC
TERMINAL = {"success", "failed"}


# airflow_local_settings.py of the `airflow backfill create` process: pysqlite's documented recipe for
# transactions that lock the database for writing when they begin (and so wait for other writers, up to the
# connection's timeout, instead of deadlocking with them)
IMMEDIATE_SETTINGS = """
from sqlalchemy import create_engine, event


def create_metadata_engine(sql_alchemy_conn, *, engine_args, connect_args):
    engine = create_engine(sql_alchemy_conn, connect_args={**connect_args, "timeout": 120}, **engine_args,
                           future=True)

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection, record):
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
"""


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    """rnaseq and geo_ingestion on a real Airflow of its own; the lake holds the reference, the reads of the
    approved samples, and the registry their approvals (at noon of each day)."""
    from genomics_steps import synthetic, synthetic_geo
    from hooks import backend
    from local_batch.runner import stop_runner
    from platform_settings import PlatformSettings
    from scale_airflow import Airflow
    from simulated_aws import wait_for

    home = tmp_path_factory.mktemp("backfill-airflow")
    settings = PlatformSettings(backend="local", local_home=str(home / "local-platform"))
    synthetic.write_reference(settings.lake_root, "synthetic-v1")
    registry = backend.sample_registry(settings)
    for day, samples in APPROVED_ON.items():
        for sample in samples:
            r1, r2, _ = synthetic.rnaseq_sample("synthetic-v1", sample, fragments=FRAGMENTS)
            synthetic.write_uri(f"{settings.lake_root}/raw/{PROJECT}/{sample}_R1.fastq.gz", r1)
            synthetic.write_uri(f"{settings.lake_root}/raw/{PROJECT}/{sample}_R2.fastq.gz", r2)
            registry.upsert(PROJECT, sample, "approved", approved_at=datetime(day.year, day.month, day.day, 12,
                                                                              tzinfo=UTC))
    synthetic_geo.write_mirror(settings.ncbi_mirror_path, GEO_DAY, GEO_DAY, fragments=FRAGMENTS)

    # SQLite lets one writer in at a time: on a busy machine the components wait for one another longer than
    # sqlite3's default 5 s. Airflow reads extra connect arguments from an importable dict.
    (home / "sqlite_wait.py").write_text("CONNECT_ARGS = {'timeout': 120}\n")
    (home / "immediate").mkdir()
    (home / "immediate" / "airflow_local_settings.py").write_text(IMMEDIATE_SETTINGS)
    env = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "sqlite_wait.CONNECT_ARGS",
           "PYTHONPATH": os.pathsep.join(str(p) for p in (ROOT / "plugins", ROOT / "dags", ROOT / "include", home)),
           "AIRFLOW__CORE__PARALLELISM": "6"}  # a few task processes at a time: the machine has two cores
    af = Airflow(home, env, ROOT / "dags" / "rnaseq.py")
    (home / "dags" / "geo_ingestion.py").symlink_to(ROOT / "dags" / "geo_ingestion.py")
    af.settings = settings
    try:
        for component in ("api-server", "scheduler", "dag-processor", "triggerer"):
            af.start(component)
        for dag_id in ("rnaseq", "geo_ingestion"):
            wait_for(lambda: _parsed(af, dag_id), 300, 2, f"{dag_id} to be parsed")
        yield af
    finally:
        af.stop()
        stop_runner(settings.local_home)


def _parsed(af, dag_id: str) -> bool:
    try:
        return af.api(f"/api/v2/dags/{dag_id}")["dag_id"] == dag_id
    except OSError:
        return False


def _backfill(af, conf: dict, reprocess: str) -> list[dict]:
    """`airflow backfill create` over DAYS, two runs at a time; waits until its runs end and returns them."""
    from simulated_aws import wait_for

    # SQLite refuses a writer at once (no waiting) when two connections would deadlock: a transaction that
    # read first and writes later meets another component's write. The CLI's transactions therefore take
    # the write lock when they begin (IMMEDIATE_SETTINGS), and the scheduler, the busiest writer, stops while
    # the backfill is created, with no task of ours in flight. PostgreSQL has no such limit.
    wait_for(lambda: not af.db("SELECT count(*) FROM task_instance WHERE state IN ('queued', 'scheduled', "
                               "'running', 'deferred', 'up_for_retry', 'restarting')")[0][0], 600, 3,
             "no task in flight")
    # Airflow refuses a backfill while another of the DAG is open; the scheduler closes one after its runs end
    wait_for(lambda: not af.db("SELECT count(*) FROM backfill WHERE dag_id = 'rnaseq' AND completed_at IS NULL")[0][0],
             600, 3, "the earlier backfill to be completed")
    af.kill("scheduler")
    done = subprocess.run([af.airflow, "backfill", "create", "--dag-id", "rnaseq", "--from-date", str(DAYS[0]),
                           "--to-date", str(DAYS[-1]), "--reprocess-behavior", reprocess, "--max-active-runs", "2",
                           "--dag-run-conf", json.dumps(conf)],
                          env={**af.env, "PYTHONPATH": af.env["PYTHONPATH"] + os.pathsep + str(af.home / "immediate")},
                          capture_output=True, text=True,
                          timeout=300)
    af.start("scheduler")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # backfill runs, like every run, start only while their DAG is unpaused (it is paused when created)
    af.api("/api/v2/dags/rnaseq", {"is_paused": False}, method="PATCH")
    (backfill_id,) = af.db("SELECT max(id) FROM backfill WHERE dag_id = 'rnaseq'")[0]

    def ended() -> list[dict] | None:
        rows = af.db("SELECT dr.run_id, dr.state, dr.data_interval_start, dr.start_date, dr.end_date, dr.conf "
                     "FROM backfill_dag_run b JOIN dag_run dr ON dr.id = b.dag_run_id WHERE b.backfill_id = ? "
                     "ORDER BY dr.data_interval_start", backfill_id)
        runs = [dict(zip(("run_id", "state", "start", "started", "ended", "conf"), row)) for row in rows]
        return runs if len(runs) == len(DAYS) and all(r["state"] in TERMINAL for r in runs) else None

    return wait_for(ended, 1200, 5, f"backfill {backfill_id}'s runs to end")


def _planned(af, run_id: str, key: str = "samples"):
    rows = af.db("SELECT value FROM xcom WHERE dag_id = 'rnaseq' AND run_id = ? AND task_id = 'plan' AND key = ?",
                 run_id, key)
    if not rows:
        return None
    value = rows[0][0]
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def _jobs(af) -> int:
    """Jobs submitted to the local backend so far (an array job counts once)."""
    import sqlite3

    path = Path(af.settings.local_home) / "control_plane.sqlite"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT count(*) FROM jobs WHERE parent_id IS NULL").fetchone()[0]


def _complete(af, version: str, project: str = PROJECT) -> list[str]:
    """The samples whose every rnaseq step wrote its metrics.json under results/rnaseq/<version>/."""
    from genomics_steps import layout
    from hooks import lake

    listing = lake.list_files(af.settings, layout.results_prefix(af.settings.lake_root, "rnaseq", version, project))
    return sorted(layout.completed_samples(listing, ["fastp", "salmon_quant"]))


def _day(run: dict) -> date:
    return datetime.fromisoformat(str(run["start"])).date()


def _most_at_once(runs: list[dict]) -> int:
    spans = [(datetime.fromisoformat(str(r["started"])), datetime.fromisoformat(str(r["ended"]))) for r in runs]
    return max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)


def test_a_backfill_of_three_days_runs_each_days_approved_samples_in_a_run_of_its_own(airflow):
    runs = _backfill(airflow, {"project": PROJECT, "pipeline_version": "1.0"}, "none")
    assert [r["state"] for r in runs] == ["success"] * 3, runs
    assert {_day(r): _planned(airflow, r["run_id"]) for r in runs} == APPROVED_ON
    assert _complete(airflow, "1.0") == ["A1", "A2", "B1", "C1"]
    assert _most_at_once(runs) <= 2, "the backfill's --max-active-runs"


def test_a_version_two_backfill_reprocesses_the_same_days_and_keeps_the_first_versions_results(airflow):
    runs = _backfill(airflow, {"project": PROJECT, "pipeline_version": "2.0"}, "completed")
    assert [r["state"] for r in runs] == ["success"] * 3, runs
    assert all(json.loads(r["conf"])["pipeline_version"] == "2.0" for r in runs)
    assert {_day(r): _planned(airflow, r["run_id"], "todo") for r in runs} == APPROVED_ON, "all run again at 2.0"
    assert _complete(airflow, "2.0") == ["A1", "A2", "B1", "C1"]
    assert _complete(airflow, "1.0") == ["A1", "A2", "B1", "C1"], "1.0's results are still there"


def test_repeating_the_version_two_backfill_submits_no_job(airflow):
    before = _jobs(airflow)
    runs = _backfill(airflow, {"project": PROJECT, "pipeline_version": "2.0"}, "completed")
    assert [r["state"] for r in runs] == ["success"] * 3, runs
    assert {_day(r): _planned(airflow, r["run_id"], "done") for r in runs} == APPROVED_ON
    assert all(_planned(airflow, r["run_id"], "todo") == [] for r in runs)
    assert _jobs(airflow) == before


def test_an_approval_in_geo_ingestion_starts_rnaseq_for_the_approved_samples(airflow):
    from simulated_aws import wait_for

    airflow.api("/api/v2/dags/geo_ingestion", {"is_paused": False}, method="PATCH")
    day_after = datetime(GEO_DAY.year, GEO_DAY.month, GEO_DAY.day, tzinfo=UTC) + timedelta(days=1)
    geo_run = airflow.api("/api/v2/dags/geo_ingestion/dagRuns", {
        "logical_date": day_after.isoformat(), "conf": {"project": "geo", "min_reads": 1000}})["dag_run_id"]

    def answered() -> bool:
        waiting = airflow.db("SELECT map_index FROM task_instance WHERE dag_id = 'geo_ingestion' AND run_id = ? "
                             "AND task_id = 'review' AND state = 'awaiting_input'", geo_run)
        for (map_index,) in waiting:
            airflow.api(f"/api/v2/dags/geo_ingestion/dagRuns/{urllib.parse.quote(geo_run, safe='')}/taskInstances/"
                        f"review/{map_index}/hitlDetails",
                        {"chosen_options": ["Approve"], "params_input": {"reason": "QC fine"}}, method="PATCH")
        state = airflow.db("SELECT state FROM dag_run WHERE run_id = ? AND dag_id = 'geo_ingestion'", geo_run)
        return bool(state) and state[0][0] in TERMINAL

    wait_for(answered, 1200, 3, "geo_ingestion's run to be reviewed and end")
    approved = sorted(s["sample_id"] for s in _registry(airflow).samples("geo", "approved"))
    assert approved == ["GSM132000", "GSM132001", "GSM132002"]  # GSM132002 is single-end: ingested too

    def asset_run() -> list | None:
        rows = airflow.db("SELECT run_id, state FROM dag_run WHERE dag_id = 'rnaseq' AND run_type = "
                          "'asset_triggered'")
        return rows if rows and all(state in TERMINAL for _, state in rows) else None

    ((run_id, state),) = wait_for(asset_run, 1200, 5, "an asset-triggered rnaseq run to end")
    assert state == "success"
    assert _planned(airflow, run_id) == approved and _planned(airflow, run_id, "project") == "geo"
    # GSM132002's 1,500 single-end reads are under min_reads: excluded, recorded, and the run still succeeds
    assert _complete(airflow, "1.0", "geo") == ["GSM132000", "GSM132001"]


def _registry(af):
    from hooks import backend

    return backend.sample_registry(af.settings)
