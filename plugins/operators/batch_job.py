"""BatchJobOperator: submit one AWS Batch job (or one array job over a list of samples) and wait for it on
events, deferred, holding neither a worker slot nor a pool slot.

What it does beyond the amazon provider's BatchOperator:
- an Airflow retry reattaches to the job the earlier try submitted instead of submitting a second one
  (``batch_jobs.submission``); only a job that itself FAILED is submitted again, as a new generation;
- SubmitJob goes through the ``batch_submit`` pool and a deployment-wide rate budget (default 40 TPS), and a
  throttled call waits and tries again instead of failing the task;
- waiting is on "Batch Job State Change" events through BatchJobEventTrigger: no DescribeJobs polling.

The operator wires the parts in ``batch_jobs`` (request, submission, completion) and ``job_facts``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow_compat import AirflowException, AirflowSkipException

from batch_jobs.request import JobSpec, check_static, truthy
from batch_model import completion_event, default_retry_strategy, idempotency_key
from platform_settings import PlatformSettings
from ui_links import BatchJobLink, JobLogLink

SUBMIT_POOL = "batch_submit"
SURVIVORS = "survivors"  # XCom key: the samples a step hands on to the next step of its unit


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
    :param samples_from: task id of the previous step of the same unit: the job runs over the samples that step
        handed on (its XCom ``survivors``, same map index); with none left the task is skipped.
    :param per_sample_outcomes: each sample's outcome is data (``genomics_steps.outcomes``): the task succeeds
        when any sample succeeded (or every failure was a QC exclusion) and hands on only the succeeded ones as
        XCom ``survivors``; it fails only when no sample succeeded and some failed. Every sample's outcome is
        staged for the run's ``sample_outcomes`` table. Samples that ran out of memory are submitted again,
        alone (a new array of just them), with twice the memory, up to ``oom_retries`` times and
        ``max_memory_mib`` (default four times ``memory_mib``).
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
    operator_extra_links = (BatchJobLink(), JobLogLink())  # the job (array parent) and its log, on AWS

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
        samples_from: str | None = None,
        per_sample_outcomes: bool = False,
        oom_retries: int = 2,
        max_memory_mib: int | None = None,
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
        self.samples_from = samples_from
        self.per_sample_outcomes = per_sample_outcomes
        self.oom_retries = oom_retries
        self.max_memory_mib = max_memory_mib or 4 * memory_mib
        self.job_id: str | None = None
        check_static(step=step, vcpus=vcpus, memory_mib=memory_mib, gpus=gpus, timeout_seconds=timeout_seconds,
                     retry_strategy=self.retry_strategy)  # a wrong DAG fails when it is parsed

    @classmethod
    def partial(cls, **kwargs: Any):  # type: ignore[override]
        """Mapped Batch tasks submit through the same pool: ``partial()`` does not run ``__init__``."""
        kwargs.setdefault("pool", SUBMIT_POOL)
        return super().partial(**kwargs)

    def _spec(self, settings: PlatformSettings, context: Any) -> JobSpec:
        """The rendered arguments, checked: bad input fails here, before anything is submitted."""
        return JobSpec.checked(
            command=self.command, project=self.project, pipeline=self.pipeline, sample=self.sample,
            samples=self._handed_on(context) if self.samples_from else self.samples, environment=self.environment, tags=self.tags, step=self.step,
            job_definition=self.job_definition, queue=settings.resolve_queue(self.job_queue),
            queue_name=self.job_queue or settings.job_queue, vcpus=self.vcpus, memory_mib=self.memory_mib,
            gpus=self.gpus, timeout_seconds=self.timeout_seconds, retry_strategy=self.retry_strategy,
            reused_from=self.reused_from or "",
        )

    def _handed_on(self, context: Any) -> list[str]:
        """The samples the previous step of this unit handed on; skips the task when there are none."""
        ti = context["ti"]
        survivors = ti.xcom_pull(task_ids=self.samples_from, key=SURVIVORS, map_indexes=getattr(ti, "map_index", -1))
        if not survivors:
            raise AirflowSkipException(f"no sample of this unit is left after {self.samples_from}: each failed, "
                                       "was excluded, or that step did not run (see sample_outcomes)")
        return list(survivors)

    def execute(self, context: Any) -> Any:
        from batch_jobs import request, submission
        from hooks import backend

        settings = PlatformSettings.resolve()
        spec = self._spec(settings, context)
        ti = context["ti"]
        store, api = backend.job_state_store(settings), backend.batch_api(settings)
        job = submission.reattach_or_submit(
            store, api,
            key=_key(ti),
            queue=spec.queue, label_parts=spec.label_parts, array_size=spec.array_size,
            rerun_succeeded=truthy(self.rerun_succeeded), earlier_try=ti.try_number > 1,
            build_request=request.request_builder(spec, settings, ti),
            submit=_submitter(settings, store, api), logger=self.log, keep_partial=self.per_sample_outcomes,
        )
        if job.ended is not None:
            # Deferring on a job already over would fire the trigger at once, and Airflow 3.3's scheduler can
            # fail a try whose trigger fires before it has processed that try's deferral (apache/airflow#67287,
            # #72716): the retry would fail the same way. So it completes here.
            self._announce(ti, job.job_id, settings)
            self.log.info("Job %s already %s; completing without deferring", job.job_id, job.ended.status)
            return self.execute_complete(context, completion_event([job.ended]))
        self._wait_for(settings, ti, job.job_id)

    def _announce(self, ti: Any, job_id: str, settings: PlatformSettings) -> None:
        import ui_links

        self.job_id = job_id
        ti.xcom_push(key="batch_job_id", value=job_id)
        ui_links.persist(ti, BatchJobLink, settings, ui_links.batch_job_url, job_id)

    def _wait_for(self, settings: PlatformSettings, ti: Any, job_id: str) -> None:
        """Defer until the job's events say it is over (``execute_complete`` then)."""
        from triggers.batch_events import BatchJobEventTrigger

        self._announce(ti, job_id, settings)
        self.defer(trigger=BatchJobEventTrigger(job_ids=[job_id], settings=settings.to_dict(),
                                                terminate_on_kill=self.terminate_on_kill),
                   method_name="execute_complete")

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        import job_facts
        from batch_jobs.completion import failure_message, hand_on, sample_results, summarize
        from hooks import backend

        if event.get("status") == "error":
            raise AirflowException(f"Could not wait for Batch job(s) {event.get('job_ids')}: {event.get('message')}")
        settings = PlatformSettings.resolve()
        spec = self._spec(settings, context)
        per_sample = self.per_sample_outcomes and bool(spec.sample or spec.samples)
        store, record = None, {}
        if per_sample:
            store = backend.job_state_store(settings)
            record = store.get_submission(_key(context["ti"])) or {}
            if record.get("round_samples"):  # an out-of-memory round: some of the unit's samples, more memory
                spec = spec.narrowed(record["round_samples"], record["round_memory_mib"])
        summary = summarize(settings, event["jobs"][0], spec)
        _show_log(context["ti"], settings, summary, self.log)
        results = sample_results(settings, summary, spec) if per_sample else []
        job_facts.stage_quietly(settings, context["ti"].run_id, spec, summary, self.log, results)
        if not per_sample:
            if summary["status"] != "SUCCEEDED":
                raise AirflowException(failure_message(settings, summary, spec.memory_mib))
            return summary
        settled = [*record.get("settled", []), *results] if record.get("round_samples") else results
        if any(r["out_of_memory"] for r in results) and self._may_grow(spec, record):
            self._out_of_memory_round(context, settings, store, record, spec, settled)
        survivors = hand_on(settled, spec.step, self.log)
        if survivors is None:  # no sample succeeded and some failed
            raise AirflowException(failure_message(settings, summary, spec.memory_mib))
        context["ti"].xcom_push(key=SURVIVORS, value=survivors)
        return {**summary, "survivors": survivors}

    def _may_grow(self, spec: JobSpec, record: dict[str, Any]) -> bool:
        return record.get("oom_rounds", 0) < self.oom_retries and spec.memory_mib * 2 <= self.max_memory_mib

    def _out_of_memory_round(self, context: Any, settings: PlatformSettings, store: Any, record: dict[str, Any],
                             spec: JobSpec, settled: list[dict[str, Any]]) -> None:
        """Submit the samples that ran out of memory again, alone, with twice the memory, and defer on them;
        what the other samples came to is kept in the submission record until the round ends."""
        from batch_jobs import request, submission
        from hooks import backend

        ti = context["ti"]
        oom = [r["sample"] for r in settled if r["out_of_memory"]]
        rounds = record.get("oom_rounds", 0) + 1
        bigger = spec.narrowed(oom, spec.memory_mib * 2)
        job_id = submission.submit_round(
            store, key=_key(ti), prior=record, queue=bigger.queue, label_parts=[*bigger.label_parts, f"oom{rounds}"],
            array_size=bigger.array_size, build_request=request.request_builder(bigger, settings, ti, f"-oom{rounds}"),
            submit=_submitter(settings, store, backend.batch_api(settings)),
            round_record={"round_samples": oom, "round_memory_mib": bigger.memory_mib, "oom_rounds": rounds,
                          "settled": [r for r in settled if not r["out_of_memory"]]},
            logger=self.log,
        )
        self.log.warning("%d sample(s) ran out of memory with %d MiB: %s; running them again with %d MiB",
                         len(oom), spec.memory_mib, oom[:20], bigger.memory_mib)
        self._wait_for(settings, ti, job_id)

    def on_kill(self) -> None:
        if self.job_id and self.terminate_on_kill:
            from hooks import backend

            backend.batch_api(PlatformSettings.resolve()).terminate_job(self.job_id, "Airflow task was killed")


def _show_log(ti: Any, settings: PlatformSettings, summary: dict[str, Any], logger: Any) -> None:
    """The job's log where the UI reaches it: a CloudWatch link on AWS, its path in the task log locally.
    An array parent has no log of its own: its children's are on its Batch page and in sample_outcomes."""
    import ui_links

    stream = summary.get("log_stream") or ""
    ui_links.persist(ti, JobLogLink, settings, ui_links.log_stream_url, stream)
    if note := ui_links.local_log_note(settings, summary["job_id"], stream):
        logger.info(note)


def _key(ti: Any) -> str:
    """The task instance's idempotency key: its submission record and its jobs' names hang on it. A DAG run
    cleared as a whole (a backfill with --reprocess-behavior completed or failed, a clear in the UI) keeps its
    run id, possibly with another run config (pipeline_version 2.0): its tasks get keys of their own, so they
    submit their work instead of reattaching to the jobs of the run's earlier life. Retries within one life of
    the run keep the key, and so reattach."""
    parts = [ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", -1)]
    cleared = _clear_number(ti)
    return idempotency_key(*parts, f"cleared{cleared}") if cleared else idempotency_key(*parts)


def _clear_number(ti: Any) -> int:
    """How often the task instance's DAG run was cleared as a whole (0 if never, or if the context has no run)."""
    try:
        dag_run = ti.get_template_context()["dag_run"]
    except (AttributeError, KeyError, TypeError):
        return 0
    return int(getattr(dag_run, "clear_number", 0) or 0)


def _submitter(settings: PlatformSettings, store: Any, api: Any):
    """SubmitJob through the deployment's shared rate budget, throttled calls retried."""
    from hooks.batch_api import submit_within_budget

    return lambda req: submit_within_budget(api, store, req, rate_per_second=settings.submit_rate_per_second)
