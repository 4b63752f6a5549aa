"""A simulated AWS Batch control plane for what moto lacks.

moto 5.2.5 marks a Batch job SUCCEEDED the moment it is submitted, ignores retry strategies and never emits
EventBridge events. This double answers the Batch API calls of a real boto3 client (attached through
botocore's event hooks, so botocore still validates every request against the Batch model), moves jobs
through SUBMITTED -> PENDING -> RUNNABLE -> STARTING -> RUNNING -> SUCCEEDED | FAILED on a clock the test
advances, applies the retry strategy with the same rules as AWS (batch_model.retry_action), and publishes
every state change as a "Batch Job State Change" event through EventBridge (moto's), whose rule routes it
to SQS (moto's): the path the production code reads is the real one.

Faults a test can ask for: throttled SubmitJob calls, Spot reclaims (planned, or a random fraction),
non-zero exits, out-of-memory kills, timeouts (planned per job name, or per step and sample), dropped,
duplicated and reordered events, and jobs Batch has forgotten.
"""

from __future__ import annotations

import json
import random
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from botocore.awsrequest import AWSResponse

from batch_model import EVENT_DETAIL_TYPE, EVENT_SOURCE, OOM_REASON, TERMINAL, retry_action

SPOT_REASON = "Host EC2 (instance i-0abc123) terminated."
TIMEOUT_REASON = "Job attempt duration exceeded timeout"
EXIT_REASON = "Essential container in task exited"
PROGRESSION = ["SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING"]


@dataclass
class SimJob:
    job_id: str
    name: str
    queue_arn: str
    request: dict[str, Any]
    outcomes: list[str]
    created_at: int
    status: str = "SUBMITTED"
    status_reason: str = ""
    attempts: list[dict[str, Any]] = field(default_factory=list)
    started_at: int | None = None
    stopped_at: int | None = None
    parent: SimJob | None = None
    index: int | None = None
    children: list[SimJob] = field(default_factory=list)


class SimulatedBatch:
    def __init__(
        self,
        events_client: Any,
        *,
        region: str = "eu-west-1",
        account: str = "123456789012",
        job_queues: tuple[str, ...] = ("genomics-spot",),
        throttle_fraction: float = 0.0,
        drop_fraction: float = 0.0,
        max_duplicates: int = 0,
        reorder: bool = False,
        spot_fraction: float = 0.0,
        seed: int = 7,
        read_manifest: Any = None,
        container_instances: tuple[str, ...] = (),
    ):
        self.events = events_client
        self.region = region
        self.account = account
        self.queues = {q: f"arn:aws:batch:{region}:{account}:job-queue/{q}" for q in job_queues}
        self.throttle_fraction = throttle_fraction
        self.drop_fraction = drop_fraction
        self.max_duplicates = max_duplicates
        self.reorder = reorder
        self.spot_fraction = spot_fraction
        self.rng = random.Random(seed)
        # the ECS container instances of the compute environment: each attempt runs on one, picked by a hash of
        # the job and attempt (not the seeded generator, whose draws decide the faults)
        self.container_instances = list(container_instances)
        self.jobs: dict[str, SimJob] = {}
        self.calls: Counter[str] = Counter()
        self.submit_times: list[float] = []
        self.plans: dict[str, list[str]] = {}
        self.sample_plans: dict[tuple[str, str], list[str]] = {}
        # an array job's samples: the sample list at the manifest URI its children read (the lake is not
        # Batch's, so whoever builds the simulation says how to read it)
        self.read_manifest = read_manifest
        self.default_outcomes = ["ok"]
        self.clock_ms = 1_700_000_000_000
        self.events_published = 0
        self.events_dropped = 0
        self._clock = None  # callable returning seconds; the wall clock unless a test sets one

    # --- wiring --------------------------------------------------------------------------------
    def attach(self, client: Any) -> Any:
        """Answer this boto3 Batch client's calls from the simulation."""
        client.meta.events.register("before-parameter-build.batch.*", self._capture)
        client.meta.events.register("before-call.batch.*", self._answer)
        return client

    @staticmethod
    def _capture(params, context, **_):
        context["simulated_params"] = dict(params)

    def _answer(self, model, context, **_):
        params = context.pop("simulated_params", {})
        op = model.name
        self.calls[op] += 1
        try:
            body = getattr(self, f"_op_{op}")(params)
            return _response(200, body)
        except _ApiError as err:
            return _response(err.status, {"Error": {"Code": err.code, "Message": err.message}})

    def plan(self, key: str, outcomes: list[str]) -> None:
        """Outcomes of successive attempts for the job whose name contains ``key`` (or child key 'name[i]').

        Outcomes: "ok", "exit:N", "spot", "timeout", "oom" or "oom:N" (killed over its memory, exit code 137 or
        N: real Batch reports the kill only as the container reason, with whatever exit code the process got).
        """
        self.plans[key] = list(outcomes)

    def plan_sample(self, step: str, sample: str, outcomes: list[str]) -> None:
        """Outcomes of successive attempts for whichever job runs ``sample`` at ``step``: a job of that sample, or
        the child of an array whose manifest lists it at the child's index (a bad input follows its sample into
        every job, whatever the job's name or the sample's position). Same outcomes as ``plan``."""
        self.sample_plans[(step, sample)] = list(outcomes)

    # --- API ---------------------------------------------------------------------------------
    def _op_SubmitJob(self, params):
        import time

        self.submit_times.append(time.monotonic())
        if self.throttle_fraction and self.rng.random() < self.throttle_fraction:
            self.calls["SubmitJob_throttled"] += 1
            raise _ApiError(429, "TooManyRequestsException", "Too Many Requests")
        queue = params["jobQueue"]
        queue_arn = self.queues.get(queue) or (queue if queue in self.queues.values() else None)
        if queue_arn is None:
            raise _ApiError(400, "ClientException", f"JobQueue {queue} not found")
        job = SimJob(
            job_id=str(uuid.uuid4()),
            name=params["jobName"],
            queue_arn=queue_arn,
            request=params,
            outcomes=self._outcomes_for(params["jobName"], self._job_sample(params)),
            created_at=self.clock_ms,
        )
        self.jobs[job.job_id] = job
        size = (params.get("arrayProperties") or {}).get("size")
        samples = self._array_samples(params) if size else []
        for i in range(size or 0):
            sample = (self._step(params), samples[i]) if i < len(samples) else None
            child = SimJob(
                job_id=f"{job.job_id}:{i}", name=job.name, queue_arn=queue_arn, request=params,
                outcomes=self._outcomes_for(f"{job.name}[{i}]", sample), created_at=self.clock_ms, parent=job,
                index=i,
            )
            job.children.append(child)
            self.jobs[child.job_id] = child
        return {"jobArn": self._arn(job.job_id), "jobName": job.name, "jobId": job.job_id}

    def _op_DescribeJobs(self, params):
        ids = params["jobs"]
        if len(ids) > 100:
            raise _ApiError(400, "ClientException", "DescribeJobs accepts at most 100 jobs")
        return {"jobs": [self.detail(self.jobs[i]) for i in ids if i in self.jobs]}

    def _op_ListJobs(self, params):
        name_filter = next((f["values"][0] for f in params.get("filters", []) if f["name"] == "JOB_NAME"), None)
        queue_arn = self.queues.get(params["jobQueue"], params["jobQueue"])
        out = []
        for job in self.jobs.values():
            if job.parent or job.queue_arn != queue_arn:
                continue
            if name_filter is None and job.status != "RUNNING":
                continue  # without a filter or status, ListJobs lists RUNNING jobs only
            if name_filter is not None and not _name_matches(name_filter, job.name):
                continue
            out.append({"jobArn": self._arn(job.job_id), "jobId": job.job_id, "jobName": job.name,
                        "status": job.status, "createdAt": job.created_at})
        return {"jobSummaryList": out}

    def _op_TerminateJob(self, params):
        job = self.jobs.get(params["jobId"])
        if job is None:
            raise _ApiError(400, "ClientException", f"Job {params['jobId']} not found")
        targets = job.children or [job]
        for target in targets:
            if target.status not in TERMINAL:
                self._end_attempt(target, exit_code=None, status_reason=params["reason"], retryable=False)
        self._settle_parent(job)
        return {}

    # --- progression ---------------------------------------------------------------------------
    def step(self, seconds: int = 30, only: set[str] | None = None) -> list[SimJob]:
        """Advance the clock and move every unfinished job (or those in ``only``) one state forward,
        publishing the events. Returns the jobs that moved."""
        self.clock_ms += seconds * 1000
        batch: list[dict[str, Any]] = []
        moved: list[SimJob] = []
        for job in list(self.jobs.values()):
            if job.children or job.status in TERMINAL or (only is not None and job.job_id not in only):
                continue
            moved.append(job)
            if job.status == "RUNNING":
                self._run_attempt(job, batch)
            else:
                nxt = PROGRESSION[PROGRESSION.index(job.status) + 1]
                job.status = nxt
                if nxt == "RUNNING" and job.started_at is None:
                    job.started_at = self.clock_ms
                batch.append(self.detail(job))
        for job in list(self.jobs.values()):
            if job.children and job.status not in TERMINAL:
                before = job.status
                self._settle_parent(job)
                if job.status != before:
                    batch.append(self.detail(job))
        self._publish(batch)
        return moved

    def run_until_done(self, max_steps: int = 200) -> None:
        for _ in range(max_steps):
            if all(j.status in TERMINAL for j in self.jobs.values()):
                return
            self.step()
        raise AssertionError("simulated jobs did not finish")

    def forget(self, job_id: str) -> None:
        """Batch expires finished jobs after about a week: DescribeJobs no longer returns them."""
        job = self.jobs.pop(job_id)
        for child in job.children:
            self.jobs.pop(child.job_id, None)

    def _run_attempt(self, job: SimJob, batch: list[dict[str, Any]]) -> None:
        outcome = job.outcomes.pop(0) if job.outcomes else "ok"
        if outcome == "ok":
            self._end_attempt(job, exit_code=0, status_reason=EXIT_REASON)
        elif outcome.startswith("exit:"):
            self._end_attempt(job, exit_code=int(outcome[5:]), status_reason=EXIT_REASON)
        elif outcome == "spot":
            self._end_attempt(job, exit_code=None, status_reason=SPOT_REASON)
        elif outcome == "timeout":
            self._end_attempt(job, exit_code=None, status_reason=TIMEOUT_REASON, retryable=False)
        elif outcome == "oom" or outcome.startswith("oom:"):
            code = int(outcome[4:]) if outcome.startswith("oom:") else 137
            self._end_attempt(job, exit_code=code, status_reason=EXIT_REASON, reason=OOM_REASON)
        else:
            raise ValueError(f"unknown outcome {outcome!r}")
        batch.append(self.detail(job))

    def _end_attempt(self, job: SimJob, *, exit_code, status_reason: str, reason: str = "",
                     retryable: bool = True) -> None:
        container = {"exitCode": exit_code, "logStreamName": f"genomics-step/default/{uuid.uuid4().hex}"}
        if self.container_instances:
            pick = zlib.crc32(f"{job.job_id}/{len(job.attempts)}".encode()) % len(self.container_instances)
            container["containerInstanceArn"] = self.container_instances[pick]
        if reason:
            container["reason"] = reason
        job.attempts.append(
            {
                "container": container,
                "startedAt": job.started_at or self.clock_ms,
                "stoppedAt": self.clock_ms,
                "statusReason": status_reason,
            }
        )
        strategy = job.request.get("retryStrategy") or {"attempts": 1}
        if exit_code == 0:
            job.status, job.status_reason, job.stopped_at = "SUCCEEDED", status_reason, self.clock_ms
        elif (
            retryable
            and len(job.attempts) < strategy.get("attempts", 1)
            and retry_action(strategy, status_reason=status_reason, reason=reason, exit_code=exit_code) == "RETRY"
        ):
            job.status, job.status_reason = "RUNNABLE", status_reason
        else:
            job.status, job.status_reason, job.stopped_at = "FAILED", status_reason, self.clock_ms

    def _settle_parent(self, job: SimJob) -> None:
        if not job.children:
            return
        statuses = [c.status for c in job.children]
        if all(s in TERMINAL for s in statuses):
            failed = statuses.count("FAILED")
            job.status = "FAILED" if failed else "SUCCEEDED"
            job.status_reason = f"Array Child Job failed: {failed} of {len(statuses)}" if failed else ""
            job.stopped_at = self.clock_ms
        elif job.status == "SUBMITTED":
            job.status = "PENDING"
        elif "RUNNING" in statuses and job.status == "PENDING":
            job.status, job.started_at = "RUNNING", self.clock_ms

    # --- events ----------------------------------------------------------------------------------
    def detail(self, job: SimJob) -> dict[str, Any]:
        detail: dict[str, Any] = {
            "jobArn": self._arn(job.job_id),
            "jobName": job.name,
            "jobId": job.job_id,
            "jobQueue": job.queue_arn,
            "status": job.status,
            "statusReason": job.status_reason,
            "attempts": list(job.attempts),
            "createdAt": job.created_at,
            "dependsOn": [],
            "jobDefinition": f"arn:aws:batch:{self.region}:{self.account}:job-definition/{job.request['jobDefinition']}:1",
            "parameters": {},
            "tags": job.request.get("tags", {}),
            "propagateTags": job.request.get("propagateTags", False),
            "platformCapabilities": ["EC2"],
            "container": {"command": job.request.get("containerOverrides", {}).get("command", [])},
        }
        if job.started_at:
            detail["startedAt"] = job.started_at
        if job.stopped_at:
            detail["stoppedAt"] = job.stopped_at
        if job.attempts:
            detail["container"].update(job.attempts[-1]["container"])
        if job.children:
            summary = Counter(c.status for c in job.children)
            detail["arrayProperties"] = {"size": len(job.children), "statusSummary": dict(summary)}
        elif job.parent is not None:
            detail["arrayProperties"] = {"index": job.index}
        return detail

    def _publish(self, details: list[dict[str, Any]]) -> None:
        entries = []
        for detail in details:
            if self.drop_fraction and self.rng.random() < self.drop_fraction:
                self.events_dropped += 1
                continue
            copies = 1 + (self.rng.randint(0, self.max_duplicates) if self.max_duplicates else 0)
            entries += [detail] * copies
        if self.reorder:
            self.rng.shuffle(entries)
        self.publish_details(entries)

    def publish_details(self, details: list[dict[str, Any]]) -> None:
        """Put events on the default bus exactly as Batch does (also used by tests to replay old events)."""
        for start in range(0, len(details), 10):  # PutEvents takes 10 entries a call
            chunk = details[start : start + 10]
            resp = self.events.put_events(
                Entries=[
                    {
                        "Source": EVENT_SOURCE,
                        "DetailType": EVENT_DETAIL_TYPE,
                        "Detail": json.dumps(d),
                        "Resources": [d["jobArn"]],
                        "EventBusName": "default",
                    }
                    for d in chunk
                ]
            )
            assert resp["FailedEntryCount"] == 0, resp
            self.events_published += len(chunk)

    @staticmethod
    def _environment(params: dict[str, Any]) -> dict[str, str]:
        return {e["name"]: e["value"] for e in (params.get("containerOverrides") or {}).get("environment", [])}

    def _step(self, params: dict[str, Any]) -> str:
        return self._environment(params).get("GENOMICS_STEP", "")

    def _job_sample(self, params: dict[str, Any]) -> tuple[str, str] | None:
        """(step, sample) of a job of one sample, from the environment the job would read it from."""
        env = self._environment(params)
        return (env.get("GENOMICS_STEP", ""), env["GENOMICS_SAMPLE"]) if env.get("GENOMICS_SAMPLE") else None

    def _array_samples(self, params: dict[str, Any]) -> list[str]:
        """The samples of an array job's children, in index order (only needed when samples are planned)."""
        uri = self._environment(params).get("GENOMICS_MANIFEST_URI")
        if not self.sample_plans or not uri:
            return []
        if self.read_manifest is None:
            raise AssertionError("outcomes are planned per sample but the simulation cannot read manifests")
        return list(self.read_manifest(uri))

    def _outcomes_for(self, name: str, sample: tuple[str, str] | None = None) -> list[str]:
        if sample in self.sample_plans:
            return list(self.sample_plans[sample])
        for key, outcomes in self.plans.items():
            if key in name:
                return list(outcomes)
        if self.spot_fraction and self.rng.random() < self.spot_fraction:
            return ["spot", *self.default_outcomes]  # reclaimed once, then as planned
        return list(self.default_outcomes)

    def _arn(self, job_id: str) -> str:
        return f"arn:aws:batch:{self.region}:{self.account}:job/{job_id}"


def _name_matches(pattern: str, name: str) -> bool:
    return name.startswith(pattern[:-1]) if pattern.endswith("*") else name == pattern


class _ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _response(status: int, body: dict[str, Any]):
    body = {**body, "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": str(uuid.uuid4())}}
    return AWSResponse("https://batch.simulated", status, {}, None), body
