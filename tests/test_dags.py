"""Every DAG imports cleanly and follows the house rules; the demo DAG runs end to end through real Airflow."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The task of each DAG with Params that checks the run config first; every other task runs after it.
CHECKED_BY = {"rnaseq": "plan", "germline": "plan", "regenie_gwas": "plan", "geo_ingestion": "search",
              "batch_events_demo": "sample_list"}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_every_dag_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "batch_events_demo" in dagbag.dags


def test_every_dag_has_tags_an_owner_retries_and_a_description(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, dag_id
        assert dag.doc_md, dag_id
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", (dag_id, task.task_id)
            assert task.retries >= 1, (dag_id, task.task_id)


def test_batch_tasks_submit_through_the_submission_pool(dagbag):
    from operators.batch_job import SUBMIT_POOL

    dag = dagbag.dags["batch_events_demo"]
    batch_tasks = [t for t in dag.tasks if "BatchJobOperator" in type(t).__name__ or
                   getattr(t, "operator_class", None) and "BatchJobOperator" in str(t.operator_class)]
    assert batch_tasks
    assert {t.pool for t in batch_tasks} == {SUBMIT_POOL}
    pools = json.loads((ROOT / "pools.json").read_text())
    assert pools[SUBMIT_POOL]["include_deferred"] is False  # waiting jobs must not hold submission slots


def test_parsing_a_dag_touches_neither_the_backend_nor_the_network(monkeypatch, dagbag):
    from hooks import aws_clients, backend

    def forbidden(*args, **kwargs):
        raise AssertionError("DAG parsing must not create clients")

    monkeypatch.setattr(aws_clients, "aws_client", forbidden)
    monkeypatch.setattr(backend, "batch_api", forbidden)
    monkeypatch.setattr(backend, "job_state_store", forbidden)
    from airflow.dag_processing.dagbag import DagBag

    assert DagBag(dag_folder=str(ROOT / "dags")).import_errors == {}


@pytest.mark.e2e
def test_the_demo_dag_runs_end_to_end_on_the_local_backend(local, dagbag):
    dag = dagbag.dags["batch_events_demo"]
    run = dag.test(run_conf={"samples": ["E1", "E2", "E3"], "reads": 300, "project": "e2e"})
    assert run.state == "success"
    lake = Path(local.local_home) / "lake" / "read_stats" / "project=e2e"
    for sample in ("E1", "E2", "E3"):
        assert json.loads((lake / f"sample={sample}" / "stats.json").read_text())["reads"] == 300

    from hooks import backend

    engine = backend.query_engine(local)
    _, reads = engine.fetch("SELECT sample_id, value FROM qc_metrics WHERE metric = 'reads' ORDER BY 1")
    assert reads == [("E1", 300.0), ("E2", 300.0), ("E3", 300.0)]
    _, jobs = engine.fetch("SELECT sample_id, count(*), min(status), min(runtime_seconds) >= 0 FROM job_runs "
                           "GROUP BY 1 ORDER BY 1")
    assert jobs == [(s, 2, "SUCCEEDED", True) for s in ("E1", "E2", "E3")], "mapped job + array child each"


@pytest.mark.e2e
def test_a_failing_sample_fails_the_run(local, dagbag):
    dag = dagbag.dags["batch_events_demo"]
    for task in dag.tasks:  # no Airflow retry: its five-minute delay would only slow the test down
        if hasattr(task, "partial_kwargs"):
            task.partial_kwargs["retries"] = 0
        else:
            task.retries = 0
    run = dag.test(run_conf={"samples": ["F1", "F2"], "reads": 100, "project": "e2e", "fail_sample": "F2"})
    assert run.state == "failed"
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert states[("read_stats_array", -1)] == "failed"
    assert states[("read_stats_mapped", 0)] == "success"
    assert states[("read_stats_mapped", 1)] == "failed"


def test_every_dag_with_params_names_the_task_that_checks_its_run_config(dagbag):
    assert {dag_id for dag_id, dag in dagbag.dags.items() if dag.params} == set(CHECKED_BY)
    for dag_id, task_id in CHECKED_BY.items():
        dag = dagbag.dags[dag_id]
        others = {t.task_id for t in dag.tasks} - {task_id}
        assert others <= dag.get_task(task_id).get_flat_relative_ids(upstream=False), dag_id


MISSPELT = ({"pipline_version": "2.0"}, "unknown key 'pipline_version'; did you mean 'pipeline_version'?")


@pytest.mark.e2e
@pytest.mark.parametrize("dag_id, conf, message", [
    *[(dag_id, *MISSPELT) for dag_id in sorted(CHECKED_BY)],
    ("regenie_gwas", {}, r"missing input file\(s\)"),  # the local lake holds no cohort
    ("geo_ingestion", {"query": "RNA-seq\x00"}, "control characters"),
])
def test_a_refused_run_config_fails_its_check_on_the_first_try_and_nothing_runs_or_retries(local, dag_id, conf,
                                                                                         message, capfd, caplog):
    from datetime import datetime, timedelta, timezone

    from airflow.dag_processing.dagbag import DagBag
    from local_batch.control_plane import ControlPlane

    dag = DagBag(dag_folder=str(ROOT / "dags" / f"{dag_id}.py")).dags[dag_id]  # its own retries, at once
    for task in dag.tasks:
        if hasattr(task, "partial_kwargs"):
            task.partial_kwargs["retry_delay"] = timedelta(0)
        else:
            task.retry_delay = timedelta(0)
    run = dag.test(logical_date=datetime(2026, 11, 17, tzinfo=timezone.utc), run_conf={"project": "e2e", **conf})
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    checker = tis.pop(CHECKED_BY[dag_id])
    assert run.state == "failed"
    assert (checker.state, checker.try_number) == ("failed", 1)
    assert [ti.task_id for ti in tis.values() if ti.state == "success" or ti.try_number > 1] == []
    assert sum(ControlPlane(local.local_home).counts().values()) == 0
    out, err = capfd.readouterr()
    assert re.search(message, out + err + caplog.text)


@pytest.mark.parametrize("dag_id", ["rnaseq", "germline", "regenie_gwas", "geo_ingestion"])
def test_every_param_of_a_pipeline_has_a_title_and_says_what_to_type(dagbag, dag_id):
    """The trigger form shows each Param's title and description: a person filling it in needs both."""
    for name, param in dagbag.dags[dag_id].params.items():
        assert param.schema.get("title"), f"{dag_id}.{name} has no title"
        assert len(param.description or "") >= 20, f"{dag_id}.{name}: {param.description!r}"
