"""boto3 clients built from Airflow connections, reused within a process for a while.

Every AWS call of the project gets its client here (``aws_client(settings, service, conn_id)``): the backend
switch, the lake, the log reader. It imports nothing else of the project's hooks, so any of them can use it
without forming an import cycle. Tests replace ``aws_client`` on this module to point every caller at moto.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from botocore.config import Config

from platform_settings import PlatformSettings

# Botocore's own retries stay short: throttled SubmitJob calls are retried by submit_within_budget, which
# knows the shared budget, and other calls are retried by their callers' loops.
BOTO_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3})

# Building a client looks the Airflow connection up (a call to the API server from a task) and creates a
# botocore session, which is too slow to do per file when an array job's 500 samples each stage a row.
# botocore clients are thread-safe; credentials from an assumed role refresh themselves, and a changed
# connection is seen once its client is rebuilt.
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
                           config=BOTO_CONFIG)
        client = hook.get_conn()
        _clients[key] = (time.monotonic(), client)
        return client
