"""Where everything lives in the lake. The steps (in jobs) and the DAGs' planning (in Airflow) both use this
module, so "is this sample done?" is answered from the same paths the steps write.

    <lake>/raw/<project>/<sample>_R1.fastq.gz, _R2          reads (default input location)
    <lake>/references/<reference>/                            genome.fa, transcriptome.fa, tx2gene.tsv
    <lake>/references/<reference>/index/<tool>/               built indexes, metrics.json last
    <lake>/results/<pipeline>/<version>/project=<project>/sample=<sample>/<step>/
                                                              a step's outputs, metrics.json written last
    <lake>/results/germline/<version>/project=<project>/cohort/cohort.vcf.gz, .tbi, manifest.json
                                                              the joint-called cohort (manifest written last);
                                                              plans/<key>.json, parts/<key>/<region>/ beside it
    <lake>/results/rnaseq/<version>/project=<project>/matrices/
                                                              gene x sample matrices of every complete
                                                              sample (TSV, Parquet), manifest.json last
    <lake>/raw/<project>/gwas/cohort.bed|.bim|.fam, phenotypes.tsv, covariates.tsv   GWAS inputs (default)
    <lake>/results/regenie_gwas/<version>/project=<project>/  GWAS results, exported from the run's FSx
    <lake>/manifests/<dag>/<run key>/                         what Airflow reads back from jobs (chunk plans)
    <lake>/manifests/<pipeline>/<run key>/reads.json          every sample's FASTQ files for a run (the plan
                                                              writes it, the first step reads it)
    <lake>/ingest/<project>/samples/<GSM>.json                a GEO sample's SRA runs (geo_ingestion writes it)
    <lake>/reports/geo_ingestion/<project>/<GSE>/             a series' MultiQC report
    <lake>/reports/<pipeline>/<version>/project=<project>/<run key>/
                                                              a pipeline run's MultiQC report

A step is complete when its metrics.json exists: it is written after every output, so its presence means
all of them are there. A sample is complete for a pipeline version when all of its steps are.
"""

from __future__ import annotations

import hashlib
import re

METRICS = "metrics.json"


def raw_prefix(lake: str, project: str) -> str:
    return f"{lake.rstrip('/')}/raw/{project}/"


def reads_uris(input_prefix: str, sample: str) -> tuple[str, str]:
    base = input_prefix if input_prefix.endswith("/") else input_prefix + "/"
    return f"{base}{sample}_R1.fastq.gz", f"{base}{sample}_R2.fastq.gz"


def reference_prefix(lake: str, reference: str) -> str:
    return f"{lake.rstrip('/')}/references/{reference}/"


def index_prefix(lake: str, reference: str, tool: str) -> str:
    return f"{reference_prefix(lake, reference)}index/{tool}/"


def results_prefix(lake: str, pipeline: str, version: str, project: str) -> str:
    return f"{lake.rstrip('/')}/results/{pipeline}/{version}/project={project}/"


def staging_prefix(lake: str, dataset: str, pipeline: str, scope: str, project: str) -> str:
    """Where rows of ``dataset`` are staged for publishing: one folder ``<unit_column>=<unit>/`` per unit below
    it. ``scope`` is the pipeline version for results (a rerun of the same version finds them) or a run key for
    per-run facts such as job_runs. The steps write here (runtime.staging_uri), publishing reads here."""
    return f"{lake.rstrip('/')}/staging/{dataset}/{pipeline}/{scope}/project={project}/"


def step_prefix(lake: str, pipeline: str, version: str, project: str, sample: str, step: str) -> str:
    return f"{results_prefix(lake, pipeline, version, project)}sample={sample}/{step}/"


def cohort_prefix(lake: str, version: str, project: str) -> str:
    """The germline cohort of a project and pipeline version: the joint-called VCF, its index and the manifest
    naming the samples it holds (written last), beside the per-sample results."""
    return f"{results_prefix(lake, 'germline', version, project)}cohort/"


def cohort_vcf(lake: str, version: str, project: str) -> str:
    """The joint-called cohort VCF (bgzipped, tabix index beside it as ``.tbi``) of every completed germline
    sample of ``project`` at pipeline ``version``; what regenie_gwas reads as genotypes."""
    return f"{cohort_prefix(lake, version, project)}cohort.vcf.gz"


def cohort_plan_uri(lake: str, version: str, project: str, key: str) -> str:
    """A cohort's plan (samples and regions) named by its key, which its region jobs and merge read."""
    return f"{cohort_prefix(lake, version, project)}plans/{key}.json"


def matrices_prefix(lake: str, version: str, project: str) -> str:
    """The rnaseq count matrices of a project and version. Two path parts below ``results_prefix``, so
    ``completed_samples`` (three-part ``sample=*/<step>/metrics.json`` paths) never mistakes them for a sample."""
    return f"{results_prefix(lake, 'rnaseq', version, project)}matrices/"


def run_report_prefix(lake: str, pipeline: str, version: str, project: str, run_id: str) -> str:
    """Where a pipeline run's MultiQC report goes (and the run's sample list for it, written by Airflow)."""
    return f"{lake.rstrip('/')}/reports/{pipeline}/{version}/project={project}/{run_key(run_id)}/"


def completed_samples(listing: list[str], steps: list[str]) -> set[str]:
    """Samples with every step complete, from one listing of ``results_prefix`` (paths relative to it)."""
    done: dict[str, set[str]] = {}
    for path in listing:
        parts = path.split("/")
        if len(parts) == 3 and parts[0].startswith("sample=") and parts[2] == METRICS:
            done.setdefault(parts[0][len("sample="):], set()).add(parts[1])
    return {sample for sample, finished in done.items() if finished >= set(steps)}


def samples_with_reads(listing: list[str]) -> set[str]:
    """Samples with both read files, from one listing of an input prefix (paths relative to it)."""
    r1 = {p[: -len("_R1.fastq.gz")] for p in listing if p.endswith("_R1.fastq.gz") and "/" not in p}
    r2 = {p[: -len("_R2.fastq.gz")] for p in listing if p.endswith("_R2.fastq.gz") and "/" not in p}
    return r1 & r2


def run_key(run_id: str) -> str:
    """A label naming one DAG run (run ids hold ':' and '+'): readable, and unique through a short hash."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id).strip("_.-")[:80] or "run"
    return f"{readable}-{hashlib.sha256(run_id.encode()).hexdigest()[:8]}"


def reads_manifest_uri(lake: str, pipeline: str, run_id: str) -> str:
    """The run's reads manifest: each planned sample's R1 and R2 files (genomics_steps.read_inputs)."""
    return f"{lake.rstrip('/')}/manifests/{pipeline}/{run_key(run_id)}/reads.json"


def gwas_input_prefix(lake: str, project: str) -> str:
    """Default location of a project's GWAS inputs."""
    return f"{raw_prefix(lake, project)}gwas/"


def chunk_plan_uri(lake: str, dag_id: str, run_id: str, file_system_id: str) -> str:
    """Where GWAS step 1 leaves the step-2 chunk plan for Airflow (it cannot read the FSx file system)."""
    return f"{lake.rstrip('/')}/manifests/{dag_id}/{run_key(run_id)}/{file_system_id}/chunks.json"


def ingest_record_uri(lake: str, project: str, sample: str) -> str:
    """A GEO sample's record for its download job: series, SRA runs and library layout."""
    return f"{lake.rstrip('/')}/ingest/{project}/samples/{sample}.json"


def series_report_prefix(lake: str, project: str, series: str) -> str:
    return f"{lake.rstrip('/')}/reports/geo_ingestion/{project}/{series}/"


def mirror_archive(mirror: str, run: str) -> str:
    """Where the local stand-in for SRA keeps a run's archive (hooks.ncbi_mirror)."""
    return f"{mirror.rstrip('/')}/sra-archives/{run}.sra"
