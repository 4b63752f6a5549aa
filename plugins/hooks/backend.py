"""The backend switch: builds the Batch API, job-state store, event queue, query engine, sample registry and FSx
file systems for the configured backend.

Operators, sensors and triggers ask here and never branch on the backend themselves. Create these objects
inside execute() or a trigger's run(), never in __init__ or at DAG parse time.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from botocore.config import Config

from hooks.batch_api import AwsBatchApi, BatchApi, LocalBatchApi
from hooks.fsx import AwsFsx, FsxApi, LocalFsx
from hooks.event_queue import EventQueue, LocalEventQueue, SqsEventQueue
from hooks.job_state import DynamoDbJobStateStore, JobStateStore, SqliteJobStateStore
from hooks.sample_registry import DynamoDbSampleRegistry, SampleRegistry, SqliteSampleRegistry
from hooks.query_engine import AthenaQueryEngine, LocalQueryEngine, QueryEngine
from platform_settings import PlatformSettings

# Botocore's own retries stay short: throttled SubmitJob calls are retried by submit_within_budget, which
# knows the shared budget, and other calls are retried by their callers' loops.
_BOTO_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3})


# Clients are reused within a process for a while: building one looks the Airflow connection up (a call to the
# API server from a task) and creates a botocore session, which is too slow to do per file when an array job's
# 500 samples each stage a row. botocore clients are thread-safe; credentials from an assumed role refresh
# themselves, and a changed connection is seen once its client is rebuilt.
CLIENT_REUSE_SECONDS = 600.0
_clients: dict[tuple[Any, ...], tuple[float, Any]] = {}
_clients_lock = threading.Lock()


def aws_client(settings: PlatformSettings, service: str, conn_id: str | None = None) -> Any:
    """A boto3 client with the credentials of the Airflow connection ``conn_id`` (default
    ``settings.aws_conn_id``)."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    conn_id = conn_id or settings.aws_conn_id
    key = (conn_id, service, settings.region_name, os.getpid())
    with _clients_lock:
        cached = _clients.get(key)
        if cached and time.monotonic() - cached[0] < CLIENT_REUSE_SECONDS:
            return cached[1]
        hook = AwsBaseHook(aws_conn_id=conn_id, client_type=service, region_name=settings.region_name,
                           config=_BOTO_CONFIG)
        client = hook.get_conn()
        _clients[key] = (time.monotonic(), client)
        return client


def batch_api(settings: PlatformSettings) -> BatchApi:
    if settings.backend == "aws":
        return AwsBatchApi(aws_client(settings, "batch"))
    return LocalBatchApi(settings.local_home, settings.local_vcpus, settings.local_memory_mib)


def job_state_store(settings: PlatformSettings) -> JobStateStore:
    if settings.backend == "aws":
        return DynamoDbJobStateStore(aws_client(settings, "dynamodb"), settings.job_state_table)
    return SqliteJobStateStore(Path(settings.local_home) / "job_state.sqlite")


def sample_registry(settings: PlatformSettings) -> SampleRegistry:
    if settings.backend == "aws":
        if not settings.sample_registry_table:
            raise ValueError("set sample_registry_table (GENOMICS_SAMPLE_REGISTRY_TABLE) to resolve samples "
                             "from the registry on AWS")
        return DynamoDbSampleRegistry(aws_client(settings, "dynamodb"), settings.sample_registry_table)
    return SqliteSampleRegistry(Path(settings.local_home) / "sample_registry.sqlite")


def fsx(settings: PlatformSettings, conn_id: str | None = None) -> FsxApi:
    if settings.backend == "aws":
        return AwsFsx(aws_client(settings, "fsx", conn_id), subnet_id=settings.fsx_subnet_id,
                      security_group_ids=settings.fsx_security_group_ids, mount_root=settings.fsx_mount_root)
    from hooks import lake

    return LocalFsx(settings.local_home, list_files=lambda prefix: lake.list_files(settings, prefix),
                    create_seconds=settings.local_fsx_create_seconds)


def event_queue(settings: PlatformSettings) -> EventQueue:
    if settings.backend == "aws":
        return SqsEventQueue(aws_client(settings, "sqs"), settings.event_queue_url)
    from local_batch.runner import event_queue_path

    return LocalEventQueue(event_queue_path(Path(settings.local_home)))


def query_engine(settings: PlatformSettings) -> QueryEngine:
    if settings.backend == "aws":
        output = settings.athena_output_location
        return AthenaQueryEngine(aws_client(settings, "athena"), database=settings.database,
                                 workgroup=settings.athena_workgroup, output_location=output)
    return LocalQueryEngine(settings.local_catalog_path, database=settings.database)
