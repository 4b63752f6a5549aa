"""Publishing tables: Snappy Parquet through CTAS + INSERT INTO batches, atomic view swap, idempotent re-publish.

Locally the SQL really runs (DuckDB, through sqlglot) and the output is read back with pyarrow. On the AWS path
moto's Athena accepts the statements without running them, so those tests check what is sent: statements,
order, execution parameters and ClientRequestTokens.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from airflow.sdk.exceptions import TaskDeferred

from hooks import aws_clients, backend, lake
from hooks.query_engine import LocalQueryEngine
from hooks.sql_render import Ident, Label, UnsafeSqlValue, render
from operators.publish import PublishTableOperator
from publishing import Publication, PublishError, run_scope, staging_uri
from tests.conftest import task_context

CONTEXT = {"dag_id": "rnaseq", "task_id": "publish_qc", "run_id": "manual__2026-11-21T10:00:00+00:00"}


def _path(uri: str) -> Path:
    return Path(unquote(urlparse(uri).path))


def stage_qc(settings, samples, *, project="P1", version="1.0", value=lambda s: len(s), pipeline="rnaseq"):
    """Stage two QC metrics per sample the way the steps do: one TSV with a header per sample."""
    root = staging_uri(settings.lake_root, "qc_metrics", pipeline, version, project)
    for sample in samples:
        body = f"tool\tmetric\tvalue\nfastp\treads\t{value(sample)}\nfastp\tq30_rate\t0.93\n"
        lake.write_text(settings, f"{root}sample_id={sample}/fastp.tsv", body)
    return root


def publish_op(samples, *, table="qc_metrics", project="P1", version="1.0", key=None, **kwargs):
    return PublishTableOperator(task_id="publish_qc", table=table, project=project, pipeline="rnaseq",
                                pipeline_version=version, units=samples, publish_key=key, **kwargs)


def engine(settings) -> LocalQueryEngine:
    return backend.query_engine(settings)


def rows(settings, sql):
    return engine(settings).fetch(sql)[1]


def query_log(settings) -> list[tuple[str, str]]:
    import duckdb

    with duckdb.connect(str(settings.local_catalog_path), read_only=True) as con:
        return con.execute("SELECT state, sql FROM _engine.queries ORDER BY finished").fetchall()


def samples(n):
    return [f"S{i:04d}" for i in range(n)]


# --- what a user reads back ------------------------------------------------------------------------------
def test_published_table_is_snappy_parquet_partitioned_by_project_and_sample(local):
    stage_qc(local, ["A1", "A2", "A3"])
    summary = publish_op(["A1", "A2", "A3"]).execute(task_context(**CONTEXT))

    root = _path(summary["location"])
    files = sorted(root.rglob("*.parquet"))
    assert {f.parent.relative_to(root).as_posix() for f in files} == {
        "project=P1/sample_id=A1", "project=P1/sample_id=A2", "project=P1/sample_id=A3"}
    for f in files:
        meta = pq.ParquetFile(f).metadata
        assert {meta.row_group(0).column(i).compression for i in range(meta.num_columns)} == {"SNAPPY"}
    table = ds.dataset(root, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 6
    assert table.schema.field("value").type == "double"
    assert table.column_names[:6] == ["pipeline", "pipeline_version", "run_key", "tool", "metric", "value"]
    by_name = rows(local, "SELECT sample_id, value FROM qc_metrics WHERE metric = 'reads' ORDER BY sample_id")
    assert by_name == [("A1", 2.0), ("A2", 2.0), ("A3", 2.0)]


def test_250_samples_publish_as_one_ctas_and_two_inserts(local):
    units = samples(250)
    stage_qc(local, units)
    summary = publish_op(units).execute(task_context(**CONTEXT))

    assert summary["write_statements"] == 3
    writes = [sql.split()[0:2] for state, sql in query_log(local) if sql.startswith(("CREATE TABLE", "INSERT"))]
    assert writes == [["CREATE", "TABLE"], ["INSERT", "INTO"], ["INSERT", "INTO"]]
    assert all(state == "SUCCEEDED" for state, _ in query_log(local))
    assert rows(local, "SELECT count(*), count(DISTINCT sample_id) FROM qc_metrics") == [(500, 250)]
    partitions = {p.parent.name for p in _path(summary["location"]).rglob("*.parquet")}
    assert len(partitions) == 250


def test_local_engine_refuses_over_100_partitions_in_one_statement_as_athena_does(local):
    units = samples(101)
    root = stage_qc(local, units)
    pub = Publication(table="qc_metrics", database="genomics", lake_root=local.lake_root, project="P1",
                      pipeline="rnaseq", pipeline_version="1.0", units=units, staging=root, publish_key="k")
    store = backend.job_state_store(local)
    pub.begin(store)
    pub.stage(engine(local), store)
    ctas = pub.write_statements()[0]
    widened = ctas.sql.replace("WHERE sample_id IN", "WHERE sample_id NOT IN ('none') OR sample_id IN")
    query_id = engine(local).start(widened, list(ctas.params), "t" * 32)

    status = engine(local).status(query_id)
    assert status.state == "FAILED"
    assert "HIVE_TOO_MANY_OPEN_PARTITIONS" in status.reason
    assert not list(_path(pub.location.value).rglob("*.parquet")), "nothing may be written"


def test_ctas_into_a_non_empty_location_fails_as_athena_does(local):
    root = stage_qc(local, ["A1"])
    pub = Publication(table="qc_metrics", database="genomics", lake_root=local.lake_root, project="P1",
                      pipeline="rnaseq", pipeline_version="1.0", units=["A1"], staging=root, publish_key="k")
    store = backend.job_state_store(local)
    pub.begin(store)
    pub.stage(engine(local), store)
    _path(pub.location.value).mkdir(parents=True)
    (_path(pub.location.value) / "left-over.parquet").write_bytes(b"x")
    ctas = pub.write_statements()[0]

    status = engine(local).status(engine(local).start(ctas.sql, list(ctas.params), ctas.token))
    assert status.state == "FAILED" and "HIVE_PATH_ALREADY_EXISTS" in status.reason


# --- re-publishing -------------------------------------------------------------------------------------
def test_republishing_the_same_run_gives_an_identical_table_and_removes_the_old_generation(local):
    units = samples(120)
    stage_qc(local, units)
    first = publish_op(units).execute(task_context(**CONTEXT))
    before = rows(local, "SELECT * FROM qc_metrics ORDER BY sample_id, metric")

    second = publish_op(units).execute(task_context(**CONTEXT))
    after = rows(local, "SELECT * FROM qc_metrics ORDER BY sample_id, metric")

    assert after == before and len(after) == 240
    assert (first["generation"], second["generation"]) == (1, 2)
    assert second["dropped_run_tables"] == [first["run_table"]]
    assert not _path(first["location"]).exists()
    assert [name for (name,) in rows(local, "SELECT table_name FROM information_schema.tables "
                                            "WHERE table_schema = 'genomics' ORDER BY 1")] == [
        "qc_metrics", second["run_table"], "qc_metrics_versions"]


def test_a_later_run_replaces_the_samples_it_republishes_and_keeps_the_others(local):
    stage_qc(local, ["A1", "A2", "A3"], version="1.0")
    publish_op(["A1", "A2", "A3"], version="1.0", key="run-1").execute(task_context(**CONTEXT))
    stage_qc(local, ["A2"], version="1.1", value=lambda s: 999)
    publish_op(["A2"], version="1.1", key="run-2").execute(task_context(**CONTEXT))

    got = rows(local, "SELECT sample_id, pipeline_version, value FROM qc_metrics WHERE metric = 'reads' "
                      "ORDER BY sample_id")
    assert got == [("A1", "1.0", 2.0), ("A2", "1.1", 999.0), ("A3", "1.0", 2.0)]


def test_a_later_publish_hides_only_its_own_project_and_pipeline(local):
    """rnaseq and germline both publish qc_metrics for a sample; the same sample id in another project is
    another sample. None of them hides another."""
    stage_qc(local, ["A1"], project="P1", pipeline="rnaseq", value=lambda s: 1)
    publish_op(["A1"], project="P1", key="rnaseq-run").execute(task_context(**CONTEXT))
    stage_qc(local, ["A1"], project="P1", pipeline="germline", value=lambda s: 2)
    PublishTableOperator(task_id="publish_qc", table="qc_metrics", project="P1", pipeline="germline",
                         pipeline_version="1.0", units=["A1"], publish_key="germline-run").execute(
        task_context(**CONTEXT))
    stage_qc(local, ["A1"], project="P2", pipeline="rnaseq", value=lambda s: 3)
    publish_op(["A1"], project="P2", key="other-project-run").execute(task_context(**CONTEXT))

    got = rows(local, "SELECT project, pipeline, value FROM qc_metrics WHERE metric = 'reads' ORDER BY value")
    assert got == [("P1", "rnaseq", 1.0), ("P1", "germline", 2.0), ("P2", "rnaseq", 3.0)]


def test_a_run_wholly_replaced_by_a_later_one_is_dropped(local):
    stage_qc(local, ["A1", "A2"])
    old = publish_op(["A1", "A2"], key="run-1").execute(task_context(**CONTEXT))
    new = publish_op(["A1", "A2"], key="run-2").execute(task_context(**CONTEXT))

    assert new["dropped_run_tables"] == [old["run_table"]] and new["live_run_tables"] == 1
    assert rows(local, "SELECT count(*) FROM qc_metrics") == [(4,)]


def test_a_failed_statement_is_not_retried_in_place_the_next_try_writes_a_new_generation(local):
    root = stage_qc(local, ["A1", "A2"])
    bad = _path(root) / "sample_id=A2" / "fastp.tsv"
    good = bad.read_text()
    bad.write_text("tool\tmetric\tvalue\nfastp\treads\tnot-a-number\n")

    with pytest.raises(PublishError, match="generation 1.* failed at write-000"):
        publish_op(["A1", "A2"]).execute(task_context(**CONTEXT))
    bad.write_text(good)
    summary = publish_op(["A1", "A2"]).execute(task_context(**CONTEXT))

    assert summary["generation"] == 2
    assert summary["dropped_run_tables"] == [summary["run_table"].replace("_g2", "_g1")]
    assert rows(local, "SELECT count(*) FROM qc_metrics") == [(4,)]


def test_a_retry_after_a_crash_resumes_without_running_done_statements_again(local):
    units = samples(150)
    root = stage_qc(local, units)
    store = backend.job_state_store(local)
    crashed = Publication(table="qc_metrics", database="genomics", lake_root=local.lake_root, project="P1",
                          pipeline="rnaseq", pipeline_version="1.0", units=units, staging=root,
                          publish_key="rnaseq/publish_qc/" + CONTEXT["run_id"])
    crashed.begin(store)
    crashed.stage(engine(local), store)
    ctas = crashed.next_write()
    engine(local).start(ctas.sql, list(ctas.params), ctas.token)  # the worker died before recording it

    summary = publish_op(units).execute(task_context(**CONTEXT))

    assert summary["generation"] == 1
    ctas_runs = [sql for _, sql in query_log(local) if sql.startswith("CREATE TABLE")]
    assert len(ctas_runs) == 1, "the retry must reattach to the CTAS through its token, not run it again"
    assert rows(local, "SELECT count(DISTINCT sample_id) FROM qc_metrics") == [(150,)]


# --- versions side by side -----------------------------------------------------------------------------
def publish_qc(settings, units, version, key, *, project="P1", pipeline="rnaseq", value=lambda s: 1):
    stage_qc(settings, units, project=project, version=version, pipeline=pipeline, value=value)
    return PublishTableOperator(task_id="publish_qc", table="qc_metrics", project=project, pipeline=pipeline,
                                pipeline_version=version, units=units, publish_key=key).execute(
        task_context(**CONTEXT))


def reads(settings, view):
    return sorted(rows(settings, f"SELECT project, pipeline, sample_id, pipeline_version, value FROM {view} "
                                 "WHERE metric = 'reads'"))


def test_publishing_2_0_keeps_1_0_queryable_and_the_table_shows_2_0(local):
    publish_qc(local, ["A1", "A2"], "1.0", "run-1", value=lambda s: 10)
    publish_qc(local, ["A1", "A2"], "2.0", "run-2", value=lambda s: 20)

    assert reads(local, "qc_metrics") == [("P1", "rnaseq", "A1", "2.0", 20.0), ("P1", "rnaseq", "A2", "2.0", 20.0)]
    assert reads(local, "qc_metrics_versions") == [
        ("P1", "rnaseq", "A1", "1.0", 10.0), ("P1", "rnaseq", "A1", "2.0", 20.0),
        ("P1", "rnaseq", "A2", "1.0", 10.0), ("P1", "rnaseq", "A2", "2.0", 20.0)]


# the query README 'Publishing' gives for comparing two versions
V1_VS_V2 = """
SELECT v1.sample_id, v1.metric, v1.value AS v1_value, v2.value AS v2_value
FROM qc_metrics_versions v1
JOIN qc_metrics_versions v2
  ON v2.project = v1.project AND v2.pipeline = v1.pipeline AND v2.sample_id = v1.sample_id
 AND v2.tool = v1.tool AND v2.metric = v1.metric
WHERE v1.pipeline_version = '1.0' AND v2.pipeline_version = '2.0' AND v1.project = 'P1'
ORDER BY v1.sample_id, v1.metric
"""


def test_comparing_two_versions_is_one_query(local):
    publish_qc(local, ["A1", "A2"], "1.0", "run-1", value=lambda s: 10)
    publish_qc(local, ["A1"], "2.0", "run-2", value=lambda s: 20)

    assert rows(local, V1_VS_V2) == [("A1", "q30_rate", 0.93, 0.93), ("A1", "reads", 10.0, 20.0)]


def test_a_superseded_version_is_kept_not_dropped(local):
    first = publish_qc(local, ["A1"], "1.0", "run-1")
    second = publish_qc(local, ["A1"], "2.0", "run-2")

    assert second["dropped_run_tables"] == [] and second["live_run_tables"] == 2
    assert _path(first["location"]).exists()


def test_republishing_a_version_replaces_its_own_rows_and_leaves_other_versions(local):
    first = publish_qc(local, ["A1", "A2"], "1.0", "run-1", value=lambda s: 10)
    publish_qc(local, ["A1"], "2.0", "run-2", value=lambda s: 20)
    third = publish_qc(local, ["A1", "A2"], "1.0", "run-3", value=lambda s: 11)

    assert third["dropped_run_tables"] == [first["run_table"]], "run-1 is wholly replaced at its own version"
    assert reads(local, "qc_metrics_versions") == [
        ("P1", "rnaseq", "A1", "1.0", 11.0), ("P1", "rnaseq", "A1", "2.0", 20.0), ("P1", "rnaseq", "A2", "1.0", 11.0)]
    assert reads(local, "qc_metrics") == [("P1", "rnaseq", "A1", "1.0", 11.0), ("P1", "rnaseq", "A2", "1.0", 11.0)], \
        "the version published most recently is the one the table shows"


def test_a_sample_only_in_1_0_stays_in_the_table_beside_samples_at_2_0(local):
    publish_qc(local, ["A1", "A2"], "1.0", "run-1", value=lambda s: 10)
    publish_qc(local, ["A1"], "2.0", "run-2", value=lambda s: 20)

    assert reads(local, "qc_metrics") == [("P1", "rnaseq", "A1", "2.0", 20.0), ("P1", "rnaseq", "A2", "1.0", 10.0)]


def test_versions_of_other_projects_and_pipelines_do_not_supersede_each_other(local):
    publish_qc(local, ["A1"], "1.0", "rnaseq-p1", value=lambda s: 1)
    publish_qc(local, ["A1"], "2.0", "germline-p1", pipeline="germline", value=lambda s: 2)
    publish_qc(local, ["A1"], "2.0", "rnaseq-p2", project="P2", value=lambda s: 3)

    expected = [("P1", "germline", "A1", "2.0", 2.0), ("P1", "rnaseq", "A1", "1.0", 1.0),
                ("P2", "rnaseq", "A1", "2.0", 3.0)]
    assert reads(local, "qc_metrics") == expected
    assert reads(local, "qc_metrics_versions") == expected


def test_a_catalog_written_before_versions_were_recorded_keeps_working(local):
    """An earlier release's catalog entries have no pipeline_version and no superseded list. Such an entry
    counts as a version of its own: the next publish supersedes its samples, never hides or drops them."""
    old = publish_qc(local, ["A1", "A2"], "1.0", "run-1", value=lambda s: 10)
    store = backend.job_state_store(local)
    version, doc = store.get_catalog(f"{local.database}.qc_metrics")
    for entry in doc["live"]:
        del entry["pipeline_version"], entry["superseded"]
    assert store.put_catalog(f"{local.database}.qc_metrics", doc, version)

    new = publish_qc(local, ["A1"], "2.0", "run-2", value=lambda s: 20)

    assert new["dropped_run_tables"] == [] and _path(old["location"]).exists()
    assert reads(local, "qc_metrics") == [("P1", "rnaseq", "A1", "2.0", 20.0), ("P1", "rnaseq", "A2", "1.0", 10.0)]
    assert reads(local, "qc_metrics_versions") == [
        ("P1", "rnaseq", "A1", "1.0", 10.0), ("P1", "rnaseq", "A1", "2.0", 20.0), ("P1", "rnaseq", "A2", "1.0", 10.0)]


def test_a_crash_between_the_two_view_swaps_converges_on_retry(local):
    from publishing import finish_write, start

    publish_qc(local, ["A1"], "1.0", "run-1", value=lambda s: 10)
    root = stage_qc(local, ["A1"], version="2.0", value=lambda s: 20)
    store, eng = backend.job_state_store(local), engine(local)
    key = "rnaseq/publish_qc/" + CONTEXT["run_id"]
    crashed = Publication(table="qc_metrics", database=local.database, lake_root=local.lake_root, project="P1",
                          pipeline="rnaseq", pipeline_version="2.0", units=["A1"], staging=root, publish_key=key)
    start(crashed, eng, store, list_files=lambda prefix: lake.list_files(local, prefix))
    ctas = crashed.next_write()
    finish_write(crashed, eng, store, ctas.step, eng.start(ctas.sql, list(ctas.params), ctas.token), wait=True)
    crashed.commit(store)
    version, doc = crashed.read_doc(store)
    latest, _every = crashed.view_statements(doc, version)
    eng.run(latest.sql, list(latest.params), latest.token)  # the worker dies before <table>_versions is swapped
    assert reads(local, "qc_metrics_versions") == [("P1", "rnaseq", "A1", "1.0", 10.0)]

    summary = publish_op(["A1"], version="2.0").execute(task_context(**CONTEXT))  # Airflow's retry

    assert summary["generation"] == 1 and summary["dropped_run_tables"] == []
    assert reads(local, "qc_metrics") == [("P1", "rnaseq", "A1", "2.0", 20.0)]
    assert reads(local, "qc_metrics_versions") == [("P1", "rnaseq", "A1", "1.0", 10.0),
                                                   ("P1", "rnaseq", "A1", "2.0", 20.0)]


def test_a_run_cleared_and_rerun_at_another_version_keeps_its_first_version_beside_the_new_one(local):
    """A backfill with --reprocess-behavior completed clears the day's run and runs it again, same run id, at
    pipeline_version 2.0: the 2.0 rows replace 1.0's in the table, and 1.0's stay in <table>_versions."""
    from types import SimpleNamespace

    stage_qc(local, ["A1"], version="1.0")
    publish_op(["A1"], version="1.0").execute(task_context(**CONTEXT))
    stage_qc(local, ["A1"], version="2.0", value=lambda s: 2 * len(s))
    cleared = {**task_context(**CONTEXT), "dag_run": SimpleNamespace(clear_number=1)}
    publish_op(["A1"], version="2.0").execute(cleared)

    assert {r[3] for r in reads(local, "qc_metrics")} == {"2.0"}
    assert {r[3] for r in reads(local, "qc_metrics_versions")} == {"1.0", "2.0"}


def stage_any(settings, spec, pipeline, version, project, units):
    """Stage one row per unit for any table, with a value of each staged column's type."""
    sql = (Path(__file__).resolve().parents[1] / "include" / "sql" / "staging" / f"{spec.staging}.sql").read_text()
    block = sql.split("{% block columns %}", 1)[1].split("{% endblock %}", 1)[0]
    columns = re.findall(r"^\s*([a-z_0-9]+)\s+(\w+),?\s*$", block, flags=re.M)
    value = {"string": "x", "bigint": "1", "double": "0.5"}
    root = staging_uri(settings.lake_root, spec.staging, pipeline, version, project)
    for unit in units:
        lake.write_text(settings, f"{root}{spec.unit_column}={unit}/rows.tsv",
                        "\t".join(c for c, _ in columns) + "\n" + "\t".join(value[t] for _, t in columns) + "\n")


def _results_tables():
    from publishing import TABLES

    # A table whose unit is the version itself (rnaseq_matrices: one set of matrices per version) has nothing
    # another version could supersede: each version's rows are their own unit and all stay in the table.
    return sorted(name for name, spec in TABLES.items() if not spec.per_run and spec.unit_column != "pipeline_version")


@pytest.mark.parametrize("table", _results_tables())
def test_every_results_table_shows_the_newest_version_and_keeps_all_in_its_versions_view(local, table):
    from publishing import TABLES

    spec = TABLES[table]
    for version, units in (("1.0", ["U1", "U2"]), ("2.0", ["U1"])):
        stage_any(local, spec, "p", version, "P1", units)
        PublishTableOperator(task_id=f"publish_{table}", table=table, project="P1", pipeline="p",
                             pipeline_version=version, units=units, publish_key=f"run-{version}").execute(
            task_context(**CONTEXT))

    unit = spec.unit_column
    assert sorted(rows(local, f"SELECT DISTINCT {unit}, pipeline_version FROM {table}")) == [
        ("U1", "2.0"), ("U2", "1.0")]
    assert sorted(rows(local, f"SELECT DISTINCT {unit}, pipeline_version FROM {table}_versions")) == [
        ("U1", "1.0"), ("U1", "2.0"), ("U2", "1.0")]


def test_no_table_is_named_like_another_tables_versions_view():
    from publishing import TABLES, VERSIONS_SUFFIX

    assert not {f"{name}{VERSIONS_SUFFIX}" for name in TABLES} & set(TABLES)


def test_job_runs_keeps_every_run_with_its_pipeline_version_in_one_view(local):
    header = "job_id\tstep\tstatus\tattempts\tstarted_ms\tstopped_ms\tvcpus\tmemory_mib\tjob_queue\t" \
             "capacity_type\tinstance_type\tcontainer_reason\tjob_definition\treused_from\n"
    for run_id, version in (("manual__v1", "1.0"), ("manual__v2", "2.0")):
        runs = staging_uri(local.lake_root, "job_runs", "rnaseq", run_scope(run_id), "P1")
        lake.write_text(local, f"{runs}sample_id=A1/salmon.tsv", header +
                        f"j-{version}\tsalmon\tSUCCEEDED\t1\t0\t1000\t1\t1024\tspot\tSPOT\t\t\td:1\t\n")
        publish_op(["A1"], table="job_runs", version=version).execute(task_context(**{**CONTEXT, "run_id": run_id}))

    assert sorted(rows(local, "SELECT job_id, pipeline_version FROM job_runs")) == [("j-1.0", "1.0"), ("j-2.0", "2.0")]
    tables = [name for (name,) in rows(local, "SELECT table_name FROM information_schema.tables")]
    assert "job_runs_versions" not in tables, "per-run facts hide nothing: job_runs already holds every version"


# --- bad input never reaches a query ------------------------------------------------------------------
@pytest.mark.parametrize(
    "change",
    [
        {"project": "P1'; DROP TABLE qc_metrics; --"},
        {"units": ["A1", "A2' OR '1'='1"]},
        {"units": ["A1", "A1"]},
        {"units": []},
        {"pipeline_version": "1.0 --"},
        {"table": "qc_metrics; DROP"},
    ],
    ids=["project", "sample", "duplicate-sample", "no-samples", "version", "table"],
)
def test_bad_input_is_refused_before_any_query(local, change):
    stage_qc(local, ["A1", "A2"])
    args = {"units": ["A1", "A2"], "project": "P1", "version": "1.0", **change}
    if "pipeline_version" in change:
        args["version"] = args.pop("pipeline_version")
    op = publish_op(args.pop("units"), **args)

    with pytest.raises((UnsafeSqlValue, PublishError)):
        op.execute(task_context(**CONTEXT))
    assert not local.local_catalog_path.exists(), "no statement may have been started"


def test_bad_database_setting_is_refused_before_any_query(local, monkeypatch):
    from tests.conftest import use_settings

    use_settings(monkeypatch, local, database="genomics-prod")
    stage_qc(local, ["A1"])
    with pytest.raises(UnsafeSqlValue, match="genomics-prod"):
        publish_op(["A1"]).execute(task_context(**CONTEXT))
    assert not local.local_catalog_path.exists()


def test_samples_without_staged_rows_are_named_before_any_query(local):
    stage_qc(local, ["A1"])
    with pytest.raises(PublishError, match=r"1 of 2 sample_id value\(s\).*\['A2'\]"):
        publish_op(["A1", "A2"]).execute(task_context(**CONTEXT))
    assert not local.local_catalog_path.exists()


def test_templates_refuse_to_print_an_unchecked_value():
    with pytest.raises(UnsafeSqlValue, match="refusing to render"):
        render("publish/drop_table", database="genomics", name="qc_metrics; DROP TABLE x")
    assert render("publish/drop_table", database=Ident("genomics"), name=Ident("t")) == \
        "DROP TABLE IF EXISTS genomics.t"
    assert str(Label("S-1.a")) == "'S-1.a'"


def test_every_table_renders_to_sql_that_athena_and_duckdb_parse(local):
    import sqlglot

    from publishing import TABLES

    for name, spec in TABLES.items():
        pub = Publication(table=name, database="genomics", lake_root=local.lake_root, project="P1",
                          pipeline="p", pipeline_version="1", units=["U1", "U2"], publish_key="k",
                          staging=staging_uri(local.lake_root, spec.staging, "p", "1", "P1"))
        pub.record = {"generation": 1, "status": "writing", "done": {}}
        for statement in [pub.stage_statement(), *pub.write_statements(), pub.unstage_statement()]:
            parsed = sqlglot.parse_one(statement.sql, read="athena")
            parsed.sql(dialect="duckdb")
            assert statement.params == (() if statement.step in ("stage", "unstage") else ("U1", "U2"))


# --- the tables the pipelines publish ---------------------------------------------------------------
def test_gene_quant_sums_transcripts_and_job_runs_gives_compute_per_sample(local):
    quant = staging_uri(local.lake_root, "transcript_quant", "rnaseq", "1.0", "P1")
    lake.write_text(local, f"{quant}sample_id=A1/quant.tsv",
                    "transcript_id\tgene_id\tlength\teffective_length\ttpm\tnum_reads\n"
                    "T1\tG1\t1000\t800.5\t100.0\t50\nT2\tG1\t500\t300.0\t25.5\t10\nT3\tG2\t700\t500.0\t3.0\t1\n")
    runs = staging_uri(local.lake_root, "job_runs", "rnaseq", run_scope(CONTEXT["run_id"]), "P1")
    lake.write_text(local, f"{runs}sample_id=A1/salmon-j1.tsv",
                    "job_id\tstep\tstatus\tattempts\tstarted_ms\tstopped_ms\tvcpus\tmemory_mib\tjob_queue\t"
                    "capacity_type\tinstance_type\tcontainer_reason\tjob_definition\treused_from\n"
                    "j1\tsalmon\tSUCCEEDED\t2\t1000\t3601000\t4\t8192\tspot\tSPOT\t\t\tgenomics-rnaseq:3\t\n")
    publish_op(["A1"], table="gene_quant").execute(task_context(**CONTEXT))
    publish_op(["A1"], table="job_runs").execute(task_context(**CONTEXT))

    assert rows(local, "SELECT gene_id, transcripts, tpm, num_reads FROM gene_quant ORDER BY gene_id") == [
        ("G1", 2, 125.5, 60.0), ("G2", 1, 3.0, 1.0)]
    assert rows(local, "SELECT step, attempts, runtime_seconds, vcpu_hours, gib_hours, capacity_type, "
                       "instance_type, container_reason, job_definition, reused_from FROM job_runs") == [
        ("salmon", 2, 3600.0, 4.0, 8.0, "SPOT", None, None, "genomics-rnaseq:3", None)]


def test_job_runs_published_before_its_new_columns_stay_readable_beside_new_runs(local):
    """A lake that published job_runs before container_reason, job_definition and reused_from existed: its
    run tables lack them. The next publish must not break the view: old rows read NULL there."""
    header = "job_id\tstep\tstatus\tattempts\tstarted_ms\tstopped_ms\tvcpus\tmemory_mib\tjob_queue\t" \
             "capacity_type\tinstance_type\tcontainer_reason\tjob_definition\treused_from\n"
    for run_id, job in (("manual__old", "j-old"), ("manual__new", "j-new")):
        runs = staging_uri(local.lake_root, "job_runs", "rnaseq", run_scope(run_id), "P1")
        lake.write_text(local, f"{runs}sample_id=A1/salmon-{job}.tsv", header +
                        f"{job}\tsalmon\tSUCCEEDED\t1\t0\t3600000\t1\t1024\tspot\tSPOT\t\t\tgenomics-rnaseq:3\t\n")
    publish_op(["A1"], table="job_runs").execute(task_context(**{**CONTEXT, "run_id": "manual__old"}))

    # Make that first run table what the earlier release wrote: no added columns, and a catalog entry that
    # does not list them.
    store, eng = backend.job_state_store(local), engine(local)
    version, doc = store.get_catalog(f"{local.database}.job_runs")
    entry = doc["live"][0]
    pub = Publication(table="job_runs", database=local.database, lake_root=local.lake_root, project="P1",
                      pipeline="rnaseq", pipeline_version="1.0", units=["A1"], publish_key="k",
                      staging=staging_uri(local.lake_root, "job_runs", "rnaseq", "x", "P1"))
    pub.record = {"generation": 1}
    old_columns = [c for c in pub.output_columns() if c not in pub.spec.added]
    eng.run(f"CREATE TABLE {local.database}.job_runs__old WITH (format = 'PARQUET', "
            f"external_location = '{local.lake_root}/tables/job_runs/old_release/', "
            f"partitioned_by = ARRAY['project', 'sample_id']) AS "
            f"SELECT {', '.join(old_columns)} FROM {local.database}.{entry['run_table']}", [], "t" * 32)
    entry.pop("added")
    entry["run_table"] = "job_runs__old"
    assert store.put_catalog(f"{local.database}.job_runs", doc, version)

    publish_op(["A1"], table="job_runs").execute(task_context(**{**CONTEXT, "run_id": "manual__new"}))
    assert sorted(rows(local, "SELECT job_id, container_reason, job_definition FROM job_runs")) == [
        ("j-new", None, "genomics-rnaseq:3"), ("j-old", None, None)]


def test_ingest_qc_staged_before_the_layout_column_existed_publishes_with_layout_null(local):
    """A sample QC'd by the release before single-end support staged its ingest_qc row without ``layout``; a
    publish after the upgrade that includes it reads NULL there (as Athena reads a missing trailing field),
    beside the new rows."""
    columns = "series_id\treads_before\treads_after\tq30_rate\tgc_content\tduplication_rate\tverdict\treason"
    staged = staging_uri(local.lake_root, "ingest_qc", "geo", "1.0", "geo")
    lake.write_text(local, f"{staged}sample_id=GSM1/fastp.tsv",
                    f"{columns}\nGSE1\t20000\t19000\t0.93\t0.48\t0.1\tqc_failed\t\"R1\" ends early\n")
    lake.write_text(local, f"{staged}sample_id=GSM2/fastp.tsv",
                    f"{columns}\tlayout\nGSE1\t8000\t7900\t0.91\t0.47\t0.1\tqc_passed\t\tsingle-end\n")
    PublishTableOperator(task_id="publish_ingest_qc", table="ingest_qc", project="geo", pipeline="geo",
                         pipeline_version="1.0", units=["GSM1", "GSM2"]).execute(task_context(**CONTEXT))
    # and a quote is a character of the field (Athena's delimited text has no quoting)
    assert sorted(rows(local, "SELECT sample_id, reads_after, reason, layout FROM ingest_qc")) == [
        ("GSM1", 19000, '"R1" ends early', None), ("GSM2", 7900, None, "single-end")]


# --- the AWS path ----------------------------------------------------------------------------------
def _athena_calls(monkeypatch):
    """Record every StartQueryExecution request the publish sends (moto accepts it; it runs no SQL)."""
    calls = []
    original = aws_clients.aws_client

    def client(settings, service, conn_id=None):
        c = original(settings, service, conn_id)
        if service == "athena":
            c.meta.events.register("provide-client-params.athena.StartQueryExecution",
                                   lambda params, **_: calls.append(dict(params)))
        return c

    monkeypatch.setattr(aws_clients, "aws_client", client)
    return calls


def _stage_on_s3(aws, units):
    prefix = staging_uri(aws.settings.lake_root, "qc_metrics", "rnaseq", "1.0", "P1")
    for unit in units:
        lake.write_text(aws.settings, f"{prefix}sample_id={unit}/fastp.tsv", "tool\tmetric\tvalue\nfastp\treads\t1\n")


def _run_deferring(op, context):
    """Drive the operator as Airflow does: execute, then each trigger's event into its method."""
    from triggers.athena_query import AthenaQueryTrigger

    deferrals, method, event = [], op.execute, None
    while True:
        try:
            return (method(context) if event is None else method(context, event)), deferrals
        except TaskDeferred as deferred:
            assert isinstance(deferred.trigger, AthenaQueryTrigger)
            deferrals.append(deferred.trigger.step)
            import asyncio

            from tests.conftest import first_event

            event = asyncio.run(first_event(deferred.trigger))
            method = getattr(op, deferred.method_name)


def test_aws_publish_sends_statements_in_order_with_parameters_and_tokens(aws, monkeypatch):
    calls = _athena_calls(monkeypatch)
    units = samples(250)
    _stage_on_s3(aws, units)

    summary, deferrals = _run_deferring(publish_op(units), task_context(**CONTEXT))

    kinds = [re.match(r"(CREATE EXTERNAL TABLE|CREATE TABLE|INSERT INTO|DROP TABLE|CREATE OR REPLACE VIEW)",
                      c["QueryString"]).group(1) for c in calls]
    assert kinds == ["CREATE EXTERNAL TABLE", "CREATE TABLE", "INSERT INTO", "INSERT INTO", "DROP TABLE",
                     "CREATE OR REPLACE VIEW", "CREATE OR REPLACE VIEW"]
    assert deferrals == ["write-000", "write-001", "write-002"], "the worker is released while writes run"
    ctas = calls[1]
    assert "write_compression = 'SNAPPY'" in ctas["QueryString"]
    assert f"external_location = '{summary['location']}'" in ctas["QueryString"]
    assert summary["location"].startswith("s3://genomics-lake/lake/tables/qc_metrics/")
    assert [len(c.get("ExecutionParameters", [])) for c in calls] == [0, 100, 100, 50, 0, 0, 0]
    assert ctas["ExecutionParameters"][:2] == ["'S0000'", "'S0001'"]
    tokens = [c["ClientRequestToken"] for c in calls]
    assert len(set(tokens)) == len(tokens) and all(re.fullmatch(r"[0-9a-f]{64}", t) for t in tokens)
    assert all(c["QueryExecutionContext"] == {"Database": "genomics"} and c["WorkGroup"] == "primary"
               for c in calls)


def test_aws_retry_mid_publish_resends_the_same_tokens_and_skips_recorded_writes(aws, monkeypatch):
    calls = _athena_calls(monkeypatch)
    units = samples(150)
    _stage_on_s3(aws, units)
    op = publish_op(units)
    with pytest.raises(TaskDeferred):
        op.execute(task_context(**CONTEXT))  # CTAS started; then the worker is lost before the trigger fires
    first_try = [c["ClientRequestToken"] for c in calls]

    summary, _ = _run_deferring(publish_op(units), task_context(**CONTEXT))

    second_try = [c["ClientRequestToken"] for c in calls[len(first_try):]]
    assert second_try[:2] == first_try, "staging DDL and the CTAS are re-sent with their tokens: Athena " \
                                        "answers with the running query instead of starting another"
    assert summary["generation"] == 1 and summary["write_statements"] == 2


def test_aws_republish_deletes_the_old_generation_files_from_s3(aws, monkeypatch):
    _athena_calls(monkeypatch)
    _stage_on_s3(aws, ["A1"])
    first, _ = _run_deferring(publish_op(["A1"]), task_context(**CONTEXT))
    key = urlparse(first["location"]).path.lstrip("/") + "project=P1/sample_id=A1/part-0.parquet"
    aws.s3.put_object(Bucket="genomics-lake", Key=key, Body=b"written by Athena")  # moto's Athena writes nothing

    second, _ = _run_deferring(publish_op(["A1"]), task_context(**CONTEXT))

    assert second["dropped_run_tables"] == [first["run_table"]]
    left = aws.s3.list_objects_v2(Bucket="genomics-lake", Prefix=urlparse(first["location"]).path.lstrip("/"))
    assert left["KeyCount"] == 0


def test_aws_publish_of_a_new_version_swaps_both_views_and_supersedes_the_old_version(aws, monkeypatch):
    calls = _athena_calls(monkeypatch)
    _stage_on_s3(aws, ["A1", "A2"])
    first, _ = _run_deferring(publish_op(["A1", "A2"], key="run-1"), task_context(**CONTEXT))
    prefix = staging_uri(aws.settings.lake_root, "qc_metrics", "rnaseq", "2.0", "P1")
    lake.write_text(aws.settings, f"{prefix}sample_id=A1/fastp.tsv", "tool\tmetric\tvalue\nfastp\treads\t2\n")
    sent = len(calls)
    second, _ = _run_deferring(publish_op(["A1"], version="2.0", key="run-2"), task_context(**CONTEXT))

    latest, every = [" ".join(c["QueryString"].split()) for c in calls[sent:][-2:]]
    old, new = f"genomics.{first['run_table']}", f"genomics.{second['run_table']}"
    assert latest == (f"CREATE OR REPLACE VIEW genomics.qc_metrics AS SELECT * FROM {old} "
                      f"WHERE sample_id NOT IN ('A1') UNION ALL SELECT * FROM {new}")
    assert every == (f"CREATE OR REPLACE VIEW genomics.qc_metrics_versions AS SELECT * FROM {old} "
                     f"UNION ALL SELECT * FROM {new}")
    assert calls[-1]["ClientRequestToken"] != calls[-2]["ClientRequestToken"]


def test_athena_trigger_serializes_its_arguments_exactly(aws):
    from triggers.athena_query import AthenaQueryTrigger

    trigger = AthenaQueryTrigger(query_id="q-1", step="write-000", settings=aws.settings.to_dict(),
                                 deferred_at=1_796_000_000.5)
    path, kwargs = trigger.serialize()
    assert path == "triggers.athena_query.AthenaQueryTrigger"
    assert kwargs == {"query_id": "q-1", "step": "write-000", "settings": aws.settings.to_dict(),
                      "max_interval_seconds": 30.0, "deferred_at": 1_796_000_000.5}
    assert AthenaQueryTrigger(**kwargs).serialize() == (path, kwargs)


@pytest.mark.parametrize("world", ["local", "aws"])
def test_catalog_document_refuses_a_writer_holding_an_old_version(world, request):
    store = backend.job_state_store(request.getfixturevalue(world) if world == "local" else
                                    request.getfixturevalue(world).settings)
    assert store.put_catalog("x", {"live": [1]}, 0)
    version, _ = store.get_catalog("x")
    assert store.put_catalog("x", {"live": [2]}, version)
    assert not store.put_catalog("x", {"live": [3]}, version), "a stale writer must re-read"
    assert store.get_catalog("x") == (version + 1, {"live": [2]})
    assert json.dumps(store.get_catalog("missing")) == "[0, null]"


@pytest.mark.parametrize("dataset, columns", [("job_runs", "COLUMNS"), ("sample_outcomes", "OUTCOME_COLUMNS")])
def test_job_facts_are_staged_with_the_columns_the_staging_table_declares(dataset, columns):
    """job_facts' headers are the staged files'; include/sql/staging/<dataset>.sql must read the same columns."""
    import re

    import job_facts

    sql = (Path(__file__).resolve().parents[1] / "include" / "sql" / "staging" / f"{dataset}.sql").read_text()
    block = sql.split("{% block columns %}", 1)[1].split("{% endblock %}", 1)[0]
    declared = tuple(re.findall(r"^\s*([a-z_]+)\s+\w+,?\s*$", block, flags=re.M))
    assert declared == getattr(job_facts, columns)
