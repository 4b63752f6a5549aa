"""Runs one job attempt and records its exit code in a file, so the outcome survives a runner restart.

Usage (by the runner only): python -m local_batch.shim ATTEMPT_DIR
ATTEMPT_DIR holds spec.json ({"command": [...], "env": {...}}); the shim writes job.log and, when the
command ends, exit_code (written atomically).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def main(attempt_dir: str) -> int:
    root = Path(attempt_dir)
    spec = json.loads((root / "spec.json").read_text())
    workdir = root / "work"
    workdir.mkdir(exist_ok=True)
    (root / "tmp").mkdir(exist_ok=True)
    with open(root / "job.log", "ab", buffering=0) as log:
        try:
            proc = subprocess.Popen(
                spec["command"], stdout=log, stderr=subprocess.STDOUT, env=spec["env"], cwd=workdir,
                stdin=subprocess.DEVNULL,
            )
            code = proc.wait()
            reason = ""
        except (FileNotFoundError, PermissionError) as exc:
            log.write(f"CannotStartContainerError: {exc}\n".encode())
            code, reason = 127, f"CannotStartContainerError: {exc.strerror}: {spec['command'][0]}"
    if code < 0:  # killed by a signal: report it the way a container runtime does
        code = 128 - code
    tmp = root / "exit_code.tmp"
    tmp.write_text(json.dumps({"exitCode": code, "reason": reason}))
    os.replace(tmp, root / "exit_code")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
