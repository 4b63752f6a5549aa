from __future__ import annotations

import asyncio
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

import boto3
import pytest

from platform_settings import PlatformSettings

REGION = "eu-west-1"
ACCOUNT = "123456789012"
QUEUE_NAME = "genomics-spot"
QUEUE_ARN = f"arn:aws:batch:{REGION}:{ACCOUNT}:job-queue/{QUEUE_NAME}"


@pytest.fixture(scope="session")
def _tests_local_home(tmp_path_factory) -> str:
    """The local platform home of tests that do not make their own: never the developer's .local-platform."""
    return str(tmp_path_factory.mktemp("local-platform"))


@pytest.fixture(autouse=True)
def _no_real_aws(monkeypatch, _tests_local_home):
    """No test may reach AWS: fake credentials, a fixed region, and no platform env from the developer's shell
    (the local backend's home is the tests' own)."""
    for key in list(os.environ):
        if key.startswith(("GENOMICS_", "AWS_ENDPOINT_URL")):  # nor an endpoint an earlier test pointed at
            monkeypatch.delenv(key)
    monkeypatch.setenv("GENOMICS_LOCAL_HOME", _tests_local_home)
    monkeypatch.setenv("GENOMICS_MIN_DEFER_SECONDS", "0")  # see use_settings
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


def use_settings(monkeypatch, settings: PlatformSettings, **changes: Any) -> PlatformSettings:
    """Make PlatformSettings.resolve() return ``settings`` with ``changes`` (through the environment, as in
    production).

    Tests run triggers themselves or through ``dag.test``, with no scheduler whose race the trigger's hold
    (``min_defer_seconds``) guards against: it is 0 here unless a test asks for it. Tests through a real
    scheduler (the e2e and UI tests) keep the default."""
    settings = replace(settings, **{"min_defer_seconds": 0.0, **changes})
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


TEMPLATE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "infra", "genomics.yaml")


def load_template() -> dict[str, Any]:
    """infra/genomics.yaml, with CloudFormation's !Ref/!Sub tags read as Ref/Fn::Sub dicts."""
    from cfnlint.decode import decode

    template, errors = decode(TEMPLATE)
    assert not errors, errors
    return template


def template_resources() -> dict[str, Any]:
    return load_template()["Resources"]


def create_aws_resources(region: str = REGION) -> dict[str, str]:
    """The AWS side as infra/genomics.yaml defines it: the event queue, the rule routing Batch events to it (the
    template's pattern, with this test account's queue), the job-state table (its keys and TTL) and the lake."""
    resources = template_resources()
    sqs = boto3.client("sqs", region_name=region)
    events = boto3.client("events", region_name=region)
    dynamodb = boto3.client("dynamodb", region_name=region)
    s3 = boto3.client("s3", region_name=region)
    queue_url = sqs.create_queue(QueueName="genomics-batch-events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    pattern = resources["BatchStateChangeRule"]["Properties"]["EventPattern"]
    pattern = {**pattern, "detail": {**pattern["detail"], "jobQueue": [QUEUE_ARN]}}
    events.put_rule(Name="genomics-batch-job-state", EventPattern=json.dumps(pattern))
    events.put_targets(Rule="genomics-batch-job-state", Targets=[{"Id": "sqs", "Arn": queue_arn}])
    table = resources["JobStateTable"]["Properties"]
    dynamodb.create_table(TableName="genomics-job-state", KeySchema=table["KeySchema"],
                          AttributeDefinitions=table["AttributeDefinitions"], BillingMode=table["BillingMode"])
    dynamodb.update_time_to_live(TableName="genomics-job-state",
                                 TimeToLiveSpecification=table["TimeToLiveSpecification"])
    s3.create_bucket(Bucket="genomics-lake", CreateBucketConfiguration={"LocationConstraint": region})
    return {"event_queue_url": queue_url, "job_state_table": "genomics-job-state", "lake_uri": "s3://genomics-lake/lake"}


# The Airflow connections of the aws fixture and the IAM role of infra/genomics.yaml each stands for, as
# README's deploy steps set them up: the default connection runs as the Airflow role, fsx_sweeper's as the
# sweeper role (which may only describe and delete file systems).
AWS_CONN = "aws_default"
SWEEPER_CONN = "aws_fsx_sweeper"
CONNECTION_ROLES = {AWS_CONN: "AirflowRole", SWEEPER_CONN: "SweeperRole"}

# Every AWS operation the project's code (plugins/) called in this session's tests, as IAM actions
# ("batch:SubmitJob"), by the connection the code built its client with; tests/test_deploy.py checks each
# against the role that connection stands for.
AWS_CALLS: dict[str | None, set[str]] = defaultdict(set)


def _fsx_action(name: str) -> str:
    return "fsx:" + "".join(part.title() for part in name.split("_"))


class _RecordingFsx:
    """Records the FSx operations called on the lifecycle double (it is not a botocore client)."""

    def __init__(self, inner: Any, conn_id: str | None):
        self._inner = inner
        self._calls = AWS_CALLS[conn_id]

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name == "get_paginator":
            return lambda operation: (self._calls.add(_fsx_action(operation)), attr(operation))[1]
        if callable(attr) and not name.startswith("_"):
            self._calls.add(_fsx_action(name))
        return attr


def recording(client: Any, conn_id: str | None) -> Any:
    prefix, calls = client.meta.service_model.signing_name, AWS_CALLS[conn_id]
    # before-parameter-build: every call passes it, also those the Batch simulation answers at before-call
    client.meta.events.register("before-parameter-build", lambda model, **_: calls.add(f"{prefix}:{model.name}"))
    return client


@pytest.fixture
def aws(monkeypatch):
    from moto import mock_aws

    from tests.doubles.fsx_lifecycle import FsxLifecycle
    from tests.doubles.simulated_batch import SimulatedBatch
    from hooks import aws_clients

    with mock_aws():
        names = create_aws_resources()
        settings = use_settings(
            monkeypatch,
            PlatformSettings(
                backend="aws",
                aws_conn_id=AWS_CONN,
                fsx_sweeper_conn_id=SWEEPER_CONN,
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

        def client(_settings, service, conn_id=None):
            conn_id = conn_id or _settings.aws_conn_id  # as aws_clients.aws_client picks the connection
            if service == "fsx":
                return _RecordingFsx(fsx, conn_id)
            c = recording(boto3.client(service, region_name=REGION), conn_id)
            return sim.attach(c) if service == "batch" else c

        monkeypatch.setattr(aws_clients, "aws_client", client)
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


ROLE_CHECK = "test_the_role_of_each_connection_allows"


def pytest_collection_modifyitems(items):
    """The role check reads what every aws-path test called, so it runs after them."""
    last = [i for i in items if i.name.startswith(ROLE_CHECK)]
    items[:] = [i for i in items if i not in last] + last
