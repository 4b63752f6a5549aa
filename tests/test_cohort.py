"""The joint-called germline cohort: region planning from the reference's .fai, joint calling of synthetic samples
against their planted genotypes, region split + concat against one region, the merge's skip and rebuild, the
DAG's cohort planning, and (AWS path, moto + the FSx double) the region array job on a per-run file system."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from genomics_steps import cohort, layout, synthetic

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = "ref1"
SAMPLES = [f"S{i}" for i in range(1, 7)]


# --- regions ------------------------------------------------------------------------------------------
def test_regions_cover_the_genome_once_in_reference_order_with_nearly_equal_sizes():
    contigs = [("chr1", 1000), ("chr2", 300), ("chrM", 16)]
    regions = cohort.plan_regions(contigs, 4)
    assert [r["id"] for r in regions] == ["r0001", "r0002", "r0003", "r0004"]
    covered = [(c, pos) for r in regions for c, start, end in r["intervals"] for pos in range(start, end + 1)]
    assert covered == [(c, pos) for c, length in contigs for pos in range(1, length + 1)]
    assert [r["bases"] for r in regions] == [329] * 4
    assert regions[-1]["intervals"] == [["chr1", 988, 1000], ["chr2", 1, 300], ["chrM", 1, 16]], \
        "a region spans contig ends, and small contigs share a region"


def test_one_region_is_the_whole_genome_and_more_regions_than_bases_are_capped():
    assert cohort.plan_regions([("a", 5), ("b", 3)], 1)[0]["intervals"] == [["a", 1, 5], ["b", 1, 3]]
    assert len(cohort.plan_regions([("a", 5)], 50)) == 5


@pytest.mark.parametrize("count", [0, -1, 1.5, True, "4"])
def test_a_region_count_that_is_not_a_positive_whole_number_is_refused(count):
    with pytest.raises(ValueError, match=f"region count must be a whole number of at least 1, got {count!r}"):
        cohort.plan_regions([("a", 5)], count)


def test_a_malformed_fai_line_is_named():
    with pytest.raises(ValueError, match=r"line 2 of the .fai"):
        cohort.fai_contigs("chr1\t100\t6\t60\t61\nchr2 200\n")


def test_the_plan_key_changes_with_the_samples_and_not_with_their_order():
    contigs = [("chr1", 1000)]
    one = cohort.plan_document(["B", "A"], contigs, 2, REFERENCE)
    assert one["samples"] == ["A", "B"]
    assert one["key"] == cohort.plan_document(["A", "B"], contigs, 2, REFERENCE)["key"]
    assert one["key"] != cohort.plan_document(["A", "B", "C"], contigs, 2, REFERENCE)["key"]
    assert one["key"] != cohort.plan_document(["A", "B"], contigs, 3, REFERENCE)["key"]


# --- planning the cohort (the DAG's cohort_plan task) -------------------------------------------------------
class PlannedLake:
    """A lake of completed samples, a .fai and maybe a built cohort, as plan_cohort sees it; records writes."""

    FAI = "chr1\t40000\t6\t60\t61\nchr2\t20000\t40678\t60\t61\n"

    def __init__(self, complete=(), partial=(), built_key=None):
        steps = ["bwa_mem", "markdup", "call", "stats"]
        self.listing = [f"sample={s}/{step}/metrics.json" for s in complete for step in steps]
        self.listing += [f"sample={s}/bwa_mem/metrics.json" for s in partial]
        self.manifest = json.dumps({"key": built_key}) if built_key else None
        if built_key:
            self.listing.append("cohort/manifest.json")
        self.written: dict[str, str] = {}

    def plan(self, **params):
        from cohort_plan import plan_cohort

        conf = {"project": "p1", "pipeline_version": "1.0", "reference": REFERENCE, "cohort_regions": 3, **params}
        return plan_cohort(conf, lake_root="s3://lake", list_files=lambda prefix: self.listing,
                           read_head=self.read_head, write_text=self.written.__setitem__,
                           stopped=conf.pop("stopped", ""))

    def read_head(self, uri, max_bytes):
        if uri.endswith(".fai"):
            return self.FAI.encode()
        if uri.endswith("/cohort/manifest.json") and self.manifest:
            return self.manifest.encode()
        raise FileNotFoundError(uri)


def test_the_cohort_plan_holds_every_completed_sample_of_the_version_and_is_written_under_its_key():
    lake = PlannedLake(complete=["B", "A"], partial=["C"])
    plan = lake.plan()
    assert plan["build"] and plan["samples"] == 2 and plan["regions"] == ["r0001", "r0002", "r0003"]
    assert plan["results"] == "s3://lake/results/germline/1.0/project=p1/" and plan["units"] == ["1.0"]
    assert plan["plan_uri"] == layout.cohort_plan_uri("s3://lake", "1.0", "p1", plan["key"])
    written = json.loads(lake.written[plan["plan_uri"]])
    assert written["samples"] == ["A", "B"], "a sample missing a step is not in the cohort"
    assert written["regions"][0]["intervals"] == [["chr1", 1, 20000]]


def test_a_cohort_already_built_from_the_same_plan_is_not_built_again_unless_forced():
    key = PlannedLake(complete=["A", "B"]).plan()["key"]
    built = PlannedLake(complete=["A", "B"], built_key=key)
    assert not built.plan()["build"] and built.written == {}
    assert built.plan(force=True)["build"]
    assert PlannedLake(complete=["A", "B", "C"], built_key=key).plan()["build"], "a new sample rebuilds it"
    assert PlannedLake(complete=["A", "B"], built_key=key).plan(cohort_regions=4)["build"]


def test_no_completed_sample_or_a_stopped_run_builds_no_cohort():
    assert not PlannedLake(partial=["A"]).plan()["build"]
    stopped = PlannedLake(complete=["A"]).plan(stopped="on_sample_failure is stop and 1 sample(s) failed")
    assert not stopped["build"] and "stopped" in stopped["reason"]


@pytest.mark.parametrize("change, message", [
    ({"cohort_regions": 0}, "cohort_regions must be a whole number from 1 to 10000, got 0"),
    ({"cohort_regions": "8"}, "cohort_regions must be a whole number from 1 to 10000, got '8'"),
    ({"project": "p1\n"}, "project 'p1\\n'"),
    ({"reference": "../ref"}, "reference '../ref'"),
])
def test_a_cohort_config_that_cannot_run_is_refused_naming_field_and_value(change, message):
    from pipeline_plan import RunConfigError

    with pytest.raises(RunConfigError, match=re.escape(message)):
        PlannedLake(complete=["A"]).plan(**change)


# --- joint calling inside jobs ------------------------------------------------------------------------
def _env(lake: Path, **extra) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "include"), "GENOMICS_LAKE_URI": lake.as_uri(),
            "GENOMICS_PROJECT": "P1", "GENOMICS_PIPELINE": "germline", "GENOMICS_VCPUS": "1", **extra}


def _step(env: dict[str, str], module: str, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", f"genomics_steps.{module}", *args], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def map_samples(lake: Path, samples: list[str], depth: int = 30, sites: int = 24) -> list:
    """Synthetic cohort reads, aligned and duplicate-marked by the germline steps (the BAMs joint calling reads)."""
    planted = synthetic.write_cohort(lake.as_uri(), "P1", REFERENCE, samples, depth=depth, sites=sites)
    synthetic.write_reference(lake.as_uri(), REFERENCE)
    if not (lake / f"references/{REFERENCE}/index/bwa/metrics.json").exists():
        _step(_env(lake), "germline", "bwa-index", "--reference", REFERENCE)
    for sample in samples:
        env = _env(lake, GENOMICS_SAMPLE=sample)
        _step(env, "germline", "bwa-mem", "--pipeline-version", "1.0", "--reference", REFERENCE)
        _step(env, "germline", "markdup", "--pipeline-version", "1.0")
    return planted


def write_plan(lake: Path, samples: list[str], regions: int) -> tuple[dict, str]:
    fai = (lake / f"references/{REFERENCE}/index/bwa/genome.fa.fai").read_text()
    plan = cohort.plan_document(samples, cohort.fai_contigs(fai), regions, REFERENCE)
    uri = layout.cohort_plan_uri(lake.as_uri(), "1.0", "P1", plan["key"])
    Path(uri.removeprefix("file://")).parent.mkdir(parents=True, exist_ok=True)
    Path(uri.removeprefix("file://")).write_text(json.dumps(plan))
    return plan, uri


def build_cohort(lake: Path, samples: list[str], regions: int, **env) -> tuple[dict, subprocess.CompletedProcess]:
    """Every region job of the plan (as the array's children would), then the merge; returns the plan and
    the merge's output."""
    plan, uri = write_plan(lake, samples, regions)
    args = ["--pipeline-version", "1.0", "--reference", REFERENCE, "--plan", uri]
    for region in plan["regions"]:
        _step(_env(lake, GENOMICS_SAMPLE=region["id"], **env), "cohort", "call-region", *args)
    return plan, _step(_env(lake, **env), "cohort", "merge", *args)


def records(vcf: Path) -> list[list[str]]:
    with gzip.open(vcf, "rt") as fh:
        return [line.rstrip("\n").split("\t") for line in fh if not line.startswith("#")]


def header_samples(vcf: Path) -> list[str]:
    with gzip.open(vcf, "rt") as fh:
        return next(line for line in fh if line.startswith("#CHROM")).rstrip("\n").split("\t")[9:]


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    """Six samples sharing 24 planted SNVs (a singleton, a site with all three genotypes, the rest drawn), mapped."""
    lake = tmp_path_factory.mktemp("cohort") / "lake"
    return lake, map_samples(lake, SAMPLES)


def _genotypes(vcf: Path) -> dict[tuple[str, int, str, str], dict[str, str]]:
    samples = header_samples(vcf)
    found = {}
    for fields in records(vcf):
        keys = fields[8].split(":")
        calls = [dict(zip(keys, column.split(":")))["GT"].replace("|", "/") for column in fields[9:]]
        found[(fields[0], int(fields[1]), fields[3], fields[4])] = dict(zip(samples, calls))
    return found


def test_joint_calling_recovers_the_planted_genotypes_of_every_sample_at_every_site(mapped):
    lake, planted = mapped
    build_cohort(lake, SAMPLES, 4)
    vcf = Path(layout.cohort_vcf(lake.as_uri(), "1.0", "P1").removeprefix("file://"))
    assert header_samples(vcf) == SAMPLES
    assert vcf.with_name("cohort.vcf.gz.tbi").is_file()
    called = _genotypes(vcf)
    truth = {(c, p, r, a): g for c, p, r, a, g in planted}
    assert set(truth) <= set(called), f"planted sites not called: {sorted(set(truth) - set(called))}"
    wrong = {site: (truth[site], called[site]) for site in truth if called[site] != truth[site]}
    assert not wrong, f"genotypes differ from the planted ones: {wrong}"
    singleton = next(site for site, g in truth.items() if sorted(g.values()).count("0/0") == len(SAMPLES) - 1)
    assert sorted(called[singleton].values()) == ["0/0"] * 5 + ["0/1"], "a site of one sample has all genotypes"
    assert {"0/0", "0/1", "1/1"} <= {g for gts in truth.values() for g in gts.values()}


def test_every_record_is_biallelic_with_a_genotype_for_every_sample_and_its_allele_counts(mapped):
    lake, _ = mapped
    build_cohort(lake, SAMPLES, 4)
    vcf = Path(layout.cohort_vcf(lake.as_uri(), "1.0", "P1").removeprefix("file://"))
    for fields in records(vcf):
        assert "," not in fields[4], f"multiallelic record {fields[:5]}"
        genotypes = [column.split(":")[0] for column in fields[9:]]
        assert len(genotypes) == len(SAMPLES) and all(g in ("0/0", "0/1", "1/1") for g in genotypes), fields[:10]
        info = dict(item.split("=", 1) for item in fields[7].split(";") if "=" in item)
        assert int(info["AN"]) == 2 * len(SAMPLES)
        assert int(info["AC"]) == sum(g.count("1") for g in genotypes)


def test_the_merge_stages_one_site_row_per_record_for_cohort_variants(mapped):
    lake, planted = mapped
    build_cohort(lake, SAMPLES, 4)
    vcf = Path(layout.cohort_vcf(lake.as_uri(), "1.0", "P1").removeprefix("file://"))
    staged = lake / "staging/cohort_variants/germline/1.0/project=P1/cohort=1.0/sites.tsv"
    lines = staged.read_text().splitlines()
    assert lines[0].split("\t") == ["chrom", "pos", "ref", "alt", "ac", "an", "af", "qual"]
    rows = {(r[0], int(r[1]), r[2], r[3]): r for r in (line.split("\t") for line in lines[1:])}
    assert len(rows) == len(records(vcf))
    for chrom, pos, ref, alt, genotypes in planted:
        ac = sum(g.count("1") for g in genotypes.values())
        row = rows[(chrom, pos, ref, alt)]
        assert (int(row[4]), int(row[5])) == (ac, 12) and float(row[6]) == pytest.approx(ac / 12, abs=1e-3)


def test_regions_split_and_concatenated_give_the_same_records_as_one_region(mapped):
    lake, _ = mapped
    vcf = Path(layout.cohort_vcf(lake.as_uri(), "1.0", "P1").removeprefix("file://"))
    build_cohort(lake, SAMPLES, 1)
    whole = records(vcf)
    build_cohort(lake, SAMPLES, 7)
    assert records(vcf) == whole
    assert len(whole) >= 24


def test_a_merge_of_the_same_samples_and_regions_is_skipped_and_a_new_sample_rebuilds_it(mapped):
    lake, _ = mapped
    build_cohort(lake, SAMPLES[:5], 3)
    manifest = Path(layout.cohort_prefix(lake.as_uri(), "1.0", "P1").removeprefix("file://")) / "manifest.json"
    first = json.loads(manifest.read_text())
    assert first["samples"] == SAMPLES[:5]

    _, again = build_cohort(lake, SAMPLES[:5], 3, AWS_BATCH_JOB_ID="job-again")
    assert "is built; nothing to do" in again.stdout
    assert json.loads(manifest.read_text()) == first

    build_cohort(lake, SAMPLES, 3)
    rebuilt = json.loads(manifest.read_text())
    assert rebuilt["samples"] == SAMPLES and rebuilt["key"] != first["key"]
    assert header_samples(Path(rebuilt["vcf"].removeprefix("file://"))) == SAMPLES


def test_a_region_job_whose_region_is_not_in_the_plan_fails_naming_it(mapped):
    lake, _ = mapped
    _, uri = write_plan(lake, SAMPLES, 2)
    done = subprocess.run([sys.executable, "-m", "genomics_steps.cohort", "call-region", "--pipeline-version",
                           "1.0", "--reference", REFERENCE, "--plan", uri],
                          env=_env(lake, GENOMICS_SAMPLE="r0009"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 65 and f"region r0009 is not in the plan {uri}" in done.stderr


def test_a_plan_uri_with_a_hidden_newline_is_refused_before_anything_is_read(tmp_path):
    done = subprocess.run([sys.executable, "-m", "genomics_steps.cohort", "merge", "--pipeline-version", "1.0",
                           "--reference", REFERENCE, "--plan", f"{tmp_path.as_uri()}/plan.json\n"],
                          env=_env(tmp_path / "lake"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 64 and "--plan" in done.stderr and "plan.json\\n'" in done.stderr


# --- the germline DAG's cohort on the local backend -----------------------------------------------------
@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def _jobs(local) -> int:
    from local_batch.control_plane import ControlPlane

    return sum(ControlPlane(local.local_home).counts().values())


def _states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances() if ti.map_index == -1}


def test_the_cohort_is_planned_after_the_outcomes_and_its_file_system_is_torn_down_after_the_merge(dagbag):
    dag = dagbag.dags["germline"]
    assert dag.get_task("cohort_plan").upstream_task_ids == {"outcomes"}
    assert dag.get_task("cohort_call_regions").upstream_task_ids >= {"cohort_changed", "cohort_fsx_create"}
    assert "cohort_call_regions" in dag.get_task("cohort_merge").upstream_task_ids
    delete = dag.get_task("cohort_fsx_delete")
    assert delete.is_teardown and dag.get_task("cohort_fsx_create").is_setup
    assert {"cohort_merge", "cohort_fsx_create"} <= delete.upstream_task_ids
    assert "fsx" in dag.tags, "fsx_sweeper's documentation names the DAGs whose file systems it sweeps by tag"
    assert dag.params["cohort_regions"] == 8


@pytest.mark.e2e
def test_a_germline_run_builds_and_publishes_the_projects_cohort_and_a_rerun_skips_it_until_a_sample_is_added(
        local, dagbag):
    from hooks import backend

    lake = local.lake_root
    synthetic.write_reference(lake, "synthetic-v1")
    planted = synthetic.write_cohort(lake, "e2e", "synthetic-v1", ["C1", "C2", "C3", "C4"], depth=20, sites=12)
    dag = dagbag.dags["germline"]
    for task in dag.tasks:
        task.retries = 0
    conf = {"project": "e2e", "reference": "synthetic-v1", "cohort_regions": 3}

    first = dag.test(run_conf={**conf, "samples": ["C1", "C2", "C3"]})
    assert first.state == "success"
    states = _states(first)
    assert states["cohort_fsx_create"] == "success" and states["cohort_fsx_delete"] == "success"
    summary = first.get_task_instance("cohort").xcom_pull(task_ids="cohort")
    assert summary["cohort_vcf"] == layout.cohort_vcf(lake, "1.0", "e2e") and summary["samples"] == 3
    assert header_samples(Path(summary["cohort_vcf"].removeprefix("file://"))) == ["C1", "C2", "C3"]
    _, rows = backend.query_engine(local).fetch(
        "SELECT chrom, pos, ref, alt, ac, an, cohort FROM cohort_variants WHERE project = 'e2e'")
    carried = {(c, p, r, a): sum(g[s].count("1") for s in ("C1", "C2", "C3")) for c, p, r, a, g in planted}
    published = {(c, int(p), r, a): (int(ac), int(an), unit) for c, p, r, a, ac, an, unit in rows}
    for site, ac in carried.items():
        if ac:
            assert published[site] == (ac, 6, "1.0"), site

    # the regions' parts are gone once the cohort VCF holds them; the plan stays as the build's record
    from genomics_steps.runtime import list_uri

    kept = list_uri(layout.cohort_prefix(lake, "1.0", "e2e"))
    assert not [path for path in kept if path.startswith("parts/")] and any(p.startswith("plans/") for p in kept)

    # the cohort's jobs are the run's: in its job_runs and shared by its samples in sample_costs
    engine = backend.query_engine(local)
    _, ran = engine.fetch("SELECT DISTINCT step FROM job_runs")
    _, costed = engine.fetch("SELECT step, count(DISTINCT sample_id) FROM sample_costs GROUP BY step")
    assert {"cohort_call_regions", "cohort_merge", "multiqc"} <= {step for step, in ran}
    assert {step: n for step, n in costed if step.startswith("cohort_")} == {"cohort_call_regions": 3,
                                                                             "cohort_merge": 3}

    jobs = _jobs(local)
    again = dag.test(run_conf={**conf, "samples": ["C1", "C2", "C3"]})
    states = _states(again)
    # same samples, same regions: nothing submitted (no sample, no cohort job, and no report: nothing ran)
    assert again.state == "success" and _jobs(local) == jobs and states["multiqc"] == "skipped"
    assert states["cohort_changed"] == "success" and states["cohort_call_regions"] == "skipped"
    assert states["cohort_fsx_create"] == "skipped" and states["cohort"] == "success"

    grown = dag.test(run_conf={**conf, "samples": ["C4"]})
    assert grown.state == "success"
    summary = grown.get_task_instance("cohort").xcom_pull(task_ids="cohort")
    assert summary["samples"] == 4 and summary["built_by_this_run"], "every completed sample, not this run's only"
    assert header_samples(Path(summary["cohort_vcf"].removeprefix("file://"))) == ["C1", "C2", "C3", "C4"]
    _, rows = backend.query_engine(local).fetch(
        "SELECT chrom, pos, ref, alt, ac, an FROM cohort_variants WHERE project = 'e2e'")
    vcf = Path(summary["cohort_vcf"].removeprefix("file://"))
    assert len(rows) == len(records(vcf)), "the rebuilt cohort's rows replaced the old ones"
    published = {(c, int(p), r, a): (int(ac), int(an)) for c, p, r, a, ac, an in rows}
    for chrom, pos, ref, alt, genotypes in planted:
        assert published[(chrom, pos, ref, alt)] == (sum(g.count("1") for g in genotypes.values()), 8)


# --- the AWS path: moto, the simulated Batch and the FSx double ---------------------------------------------
def _completed_on_s3(settings, samples: list[str]) -> None:
    """What the per-sample steps leave in the S3 lake (their metrics.json) and the reference's .fai."""
    from hooks import lake

    for sample in samples:
        for step in ("bwa_mem", "markdup", "call", "stats"):
            prefix = layout.step_prefix(settings.lake_root, "germline", "1.0", "p1", sample, step)
            lake.write_text(settings, prefix + "metrics.json", "{}")
    fai = layout.index_prefix(settings.lake_root, REFERENCE, "bwa") + "genome.fa.fai"
    lake.write_text(settings, fai, "chr1\t40000\t6\t60\t61\nchr2\t20000\t40678\t60\t61\n")


@pytest.mark.parametrize("failed_child", [None, 2])
def test_on_aws_the_regions_run_as_one_array_job_reading_the_bams_from_the_runs_fsx_which_is_then_deleted(
        aws, failed_child):
    import asyncio

    from airflow.sdk.exceptions import AirflowException, TaskDeferred

    from cohort_plan import plan_for_airflow
    from genomics_steps.runtime import on_fsx
    from operators.batch_job import BatchJobOperator
    from operators.fsx import FsxCreateOperator, FsxDeleteOperator
    from tests.conftest import first_event, task_context

    _completed_on_s3(aws.settings, ["A", "B", "C"])
    plan = plan_for_airflow({"project": "p1", "pipeline_version": "1.0", "reference": REFERENCE,
                             "cohort_regions": 4})
    assert plan["build"] and plan["regions"] == ["r0001", "r0002", "r0003", "r0004"]

    context = task_context(dag_id="germline", task_id="cohort_fsx_create")
    create = FsxCreateOperator(task_id="cohort_fsx_create", project="p1", inputs=plan["results"],
                               output_folder=None, aws_only=True, poll_seconds=0.01)
    call = lambda: create.execute(context)  # noqa: E731
    while True:
        try:
            fsx = call()
            break
        except TaskDeferred as deferred:
            event = asyncio.run(first_event(deferred.trigger))
            call = lambda m=getattr(create, deferred.method_name), e=event: m(context, e)  # noqa: E731
    links = {a["FileSystemPath"]: (a["DataRepositoryPath"], a["BatchImportMetaDataOnCreate"])
             for a in aws.fsx.describe_data_repository_associations()["Associations"]}
    assert links == {"/input-0": (plan["results"], True)}, "the results prefix, read only: no /output"

    regions = BatchJobOperator(task_id="cohort_call_regions", step="cohort_call_regions", project="p1",
                               pipeline="germline", job_definition="genomics-germline",
                               command=["python3", "-m", "genomics_steps.cohort", "call-region", "--pipeline-version",
                                        "1.0", "--reference", REFERENCE, "--plan", plan["plan_uri"]],
                               samples=plan["regions"], environment={"GENOMICS_FSX": json.dumps(fsx)})
    job_context = task_context(dag_id="germline", task_id="cohort_call_regions")
    with pytest.raises(TaskDeferred) as deferred:
        regions.execute(job_context)
    job = aws.sim.jobs[deferred.value.trigger.job_ids[0]]
    assert job.request["arrayProperties"] == {"size": 4} and aws.sim.calls["SubmitJob"] == 1
    environment = {e["name"]: e["value"] for e in job.request["containerOverrides"]["environment"]}
    bam = layout.step_prefix(aws.settings.lake_root, "germline", "1.0", "p1", "B", "markdup") + "sample.bam"
    assert on_fsx(bam, environment) == Path(f"/fsx/{fsx['file_system_id']}/input-0/sample=B/markdup/sample.bam")
    if failed_child is not None:
        job.children[failed_child].outcomes = ["exit:1"]
    aws.sim.run_until_done()
    event = asyncio.run(first_event(deferred.value.trigger))
    if failed_child is None:
        regions.execute_complete(job_context, event)
    else:
        with pytest.raises(AirflowException, match="r0003: FAILED exit code 1"):
            regions.execute_complete(job_context, event)

    deleted = FsxDeleteOperator(task_id="cohort_fsx_delete").execute(task_context(dag_id="germline"))
    assert deleted == [fsx["file_system_id"]]
    (described,) = aws.fsx.describe_file_systems(FileSystemIds=deleted)["FileSystems"]
    assert described["Lifecycle"] == "DELETING"


def test_on_the_local_backend_the_cohort_makes_no_file_system(local):
    from operators.fsx import FsxCreateOperator
    from tests.conftest import task_context

    create = FsxCreateOperator(task_id="cohort_fsx_create", project="p1", output_folder=None, aws_only=True,
                               inputs=layout.results_prefix(local.lake_root, "germline", "1.0", "p1"))
    assert create.execute(task_context(dag_id="germline")) is None
    assert not list((Path(local.local_home) / "fsx").glob("fs-*"))
