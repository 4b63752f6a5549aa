"""Cost per sample of a pipeline run: the facts it needs, staged when each job ends, and the run's
``sample_costs`` rows, staged by the run's ``costs`` task for ``PublishTableOperator(table="sample_costs")``.

When a job ends (``stage_job_attempts``, called with its job_runs rows): its attempts' container instances are
resolved (hooks/instances.py: batched, cached per instance) while they still exist, and one JSON file per job
is staged under ``staging/job_attempts/<pipeline>/<run>/project=<p>/sample_id=<unit>/``: what the job asked
for, each attempt's instance, start, stop and status reason, and the instances themselves.

After the run's steps (``stage_run_costs``): one listing of those files, prices for the instances
(hooks/prices.py: cached in the lake per day), the allocation (costs.py), and one staged TSV per unit under
``staging/sample_costs/...`` (columns COLUMNS; include/sql/staging/sample_costs.sql declares the same).
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable

from costs import Attempt, FileSystem, Instance, Job, allocate, per_unit
from platform_settings import PlatformSettings

ATTEMPTS_DATASET = "job_attempts"  # staged inputs of the costs task, not a published table
COLUMNS = ("run_id", "step", "attempts", "instance_type", "purchase_option", "vcpu_hours", "gib_hours", "cost_usd",
           "lost_to_reclaim_usd", "priced")
log = logging.getLogger(__name__)


def _prefix(settings: PlatformSettings, dataset: str, pipeline: str, run_id: str, project: str) -> str:
    from publishing import run_scope, staging_uri

    return staging_uri(settings.lake_root, dataset, pipeline, run_scope(run_id), project)


def instance_key(settings: PlatformSettings, fact: dict[str, Any]) -> str:
    """Which instance an attempt ran on: the local backend's one machine, or its container instance ARN."""
    from hooks.instances import LOCAL_INSTANCE

    return LOCAL_INSTANCE if settings.backend == "local" else fact.get("instance") or ""


def resolve_instances(settings: PlatformSettings, facts: Iterable[dict[str, Any]]) -> dict[str, Instance]:
    """The instances of these attempt facts. A lookup AWS refuses leaves them unknown (their cost is then
    not counted and the row says so); it never fails the job whose facts these are."""
    from hooks.instances import LOCAL_INSTANCE, InstanceLookup, local_instance

    if settings.backend == "local":
        return {LOCAL_INSTANCE: local_instance(settings.local_vcpus, settings.local_memory_mib)}
    arns = {f.get("instance") for f in facts if f.get("instance")}
    if not arns:
        return {}
    from hooks import backend
    from hooks.aws_clients import aws_client

    try:
        return InstanceLookup(aws_client(settings, "ecs"), aws_client(settings, "ec2"),
                              backend.job_state_store(settings)).resolve(arns)
    except Exception as exc:  # reporting must not change what happened to the job
        log.warning("could not resolve the container instances %s: %s", sorted(arns)[:5], exc)
        return {}


def stage_job_attempts(settings: PlatformSettings, *, pipeline: str, run_id: str, project: str, step: str,
                       vcpus: float, memory_mib: float, job_rows: list[dict[str, Any]],
                       instances: dict[str, Instance]) -> None:
    """Stage one JSON file per job (array child) of ``job_rows`` (job_facts.rows) with its attempts."""
    from batch_jobs.request import safe_name
    from hooks.lake import write_text

    prefix = _prefix(settings, ATTEMPTS_DATASET, pipeline, run_id, project)

    def one(row: dict[str, Any]) -> None:
        attempts = [{"started_ms": f.get("started_at"), "stopped_ms": f.get("stopped_at"),
                     "instance": instance_key(settings, f), "reason": f.get("reason") or ""}
                    for f in row.get("attempt_facts") or []]
        doc = {"job_id": row["job_id"], "unit": row["sample"], "step": step, "vcpus": vcpus,
               "memory_mib": memory_mib, "attempts": attempts,
               "instances": {a["instance"]: instances[a["instance"]].__dict__
                             for a in attempts if a["instance"] in instances}}
        write_text(settings, f"{prefix}sample_id={row['sample']}/{step}-{safe_name(row['job_id'])}.json",
                   json.dumps(doc, sort_keys=True))

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(one, job_rows))


def last_instance_type(settings: PlatformSettings, row: dict[str, Any], instances: dict[str, Instance]) -> str:
    """The instance type of a job's last attempt, for its job_runs row ("" when unknown)."""
    facts = row.get("attempt_facts") or []
    instance = instances.get(instance_key(settings, facts[-1])) if facts else None
    return instance.instance_type if instance else ""


def read_jobs(settings: PlatformSettings, pipeline: str, run_id: str, project: str
              ) -> tuple[list[Job], dict[str, Instance]]:
    """The run's staged jobs and the instances they ran on: one listing, then the files in parallel."""
    from hooks.lake import list_files, read_head

    prefix = _prefix(settings, ATTEMPTS_DATASET, pipeline, run_id, project)
    paths = [p for p in list_files(settings, prefix) if p.endswith(".json")]

    def read(path: str) -> dict[str, Any]:
        return json.loads(read_head(settings, prefix + path, 1 << 24))

    with ThreadPoolExecutor(max_workers=16) as pool:
        docs = list(pool.map(read, paths))
    instances: dict[str, Instance] = {}
    jobs = []
    for doc in docs:
        instances.update({k: Instance(**v) for k, v in doc["instances"].items()})
        jobs.append(Job(doc["job_id"], doc["unit"], doc["step"], float(doc["vcpus"]), float(doc["memory_mib"]),
                        tuple(Attempt(a["started_ms"], a["stopped_ms"], a["instance"], a["reason"])
                              for a in doc["attempts"])))
    return jobs, instances


def stage_run_costs(settings: PlatformSettings, *, pipeline: str, run_id: str, project: str, units: list[str],
                    fsx_of_dag: str | None = None, price_book: Any = None) -> dict[str, Any]:
    """Allocate the run's cost to ``units`` (its samples, or its traits) and stage the sample_costs rows; with
    ``fsx_of_dag`` (the run's DAG id), its FSx file systems too. Returns the run's total, each unit's cost, the
    units staged, whether every attempt was priced, and ``job_run_units``: every unit with a job in this run
    (its samples and its own jobs: index build, report, merge), the units of its job_runs rows."""
    import time

    from hooks.lake import write_text
    from hooks.prices import PriceBook

    jobs, instances = read_jobs(settings, pipeline, run_id, project)
    book = price_book or PriceBook(settings)
    file_systems = (run_file_systems(settings, fsx_of_dag, run_id, book, int(time.time() * 1000))
                    if fsx_of_dag else [])
    rows = allocate(jobs, list(units), instances,
                    lambda instance, attempt: book.hourly(instance, attempt.started_ms or 0), file_systems)
    book.save()
    prefix = _prefix(settings, "sample_costs", pipeline, run_id, project)
    by_unit: dict[str, list[list[Any]]] = {}
    for r in rows:
        by_unit.setdefault(r.sample, []).append([run_id, *r.values()[1:]])
    header = "\t".join(COLUMNS) + "\n"

    def one(item: tuple[str, list[list[Any]]]) -> None:
        unit, values = item
        write_text(settings, f"{prefix}sample_id={unit}/costs.tsv",
                   header + "".join("\t".join("" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
                                              for v in line) + "\n" for line in values))

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(one, by_unit.items()))
    costs = per_unit(rows)
    return {"total_usd": round(sum(costs.values()), 6), "per_unit": {u: round(c, 6) for u, c in costs.items()},
            "units": sorted(by_unit), "priced": all(r.priced for r in rows), "price_calls": dict(book.calls),
            "job_run_units": sorted({job.unit for job in jobs})}


def run_file_systems(settings: PlatformSettings, dag_id: str, run_id: str, book: Any, now_ms: int
                     ) -> list[FileSystem]:
    """The run's FSx file systems (found by the tags every FsxCreateOperator puts on them, whatever the
    pipeline) priced from their deployment type and throughput, existing from their creation until ``now_ms``
    (the costs task runs before the teardown deletes them; the minutes until deletion are not counted). The
    local backend's stand-in file systems are directories and cost nothing."""
    from types import SimpleNamespace

    from hooks import backend
    from operators.fsx import file_systems_of_run

    if settings.backend == "local":
        return []  # the local stand-in is a directory on this machine: it costs nothing more
    out = []
    for fs in file_systems_of_run(backend.fsx(settings), settings, SimpleNamespace(dag_id=dag_id, run_id=run_id)):
        lustre = fs.get("LustreConfiguration") or {}
        kind = lustre.get("DeploymentType") or "SCRATCH_2"
        price = book.fsx_per_gib_month(kind, lustre.get("PerUnitStorageThroughput"))
        if price is None:
            log.warning("no price for FSx for Lustre %s: file system %s is not counted", kind, fs["FileSystemId"])
            continue
        created = int(fs["CreationTime"].timestamp() * 1000)
        out.append(FileSystem(fs["FileSystemId"], float(fs["StorageCapacity"]), price, created, max(created, now_ms)))
    return out


def summary_line(pipeline: str, costed: dict[str, Any] | None) -> str:
    """The run's cost for its final summary."""
    if not costed or not costed.get("units"):
        return f"{pipeline}: no job of this run was costed"
    n = len(costed["units"])
    note = "" if costed.get("priced") else " (some attempts had no known instance or price: not counted)"
    return (f"{pipeline}: estimated cost ${costed['total_usd']:.4f} for {n} unit(s), "
            f"${costed['total_usd'] / n:.4f} each on average{note}; see sample_costs")
