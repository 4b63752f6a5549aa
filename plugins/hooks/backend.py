"""The backend switch: builds the Batch API, job-state store, event queue, query engine, sample registry and FSx
file systems for the configured backend.

Operators, sensors and triggers ask here and never branch on the backend themselves. Create these objects
inside execute() or a trigger's run(), never in __init__ or at DAG parse time.
"""

from __future__ import annotations

from pathlib import Path

from hooks import aws_clients, lake
from hooks.batch_api import AwsBatchApi, BatchApi, LocalBatchApi
from hooks.fsx import AwsFsx, FsxApi, LocalFsx
from hooks.event_queue import EventQueue, LocalEventQueue, SqsEventQueue
from hooks.job_state import DynamoDbJobStateStore, JobStateStore, SqliteJobStateStore
from hooks.sample_registry import DynamoDbSampleRegistry, SampleRegistry, SqliteSampleRegistry
from hooks.query_engine import AthenaQueryEngine, LocalQueryEngine, QueryEngine
from platform_settings import PlatformSettings


def batch_api(settings: PlatformSettings) -> BatchApi:
    if settings.backend == "aws":
        return AwsBatchApi(aws_clients.aws_client(settings, "batch"))
    return LocalBatchApi(settings.local_home, settings.local_vcpus, settings.local_memory_mib)


def job_state_store(settings: PlatformSettings) -> JobStateStore:
    if settings.backend == "aws":
        return DynamoDbJobStateStore(aws_clients.aws_client(settings, "dynamodb"), settings.job_state_table)
    return SqliteJobStateStore(Path(settings.local_home) / "job_state.sqlite")


def sample_registry(settings: PlatformSettings) -> SampleRegistry:
    if settings.backend == "aws":
        if not settings.sample_registry_table:
            raise ValueError("set sample_registry_table (GENOMICS_SAMPLE_REGISTRY_TABLE) to resolve samples "
                             "from the registry on AWS")
        return DynamoDbSampleRegistry(aws_clients.aws_client(settings, "dynamodb"), settings.sample_registry_table)
    return SqliteSampleRegistry(Path(settings.local_home) / "sample_registry.sqlite")


def fsx(settings: PlatformSettings, conn_id: str | None = None) -> FsxApi:
    if settings.backend == "aws":
        return AwsFsx(aws_clients.aws_client(settings, "fsx", conn_id), subnet_id=settings.fsx_subnet_id,
                      security_group_ids=settings.fsx_security_group_ids, mount_root=settings.fsx_mount_root)
    return LocalFsx(settings.local_home, list_files=lambda prefix: lake.list_files(settings, prefix),
                    create_seconds=settings.local_fsx_create_seconds)


def event_queue(settings: PlatformSettings) -> EventQueue:
    if settings.backend == "aws":
        return SqsEventQueue(aws_clients.aws_client(settings, "sqs"), settings.event_queue_url)
    from local_batch.runner import event_queue_path

    return LocalEventQueue(event_queue_path(Path(settings.local_home)))


def query_engine(settings: PlatformSettings) -> QueryEngine:
    if settings.backend == "aws":
        output = settings.athena_output_location
        return AthenaQueryEngine(aws_clients.aws_client(settings, "athena"), database=settings.database,
                                 workgroup=settings.athena_workgroup, output_location=output)
    return LocalQueryEngine(settings.local_catalog_path, database=settings.database)
