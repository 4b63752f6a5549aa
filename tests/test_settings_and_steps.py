"""Platform settings resolve as documented; a job finds its sample the way array children do."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from genomics_steps.runtime import current_sample
from platform_settings import PlatformSettings, SettingsError

ROOT = Path(__file__).resolve().parent.parent


def test_the_default_is_the_local_backend_with_a_lake_under_its_home():
    settings = PlatformSettings.resolve(use_airflow_variable=False)
    assert settings.backend == "local"
    assert settings.lake_root.startswith("file://") and settings.lake_root.endswith("/lake")


def test_environment_variables_override_defaults_with_their_types(monkeypatch):
    monkeypatch.setenv("GENOMICS_BACKEND", "aws")
    monkeypatch.setenv("GENOMICS_EVENT_QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/1/q")
    monkeypatch.setenv("GENOMICS_JOB_STATE_TABLE", "t")
    monkeypatch.setenv("GENOMICS_LAKE_URI", "s3://lake/prefix/")
    monkeypatch.setenv("GENOMICS_SUBMIT_RATE_PER_SECOND", "25")
    monkeypatch.setenv("GENOMICS_JOB_QUEUES", '{"ondemand": "arn:aws:batch:eu-west-1:1:job-queue/od"}')
    settings = PlatformSettings.resolve(use_airflow_variable=False)
    assert settings.submit_rate_per_second == 25.0
    assert settings.lake_root == "s3://lake/prefix"
    assert settings.resolve_queue("ondemand") == "arn:aws:batch:eu-west-1:1:job-queue/od"
    assert settings.resolve_queue(None) == "genomics-spot"


def test_the_aws_backend_names_what_it_is_missing(monkeypatch):
    monkeypatch.setenv("GENOMICS_BACKEND", "aws")
    with pytest.raises(SettingsError, match="event_queue_url, job_state_table, lake_uri"):
        PlatformSettings.resolve(use_airflow_variable=False)


@pytest.mark.parametrize("rate", ["0", "1", "51"])
def test_a_submit_rate_outside_the_batch_quota_is_refused(monkeypatch, rate):
    monkeypatch.setenv("GENOMICS_SUBMIT_RATE_PER_SECOND", rate)
    with pytest.raises(SettingsError, match="from 2 to 50"):
        PlatformSettings.resolve(use_airflow_variable=False)


def test_unknown_settings_and_unreadable_values_are_errors(monkeypatch):
    with pytest.raises(SettingsError, match="unknown platform setting"):
        PlatformSettings.from_dict({"bakend": "aws"})
    monkeypatch.setenv("GENOMICS_RECONCILE_AFTER_SECONDS", "ten minutes")
    with pytest.raises(SettingsError, match="GENOMICS_RECONCILE_AFTER_SECONDS"):
        PlatformSettings.resolve(use_airflow_variable=False)


def test_settings_survive_the_round_trip_through_a_trigger():
    settings = PlatformSettings(job_queues={"spot": "q1"}, reconcile_after_seconds=30)
    assert PlatformSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings


def test_an_array_child_finds_its_sample_in_the_manifest(tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"samples": ["A", "B", "C"]}))
    env = {"GENOMICS_MANIFEST_URI": manifest.as_uri(), "AWS_BATCH_JOB_ARRAY_INDEX": "2"}
    assert current_sample(env) == "C"
    assert current_sample({"GENOMICS_SAMPLE": "Z"}) == "Z"
    with pytest.raises(RuntimeError, match="which sample"):
        current_sample({})


def test_tests_record_their_runs_and_jobs_apart_from_the_demos():
    """./dev demo records its runs in .airflow (the UI a developer looks at) and runs its jobs in
    .local-platform; the tests' runs, failed ones among them, and jobs go to homes of their own."""
    from airflow import settings as airflow_settings

    demo_home, demo_platform = ROOT / ".airflow", ROOT / ".local-platform"
    assert Path(os.environ["AIRFLOW_HOME"]).resolve() != demo_home
    database = Path(airflow_settings.engine.url.database).resolve()  # where dag.test() records its runs
    assert demo_home not in database.parents
    assert PlatformSettings.resolve().local_home_path.resolve() != demo_platform


@pytest.mark.parametrize("deferred_ago, slept", [
    (3.0, [7.0]),      # deferred 3 s ago: the event waits the rest of the 10 s
    (30.0, []),        # a wait that lasted longer fires at once
    (-600.0, [10.0]),  # a triggerer whose clock is behind the worker's waits no more than the hold itself
])
def test_a_triggers_event_is_held_until_min_defer_seconds_after_the_deferral(monkeypatch, deferred_ago, slept):
    from types import SimpleNamespace

    import triggers

    now, waited = 1_796_000_000.0, []

    async def sleep(seconds):
        waited.append(round(seconds, 6))

    monkeypatch.setattr(triggers, "time", SimpleNamespace(time=lambda: now))
    monkeypatch.setattr(triggers, "asyncio", SimpleNamespace(sleep=sleep))
    settings = PlatformSettings(min_defer_seconds=10.0).to_dict()
    asyncio.run(triggers.hold_until_settled(now - deferred_ago, settings))
    assert waited == slept


def test_the_hold_is_ten_seconds_unless_set_and_never_negative(monkeypatch):
    assert PlatformSettings().min_defer_seconds == 10.0
    monkeypatch.setenv("GENOMICS_MIN_DEFER_SECONDS", "2.5")
    assert PlatformSettings.resolve(use_airflow_variable=False).min_defer_seconds == 2.5
    with pytest.raises(SettingsError, match=r"min_defer_seconds must be 0 or more, got -1"):
        PlatformSettings(min_defer_seconds=-1)
