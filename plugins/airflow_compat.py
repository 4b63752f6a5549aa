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

__all__ = ["AirflowException", "AirflowFailException", "AirflowSkipException"]
