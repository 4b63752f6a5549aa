"""FSx for Lustre around the jobs of one DAG run: create it (setup), export its results, delete it (teardown).

- FsxCreateOperator creates a file system tagged with the deployment, project, DAG and run, with a
  ClientRequestToken fixed by the task instance, so a retried or restarted try gets the same file system back
  instead of a second one; it waits deferred (FsxStatusTrigger) until it is AVAILABLE, links the run's input
  folders and its output folder (data repository associations) and waits until they are usable.
- FsxExportOperator exports a directory to the linked S3 prefix (an EXPORT_TO_REPOSITORY task), deferred.
- FsxDeleteOperator deletes every file system of this run (SkipFinalBackup); use it as the teardown of the
  create task: it runs when the jobs between them failed, and the run still fails.
What a teardown cannot catch (a setup that failed after creating, a run deleted mid-way) ``fsx_sweeper`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow_compat import AirflowException

from batch_model import tag_value
from client_tokens import FSX_TOKEN_LENGTH, client_token
from platform_settings import PlatformSettings
from ui_links import FsxFileSystemLink

UNUSABLE = {"FAILED", "MISCONFIGURED", "MISCONFIGURED_UNAVAILABLE", "DELETING", "DELETED"}
MAX_GENERATIONS = 5


def run_tags(settings: PlatformSettings, ti: Any, project: str) -> dict[str, str]:
    """The tags that say whose a file system is; the sweeper and the teardown find a run's file systems by them."""
    from hooks.fsx import TAG_DEPLOYMENT

    return {TAG_DEPLOYMENT: settings.deployment, "project": tag_value(project), "airflow_dag": tag_value(ti.dag_id),
            "run_id": tag_value(ti.run_id), "Name": tag_value(f"{ti.dag_id} {ti.run_id}")[:256]}


def file_systems_of_run(api: Any, settings: PlatformSettings, ti: Any) -> list[dict[str, Any]]:
    from hooks.fsx import TAG_DEPLOYMENT, tag_dict

    found = []
    for fs in api.list_file_systems():
        tags = tag_dict(fs)
        if (tags.get(TAG_DEPLOYMENT) == settings.deployment and tags.get("airflow_dag") == tag_value(ti.dag_id)
                and tags.get("run_id") == tag_value(ti.run_id)):
            found.append(fs)
    return found


def _fsx_token(*parts: Any) -> str:
    return client_token(*parts, length=FSX_TOKEN_LENGTH)


class FsxCreateOperator(BaseOperator):
    """Create the run's FSx for Lustre file system and link lake folders to it; returns what jobs need:
    ``{"file_system_id", "mount", "output", "links": {lake folder: directory}}`` (pass it to jobs as the JSON
    env GENOMICS_FSX). Inputs are linked at ``/input-<i>`` (metadata imported, contents loaded on first read),
    ``output_folder`` at ``/output``.

    :param project: project tag. Templated.
    :param inputs: lake folders (ending in ``/``) the jobs read. Templated.
    :param output_folder: lake folder that ``/output`` exports to; None: jobs only read from the file system
        (no ``/output``). Templated.
    :param deployment_type: SCRATCH_2 (default) or PERSISTENT_2. Templated.
    :param capacity_gib: 1200, 2400 or a multiple of 2400. Templated.
    :param throughput: PERSISTENT_2's MB/s per TiB (125, 250, 500, 1000). Templated.
    :param poll_seconds: first pause of the deferred wait (then growing by half, to 120 s).
    :param timeout_seconds: how long creation may take before the task fails.
    :param aws_only: on the local backend, create nothing and return None (jobs that read the lake's files
        directly there need no stand-in file system).
    """

    template_fields: Sequence[str] = ("project", "inputs", "output_folder", "deployment_type", "capacity_gib", "throughput")
    ui_color = "#dde7f5"
    operator_extra_links = (FsxFileSystemLink(),)  # the file system in the FSx console, on AWS

    def __init__(self, *, project: str, inputs: list[str] | str, output_folder: str | None, deployment_type: str = "SCRATCH_2",
                 capacity_gib: int | str = 1200, throughput: int | str = 125, poll_seconds: float = 30.0,
                 timeout_seconds: float = 3600.0, aws_only: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.aws_only = aws_only
        self.project = project
        self.inputs = inputs
        self.output_folder = output_folder
        self.deployment_type = deployment_type
        self.capacity_gib = capacity_gib
        self.throughput = throughput
        self.poll_seconds = poll_seconds
        self.timeout_seconds = timeout_seconds

    def _links(self) -> list[tuple[str, str, bool]]:
        from genomics_steps.names import LABEL, LOCATION

        from hooks.fsx import DEPLOYMENT_TYPES, PERSISTENT_2_THROUGHPUTS, valid_capacity

        problems = []
        if not LABEL.ok(self.project):
            problems.append(LABEL.problem("project", self.project))
        if self.deployment_type not in DEPLOYMENT_TYPES:
            problems.append(f"deployment_type {self.deployment_type!r} must be one of {DEPLOYMENT_TYPES}")
        self.capacity_gib, self.throughput = _int(self.capacity_gib), _int(self.throughput)
        if not valid_capacity(self.capacity_gib):
            problems.append(f"capacity_gib must be 1200, 2400 or a multiple of 2400, got {self.capacity_gib!r}")
        if self.deployment_type == "PERSISTENT_2" and self.throughput not in PERSISTENT_2_THROUGHPUTS:
            problems.append(f"throughput must be one of {PERSISTENT_2_THROUGHPUTS} for PERSISTENT_2")
        inputs = list(self.inputs if isinstance(self.inputs, list) else [self.inputs])
        folders = [*inputs, *([self.output_folder] if self.output_folder else [])]
        bad = [f for f in folders if not LOCATION.ok(f)]
        if bad:
            problems.append(f"folder(s) {bad!r}: each must be {LOCATION.description}")
        elif any(a != b and a.startswith(b) for a in folders for b in folders):
            problems.append(f"linked folders must not contain each other: {folders}")
        if len(folders) > 8:
            problems.append("a file system takes at most 8 data repository associations")
        if problems:
            raise ValueError("FSx request refused:\n - " + "\n - ".join(problems))
        links = [(f"/input-{i}", folder, True) for i, folder in enumerate(inputs)]
        return [*links, *([("/output", self.output_folder, False)] if self.output_folder else [])]

    def execute(self, context: Any) -> Any:
        from hooks import backend

        settings = PlatformSettings.resolve()
        self._links()  # everything is checked before anything is created
        if self.aws_only and settings.backend != "aws":
            self.log.info("no file system on the %s backend: the jobs read the lake's files", settings.backend)
            return None
        ti = context["ti"]
        api = backend.fsx(settings)
        alive = [fs for fs in file_systems_of_run(api, settings, ti) if fs["Lifecycle"] not in UNUSABLE]
        if alive:  # a retry, or a cleared setup whose file system is still up: use it
            fs = alive[0]
            self.log.info("reusing file system %s (%s) of this run", fs["FileSystemId"], fs["Lifecycle"])
        else:
            fs = self._create(api, settings, ti)
        return self._when_available(context, api, settings, fs)

    def _create(self, api: Any, settings: PlatformSettings, ti: Any) -> dict[str, Any]:
        tags = run_tags(settings, ti, self.project)
        for generation in range(MAX_GENERATIONS):
            # The same token for every try of this task: a try that died after CreateFileSystem gets the same
            # file system back. A token whose file system is unusable or gone moves to the next generation.
            fs = api.create_file_system(token=_fsx_token(ti.dag_id, ti.run_id, ti.task_id, generation),
                                        deployment_type=self.deployment_type, capacity_gib=self.capacity_gib,
                                        throughput=self.throughput, tags=tags)
            current = api.describe(fs["FileSystemId"])
            if current and current["Lifecycle"] not in UNUSABLE:
                self.log.info("file system %s: %s, %s GiB %s", fs["FileSystemId"], current["Lifecycle"],
                              self.capacity_gib, self.deployment_type)
                return current
            if current and current["Lifecycle"] in ("FAILED", "MISCONFIGURED"):
                api.delete(fs["FileSystemId"])  # nothing to keep from a failed creation
        raise AirflowException(f"no usable file system after {MAX_GENERATIONS} creation requests")

    def _when_available(self, context: Any, api: Any, settings: PlatformSettings, fs: dict[str, Any]) -> Any:
        import ui_links

        ui_links.persist(context["ti"], FsxFileSystemLink, settings, ui_links.fsx_url, fs["FileSystemId"])
        if fs["Lifecycle"] != "AVAILABLE":
            self._defer("file_system", [fs["FileSystemId"]], "AVAILABLE", "resume_available", settings)
        return self._link(context, api, settings, fs["FileSystemId"])

    def resume_available(self, context: Any, event: dict[str, Any]) -> Any:
        from hooks import backend

        _check(event)
        settings = PlatformSettings.resolve()
        return self._link(context, backend.fsx(settings), settings, next(iter(event["states"])))

    def _link(self, context: Any, api: Any, settings: PlatformSettings, file_system_id: str) -> Any:
        ti = context["ti"]
        existing = {a["FileSystemPath"]: a for a in api.associations(file_system_id)}
        associations = []
        for path, folder, import_metadata in self._links():
            association = existing.get(path) or api.create_association(
                file_system_id, path, folder, token=_fsx_token(file_system_id, ti.run_id, path),
                import_metadata=import_metadata)
            associations.append(association)
        waiting = [f"{file_system_id}/{a['AssociationId']}" for a in associations if a["Lifecycle"] != "AVAILABLE"]
        if waiting:
            self._defer("association", waiting, "AVAILABLE", "resume_linked", settings)
        return self._result(api, file_system_id)

    def resume_linked(self, context: Any, event: dict[str, Any]) -> Any:
        from hooks import backend

        _check(event)
        file_system_id = next(iter(event["states"])).split("/", 1)[0]
        return self._result(backend.fsx(PlatformSettings.resolve()), file_system_id)

    def _result(self, api: Any, file_system_id: str) -> dict[str, Any]:
        mount = api.mount_path(file_system_id)
        links = {folder: f"{mount}{path}/" for path, folder, imported in self._links() if imported}
        result = {"file_system_id": file_system_id, "mount": mount,
                  "output": f"{mount}/output" if self.output_folder else None, "links": links}
        self.log.info("file system ready: %s", result)
        return result

    def _defer(self, kind: str, ids: list[str], target: str, method: str, settings: PlatformSettings) -> None:
        from triggers.fsx_status import FsxStatusTrigger

        self.defer(trigger=FsxStatusTrigger(kind, ids, target, settings.to_dict(),
                                            timeout_seconds=self.timeout_seconds,
                                            first_interval_seconds=self.poll_seconds),
                   method_name=method)


class FsxExportOperator(BaseOperator):
    """Export ``paths`` of a file system to the S3 prefixes linked to them, and wait (deferred) until done.

    :param file_system_id: Templated (the create task's XCom).
    :param paths: directories relative to the file system's root, e.g. ``["output"]``.
    """

    template_fields: Sequence[str] = ("file_system_id",)
    ui_color = "#dde7f5"
    operator_extra_links = (FsxFileSystemLink(),)  # the file system in the FSx console, on AWS

    def __init__(self, *, file_system_id: str, paths: list[str], poll_seconds: float = 30.0,
                 timeout_seconds: float = 6 * 3600.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.file_system_id = file_system_id
        self.paths = list(paths)
        self.poll_seconds = poll_seconds
        self.timeout_seconds = timeout_seconds

    def execute(self, context: Any) -> Any:
        from hooks import backend
        from triggers.fsx_status import FsxStatusTrigger

        import ui_links

        settings = PlatformSettings.resolve()
        api = backend.fsx(settings)  # the Airflow role's connection: the sweeper's role may not export
        ti = context["ti"]
        ui_links.persist(ti, FsxFileSystemLink, settings, ui_links.fsx_url, self.file_system_id)
        for generation in range(MAX_GENERATIONS):
            # A retried try gets the export its predecessor started; one that failed is started again.
            task = api.export(self.file_system_id, self.paths,
                              token=_fsx_token(self.file_system_id, ti.run_id, ti.task_id, generation))
            if task["Lifecycle"] not in ("FAILED", "CANCELED"):
                break
            self.log.warning("export %s %s: %s", task["TaskId"], task["Lifecycle"], task.get("FailureDetails"))
        self.log.info("export %s of %s: %s", task["TaskId"], self.paths, task["Lifecycle"])
        if task["Lifecycle"] != "SUCCEEDED":
            self.defer(trigger=FsxStatusTrigger("task", [task["TaskId"]], "SUCCEEDED", settings.to_dict(),
                                                timeout_seconds=self.timeout_seconds,
                                                first_interval_seconds=self.poll_seconds),
                       method_name="execute_complete")
        return self._summary(task)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from hooks import backend

        _check(event)
        return self._summary(backend.fsx(PlatformSettings.resolve()).describe_task(next(iter(event["states"]))))

    def _summary(self, task: dict[str, Any]) -> dict[str, Any]:
        status = task.get("Status", {})
        if task["Lifecycle"] != "SUCCEEDED" or status.get("FailedCount"):
            raise AirflowException(f"export {task['TaskId']} {task['Lifecycle']}: {status}; "
                                   f"{task.get('FailureDetails', {}).get('Message', '')}")
        return {"task_id": task["TaskId"], "exported_files": status.get("SucceededCount")}


class FsxDeleteOperator(BaseOperator):
    """Delete every file system of this DAG run (found by its tags), without a final backup. Use as the
    teardown of FsxCreateOperator: it runs whether the jobs succeeded or failed."""

    ui_color = "#f5dddd"

    def execute(self, context: Any) -> Any:
        from hooks import backend

        settings = PlatformSettings.resolve()
        api = backend.fsx(settings)
        deleted = []
        for fs in file_systems_of_run(api, settings, context["ti"]):
            if fs["Lifecycle"] == "DELETING":
                continue
            state = api.delete(fs["FileSystemId"])
            self.log.info("file system %s: %s (no final backup)", fs["FileSystemId"], state)
            deleted.append(fs["FileSystemId"])
        if not deleted:
            self.log.info("no file system of this run is left to delete")
        return deleted


def _check(event: dict[str, Any]) -> None:
    if event.get("status") != "success":
        raise AirflowException(f"FSx {event.get('kind')} did not become {event.get('target')}: "
                               f"{event.get('reason')} {event.get('states', {})}")


def _int(value: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def sweep_decisions(file_systems: list[dict[str, Any]], *, deployment: str, now: Any, ttl_hours: float,
                    run_active: Any) -> list[dict[str, Any]]:
    """Which of ``file_systems`` to delete, and why: only this deployment's (tag ``genomics:deployment``);
    those unusable (FAILED, MISCONFIGURED), older than ``ttl_hours``, or whose DAG run is no longer queued or
    running (``run_active(dag_id, run_id)``). File systems already DELETING are left alone."""
    from hooks.fsx import TAG_DEPLOYMENT, tag_dict

    decisions = []
    for fs in file_systems:
        tags = tag_dict(fs)
        if tags.get(TAG_DEPLOYMENT) != deployment or fs["Lifecycle"] == "DELETING":
            continue
        age_hours = (now - fs["CreationTime"]).total_seconds() / 3600
        dag_id, run_id = tags.get("airflow_dag"), tags.get("run_id")
        if fs["Lifecycle"] in ("FAILED", "MISCONFIGURED", "MISCONFIGURED_UNAVAILABLE"):
            reason = f"unusable ({fs['Lifecycle']})"
        elif age_hours > ttl_hours:
            reason = f"outlived the TTL of {ttl_hours:g} h"
        elif not dag_id or not run_id:
            reason = "tagged by this deployment but with no DAG run"
        elif not run_active(dag_id, run_id):
            reason = f"its run {dag_id} / {run_id} has ended"
        else:
            continue
        decisions.append({"file_system_id": fs["FileSystemId"], "reason": reason, "lifecycle": fs["Lifecycle"],
                          "project": tags.get("project"), "dag_id": dag_id, "run_id": run_id,
                          "age_hours": round(age_hours, 2)})
    return decisions


class FsxSweepOperator(BaseOperator):
    """Delete this deployment's file systems that no run needs any more (see ``sweep_decisions``) and return
    what it deleted and why. The ``fsx_sweeper`` DAG runs it every 15 minutes."""

    ui_color = "#f5dddd"

    def execute(self, context: Any) -> Any:
        from datetime import datetime, timezone

        from hooks import backend

        settings = PlatformSettings.resolve()
        api = backend.fsx(settings, settings.fsx_sweeper_conn_id)
        ti = context["ti"]

        def run_active(dag_id: str, run_id: str) -> bool:
            return ti.get_dr_count(dag_id=dag_id, run_ids=[run_id], states=["queued", "running"]) > 0

        file_systems = api.list_file_systems()
        decisions = sweep_decisions(file_systems, deployment=settings.deployment, now=datetime.now(timezone.utc),
                                    ttl_hours=settings.fsx_ttl_hours, run_active=run_active)
        for decision in decisions:
            decision["result"] = api.delete(decision["file_system_id"])
            self.log.info("deleted %(file_system_id)s (%(lifecycle)s, %(age_hours)s h, project %(project)s): "
                          "%(reason)s", decision)
        self.log.info("%d file system(s) seen, %d deleted", len(file_systems), len(decisions))
        return decisions
