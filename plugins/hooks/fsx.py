"""FSx for Lustre file systems made for one run: create (idempotent by ClientRequestToken), link lake prefixes
(data repository associations), export results, delete; on AWS through boto3's "fsx" client, locally as a
directory with the same lifecycle.

Both speak AWS's shapes, so the operators, the trigger and the sweeper never branch on the backend:
file systems are dicts with FileSystemId, Lifecycle (CREATING, AVAILABLE, FAILED, DELETING, MISCONFIGURED,
UPDATING, MISCONFIGURED_UNAVAILABLE), CreationTime (aware datetime) and Tags; associations have AssociationId,
Lifecycle, FileSystemPath, DataRepositoryPath; export tasks have TaskId, Lifecycle (PENDING, EXECUTING,
SUCCEEDED, FAILED, CANCELED, CANCELING) and Status (TotalCount, SucceededCount, FailedCount).
FSx has no events and boto3 no waiters for it: FsxStatusTrigger polls ``describe`` with a growing interval.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

LUSTRE_VERSION = "2.15"  # data repository associations need 2.12+; SCRATCH_2 would default to 2.10
DEPLOYMENT_TYPES = ("SCRATCH_2", "PERSISTENT_2")
PERSISTENT_2_THROUGHPUTS = (125, 250, 500, 1000)  # MB/s per TiB
TAG_DEPLOYMENT = "genomics:deployment"
GONE = "DELETED"  # what ``delete`` returns when the file system no longer exists


def valid_capacity(gib: Any) -> bool:
    """1,200 GiB, 2,400 GiB, then steps of 2,400 GiB (SCRATCH_2 and PERSISTENT_2 alike)."""
    return isinstance(gib, int) and not isinstance(gib, bool) and (gib == 1200 or (gib >= 2400 and gib % 2400 == 0))


def tag_dict(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


class FsxApi:
    """What the FSx operators, trigger and sweeper need; see the module docstring for the shapes."""

    def create_file_system(self, *, token: str, deployment_type: str, capacity_gib: int,
                           throughput: int | None, tags: dict[str, str]) -> dict[str, Any]:
        raise NotImplementedError

    def describe(self, file_system_id: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def list_file_systems(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def create_association(self, file_system_id: str, file_system_path: str, repository_path: str, *,
                           token: str, import_metadata: bool) -> dict[str, Any]:
        raise NotImplementedError

    def associations(self, file_system_id: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    def export(self, file_system_id: str, paths: list[str], *, token: str) -> dict[str, Any]:
        raise NotImplementedError

    def describe_task(self, task_id: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def delete(self, file_system_id: str) -> str:
        """Start deleting (no final backup); returns the Lifecycle after the call, or GONE."""
        raise NotImplementedError

    def mount_path(self, file_system_id: str) -> str:
        """Where jobs see the file system's root."""
        raise NotImplementedError

    def status(self, kind: str, resource_id: str) -> dict[str, Any] | None:
        """The current description of a file system, association or export task (None: it does not exist)."""
        if kind == "file_system":
            return self.describe(resource_id)
        if kind == "task":
            return self.describe_task(resource_id)
        if kind == "association":
            file_system_id, association_id = resource_id.split("/", 1)
            return next((a for a in self.associations(file_system_id) if a["AssociationId"] == association_id), None)
        raise ValueError(f"unknown FSx resource kind {kind!r}")


def _unless_missing(call: Callable[[], Any], missing_code: str) -> Any:
    """``call()``, or None when AWS answers that the resource does not exist."""
    try:
        return call()
    except Exception as exc:
        if getattr(exc, "response", {}).get("Error", {}).get("Code") == missing_code:
            return None
        raise


class AwsFsx(FsxApi):
    def __init__(self, client: Any, *, subnet_id: str | None, security_group_ids: list[str], mount_root: str):
        self.client = client
        self.subnet_id = subnet_id
        self.security_group_ids = list(security_group_ids)
        self.mount_root = mount_root.rstrip("/")

    def create_file_system(self, *, token, deployment_type, capacity_gib, throughput, tags):
        if not self.subnet_id:
            raise ValueError("set fsx_subnet_id (GENOMICS_FSX_SUBNET_ID): the subnet of the run's file system, "
                             "reachable from the Batch compute environments")
        lustre: dict[str, Any] = {"DeploymentType": deployment_type, "DataCompressionType": "LZ4"}
        if deployment_type == "PERSISTENT_2":
            lustre["PerUnitStorageThroughput"] = throughput
        response = self.client.create_file_system(
            ClientRequestToken=token,
            FileSystemType="LUSTRE",
            FileSystemTypeVersion=LUSTRE_VERSION,
            StorageCapacity=capacity_gib,
            SubnetIds=[self.subnet_id],
            SecurityGroupIds=self.security_group_ids,
            LustreConfiguration=lustre,
            Tags=[{"Key": k, "Value": v} for k, v in sorted(tags.items())],
        )
        return response["FileSystem"]

    def describe(self, file_system_id):
        found = _unless_missing(lambda: self.client.describe_file_systems(FileSystemIds=[file_system_id]),
                                "FileSystemNotFound")
        return found["FileSystems"][0] if found and found["FileSystems"] else None

    def list_file_systems(self):
        out = []
        for page in self.client.get_paginator("describe_file_systems").paginate():
            out.extend(fs for fs in page["FileSystems"] if fs.get("FileSystemType", "LUSTRE") == "LUSTRE")
        return out

    def create_association(self, file_system_id, file_system_path, repository_path, *, token, import_metadata):
        response = self.client.create_data_repository_association(
            FileSystemId=file_system_id,
            FileSystemPath=file_system_path,
            DataRepositoryPath=repository_path,
            BatchImportMetaDataOnCreate=import_metadata,
            ClientRequestToken=token,
        )
        return response["Association"]

    def associations(self, file_system_id):
        out, token = [], None
        while True:
            kwargs: dict[str, Any] = {"Filters": [{"Name": "file-system-id", "Values": [file_system_id]}]}
            if token:
                kwargs["NextToken"] = token
            page = self.client.describe_data_repository_associations(**kwargs)
            out.extend(page.get("Associations", []))
            token = page.get("NextToken")
            if not token:
                return out

    def export(self, file_system_id, paths, *, token):
        response = self.client.create_data_repository_task(
            Type="EXPORT_TO_REPOSITORY", FileSystemId=file_system_id, Paths=paths,
            Report={"Enabled": False}, ClientRequestToken=token,
        )
        return response["DataRepositoryTask"]

    def describe_task(self, task_id):
        found = _unless_missing(lambda: self.client.describe_data_repository_tasks(TaskIds=[task_id]),
                                "DataRepositoryTaskNotFound")
        return found["DataRepositoryTasks"][0] if found and found["DataRepositoryTasks"] else None

    def delete(self, file_system_id):
        response = _unless_missing(lambda: self.client.delete_file_system(
            FileSystemId=file_system_id, LustreConfiguration={"SkipFinalBackup": True}), "FileSystemNotFound")
        return GONE if response is None else response.get("Lifecycle", "DELETING")

    def mount_path(self, file_system_id):
        return f"{self.mount_root}/{file_system_id}"


class LocalFsx(FsxApi):
    """A directory per file system under ``<local_home>/fsx/``: linking a prefix copies its files in (what
    FSx's lazy load gives a job), exporting copies a directory's files out to the linked prefix, deleting
    removes the directory. The same lifecycle states, requests and idempotency tokens as AWS."""

    def __init__(self, home: str | Path, *, list_files: Callable[[str], list[str]], create_seconds: float = 0.0):
        self.root = Path(home) / "fsx"
        self.root.mkdir(parents=True, exist_ok=True)
        self.list_files = list_files  # a lake prefix's files, relative to it
        self.create_seconds = create_seconds

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _record_path(self, file_system_id: str) -> Path:
        return self.root / f"{file_system_id}.json"

    def _load(self, file_system_id: str) -> dict[str, Any] | None:
        path = self._record_path(file_system_id)
        return json.loads(path.read_text()) if path.is_file() else None

    def _save(self, record: dict[str, Any]) -> None:
        path = self._record_path(record["FileSystemId"])
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)

    @staticmethod
    def _view(record: dict[str, Any]) -> dict[str, Any]:
        view = {k: v for k, v in record.items() if k not in ("associations", "tasks", "available_at")}
        view["CreationTime"] = datetime.fromtimestamp(record["CreationTime"], timezone.utc)
        return view

    def _advance(self, record: dict[str, Any]) -> dict[str, Any]:
        if record["Lifecycle"] == "CREATING" and time.time() >= record["available_at"]:
            record["Lifecycle"] = "AVAILABLE"
            self._save(record)
        return record

    def create_file_system(self, *, token, deployment_type, capacity_gib, throughput, tags):
        file_system_id = "fs-" + hashlib.sha256(token.encode()).hexdigest()[:17]
        with self._locked():
            record = self._load(file_system_id)
            if record is None:  # a repeated token returns what the first request created, as on AWS
                now = time.time()
                record = {"FileSystemId": file_system_id, "FileSystemType": "LUSTRE", "Lifecycle": "CREATING",
                          "CreationTime": now, "available_at": now + self.create_seconds,
                          "StorageCapacity": capacity_gib, "FileSystemTypeVersion": LUSTRE_VERSION,
                          "LustreConfiguration": {"DeploymentType": deployment_type,
                                                  **({"PerUnitStorageThroughput": throughput}
                                                     if deployment_type == "PERSISTENT_2" else {})},
                          "Tags": [{"Key": k, "Value": v} for k, v in sorted(tags.items())],
                          "associations": {}, "tasks": {}}
                (self.root / file_system_id).mkdir(exist_ok=True)
                self._save(record)
            return self._view(record)

    def describe(self, file_system_id):
        with self._locked():
            record = self._load(file_system_id)
            if record is None or record["Lifecycle"] == GONE:
                return None
            return self._view(self._advance(record))

    def list_file_systems(self):
        found = []
        for path in sorted(self.root.glob("fs-*.json")):
            described = self.describe(path.stem)
            if described:
                found.append(described)
        return found

    def create_association(self, file_system_id, file_system_path, repository_path, *, token, import_metadata):
        from genomics_steps.runtime import download

        with self._locked():
            record = self._load(file_system_id)
            if record is None or self._advance(record)["Lifecycle"] != "AVAILABLE":
                raise RuntimeError(f"file system {file_system_id} is not AVAILABLE")
            if token in record["associations"]:
                return record["associations"][token]
            target = self.root / file_system_id / file_system_path.strip("/")
            target.mkdir(parents=True, exist_ok=True)
            if import_metadata:
                for relative in self.list_files(repository_path):
                    download(repository_path + relative, target / relative)
            association = {"AssociationId": "dra-" + hashlib.sha256(token.encode()).hexdigest()[:17],
                           "FileSystemId": file_system_id, "FileSystemPath": file_system_path,
                           "DataRepositoryPath": repository_path, "Lifecycle": "AVAILABLE"}
            record["associations"][token] = association
            self._save(record)
            return association

    def associations(self, file_system_id):
        record = self._load(file_system_id)
        return list(record["associations"].values()) if record and record["Lifecycle"] != GONE else []

    def export(self, file_system_id, paths, *, token):
        from genomics_steps.runtime import upload

        with self._locked():
            record = self._load(file_system_id)
            if record is None or record["Lifecycle"] != "AVAILABLE":
                raise RuntimeError(f"file system {file_system_id} is not AVAILABLE")
            if token in record["tasks"]:
                return record["tasks"][token]
            mount = self.root / file_system_id
            done = failed = 0
            for path in paths:
                fs_path = "/" + path.strip("/")
                link = next((a for a in record["associations"].values()
                             if (fs_path + "/").startswith(a["FileSystemPath"].rstrip("/") + "/")), None)
                source = mount / path.strip("/")
                for file in sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else []:
                    if link is None:
                        failed += 1
                        continue
                    inside = "/" + str(file.relative_to(mount))
                    upload(file, link["DataRepositoryPath"] + inside[len(link["FileSystemPath"].rstrip("/")) + 1:])
                    done += 1
            task = {"TaskId": "task-" + hashlib.sha256(token.encode()).hexdigest()[:17],
                    "FileSystemId": file_system_id, "Type": "EXPORT_TO_REPOSITORY", "Paths": paths,
                    "Lifecycle": "FAILED" if failed else "SUCCEEDED",
                    "Status": {"TotalCount": done + failed, "SucceededCount": done, "FailedCount": failed}}
            if failed:
                task["FailureDetails"] = {"Message": f"{failed} file(s) are under no data repository association"}
            record["tasks"][token] = task
            self._save(record)
            return task

    def describe_task(self, task_id):
        for path in self.root.glob("fs-*.json"):
            for task in json.loads(path.read_text())["tasks"].values():
                if task["TaskId"] == task_id:
                    return task
        return None

    def delete(self, file_system_id):
        with self._locked():
            record = self._load(file_system_id)
            if record is None or record["Lifecycle"] == GONE:
                return GONE
            record["Lifecycle"] = "DELETING"
            self._save(record)
            shutil.rmtree(self.root / file_system_id, ignore_errors=True)
            record["Lifecycle"] = GONE  # deletion is immediate here; AWS takes minutes
            self._save(record)
            return "DELETING"

    def mount_path(self, file_system_id):
        return str(self.root / file_system_id)

