"""Per-sample outcomes: one bad sample never blocks the others or the run's results (issue: flow-cell scale).

Unit tests of how a run settles its outcome from the staged rows, then the pipelines end to end on the local
backend with real tools and a corrupt sample.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_compat import AirflowFailException
from genomics_steps import synthetic
from run_outcomes import settle, verdict

STEPS = ["fastp", "salmon_quant"]
LAKE = "s3://lake/g"
PREFIX = "s3://lake/g/staging/sample_outcomes/rnaseq/rkey/project=P1/"
RESULTS = "s3://lake/g/results/rnaseq/1.0/project=P1/"


def _settle(staged: list[str], complete: list[str], todo: list[str], samples: list[str] | None = None, **params):
    listings = {PREFIX: staged,
                RESULTS: [f"sample={s}/{step}/metrics.json" for s in complete for step in STEPS]}
    written: list[tuple[str, dict]] = []
    result = settle(steps=STEPS, pipeline="rnaseq", planned={"project": "P1", "samples": samples or todo, "todo": todo},
                    params={"pipeline_version": "1.0", **params}, run_id="r", lake_root=LAKE,
                    list_files=lambda prefix: listings.get(prefix, []), outcome_prefix=PREFIX,
                    stage=lambda step, rows: written.extend((step, row) for row in rows))
    return result, {(row["sample"], step): (row["outcome"], row["reason"]) for step, row in written}


def test_a_failed_sample_is_named_its_later_steps_are_not_run_and_the_rest_is_published():
    staged = ["sample_id=A/fastp-succeeded-j1.tsv", "sample_id=A/salmon_quant-succeeded-j2.tsv",
              "sample_id=B/fastp-failed-j3.tsv"]
    result, written = _settle(staged, complete=["A"], todo=["A", "B"], max_failed_fraction=1.0)
    assert result["publish"] == ["A"] and result["failed"] == {"B": "fastp"} and not result["stopped"]
    assert written == {("B", "salmon_quant"): ("not_run", "failed at fastp")}
    assert result["job_units"] == ["A", "B"] and result["outcome_units"] == ["A", "B"]


def test_an_excluded_sample_does_not_fail_the_run():
    staged = ["sample_id=A/fastp-succeeded-j1.tsv", "sample_id=A/salmon_quant-succeeded-j2.tsv",
              "sample_id=B/fastp-excluded-j3.tsv"]
    result, written = _settle(staged, complete=["A"], todo=["A", "B"])
    assert result["excluded"] == {"B": "fastp"} and not result["failed"]
    assert written == {("B", "salmon_quant"): ("not_run", "excluded at fastp")}
    assert "1 excluded by QC gates: B" in verdict(result)


def test_a_later_generation_that_succeeded_wins_over_an_earlier_failure():
    staged = ["sample_id=A/fastp-failed-j1.tsv", "sample_id=A/fastp-succeeded-j2.tsv",
              "sample_id=A/salmon_quant-succeeded-j3.tsv"]
    result, written = _settle(staged, complete=["A"], todo=["A"])
    assert result["publish"] == ["A"] and not result["failed"] and written == {}


def test_a_step_that_recorded_nothing_counts_as_failed_with_the_reason():
    result, written = _settle([], complete=[], todo=["A"], max_failed_fraction=1.0)
    assert result["failed"] == {"A": "fastp"}
    assert written[("A", "fastp")][0] == "failed" and "no outcome recorded" in written[("A", "fastp")][1]
    assert written[("A", "salmon_quant")][0] == "not_run"
    assert result["job_units"] == [], "no job ran for it: it has no job_runs rows to publish"


def test_settling_again_after_a_rerun_counts_only_jobs_as_having_run():
    """The outcomes task may run twice (cleared); the rows it staged itself are not a job's."""
    result, _ = _settle(["sample_id=A/fastp-failed-none.tsv", "sample_id=A/salmon_quant-not_run-none.tsv"],
                        complete=[], todo=["A"], max_failed_fraction=1.0)
    assert result["failed"] == {"A": "fastp"} and result["job_units"] == []


def test_samples_done_before_are_published_with_this_runs():
    result, _ = _settle(["sample_id=B/fastp-succeeded-j.tsv", "sample_id=B/salmon_quant-succeeded-k.tsv"],
                        complete=["A", "B"], todo=["B"], samples=["A", "B"])
    assert result["publish"] == ["A", "B"]


@pytest.mark.parametrize("params, stopped", [
    ({}, "over max_failed_fraction 0.1"),  # 1 of 2 failed: 50%
    ({"max_failed_fraction": 0.5}, ""),
    ({"max_failed_fraction": 1.0, "on_sample_failure": "stop"}, "on_sample_failure is stop"),
])
def test_the_failure_policy_stops_before_publishing(params, stopped):
    staged = ["sample_id=A/fastp-succeeded-j1.tsv", "sample_id=A/salmon_quant-succeeded-j2.tsv",
              "sample_id=B/fastp-failed-j3.tsv"]
    result, _ = _settle(staged, complete=["A"], todo=["A", "B"], **params)
    assert (stopped in result["stopped"]) if stopped else not result["stopped"]
    assert result["publish"] == ([] if stopped else ["A"])


def test_the_verdict_fails_the_run_naming_the_failed_samples_and_the_stop():
    with pytest.raises(AirflowFailException, match=r"(?s)stopped before publishing: x.*1 sample\(s\) failed: B \(at fastp\)"):
        verdict({"failed": {"B": "fastp"}, "excluded": {}, "stopped": "x", "publish": []})
    with pytest.raises(AirflowFailException, match="outcomes task failed"):
        verdict(None)
    assert verdict({"failed": {}, "excluded": {}, "stopped": "", "publish": ["A"]}) == "1 sample(s) published"


# --- end to end: real tools on the local backend ---------------------------------------------------------
@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(Path(__file__).resolve().parents[1] / "dags"))


def _corrupt(local, sample: str) -> None:
    raw = Path(local.local_home) / "lake/raw/e2e"
    raw.mkdir(parents=True, exist_ok=True)
    for mate in ("R1", "R2"):  # not gzip at all, as after a broken upload
        (raw / f"{sample}_{mate}.fastq.gz").write_bytes(b"@read1\nACGT\n+\nIIII\n")


def _fetch(local, sql: str) -> list[tuple]:
    from hooks import backend

    return backend.query_engine(local).fetch(sql)[1]


@pytest.mark.e2e
def test_a_corrupt_and_a_tiny_sample_in_array_units_stop_alone_and_a_rerun_runs_only_them(local, dagbag,
                                                                                           monkeypatch):
    import job_facts
    import pipeline_plan
    from hooks import lake
    from tests.test_pipelines import _no_retries, _synthetic

    good = ["G1", "G2", "G3", "G4", "G5"]
    _synthetic(local, "rnaseq", good)
    _corrupt(local, "BAD")
    tiny = synthetic.rnaseq_sample("synthetic-v1", "TINY", fragments=25)  # 50 reads: under min_reads
    for mate, body in zip(("R1", "R2"), tiny[:2]):
        (Path(local.local_home) / f"lake/raw/e2e/TINY_{mate}.fastq.gz").write_bytes(body)
    monkeypatch.setattr(pipeline_plan, "ARRAY_CHUNK", 4)  # two units: [G1, BAD, G2, TINY] and [G3, G4, G5]
    dag = dagbag.dags["rnaseq"]
    _no_retries(dag)
    conf = {"project": "e2e", "samples": ["G1", "BAD", "G2", "TINY", "G3", "G4", "G5"],
            "reference": "synthetic-v1", "fan_out": "array", "max_failed_fraction": 0.5}

    run = dag.test(run_conf=conf)
    assert run.state == "failed"
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert {s for (task, _), s in states.items() if task.startswith("per_sample.")} == {"success"}, \
        "a unit with some samples left succeeds and goes on"
    assert states[("verdict", -1)] == "failed"
    for table in ("transcript_quant", "gene_quant"):
        assert [s for (s,) in _fetch(local, f"SELECT DISTINCT sample_id FROM {table} ORDER BY 1")] == good
    outcomes = {(s, step): (outcome, reason, tail) for s, step, outcome, reason, tail in _fetch(
        local, "SELECT sample_id, step, outcome, reason, log_tail FROM sample_outcomes")}
    assert outcomes[("BAD", "fastp")][0] == "failed"
    assert "igzip: Error invalid gzip header" in outcomes[("BAD", "fastp")][2], "the tool's own error, queryable"
    assert outcomes[("TINY", "fastp")][:2] == (
        "excluded", "the number of reads passing fastp's filters is 50, below min_reads 10000")
    assert outcomes[("BAD", "salmon_quant")][0] == outcomes[("TINY", "salmon_quant")][0] == "not_run"
    assert {outcomes[(s, step)][0] for s in good for step in STEPS} == {"succeeded"}
    assert len(outcomes) == 14, "one row per sample and step"

    rerun = dag.test(run_conf=conf)
    assert rerun.state == "failed"
    prefix = job_facts.outcome_prefix(local, "rnaseq", rerun.run_id, "e2e")
    ran_again = {job_facts.parse_outcome_file(p)[0] for p in lake.list_files(local, prefix)}
    assert ran_again == {"BAD", "TINY"}, "no sample that completed is run again"


def _complete(op, context, timeout=90):
    """Run a BatchJobOperator through its deferrals to the end, as the triggerer and a worker would."""
    import asyncio

    from airflow.sdk.exceptions import TaskDeferred

    from tests.conftest import first_event

    try:
        op.execute(context)
        raise AssertionError("the operator should have deferred")
    except TaskDeferred as deferred:
        trigger = deferred.trigger
    while True:
        event = asyncio.run(first_event(trigger, timeout=timeout))
        try:
            return op.execute_complete(context, event)
        except TaskDeferred as deferred:  # another round
            trigger = deferred.trigger


# Child 0 (and a one-sample job) grows past 256 MiB unless it was given at least 400 MiB: a real OOM kill.
HOG = ("import os, time\n"
       "big = os.environ.get('AWS_BATCH_JOB_ARRAY_INDEX', '0') == '0' and int(os.environ['GENOMICS_MEMORY_MIB']) < 400\n"
       "x = bytearray(450 * 1024 * 1024) if big else b''\n"
       "time.sleep(4 if big else 0)\n")


def test_only_the_samples_that_ran_out_of_memory_run_again_with_twice_the_memory(local):
    import sys

    import job_facts
    from hooks import lake
    from operators.batch_job import BatchJobOperator
    from tests.conftest import task_context

    op = BatchJobOperator(task_id="grow", step="grow", project="demo", pipeline="demo", samples=["A", "B"],
                          command=[sys.executable, "-c", HOG], memory_mib=256, per_sample_outcomes=True,
                          retry_strategy={"attempts": 1})
    context = task_context(task_id="grow")
    summary = _complete(op, context)
    assert sorted(summary["survivors"]) == ["A", "B"]
    assert summary["status"] == "SUCCEEDED" and summary["sample"] == "A", "the last round ran A alone"

    prefix = job_facts.outcome_prefix(local, "demo", context["ti"].run_id, "demo")
    rows = sorted(job_facts.parse_outcome_file(p) for p in lake.list_files(local, prefix))
    assert rows == [("A", "grow", "failed"), ("A", "grow", "succeeded"), ("B", "grow", "succeeded")]
    staged = {p: lake.read_head(local, prefix + p).decode() for p in lake.list_files(local, prefix)}
    column = job_facts.OUTCOME_COLUMNS.index("memory_mib")
    memory = {(p.split("/")[0], "failed" in p): int(text.splitlines()[1].split("\t")[column])
              for p, text in staged.items()}
    assert memory == {("sample_id=A", True): 256, ("sample_id=A", False): 512, ("sample_id=B", False): 256}


def test_out_of_memory_stops_growing_at_the_ceiling(local):
    import sys

    from airflow.sdk.exceptions import AirflowException

    from operators.batch_job import BatchJobOperator
    from tests.conftest import task_context

    op = BatchJobOperator(task_id="grow", step="grow", project="demo", pipeline="demo", samples=["A"],
                          command=[sys.executable, "-c", HOG], memory_mib=256, max_memory_mib=256,
                          per_sample_outcomes=True, retry_strategy={"attempts": 1})
    with pytest.raises(AirflowException, match="out of memory: it exceeded its memory_mib=256"):
        _complete(op, task_context(task_id="grow"))


def test_the_verdict_names_the_runs_report_whether_the_run_passed_or_failed():
    report = "file:///lake/reports/rnaseq/1.0/project=P/run-1234abcd/multiqc_report.html"
    passed = {"failed": {}, "excluded": {"B": "fastp"}, "stopped": "", "publish": ["A"], "report": report}
    assert verdict(passed).endswith(f"; run report: {report}")
    with pytest.raises(AirflowFailException, match="run report: file:///lake/reports/rnaseq"):
        verdict({**passed, "failed": {"C": "salmon_quant"}})
