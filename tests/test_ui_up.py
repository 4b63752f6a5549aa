"""The newcomer's path through the UI: `./dev up` starts Airflow on this machine (local backend, demo data),
a person fills the rnaseq form with a pasted list of two samples in chromium, triggers, and the run ends
with those samples in the published gene_quant table. `./dev up` runs in a temporary Airflow home and local
platform home on free ports, as anyone can run a second copy; `./dev down` stops it.

Needs the `chromium` and `chromium-driver` Debian packages (./dev test installs them). The run executes the
real tools (fastp, salmon) on two tiny samples: a few minutes on 2 cores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.doubles.airflow_process import free_port
from tests.test_ui import _keep_paused, _open_trigger_form, _submit_button, _wait, browser  # noqa: F401

pytestmark = pytest.mark.ui

ROOT = Path(__file__).resolve().parent.parent
UP_SECONDS = 600  # ./dev up: database migration, demo data, Airflow's four processes, the DAGs parsed
RUN_SECONDS = 1500  # two samples through fastp and salmon, publishing, and a retry or two of Airflow's own
PASTED = "RNA1\nRNA2\n"


def _get_json(url: str, timeout: float = 30) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def dev_up(tmp_path_factory):
    """`./dev up` in a home of its own; yields (base URL, its environment, its first output)."""
    home = tmp_path_factory.mktemp("dev-up")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "GENOMICS_", "PYTHONPATH"))}
    api = free_port()
    env.update({"AIRFLOW_HOME": str(home / "airflow"), "GENOMICS_LOCAL_HOME": str(home / "platform"),
                "AIRFLOW__API__PORT": str(api),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port())})
    try:
        started = subprocess.run([str(ROOT / "dev"), "up"], env=env, capture_output=True, text=True,
                                 timeout=UP_SECONDS)
        assert started.returncode == 0, f"./dev up failed:\n{started.stdout[-3000:]}\n{started.stderr[-3000:]}"
        yield f"http://127.0.0.1:{api}", env, started.stdout
    finally:
        subprocess.run([str(ROOT / "dev"), "down"], env=env, capture_output=True, text=True, timeout=120)
        pid_file = home / "airflow" / "dev-up.pid"
        if pid_file.exists():  # ./dev down failed: do not leave Airflow running after the tests
            try:
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass


@pytest.fixture(scope="module")
def pasted_run(dev_up, browser):  # noqa: F811
    """The rnaseq run triggered from the form with two samples pasted one per line, waited for to its end."""
    from selenium.webdriver.common.keys import Keys

    base, env, _ = dev_up
    _open_trigger_form(browser, base, "rnaseq")
    samples = _wait(browser, "//textarea[@id='element_samples']")
    assert samples.get_attribute("value") == "all approved"
    samples.send_keys(Keys.CONTROL, "a")
    samples.send_keys(Keys.BACKSPACE)
    samples.send_keys(PASTED)
    _submit_button(browser).click()  # "Unpause rnaseq on trigger" stays ticked: the run runs
    deadline, run = time.monotonic() + RUN_SECONDS, None
    while True:
        try:  # the API server answers slowly while the run's jobs take both cores: a slow answer is no answer
            runs = _get_json(f"{base}/api/v2/dags/rnaseq/dagRuns", timeout=30)["dag_runs"]
            run = next((r for r in runs if (r["conf"] or {}).get("samples") == PASTED), None)
        except OSError:
            pass
        if run and run["state"] in ("success", "failed"):
            return run
        if time.monotonic() > deadline:
            pytest.fail(f"the run did not end within {RUN_SECONDS}s: {run}")
        time.sleep(10)


def test_dev_up_prints_the_url_and_how_to_log_in_and_stop(dev_up):
    base, _, printed = dev_up
    assert f"Airflow UI: {base}" in printed
    assert "login: none needed" in printed and "./dev down" in printed
    assert _get_json(f"{base}/api/v2/monitor/health")["metadatabase"]["status"] == "healthy"


def test_dev_up_twice_does_not_start_a_second_copy(dev_up):
    base, env, _ = dev_up
    pid_file = Path(env["AIRFLOW_HOME"]) / "dev-up.pid"
    first = pid_file.read_text()
    again = subprocess.run([str(ROOT / "dev"), "up"], env=env, capture_output=True, text=True, timeout=UP_SECONDS)
    assert again.returncode == 0
    assert f"Airflow is already running (process group {first.strip()}" in again.stdout
    assert pid_file.read_text() == first


def test_the_samples_field_is_a_text_box_that_refuses_a_bad_id_before_a_run_exists(dev_up, browser):  # noqa: F811
    from selenium.webdriver.common.keys import Keys

    base, _, _ = dev_up
    _open_trigger_form(browser, base, "rnaseq")
    samples = _wait(browser, "//textarea[@id='element_samples']")
    samples.send_keys(Keys.CONTROL, "a")
    samples.send_keys(Keys.BACKSPACE)
    samples.send_keys("RNA1\nRNA 2\n")
    runs_before = len(_get_json(f"{base}/api/v2/dags/rnaseq/dagRuns")["dag_runs"])
    _keep_paused(browser)
    _submit_button(browser).click()
    _wait(browser, "//div[@role='dialog'][@data-state='open']//*[contains(., 'Invalid input for param samples')]")
    time.sleep(2)
    assert len(_get_json(f"{base}/api/v2/dags/rnaseq/dagRuns")["dag_runs"]) == runs_before


def test_a_run_triggered_from_the_form_with_a_pasted_list_publishes_those_samples(dev_up, pasted_run):
    from hooks import backend
    from platform_settings import PlatformSettings

    _, env, _ = dev_up
    assert pasted_run["conf"]["samples"] == PASTED
    assert pasted_run["state"] == "success"
    settings = PlatformSettings(backend="local", local_home=env["GENOMICS_LOCAL_HOME"])
    _, rows = backend.query_engine(settings).fetch("SELECT DISTINCT project, sample_id FROM gene_quant")
    assert sorted(rows) == [("demo", "RNA1"), ("demo", "RNA2")]


def test_no_task_of_that_run_lost_a_try_to_the_schedulers_race(dev_up, pasted_run):
    """The run's salmon_index job finds the index built and ends within a second of its submission. Without
    the triggers' hold (min_defer_seconds) Airflow 3.3's scheduler took that try for killed
    (apache/airflow#72716) and the run waited out the 5-minute retry delay."""
    _, env, _ = dev_up
    scheduler_log = (Path(env["AIRFLOW_HOME"]) / "logs" / "dev-up.log").read_text()
    assert "but the task instance's state attribute is" not in scheduler_log


def test_the_batch_tasks_of_that_run_answer_for_their_links(dev_up, pasted_run):
    """The UI asks the API for a task's links; on the local backend they have no URL (no AWS console) and
    the job's log file is named in the task log instead."""
    base, env, _ = dev_up
    run_id = pasted_run["dag_run_id"]
    links = _get_json(f"{base}/api/v2/dags/rnaseq/dagRuns/{urllib.request.quote(run_id, safe='')}"
                      "/taskInstances/per_sample.fastp/links?map_index=0")["extra_links"]
    assert set(links) == {"AWS Batch job", "CloudWatch log"} and not any(links.values())
    logs = Path(env["AIRFLOW_HOME"]) / "logs" / "dag_id=rnaseq" / f"run_id={run_id}" / "task_id=per_sample.fastp"
    text = "".join(p.read_text() for p in logs.rglob("attempt=*.log"))
    assert "log on this machine: " in text
    assert "Failed to push an xcom for task operator extra link" not in text
