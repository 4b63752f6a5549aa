"""BatchJobSensor: wait, on events, for Batch jobs that were submitted elsewhere (another task, another tool)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow_compat import AirflowException

from genomics_steps.names import JOB_ID
from platform_settings import PlatformSettings
from ui_links import BatchJobLink, JobLogLink

# Batch job ids are UUIDs; array children add ":<index>".


class BatchJobSensor(BaseSensorOperator):
    """Succeeds when every job in ``job_ids`` has SUCCEEDED; fails, with each failed job's reason, when any FAILED.

    Always deferrable: it checks the job-state store once and, unless every job has already ended, defers on
    BatchJobEventTrigger without holding a worker slot.

    :param job_ids: one job id or a list of them, for example
        ``"{{ ti.xcom_pull(task_ids='align', key='batch_job_id') }}"`` or ``"{{ params.job_ids }}"``. Templated.
    :param fail_on_job_failure: if False, return the summaries of failed jobs instead of failing.
    """

    template_fields: Sequence[str] = ("job_ids",)
    ui_color = "#e8d8bf"
    # The first job's console page and log (on AWS); the task log lists every job's page.
    operator_extra_links = (BatchJobLink(), JobLogLink())

    def __init__(self, *, job_ids: str | list[str], fail_on_job_failure: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job_ids = job_ids
        self.fail_on_job_failure = fail_on_job_failure

    def _ids(self) -> list[str]:
        ids = self.job_ids
        if isinstance(ids, str):
            ids = [i.strip() for i in re.split(r"[,\s]+", ids.strip("[]'\" ")) if i.strip(" '\"")]
            ids = [i.strip("'\"") for i in ids]
        if not isinstance(ids, list) or not ids:
            raise ValueError(f"job_ids must be a job id or a non-empty list of them, got {self.job_ids!r}")
        bad = [i for i in ids if not JOB_ID.ok(i)]
        if bad:
            raise ValueError(f"not Batch job ids: {bad[:5]!r}")
        return list(dict.fromkeys(ids))

    def execute(self, context: Any) -> Any:
        from hooks import backend
        from triggers.batch_events import BatchJobEventTrigger

        import ui_links

        ids = self._ids()
        settings = PlatformSettings.resolve()
        ti = context["ti"]
        ui_links.persist(ti, BatchJobLink, settings, ui_links.batch_job_url, ids[0])
        if settings.backend == "aws" and len(ids) > 1:
            region = ui_links.region_of(settings)
            self.log.info("jobs waited for: %s", " ".join(ui_links.batch_job_url(region, i) for i in ids))
        known = backend.job_state_store(settings).get_many(ids)
        if len(known) == len(ids) and all(s.terminal for s in known.values()):
            states = [known[i] for i in ids]
            event = {"status": "failed" if any(s.status == "FAILED" for s in states) else "success",
                     "jobs": [s.summary() for s in states]}
            self._show_log(context, event)
            return self._finish(event)
        self.defer(
            trigger=BatchJobEventTrigger(job_ids=ids, settings=settings.to_dict(), terminate_on_kill=False),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> list[dict[str, Any]]:
        self._show_log(context, event)
        return self._finish(event)

    def _show_log(self, context: Any, event: dict[str, Any]) -> None:
        import ui_links

        first = (event.get("jobs") or [{}])[0]
        stream = first.get("log_stream") or ""
        settings = PlatformSettings.resolve()
        ui_links.persist(context["ti"], JobLogLink, settings, ui_links.log_stream_url, stream)
        for job in event.get("jobs") or []:
            if note := ui_links.local_log_note(settings, job.get("job_id", ""), job.get("log_stream") or ""):
                self.log.info(note)

    def _finish(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        if event.get("status") == "error":
            raise AirflowException(f"Could not wait for Batch jobs: {event.get('message')}")
        jobs = event["jobs"]
        failed = [j for j in jobs if j["status"] != "SUCCEEDED"]
        if failed and self.fail_on_job_failure:
            raise AirflowException(
                "Batch job(s) failed: "
                + "; ".join(f"{j['job_id']} ({j['job_name']}): {j['status_reason']}, exit code {j['exit_code']}"
                            + (f", out of memory ({j['container_reason']})" if j.get("out_of_memory") else "")
                            for j in failed)
            )
        return jobs
