"""Platform settings: the one place that says which backend runs jobs and what the AWS resources are called.

Resolution order, highest first:
  1. environment variables ``GENOMICS_<FIELD>`` (for example ``GENOMICS_BACKEND=aws``);
  2. the Airflow Variable ``genomics_platform`` holding a JSON object with the same field names
     (``AIRFLOW_VAR_GENOMICS_PLATFORM`` works too, as for any Variable);
  3. the defaults below, which select the embedded local backend.

Settings are resolved inside ``execute()`` and passed to triggers explicitly, never at DAG parse time,
so parsing a DAG needs neither the metadata database nor the network.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

VARIABLE_NAME = "genomics_platform"
ENV_PREFIX = "GENOMICS_"
REPO_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(ValueError):
    """The platform settings are incomplete or inconsistent."""


@dataclass(frozen=True)
class PlatformSettings:
    # "local" runs jobs on this machine; "aws" submits them to AWS Batch.
    backend: str = "local"

    # --- AWS backend -------------------------------------------------------------------------
    aws_conn_id: str | None = "aws_default"
    region_name: str | None = None
    # Job queue used when an operator names none, and aliases operators may use instead of ARNs.
    job_queue: str = "genomics-spot"
    job_queues: dict[str, str] = field(default_factory=dict)
    # SQS queue that the EventBridge rule for "Batch Job State Change" events targets.
    event_queue_url: str | None = None
    # DynamoDB table (partition key "pk", sort key "sk", both strings) holding job state,
    # submission records and the shared SubmitJob rate budget.
    job_state_table: str | None = None
    # DynamoDB table of the sample registry (partition key "project", sort key "sample_id", strings).
    sample_registry_table: str | None = None
    # Root of the data lake: s3://bucket/prefix on AWS, a directory (or file:// URI) locally.
    lake_uri: str | None = None
    # Where published tables live: the Glue database (a DuckDB schema locally), the Athena workgroup and the
    # prefix for Athena's query results (None: the workgroup's own result location is used).
    database: str = "genomics"
    athena_workgroup: str = "primary"
    athena_output_location: str | None = None
    # Capacity type per job queue (name, alias or ARN -> "SPOT" / "ON_DEMAND"), recorded in the job_runs table.
    queue_capacity_types: dict[str, str] = field(default_factory=dict)

    # --- FSx for Lustre: the per-run scratch file systems of GWAS runs ------------------------
    # Subnet and security groups of the file systems (aws); the Batch hosts must reach them (Lustre, TCP 988).
    fsx_subnet_id: str | None = None
    fsx_security_group_ids: list[str] = field(default_factory=list)
    # Where Batch hosts mount a run's file system: <fsx_mount_root>/<file system id> (the launch template).
    fsx_mount_root: str = "/fsx"
    # fsx_sweeper deletes this deployment's file systems older than this even while their run still runs.
    fsx_ttl_hours: float = 48.0
    # Value of the tag "genomics:deployment" on every file system this deployment creates; the sweeper
    # deletes nothing without it.
    deployment: str = "genomics"
    # Airflow connection fsx_sweeper uses (None: aws_conn_id); infra/ gives it a role that can only list file
    # systems and delete this deployment's (the connection's extra {"role_arn": ...}).
    fsx_sweeper_conn_id: str | None = None

    # --- GEO/SRA ingestion ---------------------------------------------------------------------
    # Airflow connection for NCBI E-utilities: login = contact email, password = API key (10 requests/s
    # instead of 3), extra {"tool": "..."}. Optional when ncbi_email is set.
    ncbi_conn_id: str = "ncbi_eutils"
    ncbi_email: str | None = None
    # Local backend: the directory standing in for NCBI GEO and SRA (default <local_home>/ncbi-mirror).
    ncbi_mirror: str | None = None
    # Which pipelines a project's approved samples start (approval_routing): project -> list of "rnaseq" /
    # "germline" ([] for none), e.g. {"geo": ["rnaseq"]}. A project not named here is routed by each sample's
    # SRA library strategy (RNA-Seq -> rnaseq, WGS and WXS -> germline, others -> none).
    pipeline_routes: dict[str, list[str]] = field(default_factory=dict)

    # --- cost per sample (plugins/costs.py, hooks/prices.py) --------------------------------------
    # "api": on-demand prices from the AWS Price List API and Spot prices from the Spot price history;
    # "offline": only include/prices/aws_prices.json (no pricing:GetProducts right needed).
    price_source: str = "api"
    # USD per hour of this machine as the local backend's one instance (0: already paid for).
    local_price_per_hour: float = 0.0

    # --- behaviour shared by both backends ---------------------------------------------------
    # Deployment-wide SubmitJob budget; AWS fixes the quota at 50 per second per account.
    submit_rate_per_second: float = 40.0
    # A waited-on job with no news for this long is checked with a batched DescribeJobs.
    reconcile_after_seconds: float = 600.0
    # How often the shared consumer re-reads the job-state store for waited jobs whose events
    # another triggerer process may have consumed. 0 disables the periodic re-read.
    store_refresh_seconds: float = 30.0
    # Long-poll wait of one receive call on the event queue.
    event_wait_seconds: float = 20.0
    # A deferred task's trigger fires no sooner than this after the deferral. Airflow 3.3's scheduler can
    # fail a try whose trigger fires before it has processed the deferring process's exit
    # (apache/airflow#67287, #72716): a job or query over within seconds (a local job with nothing to do, a
    # quick Athena statement) would cost a failed try and the retry delay. 0 fires at once.
    min_defer_seconds: float = 10.0

    # --- local backend -----------------------------------------------------------------------
    # Directory holding the local control plane, event queue, job-state store, logs and lake.
    local_home: str = str(REPO_ROOT / ".local-platform")
    # Capacity of the local "compute environment"; 0 means what this machine has.
    local_vcpus: int = 0
    local_memory_mib: int = 0
    # Seconds a local stand-in file system stays CREATING before it is AVAILABLE.
    local_fsx_create_seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.backend not in ("local", "aws"):
            raise SettingsError(f"backend must be 'local' or 'aws', got {self.backend!r}")
        if not 2 <= self.submit_rate_per_second <= 50:
            raise SettingsError(
                "submit_rate_per_second must be from 2 to 50: AWS Batch fixes SubmitJob at 50 TPS per account, "
                f"got {self.submit_rate_per_second}"
            )
        if self.fsx_ttl_hours <= 0:
            raise SettingsError("fsx_ttl_hours must be positive")
        if not isinstance(self.fsx_security_group_ids, list):
            raise SettingsError("fsx_security_group_ids must be a list of security group ids")
        if self.price_source not in ("api", "offline"):
            raise SettingsError(f"price_source must be 'api' or 'offline', got {self.price_source!r}")
        if not self.local_price_per_hour >= 0:
            raise SettingsError(f"local_price_per_hour must be 0 or more, got {self.local_price_per_hour!r}")
        if self.reconcile_after_seconds <= 0:
            raise SettingsError("reconcile_after_seconds must be positive")
        if not self.min_defer_seconds >= 0:
            raise SettingsError(f"min_defer_seconds must be 0 or more, got {self.min_defer_seconds!r}")
        from approval_routing import route_problems

        problems = route_problems(self.pipeline_routes)
        if problems:
            raise SettingsError("; ".join(problems))
        if self.backend == "aws":
            missing = [
                name
                for name in ("event_queue_url", "job_state_table", "lake_uri")
                if not getattr(self, name)
            ]
            if missing:
                raise SettingsError(
                    "the aws backend needs " + ", ".join(missing) + f" (set GENOMICS_<NAME> or the "
                    f"{VARIABLE_NAME!r} Airflow Variable; see README 'Deploying: docker-compose and AWS')"
                )

    # ----------------------------------------------------------------------------------------
    @property
    def local_home_path(self) -> Path:
        return Path(self.local_home)

    @property
    def lake_root(self) -> str:
        """The lake as a URI: s3://... on AWS, file:///... locally."""
        if self.lake_uri:
            if "://" in self.lake_uri:
                return self.lake_uri.rstrip("/")
            return Path(self.lake_uri).resolve().as_uri()
        return (self.local_home_path / "lake").resolve().as_uri()

    @property
    def ncbi_mirror_path(self) -> Path | None:
        """The local stand-in for NCBI, on the local backend only; None means the real NCBI."""
        if self.backend != "local":
            return None
        return Path(self.ncbi_mirror) if self.ncbi_mirror else self.local_home_path / "ncbi-mirror"

    @property
    def local_catalog_path(self) -> Path:
        """The local engine's catalog: a DuckDB file whose schema ``database`` holds every published table."""
        return self.local_home_path / "catalog.duckdb"

    def capacity_type(self, queue: str) -> str:
        if self.backend == "local":
            return "LOCAL"
        for name, kind in self.queue_capacity_types.items():
            if queue in (name, self.resolve_queue(name)):
                return kind
        return "UNKNOWN"

    def resolve_queue(self, name: str | None) -> str:
        name = name or self.job_queue
        return self.job_queues.get(name, name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlatformSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SettingsError(f"unknown platform setting(s): {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def resolve(cls, *, use_airflow_variable: bool = True) -> PlatformSettings:
        """Merge defaults, the Airflow Variable and the environment. Call from execute(), not at parse time."""
        merged: dict[str, Any] = {}
        if use_airflow_variable:
            merged.update(_airflow_variable())
        merged.update(_from_environment())
        return cls.from_dict(merged)


def _coerce(name: str, raw: str) -> Any:
    kind = {f.name: f.type for f in fields(PlatformSettings)}[name]
    if "dict" in str(kind):
        value = json.loads(raw)
        if not isinstance(value, dict):
            raise SettingsError(f"{ENV_PREFIX}{name.upper()} must be a JSON object")
        return value
    if "list" in str(kind):  # a JSON array, or comma-separated
        value = json.loads(raw) if raw.strip().startswith("[") else [v.strip() for v in raw.split(",") if v.strip()]
        if not isinstance(value, list):
            raise SettingsError(f"{ENV_PREFIX}{name.upper()} must be a list")
        return value
    if "float" in str(kind):
        return float(raw)
    if "int" in str(kind):
        return int(raw)
    if raw == "" and "None" in str(kind):
        return None
    return raw


def _from_environment() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(PlatformSettings):
        raw = os.environ.get(ENV_PREFIX + f.name.upper())
        if raw is not None:
            try:
                out[f.name] = _coerce(f.name, raw)
            except (ValueError, json.JSONDecodeError) as exc:
                raise SettingsError(f"cannot read {ENV_PREFIX}{f.name.upper()}={raw!r}: {exc}") from exc
    return out


def _airflow_variable() -> dict[str, Any]:
    try:
        from airflow.sdk import Variable

        raw = Variable.get(VARIABLE_NAME, default=None)
    except Exception:  # outside a task context (tests, CLI tools) there is no Variable backend
        return {}
    if raw is None:
        return {}
    value = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(value, dict):
        raise SettingsError(f"Airflow Variable {VARIABLE_NAME!r} must hold a JSON object")
    return value
