"""BatchJobOperator: submit one AWS Batch job (or one array job over a list of samples) and wait for it on
events, deferred, holding neither a worker slot nor a pool slot.

What it does beyond the amazon provider's BatchOperator:
- an Airflow retry reattaches to the job the earlier try submitted instead of submitting a second one
  (a submission record per task instance, and a lookup by deterministic job name for a try that died between
  SubmitJob and writing that record); only a job that itself FAILED is submitted again, as a new generation;
- SubmitJob goes through the ``batch_submit`` pool and a deployment-wide rate budget (default 40 TPS), and a
  throttled call waits and tries again instead of failing the task;
- waiting is on "Batch Job State Change" events through BatchJobEventTrigger: no DescribeJobs polling.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow_compat import AirflowException

from batch_model import (
    MAX_ARRAY_SIZE,
    MAX_TAGS,
    JobState,
    completion_event,
    default_retry_strategy,
    idempotency_key,
    job_name,
    tag_value,
    validate_retry_strategy,
)
from genomics_steps.names import ENV_NAME, LABEL, SAMPLE_ID, bad_items
from platform_settings import PlatformSettings

SUBMIT_POOL = "batch_submit"
MAX_SUBMIT_PAYLOAD = 30 * 1024
LOG_TAILS = 3  # failed jobs whose log ends are quoted in the task's failure message


class BatchJobOperator(BaseOperator):
    """Run one step as an AWS Batch job (per sample, or as an array job over ``samples``).

    :param step: name of the pipeline step (letters, digits, ``_.-``); part of the job name and tags.
    :param command: the container command, a list of strings. Templated.
    :param project: project the job belongs to (cost allocation tag). Templated.
    :param pipeline: pipeline name (tag and job name). Templated.
    :param job_definition: Batch job definition (name, name:revision or ARN). Templated.
    :param job_queue: job queue name, ARN, or an alias from the platform settings; default the settings'
        ``job_queue``. Templated.
    :param sample: run for this one sample (tag ``sample``, env ``GENOMICS_SAMPLE``). Templated.
    :param samples: run one array job over these samples: child *i* processes ``samples[i]``, found through
        the manifest at ``GENOMICS_MANIFEST_URI`` and ``AWS_BATCH_JOB_ARRAY_INDEX``. Templated.
    :param vcpus, memory_mib, gpus: resources of one job (one child for arrays).
    :param timeout_seconds: per attempt (per child); at least 60. A timed-out attempt is not retried.
    :param environment: extra environment variables. Templated.
    :param retry_strategy: Batch retryStrategy; default: 3 attempts, retry Spot reclaims ("Host EC2*"),
        exit on anything else.
    :param tags: extra tags (the operator adds project, pipeline, run_id, step, sample or manifest). Templated.
    :param rerun_succeeded: if False (default) a new try of a task whose job already SUCCEEDED reuses that job's
        result; set True (for example from a ``force`` param) to submit it again.
    :param terminate_on_kill: terminate the job when the task is killed or marked failed.
    :param reused_from: URI of earlier results the job uses instead of computing them (a GWAS run's step 1
        predictions), recorded in its job_runs row beside the job definition. Templated.
    """

    template_fields: Sequence[str] = (
        "command",
        "project",
        "pipeline",
        "job_definition",
        "job_queue",
        "sample",
        "samples",
        "environment",
        "tags",
        "rerun_succeeded",
        "reused_from",
    )
    ui_color = "#f3e5d0"

    def __init__(
        self,
        *,
        step: str,
        command: list[str] | str,
        project: str,
        pipeline: str,
        job_definition: str = "genomics-step",
        job_queue: str | None = None,
        sample: str | None = None,
        samples: list[str] | str | None = None,
        vcpus: float = 1,
        memory_mib: int = 2048,
        gpus: int = 0,
        timeout_seconds: int | None = None,
        environment: dict[str, str] | None = None,
        retry_strategy: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        rerun_succeeded: bool | str = False,
        terminate_on_kill: bool = True,
        reused_from: str = "",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("pool", SUBMIT_POOL)
        super().__init__(**kwargs)
        self.step = step
        self.command = command
        self.project = project
        self.pipeline = pipeline
        self.job_definition = job_definition
        self.job_queue = job_queue
        self.sample = sample
        self.samples = samples
        self.vcpus = vcpus
        self.memory_mib = memory_mib
        self.gpus = gpus
        self.timeout_seconds = timeout_seconds
        self.environment = environment or {}
        self.retry_strategy = retry_strategy or default_retry_strategy()
        self.tags = tags or {}
        self.rerun_succeeded = rerun_succeeded
        self.terminate_on_kill = terminate_on_kill
        self.reused_from = reused_from
        self.job_id: str | None = None
        # What does not depend on templates is checked now, so a wrong DAG fails at parse time.
        self._validate_static()

    @classmethod
    def partial(cls, **kwargs: Any):  # type: ignore[override]
        """Mapped Batch tasks submit through the same pool: ``partial()`` does not run ``__init__``."""
        kwargs.setdefault("pool", SUBMIT_POOL)
        return super().partial(**kwargs)

    # --- validation: everything is checked before anything is submitted ---------------------------
    def _validate_static(self) -> None:
        LABEL.check("step", self.step)
        if not (0 < float(self.vcpus) <= 256):
            raise ValueError(f"vcpus must be in (0, 256], got {self.vcpus!r}")
        if not (isinstance(self.memory_mib, int) and self.memory_mib >= 4):
            raise ValueError(f"memory_mib must be an integer of at least 4, got {self.memory_mib!r}")
        if not (isinstance(self.gpus, int) and 0 <= self.gpus <= 16):
            raise ValueError(f"gpus must be an integer from 0 to 16, got {self.gpus!r}")
        if self.timeout_seconds is not None and (not isinstance(self.timeout_seconds, int) or self.timeout_seconds < 60):
            raise ValueError(f"timeout_seconds must be an integer of at least 60 (Batch's minimum), got {self.timeout_seconds!r}")
        validate_retry_strategy(self.retry_strategy)

    def _validate_rendered(self) -> list[str]:
        """Check templated values; return the samples of an array job ([] for a single job)."""
        if isinstance(self.command, str):
            raise ValueError("command must be a list of strings (no shell string): the job runs it as argv")
        if not self.command or not all(isinstance(c, str) for c in self.command):
            raise ValueError(f"command must be a non-empty list of strings, got {self.command!r}")
        for name in ("project", "pipeline"):
            LABEL.check(name, getattr(self, name))
        if not isinstance(self.environment, dict):
            raise ValueError("environment must be a mapping of names to strings")
        for key, value in self.environment.items():
            if not ENV_NAME.ok(key) or key.startswith("AWS_BATCH"):
                raise ValueError(f"environment variable name {key!r} is invalid or reserved")
            if not isinstance(value, str):
                raise ValueError(f"environment variable {key} must be a string, got {type(value).__name__}")
        if self.sample is not None and self.samples is not None:
            raise ValueError("give either sample or samples, not both")
        if self.sample is not None:
            SAMPLE_ID.check("sample", self.sample)
        samples: list[str] = []
        if self.samples is not None:
            if not isinstance(self.samples, list) or not self.samples:
                raise ValueError("samples must be a non-empty list of sample ids")
            if len(self.samples) > MAX_ARRAY_SIZE:
                raise ValueError(f"an array job takes at most {MAX_ARRAY_SIZE} samples, got {len(self.samples)}")
            bad = bad_items(SAMPLE_ID, "samples", self.samples)
            if bad:
                raise ValueError(bad)
            if len(set(self.samples)) != len(self.samples):
                raise ValueError("samples contains duplicates")
            samples = list(self.samples)
        if not isinstance(self.tags, dict) or any(str(k).lower().startswith("aws:") for k in self.tags):
            raise ValueError("tags must be a mapping whose keys do not start with 'aws:'")
        return samples

    # --- execution ----------------------------------------------------------------------------------
    def execute(self, context: Any) -> Any:
        from hooks import backend
        from hooks.batch_api import submit_within_budget

        settings = PlatformSettings.resolve()
        samples = self._validate_rendered()
        ti = context["ti"]
        key = idempotency_key(ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", -1))
        store = backend.job_state_store(settings)
        api = backend.batch_api(settings)
        queue = settings.resolve_queue(self.job_queue)

        prior = store.get_submission(key)
        generation = 0
        if prior:
            state = store.get_many([prior["job_id"]]).get(prior["job_id"])
            status = state.status if state else "SUBMITTED"
            if status == "FAILED" or (status == "SUCCEEDED" and _truthy(self.rerun_succeeded)):
                generation = prior["generation"] + 1
                self.log.info("Job %s of an earlier try %s; submitting generation %s", prior["job_id"], status, generation)
            else:
                self.log.info("Reattaching to job %s (%s) submitted by an earlier try", prior["job_id"], status)
                return self._wait(context, settings, prior["job_id"], _ended(store, api, prior["job_id"], state))

        name = job_name(
            label_parts=[self.pipeline, self.step, self.sample or (f"{len(samples)}-samples" if samples else "")],
            key=key,
            generation=generation,
        )
        if ti.try_number > 1 or prior:
            # An earlier try may have died between SubmitJob and recording it: find its job by name.
            existing = api.find_jobs_by_name(queue, name)
            if existing:
                job_id = existing[-1]["jobId"]
                self.log.info("Found job %s named %s from an earlier try; reattaching", job_id, name)
                store.put_submission(key, {"job_id": job_id, "job_name": name, "generation": generation,
                                           "job_queue": queue, "array_size": len(samples) or None})
                return self._wait(context, settings, job_id, _ended(store, api, job_id))

        request = self._request(context, settings, name, queue, samples)
        submitted, throttled = submit_within_budget(
            api, store, request, rate_per_second=settings.submit_rate_per_second
        )
        job_id = submitted["jobId"]
        store.put_submission(key, {"job_id": job_id, "job_name": name, "generation": generation,
                                   "job_queue": queue, "array_size": len(samples) or None})
        store.record(JobState(job_id=job_id, status="SUBMITTED", job_name=name, job_queue=queue,
                              array_size=len(samples) or None, source="submit"))
        self.log.info("Submitted job %s (%s)%s", job_id, name, f" after {throttled} throttled call(s)" if throttled else "")
        return self._wait(context, settings, job_id)

    def _wait(self, context: Any, settings: PlatformSettings, job_id: str, ended: JobState | None = None) -> Any:
        """Defer until the job ends, or, for a retry that reattached to a job already over (``ended``),
        complete now. Deferring would fire the trigger at once, and Airflow 3.3's scheduler can fail a try whose
        trigger fires before it has processed that try's deferral (apache/airflow#67287, #72716): the retry
        would fail the same way."""
        from triggers.batch_events import BatchJobEventTrigger

        self.job_id = job_id
        context["ti"].xcom_push(key="batch_job_id", value=job_id)
        if ended is not None:
            self.log.info("Job %s already %s; completing without deferring", job_id, ended.status)
            return self.execute_complete(context, completion_event([ended]))
        self.defer(
            trigger=BatchJobEventTrigger(
                job_ids=[job_id], settings=settings.to_dict(), terminate_on_kill=self.terminate_on_kill
            ),
            method_name="execute_complete",
        )

    def _request(
        self, context: Any, settings: PlatformSettings, name: str, queue: str, samples: list[str]
    ) -> dict[str, Any]:
        from hooks.lake import write_text

        ti = context["ti"]
        env = {
            "GENOMICS_PROJECT": self.project,
            "GENOMICS_PIPELINE": self.pipeline,
            "GENOMICS_STEP": self.step,
            "GENOMICS_DAG_ID": ti.dag_id,
            "GENOMICS_RUN_ID": ti.run_id,
            "GENOMICS_LAKE_URI": settings.lake_root,
            "GENOMICS_VCPUS": f"{float(self.vcpus):g}",  # the steps size their tools' threads and memory by
            "GENOMICS_MEMORY_MIB": str(self.memory_mib),  # these two
        }
        tags = {
            "project": self.project,
            "pipeline": self.pipeline,
            "run_id": ti.run_id,
            "step": self.step,
            "airflow_dag": ti.dag_id,
            "airflow_task": ti.task_id,
        }
        if len(samples) == 1:  # Batch arrays start at 2 children: one sample runs as a plain job
            self.sample, samples = samples[0], []
        if self.sample:
            env["GENOMICS_SAMPLE"] = self.sample
            tags["sample"] = self.sample
        if samples:
            manifest = (
                f"{settings.lake_root}/manifests/{_safe(ti.dag_id)}/{_safe(ti.run_id)}/"
                f"{_safe(ti.task_id)}{'' if getattr(ti, 'map_index', -1) < 0 else f'-{ti.map_index}'}.json"
            )
            write_text(settings, manifest, json.dumps({"samples": samples}))
            env["GENOMICS_MANIFEST_URI"] = manifest
            tags["manifest"] = manifest
        env.update(self.environment)
        tags.update(self.tags)
        if len(tags) > MAX_TAGS:
            raise ValueError(f"a Batch job takes at most {MAX_TAGS} tags, this one would have {len(tags)}")
        resources = [
            {"type": "VCPU", "value": f"{float(self.vcpus):g}"},
            {"type": "MEMORY", "value": str(self.memory_mib)},
        ]
        if self.gpus:
            resources.append({"type": "GPU", "value": str(self.gpus)})
        request: dict[str, Any] = {
            "jobName": name,
            "jobQueue": queue,
            "jobDefinition": self.job_definition,
            "containerOverrides": {
                "command": list(self.command),
                "environment": [{"name": k, "value": v} for k, v in sorted(env.items())],
                "resourceRequirements": resources,
            },
            "retryStrategy": self.retry_strategy,
            "tags": {k: tag_value(v) for k, v in tags.items()},
            "propagateTags": True,
        }
        if self.timeout_seconds:
            request["timeout"] = {"attemptDurationSeconds": self.timeout_seconds}
        if samples:
            request["arrayProperties"] = {"size": len(samples)}
        size = len(json.dumps(request))
        if size > MAX_SUBMIT_PAYLOAD:
            raise ValueError(f"the SubmitJob request is {size} bytes; Batch accepts at most {MAX_SUBMIT_PAYLOAD}")
        return request

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        from hooks import backend

        if event.get("status") == "error":
            raise AirflowException(f"Could not wait for Batch job(s) {event.get('job_ids')}: {event.get('message')}")
        settings = PlatformSettings.resolve()
        job = event["jobs"][0]
        summary = {**job, "log": _log_location(settings, job.get("log_stream", ""))}
        samples = self.samples if isinstance(self.samples, list) and len(self.samples) > 1 else None
        if samples:
            summary["samples"] = _children(settings, backend, job["job_id"], samples)
            summary["failed_samples"] = [c["sample"] for c in summary["samples"] if c["status"] != "SUCCEEDED"]
        elif self.sample or isinstance(self.samples, list):
            summary["sample"] = self.sample or self.samples[0]
        self._stage_job_runs(settings, context, summary)
        if job["status"] == "SUCCEEDED":
            return summary
        lines = [
            f"Batch job {job['job_id']} ({job['job_name']}) FAILED after {job['attempts']} attempt(s): "
            f"{job['status_reason'] or 'no reason given'}"
        ]
        if samples:
            failed = [c for c in summary["samples"] if c["status"] != "SUCCEEDED"]
            lines.append(f"{len(failed)} of {len(samples)} samples failed:")
            lines += [
                f"  {c['sample']}: {c['status']} exit code {c['exit_code']} ({_reasons(c)})"
                f"{self._memory_hint(c)}; log: {c['log']}"
                for c in failed[:50]
            ]
            streams = [(f"sample {c['sample']}", c["log_stream"]) for c in failed[:LOG_TAILS]]
        else:
            if job.get("container_reason"):
                lines.append(f"container: {job['container_reason']}")
            lines.append(f"exit code {job['exit_code']}{self._memory_hint(job)}; log: {summary['log']}")
            streams = [(f"job {job['job_id']}", job.get("log_stream", ""))]
        lines += _log_tails(settings, streams)
        raise AirflowException("\n".join(lines))

    def _memory_hint(self, job: dict[str, Any]) -> str:
        """What to do about a job (or child) Batch killed over its memory; its exit code proves nothing either
        way (a real OOM kill was exit code 24, and Batch's own kills of a cancelled or timed-out job are 137)."""
        if job.get("out_of_memory"):
            return f" (out of memory: it exceeded its memory_mib={self.memory_mib}; give the step more memory)"
        if job.get("exit_code") == 137:
            return " (killed by a signal)"
        return ""

    def _stage_job_runs(self, settings: PlatformSettings, context: Any, summary: dict[str, Any]) -> None:
        """Stage one job_runs row per sample or run-level job (the job's facts: attempts, times, resources, capacity,
        the container reason that tells an out-of-memory kill), for
        PublishTableOperator(table="job_runs", staging_scope=run_scope(run_id)) to publish with the results."""
        from concurrent.futures import ThreadPoolExecutor

        from hooks.lake import write_text
        from publishing import run_scope, staging_uri

        # A job of a whole run (an index, GWAS step 1 or merge) is staged under its step's name as the unit.
        rows = summary.get("samples") or [{**summary, "sample": summary.get("sample") or self.step}]
        prefix = staging_uri(settings.lake_root, "job_runs", self.pipeline, run_scope(context["ti"].run_id),
                             self.project)
        capacity = settings.capacity_type(settings.resolve_queue(self.job_queue))
        header = "job_id\tstep\tstatus\tattempts\tstarted_ms\tstopped_ms\tvcpus\tmemory_mib\tjob_queue\t" \
                 "capacity_type\tinstance_type\tcontainer_reason\tjob_definition\treused_from\n"

        def stage(row: dict[str, Any]) -> None:
            values = [row["job_id"], self.step, row["status"], row["attempts"], row.get("started_at"),
                      row.get("stopped_at"), self.vcpus, self.memory_mib, self.job_queue or settings.job_queue,
                      capacity, None, " ".join((row.get("container_reason") or "").split()) or None,
                      self.job_definition, self.reused_from or None]
            line = "\t".join("" if v is None else str(v).replace("\t", " ") for v in values)
            name = f"{self.step}-{_safe(row['job_id'])}.tsv"  # one file per job: a resubmission is another fact
            write_text(settings, f"{prefix}sample_id={row['sample']}/{name}", header + line + "\n")

        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(stage, rows))

    def on_kill(self) -> None:
        if self.job_id and self.terminate_on_kill:
            from hooks import backend

            backend.batch_api(PlatformSettings.resolve()).terminate_job(self.job_id, "Airflow task was killed")


def _ended(store: Any, api: Any, job_id: str, stored: JobState | None = None) -> JobState | None:
    """A reattached job's final state if it has ended: ``stored`` (what the job-state store holds) when that is
    final, else one DescribeJobs call (its events not consumed yet, or dropped), recorded in the store as the
    reconciler would, so the next try sees a failure and submits a new generation."""
    if stored is not None and stored.terminal:
        return stored
    state = next(iter(_described(api, [job_id])), None)
    if state is None or not state.terminal:
        return None
    store.record(state)
    return state


def _described(api: Any, job_ids: list[str]) -> list[JobState]:
    """DescribeJobs for ``job_ids``, at most 100 ids a call; jobs Batch does not know are left out."""
    return [
        JobState.from_detail(detail, source="reconcile")
        for start in range(0, len(job_ids), 100)
        for detail in api.describe_jobs(job_ids[start : start + 100])
    ]


def _children(settings: PlatformSettings, backend: Any, parent_id: str, samples: list[str]) -> list[dict[str, Any]]:
    """Every child's sample and final state: from the store, and DescribeJobs only for children whose
    terminal event never arrived (at most 100 ids a call)."""
    known = {c.array_index: c for c in backend.job_state_store(settings).children(parent_id) if c.terminal}
    missing = [f"{parent_id}:{i}" for i in range(len(samples)) if i not in known]
    if missing:
        for state in _described(backend.batch_api(settings), missing):
            known[state.array_index] = state
    out = []
    for index, sample in enumerate(samples):
        state = known.get(index)
        out.append(
            {
                "sample": sample,
                "job_id": f"{parent_id}:{index}",
                "status": state.status if state else "UNKNOWN",
                "attempts": state.attempts if state else 0,
                "exit_code": state.exit_code if state else None,
                "status_reason": state.status_reason if state else "",
                "container_reason": state.container_reason if state else "",
                "out_of_memory": state.out_of_memory if state else False,
                "started_at": state.started_at if state else None,
                "stopped_at": state.stopped_at if state else None,
                "log": _log_location(settings, state.log_stream if state else ""),
                "log_stream": state.log_stream if state else "",
            }
        )
    return out


def _reasons(child: dict[str, Any]) -> str:
    """A child's status reason, and its container reason when Batch gave one (an OOM kill shows only there)."""
    reasons = [r for r in (child.get("status_reason"), child.get("container_reason")) if r]
    return "; ".join(reasons) or "no reason given"


def _log_tails(settings: PlatformSettings, streams: list[tuple[str, str]]) -> list[str]:
    """The end of each failed job's log: the step prints the tool's own error last."""
    from hooks.job_logs import log_tail

    out: list[str] = []
    for label, stream in streams:
        tail = log_tail(settings, stream)
        if tail:
            out.append(f"--- last lines of the log of {label} ---")
            out += [f"  {line}" for line in tail]
    return out


def _log_location(settings: PlatformSettings, log_stream: str) -> str:
    if not log_stream:
        return "(no log: the job never started)"
    if settings.backend == "aws":
        return f"CloudWatch Logs group /aws/batch/job, stream {log_stream}"
    return log_stream


def _safe(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", value)


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() in ("true", "1", "yes"))
