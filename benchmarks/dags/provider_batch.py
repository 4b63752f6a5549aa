"""
### Benchmark only: the amazon provider's BatchOperator(deferrable=True)

Per step of rnaseq (fastp, then salmon_quant), one mapped `BatchOperator` per sample, deferred on the provider's `BatchJobTrigger` (DescribeJobs every
`poll_interval`), so benchmarks/scale_airflow.py can run it beside our rnaseq DAG through the same Airflow and
the same simulated Batch. Not part of the project's DAGs (it lives under benchmarks/).
"""

from __future__ import annotations

from datetime import datetime

from airflow.providers.amazon.aws.operators.batch import BatchOperator
from airflow.sdk import Param, dag, task

from batch_model import default_retry_strategy


@dag(
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["benchmark"],
    doc_md=__doc__,
    default_args={"owner": "platform", "retries": 2},
    params={"samples": Param([], type="array", items={"type": "string"})},
)
def provider_batch():
    @task
    def overrides(step: str, params=None) -> list[dict]:
        return [{"command": ["python3", "-m", "genomics_steps.rnaseq", step, "--sample", s]}
                for s in params["samples"]]

    previous = None
    for step in ("fastp", "salmon_quant"):  # the two steps of rnaseq, each one job per sample
        waits = BatchOperator.partial(
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
        ).expand(container_overrides=overrides.override(task_id=f"{step}_overrides")(step))
        if previous is not None:
            previous >> waits
        previous = waits

provider_batch()
