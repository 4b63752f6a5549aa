"""The scale harness (benchmarks/scale_airflow.py) kept honest at a small size: rnaseq through a real scheduler,
dag-processor, triggerer and api-server on the aws backend, against moto's server and the simulated Batch.
With every fault injected at once, each sample still ends SUCCEEDED and no job is submitted twice. With one bad
sample among twelve (array fan-out), the others complete, the bad one is recorded failed at fastp, and the run
fails only at its verdict, naming it."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))


def _restored_environment():
    before = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(before)


# The harness points this process's AWS endpoint at its moto server (simulated_aws.start); later tests must not
# inherit an endpoint that no longer answers: not after a test, and not after the module's shared run either.
_own_environment = pytest.fixture(autouse=True)(_restored_environment)
_own_module_environment = pytest.fixture(autouse=True, scope="module")(_restored_environment)


def _args(**overrides) -> argparse.Namespace:
    defaults = {"samples": 12, "fan_out": "mapped", "dag": "rnaseq", "tick": 0.5, "timeout": 600, "seed": 5,
                "bad_samples": 0.0}
    return argparse.Namespace(**{**defaults, **overrides})


def test_rnaseq_through_real_airflow_skips_what_is_done_and_submits_the_rest_once():
    from scale_airflow import run_once

    result = run_once(_args(), done_fraction=0.5, faults={})
    assert result["per_sample_tis"] == {"total": 12, "open": 0, "success": 12}, result  # 6 samples x 2 steps
    # 6 samples x 2 steps, and the run's merge (count matrices) and multiqc (its report)
    assert result["submit_job"] == 12 + 2 and result["duplicate_job_names"] == 0
    assert result["work_items"] == {"SUCCEEDED": 12 + 2}  # and the merge and multiqc jobs
    # events, not polling: DescribeJobs is only the safety net for a job silent past the (compressed, 30 s)
    # reconcile interval, which a loaded machine can reach for a few jobs
    assert result["describe_jobs"] <= result["submit_job"] // 4, result
    # the jobs' states came through the SQS queue (counted by moto's own process), and the plan decided what
    # was done from listings per prefix, not a request per sample
    assert result["sqs_receive"] > 0 and 0 < result["s3_list"] < 12, result


def test_every_fault_at_once_leaves_every_sample_right_and_no_job_twice():
    from scale_airflow import FAULTS, run_once

    # Spot at 50% here: at 10% of 24 jobs, no reclaim at all would happen in one run of twelve or so
    result = run_once(_args(), done_fraction=0.0, faults={**FAULTS, "spot_fraction": 0.5, "_kill_triggerer": 1})
    assert result["per_sample_tis"]["success"] == 24 and result["per_sample_tis"]["open"] == 0, result
    # and the run's multiqc job; no merge: the simulated jobs write no results, so no sample is complete in the
    # lake and there are no matrices to build (the first test's run has six complete samples, and merges)
    assert result["work_items"] == {"SUCCEEDED": 24 + 1}, result
    assert result["duplicate_job_names"] == 0, result
    assert result["submit_throttled"] > 0 and result["events_dropped"] > 0 and result["spot_retries"] > 0, result
    assert result["triggerer_kills"] == 1 and result["workers_killed"] == 1, result


@pytest.fixture(scope="module")
def one_bad_sample() -> dict:
    """Twelve samples in one array per step; one of them (seeded) fails fastp at every attempt."""
    from scale_airflow import run_once

    result = run_once(_args(fan_out="array", bad_samples=1 / 12, instances=4), done_fraction=0.0, faults={})
    assert len(result["bad_samples"]) == 1, result
    return result


def test_a_bad_sample_fails_at_fastp_and_the_other_eleven_complete(one_bad_sample):
    result = one_bad_sample
    assert result["samples_failed_at"] == {"fastp": 1}, result
    assert result["samples_complete"] == 11, result
    assert result["work_items_per_step"]["salmon_quant"] == 11, result  # the bad sample goes no further


def test_what_the_jobs_ran_on_is_looked_up_once_per_instance_not_per_job(one_bad_sample):
    # 23 jobs (array children) on 4 container instances: one batched lookup when the first step's array ends,
    # and at most one more for the second step's if it met an instance the first never used
    lookups = one_bad_sample["instance_lookups"]
    assert 1 <= lookups["ecs:DescribeContainerInstances"] <= 2, lookups
    assert lookups["ec2:DescribeInstances"] == lookups["ecs:DescribeContainerInstances"], lookups


def test_no_sample_that_succeeded_is_submitted_again(one_bad_sample):
    result = one_bad_sample
    assert result["sample_reruns"] == 0, result
    # no merge: no sample is complete in the lake (the simulated jobs write no results), so no matrices
    assert result["jobs_per_step"] == {"fastp": 1, "salmon_quant": 1, "multiqc": 1}, result


def test_the_run_fails_only_at_its_verdict_which_names_the_bad_sample(one_bad_sample):
    result, (bad,) = one_bad_sample, one_bad_sample["bad_samples"]
    assert result["run_state"] == "failed", result
    others = {state for task, states in result["tasks"].items() if task != "verdict" for state in states}
    assert result["tasks"]["verdict"] == {"failed": 1} and others <= {"success", "skipped"}, result
    assert f"{bad} (at fastp)" in result["verdict_error"], result


def test_the_outcomes_task_records_the_failure_with_its_reason_and_log(one_bad_sample):
    result, (bad,) = one_bad_sample, one_bad_sample["bad_samples"]
    assert result["outcomes_failed"] == {bad: "fastp"} and not result["outcomes_stopped"], result
    assert result["sample_outcomes_staged"] == {"fastp failed": 1, "fastp succeeded": 11,
                                                "salmon_quant not_run": 1, "salmon_quant succeeded": 11}, result
    (row,) = result["sample_outcomes_failed_rows"]
    assert row["sample"] == bad and row["step"] == "fastp", row
    assert "exit code 1" in row["reason"], row
    assert row["log"].startswith("CloudWatch Logs group /aws/batch/job, stream "), row
