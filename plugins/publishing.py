"""Publishing a run's results as a queryable table: the protocol, the same on Athena and on the local engine.

One publish makes the rows the steps staged for some units (samples, or phenotypes for GWAS) of one project
visible under a table's name, in these statements:

1. ``stage``: an external table over the staged TSV files (include/sql/staging/<dataset>.sql);
2. ``write-000``: CTAS of the first 100 units into a fresh location ``<lake>/tables/<table>/<run_key>_g<gen>/``
   as Snappy Parquet partitioned by (project, unit); then ``write-001``... : INSERT INTO, 100 units each,
   because Athena writes at most 100 partitions per statement;
3. ``unstage``: drop the external table;
4. commit: the table's catalog document (in the job-state store, replaced only by a writer that read its current
   version) records this run table as live with its pipeline version; in older run tables of the same project and
   pipeline it hides the same units published at the same version and marks them superseded at other versions;
5. ``view``: CREATE OR REPLACE VIEW <table> over the live run tables, each unit's most recently published version
   only: the atomic swap readers see; then ``view-versions``: ``<table>_versions``, every version side by side
   (tables of per-run facts keep every run in <table> already and have no such view);
6. cleanup: run tables that are no longer live (an older generation of this publish, a run wholly re-published
   by a later one, a failed attempt) are dropped and their files deleted.

A publish is named by its ``publish_key`` (by default the DAG run). Its record in the job-state store keeps the
generation and the statements already done, and every statement carries a ClientRequestToken derived from the
record, so an Airflow retry never runs a statement twice and resumes where the failed try stopped. Publishing a
key again writes a new generation and swaps it in: the table then holds each unit's rows once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Callable

from genomics_steps import layout

from client_tokens import client_token
from hooks.job_state import publish_record_key
from hooks.sql_render import SQL_LABEL, Ident, Label, LabelList, Location, UnsafeSqlValue, render

MAX_PARTITIONS_PER_STATEMENT = 100
MAX_QUERY_BYTES = 262_144
VERSIONS_SUFFIX = "_versions"  # <table>_versions: the view of every published version of a results table


@dataclass(frozen=True)
class TableSpec:
    """A published table: its SELECT (include/sql/<select>.sql), the staged dataset it reads, and its unit.

    ``per_run``: the staged rows belong to one DAG run (job facts), not to a pipeline version (results). Such a
    table never hides rows, so it keeps every run and version in its one view; a results table has two views
    (see ``Publication.commit``).
    ``added``: string columns the SELECT gained after the table was first published, oldest first. Run tables
    written before a column was added lack it; the view gives them NULL there, so old and new run tables
    stay one table (a column may be added this way; renaming or retyping one needs a new table name).
    """

    name: str
    select: str
    staging: str
    unit_column: str = "sample_id"
    per_run: bool = False
    added: tuple[str, ...] = ()


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec("qc_metrics", "qc/qc_metrics", "qc_metrics"),
        TableSpec("transcript_quant", "quant/transcript_quant", "transcript_quant"),
        TableSpec("gene_quant", "quant/gene_quant", "transcript_quant"),
        TableSpec("variant_calls", "variants/variant_calls", "variant_calls"),
        TableSpec("gwas_associations", "gwas/gwas_associations", "gwas_associations", unit_column="phenotype"),
        TableSpec("job_runs", "runs/job_runs", "job_runs", per_run=True,
                  added=("container_reason", "job_definition", "reused_from", "pipeline_version")),
        TableSpec("ingest_qc", "ingest/ingest_qc", "ingest_qc", added=("layout",)),
        TableSpec("sample_outcomes", "runs/sample_outcomes", "sample_outcomes", per_run=True),
        # a germline cohort is replaced whole when rebuilt: its unit is the pipeline version, not a contig
        TableSpec("cohort_variants", "cohort/cohort_variants", "cohort_variants", unit_column="cohort"),
        TableSpec("rnaseq_matrices", "quant/rnaseq_matrices", "rnaseq_matrices", unit_column="pipeline_version"),
        TableSpec("run_reports", "runs/run_reports", "run_reports", unit_column="run_label", per_run=True),
        TableSpec("sample_costs", "runs/sample_costs", "sample_costs", per_run=True),
    )
}


class PublishError(RuntimeError):
    """A publish cannot go on: bad input, missing staged data, or a statement that failed."""


def staging_uri(lake_root: str, dataset: str, pipeline: str, scope: str, project: str) -> str:
    """``genomics_steps.layout.staging_prefix``, with every part checked first: the prefix becomes a table
    location in SQL."""
    for value in (pipeline, scope, project):
        Label(value)
    Ident(dataset)
    return layout.staging_prefix(lake_root, dataset, pipeline, scope, project)


def run_scope(run_id: str) -> str:
    """A label naming one DAG run; the steps in jobs name runs the same way (genomics_steps.layout)."""
    return layout.run_key(run_id)


@dataclass(frozen=True)
class Statement:
    step: str
    sql: str
    params: tuple[str, ...]
    token: str


class Publication:
    """One publish of one table. Construction checks every input, so bad input fails before any query."""

    def __init__(
        self,
        *,
        table: str,
        database: str,
        lake_root: str,
        project: str,
        pipeline: str,
        pipeline_version: str,
        units: list[str],
        staging: str,
        publish_key: str,
    ):
        if table not in TABLES:
            raise PublishError(f"unknown table {table!r}; published tables are {sorted(TABLES)}")
        self.spec = TABLES[table]
        if not isinstance(units, (list, tuple)) or not units:
            raise PublishError(f"nothing to publish: units must be a non-empty list, got {units!r}")
        bad = [u for u in units if not SQL_LABEL.ok(u)]
        if bad:
            raise UnsafeSqlValue(f"invalid {self.spec.unit_column} value(s) {bad[:5]!r}: each must be a label "
                                 "(letters, digits, _ . -)")
        if len(set(units)) != len(units):
            raise PublishError(f"{self.spec.unit_column} values must be unique")
        if not isinstance(publish_key, str) or not publish_key or len(publish_key) > 1024:
            raise PublishError("publish_key must be a non-empty string of at most 1024 characters")
        self.database = Ident(database)
        self.table = Ident(table)
        self.project = Label(project)
        self.pipeline = Label(pipeline)
        self.pipeline_version = Label(pipeline_version)
        self.unit_column = Ident(self.spec.unit_column)
        self.units = sorted(units)
        self.staging = Location(staging if staging.endswith("/") else staging + "/")
        self.lake_root = lake_root.rstrip("/")
        self.publish_key = publish_key
        self.run_key = Label("r" + hashlib.sha256(publish_key.encode()).hexdigest()[:12])
        self.qualified = f"{database}.{table}"
        self.record_key = publish_record_key(self.qualified, publish_key)  # also salts the statements' tokens
        self.record: dict[str, Any] = {}

    # -- names of this generation ----------------------------------------------------------------------
    @property
    def generation(self) -> int:
        return self.record["generation"]

    @property
    def run_table(self) -> Ident:
        return Ident(f"{self.table}__{self.run_key.value}_g{self.generation}")

    @property
    def staging_table(self) -> Ident:
        return Ident(f"stg_{self.table}__{self.run_key.value}_g{self.generation}")

    @property
    def location(self) -> Location:
        return Location(f"{self.lake_root}/tables/{self.table}/{self.run_key.value}_g{self.generation}/")

    # -- the record: which generation, which statements are done ---------------------------------------
    def begin(self, store: Any) -> None:
        """Continue the generation a failed try left half-written, or start a new one."""
        record = store.get_publish_record(self.qualified, self.publish_key)
        if record is None:
            record = {"generation": 1, "status": "writing", "done": {}}
        elif record["status"] != "writing":
            record = {"generation": record["generation"] + 1, "status": "writing", "done": {}}
        self.record = record
        store.put_publish_record(self.qualified, self.publish_key, record)

    def resume(self, store: Any) -> None:
        """Load the generation a deferred write belongs to (after the trigger fired)."""
        record = store.get_publish_record(self.qualified, self.publish_key)
        if record is None or record["status"] != "writing":
            raise PublishError(f"publish {self.publish_key!r} of {self.table} has no generation being written")
        self.record = record

    def check_staged(self, staged_files: list[str]) -> None:
        """Every unit must have staged rows: a unit without them would silently be left out of the table."""
        prefix = f"{self.unit_column}="
        present = {path.split("/", 1)[0][len(prefix):] for path in staged_files if path.startswith(prefix)}
        missing = [u for u in self.units if u not in present]
        if missing:
            raise PublishError(
                f"no staged {self.spec.staging} rows for {len(missing)} of {len(self.units)} "
                f"{self.unit_column} value(s) under {self.staging.value}: {missing[:10]}"
            )

    # -- statements ----------------------------------------------------------------------------------------
    def _context(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "table": self.table,
            "run_table": self.run_table,
            "staging_table": self.staging_table,
            "location": self.location,
            "project": self.project,
            "pipeline": self.pipeline,
            "pipeline_version": self.pipeline_version,
            "run_key": self.run_key,
            "unit_column": self.unit_column,
            "select": f"{self.spec.select}.sql",
        }

    def _statement(self, step: str, template: str, params: tuple[str, ...] = (), **extra: Any) -> Statement:
        sql = render(template, **{**self._context(), **extra})
        if len(sql.encode()) > MAX_QUERY_BYTES:
            raise PublishError(f"statement {step} is {len(sql.encode())} bytes; Athena takes at most {MAX_QUERY_BYTES}")
        # write statements keep their token across tries (a retry reattaches to a running CTAS); statements
        # after the writes are idempotent DDL and get a fresh token per try of finish(), so one that failed
        # is run again rather than answered with its old failure
        salt = self.record.get("finish_try", 0) if step in ("unstage", "view") or step.startswith("drop") else 0
        return Statement(step, sql, params, client_token(self.record_key, self.generation, step, salt, sql, params))

    def batches(self) -> list[list[str]]:
        n = MAX_PARTITIONS_PER_STATEMENT
        return [self.units[i : i + n] for i in range(0, len(self.units), n)]

    def stage_statement(self) -> Statement:
        return self._statement("stage", f"staging/{self.spec.staging}", units=LabelList(tuple(self.units)),
                               location=self.staging)

    def write_statements(self) -> list[Statement]:
        out = []
        for i, batch in enumerate(self.batches()):
            template = "publish/create_run_table" if i == 0 else "publish/insert_run_partitions"
            out.append(self._statement(f"write-{i:03d}", template, tuple(batch), batch=batch))
        return out

    def stage(self, engine: Any, store: Any) -> None:
        """Create the staging table; if that fails, this generation is abandoned like a failed write."""
        from hooks.query_engine import QueryFailed

        try:
            engine.run(*_args(self.stage_statement()))
        except QueryFailed as exc:
            raise self.fail(store, "stage", str(exc)) from exc

    def unstage_statement(self) -> Statement:
        return self._statement("unstage", "publish/drop_table", name=self.staging_table)

    def next_write(self) -> Statement | None:
        return next((s for s in self.write_statements() if s.step not in self.record["done"]), None)

    def mark_done(self, store: Any, step: str, query_id: str) -> None:
        self.record["done"][step] = query_id
        store.put_publish_record(self.qualified, self.publish_key, self.record)

    # -- outcome -------------------------------------------------------------------------------------------
    def fail(self, store: Any, step: str, reason: str) -> PublishError:
        """A statement failed: this generation is abandoned (the next try writes a new one) and its tables
        and files are left to the cleanup. Returns the error to raise."""
        self._update_doc(store, lambda doc: _add_garbage(doc, self._own_entry()))
        self.record["status"] = "failed"
        store.put_publish_record(self.qualified, self.publish_key, self.record)
        return PublishError(f"publishing {self.database}.{self.table} (generation {self.generation}) failed at "
                            f"{step}: {reason}")

    def _own_entry(self) -> dict[str, Any]:
        return {
            "key": self.publish_key,
            "generation": self.generation,
            "run_table": self.run_table.value,
            "staging_table": self.staging_table.value,
            "location": self.location.value,
            "project": self.project.value,
            "pipeline": self.pipeline.value,
            "pipeline_version": self.pipeline_version.value,
            "units": self.units,
            "hidden": [],  # published again at this version: gone from both views (garbage once all are)
            "superseded": [],  # published again at another version: only in <table>_versions
            "added": list(self.spec.added),  # the view knows which added columns this run table has
        }

    def commit(self, store: Any) -> None:
        """Make this generation live in the catalog document, and update older run tables of the same project
        and pipeline (a sample id means nothing across projects, and rnaseq's QC rows of a sample must not hide
        germline's): its units are *hidden* in those of the same pipeline version (replaced: gone from both
        views; a run table whose units are all hidden is dropped) and *superseded* in those of other versions
        (kept in ``<table>_versions``, left out of ``<table>``, which so shows each unit at the version published
        most recently). Per-run facts (job_runs) are history: another run's rows are never hidden.

        An entry written before versions were recorded has no ``pipeline_version``: it counts as a version of
        its own, so a later publish supersedes its units and never hides them."""
        mine = set(self.units)
        entry = self._own_entry()

        def change(doc: dict[str, Any]) -> dict[str, Any] | None:
            if any(e["key"] == self.publish_key and e["generation"] == self.generation for e in doc["live"]):
                return None  # a retry after the commit: already live
            live = []
            for old in doc["live"]:
                if old["key"] == self.publish_key:
                    _add_garbage(doc, old)
                    continue
                same_slice = old.get("project") == self.project.value and old.get("pipeline") == self.pipeline.value
                if self.spec.per_run or not same_slice:
                    live.append(old)
                    continue
                again = set(old["units"]) & mine
                hidden, superseded = set(old["hidden"]), set(old.get("superseded", ()))
                if old.get("pipeline_version") == self.pipeline_version.value:
                    hidden |= again
                else:
                    superseded |= again
                if hidden >= set(old["units"]):
                    _add_garbage(doc, old)
                    continue
                live.append({**old, "hidden": sorted(hidden), "superseded": sorted(superseded - hidden)})
            doc["live"] = live + [entry]
            doc["garbage"] = [g for g in doc["garbage"] if g["run_table"] != entry["run_table"]]
            return doc

        self._update_doc(store, change)

    def view_statements(self, doc: dict[str, Any], version: int) -> list[Statement]:
        """The views over the catalog document's live run tables: ``<table>`` (each unit at its most recently
        published version) and, for a results table, ``<table>_versions`` (every version). Each is one
        idempotent CREATE OR REPLACE VIEW, so running both again after a crash between them converges."""
        latest = self._view_statement("view", self.table, doc, version, lambda e: [*e["hidden"],
                                                                                   *e.get("superseded", ())])
        if self.spec.per_run:
            return [latest]
        every = self._view_statement("view-versions", Ident(f"{self.table}{VERSIONS_SUFFIX}"), doc, version,
                                     lambda e: e["hidden"])
        return [latest, every]

    def _view_statement(self, step: str, name: Ident, doc: dict[str, Any], version: int,
                        left_out: Callable[[dict[str, Any]], list[str]]) -> Statement:
        parts = [{"run_table": Ident(e["run_table"]), "hidden": [Label(u) for u in sorted(left_out(e))],
                  "columns": self._columns_of(e)} for e in doc["live"]]
        # a run table with nothing left to show is left out, unless the view would then have no run table at all
        shown = [p for p, e in zip(parts, doc["live"]) if len(p["hidden"]) < len(e["units"])]
        sql = render("publish/swap_view", database=self.database, table=name, unit_column=self.unit_column,
                     parts=shown or parts[-1:])
        if len(sql.encode()) > MAX_QUERY_BYTES:
            raise PublishError(
                f"the view {name.value} over {len(shown)} run tables is {len(sql.encode())} bytes, over Athena's "
                f"{MAX_QUERY_BYTES}: re-publish the table's units under one publish_key to compact it "
                "(see README 'Publishing')"
            )
        return Statement(step, sql, (), client_token(self.record_key, self.record.get("finish_try", 0), version,
                                                     step, sql))

    def _columns_of(self, entry: dict[str, Any]) -> list[dict[str, Any]] | None:
        """The view's column list for a run table that lacks some of the spec's added columns (written before
        they were added): every current column, NULL for the missing ones. None (``SELECT *``) for a run table
        that has them all."""
        missing = set(self.spec.added) - set(entry.get("added", ()))
        if not missing:
            return None
        return [{"name": Ident(name), "present": name not in missing} for name in self.output_columns()]

    def output_columns(self) -> list[str]:
        """The names of the columns the table's SELECT writes, in order (partition columns last)."""
        import sqlglot

        select = sqlglot.parse_one(render(self.spec.select, **self._context()), read="athena")
        return [column.alias_or_name for column in select.expressions]

    def read_doc(self, store: Any) -> tuple[int, dict[str, Any]]:
        version, doc = store.get_catalog(self.qualified)
        return version, doc or {"live": [], "garbage": []}

    def _update_doc(self, store: Any, change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> None:
        for _ in range(100):
            version, doc = self.read_doc(store)
            new = change(json.loads(json.dumps(doc)))
            if new is None or store.put_catalog(self.qualified, new, version):
                return
        raise PublishError(f"could not update the catalog of {self.qualified}: 100 concurrent changes in a row")

    def finish(self, engine: Any, store: Any, delete_prefix: Callable[[str], int]) -> dict[str, Any]:
        """Everything after the writes: unstage, commit, swap the view, clean up. Safe to run again."""
        self.record["finish_try"] = self.record.get("finish_try", 0) + 1
        store.put_publish_record(self.qualified, self.publish_key, self.record)
        engine.run(*_args(self.unstage_statement()))
        self.commit(store)
        while True:
            version, doc = self.read_doc(store)
            for statement in self.view_statements(doc, version):
                engine.run(*_args(statement))
            # a publish that committed meanwhile may have run its view before ours: render again if so
            if self.read_doc(store)[0] == version:
                break
        dropped = self.collect_garbage(engine, store, delete_prefix)
        self.record["status"] = "committed"
        store.put_publish_record(self.qualified, self.publish_key, self.record)
        return {
            "table": f"{self.database}.{self.table}",
            "run_table": self.run_table.value,
            "generation": self.generation,
            "location": self.location.value,
            "units": len(self.units),
            "write_statements": len(self.batches()),
            "live_run_tables": len(doc["live"]),
            "dropped_run_tables": dropped,
        }

    def collect_garbage(self, engine: Any, store: Any, delete_prefix: Callable[[str], int]) -> list[str]:
        """Drop run tables that left the view and delete their files; each is forgotten once it is gone."""
        _, doc = self.read_doc(store)
        live = {e["run_table"] for e in doc["live"]}
        dropped = []
        for item in doc["garbage"]:
            if item["run_table"] in live:
                continue
            for name in (item["run_table"], item["staging_table"]):
                sql = render("publish/drop_table", database=self.database, name=Ident(name))
                engine.run(sql, [], client_token(self.record_key, self.record.get("finish_try", 0), "drop", sql))
            delete_prefix(item["location"])
            dropped.append(item["run_table"])

            def forget(doc: dict[str, Any], name: str = item["run_table"]) -> dict[str, Any]:
                doc["garbage"] = [g for g in doc["garbage"] if g["run_table"] != name]
                return doc

            self._update_doc(store, forget)
        return dropped


def _add_garbage(doc: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    if not any(g["run_table"] == entry["run_table"] for g in doc["garbage"]):
        doc["garbage"].append({k: entry[k] for k in ("run_table", "staging_table", "location")})
    return doc


def _args(statement: Statement) -> tuple[str, list[str], str]:
    return statement.sql, list(statement.params), statement.token


def start(publication: Publication, engine: Any, store: Any, *, list_files: Callable[[str], list[str]]) -> None:
    """Begin a publish: every unit has staged rows (one listing), a generation is chosen, the staging table made."""
    publication.check_staged(list_files(publication.staging.value))
    publication.begin(store)
    publication.stage(engine, store)


def drive(publication: Publication, engine: Any, store: Any, *, delete_prefix: Callable[[str], int],
          on_started: Callable[[Statement, str], None] | None = None) -> dict[str, Any]:
    """Run the write statements still to do, then ``finish``. The one driver of the protocol: the operator and
    ``publish_now`` both go through it.

    ``on_started(statement, query_id)`` is called after each write statement starts on an engine that runs it
    in the background (Athena): the operator defers there, which does not return, and comes back through
    ``finish_write`` and this function again. Without it, or where the engine finishes a statement as it
    starts it (the local engine), each write is waited for here.
    """
    while (statement := publication.next_write()) is not None:
        query_id = engine.start(*_args(statement))
        if on_started is not None and not engine.finishes_on_start:
            on_started(statement, query_id)
        finish_write(publication, engine, store, statement.step, query_id, wait=True)
    return publication.finish(engine, store, delete_prefix)


def publish_now(publication: Publication, engine: Any, store: Any, *, list_files: Callable[[str], list[str]],
                delete_prefix: Callable[[str], int]) -> dict[str, Any]:
    """A whole publish here and now, waiting for each statement (tests, benchmarks, the local engine)."""
    start(publication, engine, store, list_files=list_files)
    return drive(publication, engine, store, delete_prefix=delete_prefix)


def finish_write(publication: Publication, engine: Any, store: Any, step: str, query_id: str, *, wait: bool) -> None:
    """Record a finished write statement, or abandon the generation if it failed."""
    status = engine.wait(query_id) if wait else engine.status(query_id)
    if status.state != "SUCCEEDED":
        raise publication.fail(store, step, f"query {query_id} {status.state}: {status.reason}")
    publication.mark_done(store, step, query_id)
