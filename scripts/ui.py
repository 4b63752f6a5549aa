"""./dev up and ./dev down: the Airflow UI on this machine, with the local backend and the demo data.

`up` writes the demo's synthetic data (scripts/demo.py's prepare), starts `airflow standalone` (api-server,
scheduler, dag-processor, triggerer) in the background in a process group of its own, waits until the UI
lists the DAGs, and prints the URL. `down` stops that process group and the local batch runner. The pid file
and the log are in the Airflow home: <AIRFLOW_HOME>/dev-up.pid and <AIRFLOW_HOME>/logs/dev-up.log.

Login: none. The API server listens on 127.0.0.1 only and Airflow's simple auth manager makes every visitor
an admin (SIMPLE_AUTH_MANAGER_ALL_ADMINS), so nobody else can reach it and no password is needed on one's own
machine. A shared deployment uses docker-compose with real users (README, "Deploying").

Everything is read from the environment ./dev sets: AIRFLOW_HOME, GENOMICS_LOCAL_HOME, and the ports
AIRFLOW__API__PORT (default 8080), AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT (8793) and
AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT (8794), so a second copy in another home can run beside this one.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STARTUP_SECONDS = 300
STOP_SECONDS = 30
DEFAULT_PORTS = {"AIRFLOW__API__PORT": 8080, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": 8793,
                 "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": 8794}


def airflow_home() -> Path:
    return Path(os.environ.get("AIRFLOW_HOME", ROOT / ".airflow"))


def pid_file() -> Path:
    return airflow_home() / "dev-up.pid"


def log_file() -> Path:
    return airflow_home() / "logs" / "dev-up.log"


def ports() -> dict[str, int]:
    out = {}
    for name, default in DEFAULT_PORTS.items():
        raw = os.environ.get(name, str(default))
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise SystemExit(f"{name} {raw!r} is not a port number (1 to 65535)")
        out[name] = int(raw)
    return out


def base_url() -> str:
    return f"http://127.0.0.1:{ports()['AIRFLOW__API__PORT']}"


def running_pid() -> int | None:
    """The pid of the process group ./dev up started, if it is still alive."""
    try:
        pid = int(pid_file().read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, someone else's: not ours to report or stop
        return None
    return pid


def port_taken(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def airflow_environment() -> dict[str, str]:
    chosen = ports()
    api = f"http://127.0.0.1:{chosen['AIRFLOW__API__PORT']}"
    env = dict(os.environ)
    env.update({name: str(port) for name, port in chosen.items()})
    env.setdefault("GENOMICS_BACKEND", "local")
    env.update({
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__BASE_URL": api,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    })
    return env


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def _dags_listed(url: str) -> tuple[int, int]:
    """(DAGs the API lists, import errors); raises OSError while the API server is not up."""
    dags = _get_json(f"{url}/api/v2/dags?limit=100")["total_entries"]
    errors = _get_json(f"{url}/api/v2/importErrors")["total_entries"]
    return dags, errors


def expected_dags() -> int:
    return len([p for p in (ROOT / "dags").glob("*.py") if not p.name.startswith("_")])


def up() -> int:
    url = base_url()
    pid = running_pid()
    if pid is not None:
        print(f"Airflow is already running (process group {pid}, started by ./dev up): {url}")
        print(f"stop it with ./dev down; its log: {log_file()}")
        return 0
    taken = [f"{name}={port}" for name, port in ports().items() if port_taken(port)]
    if taken:
        print(f"port(s) in use: {', '.join(taken)}; stop what uses them or set other ports, e.g. "
              f"AIRFLOW__API__PORT=8090 ./dev up", file=sys.stderr)
        return 1

    sys.path.insert(0, str(ROOT / "scripts"))
    from demo import prepare
    from platform_settings import PlatformSettings

    os.environ.setdefault("GENOMICS_BACKEND", "local")
    prepare(PlatformSettings.resolve(use_airflow_variable=False).lake_root, "demo")

    log_file().parent.mkdir(parents=True, exist_ok=True)
    print(f"==> starting Airflow (api-server, scheduler, dag-processor, triggerer); log: {log_file()}", flush=True)
    with open(log_file(), "ab") as log:
        process = subprocess.Popen([str(Path(sys.executable).parent / "airflow"), "standalone"],
                                   env=airflow_environment(), cwd=str(ROOT), stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    pid_file().write_text(f"{process.pid}\n")
    deadline = time.monotonic() + STARTUP_SECONDS
    want = expected_dags()
    while True:
        if process.poll() is not None:
            pid_file().unlink(missing_ok=True)
            print(f"airflow standalone exited with {process.returncode}:\n{_tail(log_file())}", file=sys.stderr)
            return 1
        try:
            dags, errors = _dags_listed(url)
            if dags >= want or errors:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            print(f"Airflow did not list the DAGs within {STARTUP_SECONDS}s; stopping it:\n{_tail(log_file())}",
                  file=sys.stderr)
            down()
            return 1
        time.sleep(2)
    if errors:
        print(f"warning: {errors} DAG file(s) failed to import; the UI's banner shows why", file=sys.stderr)
    print(f"""
Airflow UI: {url}
  login: none needed: it listens on 127.0.0.1 only and every visitor is an admin
  backend: local (jobs run on this machine, in {os.environ.get('GENOMICS_LOCAL_HOME', ROOT / '.local-platform')})
  demo data: project demo, samples RNA1 RNA2 RNA3 (rnaseq) and DNA1 DNA2 DNA3 (germline), reference synthetic-v1
  log: {log_file()}; stop with ./dev down""")
    return 0


def down() -> int:
    pid = running_pid()
    if pid is None:
        pid_file().unlink(missing_ok=True)
        print("nothing to stop: ./dev up is not running in this Airflow home")
        return 0
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    while time.monotonic() < deadline and running_pid() is not None:
        time.sleep(0.5)
    if running_pid() is not None:
        os.killpg(pid, signal.SIGKILL)
    pid_file().unlink(missing_ok=True)
    # The local batch runner is a daemon of its own (started by the first job); stop it with the rest.
    from local_batch.runner import stop_runner
    from platform_settings import PlatformSettings

    stop_runner(PlatformSettings.resolve(use_airflow_variable=False).local_home)
    print(f"stopped Airflow (process group {pid})")
    return 0


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def main(argv: list[str]) -> int:
    if argv == ["up"]:
        return up()
    if argv == ["down"]:
        return down()
    print("usage: ./dev up | ./dev down", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
