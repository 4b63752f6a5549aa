"""The project on Airflow 3.0.6, the newest Amazon MWAA offers, from its own venv (.venv-airflow3.0, which
./dev test installs): what README "Supported Airflow versions" promises there, checked in a real install."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.doubles.airflow_process import airflow_env

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-airflow3.0"


@pytest.fixture(scope="module")
def airflow30(tmp_path_factory):
    """Run a command with Airflow 3.0's Python and CLI on a fresh SQLite database, the project loaded."""
    python = VENV / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{VENV} is missing: ./dev test installs Airflow 3.0.6 there")
    home = tmp_path_factory.mktemp("airflow30")
    # `dags test` only, no scheduler: the triggers' hold guards against no race here (see scripts/demo.py)
    env = airflow_env(home, VENV / "bin", GENOMICS_MIN_DEFER_SECONDS="0")

    def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)

    migrated = run("airflow", "db", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    assert run("airflow", "pools", "import", str(ROOT / "pools.json")).returncode == 0
    return run


def test_the_installed_airflow_is_3_0(airflow30):
    result = airflow30("airflow", "version")
    assert result.stdout.strip().splitlines()[-1].startswith("3.0.")


def test_every_dag_but_geo_ingestion_imports_on_airflow_3_0(airflow30):
    script = ("import json; from airflow.models.dagbag import DagBag; b = DagBag(dag_folder='dags', "
              "include_examples=False); print(json.dumps({'dags': sorted(b.dags), "
              "'errors': {k.rsplit('/', 1)[-1]: v for k, v in b.import_errors.items()}}))")
    result = airflow30(str(VENV / "bin" / "python"), "-c", script)
    assert result.returncode == 0, result.stderr[-3000:]
    bag = json.loads(result.stdout.strip().splitlines()[-1])
    assert bag["dags"] == ["batch_events_demo", "fsx_sweeper", "germline", "regenie_gwas", "rnaseq"]
    # geo_ingestion's review is a human-in-the-loop task, which Airflow has from 3.1 on
    assert list(bag["errors"]) == ["geo_ingestion.py"]
    assert "needs Airflow 3.1+" in bag["errors"]["geo_ingestion.py"]


def test_batch_jobs_defer_and_complete_on_events_on_airflow_3_0(airflow30):
    """Mapped jobs, an array job and the sensor, each deferred on Batch-shaped events, on the local backend."""
    conf = json.dumps({"samples": ["V1", "V2"], "reads": 200, "project": "compat"})
    result = airflow30("airflow", "dags", "test", "batch_events_demo", "--conf", conf)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    finished = [line for line in output.splitlines() if "DagRun Finished: dag_id=batch_events_demo" in line]
    assert finished and ", state=success, " in finished[-1], finished


def test_rnaseq_runs_end_to_end_and_publishes_on_airflow_3_0(airflow30, tmp_path):
    """A pipeline DAG on 3.0: plan, salmon index, mapped per-sample task groups, publish through DuckDB."""
    home = Path(airflow30("printenv", "GENOMICS_LOCAL_HOME").stdout.strip())
    lake = (home / "lake").resolve().as_uri()
    make = ("import sys; from genomics_steps import synthetic; synthetic.write_reference(sys.argv[1], 'synthetic-v1'); "
            "synthetic.write_sample(sys.argv[1], 'compat', 'synthetic-v1', 'R1', 'rnaseq')")
    made = airflow30(str(VENV / "bin" / "python"), "-c", make, lake)
    assert made.returncode == 0, made.stderr[-3000:]
    conf = json.dumps({"project": "compat", "reference": "synthetic-v1", "samples": ["R1"]})
    result = airflow30("airflow", "dags", "test", "rnaseq", "--conf", conf)
    output = result.stdout + result.stderr
    finished = [line for line in output.splitlines() if "DagRun Finished: dag_id=rnaseq" in line]
    assert finished and ", state=success, " in finished[-1], output[-4000:]
    published = list((home / "lake" / "tables" / "gene_quant").rglob("*.parquet"))
    assert published, "gene_quant was not published"


def test_a_refused_run_config_fails_on_its_first_try_on_airflow_3_0(airflow30):
    """`airflow dags test` of a misspelt key: plan fails once, with no retry (AirflowFailException's 3.0 home)."""
    conf = json.dumps({"project": "compat", "samples": ["R1"], "pipline_version": "2.0"})
    result = airflow30("airflow", "dags", "test", "rnaseq", "--conf", conf)
    output = result.stdout + result.stderr
    assert "unknown key 'pipline_version'; did you mean 'pipeline_version'?" in output, output[-4000:]
    assert "up_for_retry" not in output
    finished = [line for line in output.splitlines() if "DagRun Finished: dag_id=rnaseq" in line]
    assert finished and ", state=failed, " in finished[-1], output[-4000:]
