"""Scale harness: the rnaseq DAG over a NovaSeq flow cell (1,536 samples) through a real Airflow 3.3 scheduler,
dag-processor, triggerer and api-server (LocalExecutor, SQLite), against the simulated AWS control plane of
benchmarks/simulated_aws.py (moto's server + the simulated Batch that emits events, time-compressed).

    ./dev bench scale                                  # 1,536 samples, array fan-out, 0% then 90% done
    ./dev bench scale --samples 200 --fan-out mapped --done 0
    ./dev bench scale --dag provider_batch_array       # the amazon provider's BatchOperator, side by side
    ./dev bench scale --faults                         # the fault-injection run (see --help)
    ./dev bench scale --bad-samples 0.01 --done 0      # 1% of the samples fail fastp at every attempt

Reports, per run: SubmitJob / DescribeJobs calls, SQS ReceiveMessage / S3 ListObjectsV2 calls until the
per-sample steps were over (and, as run_*, until the run's end), seconds from the trigger to the first and to the
last submission and from the run's start to the end of its steps, outcomes, publishing and itself, task instances created, peak triggerer slots (rows in the
trigger table), the CPU seconds of the scheduler and of the task processes its LocalExecutor ran, how every
sample ended (its Batch jobs per step, duplicates, the step a bad sample failed at), the state of the run and of
each task, and what the run decided about its samples: the ``outcomes`` task's XCom, the sample_outcomes rows it
staged, and the failure its last task (``verdict``) names.

A run waits until the DAG run itself ends. The simulated jobs write no outputs, so the run's own check of what
is complete (``outcomes`` lists the results in the lake) finds only the samples planted as done; a sample that
ran here is complete when each of its steps' Batch jobs succeeded.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "plugins"), str(ROOT / "include"), str(ROOT / "benchmarks")]

import boto3  # noqa: E402
import psutil  # noqa: E402

import simulated_aws  # noqa: E402
from genomics_steps import layout  # noqa: E402
from job_facts import parse_outcome_file  # noqa: E402
from tests.doubles.airflow_process import airflow_env, free_port  # noqa: E402

PROJECT, REFERENCE, VERSION = "flowcell", "synthetic-v1", "1.0"
STEPS = ["fastp", "salmon_quant"]
TERMINAL_TI = {"success", "failed", "upstream_failed", "skipped", "removed"}
TERMINAL_RUN = {"success", "failed"}
# a bad sample (--bad-samples): its reads are corrupt, so fastp exits 1 at every attempt Batch makes
BAD_STEP, BAD_OUTCOMES = "fastp", ["exit:1"] * 10
# The fault-injection run: each event delivered 1-3 times and reordered, 5% dropped, 30% of SubmitJob calls
# throttled, 10% of jobs reclaimed once as Spot, the triggerer killed three times mid-run, and the first
# submitting worker killed right after its SubmitJob (keys with "_" are the harness's, the rest the simulator's).
FAULTS = {"max_duplicates": 2, "reorder": True, "drop_fraction": 0.05, "throttle_fraction": 0.3,
          "spot_fraction": 0.1, "_kill_triggerer": 3, "_kill_after_submit": 1}
DAG_FILES = {"rnaseq": ROOT / "dags" / "rnaseq.py",
             "provider_batch": ROOT / "benchmarks" / "dags" / "provider_batch.py",
             "provider_batch_array": ROOT / "benchmarks" / "dags" / "provider_batch.py"}


def plant_lake(s3: Any, lake: str, samples: list[str], done: list[str]) -> None:
    """Reads for every sample, the reference with its index, and complete outputs for the ``done`` ones."""
    bucket, _, prefix = lake.removeprefix("s3://").partition("/")

    def put(uri: str, body: bytes = b"x") -> None:
        s3.put_object(Bucket=bucket, Key=uri.removeprefix(f"s3://{bucket}/"), Body=body)

    ref = layout.reference_prefix(lake, REFERENCE)
    for name in ("transcriptome.fa", "tx2gene.tsv", f"index/salmon/{layout.METRICS}"):
        put(ref + name)
    for sample in samples:
        for uri in layout.reads_uris(layout.raw_prefix(lake, PROJECT), sample):
            put(uri)
    for sample in done:
        for step in STEPS:
            put(layout.step_prefix(lake, "rnaseq", VERSION, PROJECT, sample, step) + layout.METRICS, b"{}")


def stage_report_row(s3: Any, lake: str, run_id: str) -> None:
    """The one output of the run's multiqc job that Airflow reads back: its staged run_reports row. The simulated
    Batch runs no step code, so the harness writes what the job would (genomics_steps.run_report)."""
    bucket = lake.removeprefix("s3://").partition("/")[0]
    run = layout.run_key(run_id)
    uri = layout.staging_prefix(lake, "run_reports", "rnaseq", run, PROJECT) + f"run_label={run}/report.tsv"
    columns = ["run_id", "uri", "samples", "failed", "excluded", "failed_samples", "excluded_samples"]
    row = [run_id, f"{lake}/reports/simulated.html", "0", "0", "0", "", ""]
    body = "\t".join(columns) + "\n" + "\t".join(row) + "\n"
    s3.put_object(Bucket=bucket, Key=uri.removeprefix(f"s3://{bucket}/"), Body=body.encode())


class Airflow:
    """api-server, scheduler, dag-processor and triggerer as separate processes (the triggerer can be killed
    and restarted), on a fresh SQLite database."""

    def __init__(self, home: Path, env: dict[str, str], dag_file: Path):
        self.home = home
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        bin_dir = Path(sys.executable).parent
        self.env = airflow_env(
            home, bin_dir, dags_folder=self._dags_folder(dag_file), api_port=self.port, **env,
            AIRFLOW__CORE__MAX_MAP_LENGTH="4096",
            AIRFLOW__TRIGGERER__CAPACITY="4000",
            AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL="600",
            # time is compressed (a job lasts seconds), so are the silence after which DescribeJobs is asked
            # and the wait before a failed task's retry (Airflow's default is 300 s)
            GENOMICS_RECONCILE_AFTER_SECONDS="30",
            AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY="10",
        )
        self.airflow = str(bin_dir / "airflow")
        self.procs: dict[str, subprocess.Popen] = {}
        subprocess.run([self.airflow, "db", "migrate"], env=self.env, check=True, capture_output=True)
        subprocess.run([self.airflow, "pools", "import", str(ROOT / "pools.json")], env=self.env, check=True,
                       capture_output=True)

    def _dags_folder(self, dag_file: Path) -> Path:
        """Only the DAG under test (a link to it), so the dag-processor parses nothing else."""
        folder = self.home / "dags"
        folder.mkdir()
        (folder / dag_file.name).symlink_to(dag_file)
        return folder

    def start(self, component: str) -> None:
        log = open(self.home / f"{component}.log", "a")
        self.procs[component] = subprocess.Popen([self.airflow, component], env=self.env, stdout=log,
                                                 stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self, component: str) -> None:
        proc = self.procs.pop(component)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        for component in list(self.procs):
            self.kill(component)

    def api(self, path: str, body: dict | None = None, method: str | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method or ("POST" if data else "GET"),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def db(self, sql: str, *params: Any) -> list[tuple]:
        with sqlite3.connect(f"file:{self.home / 'airflow.db'}?mode=ro", uri=True, timeout=10) as conn:
            return conn.execute(sql, params).fetchall()


def bad_samples(todo: list[str], fraction: float, seed: int) -> list[str]:
    """``fraction`` of the samples to run (at least one when it is not 0), drawn by ``seed``: the same ones for
    the same flags, scattered over the arrays."""
    if not fraction:
        return []
    count = max(1, round(len(todo) * fraction))
    return sorted(random.Random(seed).sample(todo, min(count, len(todo))))


def run_once(args: argparse.Namespace, done_fraction: float, faults: dict[str, Any]) -> dict[str, Any]:
    samples = [f"S{i:04d}" for i in range(args.samples)]
    done = samples[: int(len(samples) * done_fraction)]
    bad = bad_samples(samples[len(done):], getattr(args, "bad_samples", 0.0), args.seed)
    home = Path(tempfile.mkdtemp(prefix="scale-airflow-"))
    sim_faults = {k: v for k, v in faults.items() if not k.startswith("_")}
    moto, batch, env = simulated_aws.start(moto_port=free_port(), batch_port=free_port(),
                                           tick_seconds=args.tick, seed=args.seed,
                                           instances=getattr(args, "instances", 0), **sim_faults)
    batch.kill_after_submit = faults.get("_kill_after_submit", 0)
    for sample in bad:
        batch.sim.plan_sample(BAD_STEP, sample, BAD_OUTCOMES)
    plant_lake(boto3.client("s3", region_name="eu-west-1"), env["GENOMICS_LAKE_URI"], samples, done)
    dag_id = args.dag
    airflow = Airflow(home, env, DAG_FILES[dag_id])
    try:
        for component in ("api-server", "scheduler", "dag-processor", "triggerer"):
            airflow.start(component)
        simulated_aws.wait_for(lambda: _dag_ready(airflow, dag_id), 300, 2, f"the {dag_id} DAG to be parsed")
        airflow.api(f"/api/v2/dags/{dag_id}", {"is_paused": False}, method="PATCH")
        moto.clear_counts()
        batch.sim.calls.clear()
        batch.sim.submit_times.clear()
        scheduler = psutil.Process(airflow.procs["scheduler"].pid)
        cpu_before = _cpu(scheduler)
        conf = {"project": PROJECT, "samples": samples, "reference": REFERENCE, "pipeline_version": VERSION,
                "fan_out": args.fan_out} if dag_id == "rnaseq" else {"samples": samples}  # it cannot skip any
        started = time.monotonic()
        run_id = airflow.api(f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})["dag_run_id"]
        if dag_id == "rnaseq":
            stage_report_row(boto3.client("s3", region_name="eu-west-1"), env["GENOMICS_LAKE_URI"], run_id)
        peak_triggers, kills, deadline, deferred_since = 0, 0, started + args.timeout, None
        steps_counts = None  # moto's counts when the per-sample steps were over (before outcomes and publishing)
        while time.monotonic() < deadline:
            time.sleep(2)
            triggers = airflow.db("SELECT count(*) FROM trigger")[0][0]
            peak_triggers = max(peak_triggers, triggers)
            if triggers and deferred_since is None:
                deferred_since = time.monotonic()
            # mid-run, while tasks are deferred on it: 10 s after the first deferral, then every 20 s
            if (kills < faults.get("_kill_triggerer", 0) and triggers
                    and time.monotonic() >= deferred_since + 10 + 20 * kills):
                airflow.kill("triggerer")
                time.sleep(3)
                airflow.start("triggerer")
                kills += 1
            if steps_counts is None:
                states = _per_sample_states(airflow, run_id)
                if states["total"] and states["open"] == 0:
                    steps_counts = moto.counts()
            if _run_state(airflow, run_id) in TERMINAL_RUN:
                break
        elapsed = time.monotonic() - started
        cpu = [after - before for after, before in zip(_cpu(scheduler), cpu_before)]
        tis = airflow.db("SELECT count(*) FROM task_instance WHERE run_id = ?", run_id)[0][0]
        states = _per_sample_states(airflow, run_id)
        jobs = _job_outcomes(batch.sim)
        outcomes = _run_outcomes(airflow, run_id, env["GENOMICS_LAKE_URI"]) if dag_id == "rnaseq" else {}
        submits = sorted(batch.sim.submit_times)
        counts = moto.counts()
        steps_counts = steps_counts or counts
        return {
            "dag": dag_id, "samples": len(samples), "done_before": len(done),
            "fan_out": args.fan_out if dag_id == "rnaseq" else ("array" if dag_id.endswith("_array") else "mapped"),
            "faults": faults, "bad_samples": bad,
            "run_state": _run_state(airflow, run_id), "tasks": _task_states(airflow, run_id),
            "phases_s": _phases(airflow, run_id),
            "submit_job": batch.sim.calls["SubmitJob"],
            "submit_throttled": batch.sim.calls["SubmitJob_throttled"],
            "describe_jobs": batch.sim.calls["DescribeJobs"], "list_jobs": batch.sim.calls["ListJobs"],
            # until the per-sample steps were over, and until the run's end (outcomes and publishing too)
            "sqs_receive": steps_counts["sqs:ReceiveMessage"], "s3_list": steps_counts["s3:ListObjectsV2"],
            "run_sqs_receive": counts["sqs:ReceiveMessage"], "run_s3_list": counts["s3:ListObjectsV2"],
            # cost facts: what the jobs ran on (one lookup per new instance) and its prices
            "instance_lookups": {op: counts[op] for op in ("ecs:DescribeContainerInstances",
                                                           "ec2:DescribeInstances", "ec2:DescribeInstanceTypes",
                                                           "ec2:DescribeSpotPriceHistory") if counts[op]},
            "first_submit_s": round(submits[0] - started, 1) if submits else None,
            "last_submit_s": round(submits[-1] - started, 1) if submits else None,
            "elapsed_s": round(elapsed, 1), "task_instances": tis, "peak_triggers": peak_triggers,
            "scheduler_cpu_s": round(cpu[0], 1), "task_cpu_s": round(cpu[1], 1), "triggerer_kills": kills,
            "workers_killed": len(batch.killed),
            "per_sample_tis": states,
            "events_published": batch.sim.events_published, "events_dropped": batch.sim.events_dropped,
            **jobs, **_sample_ends(batch.sim, samples, done), **outcomes,
        }
    finally:
        airflow.stop()
        batch.stop()
        moto.stop()


def _dag_ready(airflow: Airflow, dag_id: str) -> bool:
    try:
        return airflow.api(f"/api/v2/dags/{dag_id}")["dag_id"] == dag_id
    except OSError:
        return False


def _per_sample_states(airflow: Airflow, run_id: str) -> dict[str, int]:
    rows = airflow.db("SELECT state, count(*) FROM task_instance WHERE run_id = ? AND "
                      "(task_id LIKE 'per_sample.%' OR task_id IN ('fastp', 'salmon_quant')) GROUP BY state", run_id)
    counts = {str(state): n for state, n in rows}
    total = sum(counts.values())
    return {"total": total, "open": sum(n for s, n in counts.items() if s not in TERMINAL_TI), **counts}


def _run_state(airflow: Airflow, run_id: str) -> str | None:
    rows = airflow.db("SELECT state FROM dag_run WHERE run_id = ?", run_id)
    return rows[0][0] if rows else None


def _task_states(airflow: Airflow, run_id: str) -> dict[str, dict[str, int]]:
    """Each task's instances by state (a mapped task's map indexes counted together)."""
    out: dict[str, dict[str, int]] = {}
    for task_id, state, n in airflow.db("SELECT task_id, state, count(*) FROM task_instance WHERE run_id = ? "
                                        "GROUP BY task_id, state ORDER BY task_id", run_id):
        out.setdefault(task_id, {})[str(state)] = n
    return out


def _phases(airflow: Airflow, run_id: str) -> dict[str, float]:
    """Seconds from the DAG run's start to the end of its per-sample steps, of ``outcomes``, of the last
    publish task and of the run (the metadata database's own times)."""
    from datetime import datetime

    def seconds(sql: str) -> float | None:
        rows = airflow.db(sql, run_id)
        if not rows or rows[0][0] is None:
            return None
        start, end = (datetime.fromisoformat(str(v)) for v in rows[0])
        return round((end - start).total_seconds(), 1)

    run_start = "(SELECT start_date FROM dag_run WHERE run_id = ?1)"
    phases = {
        "steps": seconds(f"SELECT {run_start}, max(end_date) FROM task_instance WHERE run_id = ?1 AND "
                         "(task_id LIKE 'per_sample.%' OR task_id IN ('fastp', 'salmon_quant'))"),
        "outcomes": seconds(f"SELECT {run_start}, end_date FROM task_instance WHERE run_id = ?1 "
                            "AND task_id = 'outcomes'"),
        "publish": seconds(f"SELECT {run_start}, max(end_date) FROM task_instance WHERE run_id = ?1 "
                           "AND task_id LIKE 'publish_%'"),
        "run": seconds("SELECT start_date, end_date FROM dag_run WHERE run_id = ?1"),
    }
    return {k: v for k, v in phases.items() if v is not None}


def _run_outcomes(airflow: Airflow, run_id: str, lake: str) -> dict[str, Any]:
    """What the run decided about its samples: the ``outcomes`` task's XCom (how many to publish, which
    failed and at which step, whether it stopped), the sample_outcomes rows staged in the lake for
    ``publish_sample_outcomes`` (by step and outcome, and every failed row's reason and log), and the failure
    the ``verdict`` task raised, from its log."""
    decision: dict[str, Any] = {}
    for key, value in airflow.db("SELECT key, value FROM xcom WHERE run_id = ? AND task_id = 'outcomes' "
                                 "AND key IN ('publish', 'failed', 'excluded', 'stopped')", run_id):
        decision[key] = json.loads(value) if isinstance(value, (str, bytes)) else value
    s3 = boto3.client("s3", region_name="eu-west-1")
    bucket = lake.removeprefix("s3://").partition("/")[0]
    prefix = layout.staging_prefix(lake, "sample_outcomes", "rnaseq", layout.run_key(run_id), PROJECT)
    key_prefix = prefix.removeprefix(f"s3://{bucket}/")
    staged: Counter[str] = Counter()
    failed_rows = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix):
        for obj in page.get("Contents", []):
            parsed = parse_outcome_file(obj["Key"][len(key_prefix):])
            if not parsed:
                continue
            sample, step, outcome = parsed
            staged[f"{step} {outcome}"] += 1
            if outcome == "failed":
                header, line = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode().splitlines()[:2]
                row = dict(zip(header.split("\t"), line.split("\t")))
                failed_rows.append({"sample": sample, "step": step, "reason": row.get("reason", ""),
                                    "log": row.get("log", ""), "log_tail": row.get("log_tail", "")})
    return {"outcomes_publish": len(decision.get("publish") or []), "outcomes_failed": decision.get("failed"),
            "outcomes_excluded": decision.get("excluded"), "outcomes_stopped": decision.get("stopped"),
            "sample_outcomes_staged": dict(sorted(staged.items())),
            "sample_outcomes_failed_rows": sorted(failed_rows, key=lambda r: r["sample"]),
            "verdict_error": _verdict_error(airflow.home, run_id)}


def _verdict_error(home: Path, run_id: str) -> str | None:
    """The message of the failure the verdict task raised (the last attempt's log), or None."""
    logs = sorted((home / "logs").glob("dag_id=*/run_id=*/task_id=verdict/attempt=*.log"))
    for log in reversed(logs):
        if run_id not in str(log.parent.parent):
            continue
        for line in reversed(log.read_text(errors="replace").splitlines()):
            try:
                errors = json.loads(line).get("error_detail") or []
            except ValueError:
                continue
            if errors:
                return str(errors[-1].get("exc_value"))
    return None


def _sample_ends(sim: Any, samples: list[str], done: list[str]) -> dict[str, Any]:
    """How each sample ended in Batch, from the simulated jobs (whose environment names their step and sample
    or manifest): ``samples_complete`` ran every step to SUCCEEDED; ``samples_failed_at`` counts the samples
    by the first step where no job of theirs succeeded; ``jobs_per_step`` counts SubmitJob'd jobs (arrays as
    one) and the samples' work items; ``sample_reruns`` counts the extra jobs of (sample, step) pairs that
    succeeded: a good sample submitted twice would show here."""
    per_pair: dict[tuple[str, str], list[str]] = {}
    jobs_per_step: Counter[str] = Counter()
    for job in sim.jobs.values():
        if job.parent is not None:
            continue
        env = sim._environment(job.request)
        step = env.get("GENOMICS_STEP")
        if not step:
            return {}  # not our DAG's jobs (the provider's): no sample is named
        jobs_per_step[step] += 1
        if job.children:
            names = sim.read_manifest(env["GENOMICS_MANIFEST_URI"])
            items = [(names[c.index], c.status) for c in job.children]
        else:
            items = [(env.get("GENOMICS_SAMPLE", step), job.status)]
        for sample, status in items:
            per_pair.setdefault((sample, step), []).append(status)
    complete, failed_at = 0, Counter()
    for sample in samples:
        if sample in done:
            continue
        bad_step = next((step for step in STEPS if "SUCCEEDED" not in per_pair.get((sample, step), [])), None)
        if bad_step is None:
            complete += 1
        elif per_pair.get((sample, bad_step)):
            failed_at[bad_step] += 1
    return {"samples_complete": complete, "samples_failed_at": dict(failed_at),
            "samples_never_run": sum(1 for s in samples if s not in done and not per_pair.get((s, STEPS[0]))),
            "jobs_per_step": dict(jobs_per_step),
            "work_items_per_step": dict(Counter(step for (_, step), items in per_pair.items() for _ in items)),
            "sample_reruns": sum(len(items) - 1 for items in per_pair.values() if "SUCCEEDED" in items)}


def _job_outcomes(sim: Any) -> dict[str, Any]:
    """How the Batch work ended: jobs by status, and duplicate submissions (two jobs of the same name)."""
    parents = [j for j in sim.jobs.values() if j.parent is None]
    names = Counter(j.name for j in parents)
    children = [j for j in sim.jobs.values() if j.parent is not None]
    units = children + [j for j in parents if not j.children]
    return {"jobs_submitted": len(parents), "duplicate_job_names": sum(n - 1 for n in names.values() if n > 1),
            "work_items": dict(Counter(j.status for j in units)),
            "spot_retries": sum(1 for j in units if any("Host EC2" in a["statusReason"] for a in j.attempts))}


def _cpu(scheduler: psutil.Process) -> tuple[float, float]:
    """CPU seconds of the scheduler process itself, and of everything under it: with LocalExecutor that is
    the executor's workers and every task process they ran (those that ended are counted in their parent's
    children times)."""
    own = scheduler.cpu_times()
    tasks = own.children_user + own.children_system
    for p in scheduler.children(recursive=True):
        try:
            t = p.cpu_times()
            tasks += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return own.user + own.system, tasks


def _fraction(value: str) -> float:
    try:
        fraction = float(value)
    except ValueError:
        fraction = float("nan")
    if not 0 <= fraction < 1:  # NaN too
        raise argparse.ArgumentTypeError(f"--bad-samples must be at least 0 and below 1, got {value!r}")
    return fraction


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1536)
    parser.add_argument("--dag", default="rnaseq", choices=sorted(DAG_FILES),
                        help="provider_batch: the amazon provider's BatchOperator(deferrable=True), one per "
                        "sample and step; provider_batch_array: one array job per step")
    parser.add_argument("--fan-out", default="array", choices=["array", "mapped", "auto"])
    parser.add_argument("--done", type=float, action="append", help="fraction of samples already complete "
                        "(repeatable; default 0 and 0.9)")
    parser.add_argument("--tick", type=float, default=1.0, help="seconds per simulated state change")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--faults", action="store_true", help="events duplicated up to 3x and reordered, 5%% "
                        "dropped, 30%% of SubmitJob throttled, 10%% of jobs reclaimed once, triggerer killed 3x, "
                        "the first submitting worker killed right after its SubmitJob")
    parser.add_argument("--bad-samples", type=_fraction, default=0.0, metavar="F",
                        help="this fraction of the samples to run (seeded by --seed) fails fastp at every attempt "
                        "(exit code 1, as a corrupt FASTQ would); the run should publish the others and fail at "
                        "its verdict naming them")
    parser.add_argument("--instances", type=int, default=48, help="container instances the simulated jobs "
                        "run on (half Spot c5.4xlarge, half on-demand m5.4xlarge), resolved by the cost facts")
    parser.add_argument("--out", type=Path, help="write the results as JSON here too")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopping the harness stops its Airflow too
    faults = FAULTS if args.faults else {}
    results = []
    for fraction in args.done or [0.0, 0.9]:
        result = run_once(args, fraction, faults)
        print(json.dumps(result), flush=True)
        results.append(result)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
