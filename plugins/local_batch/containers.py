"""A local job inside its job image: what Batch runs, run on this machine (opt-in).

With ``GENOMICS_LOCAL_CONTAINERS=buildah`` the local runner starts each job's command in the image of its job
definition (``genomics-rnaseq`` -> ``localhost/genomics-rnaseq:<GENOMICS_LOCAL_IMAGE_TAG>``, default tag
``local``, which ``./dev images`` sets), instead of as a host process. The images are the ones `./dev images`
builds; no daemon is needed: buildah runs the command with chroot isolation, the way it runs a Dockerfile's RUN
steps. The default (unset, or ``host``) runs host processes, which work wherever no builder is installed.

What the container sees, as on Batch: the job's environment (GENOMICS_*, AWS_BATCH_*) and nothing of the host's
(no host PATH or PYTHONPATH: the image's Python and step package run); its working directory and TMPDIR; the lake
(a file:// lake is mounted at the same path, so the URIs in the job's arguments stay valid); the run's FSx
stand-in directory when the job has one. It runs as the host user that owns those files (on Batch the image's
own user writes to S3 and the instance store; here the bind-mounted lake belongs to the host user).

Usage (by the shim, through the runner): python -m local_batch.containers SPEC_JSON -- COMMAND...
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from local_batch import pid_alive

MODES = ("host", "buildah")
DEFAULT_TAG = "local"
NAME_PREFIX = "genomics-job-"


def mode(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    value = env.get("GENOMICS_LOCAL_CONTAINERS", "host") or "host"
    if value not in MODES:
        raise ValueError(f"GENOMICS_LOCAL_CONTAINERS {value!r} must be one of {MODES}")
    return value


def image_for(job_definition: str, environ: dict[str, str] | None = None) -> str:
    """The local image of a job definition: its name without revision, tagged GENOMICS_LOCAL_IMAGE_TAG."""
    env = os.environ if environ is None else environ
    name = job_definition.rsplit("/", 1)[-1].split(":", 1)[0]
    return f"localhost/{name}:{env.get('GENOMICS_LOCAL_IMAGE_TAG') or DEFAULT_TAG}"


def mounts_for(job_env: dict[str, str], attempt_dir: Path) -> list[str]:
    """Host directories the job reads and writes, mounted at the same path: its attempt directory, a file://
    lake, the run's FSx stand-in. An s3:// lake needs no mount (the job reads it with its own credentials)."""
    paths = [str(attempt_dir)]
    lake = urlparse(job_env.get("GENOMICS_LAKE_URI", ""))
    if lake.scheme == "file":
        paths.append(unquote(lake.path).rstrip("/") or "/")
    if job_env.get("GENOMICS_FSX"):
        mount = json.loads(job_env["GENOMICS_FSX"]).get("mount")
        if mount:
            paths.append(mount)
    extra = job_env.get("GENOMICS_LOCAL_CONTAINER_MOUNTS", "")
    paths += [p for p in extra.split(os.pathsep) if p]
    return list(dict.fromkeys(paths))


def write_spec(attempt_dir: Path, *, image: str, job_env: dict[str, str], workdir: Path) -> Path:
    """Describe the container of one attempt (the wrapper reads it); returns its path."""
    spec = {
        "image": image,
        "env": job_env,
        "mounts": mounts_for(job_env, attempt_dir),
        "workdir": str(workdir),
        "user": f"{os.getuid()}:{os.getgid()}",
    }
    path = attempt_dir / "container.json"
    path.write_text(json.dumps(spec, indent=1))
    return path


def run_argv(name: str, spec: dict[str, Any], command: list[str]) -> list[str]:
    """``buildah run`` of ``command`` in the working container ``name``: the job's environment only, its
    directories mounted at the same paths. An argv list: no value passes through a shell."""
    argv = ["buildah", "run", "--isolation", "chroot", "--user", spec["user"], "--workingdir", spec["workdir"]]
    for path in spec["mounts"]:
        argv += ["--volume", f"{path}:{path}"]
    for key, value in sorted(spec["env"].items()):
        argv += ["--env", f"{key}={value}"]
    return [*argv, name, "--", *command]


def remove_orphans() -> list[str]:
    """Remove working containers left by wrappers that were killed (the runner kills a job's process group
    with SIGKILL on timeout, memory or termination, so no cleanup of its own runs). Their names hold the
    wrapper's pid; a container of a live wrapper is left alone."""
    listed = subprocess.run(["buildah", "containers", "--format", "{{.ContainerName}}"], capture_output=True,
                            text=True, check=False)
    removed = []
    for name in listed.stdout.split():
        if not name.startswith(NAME_PREFIX):
            continue
        pid = name[len(NAME_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            subprocess.run(["buildah", "rm", name], capture_output=True, check=False)
            removed.append(name)
    return removed


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m local_batch.containers SPEC_JSON -- COMMAND...", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    command = argv[2:]
    remove_orphans()
    name = f"{NAME_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    created = subprocess.run(["buildah", "from", "--pull=never", "--name", name, spec["image"]],
                             capture_output=True, text=True, check=False)
    if created.returncode != 0:
        # What Batch reports when a job's image cannot be had; the runner treats 127 like a failed start.
        print(f"CannotPullContainerError: image {spec['image']} is not in the local store: build it with "
              f"`./dev images` ({created.stderr.strip()})", flush=True)
        return 127
    proc = None

    def forward(signum: int, _frame: Any) -> None:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        proc = subprocess.Popen(run_argv(name, spec, command), stdin=subprocess.DEVNULL)
        code = proc.wait()
    finally:
        subprocess.run(["buildah", "rm", name], capture_output=True, check=False)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
