"""What a Batch job may be, and the SubmitJob request built from it.

``check_static`` runs when the DAG is parsed (values that are not templated), ``JobSpec.checked`` when the task
runs (every rendered value), so bad input fails before anything is submitted and names the value.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from genomics_steps.names import ENV_NAME, LABEL, SAMPLE_ID, bad_items

from batch_model import MAX_ARRAY_SIZE, MAX_TAGS, tag_value, validate_retry_strategy
from platform_settings import PlatformSettings

MAX_SUBMIT_PAYLOAD = 30 * 1024


def check_static(*, step: str, vcpus: float, memory_mib: int, gpus: int, timeout_seconds: int | None,
                 retry_strategy: dict[str, Any]) -> None:
    """The arguments that are not templated: a wrong DAG fails when it is parsed."""
    LABEL.check("step", step)
    if not (0 < float(vcpus) <= 256):
        raise ValueError(f"vcpus must be in (0, 256], got {vcpus!r}")
    if not (isinstance(memory_mib, int) and memory_mib >= 4):
        raise ValueError(f"memory_mib must be an integer of at least 4, got {memory_mib!r}")
    if not (isinstance(gpus, int) and 0 <= gpus <= 16):
        raise ValueError(f"gpus must be an integer from 0 to 16, got {gpus!r}")
    if timeout_seconds is not None and (not isinstance(timeout_seconds, int) or timeout_seconds < 60):
        raise ValueError(f"timeout_seconds must be an integer of at least 60 (Batch's minimum), got {timeout_seconds!r}")
    validate_retry_strategy(retry_strategy)


@dataclass(frozen=True)
class JobSpec:
    """One job's rendered arguments, checked. ``samples`` is set for an array job only: a one-sample list
    becomes ``sample`` (Batch arrays start at 2 children), so that job is named and tagged after its sample."""

    step: str
    command: list[str]
    project: str
    pipeline: str
    job_definition: str
    queue: str  # the Batch queue (an alias of the settings resolved)
    queue_name: str  # the queue as the DAG or the settings name it
    vcpus: float
    memory_mib: int
    gpus: int = 0
    timeout_seconds: int | None = None
    sample: str | None = None
    samples: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    retry_strategy: dict[str, Any] = field(default_factory=dict)
    reused_from: str = ""  # earlier results the job uses instead of computing them (job facts only)

    @classmethod
    def checked(cls, *, command: Any, project: Any, pipeline: Any, sample: Any, samples: Any, environment: Any,
                tags: Any, **fixed: Any) -> JobSpec:
        """Check the templated values (raising ValueError naming the value) and build the spec."""
        if isinstance(command, str):
            raise ValueError("command must be a list of strings (no shell string): the job runs it as argv")
        if not command or not all(isinstance(c, str) for c in command):
            raise ValueError(f"command must be a non-empty list of strings, got {command!r}")
        LABEL.check("project", project)
        LABEL.check("pipeline", pipeline)
        if not isinstance(environment, dict):
            raise ValueError("environment must be a mapping of names to strings")
        for key, value in environment.items():
            if not ENV_NAME.ok(key) or key.startswith("AWS_BATCH"):
                raise ValueError(f"environment variable name {key!r} is invalid or reserved")
            if not isinstance(value, str):
                raise ValueError(f"environment variable {key} must be a string, got {type(value).__name__}")
        if sample is not None and samples is not None:
            raise ValueError("give either sample or samples, not both")
        if sample is not None:
            SAMPLE_ID.check("sample", sample)
        unit: list[str] = []
        if samples is not None:
            if not isinstance(samples, list) or not samples:
                raise ValueError("samples must be a non-empty list of sample ids")
            if len(samples) > MAX_ARRAY_SIZE:
                raise ValueError(f"an array job takes at most {MAX_ARRAY_SIZE} samples, got {len(samples)}")
            bad = bad_items(SAMPLE_ID, "samples", samples)
            if bad:
                raise ValueError(bad)
            if len(set(samples)) != len(samples):
                raise ValueError("samples contains duplicates")
            unit = list(samples)
        if not isinstance(tags, dict) or any(str(k).lower().startswith("aws:") for k in tags):
            raise ValueError("tags must be a mapping whose keys do not start with 'aws:'")
        if len(unit) == 1:
            sample, unit = unit[0], []
        return cls(command=list(command), project=project, pipeline=pipeline, sample=sample, samples=unit,
                   environment=dict(environment), tags=dict(tags), **fixed)

    def narrowed(self, samples: list[str], memory_mib: int) -> JobSpec:
        """The same job over some of its samples with other memory (an out-of-memory round)."""
        from dataclasses import replace

        if len(samples) == 1:
            return replace(self, sample=samples[0], samples=[], memory_mib=memory_mib)
        return replace(self, sample=None, samples=list(samples), memory_mib=memory_mib)

    @property
    def array_size(self) -> int | None:
        return len(self.samples) or None

    @property
    def label_parts(self) -> list[str]:
        """The readable part of the job's name: a person finds a sample's job in the console by its id."""
        return [self.pipeline, self.step, self.sample or (f"{len(self.samples)}-samples" if self.samples else "")]


def manifest_uri(settings: PlatformSettings, ti: Any, suffix: str = "") -> str:
    """Where an array job's sample list is written: child *i* reads ``samples[i]`` from it. ``suffix`` names
    a later round of the same task (its out-of-memory samples again)."""
    map_index = getattr(ti, "map_index", -1)
    return (f"{settings.lake_root}/manifests/{safe_name(ti.dag_id)}/{safe_name(ti.run_id)}/"
            f"{safe_name(ti.task_id)}{'' if map_index < 0 else f'-{map_index}'}{suffix}.json")


def write_manifest(settings: PlatformSettings, uri: str, samples: list[str]) -> None:
    from hooks.lake import write_text

    write_text(settings, uri, json.dumps({"samples": samples}))


def request_builder(spec: JobSpec, settings: PlatformSettings, ti: Any, manifest_suffix: str = ""):
    """``name -> SubmitJob request`` for ``spec``, writing an array's manifest only when called (a job that is
    reattached needs none)."""

    def build(name: str) -> dict[str, Any]:
        manifest = None
        if spec.samples:
            manifest = manifest_uri(settings, ti, manifest_suffix)
            write_manifest(settings, manifest, spec.samples)
        return build_request(spec, settings, ti, name, manifest)

    return build


def build_request(spec: JobSpec, settings: PlatformSettings, ti: Any, name: str,
                  manifest: str | None = None) -> dict[str, Any]:
    """The SubmitJob request: the step's command with the job's environment, tags and resources."""
    env = {
        "GENOMICS_PROJECT": spec.project,
        "GENOMICS_PIPELINE": spec.pipeline,
        "GENOMICS_STEP": spec.step,
        "GENOMICS_DAG_ID": ti.dag_id,
        "GENOMICS_RUN_ID": ti.run_id,
        "GENOMICS_LAKE_URI": settings.lake_root,
        "GENOMICS_VCPUS": f"{float(spec.vcpus):g}",  # the steps size their tools' threads and memory by
        "GENOMICS_MEMORY_MIB": str(spec.memory_mib),  # these two
    }
    tags = {
        "project": spec.project,
        "pipeline": spec.pipeline,
        "run_id": ti.run_id,
        "step": spec.step,
        "airflow_dag": ti.dag_id,
        "airflow_task": ti.task_id,
    }
    if spec.sample:
        env["GENOMICS_SAMPLE"] = spec.sample
        tags["sample"] = spec.sample
    if manifest:
        env["GENOMICS_MANIFEST_URI"] = manifest
        tags["manifest"] = manifest
    env.update(spec.environment)
    tags.update(spec.tags)
    if len(tags) > MAX_TAGS:
        raise ValueError(f"a Batch job takes at most {MAX_TAGS} tags, this one would have {len(tags)}")
    resources = [
        {"type": "VCPU", "value": f"{float(spec.vcpus):g}"},
        {"type": "MEMORY", "value": str(spec.memory_mib)},
    ]
    if spec.gpus:
        resources.append({"type": "GPU", "value": str(spec.gpus)})
    request: dict[str, Any] = {
        "jobName": name,
        "jobQueue": spec.queue,
        "jobDefinition": spec.job_definition,
        "containerOverrides": {
            "command": list(spec.command),
            "environment": [{"name": k, "value": v} for k, v in sorted(env.items())],
            "resourceRequirements": resources,
        },
        "retryStrategy": spec.retry_strategy,
        "tags": {k: tag_value(v) for k, v in tags.items()},
        "propagateTags": True,
    }
    if spec.timeout_seconds:
        request["timeout"] = {"attemptDurationSeconds": spec.timeout_seconds}
    if spec.samples:
        request["arrayProperties"] = {"size": len(spec.samples)}
    size = len(json.dumps(request))
    if size > MAX_SUBMIT_PAYLOAD:
        raise ValueError(f"the SubmitJob request is {size} bytes; Batch accepts at most {MAX_SUBMIT_PAYLOAD}")
    return request


def safe_name(value: str) -> str:
    """A value as one path segment or file name."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", value)


def truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() in ("true", "1", "yes"))
