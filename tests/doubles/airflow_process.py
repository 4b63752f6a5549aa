"""The environment of an Airflow started apart from the caller's process: `airflow standalone` for the UI
tests, Airflow 3.0's CLI from its own venv, the scale harness's scheduler, triggerer and api-server.

Each gets a home (and SQLite database) of its own, this project's plugins and include/ importable, and none of
the caller's AIRFLOW*/GENOMICS_* settings, so what pytest or a shell exported cannot leak into it."""

from __future__ import annotations

import os
import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def airflow_env(home: Path, bin_dir: Path, *, dags_folder: Path = ROOT / "dags", api_port: int | None = None,
                **extra: str) -> dict[str, str]:
    """Variables for Airflow processes run from ``bin_dir`` in ``home``; with ``api_port`` they also serve
    the API on loopback (every user an admin) and their logs on free ports. ``extra`` overrides any of it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "GENOMICS_", "PYTHONPATH"))}
    env.update({
        "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]),  # `airflow standalone` runs `airflow`
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "PYTHONPATH": os.pathsep.join(str(ROOT / d) for d in ("plugins", "dags", "include")),
        "GENOMICS_LOCAL_HOME": str(home / "local-platform"),
    })
    if api_port is not None:
        env.update({
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        })
    env.update(extra)
    return env
