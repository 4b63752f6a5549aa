"""
### Benchmark only: the amazon provider's BatchOperator(deferrable=True)

The two steps of rnaseq (fastp, then salmon_quant) as the provider runs them, deferred on its `BatchJobTrigger`
(DescribeJobs every `poll_interval`), so benchmarks/scale_airflow.py can run them beside our rnaseq DAG through
the same Airflow and the same simulated Batch:

- `provider_batch`: one mapped `BatchOperator` per sample and step;
- `provider_batch_array`: one `BatchOperator` per step submitting a single array job over every sample (the
  children find their sample in a manifest, as ours do).

Not part of the project's DAGs (it lives under benchmarks/).
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime

from airflow.providers.amazon.aws.operators.batch import BatchOperator
from airflow.sdk import Param, dag, task

from batch_model import default_retry_strategy

STEPS = ("fastp", "salmon_quant")
DAG_ARGS = {
    "schedule": None,
    "start_date": datetime(2026, 1, 1),
    "catchup": False,
    "tags": ["benchmark"],
    "doc_md": __doc__,
    "default_args": {"owner": "platform", "retries": 2},
    "params": {"samples": Param([], type="array", items={"type": "string"})},
}


def _operator(step: str) -> BatchOperator:
    return BatchOperator.partial(
        task_id=step,
        job_name=f"provider-{step}",
        job_queue="genomics-spot",
        job_definition="genomics-rnaseq",
        deferrable=True,
        poll_interval=30,  # the provider's default
        aws_conn_id=None,
        region_name="eu-west-1",
        # the provider sets no retry strategy by default; give it ours so both sides run the same jobs
        retry_strategy=default_retry_strategy(),
        pool="batch_submit",
    )


def _command(step: str) -> list[str]:
    return ["python3", "-m", "genomics_steps.rnaseq", step]


@dag(**DAG_ARGS)
def provider_batch():
    @task
    def overrides(step: str, params=None) -> list[dict]:
        return [{"command": [*_command(step), "--sample", s]} for s in params["samples"]]

    previous = None
    for step in STEPS:
        waits = _operator(step).expand(container_overrides=overrides.override(task_id=f"{step}_overrides")(step))
        if previous is not None:
            previous >> waits
        previous = waits


@dag(**DAG_ARGS)
def provider_batch_array():
    @task
    def array_job(step: str, params=None, run_id=None) -> list[dict]:
        """Write the manifest the children read, and the one array submission's arguments."""
        import boto3

        lake = os.environ["GENOMICS_LAKE_URI"].removeprefix("s3://")
        bucket, _, prefix = lake.partition("/")
        run = re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)
        key = f"{prefix.rstrip('/')}/manifests/provider_batch_array/{run}/{step}.json".lstrip("/")
        boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=json.dumps({"samples": params["samples"]}))
        env = [{"name": "GENOMICS_MANIFEST_URI", "value": f"s3://{bucket}/{key}"}]
        return [{"container_overrides": {"command": _command(step), "environment": env},
                 "array_properties": {"size": len(params["samples"])}}]

    previous = None
    for step in STEPS:
        waits = _operator(step).expand_kwargs(array_job.override(task_id=f"{step}_array")(step))
        if previous is not None:
            previous >> waits
        previous = waits


provider_batch()
provider_batch_array()
