"""Buttons on a task in the Airflow UI that open what the task runs on AWS: the Batch job (the array parent for
an array task) and its CloudWatch log stream, the run's FSx file system, the Athena query of a publish.

How Airflow 3.3 shows them: an operator lists BaseOperatorLink objects in ``operator_extra_links``; the DAG
is serialized with each link's name and XCom key, and the API server shows a link whose XCom holds a URL
(no plugin registration is needed). So each link here has an XCom key of its own, and the task pushes the
URL there as soon as it knows it (``persist``): the Batch job's link while the task is still deferred on
the job, the log stream's once the job started. Each time the task leaves the worker (deferred or ended),
Airflow asks ``get_link`` there and stores its answer under the same key: it reads back the URL pushed.

URLs are built from ids the task already has and the region in the platform settings: no network call.
On the local backend there is no console to link to, so nothing is pushed and the UI shows no button; the
task's log says where the job's log is on this machine instead (see ``local_log_note``).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

from platform_settings import PlatformSettings

BATCH_LOG_GROUP = "/aws/batch/job"  # where Batch writes a job's output unless its definition says otherwise


def console(region: str | None) -> str:
    """The AWS console's address for the partition of ``region`` (China and GovCloud have their own)."""
    if region and region.startswith("cn-"):
        return "https://console.amazonaws.cn"
    if region and region.startswith("us-gov-"):
        return "https://console.amazonaws-us-gov.com"
    return "https://console.aws.amazon.com"


def region_of(settings: PlatformSettings) -> str | None:
    """The settings' region, else the one boto3 would take from the environment; None leaves it to the console."""
    return settings.region_name or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


def _query(region: str | None) -> str:
    return f"?region={quote(region, safe='')}" if region else ""


# Ids come from AWS's own answers; each is escaped whole, so no id can change the page a URL opens.
def batch_job_url(region: str | None, job_id: str) -> str:
    return f"{console(region)}/batch/home{_query(region)}#jobs/detail/{quote(job_id, safe='')}"


def log_stream_url(region: str | None, log_stream: str, log_group: str = BATCH_LOG_GROUP) -> str:
    """CloudWatch Logs' page of one stream; the group and stream are escaped whole (their '/' included)."""
    return (f"{console(region)}/cloudwatch/home{_query(region)}#logsV2:log-groups/log-group/"
            f"{quote(log_group, safe='')}/log-events/{quote(log_stream, safe='')}")


def fsx_url(region: str | None, file_system_id: str) -> str:
    return f"{console(region)}/fsx/home{_query(region)}#file-system-details/{quote(file_system_id, safe='')}"


def athena_query_url(region: str | None, query_execution_id: str) -> str:
    return (f"{console(region)}/athena/home{_query(region)}#/query-editor/history/"
            f"{quote(query_execution_id, safe='')}")


class _PersistedLink(BaseOperatorLink):
    """A link whose URL the task pushed to XCom under ``key`` once it knew it."""

    name: ClassVar[str]
    key: ClassVar[str]

    @property
    def xcom_key(self) -> str:
        return self.key

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from airflow.sdk.execution_time.xcom import XCom  # not exported by airflow.sdk in 3.3

        return XCom.get_value(ti_key=ti_key, key=self.key) or ""


class BatchJobLink(_PersistedLink):
    name = "AWS Batch job"
    key = "link_batch_job"


class JobLogLink(_PersistedLink):
    name = "CloudWatch log"
    key = "link_job_log"


class FsxFileSystemLink(_PersistedLink):
    name = "FSx file system"
    key = "link_fsx_file_system"


class AthenaQueryLink(_PersistedLink):
    name = "Athena query"
    key = "link_athena_query"


def persist(ti: Any, link: type[_PersistedLink], settings: PlatformSettings, url_of: Any, *ids: str) -> str | None:
    """Push the URL ``url_of(region, *ids)`` under the link's key, on AWS only; returns it (None locally or when
    an id is missing). The URL is pushed again on a retry, which Airflow's clearing of XComs requires."""
    if settings.backend != "aws" or not all(ids):
        return None
    url = url_of(region_of(settings), *ids)
    ti.xcom_push(key=link.key, value=url)
    return url


def local_log_note(settings: PlatformSettings, job_id: str, log_stream: str) -> str | None:
    """Locally a job's log is a file on this machine, which a browser page cannot open: the task's log names
    it instead (``python -m local_batch.cli status <job id>`` shows the job too)."""
    if settings.backend != "local" or not log_stream:
        return None
    return f"job {job_id} log on this machine: {log_stream}"
