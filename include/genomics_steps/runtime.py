"""What a job knows about itself: its sample (directly, or through an array job's manifest), the lake, and the
run's FSx for Lustre file system if it has one."""

from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from genomics_steps import gates, layout
from genomics_steps.names import FILE_URI, GSE, LABEL, LOCATION, SAMPLE_ID, Rule, bad_items, check_uri, problems_in

# Arguments a step takes, checked by the job itself before it reads or writes anything: a job started by hand
# (or by anything other than our operator) with a bad value fails instead of writing somewhere else.
ARGUMENT_RULES: dict[str, Rule] = {"pipeline_version": LABEL, "reference": LABEL, "series": GSE,
                                   "plan": FILE_URI}
ENVIRONMENT_RULES: dict[str, Rule] = {"GENOMICS_PROJECT": LABEL, "GENOMICS_PIPELINE": LABEL,
                                      "GENOMICS_SAMPLE": SAMPLE_ID}


@functools.cache
def _s3():
    """One S3 client per job process: creating a client costs far more than the HEAD or GET it makes."""
    import boto3

    return boto3.client("s3")


def read_uri(uri: str) -> bytes:
    parsed = urlparse(check_uri("URI", uri))
    if parsed.scheme == "file":
        return Path(unquote(parsed.path)).read_bytes()
    if parsed.scheme == "s3":
        obj = _s3().get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))
        return obj["Body"].read()
    raise ValueError(f"unsupported URI {uri!r}")


def write_uri(uri: str, data: bytes) -> None:
    parsed = urlparse(check_uri("URI", uri))
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    elif parsed.scheme == "s3":
        _s3().put_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"), Body=data)
    else:
        raise ValueError(f"unsupported URI {uri!r}")


def exists_uri(uri: str) -> bool:
    parsed = urlparse(check_uri("URI", uri))
    if parsed.scheme == "file":
        return Path(unquote(parsed.path)).is_file()
    if parsed.scheme == "s3":
        from botocore.exceptions import ClientError

        try:
            _s3().head_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True
    raise ValueError(f"unsupported URI {uri!r}")


def download(uri: str, path: Path) -> Path:
    """Stage one input file from s3:// or file:// to ``path`` (streamed; multipart for large objects)."""
    parsed = urlparse(check_uri("URI", uri))
    path.parent.mkdir(parents=True, exist_ok=True)
    if parsed.scheme == "file":
        source = Path(unquote(parsed.path))
        if not source.is_file():
            raise FileNotFoundError(f"input {uri} does not exist")
        shutil.copyfile(source, path)
    elif parsed.scheme == "s3":
        _s3().download_file(parsed.netloc, parsed.path.lstrip("/"), str(path))
    else:
        raise ValueError(f"unsupported URI {uri!r}")
    return path


def upload(path: Path, uri: str) -> None:
    """Upload one output file; a reader never sees half of it (rename on file://, one object on S3)."""
    parsed = urlparse(check_uri("URI", uri))
    if parsed.scheme == "file":
        target = Path(unquote(parsed.path))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)
    elif parsed.scheme == "s3":
        _s3().upload_file(str(path), parsed.netloc, parsed.path.lstrip("/"))
    else:
        raise ValueError(f"unsupported URI {uri!r}")


def list_uri(prefix: str) -> dict[str, str]:
    """Every file under ``prefix``, as {path relative to it: a fingerprint that changes when the file is
    rewritten} (S3: the ETag; file://: size and modification time), from one paginated listing."""
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    parsed = urlparse(check_uri("URI", prefix))
    found: dict[str, str] = {}
    if parsed.scheme == "file":
        root = Path(unquote(parsed.path))
        for path in root.rglob("*") if root.is_dir() else ():
            if path.is_file() and not path.name.startswith("."):
                stat = path.stat()
                found[path.relative_to(root).as_posix()] = f"{stat.st_size}-{stat.st_mtime_ns}"
    elif parsed.scheme == "s3":
        key_prefix = parsed.path.lstrip("/")
        for page in _s3().get_paginator("list_objects_v2").paginate(Bucket=parsed.netloc, Prefix=key_prefix):
            for obj in page.get("Contents", []):
                found[obj["Key"][len(key_prefix):]] = obj["ETag"].strip('"')
    else:
        raise ValueError(f"unsupported URI {prefix!r}")
    return found


def delete_uri(uri: str) -> None:
    """Delete one file if it exists."""
    parsed = urlparse(check_uri("URI", uri))
    if parsed.scheme == "file":
        Path(unquote(parsed.path)).unlink(missing_ok=True)
    elif parsed.scheme == "s3":
        _s3().delete_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))
    else:
        raise ValueError(f"unsupported URI {uri!r}")


def argument_problems(args: Any, environ: dict[str, str] | None = None) -> list[str]:
    """What is wrong with a step's parsed arguments and its GENOMICS_* environment (empty: nothing)."""
    env = os.environ if environ is None else environ
    values = vars(args)
    checks = [(rule, "--" + key.replace("_", "-"), values[key]) for key, rule in ARGUMENT_RULES.items()
              if values.get(key) is not None]
    checks += [(rule, key, env[key]) for key, rule in ENVIRONMENT_RULES.items() if env.get(key)]
    problems = problems_in(checks)
    if values.get("input_prefix") and not LOCATION.ok(values["input_prefix"]):
        problems.append(LOCATION.problem("--input-prefix", values["input_prefix"]))
    if values.get("reads_manifest") and not FILE_URI.ok(values["reads_manifest"]):
        problems.append(FILE_URI.problem("--reads-manifest", values["reads_manifest"]))
    problems += gates.threshold_problems({k: v for k, v in values.items() if v is not None}, prefix="--")
    if isinstance(values.get("samples"), list) and (bad := bad_items(SAMPLE_ID, "--samples", values["samples"])):
        problems.append(bad)
    if env.get("GENOMICS_LAKE_URI"):
        try:
            check_uri("GENOMICS_LAKE_URI", env["GENOMICS_LAKE_URI"])
        except ValueError as exc:
            problems.append(str(exc))
    return problems


def current_sample(environ: dict[str, str] | None = None) -> str:
    """The sample this job (or this array child) processes."""
    env = os.environ if environ is None else environ
    if env.get("GENOMICS_SAMPLE"):
        return SAMPLE_ID.check("GENOMICS_SAMPLE", env["GENOMICS_SAMPLE"])
    manifest_uri = env.get("GENOMICS_MANIFEST_URI")
    index = env.get("AWS_BATCH_JOB_ARRAY_INDEX")
    if not manifest_uri or index is None:
        raise RuntimeError("no GENOMICS_SAMPLE, and no manifest with AWS_BATCH_JOB_ARRAY_INDEX: which sample is this?")
    samples = json.loads(read_uri(manifest_uri))["samples"]
    return SAMPLE_ID.check(f"sample {index} of the manifest {manifest_uri}", samples[int(index)])


def staging_uri(dataset: str, scope: str, environ: dict[str, str] | None = None) -> str:
    """Where this job stages rows of ``dataset`` for publishing (``layout.staging_prefix`` of its lake, pipeline
    and project); add ``sample_id=<sample>/<file>.tsv``."""
    env = os.environ if environ is None else environ
    return layout.staging_prefix(env["GENOMICS_LAKE_URI"], dataset, env["GENOMICS_PIPELINE"], scope,
                                 env["GENOMICS_PROJECT"])


def fsx(environ: dict[str, str] | None = None) -> dict | None:
    """The run's FSx file system as the operator that created it describes it (env GENOMICS_FSX): its id, its
    mount on this host, its output directory, and which lake prefixes are linked to which directories."""
    env = os.environ if environ is None else environ
    raw = env.get("GENOMICS_FSX")
    return json.loads(raw) if raw else None


def on_fsx(uri: str, environ: dict[str, str] | None = None) -> Path | None:
    """The path of ``uri`` on the run's file system when its prefix is linked there (FSx loads the object from
    S3 on first read, once for every job of the run), else None."""
    mounted = fsx(environ)
    for prefix, directory in (mounted or {}).get("links", {}).items():
        if uri.startswith(prefix):
            return Path(directory) / unquote(uri[len(prefix):])
    return None
