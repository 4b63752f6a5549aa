"""The local backend: a Batch-shaped control plane, the runner daemon that runs its jobs, and their shim."""

from __future__ import annotations

import os


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` runs (a zombie does not: it only waits to be reaped)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
