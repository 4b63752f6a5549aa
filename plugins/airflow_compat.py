"""The few names whose home moved between Airflow 3.0 (Amazon MWAA's newest, 3.0.6) and 3.3, imported from
where the running Airflow has them. README "Supported Airflow versions" says what runs on 3.0."""

from __future__ import annotations

try:  # Airflow 3.1+: the Task SDK's exceptions
    from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException
except ImportError:  # Airflow 3.0
    from airflow.exceptions import (  # type: ignore[no-redef]
        AirflowException,
        AirflowFailException,
        AirflowSkipException,
    )

try:  # Airflow 3.1+: the timetables the pipelines' schedule is made of, from the Task SDK
    from airflow.sdk import AssetOrTimeSchedule, CronDataIntervalTimetable
except ImportError:  # Airflow 3.0
    from airflow.timetables.assets import AssetOrTimeSchedule  # type: ignore[no-redef]
    from airflow.timetables.interval import CronDataIntervalTimetable  # type: ignore[no-redef]

__all__ = ["AirflowException", "AirflowFailException", "AirflowSkipException", "AssetOrTimeSchedule",
           "CronDataIntervalTimetable"]
