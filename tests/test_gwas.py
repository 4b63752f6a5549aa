"""The regenie_gwas DAG: run config checks, the chunk plan, the steps on a stand-in file system, and the
whole DAG on the local backend with each engine: plink2 --glm finds the planted causal variants, and the
regenie engine publishes what regenie run by hand on the same files gives (quantitative, and binary with
Firth), with the model fitted or reused from an earlier step 1."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from genomics_steps import synthetic_gwas

ROOT = Path(__file__).resolve().parent.parent
REGENIE_DIR = ROOT.parent / "shared" / "tools" / "regenie"  # regenie 4.1.2 built for this machine kind


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
    run = dag.test(run_conf={"project": "e2e", "variants_per_job": 600, "engine": "plink2"})
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
        self.contents: dict[str, str] = {}  # other files' text, by URI (the phenotype file's is header)
        self.listed: list[str] = []

    def list_files(self, prefix):
        self.listed.append(prefix)
        return self.files.get(prefix, [])

    def read_head(self, uri, max_bytes=65536):
        return self.contents.get(uri, self.header).encode()


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


def test_auto_engine_is_regenie_locally_when_one_is_installed():
    assert _plan(backend="local", regenie_here=True)["engine"] == "regenie"
    assert _plan(backend="local", regenie_here=False)["engine"] == "plink2"


def test_the_job_definition_of_the_run_is_the_regenie_image_param():
    assert _plan()["job_definition"] == "genomics-gwas"
    assert _plan({"regenie_image": "genomics-gwas:7"})["job_definition"] == "genomics-gwas:7"


@pytest.mark.parametrize("value", ["genomics-gwas:latest", "genomics-gwas\n", "gwas:0", "ghcr.io/rgc/regenie:v4"])
def test_a_regenie_image_that_is_not_a_job_definition_is_refused(value):
    from pipeline_plan import RunConfigError

    with pytest.raises(RunConfigError, match=re.escape(f"regenie_image {value!r} is not a Batch job definition")):
        _plan({"regenie_image": value})


PREDICTIONS = "s3://lake/models/p1/fit_pred.list"


def _lake_with_predictions(listed=("fit_pred.list", "fit_1.loco", "fit_2.loco"),
                           text="height /fsx/fs-0a/output/step1/fit_1.loco\nbmi /fsx/fs-0a/output/step1/fit_2.loco\n"):
    lake = CohortLake()
    lake.files["s3://lake/models/p1/"] = list(listed)
    lake.contents[PREDICTIONS] = text
    return lake


def test_step1_predictions_are_linked_and_handed_to_the_steps():
    lake = _lake_with_predictions()
    plan = _plan({"step1_predictions": PREDICTIONS}, lake)
    assert plan["step1_predictions"] == PREDICTIONS
    assert plan["fsx_inputs"] == ["s3://lake/models/p1/", "s3://lake/raw/p1/gwas/"]
    for step in ("step1", "step2", "merge"):
        command = plan[f"{step}_command"]
        assert command[command.index("--step1-predictions") + 1] == PREDICTIONS
    assert "--step1-predictions" not in _plan()["step1_command"]


@pytest.mark.parametrize("params, lake, message", [
    ({}, _lake_with_predictions(listed=("fit_pred.list", "fit_1.loco")),
     r"names LOCO file\(s\) that are not beside it: \['s3://lake/models/p1/fit_2.loco'\]"),
    ({"traits": ["height"]}, _lake_with_predictions(),
     r"has the traits \['bmi', 'height'\], this run tests \['height'\]"),
    ({}, _lake_with_predictions(text="height fit_1.loco extra\n"), "line 1 is not '<trait> <path>.loco'"),
    ({"engine": "plink2"}, _lake_with_predictions(), "need engine regenie, not plink2"),
    ({}, _lake_with_predictions(listed=("fit_1.loco", "fit_2.loco")),
     r"missing input file\(s\): \['s3://lake/models/p1/fit_pred.list'\]"),
    ({"step1_predictions": "s3://lake/models/p1/fit.loco"}, _lake_with_predictions(),
     "must be an s3:// or file:// URI"),
    ({"step1_predictions": "s3://lake/results/regenie_gwas/1.0/project=p1/step1/fit_pred.list"},
     _lake_with_predictions(), "overlap the results prefix"),
])
def test_bad_step1_predictions_are_refused_before_anything_runs(params, lake, message):
    from pipeline_plan import RunConfigError

    if "overlap" in message:  # an earlier run's step 1 left in this run's own results folder
        lake.files["s3://lake/results/regenie_gwas/1.0/project=p1/step1/"] = ["fit_pred.list", "fit_1.loco",
                                                                              "fit_2.loco"]
        lake.contents[params["step1_predictions"]] = lake.contents[PREDICTIONS]
    with pytest.raises(RunConfigError, match=message):
        _plan({"step1_predictions": PREDICTIONS, **params}, lake)


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
    {"regenie_image": "genomics-gwas:latest"},
    {"step1_predictions": "s3://bucket/fit pred.list"},
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


# --- the regenie engine, end to end against regenie run by hand ----------------------------------------------
@pytest.fixture
def regenie(monkeypatch) -> str:
    """The regenie binary of ../shared/tools/regenie put on PATH for this test (the local runner, started by
    the run, passes PATH on to its jobs). Skipped where it is not there; in CI (CI=true) that is a failure."""
    binary = REGENIE_DIR / "regenie"
    problem = None
    if not binary.is_file():
        problem = f"no regenie at {binary}"
    else:
        probe = subprocess.run([str(binary), "--version"], capture_output=True, text=True)
        if probe.returncode != 0:  # it needs Debian's libgfortran5 and libgomp1 (tests/packages.txt)
            problem = f"{binary} --version failed: {(probe.stdout + probe.stderr).strip()[-300:]}"
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{problem}: CI runs the regenie engine's tests", pytrace=False)
        pytest.skip(problem)
    monkeypatch.setenv("PATH", f"{REGENIE_DIR}{os.pathsep}{os.environ.get('PATH', '')}")
    assert shutil.which("regenie") == str(binary)
    return str(binary)


def _binary_phenotypes(gwas: Path) -> None:
    """phenotypes_binary.tsv: each trait of phenotypes.tsv as a case (above its median) or a control."""
    lines = (gwas / "phenotypes.tsv").read_text().splitlines()
    rows = [line.split("\t") for line in lines[1:]]
    out = [lines[0]]
    medians = []
    for col in range(2, len(rows[0])):
        values = sorted(float(r[col]) for r in rows if r[col] != "NA")
        medians.append(values[len(values) // 2])
    for r in rows:
        out.append("\t".join(r[:2] + ["NA" if v == "NA" else str(int(float(v) > m))
                                      for v, m in zip(r[2:], medians)]))
    (gwas / "phenotypes_binary.tsv").write_text("\n".join(out) + "\n")


def _regenie_by_hand(binary: str, gwas: Path, work: Path, phenotypes: str, binary_trait: bool) -> dict:
    """regenie step 1 then step 2 on the whole cohort, with the options the steps use; trait -> variant -> log10p."""
    common = ["--bed", str(gwas / "cohort"), "--phenoFile", str(gwas / phenotypes), "--covarFile",
              str(gwas / "covariates.tsv"), "--phenoColList", "trait_a,trait_b", "--bsize", "1000",
              "--threads", "2"]
    work.mkdir()
    step1 = [binary, "--step", "1", *common, "--lowmem", "--lowmem-prefix", str(work / "tmp"),
             "--out", str(work / "fit")]
    step2 = [binary, "--step", "2", *common, "--pred", str(work / "fit_pred.list"), "--out", str(work / "assoc")]
    if binary_trait:
        step1.append("--bt")
        step2 += ["--bt", "--firth", "--approx"]
    for argv in (step1, step2):
        done = subprocess.run(argv, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-2000:]
    results = {}
    for trait in ("trait_a", "trait_b"):
        with open(work / f"assoc_{trait}.regenie") as fh:
            header = fh.readline().split()
            rows = [dict(zip(header, line.split())) for line in fh]
        results[trait] = {r["ID"]: float(r["LOG10P"]) for r in rows if r["TEST"] == "ADD" and r["LOG10P"] != "NA"}
    return results


def _published(local, project: str) -> dict:
    from hooks import backend

    _, rows = backend.query_engine(local).fetch(
        f"SELECT phenotype, variant_id, log10p FROM gwas_associations WHERE project = '{project}'")
    published: dict[str, dict[str, float]] = {}
    for trait, variant, log10p in rows:
        published.setdefault(trait, {})[variant] = log10p
    return published


def _assert_same_associations(published: dict, by_hand: dict) -> None:
    assert sorted(published) == sorted(by_hand) == ["trait_a", "trait_b"]
    for trait, expected in by_hand.items():
        assert len(expected) == 2500, f"{trait}: regenie tested every variant by hand"
        assert published[trait].keys() == expected.keys(), trait
        worst = max(abs(published[trait][v] - p) for v, p in expected.items())
        assert worst <= 1e-6, f"{trait}: -log10 p differs from regenie run by hand by up to {worst}"


def _run_regenie_gwas(conf: dict):
    from airflow.dag_processing.dagbag import DagBag

    # A DAG object of its own: dag.test() leaves a run's conf in the params of the tasks it ran, so a
    # later run of the same object would inherit the earlier run's phenotypes and trait type.
    dag = DagBag(dag_folder=str(ROOT / "dags" / "regenie_gwas.py")).dags["regenie_gwas"]
    for task in dag.tasks:
        task.retries = 0
    run = dag.test(run_conf={"variants_per_job": 1000, **conf})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success" and set(states.values()) == {"success"}, states
    return run


@pytest.mark.e2e
def test_the_regenie_engine_publishes_what_regenie_run_by_hand_gives_for_a_quantitative_trait(
        local, regenie, tmp_path):
    synthetic_gwas.write_cohort(local.lake_root, "rq")
    gwas = Path(local.lake_root.removeprefix("file://")) / "raw/rq/gwas"
    _run_regenie_gwas({"project": "rq"})  # engine auto: regenie, as one is on PATH

    _assert_same_associations(_published(local, "rq"), _regenie_by_hand(regenie, gwas, tmp_path / "by-hand",
                                                                         "phenotypes.tsv", binary_trait=False))
    results = Path(local.lake_root.removeprefix("file://")) / "results/regenie_gwas/1.0/project=rq"
    assert (results / "step1/fit_pred.list").is_file(), "step 1's model is exported with the results"
    from hooks import backend

    _, rows = backend.query_engine(local).fetch(
        "SELECT DISTINCT job_definition FROM job_runs WHERE pipeline = 'regenie_gwas' AND project = 'rq'")
    assert rows == [("genomics-gwas",)]


@pytest.mark.e2e
def test_the_regenie_engine_publishes_what_regenie_run_by_hand_gives_for_a_binary_trait_with_firth(
        local, regenie, tmp_path):
    synthetic_gwas.write_cohort(local.lake_root, "rb")
    gwas = Path(local.lake_root.removeprefix("file://")) / "raw/rb/gwas"
    _binary_phenotypes(gwas)
    _run_regenie_gwas({"project": "rb", "engine": "regenie", "trait_type": "binary",
                               "phenotypes": (gwas / "phenotypes_binary.tsv").as_uri()})

    _assert_same_associations(_published(local, "rb"), _regenie_by_hand(regenie, gwas, tmp_path / "by-hand",
                                                                         "phenotypes_binary.tsv", binary_trait=True))


@pytest.mark.e2e
def test_a_run_given_step1_predictions_skips_the_fit_and_tests_with_them(local, regenie, tmp_path):
    from hooks import backend

    synthetic_gwas.write_cohort(local.lake_root, "rp")
    gwas = Path(local.lake_root.removeprefix("file://")) / "raw/rp/gwas"
    by_hand = _regenie_by_hand(regenie, gwas, tmp_path / "by-hand", "phenotypes.tsv", binary_trait=False)
    model = Path(local.lake_root.removeprefix("file://")) / "models/rp"  # a model fitted elsewhere, in the lake
    model.mkdir(parents=True)
    for loco in (tmp_path / "by-hand").glob("fit_*.loco"):
        shutil.copy(loco, model / loco.name)
    shutil.copy(tmp_path / "by-hand/fit_pred.list", model / "fit_pred.list")  # its paths are the by-hand folder's
    shutil.rmtree(tmp_path / "by-hand")  # the run must read the LOCO files in the lake, not where they were made
    predictions = (model / "fit_pred.list").as_uri()

    _run_regenie_gwas({"project": "rp", "step1_predictions": predictions,
                               "regenie_image": "genomics-gwas:4"})

    _assert_same_associations(_published(local, "rp"), by_hand)
    results = Path(local.lake_root.removeprefix("file://")) / "results/regenie_gwas/1.0/project=rp"
    assert not (results / "step1/fit.log").exists(), "regenie --step 1 did not run"
    _, rows = backend.query_engine(local).fetch(
        "SELECT step, job_definition, reused_from FROM job_runs WHERE project = 'rp' AND step IN ('step1', 'merge') "
        "ORDER BY step")
    assert rows == [("merge", "genomics-gwas:4", None), ("step1", "genomics-gwas:4", predictions)]


# --- genotypes from a VCF, or from the project's germline cohort ---------------------------------------------
COHORT = "s3://lake/results/germline/2.0/project=p1/cohort/"


def _lake_with_cohort(listed=("cohort.vcf.gz", "cohort.vcf.gz.tbi")):
    lake = CohortLake(files=("phenotypes.tsv", "covariates.tsv"))
    lake.files[COHORT] = list(listed)
    return lake


def test_a_vcf_genotypes_uri_is_linked_and_handed_to_step_1_to_convert():
    lake = CohortLake(files=("cohort.vcf.gz", "phenotypes.tsv", "covariates.tsv"))
    plan = _plan({"genotypes": "s3://lake/raw/p1/gwas/cohort.vcf.gz"}, lake)
    assert plan["genotypes_format"] == "vcf" and plan["fsx_inputs"] == ["s3://lake/raw/p1/gwas/"]
    for step in ("step1", "step2"):
        command = plan[f"{step}_command"]
        assert command[command.index("--genotypes") + 1] == "s3://lake/raw/p1/gwas/cohort.vcf.gz"
    assert _plan()["genotypes_format"] == "plink1", "a URI without a VCF suffix is still a PLINK 1 fileset"


@pytest.mark.parametrize("genotypes, message", [
    ("s3://lake/raw/p1/gwas/cohort.vcf", r"genotypes 's3://lake/raw/p1/gwas/cohort.vcf': a VCF must be bgzipped"),
    ("s3://lake/raw/p1/gwas/cohort.vcf.gz.tbi", "name the VCF, not its index"),
    ("s3://lake/raw/p1/gwas/cohort.bed", "a PLINK 1 fileset is named without its extension"),
    ("s3://lake/raw/p1/gwas/cohort .vcf.gz", r"genotypes 's3://lake/raw/p1/gwas/cohort \.vcf\.gz' is not an s3://"),
    ("s3://lake/raw/p1/gwas/other.vcf.gz",
     r"missing input file\(s\): \['s3://lake/raw/p1/gwas/other.vcf.gz'\]"),
])
def test_bad_vcf_genotypes_are_refused_by_name_before_anything_runs(genotypes, message):
    from pipeline_plan import RunConfigError

    lake = CohortLake(files=("cohort.vcf.gz", "phenotypes.tsv", "covariates.tsv"))
    with pytest.raises(RunConfigError, match=message):
        _plan({"genotypes": genotypes}, lake)


def test_germline_version_resolves_to_the_projects_cohort_vcf_with_one_listing():
    from genomics_steps import layout

    lake = _lake_with_cohort()
    plan = _plan({"germline_version": "2.0"}, lake)
    assert plan["inputs"]["genotypes"] == layout.cohort_vcf("s3://lake", "2.0", "p1") == COHORT + "cohort.vcf.gz"
    assert plan["genotypes_format"] == "vcf"
    assert sorted(lake.listed) == ["s3://lake/raw/p1/gwas/", COHORT], "one listing per input folder"
    assert plan["fsx_inputs"] == ["s3://lake/raw/p1/gwas/", COHORT]


@pytest.mark.parametrize("listed", [(), ("cohort.vcf.gz",)])
def test_germline_version_without_a_finished_cohort_is_refused_naming_it(listed):
    from pipeline_plan import RunConfigError

    lake = _lake_with_cohort(listed)
    with pytest.raises(RunConfigError, match=re.escape(
            f"germline_version '2.0': project p1 has no joint-called germline cohort at {COHORT}cohort.vcf.gz "
            "(with its .tbi): run germline at that version first")):
        _plan({"germline_version": "2.0"}, lake)
    assert len(lake.listed) == 2, "refused after one listing per folder, before anything is created"


@pytest.mark.parametrize("params, message", [
    ({"germline_version": "2.0", "genotypes": "s3://lake/raw/p1/gwas/cohort"}, "give one of them"),
    ({"germline_version": "2.0\n"}, r"germline_version '2.0\\n' is not a name"),
    ({"germline_version": "../1.0"}, r"germline_version '../1.0' is not a name"),
])
def test_bad_germline_versions_are_refused(params, message):
    from pipeline_plan import RunConfigError

    with pytest.raises(RunConfigError, match=message):
        _plan(params, _lake_with_cohort())


@pytest.mark.parametrize("value", ["1.0\n", "1.0; rm -rf /", "../2.0"])
def test_the_trigger_form_refuses_a_bad_germline_version(dagbag, value):
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    params = ParamsDict(dagbag.dags["regenie_gwas"].params)
    with pytest.raises(ParamValidationError, match="Invalid input for param germline_version"):
        params.update({"germline_version": value})
        params.validate()


def _write_cohort_vcf(lake_root: str, project: str, extra_sites: bool = True) -> str:
    """The synthetic cohort of ``project`` (its .bed, phenotypes and covariates written too) also as a bgzipped,
    indexed VCF written here from the same genotype matrix (REF = the .bim's allele 2, ALT = allele 1), with
    ``extra_sites`` two sites the .bed lacks: a triallelic one, which conversion must drop, and one with missing
    and half-missing calls, which it must keep. Returns the VCF's URI."""
    synthetic_gwas.write_cohort(lake_root, project)
    data = synthetic_gwas.cohort(project)
    ids = data["ids"]
    lines = ["##fileformat=VCFv4.2", '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
             *(f"##contig=<ID={c}>" for c in synthetic_gwas.CHROMOSOMES),
             "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *ids])]
    genotype = {0: "0/0", 1: "0/1", 2: "1/1"}
    for n, (chrom, pos, vid, a1, a2, counts) in enumerate(data["variants"]):
        lines.append("\t".join([chrom, str(pos), vid, a2, a1, ".", "PASS", ".", "GT", *map(genotype.get, counts)]))
        if n == 10 and extra_sites:
            calls = ["1/2" if i % 3 == 0 else "0/1" for i in range(len(ids))]
            lines.append("\t".join([chrom, str(pos + 500), "triallelic", "A", "C,G", ".", "PASS", ".", "GT", *calls]))
        if n == 20 and extra_sites:
            calls = ["./." if i % 7 == 0 else "./1" if i % 11 == 0 else genotype[i % 3] for i in range(len(ids))]
            lines.append("\t".join([chrom, str(pos + 500), ".", "A", "T", ".", "PASS", ".", "GT", *calls]))
    gwas = Path(lake_root.removeprefix("file://")) / f"raw/{project}/gwas"
    (gwas / "cohort.vcf").write_text("\n".join(lines) + "\n")
    subprocess.run(["bgzip", "-f", str(gwas / "cohort.vcf")], check=True)
    subprocess.run(["tabix", "-p", "vcf", str(gwas / "cohort.vcf.gz")], check=True)
    return (gwas / "cohort.vcf.gz").as_uri()


def _published_rows(local, project: str) -> dict:
    from hooks import backend

    _, rows = backend.query_engine(local).fetch(
        f"SELECT phenotype, variant_id, allele0, allele1, n, beta, log10p FROM gwas_associations "
        f"WHERE project = '{project}'")
    return {(trait, variant): rest for trait, variant, *rest in rows}


def _gap_site(project: str) -> str:
    chrom, pos, *_ = synthetic_gwas.cohort(project)["variants"][20]
    return f"{chrom}:{pos + 500}:A:T"


@pytest.mark.e2e
def test_vcf_genotypes_give_the_associations_of_the_same_genotypes_as_a_bed_with_plink2(local):
    vcf = _write_cohort_vcf(local.lake_root, "vv")
    gwas = vcf.rsplit("/", 1)[0]
    _run_regenie_gwas({"project": "vv", "engine": "plink2", "genotypes": vcf})
    _run_regenie_gwas({"project": "vb", "engine": "plink2", "genotypes": f"{gwas}/cohort",
                       "phenotypes": f"{gwas}/phenotypes.tsv", "covariates": f"{gwas}/covariates.tsv"})

    from_vcf, from_bed = _published_rows(local, "vv"), _published_rows(local, "vb")
    assert len(from_bed) == 2 * 2500
    assert {key: from_vcf[key] for key in from_bed} == from_bed, "same alleles, n, beta and -log10 p"
    extra = sorted(set(from_vcf) - set(from_bed))
    gap = _gap_site("vv")
    assert extra == [("trait_a", gap), ("trait_b", gap)], "the triallelic site is dropped, the gappy one kept"
    missing = sum(1 for i in range(600) if i % 7 == 0 or i % 11 == 0)
    assert from_vcf[("trait_a", gap)][2] == 600 - missing, "missing and half calls are missing genotypes"


@pytest.mark.e2e
def test_vcf_genotypes_give_what_regenie_run_by_hand_on_the_same_genotypes_as_a_bed_gives(local, regenie, tmp_path):
    # regenie's step 1 model is fitted over every variant: the VCF holds exactly the .bed's ones here
    vcf = _write_cohort_vcf(local.lake_root, "vr", extra_sites=False)
    _run_regenie_gwas({"project": "vr", "genotypes": vcf})  # engine auto: regenie, as one is on PATH

    gwas = Path(local.lake_root.removeprefix("file://")) / "raw/vr/gwas"
    by_hand = _regenie_by_hand(regenie, gwas, tmp_path / "by-hand", "phenotypes.tsv", binary_trait=False)
    _assert_same_associations(_published(local, "vr"), by_hand)
    results = Path(local.lake_root.removeprefix("file://")) / "results/regenie_gwas/1.0/project=vr"
    step1 = __import__("json").loads((results / "step1/metrics.json").read_text())
    assert step1["metrics"]["converted_genotypes"] == {"from": vcf, "samples": 600, "variants": 2500}
    assert not list(results.rglob("*.bed")), "the converted genotypes stay on the file system, not in results"


# --- the chain: germline on sequenced reads -> cohort VCF -> regenie_gwas ---------------------------------------
@pytest.mark.e2e
def test_germline_then_regenie_gwas_on_its_cohort_ranks_the_planted_variant_first(local):
    from airflow.dag_processing.dagbag import DagBag
    from genomics_steps import synthetic
    from hooks import backend

    synthetic.write_reference(local.lake_root, "synthetic-v1")
    truth = synthetic_gwas.write_sequenced_cohort(local.lake_root, "chain")
    germline = DagBag(dag_folder=str(ROOT / "dags" / "germline.py")).dags["germline"]
    for task in germline.tasks:
        task.retries = 0
    run = germline.test(run_conf={"project": "chain", "samples": truth["samples"], "reference": "synthetic-v1",
                                  "pipeline_version": "1.0", "fan_out": "array"})
    assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}
    _, called = backend.query_engine(local).fetch(
        "SELECT count(DISTINCT sample_id) FROM variant_calls WHERE project = 'chain'")
    assert called == [(len(truth["samples"]),)], "germline published every sample (none excluded by its QC gate)"
    _, cohort = backend.query_engine(local).fetch(
        "SELECT count(*) FROM cohort_variants WHERE project = 'chain' AND pipeline_version = '1.0'")
    assert cohort[0][0] > 0, "the germline run called its cohort jointly and published its sites"

    _run_regenie_gwas({"project": "chain", "germline_version": "1.0", "engine": "plink2", "variants_per_job": 100})

    _, rows = backend.query_engine(local).fetch(
        "SELECT chrom, pos, n, log10p FROM gwas_associations WHERE project = 'chain' AND phenotype = 'trait_g' "
        "ORDER BY log10p DESC")
    causal = truth["causal"]
    assert (rows[0][0], rows[0][1]) == (causal["chrom"].removeprefix("chr"), causal["pos"]), rows[:3]
    assert rows[0][3] > 2 * rows[1][3], f"the planted variant stands out: {rows[:3]}"
    assert rows[0][2] == len(truth["samples"]), "every sample's genotype lines up with its phenotype and covariate"
    planted = {(s["chrom"].removeprefix("chr"), s["pos"]) for s in truth["sites"]}
    assert planted <= {(chrom, pos) for chrom, pos, *_ in rows}, "every planted site was called and tested"


def test_a_bcf_converts_to_the_same_plink_fileset_as_its_vcf(tmp_path, monkeypatch):
    import argparse
    import json

    from genomics_steps import gwas

    lake = (tmp_path / "lake").as_uri()
    vcf = _write_cohort_vcf(lake, "bc")
    bcf = vcf.replace(".vcf.gz", ".bcf")
    subprocess.run(["bcftools", "view", "-Ob", "-o", bcf.removeprefix("file://"), vcf.removeprefix("file://")],
                   check=True)
    monkeypatch.setenv("GENOMICS_LAKE_URI", lake)
    monkeypatch.setenv("GENOMICS_PROJECT", "bc")
    filesets, counts = {}, {}
    for uri in (vcf, bcf):
        mount = tmp_path / f"fsx-{uri.rsplit('.', 1)[-1]}"  # a stand-in file system for each
        (mount / "output").mkdir(parents=True)
        monkeypatch.setenv("GENOMICS_FSX", json.dumps({"file_system_id": "fs-1", "mount": str(mount),
                                                       "output": str(mount / "output"), "links": {}}))
        step = gwas.gwas_step("step1", argparse.Namespace(engine="plink2", genotypes=uri, pipeline_version="1.0"), [])
        counts[uri] = gwas.convert_vcf(step, uri)
        step.cleanup()
        prefix = gwas.converted_genotypes()
        assert prefix.parent == mount / "work" / "genotypes", "beside the exported output, not in it"
        filesets[uri] = [prefix.with_suffix(f".{ext}").read_bytes() for ext in ("bed", "bim", "fam")]
    assert filesets[bcf] == filesets[vcf]
    assert counts[bcf] == {"from": bcf, "samples": 600, "variants": 2501}, "the triallelic site is left out"
    fam = filesets[vcf][2].decode().splitlines()
    assert fam[0].split()[:2] == ["S0001", "S0001"], "FID and IID are both the VCF's sample name"
