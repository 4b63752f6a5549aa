"""The simulated AWS control plane as servers on loopback, for Airflow processes that are not this one.

- moto's server answers SQS, EventBridge, DynamoDB, S3 and Athena, in a process of its own; a WSGI wrapper
  counts the requests by operation (ReceiveMessage, ListObjectsV2, ...).
- The Batch API (REST-JSON, as botocore sends it) is answered by tests/doubles/simulated_batch.py behind an HTTP
  server. A ticker moves every unfinished job one state forward per tick (time-compressed: a job takes about six
  ticks from submission to its end) and the simulator publishes each change as a "Batch Job State Change" event
  through moto's EventBridge, whose rule (built from infra/genomics.yaml) routes it to the SQS queue.

Airflow processes reach them through AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_BATCH (botocore's per-service
endpoint variables), so the production code runs unchanged.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote

import boto3

BATCH_PATHS = {"/v1/submitjob": "SubmitJob", "/v1/describejobs": "DescribeJobs", "/v1/listjobs": "ListJobs",
               "/v1/terminatejob": "TerminateJob"}


COUNTS_PATH = "/_harness/counts"  # GET: the counts so far as JSON; DELETE: start counting again


def _count_middleware(app: Any) -> Any:
    """Count moto's requests as service:Operation (JSON protocols by X-Amz-Target, S3 lists by query), and
    answer COUNTS_PATH with them."""
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def wrapped(environ, start_response):
        if environ.get("PATH_INFO") == COUNTS_PATH:
            with lock:
                if environ.get("REQUEST_METHOD") == "DELETE":
                    counts.clear()
                body = json.dumps(counts).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        scope = re.search(r"Credential=[^/]+/\d+/[^/]+/([a-z0-9-]+)/", environ.get("HTTP_AUTHORIZATION", ""))
        if target:
            name = target.split(".")[-1]
            service = "sqs" if target.startswith("AmazonSQS") else target.split("_")[0].split(".")[0].lower()
            if target.startswith("AmazonEC2ContainerService"):
                service = "ecs"
        elif scope and scope.group(1) == "ec2" and environ.get("REQUEST_METHOD") == "POST":
            # the query protocol: the operation is the form body's Action (read, then handed on unread)
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)
            service, name = "ec2", (parse_qs(body.decode()).get("Action") or ["?"])[0]
        else:
            query = parse_qs(environ.get("QUERY_STRING", ""))
            method = environ.get("REQUEST_METHOD", "")
            if "list-type" in query or (method == "GET" and environ.get("PATH_INFO", "/").count("/") <= 1
                                        and "prefix" in query):
                service, name = "s3", "ListObjectsV2"
            else:
                service, name = "other", method
        with lock:
            counts[f"{service}:{name}"] += 1
        return app(environ, start_response)

    return wrapped


def _cache_sqs_approximate_counts(seconds: float = 1.0) -> None:
    """moto recounts a queue's messages (a scan of all of them) for every message it sends and for every
    message it receives, because both read the whole attribute set; with thousands of events in flight that
    is quadratic and moto, not the code under test, becomes the bottleneck. SQS documents these counts as
    approximate and eventually consistent, so the harness lets them be up to ``seconds`` old."""
    from moto.sqs.models import Queue

    cache: dict[tuple[int, str], tuple[float, int]] = {}
    for name in ("approximate_number_of_messages", "approximate_number_of_messages_delayed",
                 "approximate_number_of_messages_not_visible"):
        count = getattr(Queue, name).fget

        def cached(queue: Any, count: Any = count, name: str = name) -> int:
            now = time.monotonic()
            at, value = cache.get((id(queue), name), (float("-inf"), 0))
            if now - at >= seconds:
                value = count(queue)
                cache[(id(queue), name)] = (now, value)
            return value

        setattr(Queue, name, property(cached))


def serve_moto(port: int) -> None:
    """moto's server with the counting wrapper, in this process until it is killed."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    _cache_sqs_approximate_counts()

    class QuietHandler(MotoRequestHandler):
        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass

    app = _count_middleware(DomainDispatcherApplication(create_backend_app))
    make_server("127.0.0.1", port, app, True, request_handler=QuietHandler).serve_forever()


class MotoServer:
    """moto in a process of its own: a fresh one per run (moto's state is global to its process), and one
    that does not share an interpreter lock with the simulated Batch publishing thousands of events."""

    def __init__(self, port: int):
        import subprocess
        import sys

        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([sys.executable, __file__, "moto", "--port", str(port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._up, 60, 0.2, "moto's server to listen")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"moto's server exited with {self.proc.returncode}")
        try:
            self.counts()
            return True
        except OSError:
            return False

    def _counts_request(self, method: str) -> Counter[str]:
        import urllib.request

        request = urllib.request.Request(self.url + COUNTS_PATH, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            return Counter(json.load(response))

    def counts(self) -> Counter[str]:
        return self._counts_request("GET")

    def clear_counts(self) -> None:
        self._counts_request("DELETE")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class _EventBuffer:
    """Stands in for the EventBridge client during a tick and keeps what the simulator put."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.entries.extend(Entries)
        return {"FailedEntryCount": 0, "Entries": [{"EventId": "buffered"} for _ in Entries]}


class BatchServer:
    """SimulatedBatch behind HTTP, with a ticker thread; every call and tick holds one lock."""

    def __init__(self, port: int, sim: Any, tick_seconds: float):
        self.sim = sim
        self.lock = threading.Lock()
        self.tick_seconds = tick_seconds
        self.stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                path = self.path.split("?")[0].rstrip("/")
                op = BATCH_PATHS.get(path)
                if op is None and path.startswith("/v1/tags/"):
                    op, body = "TagResource", {"resourceArn": unquote(path[len("/v1/tags/"):]), **body}
                status, payload = server.call(op, body, self.client_address[1])
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if status >= 400:
                    self.send_header("x-amzn-ErrorType", payload["__type"])
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.kill_after_submit = 0  # the next N submitting processes are killed once their job exists
        self.killed: list[dict[str, Any]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        threading.Thread(target=self._tick, daemon=True).start()

    def call(self, op: str | None, params: dict[str, Any], client_port: int = 0) -> tuple[int, dict[str, Any]]:
        from tests.doubles.simulated_batch import _ApiError

        if op == "TagResource":
            return 200, {}
        if op is None:
            return 400, {"__type": "ClientException", "message": "unknown operation"}
        with self.lock:
            self.sim.calls[op] += 1
            try:
                body = getattr(self.sim, f"_op_{op}")(params)
            except _ApiError as err:
                return err.status, {"__type": err.code, "message": err.message}
            if op == "SubmitJob" and self.kill_after_submit > 0 and self._kill_caller(body["jobName"], client_port):
                self.kill_after_submit -= 1
            return 200, body

    def _kill_caller(self, job_name: str, port: int) -> bool:
        """SIGKILL the process whose request created ``job_name``, before it hears the job id: the job exists
        in Batch, the worker that asked for it is gone (a task worker killed right after SubmitJob)."""
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.pid and conn.pid != os.getpid():
                os.kill(conn.pid, 9)
                self.killed.append({"pid": conn.pid, "job_name": job_name})
                return True
        return False

    def _tick(self) -> None:
        """Move the jobs under the lock; publish their events after it, so API calls are not held up by
        thousands of PutEvents (the order of one job's events is kept: one publisher)."""
        events, buffer = self.sim.events, _EventBuffer()
        while not self.stopping.wait(self.tick_seconds):
            with self.lock:
                self.sim.events = buffer
                self.sim.step()
                self.sim.events = events
                entries, buffer.entries = buffer.entries, []
            for start in range(0, len(entries), 10):
                events.put_events(Entries=entries[start : start + 10])

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()


def register_instances(count: int, region: str) -> list[str]:
    """``count`` EC2 instances in moto (half Spot c5.4xlarge, half on-demand m5.4xlarge) registered as the
    container instances of a Batch compute environment's ECS cluster; their container instance ARNs."""
    ec2, ecs = boto3.client("ec2", region_name=region), boto3.client("ecs", region_name=region)
    cluster = "AWSBatch-genomics-spot-ce-00000000-0000-0000-0000-000000000000"
    ecs.create_cluster(clusterName=cluster)
    arns = []
    spot = (count + 1) // 2
    for kind, n, extra in (("c5.4xlarge", spot, {"InstanceMarketOptions": {"MarketType": "spot"}}),
                           ("m5.4xlarge", count - spot, {})):
        if n:
            for inst in ec2.run_instances(ImageId="ami-0123456789abcdef0", InstanceType=kind, MinCount=n,
                                          MaxCount=n, **extra)["Instances"]:
                arns.append(ecs.register_container_instance(
                    cluster=cluster, instanceIdentityDocument=json.dumps({"instanceId": inst["InstanceId"]}),
                )["containerInstance"]["containerInstanceArn"])
    return arns


def start(*, moto_port: int, batch_port: int, tick_seconds: float = 1.0, region: str = "eu-west-1",
          instances: int = 0, **faults: Any) -> tuple[MotoServer, BatchServer, dict[str, str]]:
    """Start both servers and create the resources (from infra/genomics.yaml, as the aws tests do); returns
    them and the GENOMICS_* / AWS_* environment an Airflow process needs to use them. With ``instances``, the
    simulated jobs run on that many container instances registered in moto (ECS and EC2), which the cost
    facts then resolve."""
    from tests.conftest import ACCOUNT, create_aws_resources
    from tests.doubles.simulated_batch import SimulatedBatch

    moto = MotoServer(moto_port)
    os.environ.update({"AWS_ENDPOINT_URL": moto.url, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": region})
    names = create_aws_resources(region)
    s3 = boto3.client("s3", region_name=region)

    def read_manifest(uri: str) -> list[str]:  # what an array child reads to find its sample
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())["samples"]

    sim = SimulatedBatch(boto3.client("events", region_name=region), region=region, account=ACCOUNT,
                         read_manifest=read_manifest, container_instances=tuple(register_instances(instances, region)),
                         **faults)
    sim.calls.clear()
    batch = BatchServer(batch_port, sim, tick_seconds)
    env = {
        "AWS_ENDPOINT_URL": moto.url,
        "AWS_ENDPOINT_URL_BATCH": batch.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": region,
        "GENOMICS_BACKEND": "aws",
        "GENOMICS_AWS_CONN_ID": "",
        "GENOMICS_REGION_NAME": region,
        "GENOMICS_EVENT_QUEUE_URL": names["event_queue_url"],
        "GENOMICS_JOB_STATE_TABLE": names["job_state_table"],
        "GENOMICS_LAKE_URI": names["lake_uri"],
        # Batch's time is compressed here (jobs of seconds, not minutes), and the triggers' hold for jobs that
        # end within seconds would set the pace: the harness runs without it, as its BENCHMARKS figures were
        # measured, and so keeps exercising the other guard against the scheduler race (a retry reattaches
        # and completes without deferring)
        "GENOMICS_MIN_DEFER_SECONDS": "0",
    }
    return moto, batch, env


def wait_for(predicate, timeout: float, interval: float = 1.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")



if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="moto's server with request counts (started by MotoServer)")
    parser.add_argument("role", choices=["moto"])
    parser.add_argument("--port", type=int, required=True)
    serve_moto(parser.parse_args().port)
