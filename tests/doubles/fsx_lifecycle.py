"""What moto's FSx lacks, added around moto's own client: it creates, tags and describes file systems, but has no
Lifecycle or CreationTime, ignores ClientRequestToken (a repeated request makes a second file system), keeps
deleted file systems, and has no data repository associations or tasks.

``FsxLifecycle`` forwards to moto and adds those, the way AWS documents them:
- a file system is CREATING for ``create_polls`` describes, then AVAILABLE; delete makes it DELETING for
  ``delete_polls`` describes, then it is gone (FileSystemNotFound);
- the same ClientRequestToken returns the same file system (and association, and task);
- associations are CREATING, then AVAILABLE; at most 8 per file system, paths must not overlap, and the file
  system must be AVAILABLE;
- export tasks go PENDING, EXECUTING, then SUCCEEDED (or FAILED when ``fail_exports`` is set).
It moves no data: there is no Lustre here. ``calls`` counts the API calls by operation.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import ClientError


def _error(code: str, message: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


class _Paginator:
    def __init__(self, method):
        self.method = method

    def paginate(self, **kwargs):
        yield self.method(**kwargs)


class FsxLifecycle:
    def __init__(self, moto_client: Any, *, create_polls: int = 2, delete_polls: int = 1, association_polls: int = 1,
                 task_polls: int = 2):
        self.moto = moto_client
        self.create_polls, self.delete_polls = create_polls, delete_polls
        self.association_polls, self.task_polls = association_polls, task_polls
        self.calls: Counter[str] = Counter()
        self.tokens: dict[str, str] = {}
        self.state: dict[str, dict[str, Any]] = {}  # file system id -> Lifecycle, countdown, CreationTime
        self.associations: dict[str, dict[str, Any]] = {}
        self.tasks: dict[str, dict[str, Any]] = {}
        self.fail_exports = False

    # --- file systems ---------------------------------------------------------------------------------
    def create_file_system(self, **kwargs):
        self.calls["CreateFileSystem"] += 1
        token = kwargs.get("ClientRequestToken")
        if token in self.tokens:
            fs_id = self.tokens[token]
            return {"FileSystem": self._described(fs_id) or {"FileSystemId": fs_id, "Lifecycle": "DELETED"}}
        created = self.moto.create_file_system(**kwargs)["FileSystem"]
        fs_id = created["FileSystemId"]
        self.state[fs_id] = {"Lifecycle": "CREATING", "countdown": self.create_polls,
                             "CreationTime": datetime.now(timezone.utc), "version": kwargs.get("FileSystemTypeVersion")}
        if token:
            self.tokens[token] = fs_id
        return {"FileSystem": self._decorate(created)}

    def _decorate(self, fs: dict[str, Any]) -> dict[str, Any]:
        state = self.state[fs["FileSystemId"]]
        return {**fs, "Lifecycle": state["Lifecycle"], "CreationTime": state["CreationTime"],
                "FileSystemTypeVersion": state["version"]}

    def _advance(self, fs_id: str) -> None:
        state = self.state[fs_id]
        if state["Lifecycle"] in ("CREATING", "DELETING"):
            state["countdown"] -= 1
            if state["countdown"] < 0:
                state["Lifecycle"] = "AVAILABLE" if state["Lifecycle"] == "CREATING" else "DELETED"

    def _described(self, fs_id: str) -> dict[str, Any] | None:
        if fs_id not in self.state or self.state[fs_id]["Lifecycle"] == "DELETED":
            return None
        found = self.moto.describe_file_systems(FileSystemIds=[fs_id])["FileSystems"]
        return self._decorate(found[0])

    def describe_file_systems(self, FileSystemIds=None, **_):
        self.calls["DescribeFileSystems"] += 1
        ids = FileSystemIds or list(self.state)
        out = []
        for fs_id in ids:
            if fs_id in self.state:
                self._advance(fs_id)
            described = self._described(fs_id)
            if described is None and FileSystemIds:
                raise _error("FileSystemNotFound", f"File system '{fs_id}' does not exist.", "DescribeFileSystems")
            if described:
                out.append(described)
        return {"FileSystems": out}

    def get_paginator(self, operation: str):
        assert operation == "describe_file_systems"
        return _Paginator(self.describe_file_systems)

    def delete_file_system(self, FileSystemId, **kwargs):
        self.calls["DeleteFileSystem"] += 1
        state = self.state.get(FileSystemId)
        if state is None or state["Lifecycle"] == "DELETED":
            raise _error("FileSystemNotFound", f"File system '{FileSystemId}' does not exist.", "DeleteFileSystem")
        assert kwargs.get("LustreConfiguration", {}).get("SkipFinalBackup") is True, "no final backup wanted"
        if state["Lifecycle"] != "DELETING":
            state.update(Lifecycle="DELETING", countdown=self.delete_polls)
        return {"FileSystemId": FileSystemId, "Lifecycle": "DELETING"}

    def tag_resource(self, **kwargs):
        return self.moto.tag_resource(**kwargs)

    # --- data repository associations -----------------------------------------------------------------
    def create_data_repository_association(self, FileSystemId, FileSystemPath, DataRepositoryPath,
                                           BatchImportMetaDataOnCreate=False, ClientRequestToken=None, **_):
        self.calls["CreateDataRepositoryAssociation"] += 1
        operation = "CreateDataRepositoryAssociation"
        if ClientRequestToken in self.associations:
            return {"Association": self._association_view(ClientRequestToken)}
        state = self.state.get(FileSystemId)
        if state is None or state["Lifecycle"] != "AVAILABLE":
            raise _error("BadRequest", f"file system {FileSystemId} is not AVAILABLE", operation)
        if state["version"] not in ("2.12", "2.15"):
            raise _error("BadRequest", "data repository associations need Lustre 2.12 or 2.15", operation)
        mine = [a for a in self.associations.values() if a["FileSystemId"] == FileSystemId]
        if len(mine) >= 8:
            raise _error("ServiceLimitExceeded", "at most 8 data repository associations", operation)
        for other in mine:
            a, b = other["FileSystemPath"].rstrip("/") + "/", FileSystemPath.rstrip("/") + "/"
            c, d = other["DataRepositoryPath"], DataRepositoryPath
            if a.startswith(b) or b.startswith(a) or c.startswith(d) or d.startswith(c):
                raise _error("BadRequest", f"{FileSystemPath} -> {DataRepositoryPath} overlaps {other}", operation)
        if not DataRepositoryPath.startswith("s3://"):
            raise _error("BadRequest", "DataRepositoryPath must be an s3:// path", operation)
        self.associations[ClientRequestToken] = {
            "AssociationId": "dra-" + hashlib.sha256(ClientRequestToken.encode()).hexdigest()[:17],
            "FileSystemId": FileSystemId, "FileSystemPath": FileSystemPath, "DataRepositoryPath": DataRepositoryPath,
            "BatchImportMetaDataOnCreate": BatchImportMetaDataOnCreate, "Lifecycle": "CREATING",
            "countdown": self.association_polls,
        }
        return {"Association": self._association_view(ClientRequestToken)}

    def _association_view(self, token: str) -> dict[str, Any]:
        return {k: v for k, v in self.associations[token].items() if k != "countdown"}

    def describe_data_repository_associations(self, Filters=(), **_):
        self.calls["DescribeDataRepositoryAssociations"] += 1
        wanted = {v for f in Filters if f["Name"] == "file-system-id" for v in f["Values"]}
        out = []
        for token, association in self.associations.items():
            if wanted and association["FileSystemId"] not in wanted:
                continue
            if association["Lifecycle"] == "CREATING":
                association["countdown"] -= 1
                if association["countdown"] < 0:
                    association["Lifecycle"] = "AVAILABLE"
            out.append(self._association_view(token))
        return {"Associations": out}

    # --- data repository tasks ------------------------------------------------------------------------
    def create_data_repository_task(self, Type, FileSystemId, Paths, Report, ClientRequestToken=None, **_):
        self.calls["CreateDataRepositoryTask"] += 1
        if ClientRequestToken in self.tasks:
            return {"DataRepositoryTask": self._task_view(ClientRequestToken)}
        state = self.state.get(FileSystemId)
        if state is None or state["Lifecycle"] != "AVAILABLE":
            raise _error("BadRequest", f"file system {FileSystemId} is not AVAILABLE", "CreateDataRepositoryTask")
        self.tasks[ClientRequestToken] = {
            "TaskId": "task-" + hashlib.sha256(ClientRequestToken.encode()).hexdigest()[:17], "Type": Type,
            "FileSystemId": FileSystemId, "Paths": Paths, "Lifecycle": "PENDING", "countdown": self.task_polls,
            "Status": {"TotalCount": 0, "SucceededCount": 0, "FailedCount": 0},
        }
        return {"DataRepositoryTask": self._task_view(ClientRequestToken)}

    def _task_view(self, token: str) -> dict[str, Any]:
        return {k: v for k, v in self.tasks[token].items() if k != "countdown"}

    def describe_data_repository_tasks(self, TaskIds, **_):
        self.calls["DescribeDataRepositoryTasks"] += 1
        out = []
        for token, task in self.tasks.items():
            if task["TaskId"] not in TaskIds:
                continue
            if task["Lifecycle"] in ("PENDING", "EXECUTING"):
                task["countdown"] -= 1
                task["Lifecycle"] = "EXECUTING"
                if task["countdown"] < 0:
                    if self.fail_exports:
                        task.update(Lifecycle="FAILED", Status={"TotalCount": 3, "SucceededCount": 2, "FailedCount": 1},
                                    FailureDetails={"Message": "1 file could not be exported"})
                    else:
                        task.update(Lifecycle="SUCCEEDED", Status={"TotalCount": 3, "SucceededCount": 3, "FailedCount": 0})
            out.append(self._task_view(token))
        if not out:
            raise _error("DataRepositoryTaskNotFound", f"{TaskIds} not found", "DescribeDataRepositoryTasks")
        return {"DataRepositoryTasks": out}
