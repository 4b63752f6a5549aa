"""PublishTableOperator: make a run's staged results queryable as Snappy Parquet, through Athena CTAS (or DuckDB).

The protocol (statements, generations, the atomic view swap, cleanup) is in ``publishing``; this operator
drives it: checks its input, lists the staged files once, then runs the write statements. On Athena it defers
while each CTAS / INSERT INTO runs; the short DDL around them (staging table, view, drops) is waited for in the
worker. Locally DuckDB runs each statement as it is started.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow_compat import AirflowException

from platform_settings import PlatformSettings
from ui_links import AthenaQueryLink


class PublishTableOperator(BaseOperator):
    """Publish one table (see ``publishing.TABLES``) for one project's units.

    :param table: the table to publish: qc_metrics, transcript_quant, gene_quant, variant_calls,
        gwas_associations, job_runs or ingest_qc.
    :param project: project the units belong to (partition value). Templated.
    :param pipeline: pipeline that produced the rows. Templated.
    :param pipeline_version: version of the pipeline (a column; also the default staging scope). Templated.
    :param units: sample ids (phenotypes for gwas_associations) to publish; each must have staged rows. Templated.
    :param staging_scope: the ``<scope>`` part of the staging location; default the pipeline version, or the
        DAG run (``publishing.run_scope(run_id)``) for per-run facts such as job_runs. Templated.
    :param publish_key: names this publish: publishing the same key again replaces its rows. Default: the
        DAG id, task id and run id, so clearing the task re-publishes and a new run adds (or, for units
        published before, replaces). Templated.
    :param skip_if_no_units: skip (instead of failing) when ``units`` is empty, for tables of what a run did
        (job_runs) when the run had nothing to do.
    """

    template_fields: Sequence[str] = ("project", "pipeline", "pipeline_version", "units", "staging_scope",
                                      "publish_key")
    ui_color = "#d9ead3"
    operator_extra_links = (AthenaQueryLink(),)  # the write statement running (or last run), on AWS

    def __init__(
        self,
        *,
        table: str,
        project: str,
        pipeline: str,
        pipeline_version: str,
        units: list[str] | str,
        staging_scope: str | None = None,
        publish_key: str | None = None,
        skip_if_no_units: bool = False,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.table = table
        self.project = project
        self.pipeline = pipeline
        self.pipeline_version = pipeline_version
        self.units = units
        self.staging_scope = staging_scope
        self.publish_key = publish_key
        self.skip_if_no_units = skip_if_no_units

    def _publication(self, settings: PlatformSettings, context: Any):
        from publishing import TABLES, Publication, PublishError, run_scope, staging_uri

        if self.table not in TABLES:
            raise PublishError(f"unknown table {self.table!r}; published tables are {sorted(TABLES)}")
        ti = context["ti"]
        # A DAG run cleared as a whole (a backfill with --reprocess-behavior completed, at another
        # pipeline_version) keeps its run id: its publish gets a key of its own, so it does not replace what the
        # run's earlier life published (another version stays in <table>_versions).
        cleared = int(getattr(context.get("dag_run"), "clear_number", 0) or 0)
        key = self.publish_key or f"{ti.dag_id}/{ti.task_id}/{ti.run_id}" + (f"/cleared{cleared}" if cleared else "")
        units = list(self.units) if isinstance(self.units, (list, tuple)) else self.units
        spec = TABLES[self.table]
        scope = self.staging_scope or (run_scope(ti.run_id) if spec.per_run else self.pipeline_version)
        staging = staging_uri(settings.lake_root, spec.staging, self.pipeline, scope, self.project)
        return Publication(table=self.table, database=settings.database, lake_root=settings.lake_root,
                           project=self.project, pipeline=self.pipeline, pipeline_version=self.pipeline_version,
                           units=units, staging=staging, publish_key=key)

    def execute(self, context: Any) -> dict[str, Any]:
        from hooks import backend, lake
        from publishing import start

        if self.skip_if_no_units and isinstance(self.units, (list, tuple)) and not self.units:
            from airflow_compat import AirflowSkipException

            raise AirflowSkipException(f"no units to publish in {self.table}")
        settings = PlatformSettings.resolve()
        publication = self._publication(settings, context)  # every input checked before any query
        engine, store = backend.query_engine(settings), backend.job_state_store(settings)
        start(publication, engine, store, list_files=lambda prefix: lake.list_files(settings, prefix))
        self.log.info("publishing %s.%s generation %d: %d unit(s) in %d write statement(s)", settings.database,
                      self.table, publication.generation, len(publication.units), len(publication.batches()))
        return self._drive(context["ti"], settings, publication, engine, store)

    def _drive(self, ti: Any, settings: PlatformSettings, publication: Any, engine: Any, store: Any) -> dict[str, Any]:
        """The rest of the publish through ``publishing.drive``, deferring while each write statement runs."""
        from hooks import lake
        from publishing import drive
        from triggers.athena_query import AthenaQueryTrigger

        def defer_while_running(statement: Any, query_id: str) -> None:
            import ui_links

            self.log.info("%s: query %s", statement.step, query_id)
            ui_links.persist(ti, AthenaQueryLink, settings, ui_links.athena_query_url,
                             query_id)
            self.defer(
                trigger=AthenaQueryTrigger(query_id=query_id, step=statement.step, settings=settings.to_dict()),
                method_name="execute_write_complete",
            )

        summary = drive(publication, engine, store, delete_prefix=lambda uri: lake.delete_prefix(settings, uri),
                        on_started=defer_while_running)
        self.log.info("published %s: %s", summary["table"], summary)
        return summary

    def execute_write_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        from hooks import backend
        from publishing import finish_write

        if event["status"] == "error":
            # the query may still be running: a retry reattaches to it through its ClientRequestToken
            raise AirflowException(f"could not wait for Athena query {event['query_id']} ({event['step']}): "
                                   f"{event['reason']}")
        settings = PlatformSettings.resolve()
        publication = self._publication(settings, context)
        engine, store = backend.query_engine(settings), backend.job_state_store(settings)
        publication.resume(store)
        finish_write(publication, engine, store, event["step"], event["query_id"], wait=False)
        return self._drive(context["ti"], settings, publication, engine, store)
