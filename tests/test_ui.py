"""The Airflow UI in a real browser: `airflow standalone` with this project loaded, driven through Debian's
chromium by Selenium. What a user sees: every DAG listed and importable, the pipeline trigger forms accept
their defaults, show their Params, and an invalid value is refused without creating a run.

Needs the `chromium` and `chromium-driver` Debian packages (./dev test installs them)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.doubles.airflow_process import airflow_env, free_port

pytestmark = pytest.mark.ui

ROOT = Path(__file__).resolve().parent.parent
PIPELINE_DAGS = ["rnaseq", "germline", "regenie_gwas", "geo_ingestion"]
ALL_DAGS = sorted([*PIPELINE_DAGS, "fsx_sweeper", "batch_events_demo"])
RNASEQ_PARAM_TITLES = ["Project", "Samples", "Reference", "Pipeline version", "Force", "Fan-out", "Reads location"]
STARTUP_SECONDS = 240


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def airflow_ui(tmp_path_factory):
    """`airflow standalone` (api-server, scheduler, dag-processor, triggerer) on free loopback ports, with the
    project's dags/ and plugins/, a fresh SQLite database and every user an admin (no login form)."""
    home = tmp_path_factory.mktemp("standalone")
    port = free_port()
    env = airflow_env(home, Path(sys.executable).parent, api_port=port,
                      AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True")
    log = open(home / "standalone.log", "w")
    process = subprocess.Popen([str(Path(sys.executable).parent / "airflow"), "standalone"], env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"airflow standalone exited with {process.returncode}; see {home / 'standalone.log'}")
            try:
                listed = {d["dag_id"] for d in _get_json(f"{base}/api/v2/dags?limit=100")["dags"]}
                errors = _get_json(f"{base}/api/v2/importErrors")["total_entries"]
                if set(ALL_DAGS) <= listed or errors:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                tail = (home / "standalone.log").read_text()[-3000:]
                pytest.fail(f"the UI did not list every DAG within {STARTUP_SECONDS}s:\n{tail}")
            time.sleep(2)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail("the UI tests need Debian's chromium and chromium-driver (./dev test installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,2400"):
        options.add_argument(arg)
    session = webdriver.Chrome(options=options, service=Service(driver))
    session.implicitly_wait(0)
    yield session
    session.quit()


def _wait(browser, xpath: str, timeout: float = 30):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(ec.visibility_of_element_located((By.XPATH, xpath)))


def _open_trigger_form(browser, base: str, dag_id: str):
    browser.get(f"{base}/dags/{dag_id}")
    _wait(browser, "//button[@aria-label='Trigger Dag']").click()
    dialog = _wait(browser, "//div[@role='dialog'][@data-state='open']")
    _wait(browser, "//div[@role='dialog'][@data-state='open']//*[normalize-space()='Run Parameters']")
    return dialog


def _submit_button(browser):
    return _wait(browser, "//div[@role='dialog'][@data-state='open']//button[normalize-space()='Trigger']")


def _keep_paused(browser):
    """Untick "Unpause <dag> on trigger", so a created run waits in the queue instead of running the pipeline."""
    box = _wait(browser, "//div[@role='dialog'][@data-state='open']//label[contains(., 'Unpause')]")
    if box.find_element("xpath", ".//input").is_selected():
        box.click()


def _dag_runs(base: str, dag_id: str) -> list[dict]:
    return _get_json(f"{base}/api/v2/dags/{dag_id}/dagRuns")["dag_runs"]


def test_every_dag_is_listed_and_none_failed_to_import(airflow_ui, browser):
    browser.get(f"{airflow_ui}/dags")
    for dag_id in ALL_DAGS:
        _wait(browser, f"//a[normalize-space()='{dag_id}']")
    assert f"{len(ALL_DAGS)} Dags" in browser.find_element("xpath", "//body").text
    # The same list the page is drawn from, plus the import errors its banner would show.
    assert _get_json(f"{airflow_ui}/api/v2/importErrors")["import_errors"] == []


@pytest.mark.parametrize("dag_id", PIPELINE_DAGS)
def test_pipeline_trigger_form_accepts_its_defaults(airflow_ui, browser, dag_id):
    """A field the form treats as required but whose default is empty would keep Trigger disabled."""
    _open_trigger_form(browser, airflow_ui, dag_id)
    assert _submit_button(browser).is_enabled(), f"{dag_id}: the trigger form refuses its own defaults"


def test_rnaseq_trigger_form_shows_params_and_refuses_an_invalid_value(airflow_ui, browser):
    dialog = _open_trigger_form(browser, airflow_ui, "rnaseq")
    for title in RNASEQ_PARAM_TITLES:
        assert title in dialog.text
    project = _wait(browser, "//input[@id='element_project']")
    assert project.get_attribute("value") == "demo"

    from selenium.webdriver.common.keys import Keys

    project.send_keys(Keys.CONTROL, "a")
    project.send_keys(Keys.BACKSPACE)
    project.send_keys("bad project!")
    runs_before = len(_dag_runs(airflow_ui, "rnaseq"))
    _keep_paused(browser)
    _submit_button(browser).click()

    alert = _wait(browser, "//div[@role='dialog'][@data-state='open']//*[contains(., 'Invalid input for param project')]")
    assert "does not match" in alert.text
    time.sleep(2)
    assert len(_dag_runs(airflow_ui, "rnaseq")) == runs_before


def _trigger_paused(browser, airflow_ui, dag_id: str) -> tuple[int, list]:
    """Submit the open trigger form with the DAG kept paused; (runs before, runs after, within 30 s)."""
    runs_before = len(_dag_runs(airflow_ui, dag_id))
    _keep_paused(browser)
    _submit_button(browser).click()
    deadline = time.monotonic() + 30
    while len(runs := _dag_runs(airflow_ui, dag_id)) == runs_before and time.monotonic() < deadline:
        time.sleep(1)
    return runs_before, runs


def test_rnaseq_trigger_with_defaults_creates_a_run(airflow_ui, browser):
    _open_trigger_form(browser, airflow_ui, "rnaseq")
    runs_before, runs = _trigger_paused(browser, airflow_ui, "rnaseq")
    assert len(runs) == runs_before + 1
    assert runs[-1]["conf"]["project"] == "demo" and runs[0]["conf"]["input_uri"] is None
    assert _get_json(f"{airflow_ui}/api/v2/dags/rnaseq")["is_paused"] is True


def test_rnaseq_trigger_form_accepts_good_names_under_the_full_match_patterns(airflow_ui, browser):
    """The Params' patterns end in (?![\\s\\S]) so that "demo\\n" is refused; ordinary names with dots, dashes
    and underscores must still go through the form and become the run's config."""
    from selenium.webdriver.common.keys import Keys

    _open_trigger_form(browser, airflow_ui, "rnaseq")
    values = {"project": "proj_1.x-2", "pipeline_version": "2.0-rc.1", "input_uri": "s3://my-bucket/runs/fc_1/"}
    for name, value in values.items():
        field = _wait(browser, f"//input[@id='element_{name}']")
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(Keys.BACKSPACE)
        field.send_keys(value)
    runs_before, runs = _trigger_paused(browser, airflow_ui, "rnaseq")
    assert len(runs) == runs_before + 1, "the form refused good values"
    assert any(all(run["conf"].get(k) == v for k, v in values.items()) for run in runs)


def test_rnaseq_trigger_dialog_offers_backfill(airflow_ui, browser):
    """A periodic schedule is what Airflow needs to backfill: with schedule=None the dialog greys the choice
    out ("This Dag's schedule does not support backfills"). Choosing it shows the backfill's date range."""
    _open_trigger_form(browser, airflow_ui, "rnaseq")
    choice = _wait(browser, "//div[@role='dialog'][@data-state='open']//input[@type='radio'][@value='backfill']")
    assert choice.get_attribute("disabled") is None, "the Backfill choice is disabled"
    _wait(browser, "//div[@role='dialog'][@data-state='open']//label[.//input[@value='backfill']]").click()
    _wait(browser, "//div[@role='dialog'][@data-state='open']//*[normalize-space()='Date Range']")
    _wait(browser, "//div[@role='dialog'][@data-state='open']//button[normalize-space()='Run Backfill']")
