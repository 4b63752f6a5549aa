"""The regenie_gwas DAG: run config checks, the chunk plan, the steps on a stand-in file system, and the
whole DAG on the local backend (plink2 --glm on a synthetic cohort) with the planted causal variants found."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from genomics_steps import synthetic_gwas

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def _jobs(local) -> int:
    from local_batch.control_plane import ControlPlane

    return sum(ControlPlane(local.local_home).counts().values())


@pytest.mark.e2e
def test_gwas_end_to_end_ranks_the_planted_variants_first_and_deletes_its_file_system(local, dagbag):
    from hooks import backend

    truth = synthetic_gwas.write_cohort(local.lake_root, "e2e")
    dag = dagbag.dags["regenie_gwas"]
    for task in dag.tasks:  # a failure shows at once instead of after the retries' delays
        task.retries = 0
    run = dag.test(run_conf={"project": "e2e", "variants_per_job": 600})
    assert run.state == "success"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert set(states.values()) == {"success"}, states
    assert _jobs(local) == 1 + (1 + 5) + 1, "step 1, one step-2 array job with a child per chunk, merge"

    engine = backend.query_engine(local)
    for trait, causal in truth.items():
        _, rows = engine.fetch(f"SELECT variant_id, log10p FROM gwas_associations WHERE phenotype = '{trait}' "
                               "ORDER BY log10p DESC LIMIT 2")
        assert rows[0][0] == causal and rows[0][1] > 10 and rows[1][1] < 8, (trait, rows)
    _, counts = engine.fetch("SELECT phenotype, count(*) FROM gwas_associations GROUP BY phenotype ORDER BY 1")
    assert counts == [("trait_a", 2500), ("trait_b", 2500)]
    _, units = engine.fetch("SELECT count(DISTINCT sample_id) FROM job_runs WHERE pipeline = 'regenie_gwas'")
    assert units == [(7,)], "step1, five chunks, merge"

    results = Path(local.lake_root.removeprefix("file://")) / "results/regenie_gwas/1.0/project=e2e"
    with gzip.open(results / "associations/trait_a.tsv.gz", "rt") as fh:
        assert sum(1 for _ in fh) == 2501, "exported from the file system: header + every variant"
    assert (results / "step1/chunks.json").is_file()
    api = backend.fsx(local)
    assert api.list_file_systems() == [], "the teardown deleted the run's file system"


def test_chunks_stay_within_a_chromosome_and_never_split_a_position(tmp_path):
    from genomics_steps.gwas import chunk_plan

    bim = tmp_path / "g.bim"
    rows = [("1", p) for p in (100, 200, 300, 300, 300, 400, 500)] + [("X", p) for p in (50, 60)]
    bim.write_text("".join(f"{c}\tv{i}\t0\t{p}\tA\tG\n" for i, (c, p) in enumerate(rows)))
    chunks = chunk_plan(bim, variants_per_job=3)
    assert [(c["chrom"], c["start"], c["end"], c["variants"]) for c in chunks] == [
        ("1", 100, 300, 5),  # the three variants at 300 stay together
        ("1", 400, 500, 2),
        ("X", 50, 60, 2),
    ]
    assert [c["id"] for c in chunks] == ["c00001-chr1", "c00002-chr1", "c00003-chrX"]


class CohortLake:
    """Listings and header reads of a lake holding a cohort (s3://lake/raw/p1/gwas/), for planning tests."""

    def __init__(self, files=("cohort.bed", "cohort.bim", "cohort.fam", "phenotypes.tsv", "covariates.tsv"),
                 header="FID\tIID\theight\tbmi\n"):
        self.files = {"s3://lake/raw/p1/gwas/": list(files)}
        self.header = header
        self.listed: list[str] = []

    def list_files(self, prefix):
        self.listed.append(prefix)
        return self.files.get(prefix, [])

    def read_head(self, uri):
        return self.header.encode()


def _plan(params=None, lake=None, backend="aws", regenie_here=False):
    from gwas_plan import plan_gwas

    lake = lake or CohortLake()
    base = {"project": "p1", "pipeline_version": "1.0", "traits": [], "trait_type": "quantitative",
            "block_size": 1000, "variants_per_job": 200_000, "engine": "auto", "fsx_deployment_type": "SCRATCH_2",
            "fsx_capacity_gib": 1200, "fsx_throughput": 125}
    return plan_gwas({**base, **(params or {})}, lake_root="s3://lake", backend=backend,
                     list_files=lake.list_files, read_head=lake.read_head, regenie_here=regenie_here)


def test_plan_resolves_defaults_traits_engine_and_links_with_one_listing():
    lake = CohortLake()
    plan = _plan(lake=lake)
    assert lake.listed == ["s3://lake/raw/p1/gwas/"]
    assert plan["traits"] == ["height", "bmi"] and plan["engine"] == "regenie"
    assert plan["fsx_inputs"] == ["s3://lake/raw/p1/gwas/"]
    assert plan["results"] == "s3://lake/results/regenie_gwas/1.0/project=p1/"
    command = plan["step2_command"]
    assert command[:4] == ["python3", "-m", "genomics_steps.gwas", "step2"]
    assert command[command.index("--traits") + 1] == "height,bmi"
    assert _plan({"traits": ["bmi"], "covariates": "none"}, backend="local")["engine"] == "plink2"


@pytest.mark.parametrize("params, lake, backend, message", [
    ({"traits": ["weight"]}, None, "aws", r"trait\(s\) \['weight'\] are not columns"),
    ({}, CohortLake(files=("cohort.bed", "cohort.fam", "phenotypes.tsv", "covariates.tsv")), "aws",
     r"missing input file\(s\): \['s3://lake/raw/p1/gwas/cohort.bim'\]"),
    ({"engine": "regenie"}, None, "local", "regenie is not installed on this machine"),
    ({"genotypes": "file:///data/cohort"}, None, "aws", "is a local path"),
    ({"phenotypes": "s3://lake/results/regenie_gwas/1.0/project=p1/ph.tsv"},
     CohortLake(), "aws", "missing input file"),
    ({"fsx_capacity_gib": 1800}, None, "aws", "fsx_capacity_gib must be 1200, 2400 or a multiple of 2400"),
    ({"fsx_deployment_type": "PERSISTENT_2", "fsx_throughput": 100}, None, "aws", "fsx_throughput must be one of"),
    ({"project": "p1; DROP TABLE x"}, None, "aws", "project .* is not a name"),
    ({"variants_per_job": 5}, None, "aws", "variants_per_job must be an integer from 100"),
    ({}, CohortLake(header="IID\theight\n"), "aws", "must start with a header line FID IID"),
    ({}, CohortLake(header="FID\tIID\tbody mass\theight\n"), "aws", ""),
])
def test_bad_gwas_run_configs_are_refused_with_every_reason(params, lake, backend, message):
    from pipeline_plan import RunConfigError

    if message == "":  # a column name with a space is split by the header parser: it is not a trait then
        assert "body" in _plan(params, lake, backend)["traits"]
        return
    with pytest.raises(RunConfigError, match=message):
        _plan(params, lake, backend)


def test_results_inside_an_input_folder_are_refused():
    from pipeline_plan import RunConfigError

    lake = CohortLake()
    lake.files["s3://lake/"] = ["cohort.bed", "cohort.bim", "cohort.fam", "phenotypes.tsv"]
    with pytest.raises(RunConfigError, match="overlap the results prefix"):
        _plan({"genotypes": "s3://lake/cohort", "phenotypes": "s3://lake/phenotypes.tsv", "covariates": "none"},
              lake)


@pytest.mark.parametrize("conf", [
    {"traits": ["height; rm -rf /"]},
    {"engine": "gcta"},
    {"fsx_capacity_gib": 100},
    {"genotypes": "http://example.org/cohort"},
    {"covariates": "s3://bucket/cov.tsv'"},
])
def test_the_trigger_form_refuses_bad_gwas_params(dagbag, conf):
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    params = ParamsDict(dagbag.dags["regenie_gwas"].params)
    with pytest.raises(ParamValidationError, match=f"Invalid input for param {next(iter(conf))}"):
        params.update(conf)
        params.validate()


@pytest.mark.e2e
def test_a_failing_step_fails_the_run_and_the_teardown_still_deletes_the_file_system(local, dagbag):
    from hooks import backend

    synthetic_gwas.write_cohort(local.lake_root, "e2e")
    bed = Path(local.lake_root.removeprefix("file://")) / "raw/e2e/gwas/cohort.bed"
    bed.write_bytes(b"not a bed file")
    dag = dagbag.dags["regenie_gwas"]
    for task in dag.tasks:
        task.retries = 0
    run = dag.test(run_conf={"project": "e2e", "variants_per_job": 1000})
    assert run.state == "failed", "the teardown's success does not hide the failure"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["step2"] == "failed" and states["merge"] == "upstream_failed"
    assert states["fsx_delete"] == "success"
    assert backend.fsx(local).list_file_systems() == []
