"""The scale harness (benchmarks/scale_airflow.py) kept honest at a small size: rnaseq through a real scheduler,
dag-processor, triggerer and api-server on the aws backend, against moto's server and the simulated Batch.
With every fault injected at once, each sample still ends SUCCEEDED and no job is submitted twice."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))


def _args(**overrides) -> argparse.Namespace:
    defaults = {"samples": 12, "fan_out": "mapped", "dag": "rnaseq", "tick": 0.5, "timeout": 600, "seed": 5}
    return argparse.Namespace(**{**defaults, **overrides})


def test_rnaseq_through_real_airflow_skips_what_is_done_and_submits_the_rest_once():
    from scale_airflow import run_once

    result = run_once(_args(), done_fraction=0.5, faults={})
    assert result["per_sample_tis"] == {"total": 12, "open": 0, "success": 12}, result  # 6 samples x 2 steps
    assert result["submit_job"] == 12 and result["duplicate_job_names"] == 0
    assert result["work_items"] == {"SUCCEEDED": 12}
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
    assert result["work_items"] == {"SUCCEEDED": 24}, result
    assert result["duplicate_job_names"] == 0, result
    assert result["submit_throttled"] > 0 and result["events_dropped"] > 0 and result["spot_retries"] > 0, result
    assert result["triggerer_kills"] == 1 and result["workers_killed"] == 1, result
