from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field, replace
from typing import Any

import boto3
import pytest

from platform_settings import PlatformSettings

REGION = "eu-west-1"
ACCOUNT = "123456789012"
QUEUE_NAME = "genomics-spot"
QUEUE_ARN = f"arn:aws:batch:{REGION}:{ACCOUNT}:job-queue/{QUEUE_NAME}"


@pytest.fixture(autouse=True)
def _no_real_aws(monkeypatch):
    """No test may reach AWS: fake credentials, a fixed region, and no platform env from the developer's shell."""
    for key in list(os.environ):
        if key.startswith("GENOMICS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


def use_settings(monkeypatch, settings: PlatformSettings, **changes: Any) -> PlatformSettings:
    """Make PlatformSettings.resolve() return ``settings`` with ``changes`` (through the environment, as in
    production)."""
    settings = replace(settings, **changes)
    for key, value in settings.to_dict().items():
        env = "GENOMICS_" + key.upper()
        if value is None:
            monkeypatch.setenv(env, "")  # empty means None for optional settings
        elif isinstance(value, (dict, list)):
            monkeypatch.setenv(env, json.dumps(value))
        else:
            monkeypatch.setenv(env, str(value))
    return settings


# --- AWS path: moto for SQS, EventBridge, DynamoDB, S3; the simulation for Batch -------------------------
@dataclass
class AwsWorld:
    settings: PlatformSettings
    sim: Any
    sqs: Any
    dynamodb: Any
    events: Any
    s3: Any
    fsx: Any = None
    clients: list = field(default_factory=list)

    def queue_depth(self) -> int:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.settings.event_queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def create_aws_resources(region: str = REGION) -> dict[str, str]:
    """What the README says the AWS side must provide: the event queue, the rule routing Batch events to it,
    the job-state table and the lake bucket."""
    sqs = boto3.client("sqs", region_name=region)
    events = boto3.client("events", region_name=region)
    dynamodb = boto3.client("dynamodb", region_name=region)
    s3 = boto3.client("s3", region_name=region)
    queue_url = sqs.create_queue(QueueName="genomics-batch-events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(
        Name="genomics-batch-job-state",
        EventPattern=json.dumps(
            {
                "source": ["aws.batch"],
                "detail-type": ["Batch Job State Change"],
                "detail": {"jobQueue": [QUEUE_ARN], "status": ["RUNNING", "SUCCEEDED", "FAILED"]},
            }
        ),
    )
    events.put_targets(Rule="genomics-batch-job-state", Targets=[{"Id": "sqs", "Arn": queue_arn}])
    dynamodb.create_table(
        TableName="genomics-job-state",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    s3.create_bucket(Bucket="genomics-lake", CreateBucketConfiguration={"LocationConstraint": region})
    return {"event_queue_url": queue_url, "job_state_table": "genomics-job-state", "lake_uri": "s3://genomics-lake/lake"}


@pytest.fixture
def aws(monkeypatch):
    from moto import mock_aws

    from tests.doubles.fsx_lifecycle import FsxLifecycle
    from tests.doubles.simulated_batch import SimulatedBatch
    from hooks import backend

    with mock_aws():
        names = create_aws_resources()
        settings = use_settings(
            monkeypatch,
            PlatformSettings(
                backend="aws",
                aws_conn_id=None,
                region_name=REGION,
                event_wait_seconds=0.05,
                store_refresh_seconds=0.5,
                reconcile_after_seconds=600,
                submit_rate_per_second=50,
                fsx_subnet_id="subnet-0123456789abcdef0",
                fsx_security_group_ids=["sg-0123456789abcdef0"],
                **names,
            ),
        )
        sim = SimulatedBatch(boto3.client("events", region_name=REGION), region=REGION, account=ACCOUNT)
        fsx = FsxLifecycle(boto3.client("fsx", region_name=REGION))

        def client(_settings, service):
            if service == "fsx":
                return fsx
            c = boto3.client(service, region_name=REGION)
            return sim.attach(c) if service == "batch" else c

        monkeypatch.setattr(backend, "aws_client", client)
        yield AwsWorld(
            settings=settings,
            sim=sim,
            sqs=boto3.client("sqs", region_name=REGION),
            dynamodb=boto3.client("dynamodb", region_name=REGION),
            events=boto3.client("events", region_name=REGION),
            s3=boto3.client("s3", region_name=REGION),
            fsx=fsx,
        )


# --- local path: real processes under a temporary local home ---------------------------------------------
@pytest.fixture
def local(monkeypatch, tmp_path):
    from local_batch.runner import stop_runner

    home = tmp_path / "platform"
    settings = use_settings(
        monkeypatch,
        PlatformSettings(
            backend="local", local_home=str(home), event_wait_seconds=0.1, store_refresh_seconds=0.5,
            reconcile_after_seconds=600,
        ),
    )
    monkeypatch.setenv("GENOMICS_LOCAL_RUNNER_IDLE_SECONDS", "30")
    yield settings
    stop_runner(home)


# --- Airflow task-instance stand-ins for operator tests ---------------------------------------------------
class FakeTI:
    def __init__(self, dag_id="pipeline", run_id="manual__2026-11-20T10:00:00+00:00", task_id="align",
                 map_index=-1, try_number=1):
        self.dag_id, self.run_id, self.task_id = dag_id, run_id, task_id
        self.map_index, self.try_number = map_index, try_number
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key, value):
        self.xcom[key] = value


def task_context(**ti_kwargs) -> dict[str, Any]:
    ti = FakeTI(**ti_kwargs)
    return {"ti": ti, "task_instance": ti, "run_id": ti.run_id}


async def first_event(trigger, timeout: float = 30.0):
    """Run a trigger the way the triggerer does and return its first event's payload."""
    agen = trigger.run()
    try:
        event = await asyncio.wait_for(agen.__anext__(), timeout)
        return event.payload
    finally:
        await agen.aclose()
